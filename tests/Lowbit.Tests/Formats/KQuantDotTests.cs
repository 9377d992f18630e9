using System.Runtime.Intrinsics.X86;
using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>The fused dot kernels agree with dequantize-then-dot, and the SIMD paths with the scalar ones.</summary>
public sealed class KQuantDotTests
{
    private const int Cols = 1024;

    public static TheoryData<string> Codecs() => new(KQuantTestData.WeightCodecs);

    private static (byte[] Row, float[] Weights, float[] X) Setup(string name, int seed)
    {
        var codec = KQuantTestData.Codec(name);
        var w = KQuantTestData.Gaussian(Cols, seed, 0.05f);
        var x = KQuantTestData.Gaussian(Cols, seed + 1000);
        return (KQuantTestData.Quantize(codec, w, Cols), w, x);
    }

    /// <summary>Σ|a·b| in double: the scale against which float-rounding differences are judged.</summary>
    private static double AbsDot(float[] a, float[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += Math.Abs((double)a[i] * b[i]);
        return s;
    }

    private static double Dot(float[] a, float[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += (double)a[i] * b[i];
        return s;
    }

    [Theory]
    [MemberData(nameof(Codecs))]
    public void DotRow_matches_dot_of_dequantized_row(string name)
    {
        var codec = KQuantTestData.Codec(name);
        for (int seed = 1; seed <= 3; seed++)
        {
            var (row, _, x) = Setup(name, seed);
            var deq = KQuantTestData.Dequantize(codec, row, Cols, Cols);
            double expected = Dot(deq, x), scale = AbsDot(deq, x);
            Assert.InRange(codec.DotRow(row, x), expected - 1e-5 * scale, expected + 1e-5 * scale);
            Assert.InRange(KQuantDot.DotFloat(codec, row, x, useSimd: false), expected - 1e-5 * scale, expected + 1e-5 * scale);
        }
    }

    [Theory]
    [MemberData(nameof(Codecs))]
    public void Float_dot_SIMD_path_matches_scalar_path(string name)
    {
        if (!Avx2.IsSupported || !Fma.IsSupported) return; // nothing to compare on this machine
        var codec = KQuantTestData.Codec(name);
        var (row, _, x) = Setup(name, 7);
        var deq = KQuantTestData.Dequantize(codec, row, Cols, Cols);
        double scale = AbsDot(deq, x);
        float simd = KQuantDot.DotFloat(codec, row, x, useSimd: true);
        float scalar = KQuantDot.DotFloat(codec, row, x, useSimd: false);
        Assert.InRange(simd, scalar - 1e-5 * scale, scalar + 1e-5 * scale);
        Assert.InRange(codec.DotRow(row, x), scalar - 1e-5 * scale, scalar + 1e-5 * scale); // fused kernels (q4_K, q6_K)
    }

    [Theory]
    [MemberData(nameof(Codecs))]
    public void Q8K_dot_SIMD_path_is_bit_identical_to_scalar_path(string name)
    {
        if (!Avx2.IsSupported) return;
        var codec = KQuantTestData.Codec(name);
        var q8 = CodecRegistry.Get("q8_K");
        for (int seed = 1; seed <= 3; seed++)
        {
            var (row, _, x) = Setup(name, seed);
            var xq = KQuantTestData.Quantize(q8, x, Cols);
            int scalar = BitConverter.SingleToInt32Bits(KQuantDot.DotQ8K(codec, row, xq, useSimd: false));
            Assert.Equal(scalar, BitConverter.SingleToInt32Bits(KQuantDot.DotQ8K(codec, row, xq, useSimd: true)));
            Assert.Equal(scalar, BitConverter.SingleToInt32Bits(codec.DotRowQuantized(row, xq))); // fused kernels (q4_K, q6_K)
        }
    }

    [Theory]
    [MemberData(nameof(Codecs))]
    public void DotRowQuantized_matches_dot_of_both_dequantized(string name)
    {
        var codec = KQuantTestData.Codec(name);
        Assert.Same(CodecRegistry.Get("q8_K"), codec.VecDotCodec);
        var q8 = codec.VecDotCodec!;
        for (int seed = 1; seed <= 3; seed++)
        {
            var (row, _, x) = Setup(name, seed);
            var xq = KQuantTestData.Quantize(q8, x, Cols);
            var wd = KQuantTestData.Dequantize(codec, row, Cols, Cols);
            var xd = KQuantTestData.Dequantize(q8, xq, Cols, Cols);
            double expected = Dot(wd, xd), scale = AbsDot(wd, xd);
            Assert.InRange(codec.DotRowQuantized(row, xq), expected - 1e-5 * scale, expected + 1e-5 * scale);
            // and it approximates the float-activation dot within the int8 rounding of x
            double vsFloat = Dot(wd, x);
            Assert.InRange(codec.DotRowQuantized(row, xq), vsFloat - 0.02 * scale, vsFloat + 0.02 * scale);
        }
    }

    [Fact]
    public void Q8K_float_dot_matches_dequantized_dot()
    {
        var q8 = CodecRegistry.Get("q8_K");
        var a = KQuantTestData.Gaussian(Cols, 11);
        var x = KQuantTestData.Gaussian(Cols, 12);
        var row = KQuantTestData.Quantize(q8, a, Cols);
        var deq = KQuantTestData.Dequantize(q8, row, Cols, Cols);
        double expected = Dot(deq, x), scale = AbsDot(deq, x);
        Assert.InRange(q8.DotRow(row, x), expected - 1e-5 * scale, expected + 1e-5 * scale);
    }

    [Fact]
    public void Mismatched_activation_row_is_rejected()
    {
        var codec = KQuantTestData.Codec("q4_K");
        var (row, _, _) = Setup("q4_K", 1);
        Assert.Throws<ArgumentException>(() => codec.DotRowQuantized(row, new byte[292]));
        Assert.Throws<ArgumentException>(() => codec.DotRow(row, new float[256]));
    }
}
