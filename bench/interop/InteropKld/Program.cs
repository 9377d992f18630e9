using System.Globalization;
using System.Text.Json;
using Lowbit;
using Lowbit.Engine;
using Lowbit.Eval;
using Lowbit.IO;
using Lowbit.Pipeline;
using Lowbit.Recipes;
using System.Text.RegularExpressions;

// usage: InteropKld <model.gguf> <llama.lbp> [threads]
// Prints one JSON object: Lowbit's KL-divergence from llama.cpp's log-probabilities (saved by
// llama-check.mjs on the same token ids) with Lowbit's default engine settings and with the
// settings that reproduce llama.cpp's CPU arithmetic.
try
{
    if (args.Length > 0 && args[0] == "logits") return CompareLogits(args);
    if (args.Length > 0 && args[0] == "partial") return WritePartial(args);
    if (args.Length < 2) throw new LowbitException("usage: InteropKld <model.gguf> <llama.lbp> [threads]");
    int threads = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : Environment.ProcessorCount;
    using var model = ModelLoader.Open(args[0]);
    var results = new Dictionary<string, object>();
    // lowbit_default: float activations in prefill, F32 KV cache (what `lowbit kld` runs).
    // ggml_faithful: activations quantized to the codec's vec_dot type for every batch and an F16 KV
    // cache, as llama.cpp's CPU backend does with its default context settings.
    foreach (bool ggml in new[] { false, true })
    {
        var engine = new InferenceEngine(model, new EngineOptions
        {
            Threads = threads,
            ContextLength = model.Config.MaxPositions,
            QuantizedActivations = true,
            QuantizedActivationsInPrefill = ggml,
            KvCache = ggml ? KvCacheType.F16 : KvCacheType.F32,
        });
        var r = KlDivergence.Compute(engine, args[1]);
        results[ggml ? "ggml_faithful" : "lowbit_default"] = new
        {
            ppl_lowbit = r.PplQuantized.Value,
            ppl_llama = r.PplBase.Value,
            mean_kld = r.MeanKld.Value,
            max_kld = r.MaxKld,
            same_top = r.SameTop.Value,
        };
    }
    Console.WriteLine(JsonSerializer.Serialize(results));
    return 0;
}
catch (LowbitException e)
{
    Console.Error.WriteLine("error: " + e.Message);
    return 1;
}

// usage: InteropKld logits <model.gguf> <comma-separated token ids> <llama-logits.txt>
// JSON: max |logit difference| at the last position between llama.cpp's logits (comma-separated
// text) and Lowbit's engine with float activations / with the ggml-faithful settings.
static int CompareLogits(string[] args)
{
    using var model = ModelLoader.Open(args[1]);
    int[] tokens = args[2].Split(',').Select(t => int.Parse(t, CultureInfo.InvariantCulture)).ToArray();
    float[] llama = File.ReadAllText(args[3]).Trim().Split(',').Select(v => float.Parse(v, CultureInfo.InvariantCulture)).ToArray();
    var results = new Dictionary<string, double>();
    foreach (bool ggml in new[] { false, true })
    {
        var engine = new InferenceEngine(model, new EngineOptions
        {
            Threads = 2, ContextLength = model.Config.MaxPositions,
            QuantizedActivations = ggml, QuantizedActivationsInPrefill = ggml, KvCache = ggml ? KvCacheType.F16 : KvCacheType.F32,
        });
        float[] logits = engine.Prefill(tokens);
        if (logits.Length != llama.Length) throw new LowbitException($"{args[3]}: {llama.Length} logits, the model has {logits.Length}");
        double maxDiff = 0;
        for (int i = 0; i < logits.Length; i++) maxDiff = Math.Max(maxDiff, Math.Abs(logits[i] - llama[i]));
        results[ggml ? "ggml_faithful" : "float_activations"] = maxDiff;
    }
    Console.WriteLine(JsonSerializer.Serialize(results));
    return 0;
}

// usage: InteropKld partial <f32.gguf> <out.gguf> <ggml type name> <tensor-name regex>
// A diagnostic file: only the tensors whose names match get the type, the rest keep theirs
// (to locate which matrix products differ between the two engines).
static int WritePartial(string[] args)
{
    using var model = ModelLoader.Open(args[1]);
    var type = Enum.Parse<Lowbit.Formats.GgmlType>(args[3], ignoreCase: true);
    var pattern = new Regex(args[4]);
    var plan = model.Tensors.Select(t => new MixtureEntry(t, pattern.IsMatch(t.Name) ? type : t.Codec.Ggml!.Value, null)).ToList();
    var metadata = GgufModelMetadata.Build(model.Config, model.Tokenizer!, "partial", LlamaFileType.AllF32);
    GgufExporter.Write(model, metadata, plan, args[2], 2);
    return 0;
}
