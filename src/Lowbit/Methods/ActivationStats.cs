using Lowbit.Engine;
using Lowbit.Model;

namespace Lowbit.Methods;

/// <summary>Settings of <see cref="ActivationStats"/> collection.</summary>
public sealed record ActivationStatsOptions
{
    /// <summary>Most input rows (tokens) kept per linear input for loss searches (AWQ scale/clip search).</summary>
    public int MaxSampleRows { get; init; } = 512;

    /// <summary>Seed of the reservoir subsample of rows.</summary>
    public int Seed { get; init; } = 1234;

    /// <summary>Engine worker threads.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;
}

/// <summary>
/// Statistics of one linear input (one layer, one <see cref="LinearInput"/>) over all calibration tokens:
/// mean |x| and max |x| per channel, and a seeded uniform subsample of whole rows (reservoir sampling).
/// </summary>
public sealed class LinearInputStats
{
    private readonly double[] _sumAbs;
    private readonly float[] _maxAbs;
    private readonly float[] _sample;
    private readonly int _capacity;
    private readonly Random _rng;
    private int _sampleRows;

    public LinearInputStats(int width, int maxSampleRows, int seed)
    {
        if (width <= 0) throw new ArgumentOutOfRangeException(nameof(width));
        Width = width;
        _capacity = Math.Max(1, maxSampleRows);
        _sumAbs = new double[width];
        _maxAbs = new float[width];
        _sample = new float[(long)_capacity * width];
        _rng = new Random(seed);
    }

    public int Width { get; }
    /// <summary>Number of tokens observed.</summary>
    public long Tokens { get; private set; }

    /// <summary>Mean |x| per channel over every observed token.</summary>
    public float[] MeanAbs => _sumAbs.Select(v => (float)(v / Math.Max(1, Tokens))).ToArray();

    /// <summary>Max |x| per channel over every observed token.</summary>
    public float[] MaxAbs => (float[])_maxAbs.Clone();

    /// <summary>Number of rows in <see cref="SampleRows"/>.</summary>
    public int SampleRowCount => _sampleRows;

    /// <summary>The subsampled rows (SampleRowCount × Width), a copy.</summary>
    public float[] SampleRows => _sample.AsSpan(0, _sampleRows * Width).ToArray();

    /// <summary>Adds tokens × Width values (row-major).</summary>
    public void Add(ReadOnlySpan<float> rows, int tokens)
    {
        int w = Width;
        if (rows.Length < (long)tokens * w) throw new ArgumentException("rows shorter than tokens × width");
        for (int t = 0; t < tokens; t++)
        {
            var row = rows.Slice(t * w, w);
            for (int c = 0; c < w; c++)
            {
                float a = Math.Abs(row[c]);
                _sumAbs[c] += a;
                if (a > _maxAbs[c]) _maxAbs[c] = a;
            }
            // Reservoir sampling (Algorithm R): every token has the same chance to be kept, whatever the order.
            long seen = Tokens++;
            if (_sampleRows < _capacity)
                row.CopyTo(_sample.AsSpan(_sampleRows++ * w, w));
            else
            {
                long j = _rng.NextInt64(seen + 1);
                if (j < _capacity) row.CopyTo(_sample.AsSpan((int)j * w, w));
            }
        }
    }
}

/// <summary>The statistics of the four linear inputs of one transformer block.</summary>
public sealed class LayerActivationStats(int layer, LinearInputStats attention, LinearInputStats attentionOutput,
    LinearInputStats ffn, LinearInputStats ffnDown)
{
    public int Layer { get; } = layer;
    public LinearInputStats Attention { get; } = attention;
    public LinearInputStats AttentionOutput { get; } = attentionOutput;
    public LinearInputStats Ffn { get; } = ffn;
    public LinearInputStats FfnDown { get; } = ffnDown;

    public LinearInputStats this[LinearInput kind] => kind switch
    {
        LinearInput.Attention => Attention,
        LinearInput.AttentionOutput => AttentionOutput,
        LinearInput.Ffn => Ffn,
        LinearInput.FfnDown => FfnDown,
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };
}

/// <summary>
/// Collects the inputs of every linear layer of a model over calibration token windows, block by
/// block: the samples are embedded once, then each block runs on the hidden states the previous one
/// produced (<see cref="InferenceEngine.ForwardLayers"/>), so only one block's statistics live at a
/// time. The statistics are those of the unmodified model — which is also what AutoAWQ uses: it
/// records a block's inputs while running the full-precision block forward, before scaling,
/// clipping or quantizing it, and feeds that full-precision output to the next block. (Scaling is
/// exact before quantization; only clipping would change later inputs slightly.)
/// </summary>
public sealed class ActivationStats
{
    private sealed class LayerObserver(int layer, LayerActivationStats stats) : IActivationObserver
    {
        public void Observe(int l, LinearInput kind, ReadOnlySpan<float> input, int tokens, int width)
        {
            if (l != layer) return;
            var s = stats[kind];
            if (s.Width != width) throw new LowbitException($"activation width {width} differs from expected {s.Width} ({kind})");
            s.Add(input, tokens);
        }
    }

    /// <summary>
    /// Streams per-block statistics: calls <paramref name="onLayer"/> for layers 0..NumLayers−1 in order.
    /// Each sample is one sequence (positions 0..n−1).
    /// </summary>
    public static void ForEachLayer(LoadedModel model, IReadOnlyList<int[]> samples, ActivationStatsOptions? options,
        Action<LayerActivationStats> onLayer, CancellationToken cancel = default)
    {
        options ??= new ActivationStatsOptions();
        var c = model.Config;
        if (samples.Count == 0) throw new LowbitException("activation statistics need at least one calibration sample");
        int maxLen = samples.Max(s => s.Length);
        if (samples.Any(s => s.Length == 0)) throw new LowbitException("a calibration sample is empty");
        var engine = new InferenceEngine(model, new EngineOptions
        {
            Threads = options.Threads, MaxBatch = maxLen, ContextLength = maxLen, QuantizedActivations = false,
        });
        int h = c.HiddenSize;
        var hidden = new float[samples.Count][];
        for (int i = 0; i < samples.Count; i++)
        {
            hidden[i] = new float[samples[i].Length * h];
            engine.Embed(samples[i], hidden[i]);
        }
        for (int l = 0; l < c.NumLayers; l++)
        {
            // Deterministic per-layer seeds (HashCode is randomized per process).
            int seed = unchecked(options.Seed * 1_000_003 + l * 16);
            var stats = new LayerActivationStats(l,
                new LinearInputStats(h, options.MaxSampleRows, seed + 1),
                new LinearInputStats(c.QDim, options.MaxSampleRows, seed + 2),
                new LinearInputStats(h, options.MaxSampleRows, seed + 3),
                new LinearInputStats(c.IntermediateSize, options.MaxSampleRows, seed + 4));
            engine.Observer = new LayerObserver(l, stats);
            for (int i = 0; i < samples.Count; i++)
            {
                cancel.ThrowIfCancellationRequested();
                engine.ForwardLayers(hidden[i], samples[i].Length, l, l + 1);
            }
            engine.Observer = null;
            onLayer(stats);
        }
    }

    /// <summary>Statistics of every layer at once (memory: NumLayers × 4 × MaxSampleRows × width floats).</summary>
    public static IReadOnlyList<LayerActivationStats> Collect(LoadedModel model, IReadOnlyList<int[]> samples,
        ActivationStatsOptions? options = null, CancellationToken cancel = default)
    {
        var all = new List<LayerActivationStats>(model.Config.NumLayers);
        ForEachLayer(model, samples, options, all.Add, cancel);
        return all;
    }
}
