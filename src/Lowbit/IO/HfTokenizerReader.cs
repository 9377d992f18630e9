using System.Text.Json;
using Lowbit.Model;

namespace Lowbit.IO;

/// <summary>
/// Builds the GGUF view of an HF model's tokenizer (<see cref="TokenizerInfo"/>) the way llama.cpp's
/// convert_hf_to_gguf.py does: tokenizer.model (SentencePiece) → model "llama" with pieces, scores and
/// types; otherwise tokenizer.json (byte-level BPE) → model "gpt2" with tokens, merges and types.
/// Special ids come from tokenizer_config.json, then config.json, then the SentencePiece trainer spec.
/// </summary>
public static class HfTokenizerReader
{
    public const string SentencePieceFileName = "tokenizer.model";
    public const string TokenizerJsonFileName = "tokenizer.json";
    public const string TokenizerConfigFileName = "tokenizer_config.json";
    public const string AddedTokensFileName = "added_tokens.json";

    /// <summary>The tokenizer of the model in <paramref name="dir"/>, or null when it has no tokenizer files.</summary>
    public static TokenizerInfo? TryRead(string dir, ModelConfig config)
    {
        string spm = Path.Combine(dir, SentencePieceFileName);
        if (File.Exists(spm)) return FromSentencePiece(dir, SentencePieceModel.Load(spm), config.VocabSize, config);
        string json = Path.Combine(dir, TokenizerJsonFileName);
        if (File.Exists(json)) return FromTokenizerJson(dir, json, config.VocabSize, config);
        return null;
    }

    /// <summary>
    /// llama.cpp's _create_vocab_sentencepiece: the vocabulary is padded to <paramref name="vocabSize"/>
    /// with "[PAD{id}]" (score -10000, UNUSED) and pieces past it are dropped; piece types map
    /// unknown/control/unused/byte to themselves and everything else (user-defined included) to NORMAL;
    /// added_tokens.json entries become USER_DEFINED and tokenizer_config.json added_tokens_decoder
    /// entries CONTROL (when special or special-looking) or USER_DEFINED, both with score -1000.
    /// </summary>
    public static TokenizerInfo FromSentencePiece(string dir, SentencePieceModel spm, int vocabSize, ModelConfig? config = null)
    {
        if (spm.ModelType != SentencePieceModel.ModelTypeBpe)
            throw new LowbitException($"{Path.Combine(dir, SentencePieceFileName)}: SentencePiece model type {spm.ModelType} is not supported (only BPE, type 2, as Llama/Mistral use)");
        if (vocabSize <= 0) vocabSize = spm.Pieces.Count;
        var tokens = new string[vocabSize];
        var scores = new float[vocabSize];
        var types = new TokenType[vocabSize];
        for (int i = 0; i < vocabSize; i++)
        {
            tokens[i] = $"[PAD{i}]";
            scores[i] = -10000f;
            types[i] = TokenType.Unused;
        }
        for (int id = 0; id < Math.Min(vocabSize, spm.Pieces.Count); id++)
        {
            var p = spm.Pieces[id];
            tokens[id] = p.Piece;
            scores[id] = p.Score;
            types[id] = p.Type switch
            {
                SentencePieceType.Unknown => TokenType.Unknown,
                SentencePieceType.Control => TokenType.Control,
                SentencePieceType.Unused => TokenType.Unused,
                SentencePieceType.Byte => TokenType.Byte,
                _ => TokenType.Normal,
            };
        }

        string addedPath = Path.Combine(dir, AddedTokensFileName);
        if (File.Exists(addedPath))
        {
            using var doc = ParseJson(addedPath);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(addedPath, "expected a JSON object of token → id");
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (!p.Value.TryGetInt32(out int id) || id < 0)
                    throw new InvalidModelFileException(addedPath, $"token '{p.Name}' has no valid id");
                if (id >= vocabSize) continue;
                tokens[id] = p.Name;
                scores[id] = -1000f;
                types[id] = TokenType.UserDefined;
            }
        }

        var tokConfig = ReadTokenizerConfig(dir);
        if (tokConfig is { } tc && tc.RootElement.TryGetProperty("added_tokens_decoder", out var decoder) && decoder.ValueKind == JsonValueKind.Object)
        {
            foreach (var p in decoder.EnumerateObject())
            {
                if (!int.TryParse(p.Name, out int id) || id < 0 || p.Value.ValueKind != JsonValueKind.Object
                    || !p.Value.TryGetProperty("content", out var contentEl) || contentEl.ValueKind != JsonValueKind.String)
                    throw new InvalidModelFileException(Path.Combine(dir, TokenizerConfigFileName), $"added_tokens_decoder entry '{p.Name}' is malformed");
                if (id >= vocabSize) continue;
                string content = contentEl.GetString()!;
                bool special = p.Value.TryGetProperty("special", out var sp) && sp.ValueKind == JsonValueKind.True;
                if (special || LooksSpecial(content))
                    types[id] = TokenType.Control;
                else
                {
                    content = content.Replace('\u2581', ' '); // user-defined tokens are stored pre-normalized
                    types[id] = TokenType.UserDefined;
                }
                scores[id] = -1000f;
                tokens[id] = content;
            }
        }

        try
        {
            var (bos, eos, unk, pad, addBos, addEos) = SpecialIds(tokConfig, tokens, config,
                spm.BosId, spm.EosId, spm.UnknownId, spm.PadId >= 0 ? spm.PadId : null, defaultAddBos: true);
            return new TokenizerInfo
            {
                Model = "llama",
                Tokens = tokens,
                Scores = scores,
                TokenTypes = types,
                BosId = bos,
                EosId = eos,
                UnknownId = unk,
                PaddingId = pad,
                AddBos = addBos,
                AddEos = addEos,
                SentencePieceModel = spm.RawBytes,
            };
        }
        finally
        {
            tokConfig?.Dispose();
        }
    }

    /// <summary>
    /// llama.cpp's get_vocab_base for byte-level BPE tokenizer.json files: one entry per id up to
    /// <paramref name="vocabSize"/> ("[PAD{id}]"/UNUSED where the tokenizer has none), added tokens
    /// CONTROL when special or special-looking else USER_DEFINED, the rest NORMAL; merges as "a b".
    /// </summary>
    public static TokenizerInfo FromTokenizerJson(string dir, string jsonPath, int vocabSize, ModelConfig? config = null)
    {
        using var doc = ParseJson(jsonPath);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new InvalidModelFileException(jsonPath, "expected an object with a \"model\" object");
        string? type = model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
        if (type != "BPE")
            throw new LowbitException($"{jsonPath}: tokenizer model type '{type}' is not supported (only byte-level BPE; SentencePiece models need tokenizer.model)");
        if (!root.GetRawText().Contains("\"ByteLevel\"", StringComparison.Ordinal))
            throw new LowbitException($"{jsonPath}: BPE tokenizer is not byte-level (no ByteLevel pre-tokenizer or decoder); provide tokenizer.model for SentencePiece-style models");
        if (!model.TryGetProperty("vocab", out var vocabEl) || vocabEl.ValueKind != JsonValueKind.Object)
            throw new InvalidModelFileException(jsonPath, "model.vocab must be an object of token → id");

        var byId = new Dictionary<int, string>();
        foreach (var p in vocabEl.EnumerateObject())
        {
            if (!p.Value.TryGetInt32(out int id) || id < 0)
                throw new InvalidModelFileException(jsonPath, $"vocab token '{p.Name}' has no valid id");
            if (!byId.TryAdd(id, p.Name))
                throw new InvalidModelFileException(jsonPath, $"vocab id {id} is used by '{byId[id]}' and '{p.Name}'");
        }
        var added = new Dictionary<int, (string Content, bool Special)>();
        if (root.TryGetProperty("added_tokens", out var addedEl) && addedEl.ValueKind == JsonValueKind.Array)
            foreach (var a in addedEl.EnumerateArray())
            {
                if (a.ValueKind != JsonValueKind.Object || !a.TryGetProperty("id", out var idEl) || !idEl.TryGetInt32(out int id)
                    || !a.TryGetProperty("content", out var c) || c.ValueKind != JsonValueKind.String)
                    throw new InvalidModelFileException(jsonPath, "added_tokens entry without integer id and string content");
                bool special = a.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True;
                added[id] = (c.GetString()!, special);
                byId[id] = c.GetString()!;
            }

        int maxId = byId.Count == 0 ? -1 : byId.Keys.Max();
        if (vocabSize <= 0) vocabSize = maxId + 1;
        if (maxId >= vocabSize)
            throw new InvalidModelFileException(jsonPath, $"token id {maxId} is not below config vocab_size {vocabSize}");

        var tokens = new string[vocabSize];
        var types = new TokenType[vocabSize];
        for (int i = 0; i < vocabSize; i++)
        {
            if (!byId.TryGetValue(i, out var tok)) { tokens[i] = $"[PAD{i}]"; types[i] = TokenType.Unused; continue; }
            if (added.TryGetValue(i, out var a))
            {
                if (a.Special || LooksSpecial(tok)) types[i] = TokenType.Control;
                else { tok = tok.Replace('\u2581', ' '); types[i] = TokenType.UserDefined; }
            }
            else types[i] = TokenType.Normal;
            tokens[i] = tok;
        }

        var merges = new List<string>();
        if (model.TryGetProperty("merges", out var mergesEl) && mergesEl.ValueKind == JsonValueKind.Array)
            foreach (var m in mergesEl.EnumerateArray())
            {
                if (m.ValueKind == JsonValueKind.String) merges.Add(m.GetString()!);
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
                         && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                    merges.Add($"{m[0].GetString()} {m[1].GetString()}");
                else throw new InvalidModelFileException(jsonPath, "merges entries must be \"a b\" strings or [a, b] pairs");
            }

        using var tokConfig = ReadTokenizerConfig(dir);
        var (bos, eos, unk, pad, addBos, addEos) = SpecialIds(tokConfig, tokens, config, -1, -1, -1, null, defaultAddBos: false);
        // Without add_bos_token/add_eos_token in tokenizer_config.json, the post-processor template says
        // whether BOS/EOS are added (Llama 3 style), as gguf-py's SpecialVocab reads it.
        bool configSaysBos = tokConfig is not null && tokConfig.RootElement.TryGetProperty("add_bos_token", out _);
        bool configSaysEos = tokConfig is not null && tokConfig.RootElement.TryGetProperty("add_eos_token", out _);
        if (TemplateSpecialTokens(root) is var (first, last))
        {
            if (!configSaysBos && first is not null && Array.IndexOf(tokens, first) is >= 0 and var firstId)
            {
                addBos = true;
                bos = firstId;
            }
            if (!configSaysEos && last is not null && Array.IndexOf(tokens, last) is >= 0 and var lastId && lastId == eos)
                addEos = true;
        }
        return new TokenizerInfo
        {
            Model = "gpt2",
            Tokens = tokens,
            TokenTypes = types,
            Merges = merges,
            BosId = bos,
            EosId = eos,
            UnknownId = unk,
            PaddingId = pad,
            AddBos = addBos,
            AddEos = addEos,
        };
    }

    /// <summary>
    /// The GGUF pre-tokenizer name ("gpt-2", "qwen2", "llama-bpe") of a byte-level tokenizer.json: its
    /// single Split regex, or GPT-2's when the ByteLevel pre-tokenizer applies its own regex. Null when the
    /// pre-tokenizer is not one Lowbit implements (encoding then reports it; the vocabulary still loads).
    /// </summary>
    public static string? ReadPreType(string tokenizerJsonPath)
    {
        using var doc = ParseJson(tokenizerJsonPath);
        if (!doc.RootElement.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object) return null;
        var steps = new List<JsonElement>();
        if (pre.TryGetProperty("pretokenizers", out var seq) && seq.ValueKind == JsonValueKind.Array) steps.AddRange(seq.EnumerateArray());
        else steps.Add(pre);
        var regexes = new List<string>();
        bool byteLevelRegex = false;
        foreach (var step in steps)
        {
            string? type = step.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
            if (type == "Split" && step.TryGetProperty("pattern", out var pat) && pat.ValueKind == JsonValueKind.Object
                && pat.TryGetProperty("Regex", out var rx) && rx.ValueKind == JsonValueKind.String)
                regexes.Add(rx.GetString()!);
            else if (type == "ByteLevel")
                byteLevelRegex = !step.TryGetProperty("use_regex", out var ur) || ur.ValueKind != JsonValueKind.False;
            else return null;
        }
        if (regexes.Count == 1 && !byteLevelRegex) return HfByteLevelBpe.PreForPattern(regexes[0]);
        if (regexes.Count == 0 && byteLevelRegex) return "gpt-2";
        return null;
    }

    /// <summary>
    /// The special tokens a TemplateProcessing post-processor puts before and after a single sequence
    /// (null when it puts none there, or when there is no such post-processor).
    /// </summary>
    private static (string? First, string? Last)? TemplateSpecialTokens(JsonElement root)
    {
        if (!root.TryGetProperty("post_processor", out var pp) || pp.ValueKind != JsonValueKind.Object) return null;
        var candidates = new List<JsonElement> { pp };
        if (pp.TryGetProperty("processors", out var list) && list.ValueKind == JsonValueKind.Array) candidates.AddRange(list.EnumerateArray());
        foreach (var p in candidates)
        {
            if (p.ValueKind != JsonValueKind.Object || !p.TryGetProperty("type", out var t) || t.GetString() != "TemplateProcessing"
                || !p.TryGetProperty("single", out var single) || single.ValueKind != JsonValueKind.Array || single.GetArrayLength() == 0)
                continue;
            static string? Special(JsonElement item) =>
                item.ValueKind == JsonValueKind.Object && item.TryGetProperty("SpecialToken", out var st)
                && st.TryGetProperty("id", out var id) && id.ValueKind == JsonValueKind.String ? id.GetString() : null;
            return (Special(single[0]), Special(single[single.GetArrayLength() - 1]));
        }
        return null;
    }

    /// <summary>convert_hf_to_gguf.py does_token_look_special: added tokens that should be control tokens even if not marked special.</summary>
    public static bool LooksSpecial(string token) =>
        token is "<pad>" or "<mask>" or "<2mass>" or "[@BOS@]"
        || (token.StartsWith("<|", StringComparison.Ordinal) && token.EndsWith("|>", StringComparison.Ordinal))
        || (token.StartsWith("<\uff5c", StringComparison.Ordinal) && token.EndsWith("\uff5c>", StringComparison.Ordinal))
        || (token.StartsWith("<unused", StringComparison.Ordinal) && token.EndsWith('>'));

    private static (int Bos, int Eos, int Unk, int? Pad, bool AddBos, bool AddEos) SpecialIds(
        JsonDocument? tokConfig, string[] tokens, ModelConfig? config, int bos, int eos, int unk, int? pad, bool defaultAddBos)
    {
        int? Lookup(string key)
        {
            if (tokConfig is null || !tokConfig.RootElement.TryGetProperty(key, out var v)) return null;
            string? content = v.ValueKind switch
            {
                JsonValueKind.String => v.GetString(),
                JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
                _ => null,
            };
            if (content is null) return null;
            int idx = Array.IndexOf(tokens, content);
            return idx >= 0 ? idx : null;
        }
        bool? Flag(string key) =>
            tokConfig is not null && tokConfig.RootElement.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False
                ? v.GetBoolean() : null;

        int bosId = Lookup("bos_token") ?? config?.BosTokenId ?? bos;
        int eosId = Lookup("eos_token") ?? config?.EosTokenId ?? eos;
        int unkId = Lookup("unk_token") ?? unk;
        int? padId = Lookup("pad_token") ?? pad;
        return (bosId, eosId, unkId, padId, Flag("add_bos_token") ?? defaultAddBos, Flag("add_eos_token") ?? false);
    }

    private static JsonDocument? ReadTokenizerConfig(string dir)
    {
        string path = Path.Combine(dir, TokenizerConfigFileName);
        if (!File.Exists(path)) return null;
        var doc = ParseJson(path);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            doc.Dispose();
            throw new InvalidModelFileException(path, "expected a JSON object");
        }
        return doc;
    }

    private static JsonDocument ParseJson(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(path, $"not valid JSON ({e.Message})");
        }
    }
}
