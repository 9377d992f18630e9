using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>
/// The building blocks exposed for GPTQ-style methods (group grids, per-value quantization, code
/// access) are consistent with the ggml-exact quantizers and dequantizers.
/// </summary>
public sealed class KQuantGridTests
{
    public static TheoryData<string, string, bool> GoldenCases()
    {
        var data = new TheoryData<string, string, bool>();
        foreach (var type in KQuantTestData.WeightCodecs)
            foreach (var c in KQuantGolden.Cases)
                foreach (var imatrix in new[] { false, true })
                    data.Add(type, c, imatrix);
        return data;
    }

    [Theory]
    [MemberData(nameof(GoldenCases))]
    public void Grid_quantization_reproduces_ggml_codes_and_values(string type, string caseName, bool imatrix)
    {
        var codec = KQuantTestData.Codec(type);
        var entry = KQuantGolden.Find(caseName, type, imatrix);
        var input = KQuantGolden.Input(caseName);
        var encoded = KQuantGolden.Bytes(entry.File);
        var dequant = KQuantGolden.Floats(entry.DequantFile);
        int blocks = encoded.Length / codec.BlockBytes;
        for (int b = 0; b < blocks; b++)
        {
            var block = encoded.AsSpan(b * codec.BlockBytes, codec.BlockBytes);
            for (int i = 0; i < 256; i++)
            {
                var grid = codec.GetGroupGrid(block, i / codec.GroupSize);
                int code = codec.GetCode(block, i);
                Assert.InRange(code, 0, codec.MaxCode);
                Assert.Equal(dequant[256 * b + i], grid.Dequantize(code));
                // ggml's last step re-codes every value of a group with a nonzero scale on the stored grid
                if (grid.Scale != 0)
                    Assert.True(grid.Quantize(input[256 * b + i]) == code, $"block {b} value {i}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Codecs))]
    public void SetCode_changes_exactly_one_value(string type)
    {
        var codec = KQuantTestData.Codec(type);
        var x = KQuantTestData.Gaussian(256, 5);
        var block = KQuantTestData.Quantize(codec, x, 256);
        var rng = new Random(9);
        for (int trial = 0; trial < 200; trial++)
        {
            int index = rng.Next(256), code = rng.Next(codec.MaxCode + 1);
            var before = Enumerable.Range(0, 256).Select(i => codec.GetCode(block, i)).ToArray();
            codec.SetCode(block, index, code);
            for (int i = 0; i < 256; i++)
                Assert.Equal(i == index ? code : before[i], codec.GetCode(block, i));
        }
    }

    [Theory]
    [MemberData(nameof(Codecs))]
    public void Column_by_column_requantization_with_fixed_scales_rebuilds_the_block(string type)
    {
        // The GPTQ recipe with no error feedback must give back ggml's own encoding.
        var codec = KQuantTestData.Codec(type);
        var x = KQuantTestData.Gaussian(256, 21, 0.02f);
        var importance = KQuantTestData.Uniform(256, 22, 0.1f, 3f);
        var expected = new byte[codec.BlockBytes];
        codec.QuantizeBlock(x, importance, expected);
        var block = (byte[])expected.Clone();
        for (int i = 0; i < 256; i++)
        {
            var grid = codec.GetGroupGrid(block, i / codec.GroupSize);
            if (grid.Scale != 0) codec.SetCode(block, i, 0); // scramble, then rebuild
        }
        for (int i = 0; i < 256; i++)
        {
            var grid = codec.GetGroupGrid(block, i / codec.GroupSize);
            if (grid.Scale != 0) codec.SetCode(block, i, grid.Quantize(x[i]));
        }
        Assert.Equal(expected, block);
    }

    [Theory]
    [MemberData(nameof(Codecs))]
    public void Dot_unpacking_agrees_with_codes_and_grids(string type)
    {
        var codec = KQuantTestData.Codec(type);
        var x = KQuantTestData.Gaussian(256, 31);
        var block = KQuantTestData.Quantize(codec, x, 256);
        var codes = new byte[256];
        var scales = new short[16];
        var mins = new short[16];
        codec.UnpackForDot(block, codes, scales, mins, out float d, out float dmin);
        var deq = KQuantTestData.Dequantize(codec, block, 256, 256);
        for (int i = 0; i < 256; i++)
        {
            Assert.Equal(codec.GetCode(block, i), codes[i]);
            float value = d * scales[i / 16] * codes[i] - dmin * mins[i / 16];
            Assert.InRange(value, deq[i] - 1e-5f * (1 + Math.Abs(deq[i])), deq[i] + 1e-5f * (1 + Math.Abs(deq[i])));
        }
        var scalarCodes = new byte[256];
        codec.UnpackCodesScalar(block, scalarCodes);
        Assert.Equal(codes, scalarCodes);
    }

    public static TheoryData<string> Codecs() => new(KQuantTestData.WeightCodecs);
}
