using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// Generic dot-product kernels of the k-quant codecs and the pieces their fused kernels share.
/// Each codec unpacks a super-block into a common integer form (256 unsigned codes, 16 integer
/// group scales and mins, float d and dmin, value = d·scale·u − dmin·min); the generic kernels
/// consume that form. They are the scalar references (and the portable fallbacks) of the per-codec
/// fused AVX2 kernels that the codecs' DotRow/DotRowQuantized use.
/// <list type="bullet">
/// <item>Float activations: Σ_g (d·scale_g)·Σ u·x − (dmin·min_g)·Σ x (AVX2+FMA, scalar fallback).</item>
/// <item>Q8_K activations (ggml's vec_dot_q*_K_q8_K scheme): exact integer sums Σ_g scale_g·Σ u·q and
/// Σ_g min_g·bsum_g per super-block, combined in float once per block; the AVX2 path
/// (maddubs/madd) and the scalar path produce bit-identical results.</item>
/// </list>
/// </summary>
internal static class KQuantDot
{
    private const int QK = KQuantMath.SuperBlock;

    /// <summary>
    /// Splits 128 bytes of packed nibbles (4 runs of 32: low nibbles, then high nibbles) into 256 codes
    /// with Vector256 operations (callers use <see cref="KQuantCodec.UnpackCodesScalar"/> when Vector256 is not accelerated).
    /// </summary>
    public static void UnpackNibbles(ReadOnlySpan<byte> qs, Span<byte> codes)
    {
        var mask = Vector256.Create((byte)0x0F);
        for (int c = 0; c < 4; c++)
        {
            var q = Vector256.Create(qs.Slice(32 * c, 32));
            (q & mask).CopyTo(codes.Slice(64 * c));
            (Vector256.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & mask).CopyTo(codes.Slice(64 * c + 32));
        }
    }

    /// <summary>
    /// Unpacks 2-bit codes laid out as in Q2_K/Q3_K (two halves of 128 values; within a half, 32 bytes hold
    /// 4 runs of 32 codes at bit shifts 0, 2, 4, 6) into 256 codes.
    /// </summary>
    public static void Unpack2Bit(ReadOnlySpan<byte> qs, Span<byte> codes)
    {
        var mask = Vector256.Create((byte)3);
        for (int h = 0; h < 2; h++)
        {
            var q = Vector256.Create(qs.Slice(32 * h, 32)).AsUInt16();
            for (int j = 0; j < 4; j++)
                (Vector256.ShiftRightLogical(q, 2 * j).AsByte() & mask).CopyTo(codes.Slice(128 * h + 32 * j));
        }
    }

    public static float DotFloat(KQuantCodec codec, ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
        => DotFloat(codec, row, x, Avx2.IsSupported && Fma.IsSupported);

    /// <summary>Fused dot of an encoded row with float activations; <paramref name="useSimd"/> picks the AVX2+FMA path.</summary>
    public static float DotFloat(KQuantCodec codec, ReadOnlySpan<byte> row, ReadOnlySpan<float> x, bool useSimd)
    {
        int blocks = CheckRow(codec, row, x.Length);
        Span<byte> codes = stackalloc byte[QK];
        Span<short> scales = stackalloc short[16];
        Span<short> mins = stackalloc short[16];
        if (useSimd)
        {
            var acc = Vector256<float>.Zero;
            for (int b = 0; b < blocks; b++)
            {
                codec.UnpackForDot(row.Slice(b * codec.BlockBytes, codec.BlockBytes), codes, scales, mins, out float d, out float dmin);
                acc = DotFloatBlockAvx2(codes, scales, mins, d, dmin, x.Slice(b * QK, QK), acc);
            }
            return Vector256.Sum(acc);
        }
        float sum = 0;
        for (int b = 0; b < blocks; b++)
        {
            codec.UnpackForDot(row.Slice(b * codec.BlockBytes, codec.BlockBytes), codes, scales, mins, out float d, out float dmin);
            var xb = x.Slice(b * QK, QK);
            for (int g = 0; g < 16; g++)
            {
                float qx = 0, sx = 0;
                for (int i = 16 * g; i < 16 * g + 16; i++)
                {
                    qx += codes[i] * xb[i];
                    sx += xb[i];
                }
                sum += d * scales[g] * qx - dmin * mins[g] * sx;
            }
        }
        return sum;
    }

    private static unsafe Vector256<float> DotFloatBlockAvx2(ReadOnlySpan<byte> codes, ReadOnlySpan<short> scales, ReadOnlySpan<short> mins,
        float d, float dmin, ReadOnlySpan<float> x, Vector256<float> acc)
    {
        fixed (byte* pc = codes)
        fixed (float* px = x)
        {
            for (int g = 0; g < 16; g++)
            {
                var u0 = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(pc + 16 * g));
                var u1 = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(pc + 16 * g + 8));
                var x0 = Avx.LoadVector256(px + 16 * g);
                var x1 = Avx.LoadVector256(px + 16 * g + 8);
                var qx = Fma.MultiplyAdd(u1, x1, Avx.Multiply(u0, x0));
                var sx = Avx.Add(x0, x1);
                acc = Fma.MultiplyAdd(Vector256.Create(d * scales[g]), qx, acc);
                acc = Fma.MultiplyAddNegated(Vector256.Create(dmin * mins[g]), sx, acc);
            }
        }
        return acc;
    }

    /// <summary>Σ u·x over 16 unsigned codes and 16 floats, as 8 partial lanes (AVX2+FMA).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector256<float> Dot16(Vector128<byte> codes, float* x)
    {
        var a = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(codes));
        var b = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(codes, 8)));
        return Fma.MultiplyAdd(b, Avx.LoadVector256(x + 8), Avx.Multiply(a, Avx.LoadVector256(x)));
    }

    /// <summary>Σ q·x over 16 signed codes and 16 floats, as 8 partial lanes (AVX2+FMA).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector256<float> Dot16(Vector128<sbyte> codes, float* x)
    {
        var a = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(codes));
        var b = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(codes, 8)));
        return Fma.MultiplyAdd(b, Avx.LoadVector256(x + 8), Avx.Multiply(a, Avx.LoadVector256(x)));
    }

    /// <summary>Validates a float dot's operands; returns the block count.</summary>
    public static int CheckFloatPair(KQuantCodec codec, ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => CheckRow(codec, row, x.Length);

    public static float DotQ8K(KQuantCodec codec, ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
        => DotQ8K(codec, row, xq, Avx2.IsSupported);

    /// <summary>
    /// Dot of an encoded weight row with a Q8_K-encoded activation row (ggml's vec_dot_*_q8_K);
    /// <paramref name="useSimd"/> picks the AVX2 path, which is bit-identical to the scalar one.
    /// </summary>
    public static float DotQ8K(KQuantCodec codec, ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq, bool useSimd)
    {
        const int q8Bytes = Q8Bytes;
        int blocks = CheckQ8Pair(codec, row, xq);
        Span<byte> codes = stackalloc byte[QK];
        Span<short> scales = stackalloc short[16];
        Span<short> mins = stackalloc short[16];
        float sum = 0;
        for (int b = 0; b < blocks; b++)
        {
            codec.UnpackForDot(row.Slice(b * codec.BlockBytes, codec.BlockBytes), codes, scales, mins, out float d, out float dmin);
            var yb = xq.Slice(b * q8Bytes, q8Bytes);
            float yd = BinaryPrimitives.ReadSingleLittleEndian(yb);
            var qs = MemoryMarshal.Cast<byte, sbyte>(yb.Slice(Q8_KCodec.OffQs, QK));
            var bsums = MemoryMarshal.Cast<byte, short>(yb.Slice(Q8_KCodec.OffBsums, 32));
            int sumi = useSimd ? GroupDotAvx2(codes, qs, scales) : GroupDotScalar(codes, qs, scales);
            int summ = 0;
            for (int g = 0; g < 16; g++) summ += mins[g] * (BitConverter.IsLittleEndian ? bsums[g] : BinaryPrimitives.ReverseEndianness(bsums[g]));
            sum += d * yd * sumi - dmin * yd * summ;
        }
        return sum;
    }

    /// <summary>
    /// Σ over 32 consecutive values (two groups of 16 with integer scales <paramref name="s0"/>, <paramref name="s1"/>)
    /// of scale·u·q as 8 int32 lanes: pmaddubsw (u ≤ 63, |q| ≤ 127: no saturation) then pmaddwd.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector256<int> GroupPairAvx2(Vector256<byte> codes, sbyte* q, short s0, short s1)
    {
        var p = Avx2.MultiplyAddAdjacent(codes, Avx.LoadVector256(q));
        return Avx2.MultiplyAddAdjacent(p, Vector256.Create(Vector128.Create(s0), Vector128.Create(s1)));
    }

    private static int GroupDotScalar(ReadOnlySpan<byte> codes, ReadOnlySpan<sbyte> qs, ReadOnlySpan<short> scales)
    {
        int sumi = 0;
        for (int g = 0; g < 16; g++)
        {
            int s = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++) s += codes[i] * qs[i];
            sumi += scales[g] * s;
        }
        return sumi;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int GroupDotAvx2(ReadOnlySpan<byte> codes, ReadOnlySpan<sbyte> qs, ReadOnlySpan<short> scales)
    {
        // Codes ≤ 63 and |q| ≤ 127: pmaddubsw pairs stay below 2·63·127 < 2^15 (no saturation),
        // pmaddwd with |scale| ≤ 128 stays far below 2^31.
        var acc = Vector256<int>.Zero;
        ref byte c0 = ref MemoryMarshal.GetReference(codes);
        ref sbyte q0 = ref MemoryMarshal.GetReference(qs);
        for (int k = 0; k < 8; k++)
        {
            var c = Vector256.LoadUnsafe(ref c0, (nuint)(32 * k));
            var q = Vector256.LoadUnsafe(ref q0, (nuint)(32 * k));
            var p = Avx2.MultiplyAddAdjacent(c, q);
            var s = Vector256.Create(Vector128.Create(scales[2 * k]), Vector128.Create(scales[2 * k + 1]));
            acc = Avx2.Add(acc, Avx2.MultiplyAddAdjacent(p, s));
        }
        return Vector256.Sum(acc);
    }

    /// <summary>acc + Σ pairs·scale per adjacent int16 pair into int32 lanes (exact for |pair| ≤ 2·15·127, scale ≤ 63).</summary>
    internal interface IScaledPairs
    {
        static abstract Vector256<int> Add(Vector256<int> acc, Vector256<short> pairs, Vector256<short> scale);
    }

    /// <summary>AVX2: pmaddwd then add.</summary>
    internal readonly struct MaddScale : IScaledPairs
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Add(Vector256<int> acc, Vector256<short> pairs, Vector256<short> scale)
            => Avx2.Add(acc, Avx2.MultiplyAddAdjacent(pairs, scale));
    }

    /// <summary>AVX-VNNI: one vpdpwssd.</summary>
    internal readonly struct VnniScale : IScaledPairs
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Add(Vector256<int> acc, Vector256<short> pairs, Vector256<short> scale)
            => AvxVnni.MultiplyWideningAndAdd(acc, pairs, scale);
    }

    /// <summary>pshufb control that broadcasts int16 word <paramref name="word"/> of each 128-bit half to all eight words.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> WordBroadcast(int word)
        => Vector256.Create((ushort)(0x0100 * (2 * word + 1) + 2 * word)).AsByte();

    public const int Q8Bytes = 292;

    /// <summary>Checks that an encoded weight row and a Q8_K activation row hold the same number of values; returns the block count.</summary>
    public static int CheckQ8Pair(KQuantCodec codec, ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
    {
        int blocks = row.Length / codec.BlockBytes;
        if (row.Length % codec.BlockBytes != 0 || xq.Length != blocks * Q8Bytes)
            throw new ArgumentException($"{codec.Name}: row of {row.Length} bytes does not pair with a q8_K row of {xq.Length} bytes.");
        return blocks;
    }

    private static int CheckRow(KQuantCodec codec, ReadOnlySpan<byte> row, int cols)
    {
        if (cols % QK != 0 || row.Length != cols / QK * codec.BlockBytes)
            throw new ArgumentException($"{codec.Name}: row of {row.Length} bytes does not hold {cols} values.");
        return cols / QK;
    }
}
