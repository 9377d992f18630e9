using Lowbit.Formats;
using Lowbit.Model;
using Lowbit.Pipeline;

namespace Lowbit.Methods;

/// <summary>Settings of <see cref="AwqModelTransform"/>.</summary>
public sealed record AwqOptions
{
    /// <summary>Group size of the weight statistic (AutoAWQ's w_max); 0 = the target codec's block size (whole row for per-channel codecs).</summary>
    public int GroupSize { get; init; }

    /// <summary>Points of the α grid in [0, 1] (AutoAWQ: 20).</summary>
    public int GridPoints { get; init; } = 20;

    /// <summary>Fold scales for attn_output into attn_v's output rows (tied per KV channel under grouped-query attention).</summary>
    public bool ScaleAttentionOutput { get; init; } = true;

    /// <summary>Run AWQ's weight-clipping search on v, o, gate, up and down (q and k are never clipped, as in AutoAWQ).</summary>
    public bool Clip { get; init; } = true;

    public int ClipSteps { get; init; } = 20;
    public double ClipMaxShrink { get; init; } = 0.5;
    public int ClipMaxTokens { get; init; } = 512;

    /// <summary>Calibration statistics (rows kept for the loss searches, seed, threads).</summary>
    public ActivationStatsOptions Statistics { get; init; } = new();
}

/// <summary>The scales chosen for one group of linears sharing an input.</summary>
public sealed record AwqGroupReport(int Layer, string Input, IReadOnlyList<string> Tensors, double Alpha, double ErrorBefore, double ErrorAfter)
{
    /// <summary>True when plain rounding was best and the scales are all one (nothing folded).</summary>
    public bool Identity => double.IsNaN(Alpha);
}

/// <summary>The AWQ-transformed model and what was done to it.</summary>
public sealed class AwqResult(LoadedModel model, IReadOnlyList<AwqGroupReport> groups, IReadOnlyList<string> clippedTensors)
{
    /// <summary>
    /// The model with scales folded (and weights clipped): modified norms and linears are F32 in-memory
    /// tensors, everything else is shared with the source (dispose the source last). Without clipping it
    /// is mathematically the source model; quantize its block linears (RTN or GPTQ) to the target codec.
    /// </summary>
    public LoadedModel Model { get; } = model;
    public IReadOnlyList<AwqGroupReport> Groups { get; } = groups;
    /// <summary>Tensors whose weights the clip search changed.</summary>
    public IReadOnlyList<string> ClippedTensors { get; } = clippedTensors;
}

/// <summary>
/// AWQ over a whole Llama-family model (Lin et al., 2023; AutoAWQ's order of groups): per block,
/// (q, k, v) ← attn_norm; (o) ← v's output rows; (gate, up) ← ffn_norm; (down) ← up's output rows.
/// For each group the scale exponent is searched against the target codec on calibration
/// activations (<see cref="AwqScaleSearch.Search"/>), the scales are folded so the unquantized model
/// is unchanged, and then every linear except q and k gets the clip search on the activations it now
/// sees. The result is F32 and still has to be quantized to the target codec.
/// </summary>
public static class AwqModelTransform
{
    /// <summary>AWQ with one target codec for every block linear.</summary>
    public static AwqResult Apply(LoadedModel model, IReadOnlyList<int[]> samples, TensorCodec codec, AwqOptions? options = null,
        IProgress<(int Done, int Total, string Name)>? progress = null, CancellationToken cancel = default)
        => Apply(model, samples, _ => codec, options, progress, cancel);

    /// <summary>AWQ with a target codec per block linear (a group is searched against its first tensor's codec).</summary>
    public static AwqResult Apply(LoadedModel model, IReadOnlyList<int[]> samples, Func<string, TensorCodec> codecFor,
        AwqOptions? options = null, IProgress<(int Done, int Total, string Name)>? progress = null, CancellationToken cancel = default)
    {
        options ??= new AwqOptions();
        var c = model.Config;
        var groups = new List<AwqGroupReport>();
        var clipped = new List<string>();
        var replacements = new Dictionary<string, ModelTensor>(StringComparer.Ordinal);
        ActivationStats.ForEachLayer(model, samples, options.Statistics, stats =>
        {
            var block = new BlockWeights(model, stats.Layer);
            TransformBlock(block, stats, codecFor, options, groups, clipped, cancel);
            foreach (var t in block.ChangedTensors()) replacements[t.Name] = t;
            progress?.Report((stats.Layer + 1, c.NumLayers, $"blk.{stats.Layer}"));
        }, cancel);
        return new AwqResult(ModelTransforms.WithTensors(model, replacements), groups, clipped);
    }

    private static void TransformBlock(BlockWeights block, LayerActivationStats stats, Func<string, TensorCodec> codecFor,
        AwqOptions options, List<AwqGroupReport> groups, List<string> clipped, CancellationToken cancel)
    {
        var c = block.Config;
        int l = block.Layer;
        string q = TensorNames.AttnQ(l), k = TensorNames.AttnK(l), v = TensorNames.AttnV(l), o = TensorNames.AttnOutput(l);
        string gate = TensorNames.FfnGate(l), up = TensorNames.FfnUp(l), down = TensorNames.FfnDown(l);

        var xAttn = stats.Attention.SampleRows;
        int nAttn = stats.Attention.SampleRowCount;
        var xOut = stats.AttentionOutput.SampleRows;
        int nOut = stats.AttentionOutput.SampleRowCount;
        var xFfn = stats.Ffn.SampleRows;
        int nFfn = stats.Ffn.SampleRowCount;
        var xDown = stats.FfnDown.SampleRows;
        int nDown = stats.FfnDown.SampleRowCount;

        // (q, k, v) ← attn_norm
        {
            string[] names = [q, k, v];
            var codec = codecFor(q);
            var r = AwqScaleSearch.Search(names.Select(block.Linear).ToArray(), xAttn, nAttn, codec,
                GroupSize(options, codec, c.HiddenSize), options.GridPoints, cancel);
            groups.Add(new AwqGroupReport(l, "attn_norm", names, r.Alpha, r.ErrorBefore, r.ErrorAfter));
            if (!double.IsNaN(r.Alpha))
            {
                block.FoldIntoNorm(TensorNames.AttnNorm(l), names, r.Scales);
                BlockWeights.DivideColumns(xAttn, c.HiddenSize, r.Scales);
            }
        }
        // (o) ← v's output rows
        if (options.ScaleAttentionOutput)
        {
            var codec = codecFor(o);
            var map = BlockWeights.AttentionOutputToValueChannel(c);
            var (sOut, sV, alpha, before, after) = SearchAttentionOutput(block.Linear(o), xOut, nOut, codec,
                GroupSize(options, codec, c.QDim), options.GridPoints, map, c.KvDim, cancel);
            groups.Add(new AwqGroupReport(l, "attn_v", [o], alpha, before, after));
            if (!double.IsNaN(alpha))
            {
                block.FoldIntoRows(v, TensorNames.AttnVBias(l), sV, [o], sOut);
                BlockWeights.DivideColumns(xOut, c.QDim, sOut);
            }
        }
        // (gate, up) ← ffn_norm
        {
            string[] names = [gate, up];
            var codec = codecFor(gate);
            var r = AwqScaleSearch.Search(names.Select(block.Linear).ToArray(), xFfn, nFfn, codec,
                GroupSize(options, codec, c.HiddenSize), options.GridPoints, cancel);
            groups.Add(new AwqGroupReport(l, "ffn_norm", names, r.Alpha, r.ErrorBefore, r.ErrorAfter));
            if (!double.IsNaN(r.Alpha))
            {
                block.FoldIntoNorm(TensorNames.FfnNorm(l), names, r.Scales);
                BlockWeights.DivideColumns(xFfn, c.HiddenSize, r.Scales);
            }
        }
        // (down) ← up's output rows: down reads silu(gate)·up, linear in up's output.
        {
            var codec = codecFor(down);
            var r = AwqScaleSearch.Search([block.Linear(down)], xDown, nDown, codec,
                GroupSize(options, codec, c.IntermediateSize), options.GridPoints, cancel);
            groups.Add(new AwqGroupReport(l, "ffn_up", [down], r.Alpha, r.ErrorBefore, r.ErrorAfter));
            if (!double.IsNaN(r.Alpha))
            {
                block.FoldIntoRows(up, null, r.Scales, [down], r.Scales);
                BlockWeights.DivideColumns(xDown, c.IntermediateSize, r.Scales);
            }
        }

        if (!options.Clip) return;
        foreach (var (name, x, n) in new[] { (v, xAttn, nAttn), (o, xOut, nOut), (gate, xFfn, nFfn), (up, xFfn, nFfn), (down, xDown, nDown) })
        {
            cancel.ThrowIfCancellationRequested();
            var lin = block.Linear(name);
            var result = AwqScaleSearch.SearchClip(lin, x, n, codecFor(name), options.ClipSteps, options.ClipMaxShrink, options.ClipMaxTokens);
            if (!result.AsSpan().SequenceEqual(lin.Weight))
            {
                block.Replace(name, result);
                clipped.Add(name);
            }
        }
    }

    private static int GroupSize(AwqOptions options, TensorCodec codec, int cols)
    {
        int g = options.GroupSize > 0 ? options.GroupSize : codec.BlockSize;
        return g <= 1 || g > cols || cols % g != 0 ? cols : g;
    }

    /// <summary>
    /// The (o) group's search. Under grouped-query attention several attention-output channels read
    /// one value channel, so their scales must be equal to fold into v: each candidate's scales are
    /// tied to the geometric mean over the channels sharing a value channel. Without GQA this is
    /// <see cref="AwqScaleSearch.Search"/>.
    /// </summary>
    private static (float[] Out, float[] Value, double Alpha, double Before, double After) SearchAttentionOutput(
        LinearWeights o, float[] x, int tokens, TensorCodec codec, int groupSize, int gridPoints, int[] map, int kvDim,
        CancellationToken cancel)
    {
        if (kvDim == o.Cols)
        {
            var r = AwqScaleSearch.Search([o], x, tokens, codec, groupSize, gridPoints, cancel);
            return (r.Scales, r.Scales, r.Alpha, r.ErrorBefore, r.ErrorAfter);
        }
        int cols = o.Cols;
        var xMean = AwqScaleSearch.MeanAbs(x, tokens, cols);
        var wMean = AwqScaleSearch.MeanNormalizedWeight([o], groupSize);
        var reference = AwqScaleSearch.MatMulT(x, tokens, o.Weight, o.Rows, cols);
        double Error(float[] s)
        {
            var ws = new float[o.Weight.Length];
            for (int r = 0; r < o.Rows; r++)
                for (int j = 0; j < cols; j++) ws[r * cols + j] = o.Weight[r * cols + j] * s[j];
            var qw = AwqScaleSearch.FakeQuantize(codec, ws, o.Rows, cols);
            for (int r = 0; r < o.Rows; r++)
                for (int j = 0; j < cols; j++) qw[r * cols + j] /= s[j];
            var y = AwqScaleSearch.MatMulT(x, tokens, qw, o.Rows, cols);
            double e = 0;
            for (int i = 0; i < y.Length; i++) e += (double)(y[i] - reference[i]) * (y[i] - reference[i]);
            return e / y.Length;
        }
        var ones = Enumerable.Repeat(1f, cols).ToArray();
        double rtn = Error(ones), best = double.MaxValue, bestAlpha = double.NaN;
        float[] bestOut = ones, bestValue = Enumerable.Repeat(1f, kvDim).ToArray();
        for (int i = 0; i <= gridPoints; i++)
        {
            cancel.ThrowIfCancellationRequested();
            double alpha = (double)i / gridPoints;
            var s = AwqScaleSearch.Scales(xMean, wMean, alpha);
            var logSum = new double[kvDim];
            var count = new int[kvDim];
            for (int j = 0; j < cols; j++)
            {
                logSum[map[j]] += Math.Log(s[j]);
                count[map[j]]++;
            }
            var sv = new float[kvDim];
            for (int kc = 0; kc < kvDim; kc++) sv[kc] = count[kc] == 0 ? 1f : (float)Math.Exp(logSum[kc] / count[kc]);
            var so = new float[cols];
            for (int j = 0; j < cols; j++) so[j] = sv[map[j]];
            double e = Error(so);
            if (e < best)
            {
                best = e;
                bestAlpha = alpha;
                bestOut = so;
                bestValue = sv;
            }
        }
        if (rtn <= best) return (ones, Enumerable.Repeat(1f, kvDim).ToArray(), double.NaN, rtn, rtn);
        return (bestOut, bestValue, bestAlpha, rtn, best);
    }

    /// <summary>Names of every block linear of a model (the tensors AWQ/SmoothQuant prepare for quantization).</summary>
    public static IReadOnlyList<string> BlockLinearNames(ModelConfig config) =>
        Enumerable.Range(0, config.NumLayers).SelectMany(BlockWeights.LinearNames).ToArray();
}
