using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// The scale/min searches behind ggml's k-quants (ggml-quants.c: nearest_int, make_qx_quants,
/// make_q3_quants, make_qkx2_quants, make_qkx3_quants, make_qp_quants), reimplemented so that
/// every float operation happens in the same order and precision as the C code (no FMA
/// contraction, float not double). Bit-exactness with ggml depends on that: change an
/// expression's order and some golden block will differ in one code.
/// </summary>
internal static class KQuantMath
{
    /// <summary>Values per super-block (ggml's QK_K).</summary>
    public const int SuperBlock = 256;

    /// <summary>Below this a group counts as all zero (ggml's GROUP_MAX_EPS).</summary>
    public const float GroupMaxEps = 1e-15f;

    /// <summary>
    /// ggml's nearest_int: adds 1.5·2^23 so the FPU rounds to an integer (round half to even)
    /// and reads the integer back from the mantissa bits. Valid for |v| ≤ 4194303; outside
    /// that range it returns the same garbage the C code does, which matters for
    /// bit-exactness on extreme inputs.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int NearestInt(float v)
    {
        float shifted = v + 12582912f;
        int bits = BitConverter.SingleToInt32Bits(shifted);
        return (bits & 0x007fffff) - 0x00400000;
    }

    /// <summary>FP32 → FP16 bits, round to nearest even (ggml's GGML_FP32_TO_FP16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort ToHalfBits(float v) => BitConverter.HalfToUInt16Bits((Half)v);

    /// <summary>
    /// All eight 6-bit scales and mins of a Q4_K/Q5_K super-block at once from its 12 packed bytes
    /// (<see cref="GetScaleMinK4"/> for j = 0..7): byte j of <paramref name="scales"/> / <paramref name="mins"/> is scale / min j.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void UnpackScaleMinK4(byte* packed, out ulong scales, out ulong mins)
    {
        uint u0 = Unsafe.ReadUnaligned<uint>(packed), u1 = Unsafe.ReadUnaligned<uint>(packed + 4), u2 = Unsafe.ReadUnaligned<uint>(packed + 8);
        scales = (u0 & 0x3f3f3f3fu) | (ulong)((u2 & 0x0f0f0f0fu) | (((u0 >> 6) & 0x03030303u) << 4)) << 32;
        mins = (u1 & 0x3f3f3f3fu) | (ulong)(((u2 >> 4) & 0x0f0f0f0fu) | (((u1 >> 6) & 0x03030303u) << 4)) << 32;
    }

    /// <summary>FP16 bits → FP32 (exact), through System.Half.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float FromHalfBits(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>
    /// <see cref="FromHalfBits"/> as inline integer and float operations, bit-identical on all 65,536
    /// patterns. System.Half's operator is an out-of-line call, and every call spills the live vector
    /// registers (all caller-saved): kernels that convert several scales while holding accumulators
    /// (Q4_K four rows, the legacy block kernels) use this; single-row kernels measured faster with the call.
    /// The 15 magnitude bits shifted left by 13 are the value · 2^-112 as an FP32 (subnormals land on
    /// normals or subnormals, never rounded), so multiplying by 2^112 is exact.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float FromHalfBitsInline(ushort bits)
    {
        uint h = bits;
        uint shifted = (h & 0x7FFF) << 13;
        uint magnitude = (h & 0x7C00) == 0x7C00
            ? shifted | 0x7F800000 | ((h & 0x3FF) != 0 ? 0x00400000u : 0u) // infinity, or NaN made quiet as conversions do
            : BitConverter.SingleToUInt32Bits(BitConverter.UInt32BitsToSingle(shifted) * TwoPow112);
        return BitConverter.UInt32BitsToSingle(magnitude | ((h & 0x8000) << 16));
    }

    internal const float TwoPow112 = 5.192296858534828e33f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ReadHalf(ReadOnlySpan<byte> block, int offset) =>
        FromHalfBits((ushort)(block[offset] | block[offset + 1] << 8));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WriteHalf(Span<byte> block, int offset, float v)
    {
        ushort h = ToHalfBits(v);
        block[offset] = (byte)h;
        block[offset + 1] = (byte)(h >> 8);
    }

    /// <summary>
    /// Symmetric scale search (make_qx_quants): codes L[i] ∈ [0, 2·nmax) with value (L − nmax)·scale.
    /// rmseType 0 = plain max scaling; 1 = weights x² (or <paramref name="weights"/> when given)
    /// with the ±0.9 scale sweep; negative = one refinement only. Returns the scale.
    /// </summary>
    public static float MakeQxQuants(int n, int nmax, ReadOnlySpan<float> x, Span<sbyte> codes, int rmseType, ReadOnlySpan<float> weights)
    {
        float max = 0, amax = 0;
        for (int i = 0; i < n; ++i)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < GroupMaxEps)
        {
            codes[..n].Clear();
            return 0f;
        }
        float iscale = -nmax / max;
        if (rmseType == 0)
        {
            for (int i = 0; i < n; ++i)
                codes[i] = (sbyte)(nmax + Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1));
            return 1 / iscale;
        }
        bool returnEarly = false;
        if (rmseType < 0) { rmseType = -rmseType; returnEarly = true; }
        bool hasWeights = !weights.IsEmpty;

        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; ++i)
        {
            int l = Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
            codes[i] = (sbyte)(l + nmax);
            float w = hasWeights ? weights[i] : QxWeight(rmseType, x[i]);
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        float scale = suml2 != 0 ? sumlx / suml2 : 0f;
        if (returnEarly) return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
        float best = scale * sumlx;
        for (int step = -9; step <= 9; ++step)
        {
            if (step == 0) continue;
            iscale = -(nmax + 0.1f * step) / max;
            sumlx = suml2 = 0;
            for (int i = 0; i < n; ++i)
            {
                int l = Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
                float w = hasWeights ? weights[i] : QxWeight(rmseType, x[i]);
                sumlx += w * x[i] * l;
                suml2 += w * l * l;
            }
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                for (int i = 0; i < n; ++i)
                    codes[i] = (sbyte)(nmax + Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1));
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float QxWeight(int rmseType, float x) => rmseType switch
    {
        1 => x * x,
        2 => 1f,
        3 => MathF.Abs(x),
        _ => MathF.Sqrt(MathF.Abs(x)),
    };

    /// <summary>
    /// Symmetric 3-bit-style search with x² weights and coordinate-descent refinement
    /// (make_q3_quants). Codes L[i] ∈ [0, 2·nmax); all-zero groups get code 0 (not nmax),
    /// as in ggml. Returns the scale.
    /// </summary>
    public static float MakeQ3Quants(int n, int nmax, ReadOnlySpan<float> x, Span<sbyte> codes, bool doRmse)
    {
        float max = 0, amax = 0;
        for (int i = 0; i < n; ++i)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < GroupMaxEps)
        {
            codes[..n].Clear();
            return 0f;
        }
        float iscale = -nmax / max;
        if (doRmse)
        {
            float sumlx = 0, suml2 = 0;
            for (int i = 0; i < n; ++i)
            {
                int l = Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
                codes[i] = (sbyte)l;
                float w = x[i] * x[i];
                sumlx += w * x[i] * l;
                suml2 += w * l * l;
            }
            for (int iter = 0; iter < 5; ++iter)
            {
                int changed = 0;
                for (int i = 0; i < n; ++i)
                {
                    float w = x[i] * x[i];
                    float slx = sumlx - w * x[i] * codes[i];
                    if (slx > 0)
                    {
                        float sl2 = suml2 - w * codes[i] * codes[i];
                        int newL = Math.Clamp(NearestInt(x[i] * sl2 / slx), -nmax, nmax - 1);
                        if (newL != codes[i])
                        {
                            slx += w * x[i] * newL;
                            sl2 += w * newL * newL;
                            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2)
                            {
                                codes[i] = (sbyte)newL;
                                sumlx = slx;
                                suml2 = sl2;
                                ++changed;
                            }
                        }
                    }
                }
                if (changed == 0) break;
            }
            for (int i = 0; i < n; ++i) codes[i] = (sbyte)(codes[i] + nmax);
            return suml2 > 0f ? sumlx / suml2 : 0f;
        }
        for (int i = 0; i < n; ++i)
            codes[i] = (sbyte)(Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1) + nmax);
        return 1 / iscale;
    }

    /// <summary>
    /// Asymmetric (scale, min) search used by the reference Q2_K/Q4_K/Q5_K quantizers
    /// (make_qkx2_quants): value ≈ scale·L − theMin with L ∈ [0, nmax]. Sweeps
    /// <paramref name="nstep"/>+1 candidate inverse scales (nmax + rmin + rdelta·k)/(max − min) and
    /// keeps the weighted least-squares fit with the lowest weighted error (|·| when useMad).
    /// </summary>
    public static float MakeQkx2Quants(int n, int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights,
        Span<byte> codes, out float theMin, Span<byte> scratch, float rmin, float rdelta, int nstep, bool useMad)
    {
        float min = x[0], max = x[0];
        float sumW = weights[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; ++i)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (min > 0) min = 0;
        if (max == min)
        {
            codes[..n].Clear();
            theMin = -min;
            return 0f;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; ++i)
        {
            int l = NearestInt(iscale * (x[i] - min));
            codes[i] = (byte)Math.Clamp(l, 0, nmax);
            float diff = scale * codes[i] + min - x[i];
            diff = useMad ? MathF.Abs(diff) : diff * diff;
            bestError += weights[i] * diff;
        }
        if (nstep < 1)
        {
            theMin = -min;
            return scale;
        }
        for (int step = 0; step <= nstep; ++step)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; ++i)
            {
                int l = Math.Clamp(NearestInt(iscale * (x[i] - min)), 0, nmax);
                scratch[i] = (byte)l;
                float w = weights[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXL += w * l * x[i];
            }
            float det = sumW * sumL2 - sumL * sumL;
            if (det > 0)
            {
                float thisScale = (sumW * sumXL - sumX * sumL) / det;
                float thisMin = (sumL2 * sumX - sumL * sumXL) / det;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXL / sumL2;
                }
                float error = 0;
                for (int i = 0; i < n; ++i)
                {
                    float diff = thisScale * scratch[i] + thisMin - x[i];
                    diff = useMad ? MathF.Abs(diff) : diff * diff;
                    error += weights[i] * diff;
                }
                if (error < bestError)
                {
                    scratch[..n].CopyTo(codes);
                    bestError = error;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin = -min;
        return scale;
    }

    /// <summary>
    /// The importance-weighted variant (make_qkx3_quants) used by the imatrix Q2_K/Q4_K/Q5_K
    /// quantizers; empty <paramref name="weights"/> means x² weights. Same contract as
    /// <see cref="MakeQkx2Quants"/>.
    /// </summary>
    public static float MakeQkx3Quants(int n, int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights,
        Span<byte> codes, out float theMin, Span<byte> scratch, float rmin, float rdelta, int nstep, bool useMad)
    {
        bool hasWeights = !weights.IsEmpty;
        float min = x[0], max = x[0];
        float sumW = hasWeights ? weights[0] : x[0] * x[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; ++i)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            float w = hasWeights ? weights[i] : x[i] * x[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (min > 0) min = 0;
        if (max <= min)
        {
            codes[..n].Clear();
            theMin = -min;
            return 0f;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; ++i)
        {
            int l = NearestInt(iscale * (x[i] - min));
            codes[i] = (byte)Math.Clamp(l, 0, nmax);
            float diff = scale * codes[i] + min - x[i];
            diff = useMad ? MathF.Abs(diff) : diff * diff;
            float w = hasWeights ? weights[i] : x[i] * x[i];
            bestError += w * diff;
        }
        if (nstep < 1)
        {
            theMin = -min;
            return scale;
        }
        for (int step = 0; step <= nstep; ++step)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; ++i)
            {
                // Written so that inf/NaN (a min near max) maps to code 0 or nmax, never garbage.
                float v = iscale * (x[i] - min);
                int l = v > 0 ? NearestInt(v < nmax ? v : nmax) : 0;
                scratch[i] = (byte)l;
                float w = hasWeights ? weights[i] : x[i] * x[i];
                sumL += w * l;
                sumL2 += w * l * l;
                sumXL += w * l * x[i];
            }
            float det = sumW * sumL2 - sumL * sumL;
            if (det > 0)
            {
                float thisScale = (sumW * sumXL - sumX * sumL) / det;
                float thisMin = (sumL2 * sumX - sumL * sumXL) / det;
                if (thisMin > 0)
                {
                    thisMin = 0;
                    thisScale = sumXL / sumL2;
                }
                float error = 0;
                for (int i = 0; i < n; ++i)
                {
                    float diff = thisScale * scratch[i] + thisMin - x[i];
                    diff = useMad ? MathF.Abs(diff) : diff * diff;
                    float w = hasWeights ? weights[i] : x[i] * x[i];
                    error += w * diff;
                }
                if (error < bestError)
                {
                    scratch[..n].CopyTo(codes);
                    bestError = error;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        theMin = -min;
        return scale;
    }

    /// <summary>
    /// Runs <see cref="MakeQkx2Quants"/> (<paramref name="qkx3"/> false) or <see cref="MakeQkx3Quants"/> on 8
    /// consecutive groups of <paramref name="n"/> values at once, bit-identical to 8 scalar calls: the groups are
    /// independent, so lane j of every AVX register follows group j through exactly the scalar sequence of float
    /// operations (no FMA; comparisons become lane masks). <paramref name="x"/>, <paramref name="weights"/> and
    /// <paramref name="codes"/> hold 8·n values; <paramref name="scales"/> and <paramref name="theMins"/> receive 8.
    /// </summary>
    public static void MakeQkxQuantsX8(int n, int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> codes,
        Span<float> scales, Span<float> theMins, float rmin, float rdelta, int nstep, bool useMad, bool qkx3)
    {
        if (!Avx2.IsSupported)
        {
            Span<byte> scratch = stackalloc byte[n];
            for (int j = 0; j < 8; j++)
            {
                var xg = x.Slice(n * j, n);
                var wg = weights.Slice(n * j, n);
                var cg = codes.Slice(n * j, n);
                scales[j] = qkx3
                    ? MakeQkx3Quants(n, nmax, xg, wg, cg, out theMins[j], scratch, rmin, rdelta, nstep, useMad)
                    : MakeQkx2Quants(n, nmax, xg, wg, cg, out theMins[j], scratch, rmin, rdelta, nstep, useMad);
            }
            return;
        }
        MakeQkxQuantsX8Avx2(n, nmax, x, weights, codes, scales, theMins, rmin, rdelta, nstep, useMad, qkx3);
    }

    private static void MakeQkxQuantsX8Avx2(int n, int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> codes,
        Span<float> scales, Span<float> theMins, float rmin, float rdelta, int nstep, bool useMad, bool qkx3)
    {
        Span<Vector256<float>> xt = stackalloc Vector256<float>[n];
        Span<Vector256<float>> wt = stackalloc Vector256<float>[n];
        Span<Vector256<int>> best = stackalloc Vector256<int>[n];
        Span<Vector256<int>> aux = stackalloc Vector256<int>[n];
        for (int i = 0; i < n; i++)
        {
            xt[i] = Vector256.Create(x[i], x[n + i], x[2 * n + i], x[3 * n + i], x[4 * n + i], x[5 * n + i], x[6 * n + i], x[7 * n + i]);
            wt[i] = Vector256.Create(weights[i], weights[n + i], weights[2 * n + i], weights[3 * n + i],
                weights[4 * n + i], weights[5 * n + i], weights[6 * n + i], weights[7 * n + i]);
        }
        var zero = Vector256<float>.Zero;
        var nmaxF = Vector256.Create((float)nmax);
        var nmaxI = Vector256.Create(nmax);
        var magic = Vector256.Create(12582912f);
        var mantissa = Vector256.Create(0x007fffff);
        var bias = Vector256.Create(0x00400000);
        var absMask = Vector256.Create(0x7fffffff).AsSingle();

        var min = xt[0];
        var max = xt[0];
        var sumW = wt[0];
        var sumX = Avx.Multiply(sumW, xt[0]);
        for (int i = 1; i < n; i++)
        {
            min = Avx.BlendVariable(min, xt[i], Avx.CompareLessThan(xt[i], min));
            max = Avx.BlendVariable(max, xt[i], Avx.CompareGreaterThan(xt[i], max));
            sumW = Avx.Add(sumW, wt[i]);
            sumX = Avx.Add(sumX, Avx.Multiply(wt[i], xt[i]));
        }
        min = Avx.BlendVariable(min, zero, Avx.CompareGreaterThan(min, zero));
        // Degenerate groups return at once in the scalar code (codes 0, scale 0, this min); their lanes run along
        // harmlessly and are overwritten at the end.
        int degenerate = Avx.MoveMask(qkx3 ? Avx.CompareLessThanOrEqual(max, min) : Avx.CompareEqual(max, min));
        var initialMin = min;

        var range = Avx.Subtract(max, min);
        var iscale = Avx.Divide(nmaxF, range);
        var scale = Avx.Divide(Vector256.Create(1f), iscale);
        var bestError = zero;
        for (int i = 0; i < n; i++)
        {
            var l = Avx2.Min(Avx2.Max(NearestIntX8(Avx.Multiply(iscale, Avx.Subtract(xt[i], min)), magic, mantissa, bias), Vector256<int>.Zero), nmaxI);
            best[i] = l;
            var diff = Avx.Subtract(Avx.Add(Avx.Multiply(scale, Avx.ConvertToVector256Single(l)), min), xt[i]);
            diff = useMad ? Avx.And(diff, absMask) : Avx.Multiply(diff, diff);
            bestError = Avx.Add(bestError, Avx.Multiply(wt[i], diff));
        }
        if (nstep >= 1)
        {
            for (int step = 0; step <= nstep; step++)
            {
                iscale = Avx.Divide(Vector256.Create(rmin + rdelta * step + nmax), Avx.Subtract(max, min));
                var sumL = zero;
                var sumL2 = zero;
                var sumXL = zero;
                for (int i = 0; i < n; i++)
                {
                    var v = Avx.Multiply(iscale, Avx.Subtract(xt[i], min));
                    Vector256<int> l;
                    if (qkx3)
                    {
                        // v > 0 ? nearest_int(v < nmax ? v : nmax) : 0 (minps returns the second operand unless v < nmax)
                        l = NearestIntX8(Avx.Min(v, nmaxF), magic, mantissa, bias);
                        l = Avx2.And(l, Avx.CompareGreaterThan(v, zero).AsInt32());
                    }
                    else
                    {
                        l = Avx2.Min(Avx2.Max(NearestIntX8(v, magic, mantissa, bias), Vector256<int>.Zero), nmaxI);
                    }
                    aux[i] = l;
                    var lf = Avx.ConvertToVector256Single(l);
                    var wl = Avx.Multiply(wt[i], lf);
                    sumL = Avx.Add(sumL, wl);
                    sumL2 = Avx.Add(sumL2, Avx.Multiply(wl, lf));
                    sumXL = Avx.Add(sumXL, Avx.Multiply(wl, xt[i]));
                }
                var det = Avx.Subtract(Avx.Multiply(sumW, sumL2), Avx.Multiply(sumL, sumL));
                var positive = Avx.CompareGreaterThan(det, zero);
                if (Avx.MoveMask(positive) == 0) continue;
                var thisScale = Avx.Divide(Avx.Subtract(Avx.Multiply(sumW, sumXL), Avx.Multiply(sumX, sumL)), det);
                var thisMin = Avx.Divide(Avx.Subtract(Avx.Multiply(sumL2, sumX), Avx.Multiply(sumL, sumXL)), det);
                var clampMin = Avx.CompareGreaterThan(thisMin, zero);
                thisMin = Avx.BlendVariable(thisMin, zero, clampMin);
                thisScale = Avx.BlendVariable(thisScale, Avx.Divide(sumXL, sumL2), clampMin);
                var error = zero;
                for (int i = 0; i < n; i++)
                {
                    var diff = Avx.Subtract(Avx.Add(Avx.Multiply(thisScale, Avx.ConvertToVector256Single(aux[i])), thisMin), xt[i]);
                    diff = useMad ? Avx.And(diff, absMask) : Avx.Multiply(diff, diff);
                    error = Avx.Add(error, Avx.Multiply(wt[i], diff));
                }
                var accept = Avx.And(positive, Avx.CompareLessThan(error, bestError));
                int acceptBits = Avx.MoveMask(accept);
                if (acceptBits == 0) continue;
                var acceptI = accept.AsInt32();
                for (int i = 0; i < n; i++) best[i] = Avx2.BlendVariable(best[i], aux[i], acceptI);
                bestError = Avx.BlendVariable(bestError, error, accept);
                scale = Avx.BlendVariable(scale, thisScale, accept);
                min = Avx.BlendVariable(min, thisMin, accept);
            }
        }
        for (int j = 0; j < 8; j++)
        {
            var cg = codes.Slice(n * j, n);
            if ((degenerate & (1 << j)) != 0)
            {
                cg.Clear();
                scales[j] = 0f;
                theMins[j] = -initialMin.GetElement(j);
            }
            else
            {
                for (int i = 0; i < n; i++) cg[i] = (byte)best[i].GetElement(j);
                scales[j] = scale.GetElement(j);
                theMins[j] = -min.GetElement(j);
            }
        }
    }

    /// <summary>
    /// <see cref="MakeQxQuants"/> with rmseType 1 on 8 consecutive groups of <paramref name="n"/> values at once,
    /// bit-identical to 8 scalar calls (lane j follows group j through the scalar float operations).
    /// <paramref name="weights"/> is empty (x² weights) or holds 8·n weights.
    /// </summary>
    public static void MakeQxQuantsX8(int n, int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<sbyte> codes, Span<float> scales)
    {
        if (!Avx2.IsSupported)
        {
            for (int j = 0; j < 8; j++)
                scales[j] = MakeQxQuants(n, nmax, x.Slice(n * j, n), codes.Slice(n * j, n), 1,
                    weights.IsEmpty ? default : weights.Slice(n * j, n));
            return;
        }
        Span<Vector256<float>> xt = stackalloc Vector256<float>[n];
        Span<Vector256<float>> wt = stackalloc Vector256<float>[n];
        for (int i = 0; i < n; i++)
        {
            xt[i] = Vector256.Create(x[i], x[n + i], x[2 * n + i], x[3 * n + i], x[4 * n + i], x[5 * n + i], x[6 * n + i], x[7 * n + i]);
            wt[i] = weights.IsEmpty
                ? Avx.Multiply(xt[i], xt[i])
                : Vector256.Create(weights[i], weights[n + i], weights[2 * n + i], weights[3 * n + i],
                    weights[4 * n + i], weights[5 * n + i], weights[6 * n + i], weights[7 * n + i]);
        }
        var zero = Vector256<float>.Zero;
        var magic = Vector256.Create(12582912f);
        var mantissa = Vector256.Create(0x007fffff);
        var bias = Vector256.Create(0x00400000);
        var absMask = Vector256.Create(0x7fffffff).AsSingle();
        var lo = Vector256.Create(-nmax);
        var hi = Vector256.Create(nmax - 1);

        var max = zero;
        var amax = zero;
        for (int i = 0; i < n; i++)
        {
            var ax = Avx.And(xt[i], absMask);
            var larger = Avx.CompareGreaterThan(ax, amax);
            amax = Avx.BlendVariable(amax, ax, larger);
            max = Avx.BlendVariable(max, xt[i], larger);
        }
        int allZero = Avx.MoveMask(Avx.CompareLessThan(amax, Vector256.Create(GroupMaxEps)));

        // Sums for one candidate inverse scale; lane by lane the scalar loop's operations.
        void Sums(Span<Vector256<float>> xt, Span<Vector256<float>> wt, Vector256<float> iscale, out Vector256<float> sumlx, out Vector256<float> suml2)
        {
            sumlx = zero;
            suml2 = zero;
            for (int i = 0; i < xt.Length; i++)
            {
                var l = Avx.ConvertToVector256Single(Avx2.Min(Avx2.Max(NearestIntX8(Avx.Multiply(iscale, xt[i]), magic, mantissa, bias), lo), hi));
                sumlx = Avx.Add(sumlx, Avx.Multiply(Avx.Multiply(wt[i], xt[i]), l));
                suml2 = Avx.Add(suml2, Avx.Multiply(Avx.Multiply(wt[i], l), l));
            }
        }

        var iscale0 = Avx.Divide(Vector256.Create((float)-nmax), max);
        Sums(xt, wt, iscale0, out var sumlx, out var suml2);
        var scale = Avx.BlendVariable(zero, Avx.Divide(sumlx, suml2), Avx.CompareNotEqual(suml2, zero));
        var best = Avx.Multiply(scale, sumlx);
        var chosen = iscale0;
        for (int step = -9; step <= 9; step++)
        {
            if (step == 0) continue;
            var iscale = Avx.Divide(Vector256.Create(-(nmax + 0.1f * step)), max);
            Sums(xt, wt, iscale, out var slx, out var sl2);
            var accept = Avx.And(Avx.CompareGreaterThan(sl2, zero),
                Avx.CompareGreaterThan(Avx.Multiply(slx, slx), Avx.Multiply(best, sl2)));
            if (Avx.MoveMask(accept) == 0) continue;
            chosen = Avx.BlendVariable(chosen, iscale, accept);
            var newScale = Avx.Divide(slx, sl2);
            scale = Avx.BlendVariable(scale, newScale, accept);
            best = Avx.BlendVariable(best, Avx.Multiply(newScale, slx), accept);
        }
        for (int j = 0; j < 8; j++)
        {
            var cg = codes.Slice(n * j, n);
            if ((allZero & (1 << j)) != 0)
            {
                cg.Clear();
                scales[j] = 0f;
                continue;
            }
            // the codes of the accepted candidate, recomputed as the scalar code does
            float iscale = chosen.GetElement(j);
            var xg = x.Slice(n * j, n);
            for (int i = 0; i < n; i++) cg[i] = (sbyte)(nmax + Math.Clamp(NearestInt(iscale * xg[i]), -nmax, nmax - 1));
            scales[j] = scale.GetElement(j);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> NearestIntX8(Vector256<float> v, Vector256<float> magic, Vector256<int> mantissa, Vector256<int> bias) =>
        Avx2.Subtract(Avx2.And(Avx.Add(v, magic).AsInt32(), mantissa), bias);

    /// <summary>
    /// Quantizes non-negative values (the sub-block scales or mins of a super-block) to
    /// L ∈ [0, nmax] with one shared scale, minimizing the importance-weighted error
    /// (make_qp_quants). Returns the shared scale.
    /// </summary>
    public static float MakeQpQuants(int n, int nmax, ReadOnlySpan<float> x, Span<byte> codes, ReadOnlySpan<float> weights)
    {
        float max = 0;
        for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
        if (max < GroupMaxEps)
        {
            codes[..n].Clear();
            return 0f;
        }
        float iscale = nmax / max;
        for (int i = 0; i < n; ++i) codes[i] = (byte)NearestInt(iscale * x[i]);
        float scale = 1 / iscale;
        float bestMse = 0;
        for (int i = 0; i < n; ++i)
        {
            float diff = x[i] - scale * codes[i];
            bestMse += weights[i] * diff * diff;
        }
        for (int step = -4; step <= 4; ++step)
        {
            if (step == 0) continue;
            float iscaleStep = (0.1f * step + nmax) / max;
            float scaleStep = 1 / iscaleStep;
            float mse = 0;
            for (int i = 0; i < n; ++i)
            {
                int l = Math.Min(nmax, NearestInt(iscaleStep * x[i]));
                float diff = x[i] - scaleStep * l;
                mse += weights[i] * diff * diff;
            }
            if (mse < bestMse)
            {
                bestMse = mse;
                iscale = iscaleStep;
            }
        }
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; ++i)
        {
            int l = Math.Min(nmax, NearestInt(iscale * x[i]));
            codes[i] = (byte)l;
            float w = weights[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        for (int iter = 0; iter < 5; ++iter)
        {
            int changed = 0;
            for (int i = 0; i < n; ++i)
            {
                float w = weights[i];
                float slx = sumlx - w * x[i] * codes[i];
                float sl2 = suml2 - w * codes[i] * codes[i];
                if (slx > 0 && sl2 > 0)
                {
                    int newL = Math.Min(nmax, NearestInt(x[i] * sl2 / slx));
                    if (newL != codes[i])
                    {
                        slx += w * x[i] * newL;
                        sl2 += w * newL * newL;
                        if (slx * slx * suml2 > sumlx * sumlx * sl2)
                        {
                            codes[i] = (byte)newL;
                            sumlx = slx;
                            suml2 = sl2;
                            ++changed;
                        }
                    }
                }
            }
            if (changed == 0) break;
        }
        return suml2 > 0f ? sumlx / suml2 : 0f;
    }

    /// <summary>Reads the j-th 6-bit (scale, min) pair of the 12-byte packed K4 layout (get_scale_min_k4).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void GetScaleMinK4(int j, ReadOnlySpan<byte> packed, out int scale, out int min)
    {
        if (j < 4)
        {
            scale = packed[j] & 63;
            min = packed[j + 4] & 63;
        }
        else
        {
            scale = (packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4);
            min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
        }
    }

    /// <summary>
    /// Packs eight 6-bit (scale, min) pairs into the 12-byte K4 layout: pairs 0–3 in the low 6 bits of
    /// bytes 0–3 / 4–7; pairs 4–7 as nibbles in bytes 8–11 with their top 2 bits in the high bits of bytes 0–7.
    /// </summary>
    public static void PackScalesMinsK4(ReadOnlySpan<byte> scales, ReadOnlySpan<byte> mins, Span<byte> packed)
    {
        for (int j = 0; j < 8; ++j)
        {
            int ls = scales[j], lm = mins[j];
            if (j < 4)
            {
                packed[j] = (byte)ls;
                packed[j + 4] = (byte)lm;
            }
            else
            {
                packed[j + 4] = (byte)((ls & 0xF) | ((lm & 0xF) << 4));
                packed[j - 4] |= (byte)((ls >> 4) << 6);
                packed[j] |= (byte)((lm >> 4) << 6);
            }
        }
    }
}
