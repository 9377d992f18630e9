namespace Lowbit.Methods;

/// <summary>
/// SmoothQuant (Xiao et al., 2022): migrates activation outliers into the weights with per-input-channel
/// factors s_j = max|X_j|^α / max|W_j|^(1−α). X is divided by s (folded into the preceding RMSNorm) and W
/// multiplied by s, leaving XWᵀ unchanged while making X easier to quantize per token.
/// </summary>
public static class SmoothQuant
{
    public static float[] AbsMaxPerChannel(ReadOnlySpan<float> x, int tokens, int cols)
    {
        var m = new float[cols];
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < cols; c++) m[c] = Math.Max(m[c], Math.Abs(x[t * cols + c]));
        return m;
    }

    /// <summary>Max |w| per input column over all layers of the group.</summary>
    public static float[] WeightAbsMaxPerColumn(IReadOnlyList<LinearWeights> layers)
    {
        int cols = layers[0].Cols;
        var m = new float[cols];
        foreach (var l in layers)
            for (int r = 0; r < l.Rows; r++)
                for (int c = 0; c < cols; c++) m[c] = Math.Max(m[c], Math.Abs(l.Weight[(long)r * cols + c]));
        return m;
    }

    public static float[] Scales(float[] activationAbsMax, float[] weightAbsMax, double alpha)
    {
        var s = new float[activationAbsMax.Length];
        for (int c = 0; c < s.Length; c++)
        {
            double a = Math.Max(activationAbsMax[c], 1e-5), w = Math.Max(weightAbsMax[c], 1e-5);
            s[c] = (float)Math.Clamp(Math.Pow(a, alpha) / Math.Pow(w, 1 - alpha), 1e-5, 1e5);
        }
        return s;
    }

    /// <summary>Per-token symmetric INT8 fake quantization of activations (dynamic, as W8A8 runs them).</summary>
    public static float[] FakeQuantizeTokensInt8(ReadOnlySpan<float> x, int tokens, int cols)
    {
        var y = new float[x.Length];
        for (int t = 0; t < tokens; t++)
        {
            var row = x.Slice(t * cols, cols);
            float amax = 0;
            foreach (var v in row) amax = Math.Max(amax, Math.Abs(v));
            float s = amax / 127f;
            if (s == 0) continue;
            for (int c = 0; c < cols; c++) y[t * cols + c] = MathF.Round(row[c] / s) * s;
        }
        return y;
    }

    /// <summary>Per-output-channel symmetric INT8 fake quantization of a weight matrix.</summary>
    public static float[] FakeQuantizeRowsInt8(ReadOnlySpan<float> w, int rows, int cols) => FakeQuantizeTokensInt8(w, rows, cols);
}
