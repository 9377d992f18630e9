using System.Diagnostics;
using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.Model;
using Lowbit.Pipeline;
using Lowbit.Recipes;

namespace Lowbit.Eval;

/// <summary>The damage one component does when it alone is stored in <see cref="Format"/>.</summary>
public sealed record ComponentSensitivity(
    string Tensor,
    /// <summary>Block index, or -1 for token_embd / output.</summary>
    int Layer,
    /// <summary>attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down, token_embd or output.</summary>
    string Kind,
    string Format,
    long Parameters,
    /// <summary>Exact encoded size of the tensor in <see cref="Format"/>.</summary>
    long Bytes,
    double MeanKld,
    double KldError,
    double SameTop,
    double Perplexity);

/// <summary>Per-component sensitivities of one model for one or more formats.</summary>
public sealed record SensitivityReport
{
    public required string Model { get; init; }
    public required int Context { get; init; }
    public required int Chunks { get; init; }
    public required double BasePerplexity { get; init; }
    public required IReadOnlyList<string> Formats { get; init; }
    public required IReadOnlyList<ComponentSensitivity> Components { get; init; }
    public required double Seconds { get; init; }

    /// <summary>The measurement of <paramref name="tensor"/> in <paramref name="format"/>, or null.</summary>
    public ComponentSensitivity? Find(string tensor, string format) => Components.FirstOrDefault(c =>
        c.Tensor == tensor && string.Equals(c.Format, format, StringComparison.OrdinalIgnoreCase));
}

/// <summary>Progress after each component.</summary>
public sealed record SensitivityProgress(int Done, int Total, string Tensor, string Format, double MeanKld);

/// <summary>
/// Sensitivity analysis: quantizes one component (a layer's attn_q/k/v/output, ffn_gate/up/down,
/// or the token embedding / output matrix) at a time, everything else left as in the base model,
/// and measures the KL divergence that causes against the base model over a few chunks. The base
/// distributions are computed once (<see cref="SensitivityBaseline"/>), so each component costs one
/// forward pass. The per-component KLDs are the costs the budget planner adds up.
/// </summary>
public static class Sensitivity
{
    /// <summary>The per-layer linear kinds, in the order tables and heatmaps show them.</summary>
    public static IReadOnlyList<string> LayerKinds { get; } = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

    /// <summary>(layer, kind) of a component tensor name, or null for tensors that are not components (norms, biases).</summary>
    public static (int Layer, string Kind)? Classify(string name)
    {
        if (name == TensorNames.TokenEmbedding) return (-1, "token_embd");
        if (name == TensorNames.Output) return (-1, "output");
        int layer = GgufMixture.LayerOf(name);
        if (layer < 0 || !name.EndsWith(".weight", StringComparison.Ordinal)) return null;
        int dot = name.IndexOf('.', 4);
        string kind = name[(dot + 1)..^".weight".Length];
        return LayerKinds.Contains(kind) ? (layer, kind) : null;
    }

    /// <summary>The components of <paramref name="model"/> in model order.</summary>
    public static IReadOnlyList<ModelTensor> Components(LoadedModel model) =>
        model.Tensors.Where(t => GgufMixture.IsQuantizable(t) && Classify(t.Name) is not null).ToArray();

    /// <summary>
    /// Measures every component in every format of <paramref name="formats"/> (formats whose block
    /// size does not divide a tensor's rows are skipped for that tensor).
    /// </summary>
    public static SensitivityReport Measure(LoadedModel model, string modelName, SensitivityBaseline baseline,
        IReadOnlyList<TensorCodec> formats, EngineOptions engineOptions, IProgress<SensitivityProgress>? progress = null,
        CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(baseline);
        ArgumentNullException.ThrowIfNull(formats);
        if (formats.Count == 0) throw new LowbitException("sensitivity needs at least one format");
        var sw = Stopwatch.StartNew();
        var components = Components(model);
        if (components.Count == 0) throw new LowbitException($"{model.SourcePath}: no quantizable components (attn_*, ffn_*, token_embd, output) found");
        var work = (from f in formats from t in components where f.CanEncodeRow(t.Cols) select (t, f)).ToArray();
        var results = new List<ComponentSensitivity>(work.Length);
        int done = 0;
        foreach (var (tensor, codec) in work)
        {
            cancel.ThrowIfCancellationRequested();
            var (layer, kind) = Classify(tensor.Name)!.Value;
            var quantized = ModelTransforms.QuantizeTensor(tensor, codec, default, engineOptions.Threads, cancel);
            var variant = ModelTransforms.WithTensors(model, new Dictionary<string, ModelTensor> { [tensor.Name] = quantized });
            var engine = new InferenceEngine(variant, engineOptions);
            var m = baseline.Measure(engine, cancel);
            results.Add(new ComponentSensitivity(tensor.Name, layer, kind, codec.Name, tensor.ElementCount, quantized.Data.Length,
                m.MeanKld, m.KldError, m.SameTop, m.Perplexity));
            progress?.Report(new SensitivityProgress(++done, work.Length, tensor.Name, codec.Name, m.MeanKld));
        }
        return new SensitivityReport
        {
            Model = modelName,
            Context = baseline.Context,
            Chunks = baseline.Chunks,
            BasePerplexity = baseline.BasePerplexity,
            Formats = formats.Select(f => f.Name).ToArray(),
            Components = results,
            Seconds = sw.Elapsed.TotalSeconds,
        };
    }

    /// <summary>
    /// Layers × kinds matrix of mean KLD for one format (NaN where not measured); row -1 holds
    /// token_embd and output, returned separately.
    /// </summary>
    public static (double[,] Grid, IReadOnlyList<ComponentSensitivity> Others) Heatmap(SensitivityReport report, string format, int layers)
    {
        var grid = new double[layers, LayerKinds.Count];
        for (int l = 0; l < layers; l++)
            for (int k = 0; k < LayerKinds.Count; k++) grid[l, k] = double.NaN;
        var others = new List<ComponentSensitivity>();
        foreach (var c in report.Components.Where(c => string.Equals(c.Format, format, StringComparison.OrdinalIgnoreCase)))
        {
            int k = LayerKinds.ToList().IndexOf(c.Kind);
            if (c.Layer >= 0 && c.Layer < layers && k >= 0) grid[c.Layer, k] = c.MeanKld;
            else others.Add(c);
        }
        return (grid, others);
    }
}
