using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.Model;
using Lowbit.Pipeline;
using Lowbit.Recipes;

namespace Lowbit.Eval;

/// <summary>A variant's size and its measured (and, where possible, predicted) KLD.</summary>
public sealed record MixMeasurement(string Name, long Bytes, double BitsPerWeight, double? PredictedKld, double MeasuredKld,
    double KldError, double SameTop, double Perplexity);

/// <summary>The planner's mix, measured, next to llama.cpp's fixed mixtures.</summary>
public sealed record BudgetResult
{
    public required string Model { get; init; }
    public required string Budget { get; init; }
    public required long BudgetBytes { get; init; }
    public required IReadOnlyList<string> Candidates { get; init; }
    /// <summary>Tensor → chosen format, components only.</summary>
    public required IReadOnlyDictionary<string, string> Choice { get; init; }
    public required MixMeasurement Planned { get; init; }
    /// <summary>Fixed mixtures measured on the same chunks (with their additive-model predictions when every format was measured).</summary>
    public required IReadOnlyList<MixMeasurement> Mixtures { get; init; }
    public required int Context { get; init; }
    public required int Chunks { get; init; }
    public required double BasePerplexity { get; init; }
}

/// <summary>Builds the budget plan in memory, measures its real KLD, and measures fixed mixtures for comparison.</summary>
public static class BudgetVerification
{
    public static BudgetResult Run(LoadedModel model, string modelName, SensitivityReport sensitivity, SensitivityBaseline baseline,
        IReadOnlyList<string> candidates, SizeBudget budget, IReadOnlyList<string> compareMixtures, EngineOptions engineOptions,
        CancellationToken cancel = default)
    {
        var plan = BudgetPlanner.Plan(model, sensitivity, candidates, budget);
        var planned = Evaluate(model, "budget " + budget.Spec, plan.All(), plan.PredictedKld, baseline, engineOptions, cancel);
        var mixtures = new List<MixMeasurement>();
        foreach (var name in compareMixtures)
        {
            var mix = GgufMixture.TryGet(name) ?? throw new LowbitException($"unknown mixture '{name}'; known: {string.Join(", ", GgufMixture.Names)}");
            var codecs = BudgetPlanner.MixtureCodecs(model, mix);
            mixtures.Add(Evaluate(model, mix.Name, codecs, BudgetPlanner.Predict(model, sensitivity, codecs), baseline, engineOptions, cancel));
        }
        return new BudgetResult
        {
            Model = modelName,
            Budget = budget.Spec,
            BudgetBytes = budget.Bytes,
            Candidates = candidates,
            Choice = plan.Codecs.ToDictionary(kv => kv.Key, kv => kv.Value.Name),
            Planned = planned,
            Mixtures = mixtures,
            Context = baseline.Context,
            Chunks = baseline.Chunks,
            BasePerplexity = baseline.BasePerplexity,
        };
    }

    /// <summary>Quantizes <paramref name="model"/> in memory with <paramref name="codecs"/> and measures it against the baseline.</summary>
    public static MixMeasurement Evaluate(LoadedModel model, string name, IReadOnlyDictionary<string, TensorCodec> codecs, double? predicted,
        SensitivityBaseline baseline, EngineOptions engineOptions, CancellationToken cancel = default)
    {
        var variant = ModelTransforms.Quantize(model, codecs, engineOptions.Threads, cancel: cancel);
        long bytes = variant.Tensors.Sum(t => t.ByteCount);
        long parameters = variant.Tensors.Sum(t => t.ElementCount);
        var m = baseline.Measure(new InferenceEngine(variant, engineOptions), cancel);
        return new MixMeasurement(name, bytes, 8.0 * bytes / parameters, predicted, m.MeanKld, m.KldError, m.SameTop, m.Perplexity);
    }
}
