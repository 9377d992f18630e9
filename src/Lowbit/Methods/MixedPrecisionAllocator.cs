namespace Lowbit.Methods;

/// <summary>One way to store one tensor: its format, exact encoded size and the damage it does (e.g. measured KLD).</summary>
public sealed record FormatOption(string Format, long Bytes, double Cost);

/// <summary>A tensor and the formats it may take.</summary>
public sealed record TensorChoice(string Tensor, IReadOnlyList<FormatOption> Options);

/// <summary>The chosen format per tensor, with the totals.</summary>
public sealed record AllocationResult(IReadOnlyDictionary<string, FormatOption> Choice, long TotalBytes, double TotalCost);

/// <summary>
/// Chooses one format per tensor to minimise the summed cost (estimated KLD, assumed additive across
/// tensors, as sensitivity studies assume to first order) under a total size budget: a multiple-choice
/// knapsack solved exactly by dynamic programming over sizes rounded up to a fine grid (so the budget
/// is never exceeded), with ties broken towards smaller files.
/// </summary>
public static class MixedPrecisionAllocator
{
    public static AllocationResult Allocate(IReadOnlyList<TensorChoice> tensors, long budgetBytes, int gridCells = 20000)
    {
        if (tensors.Count == 0) return new AllocationResult(new Dictionary<string, FormatOption>(), 0, 0);
        long minTotal = tensors.Sum(t => t.Options.Min(o => o.Bytes));
        if (minTotal > budgetBytes)
            throw new LowbitException($"size budget {budgetBytes:N0} bytes is below the smallest possible size {minTotal:N0} bytes with the candidate formats");

        double cell = Math.Max(1.0, (double)budgetBytes / gridCells);
        int cells = (int)Math.Floor(budgetBytes / cell);
        int n = tensors.Count;
        // best[c] = minimal cost using exactly the tensors so far with rounded size <= c
        var best = new double[cells + 1];
        var choice = new byte[n, cells + 1];
        Array.Fill(best, 0);
        var prev = new double[cells + 1];
        for (int i = 0; i < n; i++)
        {
            Array.Copy(best, prev, best.Length);
            var opts = tensors[i].Options;
            if (opts.Count > 255) throw new ArgumentException("at most 255 options per tensor");
            for (int c = 0; c <= cells; c++)
            {
                double b = double.PositiveInfinity;
                byte bo = 0;
                for (int o = 0; o < opts.Count; o++)
                {
                    int w = (int)Math.Ceiling(opts[o].Bytes / cell);
                    if (w > c) continue;
                    double v = prev[c - w] + opts[o].Cost;
                    if (v < b - 1e-15 || (Math.Abs(v - b) <= 1e-15 && opts[o].Bytes < opts[bo].Bytes))
                    {
                        b = v;
                        bo = (byte)o;
                    }
                }
                best[c] = b;
                choice[i, c] = bo;
            }
        }
        if (double.IsPositiveInfinity(best[cells]))
            throw new LowbitException("no format assignment fits the size budget after rounding; raise the budget slightly");
        var result = new Dictionary<string, FormatOption>();
        int cc = cells;
        long total = 0;
        double cost = 0;
        for (int i = n - 1; i >= 0; i--)
        {
            var o = tensors[i].Options[choice[i, cc]];
            result[tensors[i].Tensor] = o;
            total += o.Bytes;
            cost += o.Cost;
            cc -= (int)Math.Ceiling(o.Bytes / cell);
        }
        return new AllocationResult(result, total, cost);
    }
}
