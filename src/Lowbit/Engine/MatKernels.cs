using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Numerics.Tensors;
using static Lowbit.Formats.FloatSums;

namespace Lowbit.Engine;

/// <summary>
/// F32 dot-product kernels. Every kernel computes each output element with exactly the same
/// arithmetic: one 8-lane accumulator fed by fused multiply-adds over the multiple-of-8 prefix,
/// a fixed horizontal sum, then the scalar tail. So a value does not depend on which kernel
/// (1×1, 4×3, ...), which tile or which thread produced it: prefill, decode and any thread count
/// agree bit for bit on float weights.
/// </summary>
internal static unsafe class MatKernels
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> MulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> acc)
        => Fma.IsSupported ? Fma.MultiplyAdd(a, b, acc) : acc + a * b;

    /// <summary>y[r] = s[r] + Σ_{k..n} w_r[k]·x[k] for four rows (the scalar tail after the SIMD prefix).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Finish4(Vector128<float> s, float* w0, int ldw, float* x, int k, int n, float* y)
    {
        if (k == n)
        {
            s.Store(y);
            return;
        }
        for (int r = 0; r < 4; r++)
        {
            float* w = w0 + (long)r * ldw;
            float v = s.GetElement(r);
            for (int t = k; t < n; t++) v += w[t] * x[t];
            y[r] = v;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish(Vector256<float> acc, float* a, float* b, int k, int n)
    {
        float s = HSum(acc);
        for (; k < n; k++) s += a[k] * b[k];
        return s;
    }

    public static float Dot(float* a, float* b, int n)
    {
        var acc = Vector256<float>.Zero;
        int k = 0;
        for (; k <= n - 8; k += 8) acc = MulAdd(Vector256.Load(a + k), Vector256.Load(b + k), acc);
        return Finish(acc, a, b, k, n);
    }

    public static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        fixed (float* pa = a, pb = b) return Dot(pa, pb, Math.Min(a.Length, b.Length));
    }

    /// <summary>
    /// Dot of an F16 row with x, same arithmetic as <see cref="Dot(float*, float*, int)"/> on the
    /// exactly converted row (so decode equals prefill's convert-then-multiply bit for bit). With AVX2
    /// the conversion is fused into the FMA loop (<see cref="HalfToSingleAvx2"/>); a row holding an
    /// infinity or NaN, which that conversion does not model, is redone through the library conversion.
    /// </summary>
    public static float DotF16(ReadOnlySpan<Half> w, float* x, int n)
    {
        fixed (Half* pw = w) return DotF16(pw, x, n);
    }

    /// <inheritdoc cref="DotF16(ReadOnlySpan{Half}, float*, int)"/>
    public static float DotF16(Half* w, float* x, int n)
    {
        if (!(Avx2.IsSupported && Fma.IsSupported)) return DotF16Converted(w, x, n);
        var acc = Vector256<float>.Zero;
        Vector256<float> hi = default, lo = default;
        int k = 0;
        for (; k <= n - 8; k += 8)
        {
            var f = HalfToSingleAvx2((short*)(w + k));
            hi = Avx.Max(hi, f);
            lo = Avx.Min(lo, f);
            acc = Fma.MultiplyAdd(f, Avx.LoadVector256(x + k), acc);
        }
        if (HasNonFinite(hi, lo)) return DotF16Converted(w, x, n);
        float s = HSum(acc);
        for (; k < n; k++) s += (float)w[k] * x[k];
        return s;
    }

    /// <summary>
    /// The reference F16 dot: converts in 256-value chunks with the library's (exact, special-value
    /// aware) conversion, then <see cref="Dot(float*, float*, int)"/>'s arithmetic.
    /// </summary>
    public static float DotF16Converted(Half* w, float* x, int n)
    {
        float* buf = stackalloc float[256];
        var acc = Vector256<float>.Zero;
        int k = 0;
        while (n - k >= 8)
        {
            int chunk = Math.Min(256, (n - k) & ~7);
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(w + k, chunk), new Span<float>(buf, chunk));
            for (int j = 0; j < chunk; j += 8) acc = MulAdd(Vector256.Load(buf + j), Vector256.Load(x + k + j), acc);
            k += chunk;
        }
        float s = HSum(acc);
        for (; k < n; k++) s += (float)w[k] * x[k];
        return s;
    }

    /// <summary>
    /// Eight F16 values → F32 in four instructions, exact for zeros, subnormals and normals:
    /// sign-extending each 16-bit value and shifting it left by 13 puts the 15 magnitude bits at the
    /// top of a float's exponent/mantissa (bits 27..13) and copies of the sign in bits 31..28; masking
    /// bits 30..28 leaves a float equal to ±value·2^-112 (an F16 subnormal lands on an F32 normal or
    /// subnormal, never rounded), so multiplying by 2^112 is exact. An F16 infinity or NaN comes out
    /// as a finite ±[65536, 131072) — callers detect that range (no finite F16 reaches 65536) and
    /// fall back to <see cref="DotF16Converted"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> HalfToSingleAvx2(short* p) => Avx.Multiply(HalfBitsAsSingleAvx2(p), Vector256.Create(Formats.KQuantMath.TwoPow112));

    /// <summary>
    /// 8 finite halves with their sign, exponent and mantissa moved into a float's fields: each value times
    /// 2^−112, exactly (subnormal for small halves). <see cref="HalfToSingleAvx2"/> without its final multiply.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> HalfBitsAsSingleAvx2(short* p)
    {
        var s = Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(p), 13);
        return Avx2.And(s, Vector256.Create(HalfBitsMask)).AsSingle();
    }

    /// <summary><see cref="HalfBitsAsSingleAvx2"/> on 16 finite halves (AVX-512F).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> HalfBitsAsSingleAvx512(short* p)
    {
        var s = Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.Load(p)), 13);
        return Avx512F.And(s, Vector512.Create(HalfBitsMask)).AsSingle();
    }

    /// <summary><see cref="HalfToSingleAvx2"/> on 16 finite halves (AVX-512F).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> HalfToSingleAvx512(short* p) => Avx512F.Multiply(HalfBitsAsSingleAvx512(p), Vector512.Create(Formats.KQuantMath.TwoPow112));

    /// <summary>After the sign extension and the shift by 13: keeps the sign (bit 31) and the 15 magnitude bits (27..13).</summary>
    private const int HalfBitsMask = unchecked((int)0x8FFFE000);

    /// <summary>True when a fused F16 conversion met an infinity or NaN (see <see cref="HalfToSingleAvx2"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool HasNonFinite(Vector256<float> max, Vector256<float> min)
        => Vector256.GreaterThanOrEqualAny(max, Vector256.Create(65536f)) || Vector256.LessThanOrEqualAny(min, Vector256.Create(-65536f));

    /// <summary>Dot of a BF16 row with x (bf16 → f32 is a 16-bit shift, done in registers).</summary>
    public static float DotBF16(ushort* w, float* x, int n)
    {
        var acc = Vector256<float>.Zero;
        int k = 0;
        for (; k <= n - 8; k += 8)
        {
            var wide = Vector256.WidenLower(Vector128.Load(w + k).ToVector256Unsafe());
            acc = MulAdd((wide << 16).AsSingle(), Vector256.Load(x + k), acc);
        }
        float s = HSum(acc);
        for (; k < n; k++) s += BitConverter.UInt32BitsToSingle((uint)w[k] << 16) * x[k];
        return s;
    }

    /// <summary>Four BF16 rows (stride ldw values) dotted with x: four independent FMA chains, each as <see cref="DotBF16"/>.</summary>
    public static void DotBF16x4(ushort* w0, int ldw, float* x, int n, float* y)
    {
        ushort* w1 = w0 + ldw, w2 = w1 + ldw, w3 = w2 + ldw;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        byte* prefetch = (byte*)(w0 + 4L * ldw); // one pass ahead, as in DotF16x4
        int k = 0;
        for (; k <= n - 8; k += 8, prefetch += 64)
        {
            if (Sse.IsSupported) Sse.Prefetch0(prefetch);
            var u = Vector256.Load(x + k);
            a0 = MulAdd((Vector256.WidenLower(Vector128.Load(w0 + k).ToVector256Unsafe()) << 16).AsSingle(), u, a0);
            a1 = MulAdd((Vector256.WidenLower(Vector128.Load(w1 + k).ToVector256Unsafe()) << 16).AsSingle(), u, a1);
            a2 = MulAdd((Vector256.WidenLower(Vector128.Load(w2 + k).ToVector256Unsafe()) << 16).AsSingle(), u, a2);
            a3 = MulAdd((Vector256.WidenLower(Vector128.Load(w3 + k).ToVector256Unsafe()) << 16).AsSingle(), u, a3);
        }
        y[0] = FinishBF16(a0, w0, x, k, n); y[1] = FinishBF16(a1, w1, x, k, n);
        y[2] = FinishBF16(a2, w2, x, k, n); y[3] = FinishBF16(a3, w3, x, k, n);
    }

    private static float FinishBF16(Vector256<float> acc, ushort* w, float* x, int k, int n)
    {
        float s = HSum(acc);
        for (; k < n; k++) s += BitConverter.UInt32BitsToSingle((uint)w[k] << 16) * x[k];
        return s;
    }

    /// <summary>
    /// Four F16 rows (stride ldw values) dotted with x, each exactly as <see cref="DotF16(Half*, float*, int)"/>:
    /// four independent FMA chains share every activation load.
    /// </summary>
    public static void DotF16x4(Half* w0, int ldw, float* x, int n, float* y) => DotF16x4<TrackRange>(w0, ldw, x, n, y);

    /// <summary>
    /// <see cref="DotF16x4"/> for rows known to hold no infinity or NaN (see <see cref="HalvesAllFinite"/>):
    /// the same arithmetic without the per-value range tracking, so bit-identical to it on such rows.
    /// </summary>
    public static void DotF16x4Finite(Half* w0, int ldw, float* x, int n, float* y) => DotF16x4<KnownFinite>(w0, ldw, x, n, y);

    /// <summary>Whether the fused F16 dot must watch for infinities/NaN (which its conversion does not handle).</summary>
    private interface IRangeCheck { static abstract bool Track { get; } }
    private readonly struct TrackRange : IRangeCheck { public static bool Track => true; }
    private readonly struct KnownFinite : IRangeCheck { public static bool Track => false; }

    // A struct type parameter: the JIT compiles one body per variant, so the finite path carries no range code.
    private static void DotF16x4<TCheck>(Half* w0, int ldw, float* x, int n, float* y) where TCheck : struct, IRangeCheck
    {
        if (!(Avx2.IsSupported && Fma.IsSupported))
        {
            DotF16x4Converted(w0, ldw, x, n, y);
            return;
        }
        short* p0 = (short*)w0, p1 = p0 + ldw, p2 = p1 + ldw, p3 = p2 + ldw;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        Vector256<float> hi = default, lo = default;
        // Decode streams the weights from DRAM once; four interleaved row streams get too few misses
        // in flight from the hardware prefetcher alone. Prefetch the next four rows (contiguous when
        // ldw = n, as in decode) at this pass's pace, 64 bytes per step: one pass ahead.
        byte* prefetch = (byte*)(p0 + 4L * ldw);
        int k = 0;
        for (; k <= n - 8; k += 8, prefetch += 64)
        {
            Sse.Prefetch0(prefetch);
            var u = Avx.LoadVector256(x + k);
            var f0 = HalfToSingleAvx2(p0 + k);
            var f1 = HalfToSingleAvx2(p1 + k);
            var f2 = HalfToSingleAvx2(p2 + k);
            var f3 = HalfToSingleAvx2(p3 + k);
            a0 = Fma.MultiplyAdd(f0, u, a0);
            a1 = Fma.MultiplyAdd(f1, u, a1);
            a2 = Fma.MultiplyAdd(f2, u, a2);
            a3 = Fma.MultiplyAdd(f3, u, a3);
            if (TCheck.Track)
            {
                hi = Avx.Max(Avx.Max(hi, Avx.Max(f0, f1)), Avx.Max(f2, f3));
                lo = Avx.Min(Avx.Min(lo, Avx.Min(f0, f1)), Avx.Min(f2, f3));
            }
        }
        if (TCheck.Track && HasNonFinite(hi, lo))
        {
            DotF16x4Converted(w0, ldw, x, n, y);
            return;
        }
        FinishF16x4(HSum4(a0, a1, a2, a3), w0, ldw, x, k, n, y);
    }

    /// <summary>Adds each row's scalar tail (values k..n) to its vector sum, in order: shared by the four-row F16 dots.</summary>
    private static void FinishF16x4(Vector128<float> sums, Half* w0, int ldw, float* x, int k, int n, float* y)
    {
        for (int r = 0; r < 4; r++)
        {
            Half* w = w0 + (long)r * ldw;
            float s = sums.GetElement(r);
            for (int t = k; t < n; t++) s += (float)w[t] * x[t];
            y[r] = s;
        }
    }

    /// <summary>True when none of the <paramref name="count"/> fp16 values is an infinity or NaN (exponent bits all ones).</summary>
    public static bool HalvesAllFinite(ushort* h, long count)
    {
        var mask = Vector256.Create((ushort)0x7C00);
        var special = Vector256<ushort>.Zero;
        long i = 0;
        for (; i + 16 <= count; i += 16)
            special |= Vector256.Equals(Vector256.Load(h + i) & mask, mask);
        if (special != Vector256<ushort>.Zero) return false;
        for (; i < count; i++)
            if ((h[i] & 0x7C00) == 0x7C00) return false;
        return true;
    }

    /// <summary>The reference four-row F16 dot through the library conversion (see <see cref="DotF16Converted"/>).</summary>
    public static void DotF16x4Converted(Half* w0, int ldw, float* x, int n, float* y)
    {
        const int Chunk = 256;
        float* buf = stackalloc float[4 * Chunk];
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int k = 0;
        while (n - k >= 8)
        {
            int chunk = Math.Min(Chunk, (n - k) & ~7);
            for (int r = 0; r < 4; r++)
                TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(w0 + (long)r * ldw + k, chunk), new Span<float>(buf + r * Chunk, chunk));
            for (int j = 0; j < chunk; j += 8)
            {
                var u = Vector256.Load(x + k + j);
                a0 = MulAdd(Vector256.Load(buf + j), u, a0);
                a1 = MulAdd(Vector256.Load(buf + Chunk + j), u, a1);
                a2 = MulAdd(Vector256.Load(buf + 2 * Chunk + j), u, a2);
                a3 = MulAdd(Vector256.Load(buf + 3 * Chunk + j), u, a3);
            }
            k += chunk;
        }
        FinishF16x4(HSum4(a0, a1, a2, a3), w0, ldw, x, k, n, y);
    }

    /// <summary>BF16 → F32 (exact), SIMD.</summary>
    public static void ConvertBF16(ushort* src, float* dst, int n)
    {
        int k = 0;
        for (; k <= n - 16; k += 16)
        {
            var v = Vector256.Load(src + k);
            var (lo, hi) = Vector256.Widen(v);
            Vector256.Store((lo << 16).AsSingle(), dst + k);
            Vector256.Store((hi << 16).AsSingle(), dst + k + 8);
        }
        for (; k < n; k++) dst[k] = BitConverter.UInt32BitsToSingle((uint)src[k] << 16);
    }

    /// <summary>
    /// y[t*ldy + r] = dot(w[r*ldw ..], x[t*ldx ..]) for r &lt; rows, t &lt; tokens, over n values.
    /// Register-blocked 4 rows × 3 tokens (12 accumulators): each weight vector loaded once feeds
    /// three tokens and each activation vector four rows.
    /// </summary>
    /// <param name="rowsFromMemory">The rows are not in cache (decode attention's keys): prefetch them ahead where the
    /// tile does (<see cref="KernelWide{P}"/>).</param>
    public static void MatMulTile(float* w, int ldw, int rows, float* x, int ldx, int tokens, int n, float* y, int ldy, float* xPairs = null,
        bool rowsFromMemory = false)
    {
        int t = 0;
        if (WideTiles && rows >= 4)
            for (; t + 6 <= tokens; t += 6)
            {
                float* x0 = x + (long)t * ldx;
                float* y0 = y + (long)t * ldy;
                float* p0 = xPairs is null ? null : xPairs + (long)t * (n & ~7);
                int r = 0;
                for (; r + 4 <= rows; r += 4)
                {
                    if (p0 is not null) KernelWide<SixPacked>(w + (long)r * ldw, ldw, x0, ldx, p0, n, y0 + r, ldy, prefetch: false);
                    else KernelWide<SixLoaded>(w + (long)r * ldw, ldw, x0, ldx, null, n, y0 + r, ldy, prefetch: false);
                }
                for (; r < rows; r++)
                {
                    float* yr = y0 + r;
                    Kernel1x3(w + (long)r * ldw, x0, x0 + ldx, x0 + 2L * ldx, n, yr, yr + ldy, yr + 2L * ldy);
                    Kernel1x3(w + (long)r * ldw, x0 + 3L * ldx, x0 + 4L * ldx, x0 + 5L * ldx, n, yr + 3L * ldy, yr + 4L * ldy, yr + 5L * ldy);
                }
            }
        // Four tokens left (tokens mod 6 = 4 or 5, e.g. the four query heads of a KV head at decode): one 512-bit pass
        // over the rows instead of a 4x3 pass and a 4x1 pass.
        if (WideTiles && rows >= 4 && tokens - t >= 4)
        {
            float* x0 = x + (long)t * ldx;
            float* y0 = y + (long)t * ldy;
            // The four tokens as two packed pairs (one 64-byte load per pair and 8 columns), on the stack for short rows.
            int nv = n & ~7;
            float* pairs = stackalloc float[nv <= 1024 ? 4 * nv : 0];
            if (nv <= 1024)
            {
                PackPair(x0, x0 + ldx, nv, pairs);
                PackPair(x0 + 2L * ldx, x0 + 3L * ldx, nv, pairs + 2 * nv);
            }
            else pairs = null;
            int r = 0;
            for (; r + 4 <= rows; r += 4)
            {
                if (pairs != null) KernelWide<FourPacked>(w + (long)r * ldw, ldw, x0, ldx, pairs, n, y0 + r, ldy, rowsFromMemory);
                else KernelWide<FourLoaded>(w + (long)r * ldw, ldw, x0, ldx, null, n, y0 + r, ldy, rowsFromMemory);
            }
            for (; r < rows; r++)
            {
                float* yr = y0 + r;
                Kernel1x3(w + (long)r * ldw, x0, x0 + ldx, x0 + 2L * ldx, n, yr, yr + ldy, yr + 2L * ldy);
                yr[3L * ldy] = Dot(w + (long)r * ldw, x0 + 3L * ldx, n);
            }
            t += 4;
        }
        for (; t + 3 <= tokens; t += 3)
        {
            float* x0 = x + (long)t * ldx, x1 = x0 + ldx, x2 = x1 + ldx;
            float* y0 = y + (long)t * ldy, y1 = y0 + ldy, y2 = y1 + ldy;
            int r = 0;
            for (; r + 4 <= rows; r += 4)
                Kernel4x3(w + (long)r * ldw, ldw, x0, x1, x2, n, y0 + r, y1 + r, y2 + r);
            for (; r < rows; r++)
                Kernel1x3(w + (long)r * ldw, x0, x1, x2, n, y0 + r, y1 + r, y2 + r);
        }
        for (; t < tokens; t++)
        {
            float* xt = x + (long)t * ldx;
            float* yt = y + (long)t * ldy;
            int r = 0;
            for (; r + 4 <= rows; r += 4)
                Kernel4x1(w + (long)r * ldw, ldw, xt, n, yt + r);
            for (; r < rows; r++)
                yt[r] = Dot(w + (long)r * ldw, xt, n);
        }
    }

    private static void Kernel4x3(float* w0, int ldw, float* x0, float* x1, float* x2, int n, float* y0, float* y1, float* y2)
    {
        float* w1 = w0 + ldw, w2 = w1 + ldw, w3 = w2 + ldw;
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector256<float> a20 = default, a21 = default, a22 = default, a23 = default;
        int k = 0;
        for (; k <= n - 8; k += 8)
        {
            var v0 = Vector256.Load(w0 + k);
            var v1 = Vector256.Load(w1 + k);
            var v2 = Vector256.Load(w2 + k);
            var v3 = Vector256.Load(w3 + k);
            var u = Vector256.Load(x0 + k);
            a00 = MulAdd(v0, u, a00); a01 = MulAdd(v1, u, a01); a02 = MulAdd(v2, u, a02); a03 = MulAdd(v3, u, a03);
            u = Vector256.Load(x1 + k);
            a10 = MulAdd(v0, u, a10); a11 = MulAdd(v1, u, a11); a12 = MulAdd(v2, u, a12); a13 = MulAdd(v3, u, a13);
            u = Vector256.Load(x2 + k);
            a20 = MulAdd(v0, u, a20); a21 = MulAdd(v1, u, a21); a22 = MulAdd(v2, u, a22); a23 = MulAdd(v3, u, a23);
        }
        Finish4(HSum4(a00, a01, a02, a03), w0, ldw, x0, k, n, y0);
        Finish4(HSum4(a10, a11, a12, a13), w0, ldw, x1, k, n, y1);
        Finish4(HSum4(a20, a21, a22, a23), w0, ldw, x2, k, n, y2);
    }

    /// <summary>Whether <see cref="MatMulTile"/> runs its 512-bit tile (4 rows × 6 tokens) on this CPU.</summary>
    public static bool WideTiles => Avx512DQ.IsSupported;

    /// <summary>
    /// 4 rows × 4 or 6 tokens (<typeparamref name="P"/>) in 512-bit registers: each accumulator holds two (row, token)
    /// 8-lane chains, tokens 2p and 2p + 1 of one row side by side, against the row's 8 weights broadcast to both halves.
    /// Per (row, token) that is <see cref="Kernel4x3"/>'s chain (the same FMAs in the same order on the same lanes) and
    /// the same horizontal sum, so the results are the same bits; per 8 columns it does twice the multiply-adds per
    /// instruction. Packed (<see cref="PackTokenPairs"/>, <see cref="PackPair"/>), a pair is one 64-byte load from
    /// <paramref name="pairs"/> instead of two 32-byte loads and an insert, which ran the 6-token tile 1.3× faster in L1
    /// (177–183 against 134 GFLOP/s on one core). With <paramref name="prefetch"/> it asks for the rows 16 rows ahead: at
    /// decode the 4-token tile's rows are one KV head's keys, read from memory once per token; in cache (the batched
    /// attention's blocks) the prefetches cost 2–5 % of the tile's time, so there it does not.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void KernelWide<P>(float* w0, int ldw, float* x0, int ldx, float* pairs, int n, float* y0, int ldy, bool prefetch)
        where P : struct, ITokenPairs
    {
        if (prefetch) PrefetchRows(w0 + 16L * ldw, ldw, n);
        float* w1 = w0 + ldw, w2 = w1 + ldw, w3 = w2 + ldw;
        // Only the pointers the variant reads (live pointers the packed loop does not use made the JIT spill its own).
        float* x1 = P.Packed ? null : x0 + ldx, x2 = P.Packed ? null : x1 + ldx, x3 = P.Packed ? null : x2 + ldx;
        float* x4 = P.Packed || P.Pairs < 3 ? null : x3 + ldx, x5 = P.Packed || P.Pairs < 3 ? null : x4 + ldx;
        int nv = n & ~7;
        float* q0 = P.Packed ? pairs : null, q1 = P.Packed ? pairs + 2 * nv : null, q2 = P.Packed && P.Pairs > 2 ? pairs + 4 * nv : null;
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
        int k = 0;
        for (; k < nv; k += 8)
        {
            var v0 = Avx512DQ.BroadcastVector256ToVector512(w0 + k);
            var v1 = Avx512DQ.BroadcastVector256ToVector512(w1 + k);
            var v2 = Avx512DQ.BroadcastVector256ToVector512(w2 + k);
            var v3 = Avx512DQ.BroadcastVector256ToVector512(w3 + k);
            var u0 = Pair<P>(q0, x0, x1, k);
            a00 = Avx512F.FusedMultiplyAdd(v0, u0, a00); a01 = Avx512F.FusedMultiplyAdd(v1, u0, a01);
            a02 = Avx512F.FusedMultiplyAdd(v2, u0, a02); a03 = Avx512F.FusedMultiplyAdd(v3, u0, a03);
            var u1 = Pair<P>(q1, x2, x3, k);
            a10 = Avx512F.FusedMultiplyAdd(v0, u1, a10); a11 = Avx512F.FusedMultiplyAdd(v1, u1, a11);
            a12 = Avx512F.FusedMultiplyAdd(v2, u1, a12); a13 = Avx512F.FusedMultiplyAdd(v3, u1, a13);
            if (P.Pairs > 2)
            {
                var u2 = Pair<P>(q2, x4, x5, k);
                a20 = Avx512F.FusedMultiplyAdd(v0, u2, a20); a21 = Avx512F.FusedMultiplyAdd(v1, u2, a21);
                a22 = Avx512F.FusedMultiplyAdd(v2, u2, a22); a23 = Avx512F.FusedMultiplyAdd(v3, u2, a23);
            }
        }
        FinishPairs(a00, a01, a02, a03, w0, ldw, x0, ldx, k, n, y0, ldy);
        FinishPairs(a10, a11, a12, a13, w0, ldw, x0 + 2L * ldx, ldx, k, n, y0 + 2L * ldy, ldy);
        if (P.Pairs > 2) FinishPairs(a20, a21, a22, a23, w0, ldw, x0 + 4L * ldx, ldx, k, n, y0 + 4L * ldy, ldy);
    }

    /// <summary>
    /// Tokens 2p and 2p + 1 at column k for <see cref="KernelWide{P}"/>: packed at <paramref name="q"/>, else from their
    /// rows, the second half inserted straight from memory (Vector512.Create here made the JIT keep each pair on the stack).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Pair<P>(float* q, float* xa, float* xb, int k) where P : struct, ITokenPairs
    {
        if (P.Packed) return Vector512.Load(q + 2 * k);
        return Avx512F.InsertVector256(Vector256.Load(xa + k).ToVector512Unsafe(), Vector256.Load(xb + k), 1);
    }

    /// <summary>Asks for 4 rows of <paramref name="n"/> floats from <paramref name="w"/> (<paramref name="ldw"/> apart), every 64-byte line.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void PrefetchRows(float* w, int ldw, int n)
    {
        byte* ahead = (byte*)w;
        for (long row = 0; row < 4; row++, ahead += (long)ldw * sizeof(float))
            for (long o = 0; o < (long)n * sizeof(float); o += 64) Sse.Prefetch0(ahead + o);
    }

    /// <summary>How <see cref="KernelWide{P}"/> reads its tokens: how many pairs, and whether packed.</summary>
    private interface ITokenPairs
    {
        static abstract int Pairs { get; }
        static abstract bool Packed { get; }
    }
    private readonly struct SixPacked : ITokenPairs { public static int Pairs => 3; public static bool Packed => true; }
    private readonly struct SixLoaded : ITokenPairs { public static int Pairs => 3; public static bool Packed => false; }
    private readonly struct FourPacked : ITokenPairs { public static int Pairs => 2; public static bool Packed => true; }
    private readonly struct FourLoaded : ITokenPairs { public static int Pairs => 2; public static bool Packed => false; }

    /// <summary>Two tokens' first <paramref name="nv"/> values (a multiple of 8) as pairs: per 8 columns a's 8, then b's 8.</summary>
    private static void PackPair(float* a, float* b, int nv, float* dst)
    {
        for (int k = 0; k < nv; k += 8, dst += 16)
        {
            Vector256.Load(a + k).Store(dst);
            Vector256.Load(b + k).Store(dst + 8);
        }
    }

    /// <summary>
    /// The 512-bit tiles' results for one token pair (2p in the low halves of the four rows' accumulators, 2p + 1 in
    /// the high halves): <see cref="Kernel4x3"/>'s horizontal sums and scalar column tails from k.
    /// </summary>
    private static void FinishPairs(Vector512<float> r0, Vector512<float> r1, Vector512<float> r2, Vector512<float> r3,
        float* w0, int ldw, float* x, int ldx, int k, int n, float* y, int ldy)
    {
        Finish4(HSum4(r0.GetLower(), r1.GetLower(), r2.GetLower(), r3.GetLower()), w0, ldw, x, k, n, y);
        Finish4(HSum4(r0.GetUpper(), r1.GetUpper(), r2.GetUpper(), r3.GetUpper()), w0, ldw, x + ldx, k, n, y + ldy);
    }

    /// <summary>
    /// Tokens [0, 6·⌊tokens/6⌋) of x in the layout <see cref="KernelWide{P}"/> reads: per block of 6 tokens, per pair
    /// (2p, 2p + 1), per 8 columns the pair's two 8-value slices side by side; (n &amp; ~7) columns (the tails stay in x).
    /// Size: that many tokens × (n &amp; ~7) floats.
    /// </summary>
    public static void PackTokenPairs(float* x, int ldx, int tokens, int n, float* dst)
    {
        int nv = n & ~7;
        for (int t = 0; t + 1 < tokens - tokens % 6; t += 2)
            PackPair(x + (long)t * ldx, x + (long)(t + 1) * ldx, nv, dst + (long)t * nv);
    }

    private static void Kernel1x3(float* w0, float* x0, float* x1, float* x2, int n, float* y0, float* y1, float* y2)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default;
        int k = 0;
        for (; k <= n - 8; k += 8)
        {
            var v = Vector256.Load(w0 + k);
            a0 = MulAdd(v, Vector256.Load(x0 + k), a0);
            a1 = MulAdd(v, Vector256.Load(x1 + k), a1);
            a2 = MulAdd(v, Vector256.Load(x2 + k), a2);
        }
        *y0 = Finish(a0, w0, x0, k, n); *y1 = Finish(a1, w0, x1, k, n); *y2 = Finish(a2, w0, x2, k, n);
    }

    private static void Kernel4x1(float* w0, int ldw, float* x0, int n, float* y)
    {
        float* w1 = w0 + ldw, w2 = w1 + ldw, w3 = w2 + ldw;
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        int k = 0;
        for (; k <= n - 8; k += 8)
        {
            var u = Vector256.Load(x0 + k);
            a0 = MulAdd(Vector256.Load(w0 + k), u, a0);
            a1 = MulAdd(Vector256.Load(w1 + k), u, a1);
            a2 = MulAdd(Vector256.Load(w2 + k), u, a2);
            a3 = MulAdd(Vector256.Load(w3 + k), u, a3);
        }
        Finish4(HSum4(a0, a1, a2, a3), w0, ldw, x0, k, n, y);
    }

    /// <summary>
    /// <see cref="WeightedRowSum"/> for <paramref name="heads"/> probability rows (row h at p + h·<paramref name="ldp"/>)
    /// over the same <paramref name="count"/> value rows, into output + h·<paramref name="ldo"/>: the query heads that share
    /// one KV head in grouped-query attention. Four heads at a time on AVX-512 for head dims that are multiples of 64:
    /// each value row is loaded once for the four (against once per head), with software prefetch a few rows ahead, since
    /// at decode the cache's rows come from memory (a token streams all the weights in between). Per output column
    /// the sum is <see cref="WeightedRowSum"/>'s FMA chain over j, on the same lane, so the results are the same bits.
    /// </summary>
    public static void WeightedRowSums(float* p, int ldp, int heads, int count, float* v, int ldv, float* output, int ldo, int dim)
    {
        int h = 0;
        if (Avx512F.IsSupported && Fma.IsSupported && dim % 64 == 0)
            for (; h + 4 <= heads; h += 4)
                for (int d = 0; d < dim; d += 64)
                    WeightedRowSums4x64(p + (long)h * ldp, ldp, count, v + d, ldv, output + (long)h * ldo + d, ldo);
        for (; h < heads; h++) WeightedRowSum(p + (long)h * ldp, count, v, ldv, output + (long)h * ldo, dim);
    }

    /// <summary>Rows of value prefetched ahead in <see cref="WeightedRowSums4x64"/> (4 KiB of a 64-wide F32 head).</summary>
    private const int ValuePrefetchRows = 16;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void WeightedRowSums4x64(float* p, int ldp, int count, float* v, int ldv, float* output, int ldo)
    {
        float* p1 = p + ldp, p2 = p1 + ldp, p3 = p2 + ldp;
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
        float* vj = v;
        byte* ahead = (byte*)(v + (long)ValuePrefetchRows * ldv);
        for (int j = 0; j < count; j++, vj += ldv, ahead += (long)ldv * sizeof(float))
        {
            Sse.Prefetch0(ahead); Sse.Prefetch0(ahead + 64); Sse.Prefetch0(ahead + 128); Sse.Prefetch0(ahead + 192);
            var v0 = Vector512.Load(vj);
            var v1 = Vector512.Load(vj + 16);
            var v2 = Vector512.Load(vj + 32);
            var v3 = Vector512.Load(vj + 48);
            var q = Vector512.Create(p[j]);
            a00 = Avx512F.FusedMultiplyAdd(q, v0, a00); a01 = Avx512F.FusedMultiplyAdd(q, v1, a01);
            a02 = Avx512F.FusedMultiplyAdd(q, v2, a02); a03 = Avx512F.FusedMultiplyAdd(q, v3, a03);
            q = Vector512.Create(p1[j]);
            a10 = Avx512F.FusedMultiplyAdd(q, v0, a10); a11 = Avx512F.FusedMultiplyAdd(q, v1, a11);
            a12 = Avx512F.FusedMultiplyAdd(q, v2, a12); a13 = Avx512F.FusedMultiplyAdd(q, v3, a13);
            q = Vector512.Create(p2[j]);
            a20 = Avx512F.FusedMultiplyAdd(q, v0, a20); a21 = Avx512F.FusedMultiplyAdd(q, v1, a21);
            a22 = Avx512F.FusedMultiplyAdd(q, v2, a22); a23 = Avx512F.FusedMultiplyAdd(q, v3, a23);
            q = Vector512.Create(p3[j]);
            a30 = Avx512F.FusedMultiplyAdd(q, v0, a30); a31 = Avx512F.FusedMultiplyAdd(q, v1, a31);
            a32 = Avx512F.FusedMultiplyAdd(q, v2, a32); a33 = Avx512F.FusedMultiplyAdd(q, v3, a33);
        }
        float* o = output;
        a00.Store(o); a01.Store(o + 16); a02.Store(o + 32); a03.Store(o + 48); o += ldo;
        a10.Store(o); a11.Store(o + 16); a12.Store(o + 32); a13.Store(o + 48); o += ldo;
        a20.Store(o); a21.Store(o + 16); a22.Store(o + 32); a23.Store(o + 48); o += ldo;
        a30.Store(o); a31.Store(o + 16); a32.Store(o + 32); a33.Store(o + 48);
    }

    /// <summary>out[d] = Σ_j p[j]·v[j·ldv + d] for d &lt; dim (attention's probability-weighted sum of value rows).</summary>
    public static void WeightedRowSum(float* p, int count, float* v, int ldv, float* output, int dim)
    {
        int d = 0;
        // 64 columns per pass (a whole 64-wide head): eight FMA chains cover the FMA latency, and each value row is
        // walked once instead of twice. Per column the sum is the same FMA chain over j as in the narrower passes.
        for (; d + 64 <= dim; d += 64)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            float* vd = v + d;
            for (int j = 0; j < count; j++, vd += ldv)
            {
                var pj = Vector256.Create(p[j]);
                a0 = MulAdd(pj, Vector256.Load(vd), a0);
                a1 = MulAdd(pj, Vector256.Load(vd + 8), a1);
                a2 = MulAdd(pj, Vector256.Load(vd + 16), a2);
                a3 = MulAdd(pj, Vector256.Load(vd + 24), a3);
                a4 = MulAdd(pj, Vector256.Load(vd + 32), a4);
                a5 = MulAdd(pj, Vector256.Load(vd + 40), a5);
                a6 = MulAdd(pj, Vector256.Load(vd + 48), a6);
                a7 = MulAdd(pj, Vector256.Load(vd + 56), a7);
            }
            Vector256.Store(a0, output + d); Vector256.Store(a1, output + d + 8);
            Vector256.Store(a2, output + d + 16); Vector256.Store(a3, output + d + 24);
            Vector256.Store(a4, output + d + 32); Vector256.Store(a5, output + d + 40);
            Vector256.Store(a6, output + d + 48); Vector256.Store(a7, output + d + 56);
        }
        for (; d + 32 <= dim; d += 32)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            float* vd = v + d;
            for (int j = 0; j < count; j++, vd += ldv)
            {
                var pj = Vector256.Create(p[j]);
                a0 = MulAdd(pj, Vector256.Load(vd), a0);
                a1 = MulAdd(pj, Vector256.Load(vd + 8), a1);
                a2 = MulAdd(pj, Vector256.Load(vd + 16), a2);
                a3 = MulAdd(pj, Vector256.Load(vd + 24), a3);
            }
            Vector256.Store(a0, output + d); Vector256.Store(a1, output + d + 8);
            Vector256.Store(a2, output + d + 16); Vector256.Store(a3, output + d + 24);
        }
        for (; d + 8 <= dim; d += 8)
        {
            Vector256<float> a = default;
            float* vd = v + d;
            for (int j = 0; j < count; j++, vd += ldv) a = MulAdd(Vector256.Create(p[j]), Vector256.Load(vd), a);
            Vector256.Store(a, output + d);
        }
        for (; d < dim; d++)
        {
            float a = 0;
            for (int j = 0; j < count; j++) a += p[j] * v[(long)j * ldv + d];
            output[d] = a;
        }
    }

    public static ReadOnlySpan<Half> AsHalf(ReadOnlySpan<byte> b) => MemoryMarshal.Cast<byte, Half>(b);
}
