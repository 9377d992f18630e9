using System.Text;
using System.Text.RegularExpressions;
using Lowbit.Model;

namespace Lowbit.IO;

/// <summary>
/// GPT-2 style byte-level BPE (tokenizer.json "BPE" + "ByteLevel", GGUF model "gpt2"): the text is split
/// by a pre-tokenizer regex, each piece's UTF-8 bytes are mapped to printable characters (GPT-2's
/// bytes_to_unicode), and the lowest-rank merge is applied repeatedly; the resulting strings are tokens.
/// </summary>
public sealed class HfByteLevelBpe
{
    /// <summary>The Qwen2 pre-tokenizer (GGUF pre "qwen2"), used by Qwen2 and Qwen3.</summary>
    public const string Qwen2Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>The original GPT-2 pre-tokenizer (HF ByteLevel with use_regex; GGUF pre "gpt-2").</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>The Llama 3 pre-tokenizer (GGUF pre "llama-bpe"): like Qwen2's but digits in groups of up to three.</summary>
    public const string Llama3Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>GGUF tokenizer.ggml.pre names whose pre-tokenizer is one regex Lowbit implements.</summary>
    public static readonly IReadOnlyList<string> SupportedPreTypes = ["gpt-2", "qwen2", "llama-bpe"];

    /// <summary>The regex of a GGUF pre-tokenizer name (see <see cref="SupportedPreTypes"/>).</summary>
    public static string PatternForPre(string? pre) => pre switch
    {
        "gpt-2" => Gpt2Pattern,
        "qwen2" => Qwen2Pattern,
        "llama-bpe" or "llama3" => Llama3Pattern,
        _ => throw new LowbitException($"byte-level BPE pre-tokenizer '{pre ?? "(none)"}' is not supported (supported: {string.Join(", ", SupportedPreTypes)})"),
    };

    /// <summary>The GGUF pre name of a pre-tokenizer regex as written in tokenizer.json, or null when not one Lowbit knows.</summary>
    public static string? PreForPattern(string pattern)
    {
        // tokenizer.json spells the contractions either case-insensitively or as explicit [sS] classes.
        string normalized = pattern.Replace("(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])", "(?i:'s|'t|'re|'ve|'m|'ll|'d)", StringComparison.Ordinal);
        if (normalized == Qwen2Pattern) return "qwen2";
        if (normalized == Llama3Pattern) return "llama-bpe";
        if (normalized == Gpt2Pattern || normalized + "|\\s+" == Gpt2Pattern) return "gpt-2";
        return null;
    }

    private readonly Dictionary<string, int> _tokenIds;
    private readonly Dictionary<(string, string), int> _mergeRank;
    private readonly Regex _preTokenizer;
    private readonly int _unknownId;

    public HfByteLevelBpe(TokenizerInfo info, string preTokenizerPattern)
    {
        _tokenIds = new Dictionary<string, int>(info.Tokens.Count, StringComparer.Ordinal);
        for (int i = 0; i < info.Tokens.Count; i++) _tokenIds.TryAdd(info.Tokens[i], i);
        _mergeRank = new Dictionary<(string, string), int>();
        var merges = info.Merges ?? throw new LowbitException("byte-level BPE tokenizer has no merges");
        for (int r = 0; r < merges.Count; r++)
        {
            int sp = merges[r].IndexOf(' ', 1);
            if (sp <= 0) throw new LowbitException($"BPE merge {r} ('{merges[r]}') is not two space-separated tokens");
            _mergeRank.TryAdd((merges[r][..sp], merges[r][(sp + 1)..]), r);
        }
        _preTokenizer = new Regex(preTokenizerPattern, RegexOptions.CultureInvariant | RegexOptions.Compiled);
        _unknownId = info.UnknownId;
    }

    /// <summary>GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards.</summary>
    public static char ByteToChar(byte b) => ByteChars[b];

    /// <summary>Inverse of <see cref="ByteToChar"/>; -1 for characters outside the mapping.</summary>
    public static int CharToByte(char c) => c < CharBytes.Length ? CharBytes[c] : -1;

    private static readonly char[] ByteChars = BuildByteChars();
    private static readonly short[] CharBytes = BuildCharBytes();

    private static short[] BuildCharBytes()
    {
        var map = new short[512];
        Array.Fill(map, (short)-1);
        for (int b = 0; b < 256; b++) map[ByteChars[b]] = (short)b;
        return map;
    }

    private static char[] BuildByteChars()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 and <= 255;
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    public void Encode(string text, List<int> output)
    {
        var parts = new List<string>();
        foreach (Match m in _preTokenizer.Matches(text))
        {
            var bytes = Encoding.UTF8.GetBytes(m.Value);
            parts.Clear();
            foreach (var b in bytes) parts.Add(ByteChars[b].ToString());
            while (parts.Count > 1)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < parts.Count; i++)
                    if (_mergeRank.TryGetValue((parts[i], parts[i + 1]), out int r) && r < bestRank) { bestRank = r; best = i; }
                if (best < 0) break;
                parts[best] += parts[best + 1];
                parts.RemoveAt(best + 1);
            }
            foreach (var p in parts)
            {
                if (_tokenIds.TryGetValue(p, out int id)) output.Add(id);
                else if (_unknownId >= 0) output.Add(_unknownId);
                else throw new LowbitException($"byte-level BPE: piece '{p}' is not in the vocabulary and the tokenizer has no unknown token");
            }
        }
    }
}
