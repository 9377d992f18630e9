using System.Buffers;
using System.Diagnostics;
using Lowbit.Engine;

namespace Lowbit.Eval;

/// <summary>A mean with its standard error.</summary>
public readonly record struct Estimate(double Value, double Error)
{
    public override string ToString() => $"{Value:G6} ± {Error:G4}";
}

/// <summary>Progress after each chunk.</summary>
public sealed record KlDivergenceProgress(int Chunk, int ChunkCount, double MeanKld, double SameTopPercent, double Seconds);

/// <summary>The statistics llama-perplexity --kl-divergence prints.</summary>
public sealed record KlDivergenceResult
{
    public required long Count { get; init; }
    public required int Chunks { get; init; }
    public required int Context { get; init; }
    public required Estimate PplQuantized { get; init; }
    public required Estimate PplBase { get; init; }
    /// <summary>Correlation of ln PPL(Q) and ln PPL(base) (as a fraction).</summary>
    public required double LogPplCorrelation { get; init; }
    public required Estimate LogPplRatio { get; init; }
    public required Estimate PplRatio { get; init; }
    /// <summary>PPL(Q) − PPL(base) with its error.</summary>
    public required Estimate PplDelta { get; init; }
    public required Estimate MeanKld { get; init; }
    public required double MaxKld { get; init; }
    public required double P999Kld { get; init; }
    public required double P99Kld { get; init; }
    public required double P95Kld { get; init; }
    public required double P90Kld { get; init; }
    public required double MedianKld { get; init; }
    public required double P10Kld { get; init; }
    public required double P5Kld { get; init; }
    public required double P1Kld { get; init; }
    public required double MinKld { get; init; }
    /// <summary>Mean Δp = p_Q(token) − p_base(token), as a fraction.</summary>
    public required Estimate MeanDeltaP { get; init; }
    public required Estimate RmsDeltaP { get; init; }
    public required double MaxDeltaP { get; init; }
    public required double P99DeltaP { get; init; }
    public required double P90DeltaP { get; init; }
    public required double MedianDeltaP { get; init; }
    public required double P10DeltaP { get; init; }
    public required double P1DeltaP { get; init; }
    public required double MinDeltaP { get; init; }
    /// <summary>Fraction of positions where both models' most likely token agree.</summary>
    public required Estimate SameTop { get; init; }
    public required double Seconds { get; init; }
}

/// <summary>
/// KL divergence between a base model's and a quantized model's next-token distributions over
/// the positions a llama.cpp perplexity run scores, with the statistics of llama.cpp's
/// --kl-divergence (KL(base‖Q), top-token agreement, Δp, PPL ratio/difference with errors).
/// The base side is either a <see cref="LogProbFile"/> saved by <see cref="Perplexity.Compute"/>
/// or a second engine evaluated on the fly (exact float log-probabilities).
/// </summary>
public static class KlDivergence
{
    /// <summary>Compares against base log-probabilities saved earlier. The tokens must be the same text (checked).</summary>
    public static KlDivergenceResult Compute(InferenceEngine quantized, string baseLogProbsPath, IReadOnlyList<int>? tokens = null,
        PerplexityOptions? options = null, IProgress<KlDivergenceProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        using var file = LogProbFile.Open(baseLogProbsPath);
        if (file.Vocab != quantized.VocabSize)
            throw new LowbitException($"{baseLogProbsPath}: saved for a vocabulary of {file.Vocab} tokens, but the model has {quantized.VocabSize}");
        options = (options ?? new PerplexityOptions()) with { Context = file.Context, MaxChunks = file.Chunks };
        if (tokens is not null)
        {
            if (tokens.Count < file.Tokens.Length)
                throw new LowbitException($"{baseLogProbsPath}: saved for {file.Chunks} chunks of {file.Context} tokens, but the text has only {tokens.Count} tokens");
            for (int i = 0; i < file.Tokens.Length; i++)
                if (tokens[i] != file.Tokens[i])
                    throw new LowbitException($"{baseLogProbsPath}: saved for a different text or tokenizer (token {i} differs: {file.Tokens[i]} vs {tokens[i]})");
        }
        var plan = ChunkPlan.Create(quantized, file.Tokens, options);
        if (plan.Chunks != file.Chunks)
            throw new LowbitException($"{baseLogProbsPath}: holds {file.Chunks} chunks, the text gives {plan.Chunks}");
        int vocab = file.Vocab, rv = LogProbFile.RowValues(vocab);
        return Run(quantized, file.Tokens, plan, () =>
        {
            var encoded = new ushort[plan.ScoredPerChunk * rv];
            return new BaseSource(c => file.ReadChunk(c, encoded), (i, dst) => LogProbFile.Decode(encoded.AsSpan(i * rv, rv), dst));
        }, progress, cancellationToken);
    }

    /// <summary>Runs both engines on the same chunks and compares exact distributions.</summary>
    public static KlDivergenceResult Compute(InferenceEngine baseline, InferenceEngine quantized, IReadOnlyList<int> tokens,
        PerplexityOptions? options = null, IProgress<KlDivergenceProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        if (baseline.VocabSize != quantized.VocabSize)
            throw new LowbitException($"vocabularies differ: base {baseline.VocabSize}, quantized {quantized.VocabSize}");
        options ??= new PerplexityOptions();
        var plan = ChunkPlan.Create(quantized, tokens, options);
        ChunkPlan.Create(baseline, tokens, options);
        int vocab = baseline.VocabSize;
        bool parallelChunks = Workers(quantized, plan) > 1;
        return Run(quantized, tokens, plan, () =>
        {
            var engine = parallelChunks ? baseline.CreateSibling(1) : baseline;
            var baseLogits = new float[(plan.Context - plan.First) * vocab];
            return new BaseSource(c => plan.RunChunk(engine, tokens, c, baseLogits),
                (i, dst) => LogSoftmax.Compute(baseLogits.AsSpan(i * vocab, vocab), dst));
        }, progress, cancellationToken);
    }

    private sealed class Sums
    {
        public double Nll, Nll2, NllBase, NllBase2, NllNllBase, Kld, Kld2, PDiff, PDiff2, PDiff4;
        public long SameTop, Count;
    }

    /// <summary>The base side for one worker: Load(chunk) prepares a chunk, Row(i, dst) gives scored position i's log-probs.</summary>
    private sealed record BaseSource(Action<int> Load, Action<int, Span<float>> Row);

    private static int Workers(InferenceEngine engine, ChunkPlan plan) => Math.Max(1, Math.Min(engine.Threads, plan.Chunks));

    /// <summary>
    /// Evaluates the chunks — in parallel, one single-threaded sibling engine (and base source) per
    /// worker, when the engine has several threads — and combines the per-position results in
    /// chunk order, so every statistic is independent of scheduling and thread count.
    /// </summary>
    private static KlDivergenceResult Run(InferenceEngine quantized, IReadOnlyList<int> tokens, ChunkPlan plan,
        Func<BaseSource> newBaseSource, IProgress<KlDivergenceProgress>? progress, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        int vocab = quantized.VocabSize, scored = plan.ScoredPerChunk;
        long total = (long)scored * plan.Chunks;
        var perPos = new (double Nll, double NllBase, double Kld, float PDiff, bool Same)[total];
        var kldValues = new float[total];
        var pDiffValues = new float[total];
        var s = new Sums();
        var done = new bool[plan.Chunks];
        int reported = 0, next = -1;
        var gate = new object();
        int workers = Workers(quantized, plan);

        void Accumulate()
        {
            while (reported < plan.Chunks && done[reported])
            {
                for (long k = (long)reported * scored; k < (long)(reported + 1) * scored; k++)
                {
                    var (nll, nllBase, kld, pDiff, same) = perPos[k];
                    s.Nll += nll; s.Nll2 += nll * nll;
                    s.NllBase += nllBase; s.NllBase2 += nllBase * nllBase; s.NllNllBase += nll * nllBase;
                    s.Kld += kld; s.Kld2 += kld * kld;
                    s.PDiff += pDiff; double d2 = (double)pDiff * pDiff; s.PDiff2 += d2; s.PDiff4 += d2 * d2;
                    if (same) s.SameTop++;
                    kldValues[k] = (float)kld;
                    pDiffValues[k] = pDiff;
                    s.Count++;
                }
                reported++;
                progress?.Report(new KlDivergenceProgress(reported, plan.Chunks, s.Kld / s.Count, 100.0 * s.SameTop / s.Count, sw.Elapsed.TotalSeconds));
            }
        }

        void Worker(InferenceEngine engine, ParallelOptions? positionThreads)
        {
            var source = newBaseSource();
            var logits = new float[(plan.Context - plan.First) * vocab];
            int c;
            while ((c = Interlocked.Increment(ref next)) < plan.Chunks)
            {
                ct.ThrowIfCancellationRequested();
                source.Load(c);
                plan.RunChunk(engine, tokens, c, logits);
                int start = c * plan.Context;
                void Score(int i)
                {
                    var row = logits.AsSpan(i * vocab, vocab);
                    int target = tokens[start + plan.First + i + 1];
                    float[] baseLogProbs = ArrayPool<float>.Shared.Rent(vocab);
                    try
                    {
                        source.Row(i, baseLogProbs.AsSpan(0, vocab));
                        perPos[(long)c * scored + i] = Position(row, baseLogProbs.AsSpan(0, vocab), target);
                    }
                    finally { ArrayPool<float>.Shared.Return(baseLogProbs); }
                }
                if (positionThreads is null) for (int i = 0; i < scored; i++) Score(i);
                else Parallel.For(0, scored, positionThreads, Score);
                lock (gate)
                {
                    done[c] = true;
                    Accumulate();
                }
            }
        }

        if (workers == 1)
            Worker(quantized, new ParallelOptions { MaxDegreeOfParallelism = quantized.Threads, CancellationToken = ct });
        else
            ChunkPlan.RunWorkers(workers, new ParallelOptions { MaxDegreeOfParallelism = workers, CancellationToken = ct },
                _ => Worker(quantized.CreateSibling(1), null));
        return Summarize(s, kldValues, pDiffValues, plan, sw.Elapsed.TotalSeconds);
    }

    /// <summary>One position: NLLs of the target under both, KL(base‖Q), Δp, top-token agreement.</summary>
    private static (double, double, double, float, bool) Position(ReadOnlySpan<float> logits, ReadOnlySpan<float> baseLogProbs, int target)
    {
        var (max, lse) = LogSoftmax.Normalizer(logits);
        int imax = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[imax]) imax = i;
        double nll = (double)max + lse - logits[target];
        double nllBase = -baseLogProbs[target];
        int imaxBase = 0;
        double kld = 0;
        float norm = max + lse;
        for (int i = 0; i < baseLogProbs.Length; i++)
        {
            float lb = baseLogProbs[i];
            if (lb > baseLogProbs[imaxBase]) imaxBase = i;
            // As llama.cpp: terms with p_base below e^-16 are dropped (they are not stored precisely).
            if (lb > -16f) kld += MathF.Exp(lb) * (lb - (logits[i] - norm));
        }
        float pDiff = (float)(Math.Exp(-nll) - Math.Exp(-nllBase));
        return (nll, nllBase, kld, pDiff, imax == imaxBase);
    }

    private static Estimate MeanAndError(double sum, double sum2, long count)
    {
        if (count < 1) return new Estimate(0, 0);
        double f = sum / count;
        double df = sum2 / count - f * f;
        df = df > 0 && count > 10 ? Math.Sqrt(df / (count - 1)) : 0;
        return new Estimate(f, df);
    }

    private static double Covariance(double a, double b, double ab, long count)
        => count < 10 ? 0 : (ab / count - a / count * (b / count)) / (count - 1);

    private static double Percentile(float[] sorted, double fraction)
    {
        if (fraction <= 0) return sorted[0];
        if (fraction >= 1) return sorted[^1];
        double p = fraction * (sorted.Length - 1);
        int ip = (int)p;
        p -= ip;
        return (1 - p) * sorted[ip] + p * sorted[Math.Min(ip + 1, sorted.Length - 1)];
    }

    private static double Median(float[] sorted) => sorted.Length % 2 == 0
        ? 0.5 * (sorted[sorted.Length / 2] + sorted[sorted.Length / 2 - 1]) : sorted[sorted.Length / 2];

    private static KlDivergenceResult Summarize(Sums s, float[] kld, float[] pDiff, ChunkPlan plan, double seconds)
    {
        Array.Sort(kld);
        Array.Sort(pDiff);
        var logPpl = MeanAndError(s.Nll, s.Nll2, s.Count);
        var logPplBase = MeanAndError(s.NllBase, s.NllBase2, s.Count);
        double ppl = Math.Exp(logPpl.Value), pplBase = Math.Exp(logPplBase.Value);
        double pplErr = ppl * logPpl.Error, pplBaseErr = pplBase * logPplBase.Error;
        double cov = Covariance(s.Nll, s.NllBase, s.NllNllBase, s.Count);
        double cor = logPpl.Error > 0 && logPplBase.Error > 0 ? cov / (logPpl.Error * logPplBase.Error) : 0;
        double ratioVal = logPpl.Value - logPplBase.Value;
        double ratioErr = Math.Sqrt(Math.Max(0, logPpl.Error * logPpl.Error + logPplBase.Error * logPplBase.Error - 2 * cov));
        double pplCov = ppl * pplBase * cov;
        double diffErr = Math.Sqrt(Math.Max(0, pplErr * pplErr + pplBaseErr * pplBaseErr - 2 * pplCov));
        var pDiffMse = MeanAndError(s.PDiff2, s.PDiff4, s.Count);
        double rms = Math.Sqrt(pDiffMse.Value);
        double sameTop = (double)s.SameTop / s.Count;
        return new KlDivergenceResult
        {
            Count = s.Count,
            Chunks = plan.Chunks,
            Context = plan.Context,
            PplQuantized = new Estimate(ppl, pplErr),
            PplBase = new Estimate(pplBase, pplBaseErr),
            LogPplCorrelation = cor,
            LogPplRatio = new Estimate(ratioVal, ratioErr),
            PplRatio = new Estimate(Math.Exp(ratioVal), Math.Exp(ratioVal) * ratioErr),
            PplDelta = new Estimate(ppl - pplBase, diffErr),
            MeanKld = MeanAndError(s.Kld, s.Kld2, s.Count),
            MaxKld = kld[^1],
            P999Kld = Percentile(kld, 0.999),
            P99Kld = Percentile(kld, 0.99),
            P95Kld = Percentile(kld, 0.95),
            P90Kld = Percentile(kld, 0.90),
            MedianKld = Median(kld),
            P10Kld = Percentile(kld, 0.10),
            P5Kld = Percentile(kld, 0.05),
            P1Kld = Percentile(kld, 0.01),
            MinKld = kld[0],
            MeanDeltaP = MeanAndError(s.PDiff, s.PDiff2, s.Count),
            RmsDeltaP = new Estimate(rms, rms > 0 ? 0.5 / rms * pDiffMse.Error : 0),
            MaxDeltaP = pDiff[^1],
            P99DeltaP = Percentile(pDiff, 0.99),
            P90DeltaP = Percentile(pDiff, 0.90),
            MedianDeltaP = Median(pDiff),
            P10DeltaP = Percentile(pDiff, 0.10),
            P1DeltaP = Percentile(pDiff, 0.01),
            MinDeltaP = pDiff[0],
            SameTop = new Estimate(sameTop, s.Count > 1 ? Math.Sqrt(sameTop * (1 - sameTop) / (s.Count - 1)) : 0),
            Seconds = seconds,
        };
    }
}
