using System.Runtime.InteropServices;
using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>F16 / BF16 vector paths against their scalar references, specials and exact values.</summary>
public sealed class FloatHalfTests
{
    private static float[] SpecialAndRandomValues(int seed)
    {
        var list = new List<float>
        {
            0f, -0f, 1f, -1f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, -float.NaN,
            BitConverter.UInt32BitsToSingle(0x7FA00001), // signalling-pattern NaN with payload
            float.Epsilon, -float.Epsilon, 1e-40f, 6e-8f, 5.96e-8f, 2.98e-8f, 3e-8f, 6.1e-5f, 6.09e-5f,
            65504f, 65519.99f, 65520f, 1e6f, -1e6f, float.MaxValue, 1.00048828125f, 1.000244140625f,
            1.0009765625f, 1.0029296875f, 1.00390625f, 1.01171875f, 3.0e38f,
        };
        var rng = new Random(seed);
        for (int i = 0; i < 4000; i++) list.Add(BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32)));
        for (int i = 0; i < 1000; i++) list.Add((float)(rng.NextDouble() * 2 - 1) * MathF.ScaleB(1, rng.Next(-30, 20)));
        while (list.Count % 64 != 3) list.Add(0.5f); // odd tail for the vector loops
        return list.ToArray();
    }

    [Fact]
    public void F16_vector_conversions_equal_scalar_half_casts()
    {
        var codec = new F16Codec();
        var x = SpecialAndRandomValues(1);
        var vec = new byte[2 * x.Length];
        var sca = new byte[2 * x.Length];
        codec.QuantizeRows(x, vec, x.Length, default);
        F16Codec.QuantizeScalar(x, sca);
        var vh = MemoryMarshal.Cast<byte, ushort>(vec);
        var sh = MemoryMarshal.Cast<byte, ushort>(sca);
        for (int i = 0; i < x.Length; i++)
        {
            bool nan = float.IsNaN(x[i]);
            if (nan) Assert.True(Half.IsNaN(BitConverter.UInt16BitsToHalf(vh[i])), $"{i}");
            else Assert.True(sh[i] == vh[i], $"value {x[i]:R}: vector 0x{vh[i]:x4} scalar 0x{sh[i]:x4}");
        }
        var dv = new float[x.Length];
        var ds = new float[x.Length];
        codec.DequantizeRows(sca, dv, x.Length);
        F16Codec.DequantizeScalar(sca, ds);
        for (int i = 0; i < x.Length; i++)
            Assert.True(float.IsNaN(ds[i]) ? float.IsNaN(dv[i]) : ds[i].Equals(dv[i]) && float.IsNegative(ds[i]) == float.IsNegative(dv[i]));
    }

    [Fact]
    public void F16_rounds_to_nearest_even_and_handles_specials()
    {
        var codec = new F16Codec();
        float[] x = [1.00048828125f, 1.00146484375f, 65520f, 65519f, 2.98023224e-8f, 5.9604645e-8f, -0f, float.NegativeInfinity, 1e-10f];
        ushort[] expected = [0x3C00, 0x3C02, 0x7C00, 0x7BFF, 0x0000, 0x0001, 0x8000, 0xFC00, 0x0000];
        var enc = new byte[2 * x.Length];
        codec.QuantizeRows(x, enc, x.Length, default);
        Assert.Equal(expected, MemoryMarshal.Cast<byte, ushort>(enc).ToArray());
        // Every finite half value round-trips exactly.
        var all = new float[65536];
        for (int h = 0; h < 65536; h++) all[h] = (float)BitConverter.UInt16BitsToHalf((ushort)h);
        var back = new byte[2 * all.Length];
        codec.QuantizeRows(all, back, all.Length, default);
        var bh = MemoryMarshal.Cast<byte, ushort>(back);
        for (int h = 0; h < 65536; h++)
            if (!float.IsNaN(all[h])) Assert.Equal((ushort)h, bh[h]);
    }

    [Fact]
    public void BF16_vector_conversions_equal_scalar_reference()
    {
        var x = SpecialAndRandomValues(2);
        var vec = new ushort[x.Length];
        BF16Codec.Encode(x, vec);
        for (int i = 0; i < x.Length; i++) Assert.True(BF16Codec.FromFloat(x[i]) == vec[i], $"value {x[i]:R}");
        var back = new float[x.Length];
        BF16Codec.Decode(vec, back);
        for (int i = 0; i < x.Length; i++)
            Assert.Equal(BitConverter.SingleToUInt32Bits(BF16Codec.ToFloat(vec[i])), BitConverter.SingleToUInt32Bits(back[i]));
    }

    [Fact]
    public void BF16_rounds_to_nearest_even_keeps_NaN_quiet_and_round_trips_all_codes()
    {
        Assert.Equal(0x3F80, BF16Codec.FromFloat(BitConverter.UInt32BitsToSingle(0x3F808000))); // tie → even
        Assert.Equal(0x3F82, BF16Codec.FromFloat(BitConverter.UInt32BitsToSingle(0x3F818000))); // tie → even (up)
        Assert.Equal(0x3F81, BF16Codec.FromFloat(BitConverter.UInt32BitsToSingle(0x3F808001)));
        Assert.Equal(0x7FE0, BF16Codec.FromFloat(BitConverter.UInt32BitsToSingle(0x7FA00001))); // payload kept, quiet bit set
        Assert.True((BF16Codec.FromFloat(BitConverter.UInt32BitsToSingle(0x7F800001)) & 0x7FC0) == 0x7FC0); // quieted
        Assert.Equal(0x7F80, BF16Codec.FromFloat(float.PositiveInfinity));
        var codes = new ushort[65536];
        for (int c = 0; c < 65536; c++) codes[c] = (ushort)c;
        var f = new float[65536];
        BF16Codec.Decode(codes, f);
        var back = new ushort[65536];
        BF16Codec.Encode(f, back);
        for (int c = 0; c < 65536; c++)
            if (!float.IsNaN(f[c])) Assert.Equal((ushort)c, back[c]);
    }

    [Theory]
    [InlineData("f16")]
    [InlineData("bf16")]
    public void Fused_dot_agrees_with_dequantize_then_dot(string name)
    {
        var codec = CodecRegistry.Get(name);
        var rng = new Random(5);
        foreach (int n in new[] { 1, 7, 16, 33, 300, 1024 })
        {
            var w = new float[n];
            var x = new float[n];
            for (int i = 0; i < n; i++) { w[i] = (float)(rng.NextDouble() * 2 - 1); x[i] = (float)(rng.NextDouble() * 2 - 1); }
            var enc = new byte[2 * n];
            codec.QuantizeRows(w, enc, n, default);
            var deq = new float[n];
            codec.DequantizeRows(enc, deq, n);
            double expected = 0, mag = 0;
            for (int i = 0; i < n; i++) { expected += (double)deq[i] * x[i]; mag += Math.Abs((double)deq[i] * x[i]); }
            Assert.True(Math.Abs(codec.DotRow(enc, x) - expected) <= 1e-5 * mag + 1e-30, $"n={n}");
        }
    }
}
