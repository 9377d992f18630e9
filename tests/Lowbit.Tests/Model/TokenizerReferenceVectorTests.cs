using System.Text;
using Lowbit.Model;
using Lowbit.Tests.IO;

namespace Lowbit.Tests.Model;

/// <summary>
/// The built-in tokenizers against llama.cpp's own test vectors (test-tokenizer-0): the Llama
/// SentencePiece vocabulary (32000 tokens, SPM-BPE) and GPT-2 (byte-level BPE with merges), read from
/// vocab-only GGUF files with a minimal test-local metadata reader.
/// </summary>
public sealed class TokenizerReferenceVectorTests
{
    private static readonly string VocabDir = Path.Combine(HfTestFiles.RepoRoot, "tests", "data", "gguf-vocab");

    private static void AssertMatchesVectors(string name, Tokenizer tokenizer)
    {
        var texts = File.ReadAllText(Path.Combine(VocabDir, $"ggml-vocab-{name}.gguf.inp"), Encoding.UTF8)
            .Split("\n__ggml_vocab_test__\n");
        var expected = File.ReadAllLines(Path.Combine(VocabDir, $"ggml-vocab-{name}.gguf.out"));
        Assert.Equal(46, expected.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            int[] want = expected[i].Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
            int[] got = tokenizer.Encode(texts[i], addBos: false);
            Assert.True(want.SequenceEqual(got), $"{name} case {i} '{texts[i]}': expected [{string.Join(' ', want)}], got [{string.Join(' ', got)}]");
            Assert.Equal(texts[i], tokenizer.Decode(got));
        }
    }

    [Fact]
    public void Builtin_spm_bpe_reproduces_llama_cpp_test_vectors()
    {
        var kv = ReadGgufMetadata(Path.Combine(VocabDir, "ggml-vocab-llama-spm.gguf"));
        Assert.Equal("llama", kv["tokenizer.ggml.model"]);
        var tokens = (string[])kv["tokenizer.ggml.tokens"];
        var info = new TokenizerInfo
        {
            Model = "llama",
            Tokens = tokens,
            Scores = (float[])kv["tokenizer.ggml.scores"],
            TokenTypes = ((int[])kv["tokenizer.ggml.token_type"]).Select(t => (TokenType)t).ToArray(),
            BosId = (int)(uint)kv["tokenizer.ggml.bos_token_id"],
            EosId = (int)(uint)kv["tokenizer.ggml.eos_token_id"],
            UnknownId = (int)(uint)kv["tokenizer.ggml.unknown_token_id"],
        };
        Assert.Equal(32000, tokens.Length);
        var tokenizer = Tokenizer.Create(info);
        Assert.Equal("spm-bpe", tokenizer.Backend);
        AssertMatchesVectors("llama-spm", tokenizer);
    }

    [Fact]
    public void Byte_level_bpe_reproduces_llama_cpp_gpt2_test_vectors()
    {
        var kv = ReadGgufMetadata(Path.Combine(VocabDir, "ggml-vocab-gpt-2.gguf"));
        Assert.Equal("gpt2", kv["tokenizer.ggml.model"]);
        var info = new TokenizerInfo
        {
            Model = "gpt2",
            Tokens = (string[])kv["tokenizer.ggml.tokens"],
            Merges = (string[])kv["tokenizer.ggml.merges"],
            TokenTypes = ((int[])kv["tokenizer.ggml.token_type"]).Select(t => (TokenType)t).ToArray(),
        };
        var tokenizer = Tokenizer.Create(info, (string)kv["tokenizer.ggml.pre"]);
        Assert.Equal("byte-level-bpe", tokenizer.Backend);
        AssertMatchesVectors("gpt-2", tokenizer);
        Assert.Throws<LowbitException>(() => Tokenizer.Create(info, "deepseek-llm"));
    }

    /// <summary>GGUF v2/v3 header and key/values only (enough for tokenizer metadata).</summary>
    private static Dictionary<string, object> ReadGgufMetadata(string path)
    {
        using var r = new BinaryReader(File.OpenRead(path), Encoding.UTF8);
        Assert.Equal("GGUF"u8.ToArray(), r.ReadBytes(4));
        uint version = r.ReadUInt32();
        Assert.True(version is 2 or 3);
        r.ReadUInt64(); // tensor count
        ulong kvCount = r.ReadUInt64();
        var kv = new Dictionary<string, object>();
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = ReadString(r);
            kv[key] = ReadValue(r, r.ReadUInt32());
        }
        return kv;
    }

    private static string ReadString(BinaryReader r) => Encoding.UTF8.GetString(r.ReadBytes(checked((int)r.ReadUInt64())));

    private static object ReadValue(BinaryReader r, uint type) => type switch
    {
        0 => r.ReadByte(),
        1 => r.ReadSByte(),
        2 => r.ReadUInt16(),
        3 => r.ReadInt16(),
        4 => r.ReadUInt32(),
        5 => r.ReadInt32(),
        6 => r.ReadSingle(),
        7 => r.ReadByte() != 0,
        8 => ReadString(r),
        9 => ReadArray(r),
        10 => r.ReadUInt64(),
        11 => r.ReadInt64(),
        12 => r.ReadDouble(),
        _ => throw new InvalidDataException($"GGUF value type {type}"),
    };

    private static object ReadArray(BinaryReader r)
    {
        uint type = r.ReadUInt32();
        int n = checked((int)r.ReadUInt64());
        return type switch
        {
            8 => Enumerable.Range(0, n).Select(_ => ReadString(r)).ToArray(),
            6 => Enumerable.Range(0, n).Select(_ => r.ReadSingle()).ToArray(),
            5 => Enumerable.Range(0, n).Select(_ => r.ReadInt32()).ToArray(),
            _ => Enumerable.Range(0, n).Select(_ => ReadValue(r, type)).ToArray(),
        };
    }
}
