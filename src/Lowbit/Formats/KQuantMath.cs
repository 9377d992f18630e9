using System.Runtime.CompilerServices;

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

    /// <summary>FP16 bits → FP32 (exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float FromHalfBits(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

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
