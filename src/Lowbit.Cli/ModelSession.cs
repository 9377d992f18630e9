using System.CommandLine;
using System.Text;
using Lowbit.Engine;
using Lowbit.IO;
using Lowbit.Model;
using Lowbit.Pipeline;
using Lowbit.Recipes;
using Lowbit.Formats;

namespace Lowbit.Cli;

/// <summary>Options that open a model for running: threads, context, KV cache type.</summary>
public sealed class EngineCliOptions
{
    public Option<int> Threads { get; } = CliOptions.Threads();
    public Option<int> Context { get; } = new("--ctx", "-c") { Description = "Context length in tokens (capped at the model's trained context).", DefaultValueFactory = _ => 512 };
    public Option<string> KvCache { get; } = new("--kv-cache") { Description = "KV cache type: f32, f16, q8_0, fp8.", DefaultValueFactory = _ => "f32" };
    public Option<bool> NoInterleave { get; } = new("--no-interleave")
    {
        Description = "Decode Q4_0/Q8_0/Q4_K/F16 from the file's row layout instead of an 8-row interleaved copy made at load (saves that copy's memory; same results, slower decode).",
    };

    public void AddTo(Command c)
    {
        c.Options.Add(Threads);
        c.Options.Add(Context);
        c.Options.Add(KvCache);
        c.Options.Add(NoInterleave);
    }

    public static KvCacheType ParseKv(string s) => s.ToLowerInvariant() switch
    {
        "f32" => KvCacheType.F32,
        "f16" => KvCacheType.F16,
        "q8_0" or "q8" => KvCacheType.Q8_0,
        "fp8" or "fp8_e4m3" => KvCacheType.Fp8E4M3,
        _ => throw new LowbitException($"unknown KV cache type '{s}' (f32, f16, q8_0, fp8)"),
    };

    /// <summary>The context actually used: the request capped at the model's trained context.</summary>
    public int EffectiveContext(ParseResult pr, ModelConfig config) => Math.Min(pr.GetValue(Context), config.MaxPositions);

    public InferenceEngine CreateEngine(ParseResult pr, LoadedModel model) => new(model, new EngineOptions
    {
        Threads = pr.GetValue(Threads),
        ContextLength = EffectiveContext(pr, model.Config),
        KvCache = ParseKv(pr.GetValue(KvCache)!),
        InterleavedDecode = !pr.GetValue(NoInterleave),
    });
}

/// <summary>Opening models and text for the evaluation commands.</summary>
public static class ModelSession
{
    /// <summary>
    /// Opens <paramref name="path"/>; with <paramref name="inMemoryFormat"/>, returns the model quantized in memory
    /// with that GGUF mixture or codec (nothing is written), so any format can be evaluated without a file.
    /// </summary>
    public static LoadedModel Open(string path, string? inMemoryFormat, int threads, out LoadedModel? owner)
    {
        var model = ModelLoader.Open(path);
        owner = null;
        if (string.IsNullOrEmpty(inMemoryFormat)) return model;
        owner = model;
        return QuantizeInMemory(model, inMemoryFormat, threads);
    }

    public static LoadedModel QuantizeInMemory(LoadedModel model, string format, int threads, Func<string, ReadOnlyMemory<float>>? importance = null)
        => ModelTransforms.Quantize(model, GgufMixture.CodecPlan(model, format, importance is not null), threads, importance);

    public static Tokenizer RequireTokenizer(LoadedModel model, string? tokenizerFrom)
    {
        if (!string.IsNullOrEmpty(tokenizerFrom))
        {
            using var other = ModelLoader.Open(tokenizerFrom);
            return Tokenizer.ForModel(other) ?? throw new LowbitException($"{tokenizerFrom}: has no tokenizer");
        }
        return Tokenizer.ForModel(model)
            ?? throw new LowbitException($"{model.SourcePath}: the model has no tokenizer; pass --tokenizer with a model that has one");
    }

    public static string ReadText(string? path)
    {
        string p = string.IsNullOrEmpty(path) ? BundledPaths.Resolve(BundledPaths.DefaultEvalText) : path;
        if (!File.Exists(p)) throw new LowbitException($"{p}: text file not found");
        return File.ReadAllText(p, Encoding.UTF8);
    }
}
