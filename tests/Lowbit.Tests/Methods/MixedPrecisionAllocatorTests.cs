using Lowbit.Methods;

namespace Lowbit.Tests.Methods;

public sealed class MixedPrecisionAllocatorTests
{
    [Fact]
    public void Allocation_matches_brute_force_and_respects_the_budget()
    {
        var rng = new Random(7);
        for (int trial = 0; trial < 20; trial++)
        {
            var tensors = Enumerable.Range(0, 5).Select(i => new TensorChoice($"t{i}",
                new[] { 2, 4, 8 }.Select(bits => new FormatOption($"b{bits}", bits * (1000 + rng.Next(1000)), rng.NextDouble() / bits)).ToArray())).ToArray();
            long budget = 4 * 5 * 1500 + rng.Next(20000);
            var got = MixedPrecisionAllocator.Allocate(tensors, budget);
            Assert.True(got.TotalBytes <= budget);
            // brute force over 3^5 assignments
            double bestCost = double.MaxValue;
            for (int code = 0; code < 243; code++)
            {
                int c = code;
                long bytes = 0;
                double cost = 0;
                foreach (var t in tensors)
                {
                    var o = t.Options[c % 3];
                    c /= 3;
                    bytes += o.Bytes;
                    cost += o.Cost;
                }
                if (bytes <= budget) bestCost = Math.Min(bestCost, cost);
            }
            Assert.True(got.TotalCost <= bestCost * 1.02 + 1e-12, $"trial {trial}: {got.TotalCost} vs optimum {bestCost}");
        }
    }

    [Fact]
    public void A_budget_below_the_smallest_size_is_a_clear_error()
    {
        var t = new[] { new TensorChoice("a", [new FormatOption("x", 100, 1)]) };
        var e = Assert.Throws<LowbitException>(() => MixedPrecisionAllocator.Allocate(t, 50));
        Assert.Contains("below the smallest possible size", e.Message);
    }
}
