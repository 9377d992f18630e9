using Lowbit.Formats;
using Lowbit.Methods;

namespace Lowbit.Tests.Methods;

/// <summary>Symmetric INT4 with one FP32 scale per 32 values: a stand-in 4-bit codec for method tests.</summary>
internal sealed class TestInt4G32Codec : TensorCodec
{
    public override string Name => "test-int4-g32";
    public override int BlockSize => 32;
    public override int BlockBytes => 36;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        for (int b = 0; b < src.Length / 32; b++)
        {
            var blk = src.Slice(b * 32, 32);
            float amax = 0;
            foreach (var v in blk) amax = Math.Max(amax, Math.Abs(v));
            float s = amax / 7;
            BitConverter.TryWriteBytes(dst.Slice(b * 36, 4), s);
            for (int i = 0; i < 32; i++)
                dst[b * 36 + 4 + i] = (byte)(sbyte)(s == 0 ? 0 : Math.Clamp(MathF.Round(blk[i] / s), -7, 7));
        }
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        for (int b = 0; b < dst.Length / 32; b++)
        {
            float s = BitConverter.ToSingle(src.Slice(b * 36, 4));
            for (int i = 0; i < 32; i++) dst[b * 32 + i] = (sbyte)src[b * 36 + 4 + i] * s;
        }
    }
}

public sealed class AwqSmoothQuantTests
{
    [Fact]
    public void Awq_scales_lower_output_error_versus_rtn_when_outlier_channels_exist()
    {
        const int rows = 64, cols = 256, tokens = 512;
        var x = GptqQuantizerTests.RealisticActivations(tokens, cols, 11);
        var w = GptqQuantizerTests.RandomWeights(rows, cols, 12);
        var layer = new LinearWeights("test", w, rows, cols);
        var result = AwqScaleSearch.Search([layer], x, tokens, new TestInt4G32Codec(), groupSize: 32);
        Assert.True(result.ErrorAfter < 0.9 * result.ErrorBefore, $"AWQ {result.ErrorAfter:E3} vs RTN {result.ErrorBefore:E3}");
        Assert.False(double.IsNaN(result.Alpha));
    }

    [Fact]
    public void Awq_folding_keeps_the_unquantized_output_unchanged()
    {
        const int rows = 8, cols = 64, tokens = 16;
        var x = GptqQuantizerTests.RealisticActivations(tokens, cols, 13);
        var w = GptqQuantizerTests.RandomWeights(rows, cols, 14);
        var s = AwqScaleSearch.Scales(AwqScaleSearch.MeanAbs(x, tokens, cols),
            AwqScaleSearch.MeanNormalizedWeight([new LinearWeights("t", w, rows, cols)], 32), 0.5);
        var xs = (float[])x.Clone();
        var ws = (float[])w.Clone();
        for (int t = 0; t < tokens; t++) for (int c = 0; c < cols; c++) xs[t * cols + c] /= s[c];
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) ws[r * cols + c] *= s[c];
        var y0 = AwqScaleSearch.MatMulT(x, tokens, w, rows, cols);
        var y1 = AwqScaleSearch.MatMulT(xs, tokens, ws, rows, cols);
        for (int i = 0; i < y0.Length; i++) Assert.Equal(y0[i], y1[i], 1e-4f);
    }

    [Fact]
    public void Awq_clip_search_never_increases_row_output_error()
    {
        const int rows = 16, cols = 128, tokens = 256;
        var x = GptqQuantizerTests.RealisticActivations(tokens, cols, 15);
        var w = GptqQuantizerTests.RandomWeights(rows, cols, 16);
        var codec = new TestInt4G32Codec();
        var layer = new LinearWeights("t", w, rows, cols);
        var clipped = AwqScaleSearch.SearchClip(layer, x, tokens, codec);
        double eClip = GptqQuantizerTests.OutputError(w, AwqScaleSearch.FakeQuantize(codec, clipped, rows, cols), x, rows, cols, tokens);
        double eRtn = GptqQuantizerTests.OutputError(w, AwqScaleSearch.FakeQuantize(codec, w, rows, cols), x, rows, cols, tokens);
        Assert.True(eClip <= eRtn * 1.0001, $"clip {eClip:E3} vs rtn {eRtn:E3}");
    }

    [Fact]
    public void SmoothQuant_lowers_w8a8_error_when_activation_outliers_exist()
    {
        const int rows = 32, cols = 256, tokens = 256;
        var x = GptqQuantizerTests.RealisticActivations(tokens, cols, 17);
        // Make a few channels extreme, as in real LLM activations.
        for (int t = 0; t < tokens; t++) { x[t * cols + 5] *= 30; x[t * cols + 77] *= 30; }
        var w = GptqQuantizerTests.RandomWeights(rows, cols, 18);
        var reference = AwqScaleSearch.MatMulT(x, tokens, w, rows, cols);

        double W8A8Error(float[] xin, float[] win)
        {
            var y = AwqScaleSearch.MatMulT(SmoothQuant.FakeQuantizeTokensInt8(xin, tokens, cols), tokens,
                SmoothQuant.FakeQuantizeRowsInt8(win, rows, cols), rows, cols);
            double e = 0;
            for (int i = 0; i < y.Length; i++) e += (y[i] - reference[i]) * (double)(y[i] - reference[i]);
            return e;
        }

        var s = SmoothQuant.Scales(SmoothQuant.AbsMaxPerChannel(x, tokens, cols),
            SmoothQuant.WeightAbsMaxPerColumn([new LinearWeights("t", w, rows, cols)]), 0.5);
        var xs = (float[])x.Clone();
        var ws = (float[])w.Clone();
        for (int t = 0; t < tokens; t++) for (int c = 0; c < cols; c++) xs[t * cols + c] /= s[c];
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) ws[r * cols + c] *= s[c];
        double plain = W8A8Error(x, w), smoothed = W8A8Error(xs, ws);
        Assert.True(smoothed < 0.5 * plain, $"smoothed {smoothed:E3} vs plain {plain:E3}");
    }
}
