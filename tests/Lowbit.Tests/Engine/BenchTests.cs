using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.IO;

namespace Lowbit.Tests.Engine;

public sealed class BenchTests
{
    [Fact]
    public void Bench_reports_pp_and_tg_rates_and_caps_lengths_at_the_context()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var e = new InferenceEngine(model, new EngineOptions { ContextLength = 24 });
        var r = Bench.Run(e, new BenchOptions { PromptTokens = 512, GenerateTokens = 8, Repetitions = 2, WarmupRuns = 0 });
        Assert.Equal(24, r.PromptTokens);
        Assert.Equal(8, r.GenerateTokens);
        Assert.Equal(2, r.PromptTokensPerSecond.Samples);
        Assert.True(r.PromptTokensPerSecond.Mean > 0 && r.GenerateTokensPerSecond.Mean > 0);
        Assert.True(r.DecodeBytesPerToken > r.WeightBytesPerToken);
        Assert.Equal(e.DecodeBytesPerToken(1), r.DecodeBytesPerToken, r.DecodeBytesPerToken * 0.01);
        Assert.True(r.PromptFlopsPerToken > 2.0 * (r.WeightBytesPerToken / 4) * 0.99);
        Assert.InRange(r.GenerateFractionOfBandwidth(1e15), 0, 1);
        Assert.Equal(0, r.ReadBytesPerSecondAlongside); // not asked for
        Assert.Equal(0, e.Position);
    }

    [Fact]
    public void A_read_alongside_tg_is_measured_on_request_and_leaves_the_engine_reset()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var e = new InferenceEngine(model, new EngineOptions { ContextLength = 24, Threads = 2 });
        var r = Bench.Run(e, new BenchOptions { PromptTokens = 0, GenerateTokens = 5, Repetitions = 1, WarmupRuns = 0, MeasureReadAlongside = true, ReadEveryTokens = 2, ReadAlongsideMinBytes = 0 });
        Assert.True(r.ReadBytesPerSecondAlongside > 1e8, $"read alongside {r.ReadBytesPerSecondAlongside}");
        Assert.True(r.GenerateFractionOfBandwidth(r.ReadBytesPerSecondAlongside) > 0);
        Assert.Equal(0, e.Position);
    }

    [Fact]
    public void No_read_alongside_is_made_for_a_model_that_fits_in_the_caches()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var e = new InferenceEngine(model, new EngineOptions { ContextLength = 24, Threads = 2 });
        var r = Bench.Run(e, new BenchOptions { PromptTokens = 0, GenerateTokens = 3, Repetitions = 1, WarmupRuns = 0, MeasureReadAlongside = true });
        Assert.Equal(0, r.ReadBytesPerSecondAlongside);
        Assert.True(r.GenerateTokensPerSecond.Mean > 0);
    }

    [Fact]
    public void The_read_alongside_covers_the_weights_a_decoded_token_streams()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var e = new InferenceEngine(model, new EngineOptions { ContextLength = 24, Threads = 2 });
        var (regions, pins) = e.DecodeWeightMemory();
        try
        {
            long bytes = regions.Sum(r => r.Length);
            long embeddingRow = (long)e.Config.HiddenSize * sizeof(float); // llama2.c weights are F32; decode reads one row
            Assert.Equal(e.WeightBytesPerToken - embeddingRow, bytes);
            Assert.All(regions, r => Assert.NotEqual(0, r.Pointer));
        }
        finally
        {
            foreach (var pin in pins) pin.Dispose();
        }
    }

    [Fact]
    public void Machine_limits_are_measured_as_positive_rates()
    {
        var m = Bench.MeasureMachine(threads: 2, bufferBytes: 8 << 20, repetitions: 1);
        Assert.True(m.ReadBytesPerSecond > 1e8, $"read {m.ReadBytesPerSecond}");
        Assert.True(m.TriadBytesPerSecond > 1e8, $"triad {m.TriadBytesPerSecond}");
        Assert.True(m.FlopsPerSecond > 1e8, $"flops {m.FlopsPerSecond}");
    }

    [Fact]
    public void The_int8_dot_peak_is_measured_where_the_integer_gemm_has_a_vector_path()
    {
        double peak = Bench.MeasureInt8Peak(threads: 1, repetitions: 1);
        if (QuantizedGemm.BestIsa == GemmIsa.Scalar) Assert.Equal(0, peak);
        else Assert.True(peak > 1e8, $"int8 peak {peak}");
        Assert.Equal(peak > 0, Bench.MeasureMachine(threads: 1, bufferBytes: 8 << 20, repetitions: 1).Int8OpsPerSecond > 0);
    }

    [Fact]
    public void Prefill_fraction_charges_integer_work_to_the_int8_peak_and_the_rest_to_fma()
    {
        var r = new BenchResult
        {
            PromptTokens = 8, PromptTokensPerSecond = new Measurement(10, 0, 1), GenerateTokens = 0, GenerateTokensPerSecond = default,
            Threads = 2, WeightBytesPerToken = 1, DecodeBytesPerToken = 1, PromptFlopsPerToken = 1e9, PromptIntegerShare = 0.75,
        };
        // 0.25 GFLOP at 100 GFLOP/s + 0.75 GOP at 400 GOP/s = 4.375 ms per token; 10 tokens/s took 100 ms.
        Assert.Equal(0.04375, r.PromptFractionOfPeak(100e9, 400e9), 12);
        Assert.Equal(0.1, r.PromptFractionOfPeak(100e9), 12); // no int8 figure: everything against FMA
        var k = new KernelSpeed("q4_0", 8, 32, 1, 1, 1, 1, 4, 50e9, IntegerPrefill: true);
        Assert.Equal(0.25, k.PrefillFractionOfPeak(200e9, 400e9), 12);
        Assert.Equal(0.5, (k with { IntegerPrefill = false }).PrefillFractionOfPeak(200e9, 400e9), 12);
    }

    [Theory]
    [InlineData("q4_0", true)]
    [InlineData("f32", false)]
    public void Integer_prefill_work_counts_the_matrices_on_integer_kernels(string codec, bool integer)
    {
        using var model = SyntheticModel.Create(SyntheticModel.Tiny6MLike(), CodecRegistry.Get(codec), seed: 2);
        var e = new InferenceEngine(model);
        long matrices = e.MultiplyAddsPerToken(0) - 2L * model.Config.QDim * model.Config.NumLayers; // less attention at position 0
        Assert.Equal(integer ? matrices : 0, e.IntegerPrefillMultiplyAddsPerToken);
        var r = Bench.Run(e, new BenchOptions { PromptTokens = 4, GenerateTokens = 0, Repetitions = 1, WarmupRuns = 0 });
        if (integer) Assert.InRange(r.PromptIntegerShare, 0.99, 1.0);
        else Assert.Equal(0, r.PromptIntegerShare);
    }

    [Fact]
    public void Limits_around_a_run_average_the_two_measurements()
    {
        var before = new MachineLimits(40e9, 42e9, 200e9, 2, 1 << 20);
        var after = new MachineLimits(60e9, 62e9, 220e9, 2, 1 << 20) { Int8OpsPerSecond = 900e9 };
        var around = MachineLimits.Around(before with { Int8OpsPerSecond = 700e9 }, after);
        Assert.Equal(800e9, around.Int8OpsPerSecond);
        Assert.Equal(50e9, around.ReadBytesPerSecond);
        Assert.Equal(52e9, around.TriadBytesPerSecond);
        Assert.Equal(210e9, around.FlopsPerSecond);
        Assert.Contains("before 40.0, after 60.0", around.ReadBandwidthText);
    }

    [Theory]
    [InlineData("q4_0")]
    [InlineData("q4_K")]
    [InlineData("f16")]
    public void Kernel_bench_streams_distinct_matrices_and_reports_positive_rates(string format)
    {
        var codec = Lowbit.Formats.CodecRegistry.Get(format);
        var r = KernelBench.Measure(codec, rows: 64, cols: 512, threads: 2, decodeBytes: 1 << 20, prefillTokens: 5, minSeconds: 0.01);
        Assert.Equal(codec.TensorBytes(64, 512) * r.Matrices, r.WeightBytes);
        Assert.True(r.WeightBytes >= 1 << 20, "the decode set covers the requested bytes");
        Assert.True(r.DecodeBytesPerSecond > 1e6 && r.PrefillMultiplyAddsPerSecond > 1e6, $"{r}");
        Assert.Equal(0.5, r.DecodeFractionOfBandwidth(2 * r.DecodeBytesPerSecond), 9);
        Assert.Throws<LowbitException>(() => KernelBench.Measure(codec, rows: 0, cols: 512, threads: 1));
        if (codec.BlockSize > 1) Assert.Throws<LowbitException>(() => KernelBench.Measure(codec, rows: 4, cols: 100, threads: 1));
    }

    [Fact]
    public void Measurement_is_mean_and_sample_standard_deviation()
    {
        var m = Measurement.Of([1.0, 2.0, 3.0]);
        Assert.Equal(2.0, m.Mean, 12);
        Assert.Equal(1.0, m.StdDev, 12);
    }

    [Fact]
    public void Synthetic_models_have_the_requested_shape_and_codec_and_are_seeded()
    {
        var cfg = SyntheticModel.Llama1BLike(vocab: 1024, layers: 1) with { HiddenSize = 256, IntermediateSize = 512, NumHeads = 4, NumKvHeads = 2 };
        using var a = SyntheticModel.Create(cfg, CodecRegistry.Get("bf16"), seed: 5, embeddingCodec: CodecRegistry.Get("f16"));
        using var b = SyntheticModel.Create(cfg, CodecRegistry.Get("bf16"), seed: 5, embeddingCodec: CodecRegistry.Get("f16"));
        Assert.Equal("bf16", a.Get("blk.0.ffn_up.weight").Codec.Name);
        Assert.Equal("f16", a.Get("token_embd.weight").Codec.Name);
        Assert.Equal(new long[] { 512, 256 }, a.Get("blk.0.ffn_gate.weight").Shape);
        Assert.Equal(a.Get("blk.0.attn_k.weight").Data.ToArray(), b.Get("blk.0.attn_k.weight").Data.ToArray());
        var w = a.Get("blk.0.ffn_down.weight").ToFloat();
        double rms = Math.Sqrt(w.Average(v => (double)v * v));
        Assert.Equal(1 / Math.Sqrt(512), rms, 0.1 / Math.Sqrt(512));
        var e = new InferenceEngine(a);
        var logits = e.Prefill([1, 2, 3]);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
    }
}
