using Lowbit.Formats;
using Lowbit.Methods;
using Lowbit.Model;

namespace Lowbit.Tests.Methods;

public sealed class SmoothQuantModelTransformTests
{
    [Theory]
    [InlineData(4, false)]
    [InlineData(2, true)] // GQA: o's scales tied per value channel; v bias rescaled
    public void Smoothing_leaves_the_unquantized_logits_unchanged(int kvHeads, bool bias)
    {
        using var model = AwqTestModels.WithOutliers(AwqTestModels.Config(kvHeads, bias));
        var samples = AwqTestModels.Samples(3, 24, model.Config.VocabSize, 1);
        var result = SmoothQuantModelTransform.Apply(model, samples, new SmoothQuantOptions
        {
            Alpha = 0.6, SmoothAttentionOutput = true, SmoothFfnDown = true, Statistics = new() { MaxSampleRows = 1, Threads = 2 },
        });
        Assert.Equal(4 * model.Config.NumLayers, result.Groups.Count);
        // The outlier channels were flattened.
        foreach (var g in result.Groups.Where(g => g.Input is "attn_norm" or "ffn_norm"))
            Assert.True(g.MaxActivationAfter < 0.5 * g.MaxActivationBefore, $"{g.Input}: {g.MaxActivationBefore} -> {g.MaxActivationAfter}");

        var tokens = AwqTestModels.Samples(1, 32, model.Config.VocabSize, 99)[0];
        var before = AwqTestModels.Logits(model, tokens);
        var after = AwqTestModels.Logits(result.Model, tokens);
        double scale = AwqTestModels.MaxAbs(before);
        for (int i = 0; i < before.Length; i++)
            Assert.True(Math.Abs(before[i] - after[i]) <= 2e-4 * scale + 1e-5, $"logit {i}: {before[i]} vs {after[i]}");
        Assert.NotEqual(model.Get(TensorNames.FfnGate(0)).ToFloat(), result.Model.Get(TensorNames.FfnGate(0)).ToFloat());
    }

    [Fact]
    public void Smoothing_lowers_int8_w8a8_logit_error_on_a_model_with_activation_outliers()
    {
        const string format = "w8a8-int8";
        using var model = AwqTestModels.WithOutliers(AwqTestModels.Config(2));
        var samples = AwqTestModels.Samples(4, 32, model.Config.VocabSize, 2);
        var codec = CodecRegistry.Get(format);
        var smooth = SmoothQuantModelTransform.Apply(model, samples, new SmoothQuantOptions { Statistics = new() { MaxSampleRows = 1, Threads = 2 } });

        using var plain = AwqTestModels.QuantizeBlockLinears(model, codec);
        using var smoothed = AwqTestModels.QuantizeBlockLinears(smooth.Model, codec);
        var tokens = AwqTestModels.Samples(1, 96, model.Config.VocabSize, 7)[0];
        var reference = AwqTestModels.Logits(model, tokens);
        double errPlain = AwqTestModels.MeanSquaredError(reference, AwqTestModels.Logits(plain, tokens));
        double errSmooth = AwqTestModels.MeanSquaredError(reference, AwqTestModels.Logits(smoothed, tokens));
        Assert.True(errSmooth < 0.7 * errPlain, $"{format}: SmoothQuant+W8A8 logit MSE {errSmooth:E3} vs W8A8 {errPlain:E3}");
    }
}
