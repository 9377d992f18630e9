using System.Buffers.Binary;
using FsCheck;
using FsCheck.Fluent;
using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>Behaviour of the k-quant codecs beyond the golden vectors: accuracy, special rows, input checks.</summary>
public sealed class KQuantPropertyTests
{
    public static TheoryData<string, double> SqnrFloors() => new()
    {
        // ggml's measured SQNR on N(0,1) (golden README) minus a small margin for the different sample
        { "q2_K", 10.0 }, { "q3_K", 15.8 }, { "q4_K", 22.3 }, { "q5_K", 28.0 }, { "q6_K", 34.3 },
    };

    [Theory]
    [MemberData(nameof(SqnrFloors))]
    public void Gaussian_round_trip_reaches_ggml_accuracy(string type, double floorDb)
    {
        var codec = KQuantTestData.Codec(type);
        var x = KQuantTestData.Gaussian(8 * 512, 3);
        var y = KQuantTestData.Dequantize(codec, KQuantTestData.Quantize(codec, x, 512), x.Length, 512);
        Assert.True(KQuantTestData.Sqnr(x, y) >= floorDb, $"{type}: {KQuantTestData.Sqnr(x, y):F2} dB < {floorDb}");

        var importance = KQuantTestData.Uniform(512, 4, 0.5f, 2f);
        var yw = KQuantTestData.Dequantize(codec, KQuantTestData.Quantize(codec, x, 512, importance), x.Length, 512);
        Assert.True(KQuantTestData.Sqnr(x, yw) >= floorDb - 0.5, $"{type} imatrix: {KQuantTestData.Sqnr(x, yw):F2} dB");
    }

    [Theory]
    [MemberData(nameof(Codecs))]
    public void Importance_lowers_the_weighted_error(string type)
    {
        // Columns with 100× importance must come out more accurate than without the imatrix.
        var codec = KQuantTestData.Codec(type);
        var x = KQuantTestData.Gaussian(16 * 256, 8);
        var importance = new float[256];
        for (int i = 0; i < 256; i++) importance[i] = i % 8 == 0 ? 100f : 1f;
        var plain = KQuantTestData.Dequantize(codec, KQuantTestData.Quantize(codec, x, 256), x.Length, 256);
        var weighted = KQuantTestData.Dequantize(codec, KQuantTestData.Quantize(codec, x, 256, importance), x.Length, 256);
        double ePlain = 0, eWeighted = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double w = importance[i % 256];
            ePlain += w * (x[i] - plain[i]) * (x[i] - plain[i]);
            eWeighted += w * (x[i] - weighted[i]) * (x[i] - weighted[i]);
        }
        Assert.True(eWeighted < ePlain, $"{type}: weighted error {eWeighted} ≥ plain {ePlain}");
    }

    [FsCheck.Xunit.Property(MaxTest = 40)]
    public bool Zero_rows_stay_zero(int codecIndex, bool withImportance)
    {
        var codec = KQuantTestData.Codec(KQuantTestData.WeightCodecs[Math.Abs(codecIndex % 5)]);
        var x = new float[512];
        var importance = withImportance ? KQuantTestData.Uniform(512, codecIndex, 0.1f, 2f) : [];
        var y = KQuantTestData.Dequantize(codec, KQuantTestData.Quantize(codec, x, 512, importance), 512, 512);
        return y.All(v => v == 0);
    }

    [FsCheck.Xunit.Property(MaxTest = 60)]
    public Property Constant_rows_decode_to_one_close_value(int codecIndex, int mantissa, bool withImportance)
    {
        // |c| in [0.05, 2): far smaller constants hit the fp16 subnormal range of Q6_K's super-block scale (d ≈ |c|/4096),
        // where ggml's own result is off by several percent.
        float c = (mantissa < 0 ? -1 : 1) * (0.05f + Math.Abs(mantissa % 1950) / 1000f);
        var codec = KQuantTestData.Codec(KQuantTestData.WeightCodecs[Math.Abs(codecIndex % 5)]);
        var x = Enumerable.Repeat(c, 256).ToArray();
        var importance = withImportance ? Enumerable.Repeat(1f, 256).ToArray() : [];
        var y = KQuantTestData.Dequantize(codec, KQuantTestData.Quantize(codec, x, 256, importance), 256, 256);
        bool allEqual = y.All(v => v == y[0]);
        bool close = Math.Abs(y[0] - c) <= 0.02 * Math.Abs(c);
        return (allEqual && close).Label($"{codec.Name} c={c} → {y[0]}, all equal: {allEqual}");
    }

    [Fact]
    public void Importance_of_the_wrong_length_is_rejected()
    {
        var codec = KQuantTestData.Codec("q4_K");
        var ex = Assert.Throws<LowbitException>(() => codec.QuantizeRows(new float[512], new byte[288], 512, new float[256]));
        Assert.Contains("importance", ex.Message);
    }

    [Fact]
    public void Codecs_are_registered_with_ggml_names_and_sizes()
    {
        var expected = new (string Name, GgmlType Type, int Bytes)[]
        {
            ("q2_K", GgmlType.Q2_K, 84), ("q3_K", GgmlType.Q3_K, 110), ("q4_K", GgmlType.Q4_K, 144),
            ("q5_K", GgmlType.Q5_K, 176), ("q6_K", GgmlType.Q6_K, 210), ("q8_K", GgmlType.Q8_K, 292),
        };
        foreach (var (name, type, bytes) in expected)
        {
            var codec = CodecRegistry.Get(type);
            Assert.Equal(name, codec.Name);
            Assert.Same(codec, CodecRegistry.Get(name));
            Assert.Equal(256, codec.BlockSize);
            Assert.Equal(bytes, codec.BlockBytes);
            Assert.Equal(name != "q8_K", codec.UsesImportance);
        }
    }

    [Fact]
    public void Q8K_follows_ggml_reference_rules()
    {
        var q8 = CodecRegistry.Get("q8_K");
        var x = KQuantTestData.Gaussian(512, 17, 3f);
        x[300] = -20f; // the value of largest magnitude in block 1 is negative
        var enc = KQuantTestData.Quantize(q8, x, 512);
        for (int b = 0; b < 2; b++)
        {
            var block = enc.AsSpan(b * 292, 292);
            float d = BinaryPrimitives.ReadSingleLittleEndian(block);
            var xs = x.AsSpan(256 * b, 256);
            int arg = 0;
            for (int i = 1; i < 256; i++) if (Math.Abs(xs[i]) > Math.Abs(xs[arg])) arg = i;
            Assert.Equal(-127, (sbyte)block[4 + arg]); // the extreme value maps to −127 (scale −127/max)
            Assert.Equal(xs[arg] / -127f, d, 6);
            for (int g = 0; g < 16; g++)
            {
                int sum = 0;
                for (int i = 0; i < 16; i++) sum += (sbyte)block[4 + 16 * g + i];
                Assert.Equal(sum, BinaryPrimitives.ReadInt16LittleEndian(block.Slice(260 + 2 * g)));
            }
            for (int i = 0; i < 256; i++)
                Assert.InRange(xs[i] - d * (sbyte)block[4 + i], -Math.Abs(d) * 0.5001f, Math.Abs(d) * 0.5001f);
        }
        var zeros = KQuantTestData.Quantize(q8, new float[256], 256);
        Assert.All(zeros, b => Assert.Equal(0, b));
    }

    public static TheoryData<string> Codecs() => new(KQuantTestData.WeightCodecs);
}

/// <summary>The vectorized Q8_K activation quantizer writes exactly the scalar reference's bytes.</summary>
public sealed class Q8KQuantizeSimdTests
{
    [Fact]
    public void Simd_block_equals_scalar_block_on_random_and_edge_inputs()
    {
        var rng = new Random(5);
        var x = new float[256];
        var expected = new byte[292];
        var actual = new byte[292];
        for (int trial = 0; trial < 400; trial++)
        {
            int kind = trial % 8;
            for (int j = 0; j < 256; j++)
                x[j] = kind switch
                {
                    0 => 0f,                                                     // all zero
                    1 => (float)(rng.NextDouble() * 2 - 1) * 1e-30f,             // tiny
                    2 => rng.Next(-3, 4) * 0.5f,                                 // ties, repeated maxima of both signs
                    3 => j == 17 ? -5f : (float)(rng.NextDouble() * 2 - 1),     // negative unique maximum
                    4 => (float)(rng.NextDouble() * 2 - 1) * 1e4f,
                    5 => j % 3 == 0 ? -0f : (float)rng.NextDouble(),
                    6 => j == 200 ? float.PositiveInfinity : (float)rng.NextDouble(),
                    _ => (float)(rng.NextDouble() * 2 - 1),
                };
            if (trial == 7) x[3] = float.NaN;
            Array.Fill(expected, (byte)0xAA);
            Array.Fill(actual, (byte)0x55);
            Lowbit.Formats.Q8_KCodec.QuantizeBlock(x, expected);
            Lowbit.Formats.Q8_KCodec.QuantizeBlockSimd(x, actual);
            Assert.True(expected.AsSpan().SequenceEqual(actual), $"trial {trial} (kind {kind}) differs");
        }
    }
}
