using System.Diagnostics;
using Lowbit.Engine;

namespace Lowbit.Eval;

/// <summary>Settings shared by <see cref="Perplexity"/> and <see cref="KlDivergence"/>.</summary>
public sealed record PerplexityOptions
{
    /// <summary>Tokens per chunk (llama.cpp -c). Must fit the engine's context.</summary>
    public int Context { get; init; } = 512;
    /// <summary>Evaluate at most this many chunks (llama.cpp --chunks); null = all.</summary>
    public int? MaxChunks { get; init; }
    /// <summary>Replace each chunk's first token by BOS (llama.cpp does so for models that add BOS).</summary>
    public bool AddBos { get; init; } = true;
    /// <summary>BOS id; null = the engine's <c>Config.BosTokenId</c>.</summary>
    public int? BosToken { get; init; }
}

/// <summary>Progress after each chunk: running perplexity over the chunks so far.</summary>
public sealed record PerplexityProgress(int Chunk, int ChunkCount, double RunningPerplexity, double Seconds);

public sealed record PerplexityResult(
    double Perplexity,
    /// <summary>Standard error of the perplexity (llama.cpp's "±").</summary>
    double PerplexityError,
    double MeanNll,
    int Chunks,
    int Context,
    long ScoredTokens,
    /// <summary>Running perplexity after each chunk (llama.cpp's "[i]ppl" line).</summary>
    IReadOnlyList<double> ChunkPerplexities,
    double Seconds)
{
    /// <summary>Tokens evaluated per second (all chunk tokens, scored or not).</summary>
    public double TokensPerSecond => Seconds > 0 ? (double)Chunks * Context / Seconds : 0;
}

/// <summary>
/// Perplexity as llama.cpp's llama-perplexity computes it: the token sequence is cut into
/// non-overlapping chunks of <c>ctx</c> tokens (n_chunks = tokens / ctx), each run from an empty
/// cache as one batch with its first token replaced by BOS; only the second half is scored
/// (logits at positions ctx/2 .. ctx−2 predicting tokens ctx/2+1 .. ctx−1), and
/// PPL = exp(mean NLL) ± PPL·sqrt(var(NLL)/(count−1)).
/// </summary>
public static class Perplexity
{
    public static PerplexityResult Compute(InferenceEngine engine, IReadOnlyList<int> tokens, PerplexityOptions? options = null,
        IProgress<PerplexityProgress>? progress = null, CancellationToken cancellationToken = default, string? saveLogProbsPath = null)
    {
        options ??= new PerplexityOptions();
        var plan = ChunkPlan.Create(engine, tokens, options);
        var sw = Stopwatch.StartNew();
        int vocab = engine.VocabSize, scored = plan.ScoredPerChunk;
        long logitsLength = (long)(plan.Context - plan.First) * vocab;
        if (logitsLength > int.MaxValue) throw new LowbitException("context × vocabulary too large for one chunk");
        // Per-chunk sums, combined in chunk order: the result does not depend on how chunks were scheduled.
        var chunkNll = new double[plan.Chunks];
        var chunkNll2 = new double[plan.Chunks];
        var running = new List<double>(plan.Chunks);
        int reported = 0;
        double nll = 0, nll2 = 0;
        long count = 0;

        void ReportDone(bool[] done)
        {
            while (reported < plan.Chunks && done[reported])
            {
                nll += chunkNll[reported]; nll2 += chunkNll2[reported];
                count += scored;
                double ppl = Math.Exp(nll / count);
                running.Add(ppl);
                reported++;
                progress?.Report(new PerplexityProgress(reported, plan.Chunks, ppl, sw.Elapsed.TotalSeconds));
            }
        }

        var completed = new bool[plan.Chunks];
        if (saveLogProbsPath is null && engine.Threads > 1 && plan.Chunks > 1)
        {
            // Chunks are independent sequences: one single-threaded engine per worker evaluates whole
            // chunks, so no thread ever waits on another inside a forward pass.
            int workers = Math.Min(engine.Threads, plan.Chunks);
            var engines = new InferenceEngine[workers];
            var buffers = new float[workers][];
            int next = -1;
            var gate = new object();
            var opts = new ParallelOptions { MaxDegreeOfParallelism = workers, CancellationToken = cancellationToken };
            ChunkPlan.RunWorkers(workers, opts, w =>
            {
                var e = engines[w] = engine.CreateSibling(1);
                var logits = buffers[w] = new float[logitsLength];
                int c;
                while ((c = Interlocked.Increment(ref next)) < plan.Chunks)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    plan.RunChunk(e, tokens, c, logits);
                    double s = 0, s2 = 0;
                    for (int i = 0; i < scored; i++)
                    {
                        double v = -LogSoftmax.LogProb(logits.AsSpan(i * vocab, vocab), tokens[c * plan.Context + plan.First + i + 1]);
                        s += v; s2 += v * v;
                    }
                    lock (gate)
                    {
                        chunkNll[c] = s; chunkNll2[c] = s2;
                        completed[c] = true;
                        ReportDone(completed);
                    }
                }
            });
        }
        else
        {
            var logits = new float[logitsLength];
            var nllPerPos = new double[scored];
            using var writer = saveLogProbsPath is null ? null : LogProbFile.Create(saveLogProbsPath, vocab, plan.Context, plan.Chunks, plan.First, plan.ChunkTokens(tokens));
            var encoded = writer is null ? null : new ushort[scored * LogProbFile.RowValues(vocab)];
            var threads = new ParallelOptions { MaxDegreeOfParallelism = engine.Threads, CancellationToken = cancellationToken };
            for (int c = 0; c < plan.Chunks; c++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                plan.RunChunk(engine, tokens, c, logits);
                int start = c * plan.Context;
                Parallel.For(0, scored, threads, i =>
                {
                    var row = logits.AsSpan(i * vocab, vocab);
                    int target = tokens[start + plan.First + i + 1];
                    nllPerPos[i] = encoded is null
                        ? -LogSoftmax.LogProb(row, target)
                        : -LogProbFile.Encode(row, target, encoded.AsSpan(i * LogProbFile.RowValues(vocab), LogProbFile.RowValues(vocab)));
                });
                double s = 0, s2 = 0;
                foreach (double v in nllPerPos) { s += v; s2 += v * v; }
                chunkNll[c] = s; chunkNll2[c] = s2;
                writer?.WriteChunk(encoded!);
                completed[c] = true;
                ReportDone(completed);
            }
            writer?.Commit();
        }

        double mean = nll / count;
        double var = nll2 / count - mean * mean;
        double pplFinal = Math.Exp(mean);
        double err = var > 0 && count > 1 ? Math.Sqrt(var / (count - 1)) * pplFinal : 0;
        return new PerplexityResult(pplFinal, err, mean, plan.Chunks, plan.Context, count, running, sw.Elapsed.TotalSeconds);
    }
}

/// <summary>The llama.cpp chunking shared by perplexity and KL-divergence runs.</summary>
internal sealed record ChunkPlan(int Context, int Chunks, int First, bool AddBos, int Bos)
{
    /// <summary>Positions scored per chunk: ctx − 1 − ctx/2.</summary>
    public int ScoredPerChunk => Context - 1 - First;

    public static ChunkPlan Create(InferenceEngine engine, IReadOnlyList<int> tokens, PerplexityOptions options)
    {
        int ctx = options.Context;
        if (ctx < 4) throw new LowbitException($"perplexity context must be at least 4 tokens, got {ctx}");
        if (ctx > engine.ContextLength)
            throw new LowbitException($"perplexity context {ctx} exceeds the engine's context length {engine.ContextLength}");
        int chunks = tokens.Count / ctx;
        if (options.MaxChunks is int mc) chunks = Math.Min(chunks, Math.Max(0, mc));
        if (chunks < 1)
            throw new LowbitException($"the text tokenizes to {tokens.Count} tokens, fewer than one chunk of {ctx}");
        int bos = options.BosToken ?? engine.Config.BosTokenId;
        if (options.AddBos && (uint)bos >= (uint)engine.VocabSize)
            throw new LowbitException($"BOS token {bos} is outside the vocabulary of {engine.VocabSize}");
        for (int i = 0; i < chunks * ctx; i++)
            if ((uint)tokens[i] >= (uint)engine.VocabSize)
                throw new LowbitException($"token {i} of the text has id {tokens[i]}, outside the model's vocabulary of {engine.VocabSize} (tokenizer and model do not match)");
        return new ChunkPlan(ctx, chunks, ctx / 2, options.AddBos, bos);
    }

    /// <summary>Parallel.For over workers that rethrows a worker's LowbitException or cancellation as itself, not wrapped.</summary>
    public static void RunWorkers(int workers, ParallelOptions options, Action<int> body)
    {
        try
        {
            Parallel.For(0, workers, options, body);
        }
        catch (AggregateException e) when (e.InnerExceptions.FirstOrDefault(x => x is LowbitException or OperationCanceledException) is { } inner)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(inner).Throw();
        }
    }

    public int[] ChunkTokens(IReadOnlyList<int> tokens)
    {
        var t = new int[Chunks * Context];
        for (int i = 0; i < t.Length; i++) t[i] = tokens[i];
        return t;
    }

    /// <summary>Runs chunk c from an empty cache; logits receive positions First .. Context−1.</summary>
    public void RunChunk(InferenceEngine engine, IReadOnlyList<int> tokens, int c, float[] logits)
    {
        var chunk = new int[Context];
        for (int i = 0; i < Context; i++) chunk[i] = tokens[c * Context + i];
        if (AddBos) chunk[0] = Bos;
        engine.Reset();
        engine.Evaluate(chunk, First, logits);
    }
}
