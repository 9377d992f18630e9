using System.Buffers.Binary;
using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.Tests.Methods;

namespace Lowbit.Tests.Formats;

public sealed class LlmInt8CodecTests
{
    private static readonly LlmInt8Codec Codec = (LlmInt8Codec)CodecRegistry.Get("llm-int8");

    private static float[] Activations(Random rng, int cols, params (int Col, float Value)[] outliers)
    {
        var x = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        foreach (var (c, v) in outliers) x[c] = v;
        return x;
    }

    private static byte[] QuantizeActivations(float[] x)
    {
        var xq = new byte[Codec.Activations.RowBytes(x.Length)];
        Codec.Activations.QuantizeRows(x, xq, x.Length, default);
        return xq;
    }

    private static List<(int Col, float Value)> Outliers(byte[] xq, int cols)
    {
        var tail = xq.AsSpan(4 + cols);
        int count = BinaryPrimitives.ReadUInt16LittleEndian(tail);
        var list = new List<(int, float)>();
        for (int k = 0; k < count; k++)
        {
            var e = tail.Slice(2 + 6 * k);
            list.Add(((int)BinaryPrimitives.ReadUInt32LittleEndian(e), (float)BinaryPrimitives.ReadHalfLittleEndian(e.Slice(4))));
        }
        return list;
    }

    [Fact]
    public void Registry_resolves_the_default_and_a_custom_threshold()
    {
        Assert.Equal(6f, Codec.Threshold);
        Assert.IsAssignableFrom<IQuantizedActivationCodec>(Codec);
        Assert.Same(Codec.Activations, Codec.VecDotCodec);
        var t45 = Assert.IsType<LlmInt8Codec>(CodecRegistry.Get("llm-int8-t4.5"));
        Assert.Equal(4.5f, t45.Threshold);
        Assert.Equal("llm-int8-t4.5", t45.Name);
        Assert.Equal("llm-int8", CodecRegistry.Get("llm-int8-t6").Name);
        Assert.Throws<LowbitException>(() => CodecRegistry.Get("llm-int8-t0"));
        // Weight rows are w8a8-int8 rows: FP32 scale then one code per value.
        Assert.Equal(4 + 100, Codec.RowBytes(100));
    }

    [Fact]
    public void Values_above_the_threshold_stay_in_F16_and_the_int8_scale_covers_only_the_rest()
    {
        const int cols = 64;
        var x = Activations(new Random(1), cols, (40, 37.25f), (5, -9.5f), (17, 6.5f));
        x[20] = 6f; // exactly the threshold: not an outlier (bitsandbytes uses |x| > threshold)
        var xq = QuantizeActivations(x);
        Assert.Equal(new (int, float)[] { (5, -9.5f), (17, 6.5f), (40, 37.25f) }, Outliers(xq, cols));
        float scale = BinaryPrimitives.ReadSingleLittleEndian(xq);
        Assert.Equal(6f / 127f, scale, 1e-7f);
        foreach (int c in new[] { 5, 17, 40 }) Assert.Equal(0, (sbyte)xq[4 + c]);
        var back = new float[cols];
        Codec.Activations.DequantizeRows(xq, back, cols);
        for (int c = 0; c < cols; c++)
            Assert.True(Math.Abs(back[c] - x[c]) <= scale / 2 * 1.0001f, $"col {c}: {x[c]} -> {back[c]}");
    }

    [Fact]
    public void A_row_with_more_outliers_than_slots_keeps_the_largest()
    {
        const int cols = 64; // 16 slots
        Assert.Equal(16, LlmInt8ActivationCodec.MaxOutliers(cols));
        var x = new float[cols];
        for (int c = 0; c < 20; c++) x[c * 3] = (c % 2 == 0 ? 1 : -1) * (7f + c);
        var kept = Outliers(QuantizeActivations(x), cols);
        Assert.Equal(16, kept.Count);
        // The four smallest (|7|, |8|, |9|, |10| at columns 0, 3, 6, 9) go to the INT8 part.
        Assert.Equal(Enumerable.Range(4, 16).Select(c => c * 3), kept.Select(k => k.Col));
        float scale = BinaryPrimitives.ReadSingleLittleEndian(QuantizeActivations(x));
        Assert.Equal(10f / 127f, scale, 1e-7f);
    }

    [Theory]
    [InlineData(5)]
    [InlineData(64)]
    [InlineData(300)]
    [InlineData(1000)]
    public void Quantized_dot_equals_dequantize_both_and_dot(int cols)
    {
        var rng = new Random(cols);
        for (int rep = 0; rep < 6; rep++)
        {
            var w = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            var outliers = Enumerable.Range(0, rep * 7).Select(_ => (rng.Next(cols), (float)(rng.NextDouble() * 80 - 40))).ToArray();
            var x = Activations(rng, cols, outliers);
            var wq = new byte[Codec.RowBytes(cols)];
            Codec.QuantizeRows(w, wq, cols, default);
            var xq = QuantizeActivations(x);
            var wd = new float[cols];
            var xd = new float[cols];
            Codec.DequantizeRows(wq, wd, cols);
            Codec.Activations.DequantizeRows(xq, xd, cols);
            double expected = wd.Zip(xd).Sum(p => (double)p.First * p.Second);
            double magnitude = wd.Zip(xd).Sum(p => Math.Abs((double)p.First * p.Second));
            Assert.Equal(expected, Codec.DotRowQuantized(wq, xq), 1e-5 * magnitude);
        }
    }

    [Fact]
    public void Without_outliers_the_product_is_the_w8a8_int8_product()
    {
        var w8a8 = CodecRegistry.Get("w8a8-int8");
        var rng = new Random(7);
        const int cols = 256;
        var w = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var x = Activations(rng, cols);
        var wq = new byte[Codec.RowBytes(cols)];
        Codec.QuantizeRows(w, wq, cols, default);
        var wq8 = new byte[w8a8.RowBytes(cols)];
        w8a8.QuantizeRows(w, wq8, cols, default);
        Assert.Equal(wq8, wq);
        var xq8 = new byte[w8a8.RowBytes(cols)];
        w8a8.QuantizeRows(x, xq8, cols, default);
        var xq = QuantizeActivations(x);
        Assert.Equal(xq8, xq.AsSpan(0, 4 + cols).ToArray());
        Assert.Equal(w8a8.DotRowQuantized(wq8, xq8), Codec.DotRowQuantized(wq, xq));
    }

    [Fact]
    public void Outlier_decomposition_cuts_the_product_error_of_w8a8_int8()
    {
        var w8a8 = CodecRegistry.Get("w8a8-int8");
        var rng = new Random(11);
        const int cols = 512, rows = 64;
        double errInt8 = 0, errMixed = 0;
        for (int r = 0; r < rows; r++)
        {
            var w = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            // Activation outliers in fixed feature dimensions, as LLM.int8() observed.
            var x = Activations(rng, cols, (3, 60f + r), (200, -45f), (411, 30f));
            double exact = w.Zip(x).Sum(p => (double)p.First * p.Second);
            var wq8 = new byte[w8a8.RowBytes(cols)];
            var xq8 = new byte[w8a8.RowBytes(cols)];
            w8a8.QuantizeRows(w, wq8, cols, default);
            w8a8.QuantizeRows(x, xq8, cols, default);
            var wq = new byte[Codec.RowBytes(cols)];
            Codec.QuantizeRows(w, wq, cols, default);
            errInt8 += Math.Pow(w8a8.DotRowQuantized(wq8, xq8) - exact, 2);
            errMixed += Math.Pow(Codec.DotRowQuantized(wq, QuantizeActivations(x)) - exact, 2);
        }
        Assert.True(errMixed < errInt8 / 4, $"llm-int8 {errMixed} vs w8a8-int8 {errInt8}");
    }

    [Fact]
    public void A_corrupt_activation_row_is_a_clear_error()
    {
        const int cols = 64;
        var xq = QuantizeActivations(Activations(new Random(2), cols, (9, 20f)));
        var bad = (byte[])xq.Clone();
        BinaryPrimitives.WriteUInt16LittleEndian(bad.AsSpan(4 + cols), 17);
        var ex = Assert.Throws<LowbitException>(() => Codec.Activations.DequantizeRows(bad, new float[cols], cols));
        Assert.Contains("17 outliers", ex.Message);
        bad = (byte[])xq.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(bad.AsSpan(4 + cols + 2), 64);
        Assert.Contains("past the row length", Assert.Throws<LowbitException>(() => Codec.Activations.DequantizeRows(bad, new float[cols], cols)).Message);
    }

    [Fact]
    public void Engine_runs_llm_int8_with_prefill_equal_to_decode_and_less_error_than_w8a8()
    {
        using var f32 = AwqTestModels.WithOutliers(AwqTestModels.Config(2));
        using var mixed = AwqTestModels.QuantizeBlockLinears(f32, Codec);
        using var int8 = AwqTestModels.QuantizeBlockLinears(f32, CodecRegistry.Get("w8a8-int8"));
        var tokens = AwqTestModels.Samples(1, 12, f32.Config.VocabSize, 8)[0];
        var reference = AwqTestModels.Logits(f32, tokens);
        var prefill = AwqTestModels.Logits(mixed, tokens);

        var engine = new InferenceEngine(mixed, new EngineOptions { Threads = 2, ContextLength = tokens.Length });
        var decode = new float[prefill.Length];
        for (int t = 0; t < tokens.Length; t++) engine.Decode(tokens[t]).CopyTo(decode.AsSpan(t * engine.VocabSize));
        double scale = AwqTestModels.MaxAbs(prefill);
        double prefillVsDecode = prefill.Zip(decode).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(prefillVsDecode <= 1e-5 * scale, $"prefill vs decode {prefillVsDecode}");

        // Both formats hold the same INT8 weights; what differs is the activation rounding. Measured against the
        // weight-only product (same weights, float activations), the decomposition must remove most of it.
        var weightOnly = AwqTestModels.Logits(int8, tokens, quantizedActivations: false);
        double mixedActivationError = AwqTestModels.MeanSquaredError(weightOnly, prefill);
        double int8ActivationError = AwqTestModels.MeanSquaredError(weightOnly, AwqTestModels.Logits(int8, tokens));
        Assert.True(mixedActivationError < int8ActivationError / 4,
            $"activation error: llm-int8 {mixedActivationError} vs w8a8-int8 {int8ActivationError}");
        // And the total error against the F32 model is lower too.
        Assert.True(AwqTestModels.MeanSquaredError(reference, prefill) < AwqTestModels.MeanSquaredError(reference, AwqTestModels.Logits(int8, tokens)));
    }
}
