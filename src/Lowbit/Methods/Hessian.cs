namespace Lowbit.Methods;

/// <summary>
/// GPTQ's layer Hessian H = 2/N · Σ x xᵀ over the N calibration tokens that enter a linear layer
/// (upper triangle accumulated in double, mirrored on read). Also keeps the per-channel mean of
/// x² — the llama.cpp importance-matrix statistic — which comes for free from the diagonal.
/// </summary>
public sealed class Hessian
{
    private readonly double[] _h;

    public Hessian(int columns)
    {
        Columns = columns;
        _h = new double[(long)columns * columns];
    }

    public int Columns { get; }
    public long Tokens { get; private set; }

    /// <summary>Adds a batch of activation rows (tokens × Columns, row-major).</summary>
    public void Add(ReadOnlySpan<float> x, int tokens)
    {
        int n = Columns;
        if (x.Length != (long)tokens * n) throw new ArgumentException($"expected {tokens}×{n} activations, got {x.Length}");
        var h = _h;
        var xs = x.ToArray();
        // Rows of H are independent: parallel over i, fixed work per i, so the result is thread-count independent.
        Parallel.For(0, n, i =>
        {
            long rowOff = (long)i * n;
            for (int t = 0; t < tokens; t++)
            {
                double xi = xs[t * n + i];
                if (xi == 0) continue;
                int baseT = t * n;
                for (int j = i; j < n; j++) h[rowOff + j] += xi * xs[baseT + j];
            }
        });
        Tokens += tokens;
    }

    /// <summary>The full symmetric matrix 2/N · XᵀX (N = tokens seen).</summary>
    public double[] ToMatrix()
    {
        int n = Columns;
        var m = new double[(long)n * n];
        double scale = Tokens == 0 ? 0 : 2.0 / Tokens;
        for (int i = 0; i < n; i++)
            for (int j = i; j < n; j++)
            {
                double v = _h[(long)i * n + j] * scale;
                m[(long)i * n + j] = v;
                m[(long)j * n + i] = v;
            }
        return m;
    }

    /// <summary>Mean of x² per input channel (llama.cpp imatrix values), i.e. diag(H)/2.</summary>
    public float[] MeanSquares()
    {
        var r = new float[Columns];
        if (Tokens == 0) return r;
        for (int i = 0; i < Columns; i++) r[i] = (float)(_h[(long)i * Columns + i] / Tokens);
        return r;
    }
}
