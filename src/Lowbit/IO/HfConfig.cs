using System.Collections.Frozen;
using System.Text.Json;
using Lowbit.Model;

namespace Lowbit.IO;

/// <summary>
/// Reads a Hugging Face config.json of a Llama-family decoder (llama, mistral, qwen2, qwen3) into a
/// <see cref="ModelConfig"/> in Lowbit's conventions (llama/mistral: GGUF-permuted q/k with interleaved
/// RoPE; qwen2/qwen3: unpermuted with NeoX RoPE). Defaults follow the transformers config classes.
/// </summary>
public static class HfConfig
{
    public static readonly IReadOnlyList<string> SupportedModelTypes = ["llama", "mistral", "qwen2", "qwen3"];

    private static readonly FrozenDictionary<string, string> ArchitectureToModelType = new Dictionary<string, string>
    {
        ["LlamaForCausalLM"] = "llama",
        ["MistralForCausalLM"] = "mistral",
        ["Qwen2ForCausalLM"] = "qwen2",
        ["Qwen3ForCausalLM"] = "qwen3",
    }.ToFrozenDictionary(StringComparer.Ordinal);

    public static ModelConfig Read(string configJsonPath)
    {
        if (!File.Exists(configJsonPath)) throw new LowbitException($"{configJsonPath}: file not found");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(configJsonPath), new JsonDocumentOptions { AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(configJsonPath, $"not valid JSON ({e.Message})");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(configJsonPath, "expected a JSON object");
            return Parse(configJsonPath, doc.RootElement);
        }
    }

    internal static ModelConfig Parse(string path, JsonElement root)
    {
        var j = new JsonFields(path, root);
        string? modelType = j.OptString("model_type");
        string? archName = null;
        if (root.TryGetProperty("architectures", out var archs) && archs.ValueKind == JsonValueKind.Array && archs.GetArrayLength() > 0)
            archName = archs[0].ValueKind == JsonValueKind.String ? archs[0].GetString() : null;
        if (modelType is null && archName is not null) ArchitectureToModelType.TryGetValue(archName, out modelType);
        string supported = string.Join(", ", SupportedModelTypes);
        if (modelType is null || !SupportedModelTypes.Contains(modelType))
            throw new LowbitException($"{path}: unsupported architecture '{modelType ?? archName ?? "(none given)"}' (supported: {supported})");
        if (archName is not null && !ArchitectureToModelType.ContainsKey(archName))
            throw new LowbitException($"{path}: unsupported architecture '{archName}' (supported: {string.Join(", ", ArchitectureToModelType.Keys)})");

        int hidden = j.Int("hidden_size");
        int heads = j.Int("num_attention_heads");
        if (heads <= 0 || hidden <= 0) throw new InvalidModelFileException(path, "hidden_size and num_attention_heads must be positive");
        int kvHeads = j.OptInt("num_key_value_heads") ?? heads;
        int headDim = j.OptInt("head_dim") ?? hidden / heads;
        if (j.OptInt("head_dim") is null && hidden % heads != 0)
            throw new InvalidModelFileException(path, $"hidden_size {hidden} is not a multiple of num_attention_heads {heads} and head_dim is not given");
        if (kvHeads <= 0 || heads % kvHeads != 0)
            throw new InvalidModelFileException(path, $"num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        if (headDim <= 0 || headDim % 2 != 0)
            throw new InvalidModelFileException(path, $"head_dim {headDim} must be positive and even for RoPE");

        CheckRopeScaling(path, root);
        string? act = j.OptString("hidden_act");
        if (act is not null && act != "silu")
            throw new LowbitException($"{path}: hidden_act '{act}' is not supported (only silu)");
        if (j.OptBool("mlp_bias") == true)
            throw new LowbitException($"{path}: mlp_bias=true is not supported");

        bool isQwen2 = modelType == "qwen2", isQwen3 = modelType == "qwen3";
        int slidingWindow = 0;
        if (modelType == "mistral")
            slidingWindow = j.OptInt("sliding_window") ?? 0;
        else if ((isQwen2 || isQwen3) && j.OptBool("use_sliding_window") == true)
            throw new LowbitException($"{path}: use_sliding_window=true is not supported for {modelType}");

        float ropeTheta = j.OptFloat("rope_theta")
            ?? (root.TryGetProperty("rope_parameters", out var rp) && rp.ValueKind == JsonValueKind.Object
                ? new JsonFields(path, rp).OptFloat("rope_theta") : null)
            ?? 10000f;

        int vocab = j.Int("vocab_size"), ff = j.Int("intermediate_size"), layers = j.Int("num_hidden_layers");
        if (vocab <= 0 || ff <= 0 || layers <= 0)
            throw new InvalidModelFileException(path, $"vocab_size ({vocab}), intermediate_size ({ff}) and num_hidden_layers ({layers}) must be positive");

        return new ModelConfig
        {
            Architecture = modelType,
            VocabSize = vocab,
            HiddenSize = hidden,
            IntermediateSize = ff,
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            RmsNormEps = j.OptFloat("rms_norm_eps") ?? 1e-6f,
            RopeTheta = ropeTheta,
            MaxPositions = j.OptInt("max_position_embeddings") ?? 2048,
            TieEmbeddings = j.OptBool("tie_word_embeddings") ?? false,
            // Qwen2's attention always has q/k/v biases (the transformers class hard-codes them).
            AttentionBias = isQwen2 || (j.OptBool("attention_bias") ?? false),
            QkNorm = isQwen3,
            Rope = modelType is "llama" or "mistral" ? RopeStyle.Interleaved : RopeStyle.NeoX,
            SlidingWindow = slidingWindow,
            BosTokenId = j.OptFirstInt("bos_token_id") ?? 1,
            EosTokenId = j.OptFirstInt("eos_token_id") ?? 2,
        };
    }

    /// <summary>
    /// rope_scaling changes the RoPE frequencies (linear, dynamic, yarn, llama3, ...), which the engine does
    /// not implement: only an absent/null value, a "default" type, or a linear factor of 1 are accepted.
    /// </summary>
    private static void CheckRopeScaling(string path, JsonElement root)
    {
        foreach (var key in new[] { "rope_scaling", "rope_parameters" })
        {
            if (!root.TryGetProperty(key, out var rs) || rs.ValueKind == JsonValueKind.Null) continue;
            if (rs.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(path, $"{key} must be an object or null");
            string? type = null;
            if (rs.TryGetProperty("rope_type", out var t) && t.ValueKind == JsonValueKind.String) type = t.GetString();
            else if (rs.TryGetProperty("type", out t) && t.ValueKind == JsonValueKind.String) type = t.GetString();
            double factor = rs.TryGetProperty("factor", out var f) && f.ValueKind == JsonValueKind.Number ? f.GetDouble() : 1.0;
            bool compatible = type is null or "default" || (type == "linear" && factor == 1.0);
            if (!compatible)
                throw new LowbitException($"{path}: {key} type '{type}' (factor {factor}) is not supported; only unscaled RoPE is implemented");
        }
    }

    /// <summary>Typed access to config fields with one-line errors naming the field.</summary>
    private readonly struct JsonFields(string path, JsonElement root)
    {
        public int Int(string name) => OptInt(name)
            ?? throw new InvalidModelFileException(path, $"missing required integer field \"{name}\"");

        public int? OptInt(string name)
        {
            if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i))
                throw new InvalidModelFileException(path, $"field \"{name}\" must be a 32-bit integer, found {v}");
            return i;
        }

        /// <summary>An integer or the first of an integer list (eos_token_id may list several).</summary>
        public int? OptFirstInt(string name)
        {
            if (root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array)
                return v.GetArrayLength() > 0 && v[0].TryGetInt32(out int first) ? first : null;
            return OptInt(name);
        }

        public float? OptFloat(string name)
        {
            if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind != JsonValueKind.Number)
                throw new InvalidModelFileException(path, $"field \"{name}\" must be a number, found {v}");
            return (float)v.GetDouble();
        }

        public bool? OptBool(string name)
        {
            if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
                throw new InvalidModelFileException(path, $"field \"{name}\" must be true or false, found {v}");
            return v.GetBoolean();
        }

        public string? OptString(string name)
        {
            if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind != JsonValueKind.String)
                throw new InvalidModelFileException(path, $"field \"{name}\" must be a string, found {v}");
            return v.GetString();
        }
    }
}
