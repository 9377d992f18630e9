using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Buffers.Binary;

namespace Lowbit.Formats;

/// <summary>
/// Integer affine quantization primitives (GPTQ / llm-compressor conventions), shared by
/// <see cref="IntAffineCodec"/> and callable by methods such as GPTQ that choose codes themselves.
/// <para>
/// A group of weights gets a scale s and an integer zero point z; value = (q − z)·s with the code
/// q ∈ [0, 2^bits − 1]. Symmetric: s = 2·amax / (2^bits − 1), z = 2^(bits−1) (so codes cover
/// [−2^(bits−1), 2^(bits−1) − 1]·s, as GPTQ's sym mode). Asymmetric: the range [min(x,0), max(x,0)]
/// (zero always representable), s = (max − min)/(2^bits − 1), z = round(−min / s).
/// Rounding is to nearest, ties to even; codes are clamped to the grid.
/// </para>
/// </summary>
public static class IntQuant
{
    /// <summary>Largest code for a bit width (2^bits − 1).</summary>
    public static int MaxCode(int bits) => (1 << bits) - 1;

    /// <summary>
    /// Scale and zero point for the range [xmin, xmax] (xmin ≤ 0 ≤ xmax is enforced).
    /// When <paramref name="fp16Scale"/> the scale is rounded to binary16 first — as stored in
    /// per-group blocks — so codes are chosen against the scale that dequantization will use.
    /// A degenerate range yields scale 0 (every value decodes to 0).
    /// </summary>
    public static (float Scale, int Zero) RangeParams(float xmin, float xmax, int bits, bool symmetric, bool fp16Scale)
    {
        int maxq = MaxCode(bits);
        xmin = MathF.Min(xmin, 0f);
        xmax = MathF.Max(xmax, 0f);
        if (symmetric)
        {
            float amax = MathF.Max(-xmin, xmax);
            float s = RoundScale(2f * amax / maxq, fp16Scale);
            return (s, 1 << (bits - 1));
        }
        float scale = RoundScale((xmax - xmin) / maxq, fp16Scale);
        if (scale == 0f) return (0f, 0);
        int zero = (int)Math.Clamp(MathF.Round(-xmin / scale, MidpointRounding.ToEven), 0, maxq);
        return (scale, zero);
    }

    private static float RoundScale(float s, bool fp16)
    {
        if (!float.IsFinite(s)) throw new LowbitException($"cannot quantize non-finite values (range scale {s}).");
        return fp16 ? (float)(Half)s : s;
    }

    /// <summary>The code for x under (scale, zero): clamp(round(x/scale) + zero, 0, 2^bits − 1).</summary>
    public static int QuantizeValue(float x, float scale, int zero, int bits)
    {
        if (scale == 0f) return zero;
        float q = MathF.Round(x / scale, MidpointRounding.ToEven) + zero;
        return (int)Math.Clamp(q, 0f, MaxCode(bits)); // NaN clamps to 0 via the cast below
    }

    /// <summary>The value a code decodes to: (q − zero)·scale.</summary>
    public static float DequantizeValue(int code, float scale, int zero) => (code - zero) * scale;

    /// <summary>
    /// Scale and zero point for one group of weights. Without <paramref name="mseSearch"/> it is
    /// the min/max range. With it, the range is shrunk by p ∈ {1, 0.99, …, 0.20} and the p with
    /// the least (importance-weighted) squared reconstruction error wins — the grid search of
    /// GPTQ's / llm-compressor's MSE observer and AWQ's clip search, with norm 2. p = 1 is a
    /// candidate, so the error never exceeds the plain min/max choice.
    /// </summary>
    public static (float Scale, int Zero) GroupParams(ReadOnlySpan<float> w, int bits, bool symmetric, bool mseSearch,
        ReadOnlySpan<float> importance, bool fp16Scale)
    {
        float xmin = 0, xmax = 0;
        foreach (float v in w)
        {
            if (v < xmin) xmin = v;
            if (v > xmax) xmax = v;
        }
        var best = RangeParams(xmin, xmax, bits, symmetric, fp16Scale);
        if (!mseSearch || best.Scale == 0f) return best;
        double bestErr = SquaredError(w, best.Scale, best.Zero, bits, importance);
        for (int i = 1; i <= 80; i++)
        {
            float p = 1f - i / 100f;
            var cand = RangeParams(p * xmin, p * xmax, bits, symmetric, fp16Scale);
            if (cand.Scale == 0f) continue;
            double err = SquaredError(w, cand.Scale, cand.Zero, bits, importance);
            if (err < bestErr) { bestErr = err; best = cand; }
        }
        return best;
    }

    /// <summary>Σ wᵢ·(xᵢ − deq(q(xᵢ)))², wᵢ = importance[i] or 1.</summary>
    public static double SquaredError(ReadOnlySpan<float> x, float scale, int zero, int bits, ReadOnlySpan<float> importance)
    {
        double err = 0;
        for (int i = 0; i < x.Length; i++)
        {
            float d = x[i] - DequantizeValue(QuantizeValue(x[i], scale, zero, bits), scale, zero);
            err += (importance.IsEmpty ? 1.0 : importance[i]) * d * d;
        }
        return err;
    }

    /// <summary>Packs codes LSB-first into a bit stream: code i occupies bits [i·bits, (i+1)·bits).</summary>
    public static void PackBits(ReadOnlySpan<byte> codes, int bits, Span<byte> dst)
    {
        dst.Slice(0, (codes.Length * bits + 7) / 8).Clear();
        for (int i = 0; i < codes.Length; i++)
        {
            int bit = i * bits, b = bit >> 3, sh = bit & 7;
            int v = codes[i] << sh;
            dst[b] |= (byte)v;
            if (sh + bits > 8) dst[b + 1] |= (byte)(v >> 8);
        }
    }

    /// <summary>Reads code i of an LSB-first bit stream.</summary>
    public static int ReadBits(ReadOnlySpan<byte> src, int i, int bits)
    {
        int bit = i * bits, b = bit >> 3, sh = bit & 7;
        int v = src[b] >> sh;
        if (sh + bits > 8) v |= src[b + 1] << (8 - sh);
        return v & ((1 << bits) - 1);
    }
}

/// <summary>Fused kernels over bit-packed integer codes.</summary>
public static class IntKernels
{
    /// <summary>Σ qᵢ·xᵢ over codes packed LSB-first (scalar reference).</summary>
    public static float DotCodesScalar(ReadOnlySpan<byte> packed, int bits, ReadOnlySpan<float> x)
    {
        float sum = 0;
        for (int i = 0; i < x.Length; i++) sum += IntQuant.ReadBits(packed, i, bits) * x[i];
        return sum;
    }

    /// <summary>Σ qᵢ·xᵢ over codes packed LSB-first; vectorized for 4- and 8-bit codes.</summary>
    public static float DotCodes(ReadOnlySpan<byte> packed, int bits, ReadOnlySpan<float> x)
    {
        if (!Vector256.IsHardwareAccelerated || (bits != 4 && bits != 8) || x.Length < 16)
            return DotCodesScalar(packed, bits, x);
        return bits == 4 ? Dot4(packed, x) : Dot8(packed, x);
    }

    private static float Dot4(ReadOnlySpan<byte> packed, ReadOnlySpan<float> x)
    {
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        var mask = Vector128.Create((byte)0x0F);
        int i = 0;
        if (Sse2.IsSupported)
        {
            for (; i + 32 <= x.Length; i += 32)
            {
                // 16 bytes = 32 codes; byte k holds code 2k (low nibble) and 2k+1 (high nibble).
                var b = Vector128.Create(packed.Slice(i / 2, 16));
                var lo = b & mask;
                var hi = Vector128.ShiftRightLogical(b, 4);
                var c0 = Sse2.UnpackLow(lo, hi);  // codes 0..15 in order
                var c1 = Sse2.UnpackHigh(lo, hi); // codes 16..31
                acc0 += ToFloat8(c0) * Vector256.Create(x.Slice(i, 8));
                acc1 += ToFloat8(Sse2.ShiftRightLogical128BitLane(c0, 8)) * Vector256.Create(x.Slice(i + 8, 8));
                acc0 += ToFloat8(c1) * Vector256.Create(x.Slice(i + 16, 8));
                acc1 += ToFloat8(Sse2.ShiftRightLogical128BitLane(c1, 8)) * Vector256.Create(x.Slice(i + 24, 8));
            }
        }
        float sum = Vector256.Sum(acc0 + acc1);
        for (; i < x.Length; i++) sum += IntQuant.ReadBits(packed, i, 4) * x[i];
        return sum;
    }

    /// <summary>The low 8 unsigned bytes as 8 floats.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> ToFloat8(Vector128<byte> v)
    {
        if (Avx2.IsSupported)
            return Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(v));
        var s = Vector128.WidenLower(v);
        return Vector256.ConvertToSingle(Vector256.Create(
            Vector128.WidenLower(s), Vector128.WidenUpper(s)).AsInt32());
    }

    private static float Dot8(ReadOnlySpan<byte> packed, ReadOnlySpan<float> x)
    {
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        int i = 0;
        for (; i + 16 <= x.Length; i += 16)
        {
            var b = Vector128.Create(packed.Slice(i, 16));
            acc0 += ToFloat8(b) * Vector256.Create(x.Slice(i, 8));
            acc1 += ToFloat8(Vector128.Shuffle(b,
                Vector128.Create((byte)8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7)))
                * Vector256.Create(x.Slice(i + 8, 8));
        }
        float sum = Vector256.Sum(acc0 + acc1);
        for (; i < x.Length; i++) sum += packed[i] * x[i];
        return sum;
    }
}
