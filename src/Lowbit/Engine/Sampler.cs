namespace Lowbit.Engine;

/// <summary>Sampling settings. Temperature 0 (or TopK 1) is greedy decoding.</summary>
public sealed record SamplerOptions
{
    public float Temperature { get; init; } = 0f;
    /// <summary>Keep the k most likely tokens; 0 = all.</summary>
    public int TopK { get; init; }
    /// <summary>Nucleus: keep the smallest set of most likely tokens whose probability reaches p; 1 = all.</summary>
    public float TopP { get; init; } = 1f;
    public ulong Seed { get; init; } = 42;
}

/// <summary>
/// Picks the next token from logits: greedy, or temperature → top-k → top-p → draw with a seeded
/// xorshift RNG (same seed, same logits ⇒ same tokens on every machine).
/// </summary>
public sealed class Sampler
{
    private readonly SamplerOptions _o;
    private ulong _state;
    private (float P, int Id)[] _candidates = [];

    public Sampler(SamplerOptions? options = null)
    {
        _o = options ?? new SamplerOptions();
        if (_o.Temperature < 0 || float.IsNaN(_o.Temperature)) throw new LowbitException($"temperature must be ≥ 0, got {_o.Temperature}");
        if (_o.TopK < 0) throw new LowbitException($"top-k must be ≥ 0, got {_o.TopK}");
        if (!(_o.TopP > 0 && _o.TopP <= 1)) throw new LowbitException($"top-p must be in (0, 1], got {_o.TopP}");
        _state = _o.Seed == 0 ? 0x9E3779B97F4A7C15UL : _o.Seed;
    }

    public bool IsGreedy => _o.Temperature == 0 || _o.TopK == 1;

    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    /// <summary>Uniform in [0, 1) from xorshift64* (24 significant bits, exact in float).</summary>
    private float NextUniform()
    {
        _state ^= _state >> 12;
        _state ^= _state << 25;
        _state ^= _state >> 27;
        return ((_state * 0x2545F4914F6CDD1DUL) >> 40) / 16777216f;
    }

    public int Sample(ReadOnlySpan<float> logits)
    {
        if (IsGreedy) return ArgMax(logits);
        int n = logits.Length;
        if (_candidates.Length < n) _candidates = new (float, int)[n];
        var c = _candidates.AsSpan(0, n);
        float max = logits[ArgMax(logits)];
        double sum = 0;
        for (int i = 0; i < n; i++)
        {
            float p = MathF.Exp((logits[i] - max) / _o.Temperature);
            c[i] = (p, i);
            sum += p;
        }
        int keep = n;
        bool truncate = (_o.TopK > 0 && _o.TopK < n) || _o.TopP < 1;
        if (truncate)
        {
            // Descending probability, ties by id, so the order is fully determined.
            c.Sort(static (a, b) => a.P != b.P ? b.P.CompareTo(a.P) : a.Id.CompareTo(b.Id));
            if (_o.TopK > 0) keep = Math.Min(keep, _o.TopK);
            sum = 0;
            for (int i = 0; i < keep; i++) sum += c[i].P;
            if (_o.TopP < 1)
            {
                double cum = 0;
                for (int i = 0; i < keep; i++)
                {
                    cum += c[i].P;
                    if (cum >= _o.TopP * sum) { keep = i + 1; break; }
                }
                sum = 0;
                for (int i = 0; i < keep; i++) sum += c[i].P;
            }
        }
        double r = NextUniform() * sum, acc = 0;
        for (int i = 0; i < keep; i++)
        {
            acc += c[i].P;
            if (r < acc) return c[i].Id;
        }
        return c[keep - 1].Id;
    }
}

/// <summary>One generated token with its timing.</summary>
public readonly record struct GeneratedToken(int Token, int Position, double Seconds);

/// <summary>Streaming text generation over an <see cref="InferenceEngine"/>.</summary>
public static class Generator
{
    /// <summary>
    /// Evaluates the prompt (one batch), then samples up to <paramref name="maxTokens"/> tokens,
    /// yielding each as soon as it is chosen; stops after EOS (not yielded unless
    /// <paramref name="yieldEos"/>), at the token budget or when the context is full.
    /// The engine is reset first.
    /// </summary>
    public static IEnumerable<GeneratedToken> Generate(InferenceEngine engine, IReadOnlyList<int> prompt, int maxTokens,
        Sampler? sampler = null, int? eosToken = null, bool yieldEos = false, CancellationToken cancellationToken = default)
    {
        if (prompt.Count == 0) throw new LowbitException("the prompt is empty (start with BOS)");
        sampler ??= new Sampler();
        int eos = eosToken ?? engine.Config.EosTokenId;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        engine.Reset();
        float[] logits = engine.Prefill(prompt.ToArray());
        for (int i = 0; i < maxTokens; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int next = sampler.Sample(logits);
            if (next == eos)
            {
                if (yieldEos) yield return new GeneratedToken(next, engine.Position, sw.Elapsed.TotalSeconds);
                yield break;
            }
            yield return new GeneratedToken(next, engine.Position, sw.Elapsed.TotalSeconds);
            if (i + 1 == maxTokens || engine.Position >= engine.ContextLength) yield break;
            logits = engine.Decode(next);
        }
    }
}
