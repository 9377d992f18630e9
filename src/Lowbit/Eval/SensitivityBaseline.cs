using System.Buffers;
using Lowbit.Engine;

namespace Lowbit.Eval;

/// <summary>Mean KL(base‖variant) over the scored positions, with the variant's perplexity and top-token agreement.</summary>
public sealed record KldMeasurement(double MeanKld, double KldError, double SameTop, double Perplexity, long Positions, double Seconds);

/// <summary>
/// The base model's next-token log-probabilities over a few llama.cpp-style chunks, computed once
/// and kept in memory as exact floats, so every variant measured against them costs one forward
/// pass (not two, as engine-vs-engine <see cref="KlDivergence.Compute(InferenceEngine, InferenceEngine, IReadOnlyList{int}, PerplexityOptions?, IProgress{KlDivergenceProgress}?, CancellationToken)"/> does).
/// Saved log-prob files (<see cref="LogProbFile"/>) are 16-bit and add noise around 1e-6 nats,
/// which is the size of the effect of one tensor in q8_0, hence floats here.
/// KLD terms follow <see cref="KlDivergence"/> (terms with log p_base ≤ −16 dropped), so a
/// measurement equals that class's mean KLD for the same chunks.
/// </summary>
public sealed class SensitivityBaseline
{
    private readonly IReadOnlyList<int> _tokens;
    private readonly ChunkPlan _plan;
    private readonly float[][] _baseLogProbs; // per chunk: scored × vocab
    private readonly int _vocab;

    private SensitivityBaseline(IReadOnlyList<int> tokens, ChunkPlan plan, float[][] baseLogProbs, int vocab, double basePerplexity)
    {
        _tokens = tokens;
        _plan = plan;
        _baseLogProbs = baseLogProbs;
        _vocab = vocab;
        BasePerplexity = basePerplexity;
    }

    public int Context => _plan.Context;
    public int Chunks => _plan.Chunks;
    public int Vocab => _vocab;
    public double BasePerplexity { get; }

    /// <summary>Runs the base engine over the chunks once and keeps its log-probabilities.</summary>
    public static SensitivityBaseline Capture(InferenceEngine baseline, IReadOnlyList<int> tokens, PerplexityOptions options,
        CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(baseline);
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(options);
        var plan = ChunkPlan.Create(baseline, tokens, options);
        int vocab = baseline.VocabSize, scored = plan.ScoredPerChunk;
        long perChunk = (long)(plan.Context - plan.First) * vocab;
        if (perChunk > int.MaxValue) throw new LowbitException("context × vocabulary too large for one chunk");
        var chunks = new float[plan.Chunks][];
        double nll = 0;
        for (int c = 0; c < plan.Chunks; c++)
        {
            cancel.ThrowIfCancellationRequested();
            var logits = new float[perChunk];
            plan.RunChunk(baseline, tokens, c, logits);
            var lp = new float[(long)scored * vocab];
            int start = c * plan.Context;
            for (int i = 0; i < scored; i++)
            {
                LogSoftmax.Compute(logits.AsSpan(i * vocab, vocab), lp.AsSpan(i * vocab, vocab));
                nll -= lp[(long)i * vocab + tokens[start + plan.First + i + 1]];
            }
            chunks[c] = lp;
        }
        return new SensitivityBaseline(tokens, plan, chunks, vocab, Math.Exp(nll / ((long)scored * plan.Chunks)));
    }

    /// <summary>Runs <paramref name="variant"/> over the same chunks and compares with the stored base distributions.</summary>
    public KldMeasurement Measure(InferenceEngine variant, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(variant);
        if (variant.VocabSize != _vocab)
            throw new LowbitException($"vocabularies differ: base {_vocab}, variant {variant.VocabSize}");
        if (variant.ContextLength < _plan.Context)
            throw new LowbitException($"variant engine context {variant.ContextLength} is shorter than the baseline's chunks of {_plan.Context}");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        int vocab = _vocab, scored = _plan.ScoredPerChunk;
        var logits = new float[(_plan.Context - _plan.First) * vocab];
        var kld = new double[scored];
        var nll = new double[scored];
        var same = new bool[scored];
        double sumKld = 0, sumKld2 = 0, sumNll = 0;
        long sameTop = 0, count = 0;
        for (int c = 0; c < _plan.Chunks; c++)
        {
            cancel.ThrowIfCancellationRequested();
            _plan.RunChunk(variant, _tokens, c, logits);
            var baseChunk = _baseLogProbs[c];
            int start = c * _plan.Context;
            Parallel.For(0, scored, new ParallelOptions { MaxDegreeOfParallelism = variant.Threads, CancellationToken = cancel }, i =>
            {
                var row = logits.AsSpan(i * vocab, vocab);
                var lb = baseChunk.AsSpan(i * vocab, vocab);
                float[] lq = ArrayPool<float>.Shared.Rent(vocab);
                try
                {
                    var q = lq.AsSpan(0, vocab);
                    LogSoftmax.Compute(row, q);
                    double k = 0;
                    int top = 0, topBase = 0;
                    for (int v = 0; v < vocab; v++)
                    {
                        if (q[v] > q[top]) top = v;
                        if (lb[v] > lb[topBase]) topBase = v;
                        if (lb[v] > -16f) k += MathF.Exp(lb[v]) * (lb[v] - q[v]);
                    }
                    kld[i] = k;
                    nll[i] = -q[_tokens[start + _plan.First + i + 1]];
                    same[i] = top == topBase;
                }
                finally { ArrayPool<float>.Shared.Return(lq); }
            });
            for (int i = 0; i < scored; i++)
            {
                sumKld += kld[i];
                sumKld2 += kld[i] * kld[i];
                sumNll += nll[i];
                if (same[i]) sameTop++;
                count++;
            }
        }
        double mean = sumKld / count;
        double var = sumKld2 / count - mean * mean;
        double err = var > 0 && count > 10 ? Math.Sqrt(var / (count - 1)) : 0;
        return new KldMeasurement(mean, err, (double)sameTop / count, Math.Exp(sumNll / count), count, sw.Elapsed.TotalSeconds);
    }
}
