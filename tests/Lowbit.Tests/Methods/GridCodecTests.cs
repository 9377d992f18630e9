using Lowbit.Methods.Calibration;
using Lowbit.Formats;
using Lowbit.Methods;
using Lowbit.Methods.Grids;
using Xunit.Abstractions;

namespace Lowbit.Tests.Methods;

/// <summary>
/// GPTQ on the GGUF and FP4 codec grids: GPTQ's bytes decode through the codec to exactly the values
/// GPTQ chose, GPTQ beats the codec's own round-to-nearest quantizer on the output error, and a plain
/// fit-and-round through the grid reproduces the codec's reference quantizer byte for byte.
/// </summary>
public sealed class GridCodecTests(GridTestLayer layer, ITestOutputHelper output) : IClassFixture<GridTestLayer>
{
    private const int Rows = GridTestLayer.Rows, Cols = GridTestLayer.Cols, Tokens = GridTestLayer.Tokens;

    public static TheoryData<string> Formats => new()
    {
        "q4_K", "q6_K", "q5_K", "q3_K", "q2_K",
        "q4_0", "q8_0", "q5_0", "q4_1", "q5_1", "iq4_nl", "iq4_xs",
        "mxfp4", "nvfp4",
    };

    /// <summary>Codecs whose reference quantizer is one fit followed by per-value rounding under the stored parameters.</summary>
    public static TheoryData<string> SingleFitFormats => new()
    {
        "q4_K", "q6_K", "q5_K", "q3_K", "q2_K",
        "q4_0", "q8_0", "q5_0", "q4_1", "q5_1",
        "mxfp4", "nvfp4",
        "fp8_e4m3", "fp8_e5m2", "fp4_e2m1",
    };

    [Theory]
    [MemberData(nameof(Formats))]
    public void Gptq_bytes_decode_exactly_and_beat_rtn(string format)
    {
        var codec = CodecRegistry.Get(format);
        var grid = QuantGrids.For(codec);
        var (x, w, hm) = (layer.X, layer.W, layer.H);
        var res = GptqQuantizer.Quantize(w, Rows, Cols, hm, grid, codec.RowBytes(Cols), new GptqOptions());

        var decoded = new float[Rows * Cols];
        codec.DequantizeTensorRows(res.Encoded, Rows, Cols, 0, Rows, decoded);
        Assert.Equal(res.Dequantized, decoded);

        var rtn = AwqScaleSearch.FakeQuantize(codec, w, Rows, Cols);
        double eG = GptqQuantizerTests.OutputError(w, decoded, x, Rows, Cols, Tokens);
        double eR = GptqQuantizerTests.OutputError(w, rtn, x, Rows, Cols, Tokens);
        // The codec's own importance-aware quantizer (imatrix = diag(H)) is the stronger baseline.
        var diag = new float[Cols];
        for (int c = 0; c < Cols; c++) diag[c] = (float)hm[c * Cols + c];
        var imatrixBytes = new byte[codec.TensorBytes(Rows, Cols)];
        codec.QuantizeTensor(w, imatrixBytes, Rows, Cols, diag);
        var imatrix = new float[Rows * Cols];
        codec.DequantizeTensorRows(imatrixBytes, Rows, Cols, 0, Rows, imatrix);
        double eI = GptqQuantizerTests.OutputError(w, imatrix, x, Rows, Cols, Tokens);
        output.WriteLine($"{format}: GPTQ/RTN = {eG / eR:F3}, GPTQ/imatrix-RTN = {eG / eI:F3} (GPTQ {eG:E3}, RTN {eR:E3}, imatrix {eI:E3})");
        Assert.True(eG < 0.9 * eR, $"{format}: GPTQ {eG:E3} vs RTN {eR:E3}");
        Assert.True(eG < eI, $"{format}: GPTQ {eG:E3} vs imatrix RTN {eI:E3}");
    }

    [Theory]
    [MemberData(nameof(SingleFitFormats))]
    public void Rtn_through_the_grid_equals_the_reference_quantizer(string format)
    {
        var codec = CodecRegistry.Get(format);
        var grid = QuantGrids.For(codec);
        var w = GptqQuantizerTests.RandomWeights(Rows, Cols, 33);
        var viaGrid = RtnThroughGrid(codec, grid, w);
        long rowBytes = codec.RowBytes(Cols);
        var reference = new byte[Rows * rowBytes];
        codec.QuantizeRows(w, reference, Cols, default);
        Assert.Equal(reference, viaGrid);
    }

    /// <summary>
    /// IQ4: ggml's last pass picks table indices with the unrounded scale, the grid with the decoded one. The
    /// scale bytes must agree, and every value the grid rounds must be at least as close to the weight as the
    /// codec's (the grid is nearest under the scales actually stored); report how many indices differ.
    /// </summary>
    [Theory]
    [InlineData("iq4_nl")]
    [InlineData("iq4_xs")]
    public void Iq4_rtn_through_the_grid_keeps_the_codec_scales_and_rounds_no_worse(string format)
    {
        var codec = CodecRegistry.Get(format);
        var grid = QuantGrids.For(codec);
        var w = GptqQuantizerTests.RandomWeights(Rows, Cols, 34);
        var viaGrid = RtnThroughGrid(codec, grid, w);
        long rowBytes = codec.RowBytes(Cols);
        var reference = new byte[Rows * rowBytes];
        codec.QuantizeRows(w, reference, Cols, default);
        int headerBytes = format == "iq4_nl" ? 2 : 8;
        for (long b = 0; b < reference.Length; b += codec.BlockBytes)
            Assert.Equal(reference.AsSpan((int)b, headerBytes).ToArray(), viaGrid.AsSpan((int)b, headerBytes).ToArray());
        var a = new float[w.Length];
        var r = new float[w.Length];
        codec.DequantizeRows(viaGrid, a, Cols);
        codec.DequantizeRows(reference, r, Cols);
        int differ = 0;
        for (int i = 0; i < w.Length; i++)
        {
            Assert.True(Math.Abs(a[i] - w[i]) <= Math.Abs(r[i] - w[i]), $"value {i}: grid {a[i]}, codec {r[i]}, weight {w[i]}");
            if (a[i] != r[i]) differ++;
        }
        output.WriteLine($"{format}: {differ} of {w.Length} values differ from the codec's RTN (ties next to the scale's fp16 rounding)");
        Assert.True(differ < w.Length / 100, $"{differ} values differ");
    }

    /// <summary>Act-order (static groups) and GPTQ without Hessian importance also decode exactly and beat RTN.</summary>
    [Theory]
    [InlineData("q4_K", true, true)]
    [InlineData("q3_K", true, false)]
    [InlineData("q6_K", false, false)]
    [InlineData("q4_0", true, true)]
    [InlineData("q5_1", false, false)]
    [InlineData("iq4_xs", true, true)]
    [InlineData("nvfp4", true, true)]
    public void Gptq_variants_decode_exactly_and_beat_rtn(string format, bool actOrder, bool hessianImportance)
    {
        var codec = CodecRegistry.Get(format);
        var grid = QuantGrids.For(codec);
        const int rows = 16, cols = 256;
        var x = GptqQuantizerTests.RealisticActivations(Tokens, cols, 41);
        var w = GptqQuantizerTests.RandomWeights(rows, cols, 42);
        var h = new GramAccumulator(cols);
        h.Add(x, Tokens);
        var options = new GptqOptions { ActOrder = actOrder, HessianImportance = hessianImportance };
        var res = GptqQuantizer.Quantize(w, rows, cols, h.ToHessian(), grid, codec.RowBytes(cols), options);
        var decoded = new float[rows * cols];
        codec.DequantizeTensorRows(res.Encoded, rows, cols, 0, rows, decoded);
        Assert.Equal(res.Dequantized, decoded);
        var rtn = AwqScaleSearch.FakeQuantize(codec, w, rows, cols);
        double eG = GptqQuantizerTests.OutputError(w, decoded, x, rows, cols, Tokens);
        double eR = GptqQuantizerTests.OutputError(w, rtn, x, rows, cols, Tokens);
        output.WriteLine($"{format} act-order={actOrder} importance={hessianImportance}: GPTQ/RTN = {eG / eR:F3}");
        Assert.True(eG < 0.9 * eR, $"{format}: GPTQ {eG:E3} vs RTN {eR:E3}");
    }

    /// <summary>
    /// ggml's FP4 quantizers ignore importance; the FP4 grid's importance-weighted choice among neighbouring scales
    /// must pay off under GPTQ (lower output error than fitting every scale from the absolute maximum).
    /// </summary>
    [Theory]
    [InlineData("mxfp4")]
    [InlineData("nvfp4")]
    public void Fp4_importance_weighted_scales_lower_gptq_error(string format)
    {
        var codec = CodecRegistry.Get(format);
        var grid = QuantGrids.For(codec);
        var (x, w, hm) = (layer.X, layer.W, layer.H);
        double Error(bool importance)
        {
            var res = GptqQuantizer.Quantize(w, Rows, Cols, hm, grid, codec.RowBytes(Cols), new GptqOptions { HessianImportance = importance });
            return GptqQuantizerTests.OutputError(w, res.Dequantized, x, Rows, Cols, Tokens);
        }
        double weighted = Error(true), plain = Error(false);
        output.WriteLine($"{format}: GPTQ error with weighted scales / amax scales = {weighted / plain:F3}");
        Assert.True(weighted < plain, $"{format}: weighted {weighted:E3} vs amax {plain:E3}");
    }

    /// <summary>
    /// Dead input channels (never active in calibration: zero importance for whole sub-blocks and GPTQ zeroes their
    /// weights) must not break the fits: the bytes still decode exactly to GPTQ's values.
    /// </summary>
    [Theory]
    [InlineData("q4_K")]
    [InlineData("q6_K")]
    [InlineData("q3_K")]
    [InlineData("q2_K")]
    [InlineData("q5_K")]
    [InlineData("iq4_xs")]
    [InlineData("q4_0")]
    [InlineData("q5_1")]
    [InlineData("nvfp4")]
    [InlineData("mxfp4")]
    public void Gptq_with_dead_input_channels_decodes_exactly(string format)
    {
        var codec = CodecRegistry.Get(format);
        var grid = QuantGrids.For(codec);
        const int rows = 8, cols = 256, tokens = 128;
        var x = GptqQuantizerTests.RealisticActivations(tokens, cols, 51);
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < 80; c++) x[t * cols + c] = 0; // sub-blocks 0..4 of 16 dead, and part of the next
        var w = GptqQuantizerTests.RandomWeights(rows, cols, 52);
        var h = new GramAccumulator(cols);
        h.Add(x, tokens);
        var res = GptqQuantizer.Quantize(w, rows, cols, h.ToHessian(), grid, codec.RowBytes(cols), new GptqOptions());
        var decoded = new float[rows * cols];
        codec.DequantizeTensorRows(res.Encoded, rows, cols, 0, rows, decoded);
        Assert.Equal(res.Dequantized, decoded);
        Assert.All(decoded, v => Assert.True(float.IsFinite(v)));
    }

    /// <summary>The scale-free element formats: GPTQ's bytes decode exactly and beat plain rounding (weights scaled into range).</summary>
    [Theory]
    [InlineData("fp8_e4m3", 1f)]
    [InlineData("fp8_e5m2", 1f)]
    [InlineData("fp4_e2m1", 100f)]
    public void Gptq_on_element_formats_decodes_exactly_and_beats_rtn(string format, float weightScale)
    {
        var codec = CodecRegistry.Get(format);
        var grid = QuantGrids.For(codec);
        var x = layer.X;
        var w = layer.W.Select(v => v * weightScale).ToArray();
        var res = GptqQuantizer.Quantize(w, Rows, Cols, layer.H, grid, codec.RowBytes(Cols), new GptqOptions());
        var decoded = new float[Rows * Cols];
        codec.DequantizeTensorRows(res.Encoded, Rows, Cols, 0, Rows, decoded);
        Assert.Equal(res.Dequantized, decoded);
        var rtn = AwqScaleSearch.FakeQuantize(codec, w, Rows, Cols);
        double eG = GptqQuantizerTests.OutputError(w, decoded, x, Rows, Cols, Tokens);
        double eR = GptqQuantizerTests.OutputError(w, rtn, x, Rows, Cols, Tokens);
        output.WriteLine($"{format}: GPTQ/RTN = {eG / eR:F3}");
        Assert.True(eG < 0.9 * eR, $"{format}: GPTQ {eG:E3} vs RTN {eR:E3}");
    }

    /// <summary>Fit on the original weights without importance, round every value, encode: plain RTN through the grid.</summary>
    private static byte[] RtnThroughGrid(TensorCodec codec, IQuantGrid grid, float[] w)
    {
        int g = grid.GroupSize, groups = Cols / g, pc = grid.ParamCount;
        long rowBytes = codec.RowBytes(Cols);
        var viaGrid = new byte[Rows * rowBytes];
        var values = new float[Cols];
        var param = new float[groups * pc];
        for (int r = 0; r < Rows; r++)
        {
            var row = w.AsSpan(r * Cols, Cols);
            for (int gi = 0; gi < groups; gi++)
            {
                var p = param.AsSpan(gi * pc, pc);
                grid.Fit(row.Slice(gi * g, g), default, p);
                for (int i = 0; i < g; i++) values[gi * g + i] = grid.Round(p, i, row[gi * g + i]);
            }
            grid.EncodeRow(values, param, viaGrid.AsSpan((int)(r * rowBytes), (int)rowBytes));
        }
        return viaGrid;
    }
}

/// <summary>The synthetic linear layer shared by the grid tests (activations with outlier channels, weights, Hessian), built once.</summary>
public sealed class GridTestLayer
{
    public const int Rows = 32, Cols = 512, Tokens = 512;

    public GridTestLayer()
    {
        X = GptqQuantizerTests.RealisticActivations(Tokens, Cols, 31);
        W = GptqQuantizerTests.RandomWeights(Rows, Cols, 32);
        var h = new GramAccumulator(Cols);
        h.Add(X, Tokens);
        H = h.ToHessian();
    }

    public float[] X { get; }
    public float[] W { get; }
    /// <summary>GPTQ's 2/N·XᵀX; GptqQuantizer clones it, so tests may share it.</summary>
    public double[] H { get; }
}
