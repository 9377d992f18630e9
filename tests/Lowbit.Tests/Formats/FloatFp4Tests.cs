using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>E2M1 element encoding, the raw "fp4_e2m1" codec, and the NVFP4 codecs' kernels.</summary>
public sealed class FloatFp4Tests
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
    public void E2M1_codes_round_trip_and_ties_go_to_the_even_code()
    {
        var v = E2M1.Values;
        for (int c = 0; c < 16; c++) Assert.Equal(c, E2M1.Encode(v[c]));
        for (int c = 0; c < 16; c++) Assert.Equal(2 * v[c], E2M1.Doubled[c]);
        for (int c = 0; c < 7; c++)
        {
            float mid = (v[c] + v[c + 1]) / 2;
            int even = (c & 1) == 0 ? c : c + 1;
            Assert.Equal(even, E2M1.Encode(mid));
            Assert.Equal(even | 8, E2M1.Encode(-mid));
            Assert.Equal(c, E2M1.Encode(MathF.BitDecrement(mid)));
            Assert.Equal(c + 1, E2M1.Encode(MathF.BitIncrement(mid)));
        }
        Assert.Equal(7, E2M1.Encode(6.5f));
        Assert.Equal(15, E2M1.Encode(-1e9f));
        Assert.Equal(7, E2M1.Encode(float.PositiveInfinity));
        Assert.Equal(0, E2M1.Encode(float.NaN));
    }

    [Fact]
    public void Ggml_best_index_picks_a_nearest_code_first_on_ties()
    {
        var rng = new Random(3);
        for (int t = 0; t < 2000; t++)
        {
            float d = MathF.ScaleB(1, rng.Next(-10, 4));
            float x = (float)(rng.NextDouble() * 30 - 15) * d;
            int got = E2M1.BestIndexGgml(x, d);
            float err = MathF.Abs(E2M1.Doubled[got] * d - x);
            for (int c = 0; c < 16; c++)
            {
                float e = MathF.Abs(E2M1.Doubled[c] * d - x);
                Assert.True(err <= e);
                if (e == err) { Assert.True(got <= c); break; }
            }
        }
    }

    [Fact]
    public void Vector_best_index_is_bit_identical_to_the_scalar_search()
    {
        if (!System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated) return;
        var rng = new Random(17);
        for (int t = 0; t < 20000; t++)
        {
            float d = t % 7 == 0 ? MathF.ScaleB(1, -140) * rng.Next(1, 9) : MathF.ScaleB(1 + rng.Next(8) / 8f, rng.Next(-20, 8));
            float x = t % 5 == 0
                ? E2M1.Doubled[rng.Next(16)] * d + (E2M1.Doubled[rng.Next(16)] * d - E2M1.Doubled[rng.Next(16)] * d) / 2 // midpoints: ties
                : (float)(rng.NextDouble() * 28 - 14) * d;
            var (lo, hi) = E2M1.ScaledLevels(d);
            Assert.Equal(E2M1.BestIndexGgml(x, d), E2M1.BestIndexGgml(x, lo, hi));
        }
        var (l0, h0) = E2M1.ScaledLevels(0.5f);
        Assert.Equal(E2M1.BestIndexGgml(float.NaN, 0.5f), E2M1.BestIndexGgml(float.NaN, l0, h0));
        Assert.Equal(E2M1.BestIndexGgml(-0f, 0.5f), E2M1.BestIndexGgml(-0f, l0, h0));
        Assert.Equal(E2M1.BestIndexGgml(1e30f, 0.5f), E2M1.BestIndexGgml(1e30f, l0, h0));
    }

    [Fact]
    public void Raw_fp4_codec_round_trips_representable_values_and_packs_low_nibble_first()
    {
        var codec = CodecRegistry.Get("fp4_e2m1");
        Assert.Equal(4.0, codec.BitsPerWeight);
        var w = new float[64];
        for (int i = 0; i < w.Length; i++) w[i] = E2M1.Values[(i * 7) % 16];
        var enc = new byte[codec.RowBytes(64)];
        codec.QuantizeRows(w, enc, 64, default);
        var deq = new float[64];
        codec.DequantizeRows(enc, deq, 64);
        Assert.Equal(w, deq);
        Assert.Equal(0x70, enc[0]); // value 0 = code 0 (low), value 1 = code 7 (high)
        var rnd = Gaussian(64, 4, 3f);
        codec.QuantizeRows(rnd, enc, 64, default);
        codec.DequantizeRows(enc, deq, 64);
        for (int i = 0; i < 64; i++)
        {
            float a = MathF.Abs(rnd[i]);
            float step = a < 2 ? 0.5f : a < 4 ? 1f : 2f;
            Assert.True(MathF.Abs(deq[i] - Math.Clamp(rnd[i], -6f, 6f)) <= step / 2, $"{rnd[i]} -> {deq[i]}");
        }
    }

    [Theory]
    [InlineData(16)]
    [InlineData(40)]
    [InlineData(512)]
    public void Raw_fp4_vector_dot_equals_scalar(int n)
    {
        var codec = new Fp4Codec();
        var rng = new Random(n);
        var row = new byte[n / 2];
        rng.NextBytes(row);
        var x = Gaussian(n, n + 1, 1f);
        double mag = 0;
        for (int i = 0; i < n; i++) mag += Math.Abs(x[i]) * 6;
        Assert.True(Math.Abs(codec.DotRow(row, x) - Fp4Codec.DotRowScalar(row, x)) <= 1e-5 * mag);
    }

    [Fact]
    public void NvFp4_vector_dot_equals_scalar_on_random_blocks()
    {
        var rng = new Random(8);
        int cols = 512;
        var row = new byte[cols / 64 * 36];
        rng.NextBytes(row);
        for (int b = 0; b < cols / 64; b++)
            for (int s = 0; s < 4; s++) row[b * 36 + s] = (byte)rng.Next(0x7F);
        var x = Gaussian(cols, 9, 1f);
        var deq = new float[cols];
        new NvFp4Codec().DequantizeRows(row, deq, cols);
        double expected = 0, mag = 0;
        for (int i = 0; i < cols; i++) { expected += (double)deq[i] * x[i]; mag += Math.Abs((double)deq[i] * x[i]); }
        Assert.True(Math.Abs(new NvFp4Codec().DotRow(row, x) - expected) <= 1e-5 * mag);
        Assert.True(Math.Abs(NvFp4Codec.DotRowScalar(row, x) - expected) <= 1e-5 * mag);
    }

    [Fact]
    public void NvFp4_ggml_reproduces_values_on_its_grid_exactly()
    {
        // Sub-block amax 6·s with s = 0.5 (UE4M3 0x30 halved → 0.25 per doubled step): every E2M1 value times s.
        var codec = new NvFp4Codec();
        var w = new float[64];
        for (int i = 0; i < 64; i++) w[i] = E2M1.Values[i % 16] * 0.5f;
        var enc = new byte[36];
        codec.QuantizeRows(w, enc, 64, default);
        var deq = new float[64];
        codec.DequantizeRows(enc, deq, 64);
        for (int i = 0; i < 64; i++) Assert.Equal(w[i], deq[i]); // -0 == 0 for Assert.Equal(float)
    }

    [Fact]
    public void NvFp4_tensor_scaled_round_trip_error_and_kernels()
    {
        var codec = (NvFp4TensorScaledCodec)CodecRegistry.Get("nvfp4-ts");
        int rows = 6, cols = 256;
        var w = Gaussian(rows * cols, 12, 0.02f);
        var enc = new byte[codec.TensorBytes(rows, cols)];
        Assert.Equal(4 + rows * cols / 64 * 36, enc.Length);
        codec.QuantizeTensor(w, enc, rows, cols, default);
        float amax = w.Max(MathF.Abs);
        Assert.Equal(amax / 2688f, NvFp4TensorScaledCodec.GlobalScale(enc));
        var deq = new float[w.Length];
        codec.DequantizeTensorRows(enc, rows, cols, 0, rows, deq);
        for (int sb = 0; sb < w.Length / 16; sb++)
        {
            float bmax = 0;
            for (int i = sb * 16; i < sb * 16 + 16; i++) bmax = MathF.Max(bmax, MathF.Abs(w[i]));
            // The decoded sub-block scale d is bmax/6 within E4M3's 2^-4 relative rounding (or half
            // its subnormal step); E2M1's largest half-step is 1·d, and saturation above 6 costs < 0.375·d.
            float d = bmax / 6 * (1 + 1f / 16) + MathF.ScaleB(1, -10) * amax / 2688f;
            for (int i = sb * 16; i < sb * 16 + 16; i++)
                Assert.True(MathF.Abs(w[i] - deq[i]) <= d * 1.0001f, $"value {i}: {w[i]} -> {deq[i]}");
        }
        // SQNR sanity: NVFP4 with a tensor scale lands near the ggml variant's ~20 dB.
        double sig = 0, noise = 0;
        for (int i = 0; i < w.Length; i++) { sig += (double)w[i] * w[i]; noise += (double)(w[i] - deq[i]) * (w[i] - deq[i]); }
        Assert.True(10 * Math.Log10(sig / noise) > 17, $"SQNR {10 * Math.Log10(sig / noise):F1} dB");
        var x = Gaussian(cols, 13, 1f);
        for (int r = 0; r < rows; r++)
        {
            double expected = 0, mag = 0;
            for (int c = 0; c < cols; c++) { expected += (double)deq[r * cols + c] * x[c]; mag += Math.Abs((double)deq[r * cols + c] * x[c]); }
            Assert.True(Math.Abs(codec.DotTensorRow(enc, rows, cols, r, x) - expected) <= 1e-5 * mag);
        }
        var part = new float[2 * cols];
        codec.DequantizeTensorRows(enc, rows, cols, 3, 2, part);
        Assert.Equal(deq.AsSpan(3 * cols, 2 * cols).ToArray(), part);
    }

    [Fact]
    public void NvFp4_tensor_scaled_handles_zero_tensors()
    {
        var codec = new NvFp4TensorScaledCodec();
        var w = new float[128];
        var enc = new byte[codec.TensorBytes(2, 64)];
        codec.QuantizeRows(w, enc, 64, default);
        var deq = new float[128];
        codec.DequantizeRows(enc, deq, 64);
        Assert.All(deq, v => Assert.Equal(0f, v));
    }
}
