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
public sealed class GridCodecTests(ITestOutputHelper output)
{
    private const int Rows = 32, Cols = 512, Tokens = 512;

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
    };

    [Theory]
    [MemberData(nameof(Formats))]
    public void Gptq_bytes_decode_exactly_and_beat_rtn(string format)
    {
        var codec = CodecRegistry.Get(format);
        var grid = QuantGrids.For(codec);
        var x = GptqQuantizerTests.RealisticActivations(Tokens, Cols, 31);
        var w = GptqQuantizerTests.RandomWeights(Rows, Cols, 32);
        var h = new Hessian(Cols);
        h.Add(x, Tokens);
        var res = GptqQuantizer.Quantize(w, Rows, Cols, h.ToMatrix(), grid, codec.RowBytes(Cols), new GptqOptions());

        var decoded = new float[Rows * Cols];
        codec.DequantizeTensorRows(res.Encoded, Rows, Cols, 0, Rows, decoded);
        Assert.Equal(res.Dequantized, decoded);

        var rtn = AwqScaleSearch.FakeQuantize(codec, w, Rows, Cols);
        double eG = GptqQuantizerTests.OutputError(w, decoded, x, Rows, Cols, Tokens);
        double eR = GptqQuantizerTests.OutputError(w, rtn, x, Rows, Cols, Tokens);
        // The codec's own importance-aware quantizer (imatrix = diag(H)) is the stronger baseline.
        var diag = new float[Cols];
        var hm = h.ToMatrix();
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
        var reference = new byte[Rows * rowBytes];
        codec.QuantizeRows(w, reference, Cols, default);
        Assert.Equal(reference, viaGrid);
    }
}
