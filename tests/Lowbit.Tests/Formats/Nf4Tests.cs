using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>NF4 (bitsandbytes) with and without double quantization of the block absmax.</summary>
public sealed class Nf4Tests
{
    private static float[] Gaussian(int n, int seed, float sigma)
    {
        var rng = new Random(seed);
        var w = new float[n];
        for (int i = 0; i < n; i++)
            w[i] = (float)(sigma * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return w;
    }

    [Fact]
    public void Levels_are_bitsandbytes_nf4_and_the_tree_picks_the_nearest_level()
    {
        var lv = Nf4Codec.Levels;
        Assert.Equal(16, lv.Length);
        Assert.Equal(-1f, lv[0]);
        Assert.Equal(0f, lv[7]);
        Assert.Equal(1f, lv[15]);
        for (int i = 0; i < 15; i++) Assert.True(lv[i] < lv[i + 1]);
        for (int c = 0; c < 16; c++) Assert.Equal(c, Nf4Codec.QuantizeNf4(lv[c]));
        var rng = new Random(2);
        for (int t = 0; t < 2000; t++)
        {
            float x = (float)(rng.NextDouble() * 2 - 1);
            int best = 0;
            for (int c = 1; c < 16; c++) if (MathF.Abs(lv[c] - x) < MathF.Abs(lv[best] - x)) best = c;
            Assert.Equal(best, Nf4Codec.QuantizeNf4(x));
        }
        Assert.Equal(0, Nf4Codec.QuantizeNf4(float.NaN)); // bitsandbytes' tree: every comparison false
    }

    [Fact]
    public void Dynamic_map_matches_bitsandbytes_construction()
    {
        var m = Nf4Codec.DynamicMap;
        Assert.Equal(256, m.Length);
        for (int i = 0; i < 255; i++) Assert.True(m[i] <= m[i + 1]);
        Assert.Equal(1f, m[255]);
        Assert.Equal(127, m.ToArray().Count(v => v < 0));
        Assert.Equal(0.99296875f, m[254], 6);       // (0.9859375 + 1) / 2, top of linspace(0.1, 1, 65)
        Assert.Equal(-0.99296875f, m[0], 6);
        Assert.Equal(0.55e-6f, m.ToArray().Where(v => v > 0).Min(), 9); // 1e-6 · (0.1 + 1) / 2
        // Quantizer: every entry maps to itself, and arbitrary values to a nearest entry.
        for (int c = 0; c < 256; c++) Assert.Equal(c, Nf4Codec.QuantizeDynamic(m[c]));
        var rng = new Random(12);
        for (int t = 0; t < 3000; t++)
        {
            float x = (float)(rng.NextDouble() * 2 - 1) * (t % 3 == 0 ? 0.001f : 1f);
            float got = MathF.Abs(m[Nf4Codec.QuantizeDynamic(x)] - x);
            float best = float.MaxValue;
            foreach (float v in m) best = MathF.Min(best, MathF.Abs(v - x));
            Assert.True(got <= best * 1.000001f + 1e-12f, $"x {x}: error {got} vs nearest {best}");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Round_trip_error_is_bounded_by_half_the_widest_level_gap(bool dq)
    {
        var codec = (Nf4Codec)CodecRegistry.Get(dq ? "nf4" : "nf4-nodq");
        int rows = 24, cols = 768; // 288 blocks: two second-level blocks for "nf4"
        var w = Gaussian(rows * cols, 8, 0.02f);
        var enc = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeTensor(w, enc, rows, cols, default);
        var deq = new float[w.Length];
        codec.DequantizeTensorRows(enc, rows, cols, 0, rows, deq);
        for (int k = 0; k < rows * cols / 64; k++)
        {
            float amax = 0;
            for (int i = k * 64; i < k * 64 + 64; i++) amax = MathF.Max(amax, MathF.Abs(w[i]));
            float decoded = codec.BlockAbsmax(enc, rows, cols, k);
            if (!dq) Assert.Equal(amax, decoded);
            else Assert.True(MathF.Abs(decoded - amax) <= 0.008f * 0.02f * 4, $"block {k}: absmax {amax} decoded {decoded}");
            float bound = 0.5f * (1 - 0.6961928009986877f) * amax + MathF.Abs(decoded - amax);
            for (int i = k * 64; i < k * 64 + 64; i++)
                Assert.True(MathF.Abs(w[i] - deq[i]) <= bound * 1.0001f, $"value {i}: {w[i]} -> {deq[i]}");
        }
        Assert.Equal(dq ? 4 + 8.0 / 64 + 32.0 / (64 * 256) : 4.5, codec.BitsPerWeight, 12);
        Assert.Equal(dq ? 4 + (4 + 8 + 288) * 8.0 / (rows * cols) : 4.5, codec.EffectiveBitsPerWeight(rows, cols), 9);
    }

    [Fact]
    public void Values_on_the_level_grid_round_trip_exactly_without_double_quant()
    {
        var codec = new Nf4Codec(doubleQuant: false);
        var rng = new Random(5);
        var w = new float[2 * 128];
        for (int k = 0; k < 4; k++)
        {
            float a = 0.01f * (k + 1);
            for (int j = 0; j < 64; j++) w[k * 64 + j] = Nf4Codec.Levels[j == 0 ? 15 : j == 1 ? 0 : rng.Next(16)] * a;
        }
        var enc = new byte[codec.TensorBytes(2, 128)];
        codec.QuantizeRows(w, enc, 128, default);
        var deq = new float[w.Length];
        codec.DequantizeRows(enc, deq, 128);
        Assert.Equal(w, deq);
        // Packing: first value of a pair in the high nibble (value 0 = level 15, value 1 = level 0).
        Assert.Equal(0xF0, enc[codec.HeaderBytes(2, 128)]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Dot_paths_agree_and_row_ranges_match_whole_tensor_decoding(bool dq)
    {
        var codec = new Nf4Codec(dq);
        int rows = 6, cols = 256;
        var w = Gaussian(rows * cols, 9, 1f);
        var x = Gaussian(cols, 10, 1f);
        var enc = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeTensor(w, enc, rows, cols, default);
        var deq = new float[w.Length];
        codec.DequantizeRows(enc, deq, cols);
        var part = new float[3 * cols];
        codec.DequantizeTensorRows(enc, rows, cols, 2, 3, part);
        Assert.Equal(deq.AsSpan(2 * cols, 3 * cols).ToArray(), part);
        for (int r = 0; r < rows; r++)
        {
            double expected = 0, mag = 0;
            for (int c = 0; c < cols; c++) { expected += (double)deq[r * cols + c] * x[c]; mag += Math.Abs((double)deq[r * cols + c] * x[c]); }
            float fused = codec.DotTensorRow(enc, rows, cols, r, x);
            float scalar = codec.DotTensorRowScalar(enc, rows, cols, r, x);
            Assert.True(Math.Abs(fused - expected) <= 1e-5 * mag, $"row {r}: {fused} vs {expected}");
            Assert.True(Math.Abs(scalar - fused) <= 1e-5 * mag);
        }
        // One-row DotRow = one-row tensor.
        var one = new byte[codec.TensorBytes(1, cols)];
        codec.QuantizeRows(w.AsSpan(0, cols), one, cols, default);
        Assert.Equal(codec.DotTensorRow(one, 1, cols, 0, x), codec.DotRow(one, x));
    }

    [Fact]
    public void Zero_tensor_decodes_to_zeros_and_quantization_is_deterministic()
    {
        var codec = new Nf4Codec(true);
        var w = new float[4 * 64];
        var enc = new byte[codec.TensorBytes(4, 64)];
        codec.QuantizeTensor(w, enc, 4, 64, default);
        var deq = new float[w.Length];
        codec.DequantizeRows(enc, deq, 64);
        Assert.All(deq, v => Assert.Equal(0f, MathF.Abs(v)));
        var g = Gaussian(4 * 64, 3, 1f);
        var a = new byte[enc.Length];
        var b = new byte[enc.Length];
        codec.QuantizeTensor(g, a, 4, 64, default);
        codec.QuantizeTensor(g, b, 4, 64, default);
        Assert.Equal(a, b);
    }
}
