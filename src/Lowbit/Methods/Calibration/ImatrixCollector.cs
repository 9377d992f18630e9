using Lowbit.Engine;
using Lowbit.IO;
using Lowbit.Model;

namespace Lowbit.Methods.Calibration;

/// <summary>Progress after each evaluated chunk.</summary>
public sealed record ImatrixProgress(int Chunk, int Chunks, double Seconds);

/// <summary>
/// Collects a llama.cpp-style importance matrix: the calibration text is cut into sequential chunks of
/// <c>ctx</c> tokens (each starting with BOS, like llama-imatrix), every chunk is run through the model,
/// and an <see cref="IActivationObserver"/> adds Σx² per input column and the token count for each
/// weight tensor. The q/k/v projections read the same input, so their entries hold the same values,
/// as llama.cpp stores them.
/// </summary>
public static class ImatrixCollector
{
    public static ImportanceMatrix Collect(InferenceEngine engine, IReadOnlyList<int> tokens, int context, int? maxChunks, int bosToken,
        string dataset, IProgress<ImatrixProgress>? progress = null, CancellationToken cancel = default)
    {
        if (context < 2) throw new LowbitException($"imatrix context must be at least 2 tokens, got {context}");
        if (context > engine.ContextLength) throw new LowbitException($"imatrix context {context} exceeds the engine's context {engine.ContextLength}");
        int chunks = tokens.Count / context;
        if (maxChunks is { } m) chunks = Math.Min(chunks, m);
        if (chunks < 1) throw new LowbitException($"{dataset}: {tokens.Count} tokens of text are less than one chunk of {context}");

        var observer = new SumSquaresObserver();
        var previous = engine.Observer;
        engine.Observer = observer;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            var chunk = new int[context];
            for (int c = 0; c < chunks; c++)
            {
                cancel.ThrowIfCancellationRequested();
                for (int i = 0; i < context; i++) chunk[i] = tokens[c * context + i];
                chunk[0] = bosToken;
                engine.Reset();
                // Only the activations matter: no logits are computed.
                engine.Evaluate(chunk, context, []);
                progress?.Report(new ImatrixProgress(c + 1, chunks, sw.Elapsed.TotalSeconds));
            }
        }
        finally
        {
            engine.Observer = previous;
        }
        return observer.ToImportanceMatrix(dataset, chunks, context);
    }

    /// <summary>Σx² per column and token counts, per layer and linear input (double sums, fixed order).</summary>
    private sealed class SumSquaresObserver : IActivationObserver
    {
        private readonly Dictionary<(int Layer, LinearInput Kind), (double[] Sums, long Count)> _stats = [];

        public void Observe(int layer, LinearInput kind, ReadOnlySpan<float> input, int tokens, int width)
        {
            if (!_stats.TryGetValue((layer, kind), out var s)) s = (new double[width], 0);
            var sums = s.Sums;
            for (int t = 0; t < tokens; t++)
            {
                var row = input.Slice(t * width, width);
                for (int j = 0; j < width; j++) sums[j] += (double)row[j] * row[j];
            }
            _stats[(layer, kind)] = (sums, s.Count + tokens);
        }

        public ImportanceMatrix ToImportanceMatrix(string dataset, int chunks, int context)
        {
            var entries = new Dictionary<string, ImatrixEntry>(StringComparer.Ordinal);
            foreach (var ((layer, kind), (sums, count)) in _stats)
            {
                var f = sums.Select(v => (float)v).ToArray();
                foreach (var name in TensorsReading(layer, kind))
                    entries[name] = new ImatrixEntry((float[])f.Clone(), [count]);
            }
            return new ImportanceMatrix(entries, [dataset], chunks, context);
        }

        private static string[] TensorsReading(int layer, LinearInput kind) => kind switch
        {
            LinearInput.Attention => [TensorNames.AttnQ(layer), TensorNames.AttnK(layer), TensorNames.AttnV(layer)],
            LinearInput.AttentionOutput => [TensorNames.AttnOutput(layer)],
            LinearInput.Ffn => [TensorNames.FfnGate(layer), TensorNames.FfnUp(layer)],
            _ => [TensorNames.FfnDown(layer)],
        };
    }
}
