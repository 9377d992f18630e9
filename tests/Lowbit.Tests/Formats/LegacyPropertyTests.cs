using FsCheck.Xunit;
using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>Format-level properties of the legacy codecs: error bounds, exact values, zeros, metadata, input checks.</summary>
public sealed class LegacyPropertyTests
{
    private const float Fp16RelStep = 1f / 2048; // relative rounding bound of an fp16 normal number

    private static float[] RoundTrip(TensorCodec codec, float[] values, int cols, float[]? importance = null)
    {
        var bytes = new byte[codec.RowBytes(cols) * (values.Length / cols)];
        codec.QuantizeRows(values, bytes, cols, importance ?? []);
        var back = new float[values.Length];
        codec.DequantizeRows(bytes, back, cols);
        return back;
    }

    /// <summary>Gaussian values with a seed-dependent scale in [0.05, 50] (keeps fp16 scales normal).</summary>
    private static float[] ScaledGaussian(int seed, int n)
    {
        float sigma = 0.05f * MathF.Pow(1000f, (float)new Random(seed).NextDouble());
        return LegacyKernelTests.Gaussian(n, seed, sigma);
    }

    [Property(MaxTest = 30)]
    public void Q8_0_error_is_at_most_half_a_step(int seed)
    {
        float[] x = ScaledGaussian(seed, 256);
        float[] y = RoundTrip(CodecRegistry.Get("q8_0"), x, 256);
        for (int b = 0; b < 8; b++)
        {
            float d = MaxAbs(x.AsSpan(b * 32, 32)) / 127;
            float bound = d * (0.5f + 127 * Fp16RelStep) * (1 + 1e-5f);
            for (int j = b * 32; j < b * 32 + 32; j++)
                Assert.True(MathF.Abs(x[j] - y[j]) <= bound, $"value {j}: {x[j]} -> {y[j]}, bound {bound}");
        }
    }

    [Property(MaxTest = 30)]
    public void Symmetric_4_and_5_bit_error_is_at_most_one_step(int seed)
    {
        foreach (var (name, half) in new[] { ("q4_0", 8), ("q5_0", 16) })
        {
            float[] x = ScaledGaussian(seed, 256);
            float[] y = RoundTrip(CodecRegistry.Get(name), x, 256);
            for (int b = 0; b < 8; b++)
            {
                // d = |max|/half; only the clamped top level (+half → half−1) costs a full step.
                float d = MaxAbs(x.AsSpan(b * 32, 32)) / half;
                float bound = d * (1 + half * Fp16RelStep) * (1 + 1e-5f);
                for (int j = b * 32; j < b * 32 + 32; j++)
                    Assert.True(MathF.Abs(x[j] - y[j]) <= bound, $"{name} value {j}: {x[j]} -> {y[j]}, bound {bound}");
            }
        }
    }

    [Property(MaxTest = 30)]
    public void Affine_4_and_5_bit_error_is_at_most_half_a_step(int seed)
    {
        foreach (var (name, top) in new[] { ("q4_1", 15), ("q5_1", 31) })
        {
            float[] x = ScaledGaussian(seed, 256);
            float[] y = RoundTrip(CodecRegistry.Get(name), x, 256);
            for (int b = 0; b < 8; b++)
            {
                var block = x.AsSpan(b * 32, 32);
                float min = float.MaxValue, max = float.MinValue;
                foreach (float v in block) { min = MathF.Min(min, v); max = MathF.Max(max, v); }
                float d = (max - min) / top;
                float bound = (d * (0.5f + top * Fp16RelStep) + MathF.Abs(min) * Fp16RelStep) * (1 + 1e-5f);
                for (int j = b * 32; j < b * 32 + 32; j++)
                    Assert.True(MathF.Abs(x[j] - y[j]) <= bound, $"{name} value {j}: {x[j]} -> {y[j]}, bound {bound}");
            }
        }
    }

    [Property(MaxTest = 20)]
    public void Iq4_signal_to_noise_on_gaussian_data_is_at_least_20_dB(int seed)
    {
        foreach (var name in new[] { "iq4_nl", "iq4_xs" })
        {
            float[] x = ScaledGaussian(seed, 1024);
            float[] y = RoundTrip(CodecRegistry.Get(name), x, 1024);
            double signal = 0, noise = 0;
            for (int i = 0; i < x.Length; i++) { signal += (double)x[i] * x[i]; noise += (double)(x[i] - y[i]) * (x[i] - y[i]); }
            double sqnr = 10 * Math.Log10(signal / noise);
            Assert.True(sqnr >= 20, $"{name}: SQNR {sqnr:F2} dB");
        }
    }

    /// <summary>
    /// Values k·2^e with integer levels k in the format's range, each block holding the level that
    /// fixes its scale (−8 for Q4_0 so d = max/−8 = 2^e; ±127 for Q8_0): scale, its inverse, the
    /// products and the fp16 scale are all exact, so the round trip is the identity.
    /// </summary>
    [Theory]
    [InlineData("q4_0", -8, 7, -8)]
    [InlineData("q5_0", -16, 15, -16)]
    [InlineData("q8_0", -127, 127, 127)]
    public void Symmetric_grid_values_round_trip_exactly(string name, int lo, int hi, int anchor)
    {
        var rng = new Random(name.Length * 7919 + lo);
        foreach (int e in new[] { -10, -3, 0, 4 })
            foreach (int sign in new[] { 1, -1 })
            {
                float step = MathF.ScaleB(1f, e);
                var x = new float[128];
                for (int i = 0; i < x.Length; i++) x[i] = sign * rng.Next(lo, hi + 1) * step;
                for (int b = 0; b < 4; b++) x[b * 32 + rng.Next(32)] = sign * anchor * step;
                Assert.Equal(x, RoundTrip(CodecRegistry.Get(name), x, 128));
            }
    }

    /// <summary>Values min + k·2^e with the block holding both k = 0 and k = top: d = 2^e and min are exact.</summary>
    [Theory]
    [InlineData("q4_1", 15)]
    [InlineData("q5_1", 31)]
    public void Affine_grid_values_round_trip_exactly(string name, int top)
    {
        var rng = new Random(top);
        foreach (int e in new[] { -6, -2, 0, 3 })
        {
            float step = MathF.ScaleB(1f, e);
            var x = new float[128];
            for (int b = 0; b < 4; b++)
            {
                int m0 = rng.Next(-64, 65);
                for (int j = 0; j < 32; j++) x[b * 32 + j] = (m0 + rng.Next(0, top + 1)) * step;
                int lowAt = rng.Next(16), highAt = 16 + rng.Next(16);
                x[b * 32 + lowAt] = m0 * step;
                x[b * 32 + highAt] = (m0 + top) * step;
            }
            Assert.Equal(x, RoundTrip(CodecRegistry.Get(name), x, 128));
        }
    }

    /// <summary>
    /// Table values 2^e·kvalues[i] with a −127 in every 32-value group: the exact fit maximizes the
    /// search's criterion, and its scale 2^e (IQ4_XS: d = −2^(e−5), group scale −32) is exact in fp16.
    /// </summary>
    [Theory]
    [InlineData("iq4_nl")]
    [InlineData("iq4_xs")]
    public void Iq4_table_values_round_trip_exactly(string name)
    {
        ReadOnlySpan<sbyte> table = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
        var rng = new Random(name.Length);
        foreach (int e in new[] { -4, 0, 5 })
        {
            float step = MathF.ScaleB(1f, e);
            var x = new float[512];
            for (int i = 0; i < x.Length; i++) x[i] = table[rng.Next(16)] * step;
            for (int g = 0; g < 16; g++) x[g * 32 + rng.Next(32)] = -127 * step;
            Assert.Equal(x, RoundTrip(CodecRegistry.Get(name), x, 512));
        }
    }

    public static TheoryData<string> AllLegacy() => ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "iq4_nl", "iq4_xs"];

    [Theory]
    [MemberData(nameof(AllLegacy))]
    public void Zeros_stay_zeros_with_and_without_importance(string name)
    {
        var codec = CodecRegistry.Get(name);
        var zeros = new float[512];
        var ones = Enumerable.Repeat(1f, 512).ToArray();
        Assert.All(RoundTrip(codec, zeros, 512), v => Assert.Equal(0f, v));
        Assert.All(RoundTrip(codec, zeros, 512, ones), v => Assert.Equal(0f, v));
    }

    [Theory]
    [InlineData("q4_0", GgmlType.Q4_0, 32, 18, 4.5, true)]
    [InlineData("q4_1", GgmlType.Q4_1, 32, 20, 5.0, true)]
    [InlineData("q5_0", GgmlType.Q5_0, 32, 22, 5.5, true)]
    [InlineData("q5_1", GgmlType.Q5_1, 32, 24, 6.0, true)]
    [InlineData("q8_0", GgmlType.Q8_0, 32, 34, 8.5, false)]
    [InlineData("q8_1", GgmlType.Q8_1, 32, 36, 9.0, false)]
    [InlineData("iq4_nl", GgmlType.IQ4_NL, 32, 18, 4.5, true)]
    [InlineData("iq4_xs", GgmlType.IQ4_XS, 256, 136, 4.25, true)]
    public void Codec_is_registered_with_ggml_block_geometry(string name, GgmlType type, int blockSize, int blockBytes, double bpw, bool usesImportance)
    {
        var codec = CodecRegistry.Get(name);
        Assert.Same(codec, CodecRegistry.Get(type));
        Assert.Equal(name, codec.Name);
        Assert.Equal(blockSize, codec.BlockSize);
        Assert.Equal(blockBytes, codec.BlockBytes);
        Assert.Equal(bpw, codec.BitsPerWeight);
        Assert.Equal(usesImportance, codec.UsesImportance);
        Assert.False(codec.IsFloat);
    }

    [Fact]
    public void Integer_dot_activation_formats_follow_ggml()
    {
        Assert.Equal("q8_0", CodecRegistry.Get("q4_0").VecDotCodec?.Name);
        Assert.Equal("q8_1", CodecRegistry.Get("q4_1").VecDotCodec?.Name);
        Assert.Equal("q8_0", CodecRegistry.Get("q5_0").VecDotCodec?.Name);
        Assert.Equal("q8_1", CodecRegistry.Get("q5_1").VecDotCodec?.Name);
        Assert.Equal("q8_0", CodecRegistry.Get("q8_0").VecDotCodec?.Name);
        Assert.Equal("q8_0", CodecRegistry.Get("iq4_nl").VecDotCodec?.Name);
        Assert.Null(CodecRegistry.Get("iq4_xs").VecDotCodec);
    }

    [Theory]
    [MemberData(nameof(AllLegacy))]
    public void Bad_shapes_are_rejected_with_specific_errors(string name)
    {
        var codec = CodecRegistry.Get(name);
        int cols = codec.BlockSize * 2;
        var src = new float[cols];
        var dst = new byte[codec.RowBytes(cols)];
        Assert.Throws<LowbitException>(() => codec.QuantizeRows(src, dst, cols, new float[cols - 1]));
        Assert.Throws<ArgumentException>(() => codec.QuantizeRows(src, dst, cols + 1, []));
        Assert.Throws<ArgumentException>(() => codec.QuantizeRows(src, dst.AsSpan(0, dst.Length - 1), cols, []));
        Assert.Throws<ArgumentException>(() => codec.DequantizeRows(dst.AsSpan(0, dst.Length - 1), src, cols));
    }

    private static float MaxAbs(ReadOnlySpan<float> v)
    {
        float m = 0;
        foreach (float f in v) m = MathF.Max(m, MathF.Abs(f));
        return m;
    }
}
