using Lowbit.Engine;
using Lowbit.Eval;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Model;
using Lowbit.Recipes;
using Lowbit.Tests.Engine;

namespace Lowbit.Tests.Eval;

public sealed class BudgetPlannerTests
{
    private static readonly EngineOptions Options = new() { Threads = 2, ContextLength = 64 };

    /// <summary>A sensitivity report with made-up costs: cost = weight × 2^-bits, so every tensor prefers more bits.</summary>
    private static SensitivityReport Synthetic(LoadedModel model, IReadOnlyList<string> formats, Func<ModelTensor, double> weight)
    {
        var rows = new List<ComponentSensitivity>();
        foreach (var f in formats.Select(CodecRegistry.Get))
            foreach (var t in Sensitivity.Components(model).Where(t => f.CanEncodeRow(t.Cols)))
            {
                var (layer, kind) = Sensitivity.Classify(t.Name)!.Value;
                rows.Add(new ComponentSensitivity(t.Name, layer, kind, f.Name, t.ElementCount, f.TensorBytes(t.Rows, t.Cols),
                    weight(t) * Math.Pow(2, -f.BitsPerWeight), 0, 1, 1));
            }
        return new SensitivityReport { Model = "m", Context = 64, Chunks = 1, BasePerplexity = 1, Formats = formats, Components = rows, Seconds = 0 };
    }

    [Fact]
    public void Budgets_parse_as_bits_per_weight_bytes_or_a_mixture_size()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        long parameters = model.Tensors.Sum(t => t.ElementCount);
        Assert.Equal((long)Math.Floor(4.5 * parameters / 8), BudgetPlanner.ParseBudget("4.5bpw", model).Bytes);
        Assert.Equal(4L << 20, BudgetPlanner.ParseBudget("4MiB", model).Bytes);
        Assert.Equal(3_500_000, BudgetPlanner.ParseBudget("3.5 MB", model).Bytes);
        Assert.Equal(123456, BudgetPlanner.ParseBudget("123456", model).Bytes);
        Assert.Throws<LowbitException>(() => BudgetPlanner.ParseBudget("lots", model));
        Assert.Throws<LowbitException>(() => BudgetPlanner.ParseBudget("-3bpw", model));
        Assert.Throws<LowbitException>(() => BudgetPlanner.ParseBudget("", model));
    }

    [Fact]
    public void A_mixture_budget_is_the_size_of_that_mixture_on_this_model()
    {
        using var model = ModelLoader.Open(Path.Combine(EngineTestPaths.Root, "models", "refmodel-llama-6m"));
        long q4km = BudgetPlanner.ParseBudget("q4_k_m", model).Bytes;
        using var variant = Pipeline.ModelTransforms.Quantize(model, BudgetPlanner.MixtureCodecs(model, GgufMixture.TryGet("Q4_K_M")!), 2);
        Assert.Equal(variant.Tensors.Sum(t => t.ByteCount), q4km);
        Assert.True(BudgetPlanner.ParseBudget("Q4_K_S", model).Bytes < q4km && q4km < BudgetPlanner.ParseBudget("Q5_K_S", model).Bytes);
    }

    [Fact]
    public void Plans_respect_the_budget_and_move_bits_to_the_costly_tensors()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        string[] formats = ["q4_0", "q5_0", "q8_0"];
        // Layer 0 is 1000× more sensitive than the rest.
        var sens = Synthetic(model, formats, t => Sensitivity.Classify(t.Name)!.Value.Layer == 0 ? 1000 : 1);
        var smallest = BudgetPlanner.Plan(model, sens, formats, new SizeBudget(long.MaxValue / 4, "huge"));
        Assert.All(smallest.Codecs, kv => Assert.Equal("q8_0", kv.Value.Name));
        // stories260K's ffn_down rows (172) fit no candidate: they stay as loaded, outside the plan.
        Assert.All(model.Tensors.Where(t => t.Name.Contains("ffn_down")), t => Assert.Same(t.Codec, smallest.FixedTensors[t.Name]));

        long q4Size = smallest.FixedTensors.Sum(kv => kv.Value.TensorBytes(model.Get(kv.Key).Rows, model.Get(kv.Key).Cols))
            + smallest.Codecs.Keys.Sum(n => CodecRegistry.Get("q4_0").TensorBytes(model.Get(n).Rows, model.Get(n).Cols));
        // Sizes are rounded up to a grid of budget/20000 bytes, so the exact minimum needs a little slack.
        var tight = BudgetPlanner.Plan(model, sens, formats, new SizeBudget(q4Size + q4Size / 200, "tight"));
        Assert.True(tight.TotalBytes <= q4Size + q4Size / 200);
        Assert.True(tight.Codecs.Count(kv => kv.Value.Name == "q4_0") > tight.Codecs.Count / 2);
        Assert.Throws<LowbitException>(() => BudgetPlanner.Plan(model, sens, formats, new SizeBudget(q4Size - 1000, "too small")));

        var middle = BudgetPlanner.Plan(model, sens, formats, new SizeBudget(q4Size + (smallest.TotalBytes - q4Size) / 5, "middle"));
        Assert.True(middle.TotalBytes <= middle.Budget.Bytes);
        Assert.Equal(middle.TotalBytes, model.Tensors.Sum(t => middle.All()[t.Name].TensorBytes(t.Rows, t.Cols)));
        var layer0 = middle.Codecs.Where(kv => Sensitivity.Classify(kv.Key)!.Value.Layer == 0).ToArray();
        Assert.NotEmpty(layer0);
        Assert.All(layer0, kv => Assert.Equal("q8_0", kv.Value.Name));
        Assert.Contains(middle.Codecs, kv => kv.Value.Name == "q4_0");
        Assert.Equal(middle.PredictedKld, BudgetPlanner.Predict(model, sens, middle.Codecs)!.Value, 12);
    }

    [Fact]
    public void Missing_measurements_are_reported()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var sens = Synthetic(model, ["q8_0"], _ => 1);
        var e = Assert.Throws<LowbitException>(() => BudgetPlanner.Plan(model, sens, ["q4_0"], new SizeBudget(long.MaxValue / 4, "x")));
        Assert.Contains("no sensitivity measurement", e.Message);
    }

    [Fact]
    public void Verification_measures_the_planned_mix_and_the_mixtures()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var tokens = SensitivityTests.Tokens(200, 4);
        var baseline = SensitivityBaseline.Capture(new InferenceEngine(model, Options), tokens, new PerplexityOptions { Context = 64, MaxChunks = 1 });
        string[] formats = ["q4_0", "q8_0"];
        var sens = Sensitivity.Measure(model, "stories260K", baseline, formats.Select(CodecRegistry.Get).ToArray(), Options);
        long Size(string f) => model.Tensors.Sum(t => (CodecRegistry.Get(f).CanEncodeRow(t.Cols) && t.Shape.Length == 2 ? CodecRegistry.Get(f) : t.Codec).TensorBytes(t.Rows, t.Cols));
        var budget = new SizeBudget((Size("q4_0") + Size("q8_0")) / 2, "halfway");
        var result = BudgetVerification.Run(model, "stories260K", sens, baseline, formats, budget, [], Options);
        Assert.True(result.Planned.Bytes <= budget.Bytes);
        Assert.Contains("q4_0", result.Choice.Values);
        Assert.Contains("q8_0", result.Choice.Values);
        Assert.True(result.Planned.MeasuredKld > 0 && double.IsFinite(result.Planned.MeasuredKld));
        // First-order additivity: the prediction is the right size (a loose sanity bound, not a precision claim).
        double ratio = result.Planned.MeasuredKld / result.Planned.PredictedKld!.Value;
        Assert.True(ratio is > 0.33 and < 3, $"measured {result.Planned.MeasuredKld} vs predicted {result.Planned.PredictedKld}");
        // The planner may only use the candidates (ffn_down, which neither can split, stays as loaded).
        Assert.All(result.Choice.Values, f => Assert.Contains(f, formats));
    }
}
