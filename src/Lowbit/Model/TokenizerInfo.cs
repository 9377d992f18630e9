namespace Lowbit.Model;

/// <summary>GGUF token types (llama.cpp's llama_token_type).</summary>
public enum TokenType
{
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// <summary>
/// The tokenizer as GGUF describes it (tokenizer.ggml.*): enough to write a GGUF llama.cpp loads,
/// and to tokenize/detokenize in Lowbit. "llama" = SentencePiece BPE with byte fallback; "gpt2" = byte-level BPE.
/// </summary>
public sealed record TokenizerInfo
{
    public required string Model { get; init; }
    public required IReadOnlyList<string> Tokens { get; init; }
    public IReadOnlyList<float>? Scores { get; init; }
    public IReadOnlyList<TokenType>? TokenTypes { get; init; }
    /// <summary>BPE merges ("a b") for gpt2-style tokenizers.</summary>
    public IReadOnlyList<string>? Merges { get; init; }
    public int BosId { get; init; } = 1;
    public int EosId { get; init; } = 2;
    public int UnknownId { get; init; } = 0;
    public int? PaddingId { get; init; }
    public bool AddBos { get; init; } = true;
    public bool AddEos { get; init; }
    /// <summary>Raw SentencePiece model bytes when the source had tokenizer.model (lets Microsoft.ML.Tokenizers load it).</summary>
    public byte[]? SentencePieceModel { get; init; }
}
