using System.Diagnostics;
using System.Numerics.Tensors;
using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.Methods.Grids;
using Lowbit.Model;
using Lowbit.Pipeline;

namespace Lowbit.Methods.Calibration;

/// <summary>The quantized model and what it cost.</summary>
public sealed class CalibrationResult(LoadedModel model, IReadOnlyDictionary<string, ModelTensor> quantized,
    IReadOnlyList<CalibrationBlockReport> blocks, TimeSpan elapsed)
{
    /// <summary>The base model with every planned tensor replaced (shares unchanged tensors with the base: dispose the base last).</summary>
    public LoadedModel Model { get; } = model;
    /// <summary>The encoded tensors, by canonical name.</summary>
    public IReadOnlyDictionary<string, ModelTensor> Quantized { get; } = quantized;
    /// <summary>One report per block, then one for the non-block tensors (Layer = −1).</summary>
    public IReadOnlyList<CalibrationBlockReport> Blocks { get; } = blocks;
    public TimeSpan Elapsed { get; } = elapsed;
}

/// <summary>
/// Calibrated quantization, block by block like GPTQ's reference implementation: the calibration
/// samples are embedded once and kept as hidden states (samples × length × hidden, F32); for each
/// decoder block the inputs of its linears are observed to accumulate Hessians, the linears are
/// quantized (GPTQ on the target codec's grid, or RTN, optionally imatrix-weighted), and the block is
/// run again with the quantized weights so that the next block calibrates on the inputs the quantized
/// model will really produce. Only one block's weights are materialized at a time (a one-layer model
/// over views of the source), so memory stays at the hidden states + one block + its Hessians.
/// </summary>
public static class CalibrationPipeline
{
    /// <summary>The block's linears in execution order, grouped as true-sequential GPTQ quantizes them.</summary>
    public static IReadOnlyList<(string Name, LinearInput Input)[]> LinearGroups(int layer) =>
    [
        [(TensorNames.AttnQ(layer), LinearInput.Attention), (TensorNames.AttnK(layer), LinearInput.Attention), (TensorNames.AttnV(layer), LinearInput.Attention)],
        [(TensorNames.AttnOutput(layer), LinearInput.AttentionOutput)],
        [(TensorNames.FfnGate(layer), LinearInput.Ffn), (TensorNames.FfnUp(layer), LinearInput.Ffn)],
        [(TensorNames.FfnDown(layer), LinearInput.FfnDown)],
    ];

    public static CalibrationResult Run(LoadedModel model, CalibrationData data, IReadOnlyDictionary<string, TensorTarget> plan,
        CalibrationOptions? options = null, IProgress<CalibrationProgress>? progress = null, CancellationToken cancel = default)
    {
        options ??= new CalibrationOptions();
        var total = Stopwatch.StartNew();
        var cfg = model.Config;
        Validate(model, data, plan);
        int samples = data.Samples.Count, length = data.SampleLength, h = cfg.HiddenSize;
        int threads = Math.Max(1, options.Threads);

        var replacements = new Dictionary<string, ModelTensor>(StringComparer.Ordinal);
        var reports = new List<CalibrationBlockReport>();
        float[][] hidden;
        int firstBlock = 0;
        string? fingerprint = null;
        if (options.CheckpointDirectory is { } dir)
        {
            fingerprint = CalibrationCheckpoint.Fingerprint(model, data, plan, options.TrueSequential);
            if (options.Resume && CalibrationCheckpoint.TryLoad(dir, fingerprint, model, samples, length * h) is { } saved)
            {
                firstBlock = saved.LastBlock + 1;
                foreach (var t in saved.Tensors) replacements[t.Name] = t;
                hidden = saved.Hidden;
                for (int l = 0; l < firstBlock; l++)
                    reports.Add(new CalibrationBlockReport(l, 0, 0, 0, true,
                        saved.Tensors.Where(t => GgufLayer(t.Name) == l)
                            .Select(t => new CalibratedTensorReport(t.Name, t.Codec.Name, plan[t.Name].ToString(), t.ByteCount, null, 0)).ToList()));
            }
            else hidden = EmbedAll(model, data);
        }
        else hidden = EmbedAll(model, data);

        for (int layer = firstBlock; layer < cfg.NumLayers; layer++)
        {
            cancel.ThrowIfCancellationRequested();
            var sw = Stopwatch.StartNew();
            var blockReports = new List<CalibratedTensorReport>();
            double statsSeconds = 0, quantSeconds = 0;
            var current = BlockTensors(model, layer);
            var groups = options.TrueSequential
                ? LinearGroups(layer)
                : [LinearGroups(layer).SelectMany(g => g).ToArray()];
            foreach (var group in groups)
            {
                var planned = group.Where(e => plan.ContainsKey(e.Name)).ToArray();
                if (planned.Length == 0) continue;
                var kinds = planned.Where(e => plan[e.Name].NeedsStatistics).Select(e => e.Input).Distinct().ToArray();
                long ts = Stopwatch.GetTimestamp();
                // The q/k/v input is attn_norm(hidden): no need to run the block for it alone.
                var grams = kinds.Length == 0 ? new Dictionary<LinearInput, GramAccumulator>()
                    : kinds is [LinearInput.Attention]
                        ? new Dictionary<LinearInput, GramAccumulator> { [LinearInput.Attention] = NormedGram(model, TensorNames.AttnNorm(layer), hidden, length, threads, cancel) }
                        : CollectStatistics(model, layer, current, hidden, length, kinds, threads, cancel);
                statsSeconds += Stopwatch.GetElapsedTime(ts).TotalSeconds;
                if (options.OnStatistics is { } onStats)
                    foreach (var (kind, g) in grams) onStats(layer, kind, g);
                var hessians = new Dictionary<LinearInput, double[]>();
                foreach (var (name, input) in planned)
                {
                    cancel.ThrowIfCancellationRequested();
                    var target = plan[name];
                    var t0 = Stopwatch.GetTimestamp();
                    var source = current[Local(name)];
                    grams.TryGetValue(input, out var gram);
                    double[]? hessian = null;
                    if (target.Method == QuantMethod.Gptq && gram is not null && !hessians.TryGetValue(input, out hessian))
                        hessians[input] = hessian = gram.ToHessian();
                    var q = Quantize(source, name, target, gram, hessian, threads, cancel, out double? loss);
                    current[Local(name)] = Rename(q, Local(name));
                    replacements[name] = q;
                    double secs = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                    quantSeconds += secs;
                    blockReports.Add(new CalibratedTensorReport(name, q.Codec.Name, target.ToString(), q.ByteCount, loss, secs));
                }
            }

            // The next block's inputs: this block's outputs with its weights quantized.
            long tp = Stopwatch.GetTimestamp();
            var engine = BlockEngine(model, current, length, threads, null);
            foreach (var hs in hidden)
            {
                cancel.ThrowIfCancellationRequested();
                engine.ForwardLayers(hs, length, 0, 1);
            }
            double propagateSeconds = Stopwatch.GetElapsedTime(tp).TotalSeconds;
            if (options.CheckpointDirectory is { } cdir)
                CalibrationCheckpoint.SaveBlock(cdir, fingerprint!, layer, blockReports.Select(r => replacements[r.Name]).ToList(), hidden, length * h);

            var report = new CalibrationBlockReport(layer, sw.Elapsed.TotalSeconds, GC.GetTotalMemory(false), PeakWorkingSet(), false, blockReports)
            {
                StatisticsSeconds = statsSeconds, QuantizeSeconds = quantSeconds, PropagateSeconds = propagateSeconds,
            };
            reports.Add(report);
            progress?.Report(new CalibrationProgress(layer + 1, cfg.NumLayers, report));
        }

        // Non-block tensors: the LM head can use GPTQ on the final normalized hidden states; everything else is RTN.
        var tail = Stopwatch.StartNew();
        var tailReports = new List<CalibratedTensorReport>();
        foreach (var (name, target) in plan.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            if (GgufLayer(name) >= 0) continue;
            cancel.ThrowIfCancellationRequested();
            var t0 = Stopwatch.GetTimestamp();
            var source = model.Get(name);
            GramAccumulator? gram = null;
            double[]? hessian = null;
            var effective = target;
            if (target.Method == QuantMethod.Gptq && name != TensorNames.Output)
                effective = target with { Method = QuantMethod.Rtn }; // an embedding lookup has no input activations to calibrate on
            if (effective.NeedsStatistics && name == TensorNames.Output)
            {
                gram = NormedGram(model, TensorNames.OutputNorm, hidden, length, threads, cancel);
                if (effective.Method == QuantMethod.Gptq) hessian = gram.ToHessian();
            }
            var q = Quantize(Rename(source, name), name, effective, gram, hessian, threads, cancel, out double? loss);
            replacements[name] = q;
            tailReports.Add(new CalibratedTensorReport(name, q.Codec.Name, effective.ToString(), q.ByteCount, loss, Stopwatch.GetElapsedTime(t0).TotalSeconds));
        }
        var tailReport = new CalibrationBlockReport(-1, tail.Elapsed.TotalSeconds, GC.GetTotalMemory(false), PeakWorkingSet(), false, tailReports);
        reports.Add(tailReport);
        progress?.Report(new CalibrationProgress(cfg.NumLayers, cfg.NumLayers, tailReport));
        return new CalibrationResult(ModelTransforms.WithTensors(model, replacements), replacements, reports, total.Elapsed);
    }

    private static void Validate(LoadedModel model, CalibrationData data, IReadOnlyDictionary<string, TensorTarget> plan)
    {
        if (data.Samples.Count == 0) throw new LowbitException("calibration needs at least one sample");
        int length = data.SampleLength;
        if (data.Samples.Any(s => s.Length != length)) throw new LowbitException("calibration samples must all have the same length");
        if (length > model.Config.MaxPositions)
            throw new LowbitException($"calibration samples of {length} tokens exceed the model's context of {model.Config.MaxPositions}");
        foreach (var (name, target) in plan)
        {
            var t = model.TryGet(name) ?? throw new LowbitException($"plan names tensor '{name}', which the model does not have");
            if (t.Shape.Length != 2) throw new LowbitException($"'{name}' is not a matrix; only 2-D weights can be quantized");
            if (!target.Codec.CanEncodeRow(t.Cols))
                throw new LowbitException($"{target.Codec.Name} cannot encode rows of {t.Cols} values ('{name}'); block size is {target.Codec.BlockSize}");
            if (target.Method == QuantMethod.Gptq)
            {
                if (QuantGrids.TryFor(target.Codec) is null) throw new LowbitException($"GPTQ does not support format {target.Codec.Name} yet ('{name}')");
                if (!TensorQuantizer.IsRowCodec(target.Codec, t.Rows, t.Cols))
                    throw new LowbitException($"GPTQ needs a row-encoded format; {target.Codec.Name} has a tensor header ('{name}')");
            }
        }
    }

    private static ModelTensor Quantize(ModelTensor source, string name, TensorTarget target, GramAccumulator? gram, double[]? hessian,
        int threads, CancellationToken cancel, out double? loss)
    {
        loss = null;
        if (target.Method == QuantMethod.Gptq && hessian is not null)
        {
            var codec = target.Codec;
            int rows = checked((int)source.Rows), cols = checked((int)source.Cols);
            var r = GptqQuantizer.Quantize(source.ToFloat(), rows, cols, hessian, QuantGrids.For(codec), codec.RowBytes(cols), target.GptqOptions, cancel);
            loss = r.Loss;
            return new ModelTensor(name, source.Shape, codec, r.Encoded);
        }
        var importance = target.UseImportance && target.Codec.UsesImportance && gram is not null ? gram.MeanSquares() : default(ReadOnlyMemory<float>);
        var q = ModelTransforms.QuantizeTensor(source, target.Codec, importance, threads, cancel);
        return Rename(q, name);
    }

    /// <summary>Embeds every sample: the hidden states entering block 0 (rows of token_embd, dequantized).</summary>
    private static float[][] EmbedAll(LoadedModel model, CalibrationData data)
    {
        int length = data.SampleLength, h = model.Config.HiddenSize;
        var embd = model.Get(TensorNames.TokenEmbedding);
        if (embd.Cols != h) throw new InvalidModelFileException(model.SourcePath, $"'{embd.Name}' must have {h} columns");
        var bytes = embd.Data;
        var hidden = new float[data.Samples.Count][];
        for (int s = 0; s < hidden.Length; s++)
        {
            hidden[s] = new float[length * h];
            var sample = data.Samples[s];
            for (int t = 0; t < length; t++)
            {
                if ((uint)sample[t] >= (ulong)embd.Rows) throw new LowbitException($"calibration token id {sample[t]} is outside the vocabulary (0..{embd.Rows - 1})");
                embd.Codec.DequantizeTensorRows(bytes.Span, embd.Rows, h, sample[t], 1, hidden[s].AsSpan(t * h, h));
            }
        }
        return hidden;
    }

    /// <summary>Runs the block (current weights) over every sample with an observer accumulating the Gram matrices of <paramref name="kinds"/>.</summary>
    private static Dictionary<LinearInput, GramAccumulator> CollectStatistics(LoadedModel model, int layer, Dictionary<string, ModelTensor> current,
        float[][] hidden, int length, LinearInput[] kinds, int threads, CancellationToken cancel)
    {
        var cfg = model.Config;
        var grams = kinds.ToDictionary(k => k, k => new GramAccumulator(k switch
        {
            LinearInput.Attention or LinearInput.Ffn => cfg.HiddenSize,
            LinearInput.AttentionOutput => cfg.QDim,
            _ => cfg.IntermediateSize,
        }));
        var observer = new GramObserver(grams, kinds.Max(), threads);
        var engine = BlockEngine(model, current, length, threads, observer);
        var scratch = new float[length * cfg.HiddenSize];
        foreach (var hs in hidden)
        {
            cancel.ThrowIfCancellationRequested();
            hs.CopyTo(scratch, 0);
            try
            {
                engine.ForwardLayers(scratch, length, 0, 1);
            }
            catch (StatisticsComplete)
            {
                // The rest of the block cannot change the inputs already observed; the engine resets on its next call.
            }
        }
        return grams;
    }

    /// <summary>Gram matrix of RMSNorm(hidden) · weight (the engine's RMSNorm, same order of operations): the input of q/k/v or of the LM head.</summary>
    private static GramAccumulator NormedGram(LoadedModel model, string normName, float[][] hidden, int length, int threads, CancellationToken cancel)
    {
        var cfg = model.Config;
        int h = cfg.HiddenSize;
        var norm = model.Get(normName).ToFloat();
        var gram = new GramAccumulator(h);
        var normed = new float[length * h];
        foreach (var hs in hidden)
        {
            cancel.ThrowIfCancellationRequested();
            for (int t = 0; t < length; t++)
            {
                var x = hs.AsSpan(t * h, h);
                var o = normed.AsSpan(t * h, h);
                float ss = TensorPrimitives.SumOfSquares(x) / h + cfg.RmsNormEps;
                TensorPrimitives.Multiply(x, 1f / MathF.Sqrt(ss), o);
                TensorPrimitives.Multiply(o, norm, o);
            }
            gram.Add(normed, length, threads);
        }
        return gram;
    }

    /// <summary>Block <paramref name="layer"/>'s tensors, materialized once, under layer-0 names (the one-layer model's).</summary>
    private static Dictionary<string, ModelTensor> BlockTensors(LoadedModel model, int layer)
    {
        string prefix = $"blk.{layer}.";
        var d = new Dictionary<string, ModelTensor>(StringComparer.Ordinal);
        foreach (var t in model.Tensors)
            if (t.Name.StartsWith(prefix, StringComparison.Ordinal))
                d["blk.0." + t.Name[prefix.Length..]] = new ModelTensor("blk.0." + t.Name[prefix.Length..], t.Shape, t.Codec, t.Data);
        return d;
    }

    /// <summary>
    /// An engine over a one-layer model: the block's tensors, the final norm, and a one-row stand-in embedding
    /// (the engine only needs its width here; a one-token vocabulary keeps its logit buffer tiny).
    /// </summary>
    private static InferenceEngine BlockEngine(LoadedModel model, Dictionary<string, ModelTensor> block, int length, int threads, IActivationObserver? observer)
    {
        int h = model.Config.HiddenSize;
        var standIn = new ModelTensor(TensorNames.TokenEmbedding, [1, h], CodecRegistry.Get("f32"), new byte[h * sizeof(float)]);
        var tensors = new List<ModelTensor> { standIn, model.Get(TensorNames.OutputNorm) };
        tensors.AddRange(block.Values);
        var one = new LoadedModel(model.SourcePath, model.SourceFormat, model.Config with { NumLayers = 1, VocabSize = 1 }, model.Tokenizer, tensors, model.Metadata);
        return new InferenceEngine(one, new EngineOptions { Threads = threads, ContextLength = length, MaxBatch = length, QuantizedActivations = false })
        {
            Observer = observer,
        };
    }

    private static string Local(string name)
    {
        int l = GgufLayer(name);
        return l < 0 ? name : "blk.0." + name[($"blk.{l}.").Length..];
    }

    private static ModelTensor Rename(ModelTensor t, string name) => t.Name == name ? t : new ModelTensor(name, t.Shape, t.Codec, t.Data);

    /// <summary>The block index of a "blk.N." tensor name, or −1.</summary>
    public static int GgufLayer(string name)
    {
        if (!name.StartsWith("blk.", StringComparison.Ordinal)) return -1;
        int dot = name.IndexOf('.', 4);
        return dot > 4 && int.TryParse(name.AsSpan(4, dot - 4), out int l) ? l : -1;
    }

    private static long PeakWorkingSet()
    {
        using var p = Process.GetCurrentProcess();
        return p.PeakWorkingSet64;
    }

    /// <summary>
    /// Accumulates the requested inputs and, once the last one in execution order (<paramref name="last"/>) is seen,
    /// stops the forward pass: e.g. attn_output's statistics need only the attention half of the block.
    /// </summary>
    private sealed class GramObserver(Dictionary<LinearInput, GramAccumulator> grams, LinearInput last, int threads) : IActivationObserver
    {
        public void Observe(int layer, LinearInput kind, ReadOnlySpan<float> input, int tokens, int width)
        {
            if (grams.TryGetValue(kind, out var g)) g.Add(input, tokens, threads);
            if (kind == last) throw new StatisticsComplete();
        }
    }

    /// <summary>Ends a statistics pass early (thrown on the engine's thread by <see cref="GramObserver"/>, caught by the pass).</summary>
    private sealed class StatisticsComplete : Exception;
}
