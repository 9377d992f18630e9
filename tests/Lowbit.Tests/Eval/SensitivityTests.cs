using Lowbit.Engine;
using Lowbit.Eval;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Model;
using Lowbit.Pipeline;
using Lowbit.Tests.Engine;

namespace Lowbit.Tests.Eval;

public sealed class SensitivityTests
{
    private static readonly EngineOptions Options = new() { Threads = 2, ContextLength = 64 };
    private static readonly PerplexityOptions Chunks = new() { Context = 64, MaxChunks = 2 };

    /// <summary>Peaked and uncertain positions, as in the perplexity tests.</summary>
    internal static int[] Tokens(int count, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, count).Select(i => i % 3 == 0 ? r.Next(3, 512) : 400 + r.Next(0, 70)).ToArray();
    }

    [Theory]
    [InlineData("blk.3.attn_q.weight", 3, "attn_q")]
    [InlineData("blk.12.attn_output.weight", 12, "attn_output")]
    [InlineData("blk.0.ffn_down.weight", 0, "ffn_down")]
    [InlineData("token_embd.weight", -1, "token_embd")]
    [InlineData("output.weight", -1, "output")]
    public void Components_are_classified_by_layer_and_kind(string name, int layer, string kind) =>
        Assert.Equal((layer, kind), Sensitivity.Classify(name));

    [Theory]
    [InlineData("blk.0.attn_norm.weight")]
    [InlineData("output_norm.weight")]
    [InlineData("blk.1.attn_q.bias")]
    public void Norms_and_biases_are_not_components(string name) => Assert.Null(Sensitivity.Classify(name));

    [Fact]
    public void Baseline_measurement_equals_engine_vs_engine_kl_divergence()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var tokens = Tokens(200, 5);
        var baseEngine = new InferenceEngine(model, Options);
        var baseline = SensitivityBaseline.Capture(baseEngine, tokens, Chunks);
        var tensor = model.Get("blk.2.ffn_up.weight");
        var variant = ModelTransforms.WithTensors(model, new Dictionary<string, ModelTensor>
        {
            [tensor.Name] = ModelTransforms.QuantizeTensor(tensor, CodecRegistry.Get("q4_0"), default, 2),
        });
        var measured = baseline.Measure(new InferenceEngine(variant, Options));
        var reference = KlDivergence.Compute(new InferenceEngine(model, Options), new InferenceEngine(variant, Options), tokens, Chunks);
        Assert.True(measured.MeanKld > 0);
        Assert.Equal(reference.MeanKld.Value, measured.MeanKld, 1e-9);
        Assert.Equal(reference.MeanKld.Error, measured.KldError, 1e-9);
        Assert.Equal(reference.SameTop.Value, measured.SameTop, 12);
        Assert.Equal(reference.PplQuantized.Value, measured.Perplexity, 1e-6 * reference.PplQuantized.Value);
        Assert.Equal(reference.PplBase.Value, baseline.BasePerplexity, 1e-6 * reference.PplBase.Value);
        Assert.Equal(reference.Count, measured.Positions);

        var self = baseline.Measure(new InferenceEngine(model, Options));
        Assert.True(Math.Abs(self.MeanKld) < 1e-9, $"the base against itself: KLD {self.MeanKld}");
        Assert.Equal(1.0, self.SameTop);
    }

    [Fact]
    public void Every_component_is_measured_once_per_format_and_fewer_bits_hurt_more()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var baseline = SensitivityBaseline.Capture(new InferenceEngine(model, Options), Tokens(200, 9), Chunks with { MaxChunks = 1 });
        var formats = new[] { CodecRegistry.Get("q4_0"), CodecRegistry.Get("q8_0") };
        var progress = new List<SensitivityProgress>();
        var report = Sensitivity.Measure(model, "stories260K", baseline, formats, Options, new SyncList(progress));
        var components = Sensitivity.Components(model);
        // stories260K's ffn_down rows (172 values) split into no 32-value blocks: skipped, not faked.
        Assert.Equal(formats.Sum(f => components.Count(t => f.CanEncodeRow(t.Cols))), report.Components.Count);
        Assert.Contains(components, t => !formats[0].CanEncodeRow(t.Cols));
        Assert.Equal(report.Components.Count, progress.Count);
        Assert.Equal(progress.Count, progress[^1].Total);
        foreach (var t in components.Where(t => formats[0].CanEncodeRow(t.Cols)))
        {
            var q4 = report.Find(t.Name, "q4_0")!;
            var q8 = report.Find(t.Name, "q8_0")!;
            Assert.Equal(CodecRegistry.Get("q4_0").TensorBytes(t.Rows, t.Cols), q4.Bytes);
            Assert.True(q4.MeanKld >= 0 && q8.MeanKld >= 0);
            Assert.Equal(t.ElementCount, q4.Parameters);
        }
        double sum4 = report.Components.Where(c => c.Format == "q4_0").Sum(c => c.MeanKld);
        double sum8 = report.Components.Where(c => c.Format == "q8_0").Sum(c => c.MeanKld);
        Assert.True(sum4 > 10 * sum8, $"q4_0 sum {sum4} should far exceed q8_0 sum {sum8}");

        var (grid, others) = Sensitivity.Heatmap(report, "q4_0", model.Config.NumLayers);
        Assert.Equal(report.Components.Count(c => c.Format == "q4_0" && c.Layer >= 0), grid.Cast<double>().Count(double.IsFinite));
        Assert.Contains(others, o => o.Kind == "token_embd");
    }

    private sealed class SyncList(List<SensitivityProgress> list) : IProgress<SensitivityProgress>
    {
        public void Report(SensitivityProgress value) => list.Add(value);
    }
}
