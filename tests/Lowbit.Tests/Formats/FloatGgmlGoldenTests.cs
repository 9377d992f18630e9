using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>
/// Byte-exact agreement with ggml (tests/data/ggml-golden) for the float-family GGUF types:
/// quantized bytes, dequantized values, and the fused dot against the golden dequantization.
/// </summary>
public sealed class FloatGgmlGoldenTests
{
    public static TheoryData<string> F16Cases => FloatGolden.CaseNames("f16");
    public static TheoryData<string> BF16Cases => FloatGolden.CaseNames("bf16");
    public static TheoryData<string> MxFp4Cases => FloatGolden.CaseNames("mxfp4");
    public static TheoryData<string> NvFp4Cases => FloatGolden.CaseNames("nvfp4");

    [Theory, MemberData(nameof(F16Cases))]
    public void F16_matches_ggml(string caseName) => AssertMatchesGgml("f16", caseName);

    [Theory, MemberData(nameof(BF16Cases))]
    public void BF16_matches_ggml(string caseName) => AssertMatchesGgml("bf16", caseName);

    [Theory, MemberData(nameof(MxFp4Cases))]
    public void MxFp4_matches_ggml_including_imatrix_cases(string caseName) => AssertMatchesGgml("mxfp4", caseName);

    [Theory, MemberData(nameof(NvFp4Cases))]
    public void NvFp4_matches_ggml_including_imatrix_cases(string caseName) => AssertMatchesGgml("nvfp4", caseName);

    [Fact]
    public void Float_ggml_types_are_registered_by_name_and_id()
    {
        Assert.IsType<MxFp4Codec>(CodecRegistry.Get(GgmlType.MXFP4));
        Assert.IsType<NvFp4Codec>(CodecRegistry.Get(GgmlType.NVFP4));
        Assert.Same(CodecRegistry.Get("mxfp4"), CodecRegistry.Get(GgmlType.MXFP4));
        Assert.Same(CodecRegistry.Get("nvfp4"), CodecRegistry.Get(GgmlType.NVFP4));
        Assert.Equal(4.25, CodecRegistry.Get("mxfp4").BitsPerWeight);
        Assert.Equal(4.5, CodecRegistry.Get("nvfp4").BitsPerWeight);
    }

    private static void AssertMatchesGgml(string type, string caseName)
    {
        var c = FloatGolden.Get(type, caseName);
        var codec = CodecRegistry.Get(type);
        Assert.Equal(c.Bytes.Length, codec.TensorBytes(c.Rows, c.Cols));

        var bytes = new byte[c.Bytes.Length];
        codec.QuantizeRows(c.Input, bytes, c.Cols, c.WithImatrix ? c.Imatrix : default);
        FloatGolden.AssertBytesEqual(c.Bytes, bytes);

        var deq = new float[c.Input.Length];
        codec.DequantizeRows(c.Bytes, deq, c.Cols);
        FloatGolden.AssertBitsEqual(c.Dequant, deq);

        // Fused dot against the golden dequantization, row by row.
        var rng = new Random(1234);
        var x = new float[c.Cols];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        long rowBytes = codec.RowBytes(c.Cols);
        for (int r = 0; r < c.Rows; r++)
        {
            double expected = 0, mag = 0;
            for (int i = 0; i < c.Cols; i++)
            {
                expected += (double)c.Dequant[r * c.Cols + i] * x[i];
                mag += Math.Abs((double)c.Dequant[r * c.Cols + i] * x[i]);
            }
            float got = codec.DotRow(c.Bytes.AsSpan((int)(r * rowBytes), (int)rowBytes), x);
            Assert.True(Math.Abs(got - expected) <= 1e-5 * mag + 1e-30, $"row {r}: dot {got} vs {expected}");
        }
    }
}
