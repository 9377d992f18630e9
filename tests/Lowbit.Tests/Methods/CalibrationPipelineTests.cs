using System.Numerics.Tensors;
using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.Methods.Calibration;
using Lowbit.Model;
using Xunit;
using static Lowbit.Tests.Methods.CalibrationTestModels;

namespace Lowbit.Tests.Methods;

public sealed class CalibrationPipelineTests
{
    [Theory]
    [InlineData(37, 13, 1)]
    [InlineData(64, 32, 2)]
    [InlineData(5, 1, 2)]
    public void Gram_accumulator_matches_naive_double_sums(int columns, int tokens, int threads)
    {
        var rng = new Random(columns * 31 + tokens);
        var x = new float[columns * tokens];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        var g = new GramAccumulator(columns);
        g.Add(x, tokens, threads);
        g.Add(x.AsSpan(0, columns), 1, threads); // a second batch is added on top
        for (int i = 0; i < columns; i++)
            for (int j = 0; j < columns; j++)
            {
                double expected = (double)x[i] * x[j];
                for (int t = 0; t < tokens; t++) expected += (double)x[t * columns + i] * x[t * columns + j];
                Assert.True(Math.Abs(expected - g[i, j]) <= 1e-5 * (1 + Math.Abs(expected)), $"[{i},{j}] {g[i, j]} vs {expected}");
            }
        Assert.Equal(tokens + 1, g.Tokens);
        var h = g.ToHessian();
        Assert.Equal(2.0 * g[1 % columns, 0] / (tokens + 1), h[(1 % columns) * columns], 12);
    }

    [Fact]
    public void Gram_accumulator_is_identical_for_any_thread_count()
    {
        var rng = new Random(3);
        var x = new float[96 * 200];
        for (int i = 0; i < x.Length; i++) x[i] = (float)rng.NextDouble();
        var a = new GramAccumulator(96);
        var b = new GramAccumulator(96);
        a.Add(x, 200, 1);
        b.Add(x, 200, 2);
        Assert.Equal(a.ToHessian(), b.ToHessian());
    }

    [Fact]
    public void Gptq_int4_g32_lowers_final_logit_error_versus_rtn()
    {
        using var model = Tiny();
        var data = Data();
        var rtn = CalibrationPipeline.Run(model, data, BlockPlan(model, "int4-g32-sym", QuantMethod.Rtn), new CalibrationOptions { Threads = 2 });
        var gptq = CalibrationPipeline.Run(model, data, BlockPlan(model, "int4-g32-sym", QuantMethod.Gptq), new CalibrationOptions { Threads = 2 });
        double eRtn = LogitError(model, rtn.Model), eGptq = LogitError(model, gptq.Model);
        Assert.True(eGptq < 0.8 * eRtn, $"GPTQ logit error {eGptq} is not clearly below RTN's {eRtn}");
        Assert.Equal(14, gptq.Quantized.Count);
        Assert.All(gptq.Quantized.Values, t => Assert.Equal("int4-g32-sym", t.Codec.Name));
        Assert.Equal(3, gptq.Blocks.Count); // two blocks + the non-block tensors
    }

    [Fact]
    public void Quantized_block_outputs_feed_the_next_blocks_statistics()
    {
        using var model = Tiny();
        var data = Data(samples: 4);
        double[] Block1Attention(Dictionary<string, TensorTarget> plan, out CalibrationResult result)
        {
            double[]? seen = null;
            result = CalibrationPipeline.Run(model, data, plan, new CalibrationOptions
            {
                Threads = 1,
                OnStatistics = (layer, kind, g) => { if (layer == 1 && kind == LinearInput.Attention) seen = g.ToHessian(); },
            });
            return seen!;
        }

        // Direct: the Hessian of blk.1's attention input from a full forward of a given model.
        double[] Direct(LoadedModel m)
        {
            var e = new InferenceEngine(m, new EngineOptions { Threads = 1, QuantizedActivations = false, ContextLength = data.SampleLength });
            var g = new GramAccumulator(m.Config.HiddenSize);
            e.Observer = new OneLayerObserver(1, LinearInput.Attention, g);
            int h = m.Config.HiddenSize;
            foreach (var s in data.Samples)
            {
                var hidden = new float[s.Length * h];
                e.Embed(s, hidden);
                e.ForwardLayers(hidden, s.Length, 0, 2);
            }
            return g.ToHessian();
        }

        var onlyBlock1 = Block1Attention(BlockPlan(model, "int4-g32-sym", QuantMethod.Gptq, l => l == 1), out _);
        var both = Block1Attention(BlockPlan(model, "int4-g32-sym", QuantMethod.Gptq), out var bothResult);
        var unquantized = Direct(model);
        var block0Quantized = Direct(Pipeline.ModelTransforms.WithTensors(model,
            bothResult.Quantized.Where(kv => kv.Key.StartsWith("blk.0.", StringComparison.Ordinal)).ToDictionary()));

        AssertClose(unquantized, onlyBlock1, 1e-5);   // block 0 left as is: block 1 sees the base model's inputs
        AssertClose(block0Quantized, both, 1e-5);     // block 0 quantized: block 1 sees the quantized block's outputs
        double diff = unquantized.Zip(both, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(diff > 1e-3, $"block-1 Hessian barely changed ({diff}) although block 0 was quantized");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Every_linear_input_statistic_matches_a_full_forward_of_the_model_it_was_taken_from(bool trueSequential)
    {
        using var model = Tiny();
        var data = Data(samples: 3);
        var seen = new Dictionary<LinearInput, double[]>();
        var result = CalibrationPipeline.Run(model, data, BlockPlan(model, "int4-g32-sym", QuantMethod.Gptq, l => l == 1), new CalibrationOptions
        {
            Threads = 2,
            TrueSequential = trueSequential,
            OnStatistics = (layer, kind, g) => { if (layer == 1) seen[kind] = g.ToHessian(); },
        });
        Assert.Equal(4, seen.Count);
        foreach (var (kind, hessian) in seen)
        {
            // One pass: every input comes from the original block. True-sequential: the groups before this one are quantized.
            var earlier = trueSequential
                ? CalibrationPipeline.LinearGroups(1).TakeWhile(g => g[0].Input != kind).SelectMany(g => g).Select(e => e.Name).ToHashSet()
                : [];
            var m = Pipeline.ModelTransforms.WithTensors(model, result.Quantized.Where(kv => earlier.Contains(kv.Key)).ToDictionary());
            AssertClose(DirectHessian(m, data, 1, kind), hessian, 1e-5);
        }
    }

    private static double[] DirectHessian(LoadedModel m, CalibrationData data, int layer, LinearInput kind)
    {
        var e = new InferenceEngine(m, new EngineOptions { Threads = 1, QuantizedActivations = false, ContextLength = data.SampleLength });
        var cfg = m.Config;
        var g = new GramAccumulator(kind switch
        {
            LinearInput.AttentionOutput => cfg.QDim,
            LinearInput.FfnDown => cfg.IntermediateSize,
            _ => cfg.HiddenSize,
        });
        e.Observer = new OneLayerObserver(layer, kind, g);
        int h = cfg.HiddenSize;
        foreach (var s in data.Samples)
        {
            var hidden = new float[s.Length * h];
            e.Embed(s, hidden);
            e.ForwardLayers(hidden, s.Length, 0, cfg.NumLayers);
        }
        return g.ToHessian();
    }

    [Fact]
    public void Output_is_identical_for_one_and_two_threads()
    {
        using var model = Tiny();
        var data = Data(samples: 6);
        var plan = BlockPlan(model, "int4-g32-sym", QuantMethod.Gptq);
        plan[TensorNames.Output] = new TensorTarget(CodecRegistry.Get("int4-g32-sym"), QuantMethod.Gptq);
        var a = CalibrationPipeline.Run(model, data, plan, new CalibrationOptions { Threads = 1 });
        var b = CalibrationPipeline.Run(model, data, plan, new CalibrationOptions { Threads = 2 });
        Assert.Equal(a.Quantized.Keys.Order(), b.Quantized.Keys.Order());
        foreach (var (name, t) in a.Quantized) Assert.True(t.Data.Span.SequenceEqual(b.Quantized[name].Data.Span), name);
        Assert.NotNull(a.Blocks[^1].Tensors.Single(t => t.Name == TensorNames.Output).GptqLoss);
    }

    [Fact]
    public void Resume_after_an_interrupted_run_gives_identical_tensors()
    {
        using var model = Tiny();
        var data = Data(samples: 4);
        var plan = BlockPlan(model, "int4-g32-sym", QuantMethod.Gptq);
        var full = CalibrationPipeline.Run(model, data, plan, new CalibrationOptions { Threads = 1 });
        string dir = Path.Combine(Path.GetTempPath(), "lowbit-calib-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var cts = new CancellationTokenSource();
            var options = new CalibrationOptions { Threads = 1, CheckpointDirectory = dir, Resume = true };
            Assert.ThrowsAny<OperationCanceledException>(() => CalibrationPipeline.Run(model, data, plan, options,
                new SyncProgress(p => { if (p.BlocksDone == 1) cts.Cancel(); }), cts.Token));
            Assert.True(File.Exists(Path.Combine(dir, "block-0.tensors")));
            Assert.False(File.Exists(Path.Combine(dir, "block-1.tensors")));

            var resumed = CalibrationPipeline.Run(model, data, plan, options);
            Assert.True(resumed.Blocks[0].Resumed);
            Assert.False(resumed.Blocks[1].Resumed);
            foreach (var (name, t) in full.Quantized) Assert.True(t.Data.Span.SequenceEqual(resumed.Quantized[name].Data.Span), name);

            // A different plan must not resume from this checkpoint.
            var other = BlockPlan(model, "int4-g32-sym", QuantMethod.Rtn);
            Assert.Throws<LowbitException>(() => CalibrationPipeline.Run(model, data, other, options));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Invalid_plans_are_rejected_with_clear_errors()
    {
        using var model = Tiny();
        var data = Data(samples: 2);
        var bad = new Dictionary<string, TensorTarget> { ["blk.9.attn_q.weight"] = new(CodecRegistry.Get("int4-g32-sym"), QuantMethod.Gptq) };
        Assert.Contains("does not have", Assert.Throws<LowbitException>(() => CalibrationPipeline.Run(model, data, bad)).Message);
        var tooWide = new Dictionary<string, TensorTarget> { ["blk.0.attn_q.weight"] = new(CodecRegistry.Get("q4_K"), QuantMethod.Rtn) };
        Assert.Contains("cannot encode rows", Assert.Throws<LowbitException>(() => CalibrationPipeline.Run(model, data, tooWide)).Message);
    }

    [Fact]
    public void Imatrix_collector_matches_a_direct_mean_square_computation()
    {
        using var model = Tiny();
        var cfg = model.Config;
        int ctx = 16, chunks = 3, h = cfg.HiddenSize;
        var tokens = Tokenize(Text(5, 100));
        var engine = new InferenceEngine(model, new EngineOptions { Threads = 2, ContextLength = ctx, QuantizedActivations = false });
        var im = ImatrixCollector.Collect(engine, tokens, ctx, chunks, bosToken: 1, "synthetic");
        Assert.Equal(chunks, im.ChunkCount);
        Assert.Equal(ctx, im.ChunkSize);
        Assert.Equal(7 * cfg.NumLayers, im.Entries.Count);

        // Direct: embed each chunk (BOS first), RMS-normalize with attn_norm → inputs of blk.0.attn_q;
        // run block 0 and normalize with blk.1's attn_norm → inputs of blk.1.attn_q.
        var sums0 = new double[h];
        var sums1 = new double[h];
        var norm0 = model.Get(TensorNames.AttnNorm(0)).ToFloat();
        var norm1 = model.Get(TensorNames.AttnNorm(1)).ToFloat();
        var direct = new InferenceEngine(model, new EngineOptions { Threads = 1, ContextLength = ctx, QuantizedActivations = false });
        for (int c = 0; c < chunks; c++)
        {
            var chunk = tokens.AsSpan(c * ctx, ctx).ToArray();
            chunk[0] = 1;
            var hidden = new float[ctx * h];
            direct.Embed(chunk, hidden);
            AddNormedSquares(hidden, ctx, h, norm0, cfg.RmsNormEps, sums0);
            direct.ForwardLayers(hidden, ctx, 0, 1);
            AddNormedSquares(hidden, ctx, h, norm1, cfg.RmsNormEps, sums1);
        }
        foreach (var (layer, sums) in new[] { (0, sums0), (1, sums1) })
        {
            var q = im.Entries[TensorNames.AttnQ(layer)];
            Assert.Equal([chunks * ctx], q.Counts);
            var mean = q.MeanSquares();
            for (int j = 0; j < h; j++)
            {
                double expected = sums[j] / (chunks * ctx);
                Assert.True(Math.Abs(expected - mean[j]) <= 1e-5 * expected, $"blk.{layer} column {j}: {mean[j]} vs {expected}");
            }
            Assert.Equal(q.SumSquares, im.Entries[TensorNames.AttnK(layer)].SumSquares);
            Assert.Equal(q.SumSquares, im.Entries[TensorNames.AttnV(layer)].SumSquares);
        }
        Assert.Equal(cfg.IntermediateSize, im.Entries[TensorNames.FfnDown(1)].SumSquares.Length);
    }

    private static void AddNormedSquares(float[] hidden, int n, int h, float[] norm, float eps, double[] sums)
    {
        var o = new float[h];
        for (int t = 0; t < n; t++)
        {
            var x = hidden.AsSpan(t * h, h);
            float ss = TensorPrimitives.SumOfSquares(x) / h + eps;
            TensorPrimitives.Multiply(x, 1f / MathF.Sqrt(ss), o);
            TensorPrimitives.Multiply(o, norm, o);
            for (int j = 0; j < h; j++) sums[j] += (double)o[j] * o[j];
        }
    }

    private static void AssertClose(double[] expected, double[] actual, double relTol)
    {
        double scale = expected.Max(Math.Abs);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= relTol * scale, $"[{i}] {expected[i]} vs {actual[i]}");
    }

    private sealed class OneLayerObserver(int layer, LinearInput kind, GramAccumulator gram) : IActivationObserver
    {
        public void Observe(int l, LinearInput k, ReadOnlySpan<float> input, int tokens, int width)
        {
            if (l == layer && k == kind) gram.Add(input, tokens);
        }
    }

    private sealed class SyncProgress(Action<CalibrationProgress> report) : IProgress<CalibrationProgress>
    {
        public void Report(CalibrationProgress value) => report(value);
    }
}
