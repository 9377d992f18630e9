using Lowbit.Methods.Calibration;
using Lowbit.Methods;

namespace Lowbit.Tests.Methods;

/// <summary>A plain symmetric/asymmetric INTn group grid used to test GPTQ itself (encoding = raw floats).</summary>
internal sealed class TestIntGrid(int bits, int groupSize, bool symmetric) : IQuantGrid
{
    public int GroupSize => groupSize;
    public int ParamCount => 2;

    public void Fit(ReadOnlySpan<float> w, ReadOnlySpan<float> importance, Span<float> p)
    {
        float max = float.MinValue, min = float.MaxValue;
        foreach (var v in w) { max = Math.Max(max, v); min = Math.Min(min, v); }
        if (symmetric)
        {
            float amax = Math.Max(Math.Abs(max), Math.Abs(min));
            p[0] = amax / ((1 << (bits - 1)) - 1);
            p[1] = 0;
        }
        else
        {
            min = Math.Min(min, 0); max = Math.Max(max, 0);
            p[0] = (max - min) / ((1 << bits) - 1);
            p[1] = MathF.Round(-min / Math.Max(p[0], 1e-12f));
        }
        if (p[0] == 0) p[0] = 1;
    }

    public float Round(ReadOnlySpan<float> p, int index, float w)
    {
        float s = p[0], z = p[1];
        float lo = symmetric ? -(1 << (bits - 1)) + 1 : 0, hi = symmetric ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
        float q = Math.Clamp(MathF.Round(w / s) + z, lo, hi);
        return (q - z) * s;
    }

    public void EncodeRow(ReadOnlySpan<float> values, ReadOnlySpan<float> rowParameters, Span<byte> dst)
        => System.Runtime.InteropServices.MemoryMarshal.AsBytes(values).CopyTo(dst);
}

public sealed class GptqQuantizerTests
{
    /// <summary>Activations with correlated channels and a few large-magnitude outlier channels, like real LLM inputs.</summary>
    internal static float[] RealisticActivations(int tokens, int cols, int seed)
    {
        var rng = new Random(seed);
        double Gauss() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        var scale = new double[cols];
        for (int c = 0; c < cols; c++) scale[c] = Math.Exp(Gauss() * 0.5);
        for (int k = 0; k < Math.Max(2, cols / 64); k++) scale[rng.Next(cols)] *= 20; // outlier channels
        var x = new float[tokens * cols];
        const int factors = 8;
        var mix = new double[factors * cols];
        for (int i = 0; i < mix.Length; i++) mix[i] = Gauss();
        for (int t = 0; t < tokens; t++)
        {
            var f = new double[factors];
            for (int k = 0; k < factors; k++) f[k] = Gauss();
            for (int c = 0; c < cols; c++)
            {
                double v = 0.5 * Gauss();
                for (int k = 0; k < factors; k++) v += f[k] * mix[k * cols + c] * 0.35;
                x[t * cols + c] = (float)(v * scale[c]);
            }
        }
        return x;
    }

    internal static float[] RandomWeights(int rows, int cols, int seed)
    {
        var rng = new Random(seed);
        var w = new float[rows * cols];
        for (int i = 0; i < w.Length; i++)
            w[i] = (float)(0.02 * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return w;
    }

    internal static double OutputError(float[] w, float[] wq, float[] x, int rows, int cols, int tokens)
    {
        double e = 0;
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < rows; r++)
            {
                double a = 0;
                for (int c = 0; c < cols; c++) a += (w[r * cols + c] - wq[r * cols + c]) * (double)x[t * cols + c];
                e += a * a;
            }
        return e;
    }

    internal static float[] Rtn(float[] w, int rows, int cols, IQuantGrid grid)
    {
        var q = new float[w.Length];
        var p = new float[grid.ParamCount];
        for (int r = 0; r < rows; r++)
            for (int g0 = 0; g0 < cols; g0 += grid.GroupSize)
            {
                var grp = w.AsSpan(r * cols + g0, grid.GroupSize);
                grid.Fit(grp, default, p);
                for (int i = 0; i < grid.GroupSize; i++) q[r * cols + g0 + i] = grid.Round(p, i, grp[i]);
            }
        return q;
    }

    [Theory]
    [InlineData(4, 32, true, false)]
    [InlineData(4, 64, false, false)]
    [InlineData(3, 64, true, true)]
    [InlineData(2, 128, false, false)]
    public void Gptq_lowers_layer_output_error_versus_rtn(int bits, int group, bool symmetric, bool actOrder)
    {
        const int rows = 48, cols = 256, tokens = 1024;
        var x = RealisticActivations(tokens, cols, seed: 1);
        var w = RandomWeights(rows, cols, seed: 2);
        var h = new GramAccumulator(cols);
        h.Add(x, tokens);
        var grid = new TestIntGrid(bits, group, symmetric);
        var res = GptqQuantizer.Quantize(w, rows, cols, h.ToHessian(), grid, cols * 4, new GptqOptions { ActOrder = actOrder });
        var rtn = Rtn(w, rows, cols, grid);
        double eG = OutputError(w, res.Dequantized, x, rows, cols, tokens);
        double eR = OutputError(w, rtn, x, rows, cols, tokens);
        Assert.True(eG < 0.8 * eR, $"GPTQ {eG:E3} vs RTN {eR:E3}");
        // Every value is on the grid: re-rounding with the same grid changes nothing.
        Assert.Equal(res.Dequantized, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(res.Encoded).ToArray());
    }

    [Fact]
    public void Gptq_is_deterministic()
    {
        const int rows = 16, cols = 128, tokens = 256;
        var x = RealisticActivations(tokens, cols, 3);
        var w = RandomWeights(rows, cols, 4);
        var h = new GramAccumulator(cols);
        h.Add(x, tokens);
        var grid = new TestIntGrid(4, 32, true);
        var a = GptqQuantizer.Quantize(w, rows, cols, h.ToHessian(), grid, cols * 4, new GptqOptions());
        var b = GptqQuantizer.Quantize(w, rows, cols, h.ToHessian(), grid, cols * 4, new GptqOptions());
        Assert.Equal(a.Encoded, b.Encoded);
        Assert.Equal(a.Loss, b.Loss);
    }

    [Fact]
    public void Inverse_upper_cholesky_satisfies_UtU_equals_inverse()
    {
        const int n = 24;
        var rng = new Random(5);
        var m = new double[n * n];
        var b = new double[n * n];
        for (int i = 0; i < b.Length; i++) b[i] = rng.NextDouble() - 0.5;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                double s = i == j ? n : 0;
                for (int k = 0; k < n; k++) s += b[i * n + k] * b[j * n + k];
                m[i * n + j] = s;
            }
        var u = CholeskyMath.InverseUpperCholesky(m, n);
        // (UᵀU) · M = I
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int k = 0; k < n; k++)
                {
                    double inv = 0;
                    for (int l = 0; l < n; l++) inv += u[l * n + i] * u[l * n + k];
                    s += inv * m[k * n + j];
                }
                Assert.Equal(i == j ? 1.0 : 0.0, s, 1e-9);
            }
    }
}
