using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Lowbit.Formats;

/// <summary>
/// Scalar building blocks shared by the legacy (32-value block) GGUF quantizers. Every routine
/// reproduces ggml's float arithmetic step by step (same operand order, float not double, same
/// rounding helper) because the encoded bytes must be identical to ggml's.
/// </summary>
internal static class LegacyQuantMath
{
    /// <summary>ggml's GROUP_MAX_EPS: a group whose largest magnitude is below it counts as all zero.</summary>
    public const float GroupMaxEps = 1e-15f;

    /// <summary>The 16 IQ4_NL / IQ4_XS levels (ggml's kvalues_iq4nl), sorted ascending.</summary>
    public static ReadOnlySpan<sbyte> Iq4NlValues => [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

    /// <summary>
    /// ggml's nearest_int: adds 1.5·2^23 so the FPU rounds to an integer (ties to even) and reads the
    /// integer back from the mantissa bits. Valid for |v| &lt;= 2^22, as in ggml.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int NearestInt(float v)
    {
        float shifted = v + 12582912f;
        int bits = BitConverter.SingleToInt32Bits(shifted);
        return (bits & 0x007fffff) - 0x00400000;
    }

    /// <summary>C's roundf: round half away from zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float RoundAwayFromZero(float v) => MathF.Round(v, MidpointRounding.AwayFromZero);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ReadHalf(ReadOnlySpan<byte> src, int offset) => (float)BinaryPrimitives.ReadHalfLittleEndian(src.Slice(offset, 2));

    /// <summary>Stores a float as IEEE binary16 with round-to-nearest-even (GGML_FP32_TO_FP16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WriteHalf(Span<byte> dst, int offset, float value) => BinaryPrimitives.WriteHalfLittleEndian(dst.Slice(offset, 2), (Half)value);

    /// <summary>
    /// Index of the level of a sorted table nearest to <paramref name="x"/> (ggml's best_index_int8):
    /// level i is chosen once 2x reaches val[i-1] + val[i], which compares exactly in float.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int BestIndexInt8(ReadOnlySpan<sbyte> values, float x)
    {
        float x2 = x + x;
        int idx = 0;
        for (int step = values.Length >> 1; step > 0; step >>= 1)
        {
            int j = idx + step;
            if (x2 >= (float)(values[j - 1] + values[j])) idx = j;
        }
        return idx;
    }

    /// <summary>values[j−1] + values[j] of <see cref="Iq4NlValues"/> for j = 1..15 (index 0 unused).</summary>
    private static ReadOnlySpan<float> Iq4NlMidpointSums => [0, -231, -187, -148, -114, -84, -57, -32, -9, 14, 38, 63, 91, 122, 158, 202];

    /// <summary>
    /// <see cref="BestIndexInt8"/> specialized to the IQ4_NL table (the quantizer's inner loop):
    /// the same four branch-free halvings against precomputed neighbour sums, so the same answer.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Iq4NlBestIndex(float x)
    {
        float x2 = x + x;
        ref float sums = ref MemoryMarshal.GetReference(Iq4NlMidpointSums);
        int idx = x2 >= Unsafe.Add(ref sums, 8) ? 8 : 0;
        idx = x2 >= Unsafe.Add(ref sums, idx + 4) ? idx + 4 : idx;
        idx = x2 >= Unsafe.Add(ref sums, idx + 2) ? idx + 2 : idx;
        idx = x2 >= Unsafe.Add(ref sums, idx + 1) ? idx + 1 : idx;
        return idx;
    }

    /// <summary>Sum of squares of a row in float, accumulated left to right as ggml does.</summary>
    public static float SumOfSquares(ReadOnlySpan<float> x)
    {
        float s = 0;
        for (int i = 0; i < x.Length; i++) s += x[i] * x[i];
        return s;
    }

    /// <summary>
    /// ggml's make_qx_quants with rmse_type 1 and explicit weights: symmetric levels
    /// l ∈ [-nmax, nmax-1], stored as l + nmax, searching 18 scale perturbations for the weighted
    /// least-squares optimum. Returns the block scale.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // called per block: optimize at once instead of waiting for tiering
    public static float MakeQxQuants(int nmax, ReadOnlySpan<float> x, Span<byte> levels, ReadOnlySpan<float> weights)
    {
        int n = x.Length;
        float max = 0, amax = 0;
        for (int i = 0; i < n; i++)
        {
            float ax = MathF.Abs(x[i]);
            if (ax > amax) { amax = ax; max = x[i]; }
        }
        if (amax < GroupMaxEps)
        {
            levels.Slice(0, n).Clear();
            return 0f;
        }
        float iscale = -nmax / max;
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; i++)
        {
            int l = Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
            levels[i] = (byte)(l + nmax);
            float w = weights[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        float scale = suml2 != 0 ? sumlx / suml2 : 0f;
        float best = scale * sumlx;
        for (int step = -9; step <= 9; step++)
        {
            if (step == 0) continue;
            iscale = -(nmax + 0.1f * step) / max;
            sumlx = suml2 = 0;
            for (int i = 0; i < n; i++)
            {
                int l = Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1);
                float w = weights[i];
                sumlx += w * x[i] * l;
                suml2 += w * l * l;
            }
            if (suml2 > 0 && sumlx * sumlx > best * suml2)
            {
                for (int i = 0; i < n; i++)
                    levels[i] = (byte)(nmax + Math.Clamp(NearestInt(iscale * x[i]), -nmax, nmax - 1));
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        return scale;
    }

    /// <summary>
    /// ggml's make_qkx3_quants (least-squares scale and non-positive offset for levels 0..nmax,
    /// squared-error criterion). Returns the scale; <paramref name="negMin"/> receives -min, so a
    /// value is reconstructed as scale·l - negMin.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // called per block: optimize at once instead of waiting for tiering
    public static float MakeQkx3Quants(int nmax, ReadOnlySpan<float> x, ReadOnlySpan<float> weights, Span<byte> levels,
        out float negMin, Span<byte> levelsAux, float rmin, float rdelta, int nstep)
    {
        int n = x.Length;
        float min = x[0], max = x[0];
        float sumW = weights[0];
        float sumX = sumW * x[0];
        for (int i = 1; i < n; i++)
        {
            if (x[i] < min) min = x[i];
            if (x[i] > max) max = x[i];
            float w = weights[i];
            sumW += w;
            sumX += w * x[i];
        }
        if (min > 0) min = 0;
        if (max <= min)
        {
            levels.Slice(0, n).Clear();
            negMin = -min;
            return 0f;
        }
        float iscale = nmax / (max - min);
        float scale = 1 / iscale;
        float bestError = 0;
        for (int i = 0; i < n; i++)
        {
            int l = Math.Clamp(NearestInt(iscale * (x[i] - min)), 0, nmax);
            levels[i] = (byte)l;
            float diff = scale * l + min - x[i];
            bestError += weights[i] * (diff * diff);
        }
        for (int step = 0; step <= nstep; step++)
        {
            iscale = (rmin + rdelta * step + nmax) / (max - min);
            float sumL = 0, sumL2 = 0, sumXL = 0;
            for (int i = 0; i < n; i++)
            {
                float v = iscale * (x[i] - min);
                int l = v > 0 ? NearestInt(MathF.Min(v, nmax)) : 0;
                levelsAux[i] = (byte)l;
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
                for (int i = 0; i < n; i++)
                {
                    float diff = thisScale * levelsAux[i] + thisMin - x[i];
                    error += weights[i] * (diff * diff);
                }
                if (error < bestError)
                {
                    levelsAux.Slice(0, n).CopyTo(levels);
                    bestError = error;
                    scale = thisScale;
                    min = thisMin;
                }
            }
        }
        negMin = -min;
        return scale;
    }

    /// <summary>Checks the shapes every QuantizeRows call shares; returns the number of rows.</summary>
    public static int ValidateQuantize(TensorCodec codec, ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        long rowBytes = codec.RowBytes(cols);
        if (src.Length % cols != 0)
            throw new ArgumentException($"{codec.Name}: source length {src.Length} is not a whole number of rows of {cols}.");
        int rows = src.Length / cols;
        if (dst.Length < rows * rowBytes)
            throw new ArgumentException($"{codec.Name}: destination holds {dst.Length} bytes, {rows * rowBytes} needed.");
        if (!importance.IsEmpty && importance.Length != cols)
            throw new LowbitException($"{codec.Name}: importance vector has {importance.Length} values but rows have {cols} columns.");
        return rows;
    }

    /// <summary>Checks the shapes every DequantizeRows call shares; returns the number of rows.</summary>
    public static int ValidateDequantize(TensorCodec codec, ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        long rowBytes = codec.RowBytes(cols);
        if (src.Length % rowBytes != 0)
            throw new ArgumentException($"{codec.Name}: {src.Length} bytes are not a whole number of rows of {rowBytes} bytes.");
        int rows = (int)(src.Length / rowBytes);
        if (dst.Length < (long)rows * cols)
            throw new ArgumentException($"{codec.Name}: destination holds {dst.Length} values, {(long)rows * cols} needed.");
        return rows;
    }
}
