using System.Diagnostics;
using System.Text.Json;
using Lowbit.IO;
using Lowbit.Model;
using Lowbit.Tests.IO;

namespace Lowbit.Tests.Model;

public sealed class TokenizerTests
{
    private static readonly string SpmPath = Path.Combine(HfTestFiles.RefModelDir, "tokenizer.model");
    private static readonly string WikiPath = Path.Combine(HfTestFiles.RepoRoot, "data", "wikitext-2-raw", "wiki.test.full.raw");

    private static TokenizerInfo RefInfo() =>
        HfTokenizerReader.FromSentencePiece(HfTestFiles.RefModelDir, SentencePieceModel.Load(SpmPath), 4096);

    [Fact]
    public void SentencePiece_model_pieces_and_specs_are_read()
    {
        var spm = SentencePieceModel.Load(SpmPath);
        Assert.Equal(4096, spm.Pieces.Count);
        Assert.Equal(new SentencePiece("<unk>", 0, SentencePieceType.Unknown), spm.Pieces[0]);
        Assert.Equal(new SentencePiece("<s>", 0, SentencePieceType.Control), spm.Pieces[1]);
        Assert.Equal(new SentencePiece("</s>", 0, SentencePieceType.Control), spm.Pieces[2]);
        Assert.Equal(new SentencePiece("<0x00>", 0, SentencePieceType.Byte), spm.Pieces[3]);
        Assert.Equal(new SentencePiece("<0xFF>", 0, SentencePieceType.Byte), spm.Pieces[258]);
        Assert.Equal(new SentencePiece("\u2581t", -0f, SentencePieceType.Normal), spm.Pieces[259]);
        Assert.Equal(-1f, spm.Pieces[260].Score);
        Assert.Equal(SentencePieceModel.ModelTypeBpe, spm.ModelType);
        Assert.True(spm.ByteFallback);
        Assert.True(spm.AddDummyPrefix);
        Assert.False(spm.RemoveExtraWhitespaces);
        Assert.Equal((0, 1, 2, -1), (spm.UnknownId, spm.BosId, spm.EosId, spm.PadId));
        Assert.Equal("identity", spm.NormalizerName);
    }

    [Fact]
    public void Corrupt_sentencepiece_model_is_rejected()
    {
        var bytes = File.ReadAllBytes(SpmPath)[..1000];
        var e = Assert.Throws<InvalidModelFileException>(() => SentencePieceModel.Parse(bytes, "x.model"));
        Assert.Contains("not a valid SentencePiece model", e.Message);
        Assert.Throws<InvalidModelFileException>(() => SentencePieceModel.Parse([], "x.model"));
    }

    [Fact]
    public void Bundled_tokenizer_maps_to_gguf_vocab()
    {
        var info = RefInfo();
        Assert.Equal("llama", info.Model);
        Assert.Equal(4096, info.Tokens.Count);
        Assert.Equal(TokenType.Unknown, info.TokenTypes![0]);
        Assert.Equal(TokenType.Control, info.TokenTypes[1]);
        Assert.Equal(TokenType.Control, info.TokenTypes[2]);
        Assert.Equal(TokenType.Byte, info.TokenTypes[3]);
        Assert.Equal(TokenType.Normal, info.TokenTypes[259]);
        Assert.Equal(-1f, info.Scores![260]);
        Assert.Equal((1, 2, 0), (info.BosId, info.EosId, info.UnknownId));
        Assert.True(info.AddBos);
        Assert.False(info.AddEos);
        Assert.Equal(File.ReadAllBytes(SpmPath), info.SentencePieceModel);
    }

    [Fact]
    public void Vocab_is_padded_or_truncated_to_config_vocab_size_like_llama_cpp()
    {
        var spm = SentencePieceModel.Load(SpmPath);
        var padded = HfTokenizerReader.FromSentencePiece(HfTestFiles.RefModelDir, spm, 4099);
        Assert.Equal(4099, padded.Tokens.Count);
        Assert.Equal("[PAD4097]", padded.Tokens[4097]);
        Assert.Equal(-10000f, padded.Scores![4097]);
        Assert.Equal(TokenType.Unused, padded.TokenTypes![4097]);
        Assert.Equal(spm.Pieces[4095].Piece, padded.Tokens[4095]);
        var truncated = HfTokenizerReader.FromSentencePiece(HfTestFiles.RefModelDir, spm, 4000);
        Assert.Equal(4000, truncated.Tokens.Count);
    }

    [Fact]
    public void Added_tokens_follow_convert_hf_to_gguf_rules()
    {
        using var dir = new HfTestFiles.TempDir();
        File.WriteAllText(dir.File("added_tokens.json"), "{\"<extra>\": 4096}");
        File.WriteAllText(dir.File("tokenizer_config.json"), JsonSerializer.Serialize(new
        {
            add_bos_token = false,
            add_eos_token = true,
            added_tokens_decoder = new Dictionary<string, object>
            {
                ["3"] = new { content = "<|im_start|>", special = false },
                ["4"] = new { content = "\u2581hi", special = false },
                ["5"] = new { content = "<tool>", special = true },
            },
        }));
        var info = HfTokenizerReader.FromSentencePiece(dir.Path, SentencePieceModel.Load(SpmPath), 4097);
        Assert.Equal(("<extra>", TokenType.UserDefined, -1000f), (info.Tokens[4096], info.TokenTypes![4096], info.Scores![4096]));
        Assert.Equal(("<|im_start|>", TokenType.Control), (info.Tokens[3], info.TokenTypes[3]));
        Assert.Equal((" hi", TokenType.UserDefined), (info.Tokens[4], info.TokenTypes[4]));
        Assert.Equal(("<tool>", TokenType.Control, -1000f), (info.Tokens[5], info.TokenTypes[5], info.Scores[5]));
        Assert.False(info.AddBos);
        Assert.True(info.AddEos);
    }

    [Fact]
    public void User_defined_tokens_are_matched_in_text_and_fragments_encoded_separately()
    {
        using var dir = new HfTestFiles.TempDir();
        File.WriteAllText(dir.File("added_tokens.json"), "{\"<extra>\": 4096}");
        var info = HfTokenizerReader.FromSentencePiece(dir.Path, SentencePieceModel.Load(SpmPath), 4097);
        foreach (var t in new[] { Tokenizer.Create(info), Tokenizer.Create(info with { SentencePieceModel = null }) })
        {
            int[] expected = [1, .. t.Encode("The cat", false), 4096, .. t.Encode("sat", false)];
            Assert.Equal(expected, t.Encode("The cat<extra>sat", true));
            Assert.Equal("The cat<extra> sat", t.Decode(expected)); // the second fragment got its own dummy-prefix space
        }
    }

    private static IEnumerable<string> WikiLines(int count) =>
        File.ReadLines(WikiPath).Where(l => l.Length > 0).Take(count);

    [Fact]
    public void Builtin_spm_bpe_matches_microsoft_ml_tokenizers_on_wikitext()
    {
        var info = RefInfo();
        var ml = Tokenizer.Create(info);
        var own = Tokenizer.Create(info with { SentencePieceModel = null });
        Assert.Equal("ml-sentencepiece", ml.Backend);
        Assert.Equal("spm-bpe", own.Backend);
        int n = 0;
        foreach (var line in WikiLines(2000))
        {
            Assert.Equal(ml.Encode(line, true), own.Encode(line, true));
            n++;
        }
        Assert.Equal(2000, n);
    }

    [Fact]
    public void Segmented_spm_bpe_equals_whole_text_bpe()
    {
        var info = RefInfo();
        string text = File.ReadAllText(WikiPath)[..150_000];
        var segmented = new List<int>();
        new SentencePieceBpe(info).Encode(text, segmented);
        var whole = new List<int>();
        new SentencePieceBpe(info, addSpacePrefix: true, allowSegmentation: false).Encode(text, whole);
        Assert.Equal(whole, segmented);
    }

    [Theory]
    [InlineData("Hello world")]
    [InlineData(" leading and  double  spaces ")]
    [InlineData("new\nline\ttab")]
    [InlineData("emoji 🦙 and accents: café, naïve, Ελληνικά, 日本語")]
    [InlineData("<s> literal special </s> <unk>")]
    [InlineData("x")]
    public void Builtin_spm_bpe_matches_microsoft_ml_tokenizers_on_edge_cases(string text)
    {
        var info = RefInfo();
        var ml = Tokenizer.Create(info);
        var own = Tokenizer.Create(info with { SentencePieceModel = null });
        var expected = ml.Encode(text, false);
        Assert.Equal(expected, own.Encode(text, false));
        Assert.Equal(text, own.Decode(expected));
    }

    [Fact]
    public void Encode_adds_bos_on_request_and_handles_empty_text()
    {
        var t = Tokenizer.Create(RefInfo());
        Assert.Equal([1], t.Encode("", true));
        Assert.Empty(t.Encode("", false));
        var ids = t.Encode("The cat", true);
        Assert.Equal(1, ids[0]);
        Assert.Equal(t.Encode("The cat", false), ids[1..]);
        Assert.Equal(2, t.Encode("a", false, addEos: true)[^1]);
    }

    [Fact]
    public void Decode_round_trips_wikitext_and_streaming_agrees()
    {
        var t = Tokenizer.Create(RefInfo());
        foreach (var line in WikiLines(300))
        {
            var ids = t.Encode(line, true);
            Assert.Equal(line, t.Decode(ids));
            var stream = t.CreateStreamDecoder();
            var sb = new System.Text.StringBuilder();
            foreach (int id in ids) sb.Append(stream.Push(id));
            sb.Append(stream.Flush());
            Assert.Equal(line, sb.ToString());
        }
    }

    [Fact]
    public void Streaming_holds_partial_utf8_from_byte_tokens()
    {
        var t = Tokenizer.Create(RefInfo());
        var ids = t.Encode("🦙", false); // not in a 4096 vocab: byte fallback, 4 byte tokens after the prefix
        Assert.Contains(ids, id => t.Info.TokenTypes![id] == TokenType.Byte);
        var stream = t.CreateStreamDecoder();
        var pieces = ids.Select(stream.Push).ToList();
        Assert.Equal("🦙", string.Concat(pieces));
        Assert.Equal("", pieces[^2]);
    }

    [Fact]
    public void Continuations_keep_their_leading_space()
    {
        var t = Tokenizer.Create(RefInfo());
        var ids = t.Encode("The cat sat", false);
        var tail = ids[^1..]; // "▁sat"
        Assert.Equal("sat", t.Decode(tail));
        Assert.Equal(" sat", t.Decode(tail, atStartOfText: false));
        var stream = t.CreateStreamDecoder(atStartOfText: false);
        Assert.Equal(" sat", stream.Push(tail[0]));
    }

    [Fact]
    public void Control_tokens_decode_to_nothing_and_bad_ids_are_errors()
    {
        var t = Tokenizer.Create(RefInfo());
        Assert.Equal(0, t.TokenBytes(1).Length);
        Assert.Equal("", t.Decode([1, 2]));
        Assert.Throws<LowbitException>(() => t.Decode([5000]));
        Assert.Null(Tokenizer.TryCreate(null));
    }

    [Fact]
    public void Whole_wikitext_test_tokenizes_well_under_ten_seconds()
    {
        string text = File.ReadAllText(WikiPath);
        var own = Tokenizer.Create(RefInfo() with { SentencePieceModel = null });
        var sw = Stopwatch.StartNew();
        var ids = own.Encode(text, true);
        sw.Stop();
        Assert.True(sw.Elapsed.TotalSeconds < 10, $"took {sw.Elapsed.TotalSeconds:F1} s");
        Assert.True(ids.Length > 250_000, $"{ids.Length} tokens");
        Assert.Equal(text, own.Decode(ids));
    }
}
