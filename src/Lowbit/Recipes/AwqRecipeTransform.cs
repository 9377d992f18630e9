using Lowbit.Methods;
using Lowbit.Methods.Calibration;
using Lowbit.Model;

namespace Lowbit.Recipes;

/// <summary>Recipe method "awq": activation-aware scales folded into the float model, then weight clipping (AwqModelTransform).</summary>
public sealed class AwqRecipeTransform : IRecipeTransform
{
    public LoadedModel Apply(LoadedModel model, CalibrationData data, RecipeStage stage, IReadOnlyList<string> tensors,
        IReadOnlyDictionary<string, TensorTarget> targets, int threads, CancellationToken cancel)
    {
        var options = new AwqOptions
        {
            GroupSize = stage.GetInt("group_size", 0),
            GridPoints = stage.GetInt("n_grid", 20),
            Clip = stage.GetBool("clip", true),
            Statistics = new ActivationStatsOptions { Threads = threads },
        };
        // Search each group's scales against the codec its tensors will actually be stored in.
        var result = AwqModelTransform.Apply(model, data.Samples, name => targets.TryGetValue(name, out var t)
            ? t.Codec
            : throw new LowbitException($"AWQ: tensor '{name}' has no target format in this recipe; add it to a quantizing stage"),
            options, null, cancel);
        return result.Model;
    }
}

/// <summary>Recipe method "smoothquant": activation outliers migrated into the weights (SmoothQuantModelTransform).</summary>
public sealed class SmoothQuantRecipeTransform : IRecipeTransform
{
    public LoadedModel Apply(LoadedModel model, CalibrationData data, RecipeStage stage, IReadOnlyList<string> tensors,
        IReadOnlyDictionary<string, TensorTarget> targets, int threads, CancellationToken cancel)
    {
        var options = new SmoothQuantOptions
        {
            Alpha = stage.GetDouble("alpha", 0.5),
            SmoothFfnDown = stage.GetBool("smooth_down", false),
            SmoothAttentionOutput = stage.GetBool("smooth_attn_output", false),
            Statistics = new ActivationStatsOptions { Threads = threads, MaxSampleRows = 1 }, // SmoothQuant needs only max |x|
        };
        return SmoothQuantModelTransform.Apply(model, data.Samples, options, null, cancel).Model;
    }
}
