using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>The legacy codecs reproduce ggml's quantized bytes and dequantized floats exactly.</summary>
public sealed class LegacyGoldenTests
{
    private static readonly string[] LegacyTypes = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl", "iq4_xs"];

    public static TheoryData<string, string, bool> Cases()
    {
        var data = new TheoryData<string, string, bool>();
        foreach (var e in LegacyGolden.Manifest().Where(e => LegacyTypes.Contains(e.Type)))
            data.Add(e.Case, e.Type, e.Imatrix);
        return data;
    }

    private static LegacyGoldenEntry Entry(string @case, string type, bool imatrix) =>
        LegacyGolden.Manifest().Single(e => e.Case == @case && e.Type == type && e.Imatrix == imatrix);

    [Fact]
    public void Manifest_lists_every_legacy_type_with_and_without_imatrix()
    {
        var entries = LegacyGolden.Manifest();
        foreach (var type in LegacyTypes)
        {
            Assert.Contains(entries, e => e.Type == type && !e.Imatrix);
            Assert.Contains(entries, e => e.Type == type && e.Imatrix);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Quantized_bytes_match_ggml(string @case, string type, bool imatrix)
    {
        var e = Entry(@case, type, imatrix);
        var codec = CodecRegistry.Get(type);
        float[] input = LegacyGolden.Input(@case);
        float[] importance = imatrix ? LegacyGolden.Imatrix(@case) : [];
        byte[] expected = LegacyGolden.Bytes(e.File);
        var actual = new byte[codec.RowBytes(e.Cols) * e.Rows];
        Assert.Equal(e.Bytes, actual.Length);

        codec.QuantizeRows(input, actual, e.Cols, importance);

        int firstDiff = -1;
        for (int i = 0; i < actual.Length; i++)
            if (actual[i] != expected[i]) { firstDiff = i; break; }
        Assert.True(firstDiff < 0, $"{e}: first differing byte {firstDiff} (block {firstDiff / codec.BlockBytes}, byte {firstDiff % codec.BlockBytes}): ours {(firstDiff >= 0 ? actual[firstDiff] : 0):x2}, ggml {(firstDiff >= 0 ? expected[firstDiff] : 0):x2}");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Dequantized_floats_match_ggml_bitwise(string @case, string type, bool imatrix)
    {
        var e = Entry(@case, type, imatrix);
        var codec = CodecRegistry.Get(type);
        byte[] encoded = LegacyGolden.Bytes(e.File);
        float[] expected = LegacyGolden.Floats(e.DequantFile);
        var actual = new float[e.Rows * e.Cols];

        codec.DequantizeRows(encoded, actual, e.Cols);

        for (int i = 0; i < actual.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(actual[i]) == BitConverter.SingleToInt32Bits(expected[i]),
                $"{e}: value {i}: ours {actual[i]:R}, ggml {expected[i]:R}");
    }
}
