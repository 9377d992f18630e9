using System.Text.Json;
using System.Text.Json.Nodes;
using Lowbit.IO;
using Lowbit.Model;
using static Lowbit.Tests.IO.HfTestFiles;

namespace Lowbit.Tests.IO;

public sealed class HfTokenizerJsonTests
{
    /// <summary>A tiny byte-level BPE tokenizer.json: ids 0..255 are the GPT-2 byte characters, then merges and added tokens.</summary>
    private static JsonObject TinyTokenizerJson(JsonNode? preTokenizer = null)
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[HfByteLevelBpe.ByteToChar((byte)b).ToString()] = b;
        vocab["he"] = 256;
        vocab["ll"] = 257;
        vocab["hell"] = 258;
        vocab["\u0120w"] = 259; // "Ġw": space + w
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = 260, ["content"] = "<|endoftext|>", ["special"] = true },
                new JsonObject { ["id"] = 261, ["content"] = "<think>", ["special"] = false },
                new JsonObject { ["id"] = 262, ["content"] = "<|im_start|>", ["special"] = false }),
            ["pre_tokenizer"] = preTokenizer ?? new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = HfByteLevelBpe.Qwen2Pattern }, ["behavior"] = "Isolated" },
                    new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = false }),
            },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["vocab"] = vocab,
                ["merges"] = new JsonArray("h e", "l l", new JsonArray("he", "ll"), "\u0120 w"),
            },
        };
    }

    [Fact]
    public void Tokenizer_json_maps_to_gpt2_vocab_like_llama_cpp()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), TinyTokenizerJson().ToJsonString());
        File.WriteAllText(dir.File("tokenizer_config.json"), "{\"eos_token\": \"<|endoftext|>\", \"pad_token\": \"<|endoftext|>\"}");
        var info = HfTokenizerReader.FromTokenizerJson(dir.Path, dir.File("tokenizer.json"), 264);
        Assert.Equal("gpt2", info.Model);
        Assert.Equal(264, info.Tokens.Count);
        Assert.Equal(["h e", "l l", "he ll", "\u0120 w"], info.Merges);
        Assert.Equal(TokenType.Normal, info.TokenTypes![258]);
        Assert.Equal(TokenType.Control, info.TokenTypes[260]);
        Assert.Equal(TokenType.UserDefined, info.TokenTypes[261]);
        Assert.Equal(TokenType.Control, info.TokenTypes[262]); // not marked special but looks special
        Assert.Equal(("[PAD263]", TokenType.Unused), (info.Tokens[263], info.TokenTypes[263]));
        Assert.Equal(260, info.EosId);
        Assert.Equal(260, info.PaddingId);
        Assert.False(info.AddBos);
        Assert.Null(info.Scores);
        Assert.Equal("qwen2", HfTokenizerReader.ReadPreType(dir.File("tokenizer.json")));
    }

    [Fact]
    public void Byte_level_bpe_encodes_and_decodes()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), TinyTokenizerJson().ToJsonString());
        var info = HfTokenizerReader.FromTokenizerJson(dir.Path, dir.File("tokenizer.json"), 264);
        var t = Tokenizer.Create(info, "qwen2");
        Assert.Equal([258, 'o', 259, 'o', 'r', 'l', 'd'], t.Encode("hello world", false));
        Assert.Equal("hello world", t.Decode(t.Encode("hello world", false)));
        string unicode = "naïve 🦙\n\ttabs";
        Assert.Equal(unicode, t.Decode(t.Encode(unicode, false)));
        Assert.Equal("", t.Decode([260]));
        Assert.Equal("<think>", t.Decode([261]));
    }

    [Fact]
    public void Post_processor_template_turns_on_bos()
    {
        using var dir = new TempDir();
        var json = TinyTokenizerJson();
        json["post_processor"] = JsonNode.Parse("""
            {"type": "Sequence", "processors": [
              {"type": "ByteLevel", "add_prefix_space": true},
              {"type": "TemplateProcessing",
               "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
               "special_tokens": {}}]}
            """);
        File.WriteAllText(dir.File("tokenizer.json"), json.ToJsonString());
        var info = HfTokenizerReader.FromTokenizerJson(dir.Path, dir.File("tokenizer.json"), 264);
        Assert.True(info.AddBos);
        Assert.Equal(260, info.BosId);
        Assert.False(info.AddEos);

        File.WriteAllText(dir.File("tokenizer_config.json"), "{\"add_bos_token\": false}");
        Assert.False(HfTokenizerReader.FromTokenizerJson(dir.Path, dir.File("tokenizer.json"), 264).AddBos);
    }

    [Fact]
    public void Pre_tokenizer_kinds_are_recognised()
    {
        using var dir = new TempDir();
        var gpt2 = JsonNode.Parse("{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}");
        File.WriteAllText(dir.File("tokenizer.json"), TinyTokenizerJson(gpt2).ToJsonString());
        Assert.Equal("gpt-2", HfTokenizerReader.ReadPreType(dir.File("tokenizer.json")));
        var llama3 = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = HfByteLevelBpe.Llama3Pattern } },
                new JsonObject { ["type"] = "ByteLevel", ["use_regex"] = false }),
        };
        File.WriteAllText(dir.File("tokenizer.json"), TinyTokenizerJson(llama3).ToJsonString());
        Assert.Equal("llama-bpe", HfTokenizerReader.ReadPreType(dir.File("tokenizer.json")));
        var other = JsonNode.Parse("{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\d+\"}}");
        File.WriteAllText(dir.File("tokenizer.json"), TinyTokenizerJson(other).ToJsonString());
        Assert.Null(HfTokenizerReader.ReadPreType(dir.File("tokenizer.json")));
    }

    [Fact]
    public void Non_byte_level_or_non_bpe_tokenizer_json_is_rejected()
    {
        using var dir = new TempDir();
        var json = TinyTokenizerJson(JsonNode.Parse("{\"type\": \"Metaspace\"}"));
        json["decoder"] = JsonNode.Parse("{\"type\": \"Metaspace\"}");
        File.WriteAllText(dir.File("tokenizer.json"), json.ToJsonString());
        Assert.Contains("not byte-level", Assert.Throws<LowbitException>(() => HfTokenizerReader.FromTokenizerJson(dir.Path, dir.File("tokenizer.json"), 0)).Message);
        json = TinyTokenizerJson();
        json["model"]!["type"] = "Unigram";
        File.WriteAllText(dir.File("tokenizer.json"), json.ToJsonString());
        Assert.Contains("'Unigram' is not supported", Assert.Throws<LowbitException>(() => HfTokenizerReader.FromTokenizerJson(dir.Path, dir.File("tokenizer.json"), 0)).Message);
        File.WriteAllText(dir.File("tokenizer.json"), TinyTokenizerJson().ToJsonString());
        Assert.Contains("not below config vocab_size 100", Assert.Throws<InvalidModelFileException>(() => HfTokenizerReader.FromTokenizerJson(dir.Path, dir.File("tokenizer.json"), 100)).Message);
    }

    [Fact]
    public void Qwen2_model_folder_loads_tokenizer_json_with_pre_type()
    {
        using var dir = new TempDir();
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("Qwen2ForCausalLM"), ["model_type"] = "qwen2",
            ["hidden_size"] = 8, ["intermediate_size"] = 4, ["num_hidden_layers"] = 1, ["num_attention_heads"] = 2,
            ["num_key_value_heads"] = 2, ["vocab_size"] = 264, ["tie_word_embeddings"] = true,
            ["bos_token_id"] = 260, ["eos_token_id"] = 260,
        };
        File.WriteAllText(dir.File("config.json"), config.ToJsonString());
        File.WriteAllText(dir.File("tokenizer.json"), TinyTokenizerJson().ToJsonString());
        var tensors = new (string, long[])[]
        {
            ("model.embed_tokens.weight", [264, 8]), ("model.norm.weight", [8]),
            ("model.layers.0.input_layernorm.weight", [8]), ("model.layers.0.post_attention_layernorm.weight", [8]),
            ("model.layers.0.self_attn.q_proj.weight", [8, 8]), ("model.layers.0.self_attn.k_proj.weight", [8, 8]),
            ("model.layers.0.self_attn.v_proj.weight", [8, 8]), ("model.layers.0.self_attn.o_proj.weight", [8, 8]),
            ("model.layers.0.self_attn.q_proj.bias", [8]), ("model.layers.0.self_attn.k_proj.bias", [8]),
            ("model.layers.0.self_attn.v_proj.bias", [8]),
            ("model.layers.0.mlp.gate_proj.weight", [4, 8]), ("model.layers.0.mlp.up_proj.weight", [4, 8]),
            ("model.layers.0.mlp.down_proj.weight", [8, 4]),
        };
        WriteF32(dir.File("model.safetensors"), tensors.Select(t => (t.Item1, t.Item2, new float[t.Item2.Aggregate(1L, (a, b) => a * b)])).ToArray());
        using var m = HfModelLoader.Load(dir.Path);
        Assert.Equal("gpt2", m.Tokenizer!.Model);
        Assert.Equal("qwen2", m.Metadata[Tokenizer.PreMetadataKey]);
        var t = Tokenizer.ForModel(m)!;
        Assert.Equal([258, 'o'], t.Encode("hello", false));
        Assert.Equal(260, t.BosId);
    }
}
