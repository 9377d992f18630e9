namespace Lowbit.Methods;

/// <summary>Options of <see cref="GptqQuantizer"/> (names follow AutoGPTQ / GPTQModel).</summary>
public sealed record GptqOptions
{
    /// <summary>Dampening added to the Hessian diagonal, as a fraction of its mean (percdamp).</summary>
    public double DampPercent { get; init; } = 0.01;
    /// <summary>Columns per lazy batch update (the paper's B = 128); rounded up to a multiple of the grid's group size.</summary>
    public int BlockSize { get; init; } = 128;
    /// <summary>Process columns in order of decreasing Hessian diagonal (desc_act).</summary>
    public bool ActOrder { get; init; }
    /// <summary>
    /// Fit every group's parameters once from the original weights before any update (static_groups).
    /// Always on with <see cref="ActOrder"/>: the file formats Lowbit writes need groups contiguous in the
    /// original column order, and static groups keep them so while act-order still chooses the rounding order.
    /// </summary>
    public bool StaticGroups { get; init; }
    /// <summary>Use diag(H) as importance when fitting group parameters (imatrix-style scale search).</summary>
    public bool HessianImportance { get; init; } = true;
}

/// <summary>Result of quantizing one linear layer with GPTQ.</summary>
public sealed record GptqResult(float[] Dequantized, byte[] Encoded, double Loss);

/// <summary>
/// GPTQ (Frantar et al., 2022): quantizes a weight matrix W (rows = outputs, cols = inputs) column by
/// column onto a target grid and spreads each column's rounding error over the not-yet-quantized
/// columns through the inverse Hessian, minimising ‖WX − ŴX‖². Works with any <see cref="IQuantGrid"/>:
/// INTn groups, GGUF legacy and k-quant blocks, FP4 formats.
/// </summary>
public static class GptqQuantizer
{
    public static GptqResult Quantize(ReadOnlySpan<float> weights, int rows, int cols, double[] hessian, IQuantGrid grid,
        long encodedRowBytes, GptqOptions options, CancellationToken cancel = default)
    {
        if (weights.Length != (long)rows * cols) throw new ArgumentException("weights size mismatch");
        if (hessian.Length != (long)cols * cols) throw new ArgumentException("hessian size mismatch");
        int g = grid.GroupSize;
        if (cols % g != 0) throw new LowbitException($"GPTQ: row length {cols} is not a multiple of the grid's group size {g}");
        int groups = cols / g;
        int pc = grid.ParamCount;

        var W = weights.ToArray();
        var H = (double[])hessian.Clone();
        var diag = new double[cols];
        for (int i = 0; i < cols; i++) diag[i] = H[(long)i * cols + i];

        // Dead inputs (never active in calibration): their weights cannot matter, zero them as GPTQ does.
        for (int i = 0; i < cols; i++)
        {
            if (diag[i] != 0) continue;
            H[(long)i * cols + i] = 1;
            for (int r = 0; r < rows; r++) W[(long)r * cols + i] = 0;
        }

        var importance = new float[cols];
        if (options.HessianImportance)
            for (int i = 0; i < cols; i++) importance[i] = (float)Math.Max(diag[i], 0);

        // Column processing order.
        var perm = Enumerable.Range(0, cols).ToArray();
        if (options.ActOrder)
            perm = perm.OrderByDescending(i => diag[i]).ThenBy(i => i).ToArray();
        bool staticGroups = options.StaticGroups || options.ActOrder;

        // Parameters per (row, group), in original column order.
        var param = new float[(long)rows * groups * pc];
        var fitted = new bool[groups];
        if (staticGroups)
        {
            Parallel.For(0, rows, r => FitRowGroups(W, r, cols, grid, importance, param, groups, pc, 0, groups));
            Array.Fill(fitted, true);
        }

        // Permuted copies: Wp[r, k] = W[r, perm[k]], Hp = H[perm][:, perm].
        var Wp = new float[W.Length];
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++) Wp[(long)r * cols + k] = W[(long)r * cols + perm[k]];
        var Hp = new double[H.Length];
        for (int a = 0; a < cols; a++)
            for (int b = 0; b < cols; b++) Hp[(long)a * cols + b] = H[(long)perm[a] * cols + perm[b]];

        double damp = options.DampPercent * diag.Average();
        if (damp <= 0) damp = options.DampPercent;
        for (int i = 0; i < cols; i++) Hp[(long)i * cols + i] += damp;

        // Hinv = upper Cholesky factor of H⁻¹ (the rows GPTQ uses for its updates).
        var U = CholeskyMath.InverseUpperCholesky(Hp, cols);

        var Q = new float[W.Length];
        double loss = 0;
        int block = Math.Max(options.BlockSize, 1);
        if (!staticGroups) block = (block + g - 1) / g * g; // lazy blocks aligned to groups, so a group's columns are current when it is fitted
        var err = new float[(long)rows * block];
        for (int i1 = 0; i1 < cols; i1 += block)
        {
            cancel.ThrowIfCancellationRequested();
            int i2 = Math.Min(i1 + block, cols);
            int count = i2 - i1;
            if (!staticGroups)
            {
                // Sequential order: groups starting in this block are fitted from the current (compensated) weights.
                int g0 = i1 / g, g1 = (i2 + g - 1) / g;
                for (int gi = g0; gi < g1; gi++)
                {
                    if (fitted[gi]) continue;
                    int gg = gi;
                    Parallel.For(0, rows, r => FitRowGroups(Wp, r, cols, grid, importance, param, groups, pc, gg, gg + 1));
                    fitted[gi] = true;
                }
            }
            var rowLoss = new double[rows];
            Parallel.For(0, rows, r =>
            {
                double local = 0;
                long ro = (long)r * cols;
                long eo = (long)r * block;
                for (int i = 0; i < count; i++)
                {
                    int k = i1 + i;
                    int col = perm[k];
                    int gi = col / g;
                    float w = Wp[ro + k];
                    var p = new ReadOnlySpan<float>(param, (int)(((long)r * groups + gi) * pc), pc);
                    float q = grid.Round(p, col % g, w);
                    Q[ro + k] = q;
                    double d = U[(long)k * cols + k];
                    float e = (float)((w - q) / d);
                    local += (double)(w - q) * (w - q) / (d * d) / 2;
                    err[eo + i] = e;
                    // Spread the error over the remaining columns of this lazy block.
                    long uo = (long)k * cols;
                    for (int j = k + 1; j < i2; j++) Wp[ro + j] -= (float)(e * U[uo + j]);
                }
                // Lazy batch update of all later columns.
                for (int j = i2; j < cols; j++)
                {
                    double acc = 0;
                    for (int i = 0; i < count; i++) acc += err[eo + i] * U[(long)(i1 + i) * cols + j];
                    Wp[ro + j] -= (float)acc;
                }
                rowLoss[r] = local;
            });
            foreach (var l in rowLoss) loss += l; // fixed order: deterministic for any thread count
        }

        // Back to the original column order, then encode exactly.
        var deq = new float[W.Length];
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++) deq[(long)r * cols + perm[k]] = Q[(long)r * cols + k];
        var encoded = new byte[checked(rows * encodedRowBytes)];
        Parallel.For(0, rows, r =>
        {
            grid.EncodeRow(new ReadOnlySpan<float>(deq, r * cols, cols),
                new ReadOnlySpan<float>(param, (int)((long)r * groups * pc), groups * pc),
                encoded.AsSpan((int)(r * encodedRowBytes), (int)encodedRowBytes));
        });
        return new GptqResult(deq, encoded, loss);
    }

    /// <summary>Fits groups [g0, g1) of row r. <paramref name="m"/> is in permuted order unless all groups are fitted statically from W.</summary>
    private static void FitRowGroups(float[] m, int r, int cols, IQuantGrid grid, float[] importance, float[] param, int groups, int pc, int g0, int g1)
    {
        int g = grid.GroupSize;
        Span<float> buf = g <= 1024 ? stackalloc float[g] : new float[g];
        for (int gi = g0; gi < g1; gi++)
        {
            // Without act-order the permutation is the identity, so group columns are contiguous in either array.
            new ReadOnlySpan<float>(m, r * cols + gi * g, g).CopyTo(buf);
            grid.Fit(buf, importance.AsSpan(gi * g, g), param.AsSpan((int)(((long)r * groups + gi) * pc), pc));
        }
    }
}
