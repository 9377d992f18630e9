using Lowbit.Formats;

namespace Lowbit.Methods;

/// <summary>One linear layer seen by AWQ/SmoothQuant: its weight (rows = outputs, cols = inputs).</summary>
public sealed record LinearWeights(string Name, float[] Weight, int Rows, int Cols);

/// <summary>The per-input-channel scales AWQ or SmoothQuant chose for a group of linears sharing one input.</summary>
public sealed record ChannelScales(float[] Scales, double Alpha, double ErrorBefore, double ErrorAfter);

/// <summary>
/// AWQ (Lin et al., 2023): activation-aware per-input-channel scaling. For linears that read the same
/// input X, search α ∈ [0, 1] on a grid: s = mean|X|^α / mean|Ŵ|^(1−α) (normalised), quantize W·diag(s)
/// with the target codec, and keep the α whose output error ‖XWᵀ − (X/s)·Q(W·s)ᵀ‖² is smallest.
/// The chosen s is then folded into the producer of X (RMSNorm weight or previous linear), so the
/// unquantized model is mathematically unchanged.
/// </summary>
public static class AwqScaleSearch
{
    /// <summary>Round-to-nearest through a codec: encode then decode (rows × cols).</summary>
    public static float[] FakeQuantize(TensorCodec codec, ReadOnlySpan<float> w, int rows, int cols)
    {
        var enc = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeTensor(w, enc, rows, cols, default);
        var deq = new float[(long)rows * cols];
        codec.DequantizeTensorRows(enc, rows, cols, 0, rows, deq);
        return deq;
    }

    /// <summary>Mean |x| per input channel over the calibration tokens.</summary>
    public static float[] MeanAbs(ReadOnlySpan<float> x, int tokens, int cols)
    {
        var m = new double[cols];
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < cols; c++) m[c] += Math.Abs(x[t * cols + c]);
        return m.Select(v => (float)(v / Math.Max(1, tokens))).ToArray();
    }

    /// <summary>Mean over output rows of |w| normalised by its group's max |w| (AutoAWQ's w_max statistic).</summary>
    public static float[] MeanNormalizedWeight(IReadOnlyList<LinearWeights> layers, int groupSize)
    {
        int cols = layers[0].Cols;
        var acc = new double[cols];
        long rowsTotal = 0;
        foreach (var l in layers)
        {
            int g = groupSize <= 0 || groupSize > cols ? cols : groupSize;
            for (int r = 0; r < l.Rows; r++)
                for (int g0 = 0; g0 < cols; g0 += g)
                {
                    float max = 1e-12f;
                    for (int c = g0; c < g0 + g; c++) max = Math.Max(max, Math.Abs(l.Weight[(long)r * cols + c]));
                    for (int c = g0; c < g0 + g; c++) acc[c] += Math.Abs(l.Weight[(long)r * cols + c]) / max;
                }
            rowsTotal += l.Rows;
        }
        return acc.Select(v => (float)(v / rowsTotal)).ToArray();
    }

    /// <summary>Searches the scale exponent on a grid of <paramref name="gridPoints"/> values of α.</summary>
    public static ChannelScales Search(IReadOnlyList<LinearWeights> layers, ReadOnlySpan<float> x, int tokens, TensorCodec codec,
        int groupSize, int gridPoints = 20, CancellationToken cancel = default)
    {
        int cols = layers[0].Cols;
        foreach (var l in layers)
            if (l.Cols != cols) throw new ArgumentException("AWQ: layers in one group must share the input width");
        var xMean = MeanAbs(x, tokens, cols);
        var wMean = MeanNormalizedWeight(layers, groupSize);
        var xs = x.ToArray();
        var reference = layers.Select(l => MatMulT(xs, tokens, l.Weight, l.Rows, cols)).ToArray();

        double best = double.MaxValue, bestAlpha = 0;
        float[] bestScales = Enumerable.Repeat(1f, cols).ToArray();
        for (int i = 0; i <= gridPoints; i++)
        {
            cancel.ThrowIfCancellationRequested();
            double alpha = (double)i / gridPoints;
            var s = Scales(xMean, wMean, alpha);
            double err = 0;
            for (int li = 0; li < layers.Count; li++)
            {
                var l = layers[li];
                var ws = new float[l.Weight.Length];
                for (int r = 0; r < l.Rows; r++)
                    for (int c = 0; c < cols; c++) ws[(long)r * cols + c] = l.Weight[(long)r * cols + c] * s[c];
                var q = FakeQuantize(codec, ws, l.Rows, cols);
                // (X / s) · Q(W·s)ᵀ  ==  X · (Q(W·s) / s)ᵀ
                for (int r = 0; r < l.Rows; r++)
                    for (int c = 0; c < cols; c++) q[(long)r * cols + c] /= s[c];
                var y = MatMulT(xs, tokens, q, l.Rows, cols);
                err += Mse(reference[li], y);
            }
            if (err < best)
            {
                best = err;
                bestAlpha = alpha;
                bestScales = s;
            }
        }
        double rtn = 0;
        for (int li = 0; li < layers.Count; li++)
        {
            var l = layers[li];
            rtn += Mse(reference[li], MatMulT(xs, tokens, FakeQuantize(codec, l.Weight, l.Rows, cols), l.Rows, cols));
        }
        if (rtn <= best)
        {
            // Plain rounding was already best: keep the identity scales so nothing changes.
            return new ChannelScales(Enumerable.Repeat(1f, cols).ToArray(), double.NaN, rtn, rtn);
        }
        return new ChannelScales(bestScales, bestAlpha, rtn, best);
    }

    /// <summary>s = x^α / w^(1−α), clamped and normalised by sqrt(max·min) as AutoAWQ does.</summary>
    public static float[] Scales(float[] xMean, float[] wMean, double alpha)
    {
        int n = xMean.Length;
        var s = new float[n];
        for (int c = 0; c < n; c++)
        {
            double v = Math.Pow(Math.Max(xMean[c], 1e-8), alpha) / (Math.Pow(Math.Max(wMean[c], 1e-8), 1 - alpha) + 1e-4);
            s[c] = (float)Math.Max(v, 1e-4);
        }
        double mx = s.Max(), mn = s.Min();
        double norm = Math.Sqrt(mx * mn);
        for (int c = 0; c < n; c++) s[c] = (float)(s[c] / norm);
        return s;
    }

    /// <summary>
    /// AWQ's weight clipping search: per output row, shrink the max |w| by up to <paramref name="maxShrink"/>
    /// and keep the clip that minimises that row's output error on the calibration tokens.
    /// Returns the clipped weights (to be quantized by the caller).
    /// </summary>
    public static float[] SearchClip(LinearWeights layer, ReadOnlySpan<float> x, int tokens, TensorCodec codec,
        int steps = 20, double maxShrink = 0.5, int maxTokens = 512)
    {
        int rows = layer.Rows, cols = layer.Cols;
        int nt = Math.Min(tokens, maxTokens);
        int stride = Math.Max(1, tokens / nt);
        var xsub = new float[nt * cols];
        for (int t = 0; t < nt; t++) x.Slice(t * stride * cols, cols).CopyTo(xsub.AsSpan(t * cols, cols));
        var result = (float[])layer.Weight.Clone();
        Parallel.For(0, rows, r =>
        {
            var row = layer.Weight.AsSpan(r * cols, cols).ToArray();
            float amax = row.Max(Math.Abs);
            double bestErr = double.MaxValue;
            float[] bestRow = row;
            var diff = new float[cols];
            for (int i = 0; i <= (int)(steps * maxShrink); i++)
            {
                float lim = amax * (1 - (float)i / steps);
                var clipped = row.Select(v => Math.Clamp(v, -lim, lim)).ToArray();
                var q = FakeQuantize(codec, clipped, 1, cols);
                System.Numerics.Tensors.TensorPrimitives.Subtract(row, q, diff);
                double err = 0;
                for (int t = 0; t < nt; t++)
                {
                    // SIMD float dot per token; the sum of squares over tokens stays in double.
                    double a = System.Numerics.Tensors.TensorPrimitives.Dot(diff, new ReadOnlySpan<float>(xsub, t * cols, cols));
                    err += a * a;
                }
                if (err < bestErr)
                {
                    bestErr = err;
                    bestRow = clipped;
                }
            }
            bestRow.CopyTo(result.AsSpan(r * cols, cols));
        });
        return result;
    }

    /// <summary>Y = X · Wᵀ (tokens × rows).</summary>
    internal static float[] MatMulT(float[] x, int tokens, float[] w, int rows, int cols)
    {
        var y = new float[(long)tokens * rows];
        Parallel.For(0, tokens, t =>
        {
            var xr = new ReadOnlySpan<float>(x, t * cols, cols);
            for (int r = 0; r < rows; r++)
                y[(long)t * rows + r] = System.Numerics.Tensors.TensorPrimitives.Dot(xr, new ReadOnlySpan<float>(w, r * cols, cols));
        });
        return y;
    }

    private static double Mse(float[] a, float[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += (double)(a[i] - b[i]) * (a[i] - b[i]);
        return s / a.Length;
    }
}
