using Lowbit.Formats;
using Lowbit.Model;

namespace Lowbit.IO;

/// <summary>
/// Loads a Hugging Face model folder (config.json + model.safetensors or a sharded index + tokenizer
/// files) as a <see cref="LoadedModel"/> with canonical GGUF tensor names. Weights stay memory-mapped in
/// their source dtype (BF16/F16/F32); llama/mistral q/k projections are exposed in llama.cpp's permuted
/// row order (materialized on access), so the engine can use interleaved RoPE for every model.
/// </summary>
public static class HfModelLoader
{
    public const string ConfigFileName = "config.json";

    /// <summary>True when the path looks like an HF model: a folder with config.json, or a .safetensors / index file.</summary>
    public static bool IsHfModel(string path) =>
        Directory.Exists(path) ? File.Exists(System.IO.Path.Combine(path, ConfigFileName))
        : path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
          || path.EndsWith(".safetensors.index.json", StringComparison.OrdinalIgnoreCase);

    /// <param name="dirOrSafetensorsFile">A model folder, a .safetensors file or a model.safetensors.index.json (config.json must sit beside it).</param>
    public static LoadedModel Load(string dirOrSafetensorsFile)
    {
        string dir = Directory.Exists(dirOrSafetensorsFile)
            ? dirOrSafetensorsFile
            : System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(dirOrSafetensorsFile))!;
        if (!Directory.Exists(dirOrSafetensorsFile) && !File.Exists(dirOrSafetensorsFile))
            throw new LowbitException($"{dirOrSafetensorsFile}: no such file or folder");
        string configPath = System.IO.Path.Combine(dir, ConfigFileName);
        if (!File.Exists(configPath))
            throw new LowbitException($"{dir}: no {ConfigFileName} next to the weights (a Hugging Face model folder needs one)");

        var config = HfConfig.Read(configPath);
        var tokenizer = HfTokenizerReader.TryRead(dir, config);
        var set = SafetensorsSet.Open(dirOrSafetensorsFile);
        try
        {
            var tensors = MapTensors(set, config);
            var metadata = new Dictionary<string, object>(StringComparer.Ordinal);
            foreach (var f in set.Files)
                foreach (var (k, v) in f.Metadata)
                    metadata["safetensors." + k] = v; // namespaced: these are not GGUF keys
            string tokenizerJson = System.IO.Path.Combine(dir, HfTokenizerReader.TokenizerJsonFileName);
            if (tokenizer?.Model == "gpt2" && HfTokenizerReader.ReadPreType(tokenizerJson) is { } pre)
                metadata[Tokenizer.PreMetadataKey] = pre;
            return new LoadedModel(dirOrSafetensorsFile, "safetensors", config, tokenizer, tensors, metadata, set);
        }
        catch
        {
            set.Dispose();
            throw;
        }
    }

    internal static List<ModelTensor> MapTensors(SafetensorsSet set, ModelConfig config)
    {
        var found = new Dictionary<string, (SafetensorsFile File, SafetensorsTensor Tensor)>(StringComparer.Ordinal);
        foreach (string hfName in set.TensorNames)
        {
            if (HfTensorNameMap.IsIgnorable(hfName)) continue;
            var entry = set.TryGet(hfName)!.Value;
            string canonical = HfTensorNameMap.ToCanonical(hfName)
                ?? throw new InvalidModelFileException(entry.File.Path,
                    $"unknown tensor '{hfName}' for a {config.Architecture} model (not an embedding, attention, MLP or norm weight Lowbit knows)");
            if (canonical == TensorNames.Output && config.TieEmbeddings) continue; // tied: the embedding serves as output
            found[canonical] = entry;
        }

        var expected = HfTensorNameMap.ExpectedTensors(config);
        var expectedNames = expected.Select(e => e.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var name in found.Keys)
            if (!expectedNames.Contains(name))
                throw new InvalidModelFileException(found[name].File.Path,
                    $"tensor '{found[name].Tensor.Name}' ({name}) is not part of a {config.Architecture} model with this config.json "
                    + $"({config.NumLayers} layers, attention_bias={config.AttentionBias}, tie_word_embeddings={config.TieEmbeddings})");

        var result = new List<ModelTensor>(expected.Count);
        foreach (var (name, shape) in expected)
        {
            if (!found.TryGetValue(name, out var e))
                throw new InvalidModelFileException(set.SourcePath, $"tensor '{name}' (HF '{HfNameOf(name)}') is missing");
            if (!e.Tensor.Shape.SequenceEqual(shape))
                throw new InvalidModelFileException(e.File.Path,
                    $"tensor '{e.Tensor.Name}' has shape [{string.Join(", ", e.Tensor.Shape)}], config.json implies [{string.Join(", ", shape)}]");
            var codec = CodecFor(e.File.Path, e.Tensor);
            var file = e.File;
            var tensor = e.Tensor;
            int permuteHeads = RopePermutationHeads(config, name);
            if (permuteHeads > 0)
                result.Add(new ModelTensor(name, shape, codec,
                    () => PermuteForInterleavedRope(file.GetData(tensor).Span, permuteHeads, tensor.Shape[0])));
            else
                result.Add(new ModelTensor(name, shape, codec, file.GetData(tensor)));
        }
        return result;
    }

    private static TensorCodec CodecFor(string path, SafetensorsTensor t) => t.DType switch
    {
        SafetensorsDType.F32 => CodecRegistry.Get("f32"),
        SafetensorsDType.F16 => CodecRegistry.Get("f16"),
        SafetensorsDType.BF16 => CodecRegistry.Get("bf16"),
        _ => throw new InvalidModelFileException(path,
            $"tensor '{t.Name}' has unsupported dtype {t.DType} (weights must be F32, F16 or BF16; pre-quantized checkpoints are not supported)"),
    };

    /// <summary>Head count for the q/k RoPE permutation of this tensor, or 0 when it is not permuted.</summary>
    private static int RopePermutationHeads(ModelConfig c, string name)
    {
        if (c.Rope != RopeStyle.Interleaved) return 0;
        for (int l = 0; l < c.NumLayers; l++)
        {
            if (name == TensorNames.AttnQ(l) || name == TensorNames.AttnQBias(l)) return c.NumHeads;
            if (name == TensorNames.AttnK(l) || name == TensorNames.AttnKBias(l)) return c.NumKvHeads;
        }
        return 0;
    }

    /// <summary>
    /// llama.cpp's q/k permutation (convert_hf_to_gguf LlamaModel.permute): within each head of
    /// <c>headDim</c> rows, output row <c>2i + j</c> is input row <c>j·headDim/2 + i</c>, turning HF's
    /// rotate-half pairs (i, i + headDim/2) into adjacent pairs (2i, 2i+1). Works on whole rows of bytes,
    /// so it applies to any dtype and to 1-D biases (one element per row).
    /// </summary>
    public static byte[] PermuteForInterleavedRope(ReadOnlySpan<byte> src, int heads, long rows)
    {
        if (heads <= 0 || rows % heads != 0 || rows / heads % 2 != 0)
            throw new ArgumentException($"cannot permute {rows} rows into {heads} heads of even size");
        int rowBytes = checked((int)(src.Length / rows));
        int headDim = (int)(rows / heads), half = headDim / 2;
        var dst = new byte[src.Length];
        for (int h = 0; h < heads; h++)
        {
            int baseRow = h * headDim;
            for (int i = 0; i < half; i++)
                for (int j = 0; j < 2; j++)
                {
                    int from = baseRow + j * half + i, to = baseRow + 2 * i + j;
                    src.Slice(from * rowBytes, rowBytes).CopyTo(dst.AsSpan(to * rowBytes, rowBytes));
                }
        }
        return dst;
    }

    /// <summary>The HF name a canonical name comes from (for error messages).</summary>
    private static string HfNameOf(string canonical)
    {
        if (canonical == TensorNames.TokenEmbedding) return "model.embed_tokens.weight";
        if (canonical == TensorNames.OutputNorm) return "model.norm.weight";
        if (canonical == TensorNames.Output) return "lm_head.weight";
        var parts = canonical.Split('.', 3);
        string layerPart = parts.Length == 3 ? parts[2] : canonical;
        string hf = layerPart switch
        {
            "attn_norm.weight" => "input_layernorm.weight",
            "attn_q.weight" => "self_attn.q_proj.weight",
            "attn_k.weight" => "self_attn.k_proj.weight",
            "attn_v.weight" => "self_attn.v_proj.weight",
            "attn_output.weight" => "self_attn.o_proj.weight",
            "attn_q.bias" => "self_attn.q_proj.bias",
            "attn_k.bias" => "self_attn.k_proj.bias",
            "attn_v.bias" => "self_attn.v_proj.bias",
            "attn_q_norm.weight" => "self_attn.q_norm.weight",
            "attn_k_norm.weight" => "self_attn.k_norm.weight",
            "ffn_norm.weight" => "post_attention_layernorm.weight",
            "ffn_gate.weight" => "mlp.gate_proj.weight",
            "ffn_up.weight" => "mlp.up_proj.weight",
            "ffn_down.weight" => "mlp.down_proj.weight",
            _ => layerPart,
        };
        return parts.Length == 3 ? $"model.layers.{parts[1]}.{hf}" : hf;
    }
}
