using Lowbit.Methods.Calibration;
using Lowbit.Formats;
using Lowbit.Methods;
using Lowbit.Methods.Grids;

namespace Lowbit.Tests.Methods;

/// <summary>Every GPTQ grid: its encoding decodes to exactly the values GPTQ chose, and GPTQ beats RTN through it.</summary>
public sealed class QuantGridTests
{
    public static TheoryData<string> Formats => new() { "int4-g128-sym", "int4-g64-asym", "int3-g128-sym", "int8-g128-sym" };

    [Theory]
    [MemberData(nameof(Formats))]
    public void Gptq_output_decodes_bit_exactly_and_beats_rtn(string format)
    {
        var codec = CodecRegistry.Get(format);
        var grid = QuantGrids.For(codec);
        const int rows = 32, cols = 256, tokens = 512;
        var x = GptqQuantizerTests.RealisticActivations(tokens, cols, 21);
        var w = GptqQuantizerTests.RandomWeights(rows, cols, 22);
        var h = new GramAccumulator(cols);
        h.Add(x, tokens);
        var res = GptqQuantizer.Quantize(w, rows, cols, h.ToHessian(), grid, codec.RowBytes(cols), new GptqOptions());
        var decoded = new float[rows * cols];
        codec.DequantizeTensorRows(res.Encoded, rows, cols, 0, rows, decoded);
        Assert.Equal(res.Dequantized, decoded);
        var rtn = AwqScaleSearch.FakeQuantize(codec, w, rows, cols);
        double eG = GptqQuantizerTests.OutputError(w, decoded, x, rows, cols, tokens);
        double eR = GptqQuantizerTests.OutputError(w, rtn, x, rows, cols, tokens);
        Assert.True(eG < eR, $"{format}: GPTQ {eG:E3} vs RTN {eR:E3}");
    }
}
