using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>The k-quant codecs reproduce ggml's quantizers and dequantizers bit for bit.</summary>
public sealed class KQuantGoldenTests
{
    public static TheoryData<string, string, bool> GoldenCases()
    {
        var data = new TheoryData<string, string, bool>();
        foreach (var type in new[] { "q2_K", "q3_K", "q4_K", "q5_K", "q6_K" })
            foreach (var c in KQuantGolden.Cases)
                foreach (var imatrix in new[] { false, true })
                    if (CodecRegistry.TryGet(type) is not null)
                        data.Add(type, c, imatrix);
        return data;
    }

    [Theory]
    [MemberData(nameof(GoldenCases))]
    public void Quantization_is_byte_identical_to_ggml(string type, string caseName, bool imatrix)
    {
        var entry = KQuantGolden.Find(caseName, type, imatrix);
        var codec = CodecRegistry.Get(type);
        var input = KQuantGolden.Input(caseName);
        var importance = imatrix ? KQuantGolden.Importance(caseName) : [];
        var expected = KQuantGolden.Bytes(entry.File);
        var actual = new byte[codec.TensorBytes(entry.Rows, entry.Cols)];
        Assert.Equal(entry.Bytes, actual.Length);

        codec.QuantizeRows(input, actual, entry.Cols, importance);

        int firstDiff = -1;
        for (int i = 0; i < actual.Length; i++)
            if (actual[i] != expected[i]) { firstDiff = i; break; }
        Assert.True(firstDiff < 0,
            $"first differing byte {firstDiff} (block {firstDiff / codec.BlockBytes}, offset {firstDiff % codec.BlockBytes}): " +
            $"{(firstDiff < 0 ? 0 : actual[firstDiff])} vs ggml {(firstDiff < 0 ? 0 : expected[firstDiff])}; " +
            $"{actual.Where((b, i) => b != expected[i]).Count()} bytes differ");
    }

    [Theory]
    [MemberData(nameof(GoldenCases))]
    public void Dequantization_is_bit_identical_to_ggml(string type, string caseName, bool imatrix)
    {
        var entry = KQuantGolden.Find(caseName, type, imatrix);
        var codec = CodecRegistry.Get(type);
        var encoded = KQuantGolden.Bytes(entry.File);
        var expected = KQuantGolden.Floats(entry.DequantFile);
        var actual = new float[entry.Rows * entry.Cols];

        codec.DequantizeRows(encoded, actual, entry.Cols);

        for (int i = 0; i < actual.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(actual[i]) == BitConverter.SingleToInt32Bits(expected[i]),
                $"value {i}: {actual[i]:R} vs ggml {expected[i]:R}");
    }
}
