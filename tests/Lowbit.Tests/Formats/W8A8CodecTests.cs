using System.Buffers.Binary;
using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.Model;
using Lowbit.Tests.Methods;

namespace Lowbit.Tests.Formats;

public sealed class W8A8CodecTests
{
    private static byte[] RandomCodes(Random rng, int n, bool allowMinus128)
    {
        var b = new byte[n];
        for (int i = 0; i < n; i++) b[i] = (byte)(sbyte)rng.Next(allowMinus128 ? -128 : -127, 128);
        return b;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(31)]
    [InlineData(32)]
    [InlineData(33)]
    [InlineData(100)]
    [InlineData(256)]
    [InlineData(4099)]
    public void Int8_dot_kernels_equal_the_scalar_reference(int n)
    {
        var rng = new Random(n);
        foreach (bool minus128 in new[] { false, true })
            for (int rep = 0; rep < 4; rep++)
            {
                var a = RandomCodes(rng, n, minus128);
                var b = RandomCodes(rng, n, minus128);
                if (rep == 3) { Array.Fill(a, (byte)0x80); Array.Fill(b, (byte)0x80); } // extreme: every product is +16384
                int expected = W8A8Kernels.DotInt8Scalar(a, b);
                Assert.Equal(expected, W8A8Kernels.DotInt8Avx2(a, b));
                Assert.Equal(expected, W8A8Kernels.DotInt8AvxVnni(a, b));
                Assert.Equal(expected, W8A8Kernels.DotInt8(a, b));
            }
    }

    [Theory]
    [InlineData(7)]
    [InlineData(64)]
    [InlineData(1001)]
    public void E4M3_dot_kernel_agrees_with_the_scalar_reference(int n)
    {
        var rng = new Random(n);
        // Finite E4M3 codes only (0x7F / 0xFF are NaN).
        byte[] Codes() => Enumerable.Range(0, n).Select(_ => (byte)(rng.Next(0, 127) | (rng.Next(2) << 7))).ToArray();
        var a = Codes();
        var b = Codes();
        double expected = W8A8Kernels.DotE4M3Scalar(a, b);
        var t = Fp8.Table(Fp8Kind.E4M3).ToArray();
        double magnitude = a.Zip(b).Sum(p => Math.Abs((double)t[p.First] * t[p.Second]));
        Assert.Equal(expected, W8A8Kernels.DotE4M3(a, b), 1e-6 * magnitude);
    }

    [Theory]
    [InlineData("w8a8-int8", 127f)]
    [InlineData("w8a8-fp8", 448f)]
    public void Rows_hold_a_scale_then_one_byte_per_value_and_round_trip_within_half_a_step(string name, float maxCode)
    {
        var codec = CodecRegistry.Get(name);
        Assert.Same(codec, codec.VecDotCodec);
        Assert.IsAssignableFrom<IQuantizedActivationCodec>(codec);
        const int rows = 3, cols = 50;
        Assert.Equal(4 + cols, codec.RowBytes(cols));
        Assert.Equal(rows * (4 + cols), codec.TensorBytes(rows, cols));
        var rng = new Random(3);
        var x = Enumerable.Range(0, rows * cols).Select(i => (float)(rng.NextDouble() * 2 - 1) * (i % cols == 7 ? 40 : 1)).ToArray();
        x.AsSpan(2 * cols, cols).Clear(); // an all-zero row
        var enc = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeRows(x, enc, cols, default);
        var dec = new float[x.Length];
        codec.DequantizeRows(enc, dec, cols);
        for (int r = 0; r < rows; r++)
        {
            var row = x.AsSpan(r * cols, cols);
            float amax = 0;
            foreach (var v in row) amax = Math.Max(amax, Math.Abs(v));
            float scale = BinaryPrimitives.ReadSingleLittleEndian(enc.AsSpan(r * (4 + cols)));
            Assert.Equal(amax / maxCode, scale, 1e-6f);
            for (int c = 0; c < cols; c++)
            {
                float v = row[c], d = dec[r * cols + c];
                // INT8: half a step; E4M3: half an ulp of the 3-bit mantissa (relative 1/16) or a subnormal step.
                float tol = name == "w8a8-int8" ? scale / 2 * 1.0001f : Math.Max(Math.Abs(v) / 16f, scale * 0.00098f);
                Assert.True(Math.Abs(v - d) <= tol, $"{name} row {r} col {c}: {v} -> {d}");
            }
        }
    }

    [Theory]
    [InlineData("w8a8-int8")]
    [InlineData("w8a8-fp8")]
    public void Quantized_dot_equals_dequantize_both_and_dot(string name)
    {
        var codec = CodecRegistry.Get(name);
        var rng = new Random(4);
        foreach (int cols in new[] { 5, 64, 300 })
        {
            var w = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            var x = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 6 - 3)).ToArray();
            var wq = new byte[codec.RowBytes(cols)];
            var xq = new byte[codec.RowBytes(cols)];
            codec.QuantizeRows(w, wq, cols, default);
            codec.QuantizeRows(x, xq, cols, default);
            var wd = new float[cols];
            var xd = new float[cols];
            codec.DequantizeRows(wq, wd, cols);
            codec.DequantizeRows(xq, xd, cols);
            double expected = wd.Zip(xd).Sum(p => (double)p.First * p.Second);
            double magnitude = wd.Zip(xd).Sum(p => Math.Abs((double)p.First * p.Second));
            Assert.Equal(expected, codec.DotRowQuantized(wq, xq), 1e-5 * magnitude);
            // The float-activation product is the weight-only reference.
            double weightOnly = wd.Zip(x).Sum(p => (double)p.First * p.Second);
            Assert.Equal(weightOnly, codec.DotRow(wq, x), 1e-5 * magnitude);
        }
    }

    [Fact]
    public void Engine_prefill_quantizes_activations_per_token_like_decode()
    {
        using var f32 = AwqTestModels.WithOutliers(AwqTestModels.Config(2));
        using var model = AwqTestModels.QuantizeBlockLinears(f32, CodecRegistry.Get("w8a8-int8"));
        var tokens = AwqTestModels.Samples(1, 12, model.Config.VocabSize, 8)[0];
        var prefill = AwqTestModels.Logits(model, tokens);
        var weightOnly = AwqTestModels.Logits(model, tokens, quantizedActivations: false);

        var engine = new InferenceEngine(model, new EngineOptions { Threads = 2, ContextLength = tokens.Length });
        var decode = new float[prefill.Length];
        for (int t = 0; t < tokens.Length; t++) engine.Decode(tokens[t]).CopyTo(decode.AsSpan(t * engine.VocabSize));

        double scale = AwqTestModels.MaxAbs(prefill);
        double prefillVsDecode = prefill.Zip(decode).Max(p => Math.Abs(p.First - p.Second));
        double prefillVsWeightOnly = prefill.Zip(weightOnly).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(prefillVsDecode <= 1e-4 * scale, $"prefill vs decode {prefillVsDecode}");
        // Activation quantization is visible in prefill (weight-only differs by far more than float noise).
        Assert.True(prefillVsWeightOnly > 100 * Math.Max(prefillVsDecode, 1e-6 * scale), $"prefill vs weight-only {prefillVsWeightOnly}");
    }
}
