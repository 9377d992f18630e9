using Lowbit.Model;
using Lowbit.Pipeline;

namespace Lowbit.Methods;

/// <summary>Settings of <see cref="SmoothQuantModelTransform"/>.</summary>
public sealed record SmoothQuantOptions
{
    /// <summary>Migration strength α: s = max|X|^α / max|W|^(1−α) (the paper's default for Llama-class models: 0.5–0.85).</summary>
    public double Alpha { get; init; } = 0.5;

    /// <summary>Also smooth attn_output's input into attn_v's output rows (scales tied per KV channel under GQA).</summary>
    public bool SmoothAttentionOutput { get; init; }

    /// <summary>Also smooth ffn_down's input into ffn_up's output rows.</summary>
    public bool SmoothFfnDown { get; init; }

    /// <summary>Calibration statistics; only per-channel max |x| is used, so few rows are kept.</summary>
    public ActivationStatsOptions Statistics { get; init; } = new() { MaxSampleRows = 1 };
}

/// <summary>One smoothed group: the largest per-channel activation max before and after smoothing.</summary>
public sealed record SmoothQuantGroupReport(int Layer, string Input, IReadOnlyList<string> Tensors, float MaxActivationBefore, float MaxActivationAfter);

/// <summary>The smoothed model (F32 for changed tensors, everything else shared with the source) and its groups.</summary>
public sealed class SmoothQuantResult(LoadedModel model, IReadOnlyList<SmoothQuantGroupReport> groups)
{
    public LoadedModel Model { get; } = model;
    public IReadOnlyList<SmoothQuantGroupReport> Groups { get; } = groups;
}

/// <summary>
/// SmoothQuant over a whole Llama-family model (Xiao et al., 2022): per block, the per-channel
/// activation max of the q/k/v input and the gate/up input (optionally o's and down's) sets
/// s = max|X|^α / max|W|^(1−α) (<see cref="SmoothQuant.Scales"/>); s is divided out of the producer
/// (RMSNorm weight, or the previous linear's output rows) and multiplied into the consumers' columns,
/// so the unquantized model is unchanged while the activations lose their outlier channels. Quantize
/// the block linears of the result to a W8A8 codec ("w8a8-int8", "w8a8-fp8") afterwards.
/// </summary>
public static class SmoothQuantModelTransform
{
    public static SmoothQuantResult Apply(LoadedModel model, IReadOnlyList<int[]> samples, SmoothQuantOptions? options = null,
        IProgress<(int Done, int Total, string Name)>? progress = null, CancellationToken cancel = default)
    {
        options ??= new SmoothQuantOptions();
        if (!(options.Alpha >= 0 && options.Alpha <= 1)) throw new LowbitException($"SmoothQuant α must be in [0, 1], got {options.Alpha}");
        var c = model.Config;
        var groups = new List<SmoothQuantGroupReport>();
        var replacements = new Dictionary<string, ModelTensor>(StringComparer.Ordinal);
        ActivationStats.ForEachLayer(model, samples, options.Statistics, stats =>
        {
            var block = new BlockWeights(model, stats.Layer);
            SmoothBlock(block, stats, options, groups);
            foreach (var t in block.ChangedTensors()) replacements[t.Name] = t;
            progress?.Report((stats.Layer + 1, c.NumLayers, $"blk.{stats.Layer}"));
        }, cancel);
        return new SmoothQuantResult(ModelTransforms.WithTensors(model, replacements), groups);
    }

    private static void SmoothBlock(BlockWeights block, LayerActivationStats stats, SmoothQuantOptions options, List<SmoothQuantGroupReport> groups)
    {
        var c = block.Config;
        int l = block.Layer;
        string v = TensorNames.AttnV(l), up = TensorNames.FfnUp(l);

        string[] attn = [TensorNames.AttnQ(l), TensorNames.AttnK(l), v];
        var sAttn = GroupScales(block, attn, stats.Attention.MaxAbs, null, options.Alpha);
        block.FoldIntoNorm(TensorNames.AttnNorm(l), attn, sAttn);
        groups.Add(Report(l, "attn_norm", attn, stats.Attention.MaxAbs, sAttn));

        if (options.SmoothAttentionOutput)
        {
            string[] o = [TensorNames.AttnOutput(l)];
            var map = BlockWeights.AttentionOutputToValueChannel(c);
            var sOut = GroupScales(block, o, stats.AttentionOutput.MaxAbs, map, options.Alpha);
            var sV = new float[c.KvDim];
            for (int j = 0; j < map.Length; j++) sV[map[j]] = sOut[j];
            block.FoldIntoRows(v, TensorNames.AttnVBias(l), sV, o, sOut);
            groups.Add(Report(l, "attn_v", o, stats.AttentionOutput.MaxAbs, sOut));
        }

        string[] ffn = [TensorNames.FfnGate(l), up];
        var sFfn = GroupScales(block, ffn, stats.Ffn.MaxAbs, null, options.Alpha);
        block.FoldIntoNorm(TensorNames.FfnNorm(l), ffn, sFfn);
        groups.Add(Report(l, "ffn_norm", ffn, stats.Ffn.MaxAbs, sFfn));

        if (options.SmoothFfnDown)
        {
            string[] down = [TensorNames.FfnDown(l)];
            var sDown = GroupScales(block, down, stats.FfnDown.MaxAbs, null, options.Alpha);
            block.FoldIntoRows(up, null, sDown, down, sDown);
            groups.Add(Report(l, "ffn_up", down, stats.FfnDown.MaxAbs, sDown));
        }
    }

    /// <summary>
    /// SmoothQuant scales of one group. With a channel map (o under GQA), channels reading the same
    /// value channel share one scale, computed from their joint activation and weight maxima.
    /// </summary>
    private static float[] GroupScales(BlockWeights block, string[] names, float[] activationMax, int[]? map, double alpha)
    {
        var weightMax = SmoothQuant.WeightAbsMaxPerColumn(names.Select(block.Linear).ToArray());
        if (map is null) return SmoothQuant.Scales(activationMax, weightMax, alpha);
        int tied = map.Max() + 1;
        var a = new float[tied];
        var w = new float[tied];
        for (int j = 0; j < map.Length; j++)
        {
            a[map[j]] = Math.Max(a[map[j]], activationMax[j]);
            w[map[j]] = Math.Max(w[map[j]], weightMax[j]);
        }
        var s = SmoothQuant.Scales(a, w, alpha);
        return map.Select(k => s[k]).ToArray();
    }

    private static SmoothQuantGroupReport Report(int layer, string input, string[] names, float[] activationMax, float[] s) =>
        new(layer, input, names, activationMax.Max(), activationMax.Select((a, i) => a / s[i]).Max());
}
