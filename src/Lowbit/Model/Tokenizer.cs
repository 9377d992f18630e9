using System.Text;
using Lowbit.IO;

namespace Lowbit.Model;

/// <summary>
/// Runtime tokenizer over a <see cref="TokenizerInfo"/>. SentencePiece models ("llama") encode with
/// Microsoft.ML.Tokenizers' LlamaTokenizer when the original tokenizer.model bytes are at hand (same ids as
/// SentencePiece), otherwise with <see cref="SentencePieceBpe"/> over the GGUF tokens and scores;
/// byte-level BPE models ("gpt2") encode with <see cref="HfByteLevelBpe"/>. Decoding is done here from
/// the token strings for every model, so streamed and whole-sequence output agree.
/// A model without a tokenizer (llama2.c checkpoints) has no <see cref="Tokenizer"/>: commands then
/// work on token ids (see <see cref="TryCreate"/>).
/// </summary>
public sealed class Tokenizer
{
    private readonly Action<string, List<int>> _encode;
    private readonly byte[][] _tokenBytes;
    private readonly bool _stripLeadingSpace;

    /// <summary>USER_DEFINED tokens, longest first: llama.cpp always matches them in text as whole tokens.</summary>
    private readonly (string Text, int Id)[] _userDefined;

    private Tokenizer(TokenizerInfo info, Action<string, List<int>> encode, bool stripLeadingSpace)
    {
        Info = info;
        _encode = encode;
        _stripLeadingSpace = stripLeadingSpace;
        _userDefined = info.TokenTypes is null ? []
            : Enumerable.Range(0, Math.Min(info.Tokens.Count, info.TokenTypes.Count))
                .Where(i => info.TokenTypes[i] == TokenType.UserDefined && info.Tokens[i].Length > 0)
                .Select(i => (info.Tokens[i], i))
                .OrderByDescending(t => t.Item1.Length).ThenBy(t => t.i)
                .ToArray();
        _tokenBytes = new byte[info.Tokens.Count][];
        for (int i = 0; i < _tokenBytes.Length; i++) _tokenBytes[i] = ComputeTokenBytes(info, i);
    }

    public TokenizerInfo Info { get; }
    public int VocabSize => Info.Tokens.Count;
    public int BosId => Info.BosId;
    public int EosId => Info.EosId;
    /// <summary>Which encoder is in use: "ml-sentencepiece", "spm-bpe" or "byte-level-bpe".</summary>
    public string Backend { get; private init; } = "";

    /// <summary>GGUF metadata key naming the byte-level BPE pre-tokenizer ("qwen2", "gpt-2", "llama-bpe").</summary>
    public const string PreMetadataKey = "tokenizer.ggml.pre";

    /// <summary>Null when the model has no tokenizer (commands then take and print token ids).</summary>
    public static Tokenizer? TryCreate(TokenizerInfo? info, string? pre = null) => info is null ? null : Create(info, pre);

    /// <summary>The tokenizer of a loaded model (pre-tokenizer from its "tokenizer.ggml.pre" metadata), or null when it has none.</summary>
    public static Tokenizer? ForModel(LoadedModel model) =>
        TryCreate(model.Tokenizer, model.Metadata.GetValueOrDefault(PreMetadataKey) as string);

    /// <param name="pre">For byte-level BPE ("gpt2") models: the GGUF pre-tokenizer name (see <see cref="HfByteLevelBpe.SupportedPreTypes"/>).</param>
    /// <param name="preferBuiltIn">For SentencePiece models: use the built-in SPM-BPE even when tokenizer.model bytes are present.</param>
    public static Tokenizer Create(TokenizerInfo info, string? pre = null, bool preferBuiltIn = false)
    {
        if (info.Tokens.Count == 0) throw new LowbitException("tokenizer has no tokens");
        switch (info.Model)
        {
            case "llama":
            {
                bool addSpacePrefix = true;
                if (info.SentencePieceModel is { } raw)
                {
                    var spm = SentencePieceModel.Parse(raw, "tokenizer.model");
                    addSpacePrefix = spm.AddDummyPrefix;
                    if (!preferBuiltIn)
                    {
                        Microsoft.ML.Tokenizers.LlamaTokenizer ml;
                        try
                        {
                            ml = Microsoft.ML.Tokenizers.LlamaTokenizer.Create(new MemoryStream(raw), addBeginOfSentence: false, addEndOfSentence: false);
                        }
                        catch (Exception e) when (e is ArgumentException or InvalidOperationException or NotSupportedException or FormatException)
                        {
                            throw new LowbitException($"tokenizer.model: Microsoft.ML.Tokenizers cannot load it ({e.Message})", e);
                        }
                        return new Tokenizer(info, (text, output) =>
                            output.AddRange(ml.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false,
                                considerPreTokenization: false, considerNormalization: true)),
                            addSpacePrefix) { Backend = "ml-sentencepiece" };
                    }
                }
                var bpe = new SentencePieceBpe(info, addSpacePrefix);
                return new Tokenizer(info, bpe.Encode, addSpacePrefix) { Backend = "spm-bpe" };
            }
            case "gpt2":
            {
                var bpe = new HfByteLevelBpe(info, HfByteLevelBpe.PatternForPre(pre));
                return new Tokenizer(info, bpe.Encode, false) { Backend = "byte-level-bpe" };
            }
            default:
                throw new LowbitException($"tokenizer model '{info.Model}' is not supported (supported: llama, gpt2)");
        }
    }

    /// <summary>Token ids of <paramref name="text"/> (special-token spellings in the text are plain text), BOS first / EOS last when asked.</summary>
    public int[] Encode(string text, bool addBos, bool addEos = false)
    {
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos) ids.Add(BosId);
        if (_userDefined.Length == 0) _encode(text, ids);
        else
            // Each text fragment is encoded on its own (SentencePiece fragments get their own dummy-prefix
            // space, as llama.cpp does after a token fragment).
            foreach (var (fragment, tokenId) in SplitUserDefined(text))
            {
                if (tokenId >= 0) ids.Add(tokenId);
                else _encode(fragment, ids);
            }
        if (addEos) ids.Add(EosId);
        return [.. ids];
    }

    /// <summary>Splits text into raw fragments (id -1) and user-defined token matches, longest tokens first (llama.cpp's partition order).</summary>
    private List<(string Fragment, int TokenId)> SplitUserDefined(string text)
    {
        var parts = new List<(string, int)> { (text, -1) };
        foreach (var (tokenText, id) in _userDefined)
        {
            var next = new List<(string, int)>(parts.Count);
            foreach (var (fragment, fid) in parts)
            {
                if (fid >= 0) { next.Add((fragment, fid)); continue; }
                int start = 0, at;
                while ((at = fragment.IndexOf(tokenText, start, StringComparison.Ordinal)) >= 0)
                {
                    if (at > start) next.Add((fragment[start..at], -1));
                    next.Add((tokenText, id));
                    start = at + tokenText.Length;
                }
                if (start < fragment.Length) next.Add((fragment[start..], -1));
            }
            parts = next;
        }
        return parts;
    }

    /// <summary>The UTF-8 bytes a token stands for (empty for control tokens such as BOS/EOS).</summary>
    public ReadOnlySpan<byte> TokenBytes(int id)
    {
        if ((uint)id >= (uint)_tokenBytes.Length) throw new LowbitException($"token id {id} is outside the vocabulary (0..{_tokenBytes.Length - 1})");
        return _tokenBytes[id];
    }

    /// <summary>
    /// Text of an id sequence; control tokens are dropped. When the ids start the text
    /// (<paramref name="atStartOfText"/>), the SentencePiece dummy-prefix space is removed.
    /// </summary>
    public string Decode(ReadOnlySpan<int> ids, bool atStartOfText = true)
    {
        var bytes = new List<byte>(ids.Length * 4);
        foreach (int id in ids) bytes.AddRange(TokenBytes(id));
        int skip = atStartOfText && _stripLeadingSpace && bytes.Count > 0 && bytes[0] == (byte)' ' ? 1 : 0;
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes)[skip..]);
    }

    /// <summary>A decoder for streaming generation: feed ids one by one, get the text that became complete.</summary>
    /// <param name="atStartOfText">True when the first id pushed starts the text (drops the SentencePiece dummy-prefix space).</param>
    public StreamDecoder CreateStreamDecoder(bool atStartOfText = true) => new(this, atStartOfText);

    private static byte[] ComputeTokenBytes(TokenizerInfo info, int id)
    {
        string tok = info.Tokens[id];
        var type = info.TokenTypes is { } types && id < types.Count ? types[id] : TokenType.Normal;
        switch (type)
        {
            case TokenType.Control:
            case TokenType.Unused:
                return [];
            case TokenType.Unknown:
                return Encoding.UTF8.GetBytes(" \u2047 "); // SentencePiece renders <unk> as " ⁇ "
            case TokenType.UserDefined:
                return Encoding.UTF8.GetBytes(tok);
        }
        if (info.Model == "gpt2")
        {
            var bytes = new byte[tok.Length];
            for (int i = 0; i < tok.Length; i++)
            {
                int b = HfByteLevelBpe.CharToByte(tok[i]);
                if (b < 0) return Encoding.UTF8.GetBytes(tok); // not byte-level encoded: take the text as is
                bytes[i] = (byte)b;
            }
            return bytes;
        }
        if (type == TokenType.Byte && tok.Length == 6 && tok.StartsWith("<0x", StringComparison.Ordinal) && tok[5] == '>'
            && byte.TryParse(tok.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte value))
            return [value];
        return Encoding.UTF8.GetBytes(tok.Replace('\u2581', ' '));
    }

    /// <summary>
    /// Incremental detokenizer: keeps bytes of an incomplete UTF-8 sequence (byte-fallback tokens) until
    /// the character is complete, and drops the SentencePiece dummy-prefix space at the start of the stream.
    /// </summary>
    public sealed class StreamDecoder
    {
        private readonly Tokenizer _tokenizer;
        private readonly Decoder _utf8 = new UTF8Encoding(false, false).GetDecoder();
        private bool _atStart;

        internal StreamDecoder(Tokenizer tokenizer, bool atStartOfText)
        {
            _tokenizer = tokenizer;
            _atStart = atStartOfText;
        }

        /// <summary>The text completed by this token (possibly empty).</summary>
        public string Push(int id)
        {
            var bytes = _tokenizer.TokenBytes(id);
            if (bytes.IsEmpty) return "";
            if (_atStart)
            {
                _atStart = false;
                if (_tokenizer._stripLeadingSpace && bytes[0] == (byte)' ') bytes = bytes[1..];
            }
            var chars = new char[bytes.Length + 2];
            int n = _utf8.GetChars(bytes, chars, flush: false);
            return new string(chars, 0, n);
        }

        /// <summary>Whatever is left (an incomplete sequence becomes U+FFFD).</summary>
        public string Flush()
        {
            var chars = new char[8];
            int n = _utf8.GetChars(ReadOnlySpan<byte>.Empty, chars, flush: true);
            return new string(chars, 0, n);
        }
    }
}
