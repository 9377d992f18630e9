using Lowbit.Engine;
using Lowbit.Eval;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Tests.Engine;

namespace Lowbit.Tests.Eval;

public sealed class PerplexityTests
{
    private static int[] Tokens(int count, int seed)
    {
        // Greedy continuation mixed with random tokens: realistic (peaked) and uncertain positions.
        var r = new Random(seed);
        return Enumerable.Range(0, count).Select(i => i % 3 == 0 ? r.Next(3, 512) : 400 + r.Next(0, 70)).ToArray();
    }

    /// <summary>Reference: each chunk decoded token by token from an empty cache, log-softmax in double.</summary>
    private static (double Ppl, double Err, long Count) NaivePerplexity(InferenceEngine e, int[] tokens, int ctx)
    {
        int chunks = tokens.Length / ctx, first = ctx / 2;
        double nll = 0, nll2 = 0;
        long count = 0;
        for (int c = 0; c < chunks; c++)
        {
            e.Reset();
            for (int j = 0; j < ctx - 1; j++)
            {
                int input = j == 0 ? 1 : tokens[c * ctx + j];
                var logits = e.Decode(input);
                if (j < first) continue;
                double max = logits.Max();
                double sum = logits.Sum(v => Math.Exp(v - max));
                double v = -(logits[tokens[c * ctx + j + 1]] - max - Math.Log(sum));
                nll += v; nll2 += v * v; count++;
            }
        }
        double mean = nll / count, var = nll2 / count - mean * mean;
        return (Math.Exp(mean), Math.Sqrt(var / (count - 1)) * Math.Exp(mean), count);
    }

    [Fact]
    public void Perplexity_matches_a_token_by_token_reference_with_llama_cpp_chunking()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var e = new InferenceEngine(model, new EngineOptions { Threads = 2 });
        var tokens = Tokens(16 * 5 + 7, 1); // 5 full chunks of 16, the tail is ignored
        var reports = new List<PerplexityProgress>();
        var result = Perplexity.Compute(e, tokens, new PerplexityOptions { Context = 16 }, new SyncProgress<PerplexityProgress>(reports.Add));
        var (ppl, err, count) = NaivePerplexity(new InferenceEngine(model), tokens, 16);
        Assert.Equal(5, result.Chunks);
        Assert.Equal(5 * (16 - 1 - 8), result.ScoredTokens);
        Assert.Equal(count, result.ScoredTokens);
        Assert.Equal(ppl, result.Perplexity, ppl * 1e-5);
        Assert.Equal(err, result.PerplexityError, err * 1e-3);
        Assert.Equal(5, reports.Count);
        Assert.Equal(result.Perplexity, reports[^1].RunningPerplexity, 1e-9);
        Assert.Equal(result.ChunkPerplexities, reports.Select(p => p.RunningPerplexity));
        // MaxChunks limits the work.
        var two = Perplexity.Compute(e, tokens, new PerplexityOptions { Context = 16, MaxChunks = 2 });
        Assert.Equal(2, two.Chunks);
        Assert.Equal(result.ChunkPerplexities[1], two.Perplexity, 1e-9);
    }

    [Fact]
    public void Chunk_parallel_perplexity_equals_the_sequential_run_exactly()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var tokens = Tokens(24 * 7, 4);
        var opts = new PerplexityOptions { Context = 24 };
        var one = Perplexity.Compute(new InferenceEngine(model, new EngineOptions { Threads = 1 }), tokens, opts);
        var reports = new List<PerplexityProgress>();
        var three = Perplexity.Compute(new InferenceEngine(model, new EngineOptions { Threads = 3 }), tokens, opts,
            new SyncProgress<PerplexityProgress>(reports.Add));
        Assert.Equal(one.Perplexity, three.Perplexity);
        Assert.Equal(one.PerplexityError, three.PerplexityError);
        Assert.Equal(one.ChunkPerplexities, three.ChunkPerplexities);
        Assert.Equal(Enumerable.Range(1, 7), reports.Select(r => r.Chunk));
    }

    [Fact]
    public void Perplexity_rejects_contexts_it_cannot_run()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var e = new InferenceEngine(model, new EngineOptions { ContextLength = 64 });
        Assert.Throws<LowbitException>(() => Perplexity.Compute(e, Tokens(500, 2), new PerplexityOptions { Context = 128 }));
        Assert.Throws<LowbitException>(() => Perplexity.Compute(e, Tokens(20, 2), new PerplexityOptions { Context = 32 }));
        var bad = Tokens(200, 2);
        bad[150] = 600; // outside stories260K's 512-token vocabulary
        Assert.Throws<LowbitException>(() => Perplexity.Compute(e, bad, new PerplexityOptions { Context = 32 }));
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        var multi = new InferenceEngine(model, new EngineOptions { Threads = 2, ContextLength = 64 });
        Assert.ThrowsAny<OperationCanceledException>(() => Perplexity.Compute(multi, Tokens(200, 2), new PerplexityOptions { Context = 32 }, cancellationToken: cts.Token));
    }

    [Fact]
    public void Saved_base_log_probs_give_near_zero_kld_against_the_same_model()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var e = new InferenceEngine(model);
        // Text the model finds plausible (each chunk sampled from it, from BOS), so no target falls
        // below the stored 16-nat range.
        var sampler = new Sampler(new SamplerOptions { Temperature = 0.8f, Seed = 5 });
        var tokens = Enumerable.Range(0, 6).SelectMany(_ =>
            new[] { 1 }.Concat(Generator.Generate(e, [1], 31, sampler, eosToken: -1).Select(g => g.Token))).ToArray();
        Assert.Equal(32 * 6, tokens.Length);
        string path = Path.Combine(Path.GetTempPath(), $"lowbit-logprobs-{Guid.NewGuid():N}.bin");
        try
        {
            var opts = new PerplexityOptions { Context = 32 };
            var ppl = Perplexity.Compute(e, tokens, opts, saveLogProbsPath: path);
            var kld = KlDivergence.Compute(e, path, tokens, opts);
            Assert.Equal(6 * 15, kld.Count);
            // Only the uint16 storage step of the base log-probs (16/65535 nats) separates them.
            Assert.True(kld.MeanKld.Value < 1e-5, $"KLD {kld.MeanKld}");
            Assert.True(kld.MaxKld < 1e-4);
            Assert.Equal(1.0, kld.SameTop.Value);
            Assert.Equal(ppl.Perplexity, kld.PplQuantized.Value, ppl.Perplexity * 1e-6);
            Assert.Equal(ppl.Perplexity, kld.PplBase.Value, ppl.Perplexity * 1e-3); // base is stored as uint16 steps
            Assert.True(Math.Abs(kld.PplDelta.Value) < ppl.Perplexity * 1e-3);

            // A different text is refused.
            var other = (int[])tokens.Clone();
            other[40]++;
            Assert.Throws<LowbitException>(() => KlDivergence.Compute(e, path, other, opts));
            // A truncated file is refused.
            var bytes = File.ReadAllBytes(path);
            File.WriteAllBytes(path, bytes[..^2]);
            Assert.Throws<InvalidModelFileException>(() => KlDivergence.Compute(e, path, tokens, opts));
            File.WriteAllBytes(path, "not a log-prob file at all"u8.ToArray());
            Assert.Throws<InvalidModelFileException>(() => KlDivergence.Compute(e, path, tokens, opts));
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void Kld_between_f32_and_bf16_models_is_small_positive_and_file_and_live_runs_agree()
    {
        var cfg = SyntheticModel.Tiny6MLike() with { VocabSize = 512, NumLayers = 2, HiddenSize = 128, IntermediateSize = 256, NumHeads = 2, NumKvHeads = 1 };
        using var f32 = SyntheticModel.Create(cfg, CodecRegistry.Get("f32"), seed: 4);
        using var bf16 = SyntheticModel.Create(cfg, CodecRegistry.Get("bf16"), seed: 4);
        var baseEngine = new InferenceEngine(f32);
        var qEngine = new InferenceEngine(bf16);
        var tokens = Tokens(64 * 3, 5);
        var opts = new PerplexityOptions { Context = 64 };
        var live = KlDivergence.Compute(baseEngine, qEngine, tokens, opts);
        Assert.True(live.MeanKld.Value > 0 && live.MeanKld.Value < 1e-2, $"KLD {live.MeanKld}");
        Assert.True(live.MinKld >= -1e-6);
        Assert.True(live.MedianKld <= live.P90Kld && live.P90Kld <= live.P99Kld && live.P99Kld <= live.MaxKld);
        Assert.True(live.SameTop.Value > 0.8);
        string path = Path.Combine(Path.GetTempPath(), $"lowbit-logprobs-{Guid.NewGuid():N}.bin");
        try
        {
            Perplexity.Compute(baseEngine, tokens, opts, saveLogProbsPath: path);
            var fromFile = KlDivergence.Compute(qEngine, path, tokens, opts);
            Assert.Equal(live.MeanKld.Value, fromFile.MeanKld.Value, Math.Max(1e-6, live.MeanKld.Value * 0.05));
            Assert.Equal(live.PplQuantized.Value, fromFile.PplQuantized.Value, 1e-9);
            Assert.Equal(live.SameTop.Value, fromFile.SameTop.Value, 0.02);
            // Chunk-parallel runs (several threads) give exactly the single-threaded statistics.
            var q1 = new InferenceEngine(bf16, new EngineOptions { Threads = 1 });
            var q3 = new InferenceEngine(bf16, new EngineOptions { Threads = 3 });
            var file1 = KlDivergence.Compute(q1, path, tokens, opts);
            var file3 = KlDivergence.Compute(q3, path, tokens, opts);
            Assert.Equal(file1, file3 with { Seconds = file1.Seconds });
            var live1 = KlDivergence.Compute(new InferenceEngine(f32, new EngineOptions { Threads = 1 }), q1, tokens, opts);
            var live3 = KlDivergence.Compute(new InferenceEngine(f32, new EngineOptions { Threads = 3 }), q3, tokens, opts);
            Assert.Equal(live1, live3 with { Seconds = live1.Seconds });
            Assert.Equal(live.MeanKld, live3.MeanKld);
        }
        finally { File.Delete(path); }
    }
}

/// <summary>IProgress that reports synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
