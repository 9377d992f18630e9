using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Lowbit.Formats;

namespace Lowbit.Engine;

/// <summary>Weight formats with a register-blocked integer GEMM.</summary>
internal enum GemmFormat { Q4_0, Q8_0, Q4_K }

/// <summary>Instruction sets of the integer GEMM (tests call each one this CPU supports).</summary>
internal enum GemmIsa { Scalar, Avx2, AvxVnni }

/// <summary>
/// Register-blocked integer GEMM for prefill (and decode) of Q4_0, Q8_0 (activations in Q8_0) and
/// Q4_K (activations in Q8_K).
/// <para>
/// A panel of 16 weight rows is repacked once per call into a transposed layout: for every 4-value
/// slice j of a 32-value block, 16 rows × 4 bytes (two 256-bit vectors, one row per int32 lane).
/// A tile of 16 rows × up to 4 tokens then costs one vpdpbusd (or pmaddubsw+pmaddwd) per 32
/// multiply-adds with the token's 4 activation bytes broadcast, and the exact int32 block sum of
/// every (row, token) pair ends up in a lane — so the float stage (scale product, convert, multiply,
/// add) is one vector op per 8 pairs instead of per pair.
/// </para>
/// <para>
/// The result of every (row, token) pair is bit-identical to <see cref="ReferenceDot"/> (Q4_0, Q8_0: per
/// 32-block the exact integer sum, times (d_w · d_a), added to one float accumulator in block order) and
/// to the scalar Q4_K integer dot (<see cref="KQuantDot.DotQ8K(KQuantCodec, ReadOnlySpan{byte}, ReadOnlySpan{byte}, bool)"/>).
/// So it does not depend on tiling, thread count or instruction set. The codecs' own legacy kernels
/// (DotQ8&lt;T&gt;) accumulate 8 partial lanes per block instead, which a register-blocked GEMM cannot
/// reproduce cheaply; the engine's decode of these formats therefore uses this class's one-token kernel or
/// <see cref="InterleavedRows"/>, which keep the same arithmetic, so decode equals prefill.
/// </para>
/// </summary>
internal static unsafe class QuantizedGemm
{
    public const int PanelRows = 16;
    private const int MaxTokens = 4;

    // Legacy packed block (32 values): W[j:8][row:16][4 bytes], scale[16] f32, corr[16] i32.
    private const int LegacyW = 512, LegacyScale = 512, LegacyCorr = 576, LegacyStride = 640;
    // Q4_K packed super-block (256 values): W[sub:8][j:8][row:16][4], sc[8][16] i32, min pairs[4][16] (i16,i16), d[16], dmin[16].
    private const int KW = 4096, KSc = 4096, KMin = 4608, KD = 4864, KDmin = 4928, KStride = 4992;

    public static GemmFormat? FormatOf(TensorCodec codec) => codec switch
    {
        Q4_0Codec => GemmFormat.Q4_0,
        Q8_0Codec => GemmFormat.Q8_0,
        Q4_KCodec => GemmFormat.Q4_K,
        _ => null,
    };

    /// <summary>The fastest instruction set this CPU has (scalar: the per-pair reference, no packing).</summary>
    public static GemmIsa BestIsa => !BitConverter.IsLittleEndian || !Avx2.IsSupported ? GemmIsa.Scalar
        : AvxVnni.IsSupported ? GemmIsa.AvxVnni : GemmIsa.Avx2;

    public static bool IsSupported(GemmIsa isa) => isa switch
    {
        GemmIsa.Scalar => true,
        GemmIsa.Avx2 => Avx2.IsSupported && BitConverter.IsLittleEndian,
        GemmIsa.AvxVnni => AvxVnni.IsSupported && Avx2.IsSupported && BitConverter.IsLittleEndian,
        _ => false,
    };

    /// <summary>Values per encoded weight block (Q4_K: one super-block).</summary>
    public static int BlockValues(GemmFormat f) => f == GemmFormat.Q4_K ? 256 : 32;

    /// <summary>Bytes of one encoded weight block as the file stores it (fp16 scale(s) first).</summary>
    public static int WeightBlockBytes(GemmFormat f) => f switch { GemmFormat.Q4_0 => 18, GemmFormat.Q8_0 => 34, _ => 144 };

    /// <summary>Bytes of one encoded weight row.</summary>
    public static int WeightRowBytes(GemmFormat f, int cols) => cols / BlockValues(f) * WeightBlockBytes(f);

    /// <summary>Bytes of one activation row in the codec's VecDotCodec format (Q8_0 or Q8_K).</summary>
    public static int QuantizedRowBytes(GemmFormat f, int cols) => f == GemmFormat.Q4_K ? cols / 256 * KQuantDot.Q8Bytes : cols / 32 * 34;

    /// <summary>Bytes of one prepared activation row (64-byte multiple so rows stay aligned alike).</summary>
    public static int ActivationStride(GemmFormat f, GemmIsa isa, int cols)
    {
        if (isa == GemmIsa.Scalar) return QuantizedRowBytes(f, cols);
        int blocks = cols / BlockValues(f);
        int extra = f == GemmFormat.Q4_K ? blocks * (4 + 16) : blocks * 8;
        return (cols + extra + 63) & ~63;
    }

    /// <summary>Bytes of one packed panel of <see cref="PanelRows"/> rows.</summary>
    public static int PanelBytes(GemmFormat f, GemmIsa isa, int cols)
        => isa == GemmIsa.Scalar ? PanelRows * WeightRowBytes(f, cols)
         : f == GemmFormat.Q4_K ? cols / 256 * KStride : cols / 32 * LegacyStride;

    /// <summary>
    /// Turns one activation row in VecDotCodec format into the kernel's layout: the int8 codes
    /// (biased by +128 for Q8_0 weights on VNNI, whose vpdpbusd needs one unsigned operand), then per
    /// block the float scale and a correction (Q4_0: −8·Σa, so unsigned nibbles stand in for q − 8;
    /// Q4_K: the (int16, int16) pairs of 32-value sums that meet the mins).
    /// </summary>
    public static void PrepareActivations(GemmFormat f, GemmIsa isa, ReadOnlySpan<byte> xq, int cols, Span<byte> dst)
    {
        if (xq.Length < QuantizedRowBytes(f, cols) || dst.Length < ActivationStride(f, isa, cols))
            throw new ArgumentException("activation buffers too small.");
        if (isa == GemmIsa.Scalar)
        {
            xq.Slice(0, QuantizedRowBytes(f, cols)).CopyTo(dst);
            return;
        }
        fixed (byte* src = xq) fixed (byte* d = dst)
        {
            if (f == GemmFormat.Q4_K)
            {
                int blocks = cols / 256;
                float* yd = (float*)(d + cols);
                int* pairs = (int*)(d + cols + 4 * blocks);
                for (int b = 0; b < blocks; b++)
                    PrepareQ8KBlock(src + b * KQuantDot.Q8Bytes, d + 256 * b, yd + b, pairs + 4 * b);
                return;
            }
            int nb = cols / 32;
            float* da = (float*)(d + cols);
            int* corr = (int*)(d + cols + 4 * nb);
            bool biased = f == GemmFormat.Q8_0 && isa == GemmIsa.AvxVnni;
            var bias = Vector256.Create((byte)0x80);
            for (int b = 0; b < nb; b++)
            {
                byte* blk = src + b * 34;
                da[b] = LegacyKernels.F16(blk);
                var q = Vector256.Load(blk + 2);
                Vector256.Store(biased ? q ^ bias : q, d + 32 * b);
                int sum = 0;
                if (f == GemmFormat.Q4_0)
                {
                    sum = LegacyKernels.CodeSum(q.AsSByte());
                }
                corr[b] = -8 * sum;
            }
        }
    }

    /// <summary>
    /// <see cref="PrepareActivations"/> straight from the float activation <paramref name="x"/> (its first
    /// <paramref name="cols"/> values) on the AVX2 / AVX-VNNI kernels: the same bytes as the VecDotCodec's quantization
    /// (Q8_0, or Q8_K for Q4_K) followed by PrepareActivations, without the quantized row between them. False (nothing
    /// written) for the scalar kernels or a CPU without AVX2.
    /// </summary>
    public static bool TryPrepareActivations(GemmFormat f, GemmIsa isa, ReadOnlySpan<float> x, int cols, Span<byte> dst)
    {
        if (isa == GemmIsa.Scalar || !Avx2.IsSupported || cols % BlockValues(f) != 0) return false;
        if (x.Length < cols || dst.Length < ActivationStride(f, isa, cols)) throw new ArgumentException("activation buffers too small.");
        if (f == GemmFormat.Q4_K) PrepareQ8KActivations(x.Slice(0, cols), dst);
        else LegacyKernels.QuantizeQ8Prepared(x.Slice(0, cols), dst, q40Correction: f == GemmFormat.Q4_0, biased: f == GemmFormat.Q8_0 && isa == GemmIsa.AvxVnni);
        return true;
    }

    /// <summary>Q4_K's <see cref="TryPrepareActivations"/>: each Q8_K block quantized in place by the codec's vector path.</summary>
    private static void PrepareQ8KActivations(ReadOnlySpan<float> x, Span<byte> dst)
    {
        int cols = x.Length, blocks = cols / 256;
        byte* block = stackalloc byte[KQuantDot.Q8Bytes];
        short* bs = stackalloc short[16];
        fixed (float* px = x) fixed (byte* d = dst)
        {
            float* yd = (float*)(d + cols);
            int* pairs = (int*)(d + cols + 4 * blocks);
            for (int b = 0; b < blocks; b++)
            {
                byte* codes = d + 256 * b;
                switch (Q8_KCodec.QuantizeBlockSimd(px + 256 * b, (sbyte*)codes, bs, out float scale))
                {
                    case Q8_KCodec.SimdOutcome.NaN: // the codec's scalar path, then prepared as a stored block is
                        Q8_KCodec.QuantizeBlock(x.Slice(256 * b, 256), new Span<byte>(block, KQuantDot.Q8Bytes));
                        PrepareQ8KBlock(block, codes, yd + b, pairs + 4 * b);
                        continue;
                    case Q8_KCodec.SimdOutcome.Zero: // scale is 0
                        new Span<byte>(codes, 256).Clear();
                        new Span<short>(bs, 16).Clear();
                        break;
                }
                yd[b] = scale;
                PackQ8KPairs(bs, pairs + 4 * b);
            }
        }
    }

    /// <summary>One stored Q8_K block at <paramref name="blk"/> in the kernels' layout: its scale, its 256 codes, its sum pairs.</summary>
    private static void PrepareQ8KBlock(byte* blk, byte* codes, float* yd, int* pairs)
    {
        *yd = *(float*)blk;
        Unsafe.CopyBlockUnaligned(codes, blk + Q8_KCodec.OffQs, 256);
        PackQ8KPairs((short*)(blk + Q8_KCodec.OffBsums), pairs);
    }

    /// <summary>A Q8_K block's 16 sums of 16 codes as four (int16, int16) pairs of 32-value sums, the pairs that meet the mins.</summary>
    private static void PackQ8KPairs(short* bs, int* pairs)
    {
        for (int k = 0; k < 4; k++)
        {
            int s0 = bs[4 * k] + bs[4 * k + 1], s1 = bs[4 * k + 2] + bs[4 * k + 3]; // |s| ≤ 32·128: fits int16
            pairs[k] = (ushort)(short)s0 | (ushort)(short)s1 << 16;
        }
    }

    /// <summary>
    /// Packs rows [0, count) of <paramref name="rows"/> (count ≤ 16, consecutive rows of rowBytes)
    /// into one panel; missing rows are zero (their lanes are computed and discarded).
    /// </summary>
    public static void PackPanel(GemmFormat f, GemmIsa isa, byte* rows, int rowBytes, int count, int cols, byte* dst)
    {
        if (isa == GemmIsa.Scalar)
        {
            Unsafe.CopyBlockUnaligned(dst, rows, (uint)(count * rowBytes));
            return;
        }
        if (f == GemmFormat.Q4_K) PackQ4K(rows, rowBytes, count, cols / 256, dst);
        else PackLegacy(f, isa, rows, rowBytes, count, cols / 32, dst);
    }

    private static void PackLegacy(GemmFormat f, GemmIsa isa, byte* rows, int rowBytes, int count, int blocks, byte* dst)
    {
        bool q4 = f == GemmFormat.Q4_0;
        int bb = q4 ? 18 : 34;
        Span<Vector256<byte>> r = stackalloc Vector256<byte>[8];
        var low = Vector256.Create((byte)0x0F);
        for (int b = 0; b < blocks; b++)
        {
            byte* o = dst + b * LegacyStride;
            float* scale = (float*)(o + LegacyScale);
            int* corr = (int*)(o + LegacyCorr);
            for (int p = 0; p < 2; p++)
            {
                for (int i = 0; i < 8; i++)
                {
                    int row = 8 * p + i;
                    if (row >= count) { r[i] = default; scale[row] = 0; continue; }
                    byte* blk = rows + (long)row * rowBytes + b * bb;
                    scale[row] = LegacyKernels.F16(blk);
                    if (q4)
                    {
                        // Values 0..15 are the low nibbles, 16..31 the high ones: codes stay unsigned 0..15.
                        var raw = Vector128.Load(blk + 2);
                        r[i] = Vector256.Create(raw, Vector128.ShiftRightLogical(raw.AsUInt16(), 4).AsByte()) & low;
                    }
                    else r[i] = Vector256.Load(blk + 2);
                }
                Transpose8(r, o + 32 * p, 64);
                var c = Vector256<int>.Zero;
                if (!q4 && isa == GemmIsa.AvxVnni)
                {
                    // (a + 128)·w summed over the block overshoots by 128·Σw: subtract it up front.
                    var bias = Vector256.Create((byte)0x80);
                    var t = Vector256<int>.Zero;
                    for (int j = 0; j < 8; j++) t = AvxVnni.MultiplyWideningAndAdd(t, bias, Vector256.Load(o + 64 * j + 32 * p).AsSByte());
                    c = -t;
                }
                c.Store(corr + 8 * p);
            }
        }
    }

    private static void PackQ4K(byte* rows, int rowBytes, int count, int blocks, byte* dst)
    {
        Span<Vector256<byte>> lo = stackalloc Vector256<byte>[8];
        Span<Vector256<byte>> hi = stackalloc Vector256<byte>[8];
        var low = Vector256.Create((byte)0x0F);
        for (int b = 0; b < blocks; b++)
        {
            byte* o = dst + b * KStride;
            int* sc = (int*)(o + KSc);
            int* mp = (int*)(o + KMin);
            float* d = (float*)(o + KD);
            float* dmin = (float*)(o + KDmin);
            for (int row = 0; row < PanelRows; row++)
            {
                if (row >= count)
                {
                    for (int s = 0; s < 8; s++) sc[16 * s + row] = 0;
                    for (int k = 0; k < 4; k++) mp[16 * k + row] = 0;
                    d[row] = dmin[row] = 0;
                    continue;
                }
                byte* x = rows + (long)row * rowBytes + b * 144;
                d[row] = KQuantMath.FromHalfBits(*(ushort*)x);
                dmin[row] = KQuantMath.FromHalfBits(*(ushort*)(x + 2));
                // The 12 packed bytes → 8 six-bit scales and 8 six-bit mins (get_scale_min_k4, all at once).
                KQuantMath.UnpackScaleMinK4(x + 4, out ulong scales, out ulong mins);
                for (int s = 0; s < 8; s++) sc[16 * s + row] = (int)((scales >> (8 * s)) & 0xFF);
                for (int k = 0; k < 4; k++)
                    mp[16 * k + row] = (int)((mins >> (16 * k)) & 0xFF) | (int)((mins >> (16 * k + 8)) & 0xFF) << 16;
            }
            for (int c = 0; c < 4; c++)
                for (int p = 0; p < 2; p++)
                {
                    for (int i = 0; i < 8; i++)
                    {
                        int row = 8 * p + i;
                        if (row >= count) { lo[i] = hi[i] = default; continue; }
                        var q = Vector256.Load(rows + (long)row * rowBytes + b * 144 + 16 + 32 * c);
                        lo[i] = q & low;                                                   // group 2c
                        hi[i] = Vector256.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & low; // group 2c + 1
                    }
                    Transpose8(lo, o + 512 * (2 * c) + 32 * p, 64);
                    Transpose8(hi, o + 512 * (2 * c + 1) + 32 * p, 64);
                }
        }
    }

    /// <summary>8×8 transpose of int32: output vector j (dword j of every row) goes to dst + j·stride.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Transpose8(Span<Vector256<byte>> r, byte* dst, int stride)
    {
        var r0 = r[0].AsInt32(); var r1 = r[1].AsInt32(); var r2 = r[2].AsInt32(); var r3 = r[3].AsInt32();
        var r4 = r[4].AsInt32(); var r5 = r[5].AsInt32(); var r6 = r[6].AsInt32(); var r7 = r[7].AsInt32();
        var t0 = Avx2.UnpackLow(r0, r1); var t1 = Avx2.UnpackHigh(r0, r1);
        var t2 = Avx2.UnpackLow(r2, r3); var t3 = Avx2.UnpackHigh(r2, r3);
        var t4 = Avx2.UnpackLow(r4, r5); var t5 = Avx2.UnpackHigh(r4, r5);
        var t6 = Avx2.UnpackLow(r6, r7); var t7 = Avx2.UnpackHigh(r6, r7);
        var u0 = Avx2.UnpackLow(t0.AsInt64(), t2.AsInt64()); var u1 = Avx2.UnpackHigh(t0.AsInt64(), t2.AsInt64());
        var u2 = Avx2.UnpackLow(t1.AsInt64(), t3.AsInt64()); var u3 = Avx2.UnpackHigh(t1.AsInt64(), t3.AsInt64());
        var u4 = Avx2.UnpackLow(t4.AsInt64(), t6.AsInt64()); var u5 = Avx2.UnpackHigh(t4.AsInt64(), t6.AsInt64());
        var u6 = Avx2.UnpackLow(t5.AsInt64(), t7.AsInt64()); var u7 = Avx2.UnpackHigh(t5.AsInt64(), t7.AsInt64());
        Avx2.Permute2x128(u0, u4, 0x20).Store((long*)dst);
        Avx2.Permute2x128(u1, u5, 0x20).Store((long*)(dst + stride));
        Avx2.Permute2x128(u2, u6, 0x20).Store((long*)(dst + 2 * stride));
        Avx2.Permute2x128(u3, u7, 0x20).Store((long*)(dst + 3 * stride));
        Avx2.Permute2x128(u0, u4, 0x31).Store((long*)(dst + 4 * stride));
        Avx2.Permute2x128(u1, u5, 0x31).Store((long*)(dst + 5 * stride));
        Avx2.Permute2x128(u2, u6, 0x31).Store((long*)(dst + 6 * stride));
        Avx2.Permute2x128(u3, u7, 0x31).Store((long*)(dst + 7 * stride));
    }

    /// <summary>
    /// Y[t·yStride + r] = W[r]·X[t] for the panel's first <paramref name="count"/> rows and n tokens
    /// (prepared activations at act, act + actStride, …).
    /// </summary>
    /// <param name="wide">Q4_0 and Q4_K through the 512-bit tiles where the CPU has AVX-512BW (<see cref="WideTilesSupported"/>).</param>
    public static void MultiplyPanel(GemmFormat f, GemmIsa isa, byte* panel, int count, int cols, byte* act, int actStride, int n, float* y, int yStride,
        bool wide = true)
    {
        if (isa == GemmIsa.Scalar)
        {
            MultiplyScalar(f, panel, count, cols, act, actStride, n, y, yStride);
            return;
        }
        if (wide && f is GemmFormat.Q4_0 or GemmFormat.Q4_K && WideTilesSupported)
        {
            MultiplyPanelWide(f, panel, count, cols, act, actStride, n, y, yStride);
            return;
        }
        int t = 0;
        byte* scratch = stackalloc byte[512 + 32];
        scratch = (byte*)(((nint)scratch + 31) & ~(nint)31);
        for (; t + MaxTokens <= n; t += MaxTokens) Tile<T4>(f, isa, panel, count, cols, act + (long)t * actStride, actStride, y + (long)t * yStride, yStride, scratch);
        switch (n - t)
        {
            case 1: Tile<T1>(f, isa, panel, count, cols, act + (long)t * actStride, actStride, y + (long)t * yStride, yStride, scratch); break;
            case 2: Tile<T2>(f, isa, panel, count, cols, act + (long)t * actStride, actStride, y + (long)t * yStride, yStride, scratch); break;
            case 3: Tile<T3>(f, isa, panel, count, cols, act + (long)t * actStride, actStride, y + (long)t * yStride, yStride, scratch); break;
        }
    }

    private static void Tile<TT>(GemmFormat f, GemmIsa isa, byte* panel, int count, int cols, byte* act, int actStride, float* y, int yStride, byte* scratch) where TT : struct, ITokens
    {
        bool vnni = isa == GemmIsa.AvxVnni;
        switch (f)
        {
            case GemmFormat.Q4_0 when vnni: LegacyTile<Q40Vnni, TT>(panel, count, cols, act, actStride, y, yStride); break;
            case GemmFormat.Q4_0: LegacyTile<Q40Avx2, TT>(panel, count, cols, act, actStride, y, yStride); break;
            case GemmFormat.Q8_0 when vnni: LegacyTile<Q80Vnni, TT>(panel, count, cols, act, actStride, y, yStride); break;
            case GemmFormat.Q8_0: LegacyTile<Q80Avx2, TT>(panel, count, cols, act, actStride, y, yStride); break;
            case GemmFormat.Q4_K when vnni: KTile<Q4KVnni, TT>(panel, count, cols, act, actStride, y, yStride, scratch); break;
            default: KTile<Q4KAvx2, TT>(panel, count, cols, act, actStride, y, yStride, scratch); break;
        }
    }

    /// <summary>
    /// Whether the 512-bit Q4_0 and Q4_K tiles run here (AVX-512BW). .NET 10 exposes vpdpbusd on 512-bit registers only under
    /// AVX10, which AMD's AVX-512 CPUs do not report, so this tile multiplies with vpmaddubsw: one 64-byte load holds a
    /// 4-value slice of all 16 rows, each lane pair's code·activation products (≤ 2·15·128 = 3840) add up in int16 over
    /// the block's 8 slices (≤ 30720 &lt; 2^15), and one vpmaddwd widens the sums: 9 multiply-unit instructions per block
    /// and token against 16 vpdpbusd on 256-bit registers, with the same exact int32 sum per (row, token), folded the
    /// same way, so the same bits. Q4_K's codes are 4-bit too: per 32-value group the same int16 sums, and the
    /// vpmaddwd that widens them multiplies by the group's 6-bit scale on the way (sc·lo + sc·hi, exact).
    /// </summary>
    public static bool WideTilesSupported => Avx512BW.IsSupported && BitConverter.IsLittleEndian;

    private static void MultiplyPanelWide(GemmFormat f, byte* panel, int count, int cols, byte* act, int actStride, int n, float* y, int yStride)
    {
        int t = 0;
        for (; t + MaxTokens <= n; t += MaxTokens) TileWide<T4>(f, panel, count, cols, act + (long)t * actStride, actStride, y + (long)t * yStride, yStride);
        switch (n - t)
        {
            case 1: TileWide<T1>(f, panel, count, cols, act + (long)t * actStride, actStride, y + (long)t * yStride, yStride); break;
            case 2: TileWide<T2>(f, panel, count, cols, act + (long)t * actStride, actStride, y + (long)t * yStride, yStride); break;
            case 3: TileWide<T3>(f, panel, count, cols, act + (long)t * actStride, actStride, y + (long)t * yStride, yStride); break;
        }
    }

    private static void TileWide<TT>(GemmFormat f, byte* panel, int count, int cols, byte* act, int actStride, float* y, int yStride) where TT : struct, ITokens
    {
        if (f == GemmFormat.Q4_0) Q40TileWide<TT>(panel, count, cols, act, actStride, y, yStride);
        else KTileWide<TT>(panel, count, cols, act, actStride, y, yStride);
    }

    /// <summary>
    /// Up to 4 tokens × 16 rows of Q4_K on 512-bit registers (see <see cref="WideTilesSupported"/>): the panel and
    /// activations of <see cref="KTile"/>, per super-block Σ_g sc_g·(group dot) exact in int32, then <see cref="KFold"/>'s
    /// float arithmetic on 16 rows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void KTileWide<TT>(byte* panel, int count, int cols, byte* act, int actStride, float* y, int yStride) where TT : struct, ITokens
    {
        int blocks = cols / 256;
        nint st = actStride;
        byte* a0 = act, a1 = act + (TT.N > 1 ? st : 0), a2 = act + (TT.N > 2 ? 2 * st : 0), a3 = act + (TT.N > 3 ? 3 * st : 0);
        int ydOff = cols, pairOff = cols + 4 * blocks;
        Vector512<float> f0 = default, f1 = default, f2 = default, f3 = default;
        byte* wb = panel;
        nint o = 0;
        for (int b = 0; b < blocks; b++, wb += KStride)
        {
            Vector512<int> t0 = default, t1 = default, t2 = default, t3 = default;
            byte* wj = wb;
            int* sc = (int*)(wb + KSc);
            for (int g = 0; g < 8; g++, sc += 16)
            {
                Vector512<short> s0 = default, s1 = default, s2 = default, s3 = default;
                for (nint oEnd = o + 32; o < oEnd; o += 4, wj += 64)
                {
                    var w = Vector512.Load(wj);
                    s0 = Avx512BW.Add(s0, Avx512BW.MultiplyAddAdjacent(w, Vector512.Create(*(int*)(a0 + o)).AsSByte()));
                    if (TT.N > 1) s1 = Avx512BW.Add(s1, Avx512BW.MultiplyAddAdjacent(w, Vector512.Create(*(int*)(a1 + o)).AsSByte()));
                    if (TT.N > 2) s2 = Avx512BW.Add(s2, Avx512BW.MultiplyAddAdjacent(w, Vector512.Create(*(int*)(a2 + o)).AsSByte()));
                    if (TT.N > 3) s3 = Avx512BW.Add(s3, Avx512BW.MultiplyAddAdjacent(w, Vector512.Create(*(int*)(a3 + o)).AsSByte()));
                }
                // The group's scale (≤ 63) in both int16 halves of each row's lane: vpmaddwd gives sc·(group dot).
                var scv = Vector512.Load(sc);
                var scPair = (scv | Avx512F.ShiftLeftLogical(scv, 16)).AsInt16();
                t0 = Avx512F.Add(t0, Avx512BW.MultiplyAddAdjacent(s0, scPair));
                if (TT.N > 1) t1 = Avx512F.Add(t1, Avx512BW.MultiplyAddAdjacent(s1, scPair));
                if (TT.N > 2) t2 = Avx512F.Add(t2, Avx512BW.MultiplyAddAdjacent(s2, scPair));
                if (TT.N > 3) t3 = Avx512F.Add(t3, Avx512BW.MultiplyAddAdjacent(s3, scPair));
            }
            var d = Vector512.Load((float*)(wb + KD));
            var m = Vector512.Load((float*)(wb + KDmin));
            f0 = KFoldWide(f0, wb, a0, ydOff, pairOff, b, t0, d, m);
            if (TT.N > 1) f1 = KFoldWide(f1, wb, a1, ydOff, pairOff, b, t1, d, m);
            if (TT.N > 2) f2 = KFoldWide(f2, wb, a2, ydOff, pairOff, b, t2, d, m);
            if (TT.N > 3) f3 = KFoldWide(f3, wb, a3, ydOff, pairOff, b, t3, d, m);
        }
        StoreWide<TT>(f0, f1, f2, f3, count, y, yStride);
    }

    /// <summary><see cref="KFold"/> for 16 rows: the mins' sum from (int16, int16) pairs, then the same float fold.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> KFoldWide(Vector512<float> f, byte* wb, byte* a, int ydOff, int pairOff, int b, Vector512<int> sumi,
        Vector512<float> d, Vector512<float> m)
    {
        Vector512<int> summ = default;
        int* pairs = (int*)(a + pairOff) + 4 * b;
        for (int k = 0; k < 4; k++)
            summ = Avx512F.Add(summ, Avx512BW.MultiplyAddAdjacent(Vector512.Load((short*)(wb + KMin + 64 * k)), Vector512.Create(pairs[k]).AsInt16()));
        var yd = Vector512.Create(((float*)(a + ydOff))[b]);
        return Avx512F.Add(f, Avx512F.Subtract(Avx512F.Multiply(Avx512F.Multiply(d, yd), Avx512F.ConvertToVector512Single(sumi)),
                                               Avx512F.Multiply(Avx512F.Multiply(m, yd), Avx512F.ConvertToVector512Single(summ))));
    }

    /// <summary>Up to 4 tokens × 16 rows of Q4_0 on 512-bit registers (see <see cref="WideTilesSupported"/>); the panel and activations of <see cref="LegacyTile"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q40TileWide<TT>(byte* panel, int count, int cols, byte* act, int actStride, float* y, int yStride) where TT : struct, ITokens
    {
        int blocks = cols / 32;
        nint s = actStride;
        byte* a0 = act, a1 = act + (TT.N > 1 ? s : 0), a2 = act + (TT.N > 2 ? 2 * s : 0), a3 = act + (TT.N > 3 ? 3 * s : 0);
        nint scales = cols, corrections = cols + 4 * blocks; // per-block floats, then ints, after the codes
        var ones = Vector512.Create((short)1);
        Vector512<float> f0 = default, f1 = default, f2 = default, f3 = default;
        byte* wb = panel;
        for (int b = 0; b < blocks; b++, wb += LegacyStride)
        {
            Vector512<short> s0 = default, s1 = default, s2 = default, s3 = default;
            nint o = 32 * b;
            byte* wj = wb;
            for (nint oEnd = o + 32; o < oEnd; o += 4, wj += 64)
            {
                var w = Vector512.Load(wj); // slice j: rows 0–7 then 8–15, one row per 4-byte lane
                s0 = Avx512BW.Add(s0, Avx512BW.MultiplyAddAdjacent(w, Vector512.Create(*(int*)(a0 + o)).AsSByte()));
                if (TT.N > 1) s1 = Avx512BW.Add(s1, Avx512BW.MultiplyAddAdjacent(w, Vector512.Create(*(int*)(a1 + o)).AsSByte()));
                if (TT.N > 2) s2 = Avx512BW.Add(s2, Avx512BW.MultiplyAddAdjacent(w, Vector512.Create(*(int*)(a2 + o)).AsSByte()));
                if (TT.N > 3) s3 = Avx512BW.Add(s3, Avx512BW.MultiplyAddAdjacent(w, Vector512.Create(*(int*)(a3 + o)).AsSByte()));
            }
            var dw = Vector512.Load((float*)(wb + LegacyScale));
            nint so = scales + 4 * b, co = corrections + 4 * b;
            // −8·Σa per token makes the unsigned codes stand for q − 8, as in LegacyTile.
            f0 = FoldWide(f0, dw, *(float*)(a0 + so), Avx512F.Add(Avx512BW.MultiplyAddAdjacent(s0, ones), Vector512.Create(*(int*)(a0 + co))));
            if (TT.N > 1) f1 = FoldWide(f1, dw, *(float*)(a1 + so), Avx512F.Add(Avx512BW.MultiplyAddAdjacent(s1, ones), Vector512.Create(*(int*)(a1 + co))));
            if (TT.N > 2) f2 = FoldWide(f2, dw, *(float*)(a2 + so), Avx512F.Add(Avx512BW.MultiplyAddAdjacent(s2, ones), Vector512.Create(*(int*)(a2 + co))));
            if (TT.N > 3) f3 = FoldWide(f3, dw, *(float*)(a3 + so), Avx512F.Add(Avx512BW.MultiplyAddAdjacent(s3, ones), Vector512.Create(*(int*)(a3 + co))));
        }
        StoreWide<TT>(f0, f1, f2, f3, count, y, yStride);
    }

    /// <summary>The wide tiles' results: a full panel straight into Y, a partial one through a buffer.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreWide<TT>(Vector512<float> f0, Vector512<float> f1, Vector512<float> f2, Vector512<float> f3, int count, float* y, int yStride)
        where TT : struct, ITokens
    {
        if (count != PanelRows)
        {
            StorePartialWide<TT>(f0, f1, f2, f3, count, y, yStride);
            return;
        }
        f0.Store(y);
        if (TT.N > 1) f1.Store(y + yStride);
        if (TT.N > 2) f2.Store(y + 2 * (nint)yStride);
        if (TT.N > 3) f3.Store(y + 3 * (nint)yStride);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void StorePartialWide<TT>(Vector512<float> f0, Vector512<float> f1, Vector512<float> f2, Vector512<float> f3, int count, float* y, int yStride)
        where TT : struct, ITokens
    {
        float* tmp = stackalloc float[PanelRows * MaxTokens];
        f0.Store(tmp);
        f1.Store(tmp + PanelRows);
        f2.Store(tmp + 2 * PanelRows);
        f3.Store(tmp + 3 * PanelRows);
        CopyPartial(tmp, TT.N, count, y, yStride);
    }

    /// <summary><see cref="Fold"/> for 16 rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> FoldWide(Vector512<float> acc, Vector512<float> dw, float da, Vector512<int> isum)
        => Avx512F.Add(acc, Avx512F.Multiply(Avx512F.Multiply(dw, Vector512.Create(da)), Avx512F.ConvertToVector512Single(isum)));

    /// <summary>The per-pair reference (also the fallback without AVX2): the codec's scalar integer dot.</summary>
    private static void MultiplyScalar(GemmFormat f, byte* panel, int count, int cols, byte* act, int actStride, int n, float* y, int yStride)
    {
        int rb = WeightRowBytes(f, cols), qb = QuantizedRowBytes(f, cols);
        var k = f == GemmFormat.Q4_K ? (KQuantCodec)CodecRegistry.Get(GgmlType.Q4_K) : null;
        for (int t = 0; t < n; t++)
        {
            var xq = new ReadOnlySpan<byte>(act + (long)t * actStride, qb);
            for (int r = 0; r < count; r++)
            {
                var row = new ReadOnlySpan<byte>(panel + (long)r * rb, rb);
                y[(long)t * yStride + r] = f switch
                {
                    GemmFormat.Q4_0 or GemmFormat.Q8_0 => ReferenceDot(f, row, xq),
                    _ => KQuantDot.DotQ8K(k!, row, xq, useSimd: false),
                };
            }
        }
    }

    /// <summary>
    /// The canonical (scalar) product of a Q4_0 or Q8_0 weight row with a Q8_0 activation row: for each
    /// 32-value block b, s_b = Σ w·a exactly in int32, then sum += (d_w · d_a) · s_b in block order, in FP32.
    /// </summary>
    internal static float ReferenceDot(GemmFormat f, ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
    {
        if (f is not (GemmFormat.Q4_0 or GemmFormat.Q8_0)) throw new ArgumentException($"{f} has no legacy reference dot", nameof(f));
        int wb = f == GemmFormat.Q4_0 ? 18 : 34;
        int blocks = xq.Length / 34;
        if (row.Length < blocks * wb) throw new ArgumentException("weight row shorter than the activation row");
        float sum = 0;
        for (int b = 0; b < blocks; b++)
        {
            var w = row.Slice(b * wb, wb);
            var a = xq.Slice(b * 34, 34);
            int sumi = 0;
            for (int j = 0; j < 32; j++)
            {
                int level = f == GemmFormat.Q8_0 ? (sbyte)w[2 + j] : (j < 16 ? w[2 + j] & 0xF : w[2 + j - 16] >> 4) - 8;
                sumi += level * (sbyte)a[2 + j];
            }
            float dw = (float)BinaryPrimitives.ReadHalfLittleEndian(w);
            float da = (float)BinaryPrimitives.ReadHalfLittleEndian(a);
            sum += dw * da * sumi;
        }
        return sum;
    }

    // ---- kernels ----

    internal interface ITokens { static abstract int N { get; } }
    private readonly struct T1 : ITokens { public static int N => 1; }
    private readonly struct T2 : ITokens { public static int N => 2; }
    private readonly struct T3 : ITokens { public static int N => 3; }
    private readonly struct T4 : ITokens { public static int N => 4; }

    internal interface IVariant
    {
        /// <summary>vpdpbusd (AVX-VNNI) instead of pmaddubsw + pmaddwd.</summary>
        static abstract bool Vnni { get; }
        /// <summary>Signed int8 weights (Q8_0); otherwise unsigned 4-bit codes.</summary>
        static abstract bool SignedWeights { get; }
    }
    internal readonly struct Q40Vnni : IVariant { public static bool Vnni => true; public static bool SignedWeights => false; }
    internal readonly struct Q40Avx2 : IVariant { public static bool Vnni => false; public static bool SignedWeights => false; }
    internal readonly struct Q80Vnni : IVariant { public static bool Vnni => true; public static bool SignedWeights => true; }
    internal readonly struct Q80Avx2 : IVariant { public static bool Vnni => false; public static bool SignedWeights => true; }
    private readonly struct Q4KVnni : IVariant { public static bool Vnni => true; public static bool SignedWeights => false; }
    private readonly struct Q4KAvx2 : IVariant { public static bool Vnni => false; public static bool SignedWeights => false; }

    /// <summary>
    /// acc + Σ over each lane's 4 bytes of w·a (exact): VNNI vpdpbusd; AVX2 pmaddubsw (pairs ≤ 2·255·… see below)
    /// then pmaddwd by 1. Unsigned weights: codes ≤ 15, so pairs stay ≤ 2·15·128 (no saturation).
    /// Signed weights on AVX2 use |w| ⊗ sign(a, w) (pairs ≤ 2·128·127); on VNNI the activation is
    /// the unsigned operand (a + 128), corrected by the panel's −128·Σw.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> Step<V>(Vector256<int> acc, Vector256<byte> w, Vector256<byte> wAbs, Vector256<int> a) where V : struct, IVariant
    {
        if (V.Vnni)
            return V.SignedWeights ? AvxVnni.MultiplyWideningAndAdd(acc, a.AsByte(), w.AsSByte())
                                   : AvxVnni.MultiplyWideningAndAdd(acc, w, a.AsSByte());
        Vector256<short> p = V.SignedWeights ? Avx2.MultiplyAddAdjacent(wAbs, Avx2.Sign(a.AsSByte(), w.AsSByte()))
                                             : Avx2.MultiplyAddAdjacent(w, a.AsSByte());
        return Avx2.Add(acc, Avx2.MultiplyAddAdjacent(p, Vector256.Create((short)1)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> Bcast(byte* p) => Vector256.Create(Unsafe.ReadUnaligned<int>(p));

    /// <summary>acc + (scale · (float)isum), the reference's <c>sum += d_w·d_a·sumi</c> for 8 rows at once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Fold(Vector256<float> acc, Vector256<float> dw, float da, Vector256<int> isum)
        => Avx.Add(acc, Avx.Multiply(Avx.Multiply(dw, Vector256.Create(da)), Avx.ConvertToVector256Single(isum)));

    /// <summary>
    /// Up to 4 tokens × 16 rows. The inner loop walks pointers: with per-iteration index arithmetic
    /// (shift, sign-extend, lea per load) the front end, not the VNNI ports, limited the loop. The results
    /// are stored without a call, which had made the JIT spill the float accumulators in every block.
    /// (A 6-token tile measured no faster: the JIT keeps vpdpbusd's accumulator in ymm0–15, so 12 of them
    /// plus 12 float accumulators cost two register moves per vpdpbusd and spilled two accumulators.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void LegacyTile<V, TT>(byte* panel, int count, int cols, byte* act, int actStride, float* y, int yStride)
        where V : struct, IVariant where TT : struct, ITokens
    {
        int blocks = cols / 32;
        nint s = actStride;
        byte* a0 = act, a1 = act + (TT.N > 1 ? s : 0), a2 = act + (TT.N > 2 ? 2 * s : 0), a3 = act + (TT.N > 3 ? 3 * s : 0);
        int extra = cols; // per-block floats (scales) then ints (corrections) follow the codes
        Vector256<float> f00 = default, f01 = default, f02 = default, f03 = default;
        Vector256<float> f10 = default, f11 = default, f12 = default, f13 = default;
        byte* wb = panel;
        for (int b = 0; b < blocks; b++, wb += LegacyStride)
        {
            Vector256<int> i00, i01, i02, i03, i10, i11, i12, i13;
            if (V.SignedWeights)
            {
                // VNNI: −128·Σw per row; AVX2 (sign trick): no correction (packed as zero).
                i00 = i01 = i02 = i03 = Vector256.Load((int*)(wb + LegacyCorr));
                i10 = i11 = i12 = i13 = Vector256.Load((int*)(wb + LegacyCorr + 32));
            }
            else
            {
                // −8·Σa per token: the unsigned codes q stand in for q − 8.
                nint co = extra + 4 * blocks + 4 * b;
                i00 = i10 = Vector256.Create(*(int*)(a0 + co));
                i01 = i11 = TT.N > 1 ? Vector256.Create(*(int*)(a1 + co)) : default;
                i02 = i12 = TT.N > 2 ? Vector256.Create(*(int*)(a2 + co)) : default;
                i03 = i13 = TT.N > 3 ? Vector256.Create(*(int*)(a3 + co)) : default;
            }
            nint o = 32 * b;
            byte* wj = wb;
            for (nint oEnd = o + 32; o < oEnd; o += 4, wj += 64)
            {
                var w0 = Vector256.Load(wj);
                var w1 = Vector256.Load(wj + 32);
                Vector256<byte> w0a = default, w1a = default;
                if (V.SignedWeights && !V.Vnni) { w0a = Avx2.Abs(w0.AsSByte()); w1a = Avx2.Abs(w1.AsSByte()); }
                var x0 = Bcast(a0 + o);
                i00 = Step<V>(i00, w0, w0a, x0); i10 = Step<V>(i10, w1, w1a, x0);
                if (TT.N > 1) { var x1 = Bcast(a1 + o); i01 = Step<V>(i01, w0, w0a, x1); i11 = Step<V>(i11, w1, w1a, x1); }
                if (TT.N > 2) { var x2 = Bcast(a2 + o); i02 = Step<V>(i02, w0, w0a, x2); i12 = Step<V>(i12, w1, w1a, x2); }
                if (TT.N > 3) { var x3 = Bcast(a3 + o); i03 = Step<V>(i03, w0, w0a, x3); i13 = Step<V>(i13, w1, w1a, x3); }
            }
            var dw0 = Vector256.Load((float*)(wb + LegacyScale));
            var dw1 = Vector256.Load((float*)(wb + LegacyScale + 32));
            nint so = extra + 4 * b;
            float da0 = *(float*)(a0 + so);
            f00 = Fold(f00, dw0, da0, i00); f10 = Fold(f10, dw1, da0, i10);
            if (TT.N > 1) { float da = *(float*)(a1 + so); f01 = Fold(f01, dw0, da, i01); f11 = Fold(f11, dw1, da, i11); }
            if (TT.N > 2) { float da = *(float*)(a2 + so); f02 = Fold(f02, dw0, da, i02); f12 = Fold(f12, dw1, da, i12); }
            if (TT.N > 3) { float da = *(float*)(a3 + so); f03 = Fold(f03, dw0, da, i03); f13 = Fold(f13, dw1, da, i13); }
        }
        // A full panel stores straight into Y; a partial one goes through a buffer.
        float* tmp = stackalloc float[PanelRows * MaxTokens];
        bool full = count == PanelRows;
        float* dst = full ? y : tmp;
        nint ds = full ? yStride : PanelRows;
        f00.Store(dst); f10.Store(dst + 8);
        if (TT.N > 1) { f01.Store(dst + ds); f11.Store(dst + ds + 8); }
        if (TT.N > 2) { f02.Store(dst + 2 * ds); f12.Store(dst + 2 * ds + 8); }
        if (TT.N > 3) { f03.Store(dst + 3 * ds); f13.Store(dst + 3 * ds + 8); }
        if (!full) CopyPartial(tmp, TT.N, count, y, yStride);
    }

    /// <summary>Rows [0, count) of n 16-float tile rows into Y (a partial last panel).</summary>
    private static void CopyPartial(float* tmp, int n, int count, float* y, int yStride)
    {
        for (int t = 0; t < n; t++)
            for (int r = 0; r < count; r++) y[(long)t * yStride + r] = tmp[PanelRows * t + r];
    }

    /// <summary>
    /// Up to 4 tokens × 16 rows of Q4_K: per 32-value group the exact code·activation sums (as in
    /// <see cref="LegacyTile"/>, pointer-walking), times the group's 6-bit scale, summed over the
    /// super-block in int32; then the float fold with d, dmin and the mins.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void KTile<V, TT>(byte* panel, int count, int cols, byte* act, int actStride, float* y, int yStride, byte* scratch)
        where V : struct, IVariant where TT : struct, ITokens
    {
        int blocks = cols / 256;
        nint st = actStride;
        byte* a0 = act, a1 = act + (TT.N > 1 ? st : 0), a2 = act + (TT.N > 2 ? 2 * st : 0), a3 = act + (TT.N > 3 ? 3 * st : 0);
        int ydOff = cols, pairOff = cols + 4 * blocks;
        // The float accumulators (touched once per super-block) and the scaled group sums (once per group) live
        // in memory: held in registers they pushed vpdpbusd's accumulators, which the JIT keeps in ymm0–15,
        // into ymm16–31 and cost two register moves per vpdpbusd.
        // (A stackalloc here gets promoted back to registers; the caller's scratch does not.)
        Vector256<float>* facc = (Vector256<float>*)scratch;
        Vector256<int>* sacc = (Vector256<int>*)(scratch + 256);
        for (int k = 0; k < 8; k++) facc[k] = default;
        byte* wb = panel;
        nint o = 0;
        for (int b = 0; b < blocks; b++, wb += KStride)
        {
            for (int k = 0; k < 8; k++) sacc[k] = default;
            byte* wj = wb;
            int* sc = (int*)(wb + KSc);
            for (int g = 0; g < 8; g++, sc += 16)
            {
                Vector256<int> i00 = default, i01 = default, i02 = default, i03 = default;
                Vector256<int> i10 = default, i11 = default, i12 = default, i13 = default;
                for (nint oEnd = o + 32; o < oEnd; o += 4, wj += 64)
                {
                    var w0 = Vector256.Load(wj);
                    var w1 = Vector256.Load(wj + 32);
                    var x0 = Bcast(a0 + o);
                    i00 = Step<V>(i00, w0, default, x0); i10 = Step<V>(i10, w1, default, x0);
                    if (TT.N > 1) { var x1 = Bcast(a1 + o); i01 = Step<V>(i01, w0, default, x1); i11 = Step<V>(i11, w1, default, x1); }
                    if (TT.N > 2) { var x2 = Bcast(a2 + o); i02 = Step<V>(i02, w0, default, x2); i12 = Step<V>(i12, w1, default, x2); }
                    if (TT.N > 3) { var x3 = Bcast(a3 + o); i03 = Step<V>(i03, w0, default, x3); i13 = Step<V>(i13, w1, default, x3); }
                }
                // Σ_g sc_g·(group dot): exact in int32 (≤ 8·63·32·15·128 < 2^31).
                var sc0 = Vector256.Load(sc);
                var sc1 = Vector256.Load(sc + 8);
                sacc[0] = Avx2.Add(sacc[0], Avx2.MultiplyLow(i00, sc0)); sacc[4] = Avx2.Add(sacc[4], Avx2.MultiplyLow(i10, sc1));
                if (TT.N > 1) { sacc[1] = Avx2.Add(sacc[1], Avx2.MultiplyLow(i01, sc0)); sacc[5] = Avx2.Add(sacc[5], Avx2.MultiplyLow(i11, sc1)); }
                if (TT.N > 2) { sacc[2] = Avx2.Add(sacc[2], Avx2.MultiplyLow(i02, sc0)); sacc[6] = Avx2.Add(sacc[6], Avx2.MultiplyLow(i12, sc1)); }
                if (TT.N > 3) { sacc[3] = Avx2.Add(sacc[3], Avx2.MultiplyLow(i03, sc0)); sacc[7] = Avx2.Add(sacc[7], Avx2.MultiplyLow(i13, sc1)); }
            }
            var d0 = Vector256.Load((float*)(wb + KD)); var d1 = Vector256.Load((float*)(wb + KD + 32));
            var m0 = Vector256.Load((float*)(wb + KDmin)); var m1 = Vector256.Load((float*)(wb + KDmin + 32));
            KFold<V>(ref facc[0], ref facc[4], wb, a0, ydOff, pairOff, b, sacc[0], sacc[4], d0, d1, m0, m1);
            if (TT.N > 1) KFold<V>(ref facc[1], ref facc[5], wb, a1, ydOff, pairOff, b, sacc[1], sacc[5], d0, d1, m0, m1);
            if (TT.N > 2) KFold<V>(ref facc[2], ref facc[6], wb, a2, ydOff, pairOff, b, sacc[2], sacc[6], d0, d1, m0, m1);
            if (TT.N > 3) KFold<V>(ref facc[3], ref facc[7], wb, a3, ydOff, pairOff, b, sacc[3], sacc[7], d0, d1, m0, m1);
        }
        // A full panel stores straight into Y; a partial one goes through a buffer.
        float* tmp = stackalloc float[PanelRows * MaxTokens];
        bool full = count == PanelRows;
        float* dst = full ? y : tmp;
        nint ds = full ? yStride : PanelRows;
        for (int t = 0; t < TT.N; t++) { facc[t].Store(dst + t * ds); facc[4 + t].Store(dst + t * ds + 8); }
        if (!full) CopyPartial(tmp, TT.N, count, y, yStride);
    }

    /// <summary>
    /// One token's super-block: Σ_g min_g·(32-value sum) from (int16, int16) pairs (pmaddwd / vpdpwssd),
    /// then the reference's <c>sum += d·yd·sumi − dmin·yd·summ</c> per row lane.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void KFold<V>(ref Vector256<float> f0, ref Vector256<float> f1, byte* wb, byte* a, int ydOff, int pairOff, int b,
        Vector256<int> sumi0, Vector256<int> sumi1, Vector256<float> d0, Vector256<float> d1, Vector256<float> m0, Vector256<float> m1) where V : struct, IVariant
    {
        Vector256<int> summ0 = default, summ1 = default;
        int* pairs = (int*)(a + pairOff) + 4 * b;
        for (int k = 0; k < 4; k++)
        {
            var s = Vector256.Create(pairs[k]).AsInt16();
            var mp0 = Vector256.Load((short*)(wb + KMin + 64 * k));
            var mp1 = Vector256.Load((short*)(wb + KMin + 64 * k + 32));
            if (V.Vnni)
            {
                summ0 = AvxVnni.MultiplyWideningAndAdd(summ0, mp0, s);
                summ1 = AvxVnni.MultiplyWideningAndAdd(summ1, mp1, s);
            }
            else
            {
                summ0 = Avx2.Add(summ0, Avx2.MultiplyAddAdjacent(mp0, s));
                summ1 = Avx2.Add(summ1, Avx2.MultiplyAddAdjacent(mp1, s));
            }
        }
        var yd = Vector256.Create(((float*)(a + ydOff))[b]);
        f0 = Avx.Add(f0, Avx.Subtract(Avx.Multiply(Avx.Multiply(d0, yd), Avx.ConvertToVector256Single(sumi0)),
                                      Avx.Multiply(Avx.Multiply(m0, yd), Avx.ConvertToVector256Single(summ0))));
        f1 = Avx.Add(f1, Avx.Subtract(Avx.Multiply(Avx.Multiply(d1, yd), Avx.ConvertToVector256Single(sumi1)),
                                      Avx.Multiply(Avx.Multiply(m1, yd), Avx.ConvertToVector256Single(summ1))));
    }

    /// <summary>
    /// One token against Q4_0 / Q8_0 rows straight from their encoding (decode: no panel repacking, which
    /// would cost more than the product): 8 rows at a time, each block's 32-byte dot in 8 lanes per row,
    /// a horizontal-add tree to one exact int32 sum per row, then the same float fold as the GEMM.
    /// Rows past the last multiple of 8 use the scalar reference (same result by definition).
    /// </summary>
    public static void MultiplyRowsOneToken(GemmFormat f, GemmIsa isa, byte* rows, int rowBytes, int count, int cols, byte* act, ReadOnlySpan<byte> xq, float* y)
    {
        if (f == GemmFormat.Q4_K) throw new ArgumentException("Q4_K decodes through the codec's (bit-identical) DotRowQuantized.");
        int r = 0;
        if (isa != GemmIsa.Scalar)
        {
            for (; r + 8 <= count; r += 8)
            {
                byte* w = rows + (long)r * rowBytes;
                switch (f)
                {
                    case GemmFormat.Q4_0 when isa == GemmIsa.AvxVnni: Rows8<Q40Vnni>(w, rowBytes, cols, act, y + r); break;
                    case GemmFormat.Q4_0: Rows8<Q40Avx2>(w, rowBytes, cols, act, y + r); break;
                    case GemmFormat.Q8_0 when isa == GemmIsa.AvxVnni: Rows8<Q80Vnni>(w, rowBytes, cols, act, y + r); break;
                    default: Rows8<Q80Avx2>(w, rowBytes, cols, act, y + r); break;
                }
            }
        }
        for (; r < count; r++)
        {
            var row = new ReadOnlySpan<byte>(rows + (long)r * rowBytes, rowBytes);
            y[r] = ReferenceDot(f, row, xq);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows8<V>(byte* rows, int rowBytes, int cols, byte* act, float* y) where V : struct, IVariant
    {
        int blocks = cols / 32, bb = V.SignedWeights ? 34 : 18;
        float* da = (float*)(act + cols);
        int* corr = (int*)(act + cols + 4 * blocks);
        Vector256<float> acc = default;
        // Decode streams every weight from DRAM once; eight interleaved row streams defeat the hardware
        // prefetcher, so fetch the next eight rows (contiguous) one pass ahead, at this pass's pace. Non-temporal, as
        // the interleaved kernels' (InterleavedRows.PrefetchStream): Q8_0 decode from the file's rows ran 1.1–3.4 %
        // faster than with PREFETCHT0 (synthetic 1B, --no-interleave, one process, switching every 4 tokens, two runs).
        // The F16/BF16 row kernels showed no consistent difference (−2.2 % and +0.6 %) and keep PREFETCHT0.
        byte* next = rows + 8L * rowBytes;
        byte* prefetch = next;
        for (int b = 0; b < blocks; b++)
        {
            for (byte* target = next + 8L * (b + 1) * bb; prefetch < target; prefetch += 64) Sse.PrefetchNonTemporal(prefetch);
            byte* w = rows + b * bb;
            var a = Vector256.Load(act + 32 * b);
            var v0 = RowDot<V>(w, a); var v1 = RowDot<V>(w + rowBytes, a);
            var v2 = RowDot<V>(w + 2 * rowBytes, a); var v3 = RowDot<V>(w + 3 * rowBytes, a);
            var v4 = RowDot<V>(w + 4 * rowBytes, a); var v5 = RowDot<V>(w + 5 * rowBytes, a);
            var v6 = RowDot<V>(w + 6 * rowBytes, a); var v7 = RowDot<V>(w + 7 * rowBytes, a);
            // Horizontal-add tree: lanes of rows 0–3 / 4–7 per 128-bit half, then the halves added.
            var q0 = Avx2.HorizontalAdd(Avx2.HorizontalAdd(v0, v1), Avx2.HorizontalAdd(v2, v3));
            var q1 = Avx2.HorizontalAdd(Avx2.HorizontalAdd(v4, v5), Avx2.HorizontalAdd(v6, v7));
            var isum = Avx2.Add(Avx2.Permute2x128(q0, q1, 0x20), Avx2.Permute2x128(q0, q1, 0x31));
            if (!V.SignedWeights) isum = Avx2.Add(isum, Vector256.Create(corr[b]));
            // Eight scalar loads beat vpgatherdd on Zen 4.
            var dw = HalfToSingle(Avx2.ConvertToVector256Int32(Vector128.Create(
                *(ushort*)w, *(ushort*)(w + rowBytes), *(ushort*)(w + 2 * rowBytes), *(ushort*)(w + 3 * rowBytes),
                *(ushort*)(w + 4 * rowBytes), *(ushort*)(w + 5 * rowBytes), *(ushort*)(w + 6 * rowBytes), *(ushort*)(w + 7 * rowBytes))));
            acc = Fold(acc, dw, da[b], isum);
        }
        acc.Store(y);
    }

    /// <summary>One row's block dot with the prepared activation codes as 8 int32 lanes (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> RowDot<V>(byte* block, Vector256<byte> a) where V : struct, IVariant
    {
        if (!V.SignedWeights)
        {
            var raw = Vector128.Load(block + 2);
            var codes = Vector256.Create(raw, Vector128.ShiftRightLogical(raw.AsUInt16(), 4).AsByte()) & Vector256.Create((byte)0x0F);
            if (V.Vnni) return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, codes, a.AsSByte());
            return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(codes, a.AsSByte()), Vector256.Create((short)1));
        }
        var w = Vector256.Load((sbyte*)(block + 2));
        if (V.Vnni)
        {
            // a is biased by +128: Σ(a + 128)·w − 128·Σw.
            var t = AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, a, w);
            return Avx2.Subtract(t, AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, Vector256.Create((byte)0x80), w));
        }
        var p = Avx2.MultiplyAddAdjacent(Avx2.Abs(w), Avx2.Sign(a.AsSByte(), w));
        return Avx2.MultiplyAddAdjacent(p, Vector256.Create((short)1));
    }

    /// <summary>8 fp16 values (low 16 bits of each lane) to float, exactly as <see cref="LegacyKernels.F16"/> does it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> HalfToSingle(Vector256<int> bits)
    {
        var h = bits.AsUInt32() & Vector256.Create(0xFFFFu);
        var shifted = Vector256.ShiftLeft(h & Vector256.Create(0x7FFFu), 13);
        var normal = Avx.Multiply(shifted.AsSingle(), Vector256.Create(KQuantMath.TwoPow112)).AsUInt32();
        var special = shifted | Vector256.Create(0x7F800000u)
                    | (~Vector256.Equals(h & Vector256.Create(0x3FFu), Vector256<uint>.Zero) & Vector256.Create(0x00400000u));
        var isSpecial = Vector256.Equals(h & Vector256.Create(0x7C00u), Vector256.Create(0x7C00u));
        var magnitude = Vector256.ConditionalSelect(isSpecial, special, normal);
        return (magnitude | Vector256.ShiftLeft(h & Vector256.Create(0x8000u), 16)).AsSingle();
    }
}
