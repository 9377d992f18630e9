using System.Text.Json;
using System.Text.Json.Nodes;
using Lowbit.IO;
using Lowbit.Model;
using static Lowbit.Tests.IO.HfTestFiles;

namespace Lowbit.Tests.IO;

public sealed class HfModelLoaderTests
{
    [Fact]
    public void Bundled_model_config_matches_config_json()
    {
        var c = HfConfig.Read(Path.Combine(RefModelDir, "config.json"));
        Assert.Equal("llama", c.Architecture);
        Assert.Equal(256, c.HiddenSize);
        Assert.Equal(768, c.IntermediateSize);
        Assert.Equal(6, c.NumLayers);
        Assert.Equal(4, c.NumHeads);
        Assert.Equal(2, c.NumKvHeads);
        Assert.Equal(64, c.HeadDim);
        Assert.Equal(4096, c.VocabSize);
        Assert.Equal(1e-5f, c.RmsNormEps);
        Assert.Equal(10000f, c.RopeTheta);
        Assert.Equal(256, c.MaxPositions);
        Assert.False(c.TieEmbeddings);
        Assert.False(c.AttentionBias);
        Assert.False(c.QkNorm);
        Assert.Equal(RopeStyle.Interleaved, c.Rope);
        Assert.Equal(1, c.BosTokenId);
        Assert.Equal(2, c.EosTokenId);
    }

    [Fact]
    public void Bundled_model_loads_all_tensors_with_canonical_names_and_shapes()
    {
        using var m = HfModelLoader.Load(RefModelDir);
        Assert.Equal("safetensors", m.SourceFormat);
        Assert.Equal(6 * 9 + 3, m.Tensors.Count);
        Assert.Equal([4096L, 256], m.Get(TensorNames.TokenEmbedding).Shape);
        Assert.Equal([4096L, 256], m.Get(TensorNames.Output).Shape);
        Assert.Equal([256L], m.Get(TensorNames.OutputNorm).Shape);
        for (int l = 0; l < 6; l++)
        {
            Assert.Equal([256L, 256], m.Get(TensorNames.AttnQ(l)).Shape);
            Assert.Equal([128L, 256], m.Get(TensorNames.AttnK(l)).Shape);
            Assert.Equal([128L, 256], m.Get(TensorNames.AttnV(l)).Shape);
            Assert.Equal([256L, 256], m.Get(TensorNames.AttnOutput(l)).Shape);
            Assert.Equal([768L, 256], m.Get(TensorNames.FfnGate(l)).Shape);
            Assert.Equal([768L, 256], m.Get(TensorNames.FfnUp(l)).Shape);
            Assert.Equal([256L, 768], m.Get(TensorNames.FfnDown(l)).Shape);
            Assert.Equal([256L], m.Get(TensorNames.AttnNorm(l)).Shape);
            Assert.Equal([256L], m.Get(TensorNames.FfnNorm(l)).Shape);
        }
        Assert.All(m.Tensors, t => Assert.Equal("bf16", t.Codec.Name));
        Assert.Equal("pt", m.Metadata["safetensors.format"]);
        Assert.NotNull(m.Tokenizer);
        Assert.Equal(4096, m.Tokenizer!.Tokens.Count);
    }

    [Fact]
    public void Unpermuted_tensors_are_the_file_bytes()
    {
        using var m = HfModelLoader.Load(RefModelDir);
        using var f = SafetensorsFile.Open(Path.Combine(RefModelDir, "model.safetensors"));
        Assert.True(m.Get(TensorNames.AttnV(2)).Data.Span.SequenceEqual(f.GetData(f.Get("model.layers.2.self_attn.v_proj.weight")).Span));
        Assert.True(m.Get(TensorNames.TokenEmbedding).Data.Span.SequenceEqual(f.GetData(f.Get("model.embed_tokens.weight")).Span));
    }

    [Fact]
    public void Q_and_k_rows_follow_llama_cpp_permutation_formula()
    {
        using var m = HfModelLoader.Load(RefModelDir);
        using var f = SafetensorsFile.Open(Path.Combine(RefModelDir, "model.safetensors"));
        foreach (var (canonical, hf, heads) in new[] { (TensorNames.AttnQ(1), "model.layers.1.self_attn.q_proj.weight", 4), (TensorNames.AttnK(1), "model.layers.1.self_attn.k_proj.weight", 2) })
        {
            var permuted = m.Get(canonical).ToFloat();
            var hfT = f.Get(hf);
            var original = new ModelTensor(hf, hfT.Shape, Lowbit.Formats.CodecRegistry.Get("bf16"), f.GetData(hfT)).ToFloat();
            int rows = (int)hfT.Shape[0], cols = (int)hfT.Shape[1], hd = rows / heads;
            Assert.False(permuted.AsSpan().SequenceEqual(original), "permutation must change the layout");
            // numpy: w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)
            for (int r = 0; r < rows; r++)
            {
                int h = r / hd, within = r % hd, i = within / 2, j = within % 2;
                int src = h * hd + j * (hd / 2) + i;
                Assert.True(permuted.AsSpan(r * cols, cols).SequenceEqual(original.AsSpan(src * cols, cols)), $"{canonical} row {r}");
            }
        }
    }

    [Fact]
    public void Interleaved_rope_on_permuted_q_equals_rotate_half_rope_on_hf_q()
    {
        using var m = HfModelLoader.Load(RefModelDir);
        using var f = SafetensorsFile.Open(Path.Combine(RefModelDir, "model.safetensors"));
        var hfT = f.Get("model.layers.0.self_attn.q_proj.weight");
        var wHf = new ModelTensor("q", hfT.Shape, Lowbit.Formats.CodecRegistry.Get("bf16"), f.GetData(hfT)).ToFloat();
        var wPerm = m.Get(TensorNames.AttnQ(0)).ToFloat();
        int rows = 256, cols = 256, heads = 4, hd = 64;
        var rng = new Random(7);
        var x = Enumerable.Range(0, cols).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        float[] MatVec(float[] w) => Enumerable.Range(0, rows).Select(r => Enumerable.Range(0, cols).Sum(c => w[r * cols + c] * x[c])).ToArray();
        var qHf = MatVec(wHf);
        var qPerm = MatVec(wPerm);
        const int pos = 37;
        for (int h = 0; h < heads; h++)
        {
            for (int i = 0; i < hd / 2; i++)
            {
                double theta = pos * Math.Pow(10000, -2.0 * i / hd);
                float cos = (float)Math.Cos(theta), sin = (float)Math.Sin(theta);
                // HF / NeoX: pairs (i, i + hd/2)
                float a = qHf[h * hd + i], b = qHf[h * hd + i + hd / 2];
                float neoX0 = a * cos - b * sin, neoX1 = a * sin + b * cos;
                // GGUF / interleaved: pairs (2i, 2i + 1)
                float c = qPerm[h * hd + 2 * i], d = qPerm[h * hd + 2 * i + 1];
                float il0 = c * cos - d * sin, il1 = c * sin + d * cos;
                Assert.Equal(neoX0, il0, 1e-4f);
                Assert.Equal(neoX1, il1, 1e-4f);
            }
        }
    }

    [Fact]
    public void Permutation_applies_to_one_dimensional_biases()
    {
        // 2 heads × head_dim 4, one 2-byte element per row.
        byte[] src = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7];
        var dst = HfModelLoader.PermuteForInterleavedRope(src, 2, 8);
        Assert.Equal(new byte[] { 0, 0, 2, 2, 1, 1, 3, 3, 4, 4, 6, 6, 5, 5, 7, 7 }, dst);
    }

    // ---- synthetic models -------------------------------------------------------------------

    private static JsonObject TinyConfig(string modelType = "llama") => new()
    {
        ["architectures"] = new JsonArray(modelType switch
        {
            "llama" => "LlamaForCausalLM",
            "mistral" => "MistralForCausalLM",
            "qwen2" => "Qwen2ForCausalLM",
            _ => "Qwen3ForCausalLM",
        }),
        ["model_type"] = modelType,
        ["hidden_size"] = 8,
        ["intermediate_size"] = 12,
        ["num_hidden_layers"] = 1,
        ["num_attention_heads"] = 2,
        ["num_key_value_heads"] = 1,
        ["vocab_size"] = 16,
        ["rms_norm_eps"] = 1e-6,
        ["tie_word_embeddings"] = false,
    };

    private static List<(string, long[], float[])> TinyTensors(ModelConfig c, bool withBias = false, bool qkNorm = false, bool lmHead = true)
    {
        long h = c.HiddenSize, q = c.QDim, kv = c.KvDim, ff = c.IntermediateSize;
        var list = new List<(string, long[])>
        {
            ("model.embed_tokens.weight", [c.VocabSize, h]),
            ("model.layers.0.input_layernorm.weight", [h]),
            ("model.layers.0.self_attn.q_proj.weight", [q, h]),
            ("model.layers.0.self_attn.k_proj.weight", [kv, h]),
            ("model.layers.0.self_attn.v_proj.weight", [kv, h]),
            ("model.layers.0.self_attn.o_proj.weight", [h, q]),
            ("model.layers.0.post_attention_layernorm.weight", [h]),
            ("model.layers.0.mlp.gate_proj.weight", [ff, h]),
            ("model.layers.0.mlp.up_proj.weight", [ff, h]),
            ("model.layers.0.mlp.down_proj.weight", [h, ff]),
            ("model.norm.weight", [h]),
        };
        if (lmHead) list.Add(("lm_head.weight", [c.VocabSize, h]));
        if (withBias)
        {
            list.Add(("model.layers.0.self_attn.q_proj.bias", [q]));
            list.Add(("model.layers.0.self_attn.k_proj.bias", [kv]));
            list.Add(("model.layers.0.self_attn.v_proj.bias", [kv]));
        }
        if (qkNorm)
        {
            list.Add(("model.layers.0.self_attn.q_norm.weight", [c.HeadDim]));
            list.Add(("model.layers.0.self_attn.k_norm.weight", [c.HeadDim]));
        }
        int seed = 0;
        return list.Select(t => (t.Item1, t.Item2, Enumerable.Range(0, (int)t.Item2.Aggregate(1L, (a, b) => a * b)).Select(i => (float)(seed++)).ToArray())).ToList();
    }

    private static ModelConfig WriteTinyModel(TempDir dir, JsonObject config, Func<List<(string, long[], float[])>, List<(string, long[], float[])>>? edit = null,
        bool withBias = false, bool qkNorm = false)
    {
        File.WriteAllText(dir.File("config.json"), config.ToJsonString());
        var c = HfConfig.Read(dir.File("config.json"));
        var tensors = TinyTensors(c, withBias, qkNorm, lmHead: !c.TieEmbeddings);
        if (edit is not null) tensors = edit(tensors);
        WriteF32(dir.File("model.safetensors"), [.. tensors]);
        return c;
    }

    [Fact]
    public void Qwen2_loads_with_biases_unpermuted_and_neox_rope()
    {
        using var dir = new TempDir();
        var cfg = TinyConfig("qwen2");
        cfg["tie_word_embeddings"] = true;
        WriteTinyModel(dir, cfg, withBias: true);
        using var m = HfModelLoader.Load(dir.Path);
        Assert.Equal(RopeStyle.NeoX, m.Config.Rope);
        Assert.True(m.Config.AttentionBias);
        Assert.Null(m.TryGet(TensorNames.Output));
        Assert.Equal(14, m.Tensors.Count);
        Assert.Equal("f32", m.Get(TensorNames.AttnQ(0)).Codec.Name);
        using var f = SafetensorsFile.Open(dir.File("model.safetensors"));
        Assert.True(m.Get(TensorNames.AttnQ(0)).Data.Span.SequenceEqual(f.GetData(f.Get("model.layers.0.self_attn.q_proj.weight")).Span));
        Assert.True(m.Get(TensorNames.AttnQBias(0)).Data.Span.SequenceEqual(f.GetData(f.Get("model.layers.0.self_attn.q_proj.bias")).Span));
        Assert.Null(m.Tokenizer);
    }

    [Fact]
    public void Qwen3_loads_q_and_k_norms()
    {
        using var dir = new TempDir();
        var cfg = TinyConfig("qwen3");
        cfg["head_dim"] = 6;
        WriteTinyModel(dir, cfg, qkNorm: true);
        using var m = HfModelLoader.Load(dir.Path);
        Assert.True(m.Config.QkNorm);
        Assert.False(m.Config.AttentionBias);
        Assert.Equal(6, m.Config.HeadDim);
        Assert.Equal([12L, 8], m.Get(TensorNames.AttnQ(0)).Shape);
        Assert.Equal([6L], m.Get(TensorNames.AttnKNorm(0)).Shape);
    }

    [Fact]
    public void Llama_biases_are_permuted_like_their_weights()
    {
        using var dir = new TempDir();
        var cfg = TinyConfig("mistral");
        cfg["attention_bias"] = true;
        cfg["sliding_window"] = 4096;
        WriteTinyModel(dir, cfg, withBias: true);
        using var m = HfModelLoader.Load(dir.Path);
        Assert.Equal(4096, m.Config.SlidingWindow);
        var bias = m.Get(TensorNames.AttnQBias(0)).ToFloat();
        using var f = SafetensorsFile.Open(dir.File("model.safetensors"));
        var orig = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(f.GetData(f.Get("model.layers.0.self_attn.q_proj.bias")).Span).ToArray();
        // head_dim 4: rows (0, 1, 2, 3) -> (0, 2, 1, 3) per head
        Assert.Equal([orig[0], orig[2], orig[1], orig[3], orig[4], orig[6], orig[5], orig[7]], bias);
        var v = m.Get(TensorNames.AttnVBias(0)).ToFloat();
        Assert.Equal(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(f.GetData(f.Get("model.layers.0.self_attn.v_proj.bias")).Span).ToArray(), v);
    }

    [Fact]
    public void Missing_tensor_is_named()
    {
        using var dir = new TempDir();
        WriteTinyModel(dir, TinyConfig(), ts => ts.Where(t => t.Item1 != "model.layers.0.mlp.up_proj.weight").ToList());
        var e = Assert.Throws<InvalidModelFileException>(() => HfModelLoader.Load(dir.Path));
        Assert.Contains("blk.0.ffn_up.weight", e.Message);
        Assert.Contains("model.layers.0.mlp.up_proj.weight", e.Message);
    }

    [Fact]
    public void Wrong_shape_names_tensor_and_both_shapes()
    {
        using var dir = new TempDir();
        WriteTinyModel(dir, TinyConfig(), ts => ts.Select(t => t.Item1 == "model.norm.weight" ? (t.Item1, new long[] { 4 }, new float[4]) : t).ToList());
        var e = Assert.Throws<InvalidModelFileException>(() => HfModelLoader.Load(dir.Path));
        Assert.Contains("'model.norm.weight' has shape [4], config.json implies [8]", e.Message);
    }

    [Fact]
    public void Unknown_tensor_is_an_error_but_rotary_inv_freq_is_skipped()
    {
        using var dir = new TempDir();
        WriteTinyModel(dir, TinyConfig(), ts => [.. ts, ("model.layers.0.self_attn.rotary_emb.inv_freq", [2], [1, 2])]);
        using (var m = HfModelLoader.Load(dir.Path)) Assert.Equal(12, m.Tensors.Count);

        WriteTinyModel(dir, TinyConfig(), ts => [.. ts, ("model.vision.patch.weight", [2], [1, 2])]);
        var e = Assert.Throws<InvalidModelFileException>(() => HfModelLoader.Load(dir.Path));
        Assert.Contains("unknown tensor 'model.vision.patch.weight'", e.Message);

        WriteTinyModel(dir, TinyConfig(), ts => [.. ts, ("model.layers.1.input_layernorm.weight", [8], new float[8])]);
        e = Assert.Throws<InvalidModelFileException>(() => HfModelLoader.Load(dir.Path));
        Assert.Contains("not part of a llama model", e.Message);
    }

    [Fact]
    public void Unsupported_weight_dtype_is_reported()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), TinyConfig().ToJsonString());
        var c = HfConfig.Read(dir.File("config.json"));
        var tensors = TinyTensors(c);
        var header = new Dictionary<string, object>();
        long offset = 0;
        foreach (var (name, shape, values) in tensors)
        {
            bool i8 = name == "model.layers.0.mlp.up_proj.weight";
            long bytes = values.Length * (i8 ? 1 : 4);
            header[name] = new { dtype = i8 ? "I8" : "F32", shape, data_offsets = new[] { offset, offset + bytes } };
            offset += bytes;
        }
        WriteRaw(dir.File("model.safetensors"), JsonSerializer.Serialize(header), new byte[offset]);
        var e = Assert.Throws<InvalidModelFileException>(() => HfModelLoader.Load(dir.Path));
        Assert.Contains("unsupported dtype I8", e.Message);
    }

    [Fact]
    public void Sharded_model_loads()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), TinyConfig().ToJsonString());
        var c = HfConfig.Read(dir.File("config.json"));
        var tensors = TinyTensors(c);
        WriteF32(dir.File("model-00001-of-00002.safetensors"), [.. tensors.Take(5)]);
        WriteF32(dir.File("model-00002-of-00002.safetensors"), [.. tensors.Skip(5)]);
        var map = tensors.Select((t, i) => (t.Item1, i < 5 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors"))
            .ToDictionary(p => p.Item1, p => p.Item2);
        File.WriteAllText(dir.File(SafetensorsSet.IndexFileName), JsonSerializer.Serialize(new { weight_map = map }));
        using var m = HfModelLoader.Load(dir.Path);
        Assert.Equal(12, m.Tensors.Count);
        Assert.Equal(tensors.Single(t => t.Item1 == "model.norm.weight").Item3, m.Get(TensorNames.OutputNorm).ToFloat());
    }

    [Theory]
    [InlineData("model_type", "\"gpt2\"", "unsupported architecture 'gpt2' (supported: llama, mistral, qwen2, qwen3)")]
    [InlineData("hidden_size", "null", "missing required integer field \"hidden_size\"")]
    [InlineData("hidden_size", "\"big\"", "\"hidden_size\" must be a 32-bit integer")]
    [InlineData("num_key_value_heads", "3", "not a multiple of num_key_value_heads 3")]
    [InlineData("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}", "rope_scaling type 'llama3'")]
    [InlineData("rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}", "not supported")]
    [InlineData("hidden_act", "\"gelu\"", "hidden_act 'gelu'")]
    [InlineData("num_hidden_layers", "0", "must be positive")]
    [InlineData("head_dim", "5", "head_dim 5 must be positive and even")]
    public void Config_errors_are_specific(string field, string json, string expected)
    {
        using var dir = new TempDir();
        var cfg = TinyConfig();
        cfg[field] = JsonNode.Parse(json);
        if (field == "model_type") cfg.Remove("architectures");
        File.WriteAllText(dir.File("config.json"), cfg.ToJsonString());
        var e = Assert.ThrowsAny<LowbitException>(() => HfConfig.Read(dir.File("config.json")));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Config_defaults_and_compatible_rope_scaling()
    {
        using var dir = new TempDir();
        var cfg = TinyConfig();
        cfg.Remove("num_key_value_heads");
        cfg["rope_scaling"] = null;
        cfg["eos_token_id"] = new JsonArray(7, 9);
        File.WriteAllText(dir.File("config.json"), cfg.ToJsonString());
        var c = HfConfig.Read(dir.File("config.json"));
        Assert.Equal(2, c.NumKvHeads);
        Assert.Equal(4, c.HeadDim);
        Assert.Equal(7, c.EosTokenId);
        Assert.Equal(10000f, c.RopeTheta);

        cfg["rope_scaling"] = JsonNode.Parse("{\"type\": \"linear\", \"factor\": 1.0}");
        File.WriteAllText(dir.File("config.json"), cfg.ToJsonString());
        Assert.Equal(2, HfConfig.Read(dir.File("config.json")).NumKvHeads);
    }

    [Fact]
    public void Unsupported_architecture_name_is_reported()
    {
        using var dir = new TempDir();
        var cfg = TinyConfig();
        cfg["architectures"] = new JsonArray("LlamaForSequenceClassification");
        File.WriteAllText(dir.File("config.json"), cfg.ToJsonString());
        var e = Assert.Throws<LowbitException>(() => HfConfig.Read(dir.File("config.json")));
        Assert.Contains("unsupported architecture 'LlamaForSequenceClassification'", e.Message);
    }

    [Fact]
    public void Folder_without_config_or_weights_is_a_clear_error()
    {
        using var dir = new TempDir();
        Assert.Contains("config.json", Assert.Throws<LowbitException>(() => HfModelLoader.Load(dir.Path)).Message);
        File.WriteAllText(dir.File("config.json"), TinyConfig().ToJsonString());
        Assert.Contains("no model.safetensors", Assert.Throws<LowbitException>(() => HfModelLoader.Load(dir.Path)).Message);
    }
}
