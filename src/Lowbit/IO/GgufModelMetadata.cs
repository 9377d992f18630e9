using System.Globalization;
using Lowbit.Model;

namespace Lowbit.IO;

/// <summary>Choices for <see cref="GgufModelMetadata"/> that the configuration and tokenizer do not carry.</summary>
public sealed record GgufModelMetadataOptions
{
    /// <summary>tokenizer.ggml.pre; null = "default" for SentencePiece, "qwen2" for qwen2/qwen3 BPE.</summary>
    public string? PreTokenizer { get; init; }
    /// <summary>tokenizer.chat_template, written when set.</summary>
    public string? ChatTemplate { get; init; }
    /// <summary>Parameter count behind general.size_label; null = <see cref="ModelConfig.ParameterCount"/>.</summary>
    public long? ParameterCount { get; init; }
    /// <summary>general.quantization_version (ggml's GGML_QNT_VERSION).</summary>
    public uint QuantizationVersion { get; init; } = 2;
}

/// <summary>
/// The metadata llama.cpp's convert_hf_to_gguf.py writes for a Llama-family model, key for key and
/// type for type (llama.cpp's loader rejects e.g. an int32 where it expects a uint32), in the same
/// order: general.*, the {arch}.* hyper-parameters, general.file_type, the llama extras,
/// general.quantization_version, then tokenizer.ggml.*. MistralForCausalLM converts to arch "llama".
/// Notes: {arch}.attention.key_length/value_length are written for llama/mistral/qwen3 (their HF
/// configs carry head_dim) and for qwen2 only when the head size is not hidden/heads;
/// tokenizer.ggml.unknown_token_id is written for SentencePiece vocabularies.
/// </summary>
public static class GgufModelMetadata
{
    public const uint QuantizationVersion = 2;

    /// <summary>New metadata for the model (add it to a <see cref="GgufWriter"/> with <see cref="AddTo"/> instead to keep the writer's).</summary>
    public static GgufMetadata Build(ModelConfig config, TokenizerInfo tokenizer, string modelName, LlamaFileType fileType,
        GgufModelMetadataOptions? options = null)
    {
        var md = new GgufMetadata();
        AddTo(md, config, tokenizer, modelName, fileType, options);
        return md;
    }

    /// <summary>Adds the model's keys to <paramref name="md"/> (e.g. <c>writer.Metadata</c>).</summary>
    public static void AddTo(GgufMetadata md, ModelConfig config, TokenizerInfo tokenizer, string modelName, LlamaFileType fileType,
        GgufModelMetadataOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(md);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(tokenizer);
        options ??= new GgufModelMetadataOptions();
        string arch = config.Architecture switch
        {
            "llama" or "mistral" => "llama",
            "qwen2" => "qwen2",
            "qwen3" => "qwen3",
            _ => throw new LowbitException($"cannot write GGUF metadata for architecture '{config.Architecture}' (supported: llama, mistral, qwen2, qwen3)"),
        };
        if (tokenizer.Tokens.Count != config.VocabSize)
            throw new LowbitException($"the tokenizer has {tokenizer.Tokens.Count} tokens but the model's vocabulary is {config.VocabSize}");
        if (tokenizer.Model is not ("llama" or "gpt2"))
            throw new LowbitException($"cannot write tokenizer model '{tokenizer.Model}' to GGUF (supported: llama, gpt2)");

        md.Set("general.architecture", arch);
        md.Set("general.type", "model");
        md.Set("general.name", modelName);
        long parameters = options.ParameterCount ?? config.ParameterCount;
        if (parameters > 0) md.Set("general.size_label", SizeLabel(parameters));

        md.Set($"{arch}.block_count", (uint)config.NumLayers);
        md.Set($"{arch}.context_length", (uint)config.MaxPositions);
        md.Set($"{arch}.embedding_length", (uint)config.HiddenSize);
        md.Set($"{arch}.feed_forward_length", (uint)config.IntermediateSize);
        md.Set($"{arch}.attention.head_count", (uint)config.NumHeads);
        md.Set($"{arch}.attention.head_count_kv", (uint)config.NumKvHeads);
        md.Set($"{arch}.rope.freq_base", config.RopeTheta);
        md.Set($"{arch}.attention.layer_norm_rms_epsilon", config.RmsNormEps);
        bool headDimIsDefault = config.NumHeads > 0 && config.HiddenSize == config.NumHeads * config.HeadDim;
        if (arch != "qwen2" || !headDimIsDefault)
        {
            md.Set($"{arch}.attention.key_length", (uint)config.HeadDim);
            md.Set($"{arch}.attention.value_length", (uint)config.HeadDim);
        }
        md.Set("general.file_type", (uint)fileType);
        if (arch == "llama")
        {
            md.Set("llama.vocab_size", (uint)config.VocabSize);
            md.Set("llama.rope.dimension_count", (uint)config.HeadDim);
        }
        md.Set("general.quantization_version", options.QuantizationVersion);

        AddTokenizer(md, arch, tokenizer, options);
    }

    private static void AddTokenizer(GgufMetadata md, string arch, TokenizerInfo tok, GgufModelMetadataOptions options)
    {
        int n = tok.Tokens.Count;
        bool spm = tok.Model == "llama";
        md.Set("tokenizer.ggml.model", tok.Model);
        md.Set("tokenizer.ggml.pre", options.PreTokenizer ?? (spm ? "default" : arch is "qwen2" or "qwen3" ? "qwen2" : "default"));
        md.Set("tokenizer.ggml.tokens", tok.Tokens.ToArray());
        if (spm && tok.Scores is { } scores)
        {
            if (scores.Count != n) throw new LowbitException($"the tokenizer has {scores.Count} scores for {n} tokens");
            md.Set("tokenizer.ggml.scores", scores.ToArray());
        }
        if (tok.TokenTypes is { } types)
        {
            if (types.Count != n) throw new LowbitException($"the tokenizer has {types.Count} token types for {n} tokens");
            md.Set("tokenizer.ggml.token_type", types.Select(t => (int)t).ToArray());
        }
        if (tok.Merges is { Count: > 0 } merges) md.Set("tokenizer.ggml.merges", merges.ToArray());
        else if (!spm) throw new LowbitException("a gpt2 (byte-level BPE) tokenizer needs its merges");

        void Id(string key, int id)
        {
            if (id < 0 || id >= n) throw new LowbitException($"{key} = {id} is outside the vocabulary of {n} tokens");
            md.Set(key, (uint)id);
        }
        Id("tokenizer.ggml.bos_token_id", tok.BosId);
        Id("tokenizer.ggml.eos_token_id", tok.EosId);
        if (spm) Id("tokenizer.ggml.unknown_token_id", tok.UnknownId);
        if (tok.PaddingId is { } pad) Id("tokenizer.ggml.padding_token_id", pad);
        md.Set("tokenizer.ggml.add_bos_token", tok.AddBos);
        md.Set("tokenizer.ggml.add_eos_token", tok.AddEos);
        if (options.ChatTemplate is { } template) md.Set("tokenizer.chat_template", template);
    }

    /// <summary>
    /// general.size_label as gguf-py computes it (model_weight_count_rounded_notation): the count
    /// scaled to K/M/B/T with at least two significant digits, e.g. 6,819,072 → "6.8M".
    /// </summary>
    public static string SizeLabel(long parameters)
    {
        double p = Math.Abs((double)parameters);
        (double scaled, string suffix) = p > 1e12 ? (p * 1e-12, "T")
            : p > 1e9 ? (p * 1e-9, "B")
            : p > 1e6 ? (p * 1e-6, "M")
            : (p * 1e-3, "K");
        string integral = Math.Round(scaled, MidpointRounding.ToEven).ToString("F0", CultureInfo.InvariantCulture).TrimStart('0');
        int decimals = Math.Max(2 - integral.Length, 0);
        return scaled.ToString("F" + decimals, CultureInfo.InvariantCulture) + suffix;
    }

    /// <summary>The llama_ftype for a uniform quantization to a GGUF type name (e.g. "q4_K_M", "Q8_0", "f16"); null when unknown.</summary>
    public static LlamaFileType? FileTypeFromName(string name) => name.ToUpperInvariant() switch
    {
        "F32" => LlamaFileType.AllF32,
        "F16" => LlamaFileType.MostlyF16,
        "BF16" => LlamaFileType.MostlyBF16,
        "Q4_0" => LlamaFileType.MostlyQ4_0,
        "Q4_1" => LlamaFileType.MostlyQ4_1,
        "Q5_0" => LlamaFileType.MostlyQ5_0,
        "Q5_1" => LlamaFileType.MostlyQ5_1,
        "Q8_0" => LlamaFileType.MostlyQ8_0,
        "Q2_K" => LlamaFileType.MostlyQ2_K,
        "Q2_K_S" => LlamaFileType.MostlyQ2_K_S,
        "Q3_K_S" => LlamaFileType.MostlyQ3_K_S,
        "Q3_K" or "Q3_K_M" => LlamaFileType.MostlyQ3_K_M,
        "Q3_K_L" => LlamaFileType.MostlyQ3_K_L,
        "Q4_K_S" => LlamaFileType.MostlyQ4_K_S,
        "Q4_K" or "Q4_K_M" => LlamaFileType.MostlyQ4_K_M,
        "Q5_K_S" => LlamaFileType.MostlyQ5_K_S,
        "Q5_K" or "Q5_K_M" => LlamaFileType.MostlyQ5_K_M,
        "Q6_K" => LlamaFileType.MostlyQ6_K,
        "IQ4_NL" => LlamaFileType.MostlyIQ4_NL,
        "IQ4_XS" => LlamaFileType.MostlyIQ4_XS,
        "TQ1_0" => LlamaFileType.MostlyTQ1_0,
        "TQ2_0" => LlamaFileType.MostlyTQ2_0,
        "MXFP4" or "MXFP4_MOE" => LlamaFileType.MostlyMXFP4_MoE,
        "NVFP4" => LlamaFileType.MostlyNVFP4,
        _ => null,
    };
}
