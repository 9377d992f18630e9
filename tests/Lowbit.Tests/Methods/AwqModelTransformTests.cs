using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.Methods;
using Lowbit.Model;

namespace Lowbit.Tests.Methods;

public sealed class AwqModelTransformTests
{
    [Theory]
    [InlineData(4, false)] // no GQA: o's scales fold straight into v
    [InlineData(2, true)]  // GQA: o's scales tied per value channel; v bias rescaled too
    public void Folded_scales_leave_the_unquantized_logits_unchanged(int kvHeads, bool bias)
    {
        using var model = AwqTestModels.WithOutliers(AwqTestModels.Config(kvHeads, bias));
        var samples = AwqTestModels.Samples(4, 24, model.Config.VocabSize, 1);
        var codec = CodecRegistry.Get("int3-g32-sym");
        var result = AwqModelTransform.Apply(model, samples, codec, new AwqOptions { Clip = false, Statistics = new() { Threads = 2 } });

        // Something must actually have been folded, in every kind of group, or the test proves nothing.
        foreach (var input in new[] { "attn_norm", "attn_v", "ffn_norm", "ffn_up" })
            Assert.Contains(result.Groups, g => g.Input == input && !g.Identity);
        Assert.Empty(result.ClippedTensors);
        Assert.Equal("f32", result.Model.Get(TensorNames.AttnNorm(0)).Codec.Name);
        Assert.NotEqual(model.Get(TensorNames.AttnQ(0)).ToFloat(), result.Model.Get(TensorNames.AttnQ(0)).ToFloat());

        var tokens = AwqTestModels.Samples(1, 32, model.Config.VocabSize, 99)[0];
        var before = AwqTestModels.Logits(model, tokens);
        var after = AwqTestModels.Logits(result.Model, tokens);
        double scale = AwqTestModels.MaxAbs(before);
        for (int i = 0; i < before.Length; i++)
            Assert.True(Math.Abs(before[i] - after[i]) <= 2e-4 * scale + 1e-5, $"logit {i}: {before[i]} vs {after[i]}");
    }

    [Fact]
    public void Awq_then_rtn_has_lower_logit_error_than_rtn_on_a_model_with_outlier_channels()
    {
        using var model = AwqTestModels.WithOutliers(AwqTestModels.Config(2));
        var samples = AwqTestModels.Samples(6, 32, model.Config.VocabSize, 2);
        var codec = CodecRegistry.Get("int3-g32-sym");
        var awq = AwqModelTransform.Apply(model, samples, codec, new AwqOptions { Statistics = new() { Threads = 2 } });
        Assert.NotEmpty(awq.ClippedTensors);

        using var rtn = AwqTestModels.QuantizeBlockLinears(model, codec);
        using var awqRtn = AwqTestModels.QuantizeBlockLinears(awq.Model, codec);
        var tokens = AwqTestModels.Samples(1, 128, model.Config.VocabSize, 77)[0];
        var reference = AwqTestModels.Logits(model, tokens);
        double errRtn = AwqTestModels.MeanSquaredError(reference, AwqTestModels.Logits(rtn, tokens));
        double errAwq = AwqTestModels.MeanSquaredError(reference, AwqTestModels.Logits(awqRtn, tokens));
        Assert.True(errAwq < 0.85 * errRtn, $"AWQ+RTN logit MSE {errAwq:E3} vs RTN {errRtn:E3}");
    }

    [Fact]
    public void Layer_statistics_match_what_a_full_forward_pass_observes()
    {
        using var model = AwqTestModels.WithOutliers(AwqTestModels.Config(2));
        var samples = AwqTestModels.Samples(3, 20, model.Config.VocabSize, 3);
        var stats = ActivationStats.Collect(model, samples, new ActivationStatsOptions { MaxSampleRows = 16, Threads = 2 });

        // Reference: one ordinary forward pass per sample with an observer on every layer.
        var engine = new InferenceEngine(model, new EngineOptions { Threads = 2, ContextLength = 20 });
        var observer = new RecordingObserver();
        engine.Observer = observer;
        foreach (var s in samples)
        {
            engine.Reset();
            engine.Evaluate(s, s.Length, Span<float>.Empty);
        }
        foreach (var layer in stats)
            foreach (var kind in Enum.GetValues<LinearInput>())
            {
                var rows = observer.Rows[(layer.Layer, kind)];
                var got = layer[kind];
                int w = got.Width;
                Assert.Equal(rows.Count, got.Tokens);
                for (int c = 0; c < w; c++)
                {
                    double mean = rows.Average(r => Math.Abs((double)r[c]));
                    float max = rows.Max(r => Math.Abs(r[c]));
                    Assert.Equal(mean, got.MeanAbs[c], 1e-4 * (1 + mean));
                    Assert.Equal(max, got.MaxAbs[c], 1e-4f * (1 + max));
                }
                Assert.Equal(16, got.SampleRowCount);
                var sample = got.SampleRows;
                // Every kept row is one of the observed rows (within float tolerance of the two forward paths).
                for (int t = 0; t < got.SampleRowCount; t++)
                {
                    var row = sample.AsSpan(t * w, w).ToArray();
                    Assert.Contains(rows, r => r.Zip(row).All(p => Math.Abs(p.First - p.Second) <= 1e-4f * (1 + Math.Abs(p.First))));
                }
            }
    }

    [Fact]
    public void Reservoir_keeps_every_row_when_under_capacity_and_is_seeded()
    {
        var a = new LinearInputStats(3, 4, seed: 9);
        var b = new LinearInputStats(3, 4, seed: 9);
        var data = Enumerable.Range(0, 30).Select(i => (float)(i - 15)).ToArray(); // 10 rows of 3
        a.Add(data.AsSpan(0, 9), 3);
        Assert.Equal(data.AsSpan(0, 9).ToArray(), a.SampleRows);
        a.Add(data.AsSpan(9), 7);
        b.Add(data, 10);
        Assert.Equal(12, a.SampleRows.Length);
        Assert.Equal(10, a.Tokens);
        Assert.Equal([15f, 14f, 14f], a.MaxAbs); // column 2 holds -13 .. 14
        Assert.Equal((float)data.Where((_, i) => i % 3 == 0).Average(v => Math.Abs(v)), a.MeanAbs[0], 5);
        // Same seed, same rows, regardless of how the tokens were batched.
        Assert.Equal(a.SampleRows, b.SampleRows);
    }

    private sealed class RecordingObserver : IActivationObserver
    {
        public Dictionary<(int, LinearInput), List<float[]>> Rows { get; } = [];

        public void Observe(int layer, LinearInput kind, ReadOnlySpan<float> input, int tokens, int width)
        {
            if (!Rows.TryGetValue((layer, kind), out var list)) Rows[(layer, kind)] = list = [];
            for (int t = 0; t < tokens; t++) list.Add(input.Slice(t * width, width).ToArray());
        }
    }
}
