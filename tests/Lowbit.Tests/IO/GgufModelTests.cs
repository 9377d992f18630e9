using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Model;

namespace Lowbit.Tests.IO;

public sealed class GgufModelTests
{
    /// <summary>The bundled refmodel-llama-6m's shape (models/refmodel-llama-6m/config.json).</summary>
    private static ModelConfig RefModelConfig() => new()
    {
        Architecture = "llama",
        VocabSize = 4096,
        HiddenSize = 256,
        IntermediateSize = 768,
        NumLayers = 6,
        NumHeads = 4,
        NumKvHeads = 2,
        HeadDim = 64,
        RmsNormEps = 1e-5f,
        RopeTheta = 10000f,
        MaxPositions = 256,
    };

    [Fact]
    public void Llama_metadata_has_convert_hf_to_gguf_keys_types_and_order()
    {
        var md = GgufModelMetadata.Build(RefModelConfig(), TestModels.SpmTokenizer(4096), "refmodel-llama-6m", LlamaFileType.MostlyQ4_K_M);
        (string, GgufValueType, object?)[] expected =
        [
            ("general.architecture", GgufValueType.String, "llama"),
            ("general.type", GgufValueType.String, "model"),
            ("general.name", GgufValueType.String, "refmodel-llama-6m"),
            ("general.size_label", GgufValueType.String, "6.8M"),
            ("llama.block_count", GgufValueType.UInt32, 6u),
            ("llama.context_length", GgufValueType.UInt32, 256u),
            ("llama.embedding_length", GgufValueType.UInt32, 256u),
            ("llama.feed_forward_length", GgufValueType.UInt32, 768u),
            ("llama.attention.head_count", GgufValueType.UInt32, 4u),
            ("llama.attention.head_count_kv", GgufValueType.UInt32, 2u),
            ("llama.rope.freq_base", GgufValueType.Float32, 10000f),
            ("llama.attention.layer_norm_rms_epsilon", GgufValueType.Float32, 1e-5f),
            ("llama.attention.key_length", GgufValueType.UInt32, 64u),
            ("llama.attention.value_length", GgufValueType.UInt32, 64u),
            ("general.file_type", GgufValueType.UInt32, 15u),
            ("llama.vocab_size", GgufValueType.UInt32, 4096u),
            ("llama.rope.dimension_count", GgufValueType.UInt32, 64u),
            ("general.quantization_version", GgufValueType.UInt32, 2u),
            ("tokenizer.ggml.model", GgufValueType.String, "llama"),
            ("tokenizer.ggml.pre", GgufValueType.String, "default"),
            ("tokenizer.ggml.tokens", GgufValueType.Array, null),
            ("tokenizer.ggml.scores", GgufValueType.Array, null),
            ("tokenizer.ggml.token_type", GgufValueType.Array, null),
            ("tokenizer.ggml.bos_token_id", GgufValueType.UInt32, 1u),
            ("tokenizer.ggml.eos_token_id", GgufValueType.UInt32, 2u),
            ("tokenizer.ggml.unknown_token_id", GgufValueType.UInt32, 0u),
            ("tokenizer.ggml.add_bos_token", GgufValueType.Bool, true),
            ("tokenizer.ggml.add_eos_token", GgufValueType.Bool, false),
        ];
        Assert.Equal(expected.Select(e => e.Item1), md.Keys);
        foreach (var (key, type, value) in expected)
        {
            Assert.Equal(type, md.Get(key).Type);
            if (value is not null) Assert.Equal(value, md.Get(key).Value);
        }
        Assert.Equal(GgufValueType.String, md.GetArray("tokenizer.ggml.tokens").ElementType);
        Assert.Equal(GgufValueType.Float32, md.GetArray("tokenizer.ggml.scores").ElementType);
        Assert.Equal(GgufValueType.Int32, md.GetArray("tokenizer.ggml.token_type").ElementType);
    }

    [Theory]
    [InlineData("ggml-vocab-llama-spm.gguf", "llama")]
    [InlineData("ggml-vocab-gpt-2.gguf", "qwen2")]
    public void Tokenizer_keys_have_the_types_llama_cpp_itself_wrote(string vocabFile, string arch)
    {
        using var reference = GgufFile.Open(RepoPaths.TestData("gguf", vocabFile));
        var tok = GgufModelLoader.ReadTokenizer(reference.Metadata, reference.Path)!;
        var config = TestModels.Config(arch) with { VocabSize = tok.Tokens.Count };
        var ours = GgufModelMetadata.Build(config, tok, "x", LlamaFileType.MostlyF16);
        int compared = 0;
        foreach (var e in reference.Metadata.Entries.Where(e => e.Key.StartsWith("tokenizer.ggml.", StringComparison.Ordinal)))
        {
            if (!ours.TryGet(e.Key, out var mine)) continue;
            Assert.Equal(e.Type, mine.Type);
            if (e.Value is GgufArray a)
            {
                Assert.Equal(a.ElementType, ((GgufArray)mine.Value).ElementType);
                Assert.Equal(a, mine.Value); // tokens, scores, types and merges survive the TokenizerInfo round trip
            }
            compared++;
        }
        Assert.True(compared >= 6, $"only {compared} keys compared");
    }

    [Fact]
    public void Refmodel_shaped_llama_round_trips_through_writer_and_loader()
    {
        using var dir = new TempDir();
        var config = RefModelConfig();
        var tok = TestModels.SpmTokenizer(4096);
        string path = dir.File("ref.gguf");
        var w = TestModels.Write(path, config, tok);

        using var model = GgufModelLoader.Load(path);
        Assert.Equal("gguf", model.SourceFormat);
        Assert.Equal(config, model.Config);
        Assert.Equal(RopeStyle.Interleaved, model.Config.Rope);
        Assert.Equal(w.Tensors.Count, model.Tensors.Count);
        var q = model.Get(TensorNames.AttnQ(3));
        Assert.Equal([256L, 256], q.Shape);
        Assert.Same(CodecRegistry.Get(GgmlType.F16), q.Codec);
        int qIndex = w.Tensors.ToList().FindIndex(t => t.Name == q.Name);
        Assert.Equal(TestModels.FiniteHalfs(qIndex, q.ByteCount), q.Data.ToArray());
        Assert.Equal([256L], model.Get(TensorNames.OutputNorm).Shape);

        var t = model.Tokenizer!;
        Assert.Equal("llama", t.Model);
        Assert.Equal(tok.Tokens, t.Tokens);
        Assert.Equal(tok.Scores, t.Scores);
        Assert.Equal(tok.TokenTypes, t.TokenTypes);
        Assert.Equal((1, 2, 0, true, false), (t.BosId, t.EosId, t.UnknownId, t.AddBos, t.AddEos));
        Assert.Null(t.PaddingId);
        Assert.Equal("default", model.Metadata["tokenizer.ggml.pre"]);
    }

    [Fact]
    public void Qwen2_with_biases_and_bpe_tokenizer_round_trips_with_neox_rope()
    {
        using var dir = new TempDir();
        var tok = TestModels.Gpt2Tokenizer(300);
        var config = TestModels.Config("qwen2", bias: true, tied: true) with { BosTokenId = tok.BosId, EosTokenId = tok.EosId };
        string path = dir.File("qwen2.gguf");
        TestModels.Write(path, config, tok);

        using (var f = GgufFile.Open(path))
        {
            Assert.False(f.Metadata.ContainsKey("qwen2.vocab_size"));
            Assert.False(f.Metadata.ContainsKey("qwen2.rope.dimension_count"));
            Assert.False(f.Metadata.ContainsKey("qwen2.attention.key_length")); // head size is hidden/heads
            Assert.Equal("gpt2", f.Metadata.GetString("tokenizer.ggml.model"));
            Assert.Equal("qwen2", f.Metadata.GetString("tokenizer.ggml.pre"));
            Assert.False(f.Metadata.ContainsKey("tokenizer.ggml.scores"));
            Assert.False(f.Metadata.ContainsKey("tokenizer.ggml.unknown_token_id"));
        }
        using var model = GgufModelLoader.Load(path);
        Assert.Equal(config, model.Config);
        Assert.True(model.Config.AttentionBias);
        Assert.True(model.Config.TieEmbeddings);
        Assert.Equal(RopeStyle.NeoX, model.Config.Rope);
        Assert.Equal(tok.Merges, model.Tokenizer!.Merges);
        Assert.Equal(tok.PaddingId, model.Tokenizer.PaddingId);
        Assert.False(model.Tokenizer.AddBos);
    }

    [Fact]
    public void Qwen3_with_qk_norm_and_wide_heads_writes_key_length_and_round_trips()
    {
        using var dir = new TempDir();
        var tok = TestModels.Gpt2Tokenizer(300);
        var config = TestModels.Config("qwen3", headDim: 32, qkNorm: true) with { BosTokenId = tok.BosId, EosTokenId = tok.EosId };
        string path = dir.File("qwen3.gguf");
        TestModels.Write(path, config, tok);
        using var model = GgufModelLoader.Load(path);
        Assert.Equal(32u, (uint)model.Metadata["qwen3.attention.key_length"]);
        Assert.Equal(config, model.Config);
        Assert.True(model.Config.QkNorm);
        Assert.Equal([32L], model.Get(TensorNames.AttnKNorm(1)).Shape);
    }

    [Fact]
    public void Mistral_is_written_as_llama_like_convert_hf_to_gguf_does()
    {
        using var dir = new TempDir();
        var config = TestModels.Config("mistral");
        string path = dir.File("mistral.gguf");
        TestModels.Write(path, config, TestModels.SpmTokenizer(config.VocabSize));
        using var model = GgufModelLoader.Load(path);
        Assert.Equal(config with { Architecture = "llama" }, model.Config);
    }

    [Fact]
    public void Metadata_builder_rejects_a_tokenizer_that_does_not_match_the_vocabulary()
    {
        var e = Assert.Throws<LowbitException>(() =>
            GgufModelMetadata.Build(TestModels.Config("llama"), TestModels.SpmTokenizer(299), "x", LlamaFileType.AllF32));
        Assert.Equal("the tokenizer has 299 tokens but the model's vocabulary is 300", e.Message);
    }

    [Theory]
    [InlineData(6_819_072L, "6.8M")]
    [InlineData(260_000L, "260K")]
    [InlineData(7_241_732_096L, "7.2B")]
    [InlineData(494_032_768L, "494M")]
    [InlineData(1_000_000L, "1000K")]
    [InlineData(15_000_000L, "15M")]
    public void Size_label_matches_gguf_py(long parameters, string label) =>
        Assert.Equal(label, GgufModelMetadata.SizeLabel(parameters));

    [Fact]
    public void Unsupported_architecture_is_a_clear_error()
    {
        using var dir = new TempDir();
        string path = dir.File("gpt2.gguf");
        TestModels.Write(path, TestModels.Config("llama"), TestModels.SpmTokenizer(300),
            tweak: w => w.Metadata.Set("general.architecture", "gpt2"));
        var e = Assert.Throws<LowbitException>(() => GgufModelLoader.Load(path));
        Assert.Equal($"{path}: architecture 'gpt2' is not supported (supported: llama, mistral, qwen2, qwen3)", e.Message);
    }

    [Fact]
    public void Tensor_type_without_a_codec_is_a_clear_error_naming_the_tensor()
    {
        using var dir = new TempDir();
        string path = dir.File("i32.gguf");
        TestModels.Write(path, TestModels.Config("llama"), TestModels.SpmTokenizer(300),
            tweak: w => w.AddTensor("extra.positions", [16], GgmlType.I32));
        var e = Assert.Throws<LowbitException>(() => GgufModelLoader.Load(path));
        Assert.Equal($"{path}: tensor 'extra.positions' has type I32 (ggml id 26), which Lowbit cannot decode", e.Message);
    }

    [Fact]
    public void Missing_layer_tensor_is_a_clear_error()
    {
        using var dir = new TempDir();
        string path = dir.File("missing.gguf");
        TestModels.Write(path, TestModels.Config("llama"), TestModels.SpmTokenizer(300),
            editPlan: plan => plan.Where(t => t.Name != "blk.1.ffn_down.weight"));
        var e = Assert.Throws<InvalidModelFileException>(() => GgufModelLoader.Load(path));
        Assert.Equal($"{path}: tensor 'blk.1.ffn_down.weight' is missing (llama with 2 layers needs it)", e.Message);
    }

    [Fact]
    public void Tensor_shape_disagreeing_with_metadata_is_a_clear_error()
    {
        using var dir = new TempDir();
        string path = dir.File("shape.gguf");
        TestModels.Write(path, TestModels.Config("llama"), TestModels.SpmTokenizer(300),
            editPlan: plan => plan.Select(t => t.Name == "blk.0.ffn_up.weight" ? (t.Name, new long[] { 128, 64 }) : t));
        var e = Assert.Throws<InvalidModelFileException>(() => GgufModelLoader.Load(path));
        Assert.EndsWith("tensor 'blk.0.ffn_up.weight' has shape [128, 64]; the metadata implies [96, 64]", e.Message);
    }

    [Fact]
    public void Missing_hyper_parameter_is_a_clear_error()
    {
        using var dir = new TempDir();
        string path = dir.File("nokey.gguf");
        TestModels.Write(path, TestModels.Config("llama"), TestModels.SpmTokenizer(300),
            tweak: w => w.Metadata.Remove("llama.embedding_length"));
        var e = Assert.Throws<InvalidModelFileException>(() => GgufModelLoader.Load(path));
        Assert.Equal($"{path}: metadata 'llama.embedding_length' is missing", e.Message);
    }

    [Fact]
    public void Wrongly_typed_metadata_is_reported_by_the_typed_getters()
    {
        using var f = GgufFile.Open(RepoPaths.TestData("gguf", "ggml-vocab-llama-spm.gguf"));
        var e = Assert.Throws<InvalidModelFileException>(() => f.Metadata.GetInt32("tokenizer.ggml.bos_token_id"));
        Assert.Equal($"{f.Path}: metadata key 'tokenizer.ggml.bos_token_id' has type UInt32, expected Int32", e.Message);
    }
}
