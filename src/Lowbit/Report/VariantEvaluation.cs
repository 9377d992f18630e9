using System.Diagnostics;
using Lowbit.Engine;
using Lowbit.Eval;
using Lowbit.Formats;
using Lowbit.Model;
using Lowbit.Recipes;

namespace Lowbit.Report;

/// <summary>One quantized variant of a model, measured on this machine.</summary>
public sealed record VariantResult(
    string Name,
    long Bytes,
    double BitsPerWeight,
    double Perplexity,
    double MeanKld,
    double KldError,
    double SameTop,
    /// <summary>Tokens per second while evaluating the chunks (batched prompt processing) on this machine.</summary>
    double PrefillTokensPerSecond,
    /// <summary>Tokens per second decoding one token at a time on this machine.</summary>
    double DecodeTokensPerSecond);

/// <summary>Every variant of one model measured over the same chunks.</summary>
public sealed record VariantsReport
{
    public required string Model { get; init; }
    public required ModelConfig Config { get; init; }
    public required long Parameters { get; init; }
    public required int Context { get; init; }
    public required int Chunks { get; init; }
    public required int Threads { get; init; }
    public required double BasePerplexity { get; init; }
    /// <summary>The unquantized model as loaded (its size and speed; KLD 0 by definition).</summary>
    public required VariantResult Base { get; init; }
    public required IReadOnlyList<VariantResult> Variants { get; init; }
    /// <summary>Where the speeds were measured, e.g. "x64, 2 cores".</summary>
    public required string Machine { get; init; }
}

/// <summary>Quantizes a model in memory to each format (a GGUF mixture such as Q4_K_M or any codec) and measures it.</summary>
public static class VariantEvaluation
{
    /// <summary>Tokens decoded one by one for the decode-speed figure.</summary>
    public const int DecodeTokens = 32;

    public static VariantsReport Evaluate(LoadedModel model, string modelName, SensitivityBaseline baseline, IReadOnlyList<string> formats,
        EngineOptions engineOptions, IProgress<string>? progress = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(formats);
        var results = new List<VariantResult>();
        progress?.Report("base");
        var baseResult = Measure(model, "base (" + string.Join("/", model.Tensors.Where(GgufMixture.IsQuantizable).Select(t => t.Codec.Name).Distinct()) + ")",
            baseline, engineOptions, cancel);
        foreach (var f in formats)
        {
            cancel.ThrowIfCancellationRequested();
            progress?.Report(f);
            var variant = Pipeline.ModelTransforms.Quantize(model, Plan(model, f), engineOptions.Threads, cancel: cancel);
            results.Add(Measure(variant, GgufMixture.TryGet(f)?.Name ?? CodecRegistry.Get(f).Name, baseline, engineOptions, cancel));
        }
        return new VariantsReport
        {
            Model = modelName,
            Config = model.Config,
            Parameters = model.Tensors.Sum(t => t.ElementCount),
            Context = baseline.Context,
            Chunks = baseline.Chunks,
            Threads = engineOptions.Threads,
            BasePerplexity = baseline.BasePerplexity,
            Base = baseResult,
            Variants = results,
            Machine = $"{System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture}, {Environment.ProcessorCount} cores, {engineOptions.Threads} threads",
        };
    }

    /// <summary>
    /// Tensor → codec for a format name: a GGUF mixture (llama.cpp's per-tensor rules) or a codec
    /// applied to every quantizable tensor whose rows it can split (others keep their type).
    /// </summary>
    public static IReadOnlyDictionary<string, TensorCodec> Plan(LoadedModel model, string format) => GgufMixture.CodecPlan(model, format);

    private static VariantResult Measure(LoadedModel variant, string name, SensitivityBaseline baseline, EngineOptions engineOptions, CancellationToken cancel)
    {
        var engine = new InferenceEngine(variant, engineOptions);
        var m = baseline.Measure(engine, cancel);
        long bytes = variant.Tensors.Sum(t => t.ByteCount);
        long parameters = variant.Tensors.Sum(t => t.ElementCount);
        double prefill = m.Seconds > 0 ? (double)baseline.Chunks * baseline.Context / m.Seconds : 0;
        double decode = MeasureDecode(engine, cancel);
        return new VariantResult(name, bytes, 8.0 * bytes / parameters, m.Perplexity, m.MeanKld, m.KldError, m.SameTop, prefill, decode);
    }

    /// <summary>
    /// Decode tokens/s: one token at a time from an empty cache, median of three runs. On a small model a run
    /// takes milliseconds, so the warm-up lasts a fixed time (≥ 0.3 s) rather than a few tokens: the .NET tiered
    /// JIT recompiles hot kernels with full optimization only after ~100 ms, and earlier runs would time tier-0 code.
    /// </summary>
    private static double MeasureDecode(InferenceEngine engine, CancellationToken cancel)
    {
        int n = Math.Min(DecodeTokens, engine.ContextLength - 1);
        if (n <= 0) return 0;
        void Run()
        {
            engine.Reset();
            for (int i = 0; i < n; i++) engine.Decode((i * 7919 + 3) % engine.VocabSize);
        }
        var warm = Stopwatch.StartNew();
        do
        {
            cancel.ThrowIfCancellationRequested();
            Run();
        } while (warm.Elapsed.TotalSeconds < 0.3);
        var rates = new double[3];
        for (int r = 0; r < rates.Length; r++)
        {
            cancel.ThrowIfCancellationRequested();
            var sw = Stopwatch.StartNew();
            Run();
            rates[r] = n / Math.Max(1e-9, sw.Elapsed.TotalSeconds);
        }
        Array.Sort(rates);
        engine.Reset();
        return rates[1];
    }
}
