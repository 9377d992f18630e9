using Lowbit.Formats;
using Lowbit.Model;

namespace Lowbit.IO;

/// <summary>
/// Opens a GGUF model (llama, mistral, qwen2, qwen3 as llama.cpp writes them) as a
/// <see cref="LoadedModel"/>: configuration from the <c>{arch}.*</c> keys, tokenizer from
/// <c>tokenizer.ggml.*</c>, tensors as zero-copy views with their codecs. GGUF tensors are already
/// in Lowbit's canonical names and RoPE layouts, so nothing is transformed.
/// </summary>
public static class GgufModelLoader
{
    public static IReadOnlyList<string> SupportedArchitectures { get; } = ["llama", "mistral", "qwen2", "qwen3"];

    public static LoadedModel Load(string path)
    {
        var file = GgufFile.Open(path);
        try
        {
            return Load(file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Builds the model from an open file; the model takes ownership of (and disposes) it.</summary>
    public static LoadedModel Load(GgufFile file)
    {
        var config = ReadConfig(file);
        var tokenizer = ReadTokenizer(file.Metadata, file.Path);
        var tensors = new List<ModelTensor>(file.Tensors.Count);
        foreach (var t in file.Tensors)
        {
            var codec = CodecRegistry.TryGet(t.Type) ?? throw new LowbitException(
                $"{file.Path}: tensor '{t.Name}' has type {t.Type} (ggml id {(uint)t.Type}), which Lowbit cannot decode");
            tensors.Add(new ModelTensor(t.Name, t.ShapeRowMajor, codec, file.GetTensorData(t)));
        }
        return new LoadedModel(file.Path, "gguf", config, tokenizer, tensors, file.Metadata.ToDictionary(), file);
    }

    /// <summary>
    /// The model configuration from the metadata, checked against the tensors present: every tensor
    /// the architecture needs must exist with the shape the configuration implies.
    /// </summary>
    public static ModelConfig ReadConfig(GgufFile file)
    {
        var md = file.Metadata;
        string path = file.Path;
        string arch = md.ContainsKey("general.architecture") ? md.GetString("general.architecture")
            : throw new InvalidModelFileException(path, "metadata 'general.architecture' is missing; not a model file");
        if (!SupportedArchitectures.Contains(arch))
            throw new LowbitException($"{path}: architecture '{arch}' is not supported (supported: {string.Join(", ", SupportedArchitectures)})");

        int Required(string key) => PositiveInt(md, path, $"{arch}.{key}") ?? throw new InvalidModelFileException(path, $"metadata '{arch}.{key}' is missing");

        int hidden = Required("embedding_length");
        int layers = Required("block_count");
        int ff = Required("feed_forward_length");
        int heads = Required("attention.head_count");
        int kvHeads = PositiveInt(md, path, $"{arch}.attention.head_count_kv") ?? heads;
        int context = Required("context_length");
        if (heads % kvHeads != 0)
            throw new InvalidModelFileException(path, $"attention.head_count {heads} is not a multiple of head_count_kv {kvHeads}");

        int? keyLength = PositiveInt(md, path, $"{arch}.attention.key_length");
        int? valueLength = PositiveInt(md, path, $"{arch}.attention.value_length");
        if (keyLength is null && hidden % heads != 0)
            throw new InvalidModelFileException(path, $"embedding_length {hidden} is not a multiple of head_count {heads} and attention.key_length is absent");
        int headDim = keyLength ?? hidden / heads;
        if (valueLength is { } vl && vl != headDim)
            throw new LowbitException($"{path}: attention.value_length {vl} differs from key_length {headDim}; not supported");
        if (PositiveInt(md, path, $"{arch}.rope.dimension_count") is { } ropeDims && ropeDims != headDim)
            throw new LowbitException($"{path}: rope.dimension_count {ropeDims} differs from the head size {headDim} (partial rotary embeddings are not supported)");

        float eps = md.TryGetReal($"{arch}.attention.layer_norm_rms_epsilon")
            ?? throw new InvalidModelFileException(path, $"metadata '{arch}.attention.layer_norm_rms_epsilon' is missing");
        float theta = md.TryGetReal($"{arch}.rope.freq_base") ?? 10000f;
        int slidingWindow = PositiveInt(md, path, $"{arch}.attention.sliding_window") ?? 0;

        var embd = file.TryGetTensor(TensorNames.TokenEmbedding)
            ?? throw new InvalidModelFileException(path, $"tensor '{TensorNames.TokenEmbedding}' is missing");
        int vocab = PositiveInt(md, path, $"{arch}.vocab_size")
            ?? (md.TryGetArray("tokenizer.ggml.tokens")?.Count is int n and > 0 ? n : checked((int)embd.ShapeRowMajor[0]));

        bool tied = file.TryGetTensor(TensorNames.Output) is null;
        bool bias = file.TryGetTensor(TensorNames.AttnQBias(0)) is not null;
        bool qkNorm = file.TryGetTensor(TensorNames.AttnQNorm(0)) is not null;
        var config = new ModelConfig
        {
            Architecture = arch,
            VocabSize = vocab,
            HiddenSize = hidden,
            IntermediateSize = ff,
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            RmsNormEps = eps,
            RopeTheta = theta,
            MaxPositions = context,
            TieEmbeddings = tied,
            AttentionBias = bias,
            QkNorm = qkNorm,
            Rope = arch is "qwen2" or "qwen3" ? RopeStyle.NeoX : RopeStyle.Interleaved,
            SlidingWindow = slidingWindow,
            BosTokenId = (int)(md.TryGetInteger("tokenizer.ggml.bos_token_id") ?? 1),
            EosTokenId = (int)(md.TryGetInteger("tokenizer.ggml.eos_token_id") ?? 2),
        };
        CheckTensorShapes(file, config);
        return config;
    }

    private static void CheckTensorShapes(GgufFile file, ModelConfig c)
    {
        long h = c.HiddenSize, q = c.QDim, kv = c.KvDim, ff = c.IntermediateSize;
        var expected = new List<(string Name, long[] Shape)>
        {
            (TensorNames.TokenEmbedding, [c.VocabSize, h]),
            (TensorNames.OutputNorm, [h]),
        };
        if (!c.TieEmbeddings) expected.Add((TensorNames.Output, [c.VocabSize, h]));
        for (int l = 0; l < c.NumLayers; l++)
        {
            expected.Add((TensorNames.AttnNorm(l), [h]));
            expected.Add((TensorNames.AttnQ(l), [q, h]));
            expected.Add((TensorNames.AttnK(l), [kv, h]));
            expected.Add((TensorNames.AttnV(l), [kv, h]));
            expected.Add((TensorNames.AttnOutput(l), [h, q]));
            expected.Add((TensorNames.FfnNorm(l), [h]));
            expected.Add((TensorNames.FfnGate(l), [ff, h]));
            expected.Add((TensorNames.FfnUp(l), [ff, h]));
            expected.Add((TensorNames.FfnDown(l), [h, ff]));
            if (c.AttentionBias)
            {
                expected.Add((TensorNames.AttnQBias(l), [q]));
                expected.Add((TensorNames.AttnKBias(l), [kv]));
                expected.Add((TensorNames.AttnVBias(l), [kv]));
            }
            if (c.QkNorm)
            {
                expected.Add((TensorNames.AttnQNorm(l), [c.HeadDim]));
                expected.Add((TensorNames.AttnKNorm(l), [c.HeadDim]));
            }
        }
        foreach (var (name, shape) in expected)
        {
            var t = file.TryGetTensor(name)
                ?? throw new InvalidModelFileException(file.Path, $"tensor '{name}' is missing ({c.Architecture} with {c.NumLayers} layers needs it)");
            var actual = t.ShapeRowMajor;
            if (!actual.AsSpan().SequenceEqual(shape))
                throw new InvalidModelFileException(file.Path, t.DataOffset,
                    $"tensor '{name}' has shape [{string.Join(", ", actual)}]; the metadata implies [{string.Join(", ", shape)}]");
        }
    }

    /// <summary>The tokenizer described by <c>tokenizer.ggml.*</c>, or null when the file has none.</summary>
    public static TokenizerInfo? ReadTokenizer(GgufMetadata md, string path)
    {
        string? model = md.TryGetString("tokenizer.ggml.model");
        if (model is null) return null;
        var tokens = md.TryGetArray<string>("tokenizer.ggml.tokens")
            ?? throw new InvalidModelFileException(path, "metadata 'tokenizer.ggml.tokens' is missing although tokenizer.ggml.model is set");
        var scores = md.TryGetArray<float>("tokenizer.ggml.scores");
        if (scores is not null && scores.Length != tokens.Length)
            throw new InvalidModelFileException(path, $"tokenizer.ggml.scores has {scores.Length} entries for {tokens.Length} tokens");
        TokenType[]? types = null;
        if (md.TryGetArray<int>("tokenizer.ggml.token_type") is { } rawTypes)
        {
            if (rawTypes.Length != tokens.Length)
                throw new InvalidModelFileException(path, $"tokenizer.ggml.token_type has {rawTypes.Length} entries for {tokens.Length} tokens");
            types = new TokenType[rawTypes.Length];
            for (int i = 0; i < rawTypes.Length; i++)
            {
                if (rawTypes[i] is < 0 or > (int)TokenType.Byte)
                    throw new InvalidModelFileException(path, $"tokenizer.ggml.token_type[{i}] = {rawTypes[i]} is not a token type (0..6)");
                types[i] = (TokenType)rawTypes[i];
            }
        }
        var merges = md.TryGetArray<string>("tokenizer.ggml.merges");

        int? Id(string key)
        {
            long? v = md.TryGetInteger(key);
            if (v is null) return null;
            if (v < 0 || v >= tokens.Length)
                throw new InvalidModelFileException(path, $"metadata '{key}' = {v} is outside the vocabulary of {tokens.Length} tokens");
            return (int)v;
        }

        return new TokenizerInfo
        {
            Model = model,
            Tokens = tokens,
            Scores = scores,
            TokenTypes = types,
            Merges = merges,
            BosId = Id("tokenizer.ggml.bos_token_id") ?? 1,
            EosId = Id("tokenizer.ggml.eos_token_id") ?? 2,
            UnknownId = Id("tokenizer.ggml.unknown_token_id") ?? 0,
            PaddingId = Id("tokenizer.ggml.padding_token_id"),
            // llama.cpp's defaults when the flags are absent: SentencePiece adds BOS, BPE does not.
            AddBos = md.TryGetBool("tokenizer.ggml.add_bos_token") ?? model == "llama",
            AddEos = md.TryGetBool("tokenizer.ggml.add_eos_token") ?? false,
        };
    }

    /// <summary>
    /// A positive integer-valued key (any integer width). Per-layer arrays (some converters write
    /// feed_forward_length or head_count per layer) are accepted when all layers agree.
    /// </summary>
    private static int? PositiveInt(GgufMetadata md, string path, string key)
    {
        if (!md.TryGet(key, out var e)) return null;
        long v;
        if (e.Value is GgufArray a)
        {
            if (a.ElementType is GgufValueType.String or GgufValueType.Array or GgufValueType.Float32 or GgufValueType.Float64 or GgufValueType.Bool)
                throw new InvalidModelFileException(path, $"metadata '{key}' is an array of {a.ElementType}, expected integers");
            var values = new HashSet<decimal>();
            foreach (var item in a.Values) values.Add(Convert.ToDecimal(item, System.Globalization.CultureInfo.InvariantCulture));
            if (values.Count != 1)
                throw new LowbitException($"{path}: metadata '{key}' {(values.Count == 0 ? "is an empty array" : "differs between layers; per-layer sizes are not supported")}");
            decimal only = values.First();
            v = only > int.MaxValue ? long.MaxValue : (long)only;
        }
        else v = md.TryGetInteger(key)!.Value;
        if (v <= 0 || v > int.MaxValue)
            throw new InvalidModelFileException(path, $"metadata '{key}' = {v}; expected a positive size");
        return (int)v;
    }
}
