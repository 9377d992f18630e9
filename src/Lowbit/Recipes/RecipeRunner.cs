using System.Diagnostics;
using Lowbit.Methods.Calibration;
using Lowbit.Model;
using Lowbit.Pipeline;

namespace Lowbit.Recipes;

/// <summary>
/// A model-level transform stage (AWQ scale search and folding, SmoothQuant migration): rewrites the
/// float weights of <paramref name="tensors"/> (and whatever the method folds the inverse scales into)
/// using calibration activations, returning a model of the same shape. Implementations are registered
/// by method name in <see cref="RecipeTransforms.BuiltIn"/>.
/// </summary>
public interface IRecipeTransform
{
    /// <param name="tensors">The stage's target tensors.</param>
    /// <param name="targets">Every tensor's final codec and method (AWQ searches scales against the codec a tensor will get).</param>
    LoadedModel Apply(LoadedModel model, CalibrationData data, RecipeStage stage, IReadOnlyList<string> tensors,
        IReadOnlyDictionary<string, TensorTarget> targets, int threads, CancellationToken cancel);
}

/// <summary>The outcome of running a recipe.</summary>
public sealed record RecipeResult(LoadedModel Model, IReadOnlyDictionary<string, ModelTensor> Quantized,
    IReadOnlyList<CalibrationBlockReport> Blocks, TimeSpan Elapsed);

/// <summary>
/// Runs a <see cref="RecipePlan"/>: the transform stages in order (through registered
/// <see cref="IRecipeTransform"/>s), then the calibrated block-by-block pipeline when any tensor needs
/// activation statistics, or plain RTN otherwise.
/// </summary>
public static class RecipeRunner
{
    /// <summary>Throws unless every transform stage of the plan has an implementation (checked before any work).</summary>
    public static void CheckTransforms(RecipePlan plan, IReadOnlyDictionary<string, IRecipeTransform> transforms)
    {
        foreach (var step in plan.Transforms)
            if (!transforms.ContainsKey(step.Stage.Method))
                throw new LowbitException($"recipe '{plan.Recipe.Name}': method '{step.Stage.Method}' has no implementation registered in this build");
    }

    public static RecipeResult Run(LoadedModel model, RecipePlan plan, CalibrationData? data, IReadOnlyDictionary<string, IRecipeTransform> transforms,
        CalibrationOptions options, IProgress<CalibrationProgress>? progress = null, CancellationToken cancel = default)
    {
        CheckTransforms(plan, transforms);
        if (plan.NeedsCalibration && data is null) throw new LowbitException($"recipe '{plan.Recipe.Name}' needs calibration data");
        var sw = Stopwatch.StartNew();
        var current = model;
        foreach (var step in plan.Transforms)
            current = transforms[step.Stage.Method].Apply(current, data!, step.Stage, step.Tensors, plan.Targets, options.Threads, cancel);

        if (plan.Targets.Values.Any(t => t.NeedsStatistics))
        {
            var r = CalibrationPipeline.Run(current, data!, plan.Targets, options with { TrueSequential = plan.TrueSequential }, progress, cancel);
            return new RecipeResult(r.Model, r.Quantized, r.Blocks, sw.Elapsed);
        }

        // Every target is plain RTN: no activations needed.
        var quantized = new Dictionary<string, ModelTensor>(StringComparer.Ordinal);
        var reports = new List<CalibratedTensorReport>();
        foreach (var (name, target) in plan.Targets.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            cancel.ThrowIfCancellationRequested();
            long t0 = Stopwatch.GetTimestamp();
            var q = ModelTransforms.QuantizeTensor(current.Get(name), target.Codec, default, options.Threads, cancel);
            quantized[name] = q;
            reports.Add(new CalibratedTensorReport(name, q.Codec.Name, target.ToString(), q.ByteCount, null, Stopwatch.GetElapsedTime(t0).TotalSeconds));
        }
        var block = new CalibrationBlockReport(-1, sw.Elapsed.TotalSeconds, GC.GetTotalMemory(false), Environment.WorkingSet, false, reports);
        progress?.Report(new CalibrationProgress(1, 1, block));
        return new RecipeResult(ModelTransforms.WithTensors(current, quantized), quantized, [block], sw.Elapsed);
    }
}
