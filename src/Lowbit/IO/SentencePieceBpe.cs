using System.Text;
using Lowbit.Model;

namespace Lowbit.IO;

/// <summary>
/// SentencePiece-style BPE from a GGUF vocabulary (tokens + scores), the algorithm of llama.cpp's
/// llm_tokenizer_spm: the text (a space prepended when <see cref="AddSpacePrefix"/>, spaces escaped as
/// U+2581) is split into code points; adjacent symbol pairs whose concatenation is a vocabulary token
/// are merged best-score first (ties: leftmost first) until no pair is a token; symbols that are not
/// tokens fall back to their UTF-8 bytes as &lt;0xXX&gt; tokens (or the unknown token).
/// </summary>
public sealed class SentencePieceBpe
{
    private const char Escape = '\u2581';

    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private readonly float[] _scores;
    private readonly int[] _byteTokens = new int[256];
    private readonly int _unknownId;

    public SentencePieceBpe(TokenizerInfo info, bool addSpacePrefix = true) : this(info, addSpacePrefix, allowSegmentation: true) { }

    /// <param name="allowSegmentation">False encodes the text as one piece (tests prove segmentation changes nothing).</param>
    internal SentencePieceBpe(TokenizerInfo info, bool addSpacePrefix, bool allowSegmentation)
    {
        if (info.Scores is null || info.Scores.Count != info.Tokens.Count)
            throw new LowbitException("SentencePiece tokenizer needs one score per token");
        var byText = new Dictionary<string, int>(info.Tokens.Count, StringComparer.Ordinal);
        for (int i = 0; i < info.Tokens.Count; i++) byText.TryAdd(info.Tokens[i], i); // first id wins, like llama.cpp's map
        _lookup = byText.GetAlternateLookup<ReadOnlySpan<char>>();
        _scores = [.. info.Scores];
        _unknownId = info.UnknownId;
        for (int b = 0; b < 256; b++)
            _byteTokens[b] = byText.TryGetValue($"<0x{b:X2}>", out int id) ? id
                : byText.TryGetValue(((char)b).ToString(), out id) && b < 128 ? id : _unknownId;
        AddSpacePrefix = addSpacePrefix;
        _splitBeforeEscape = allowSegmentation && !info.Tokens.Any(t => t.IndexOf(Escape, 1) > 0);
        _splitAfterNewline = allowSegmentation && !info.Tokens.Any(t => t.Length > 1 && t.Contains('\n'));
    }

    private readonly bool _splitBeforeEscape, _splitAfterNewline;

    public bool AddSpacePrefix { get; }

    private struct Symbol
    {
        public int Start, Length, Prev, Next;
    }

    private readonly record struct Bigram(int Left, int Right, int Length);

    /// <summary>Appends the ids of <paramref name="text"/> (no BOS/EOS) to <paramref name="output"/>.</summary>
    public void Encode(string text, List<int> output)
    {
        if (text.Length == 0) return;
        var sb = new StringBuilder(text.Length + 1);
        if (AddSpacePrefix) sb.Append(Escape);
        foreach (char ch in text) sb.Append(ch == ' ' ? Escape : ch);
        string s = sb.ToString();

        // Merges only ever form vocabulary tokens, so no merge can cross a point where no multi-character
        // token could span: encoding such segments separately gives the same ids with small work queues.
        var symbols = new List<Symbol>();
        var queue = new PriorityQueue<Bigram, (float NegScore, int Left)>();
        int segStart = 0;
        for (int i = 1; i < s.Length; i++)
        {
            bool boundary = (_splitBeforeEscape && s[i] == Escape) || (_splitAfterNewline && s[i - 1] == '\n');
            if (!boundary) continue;
            EncodeSegment(s, segStart, i, symbols, queue, output);
            segStart = i;
        }
        EncodeSegment(s, segStart, s.Length, symbols, queue, output);
    }

    private void EncodeSegment(string s, int begin, int end, List<Symbol> symbols, PriorityQueue<Bigram, (float, int)> queue, List<int> output)
    {
        symbols.Clear();
        queue.Clear();
        for (int i = begin; i < end;)
        {
            int len = char.IsHighSurrogate(s[i]) && i + 1 < end && char.IsLowSurrogate(s[i + 1]) ? 2 : 1;
            symbols.Add(new Symbol { Start = i, Length = len, Prev = symbols.Count - 1, Next = i + len < end ? symbols.Count + 1 : -1 });
            i += len;
        }
        var sym = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(symbols);

        // Max-heap on score, then leftmost: PriorityQueue is a min-heap, so the score is negated.
        void TryAddBigram(ReadOnlySpan<Symbol> sy, int left, int right)
        {
            if (left < 0 || right < 0) return;
            int start = sy[left].Start, len = sy[left].Length + sy[right].Length;
            if (!_lookup.TryGetValue(s.AsSpan(start, len), out int id)) return;
            queue.Enqueue(new Bigram(left, right, len), (-_scores[id], left));
        }
        for (int i = 1; i < sym.Length; i++) TryAddBigram(sym, i - 1, i);

        while (queue.TryDequeue(out var b, out _))
        {
            ref var left = ref sym[b.Left];
            ref var right = ref sym[b.Right];
            // Skip pairs made stale by an earlier merge of either side.
            if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != b.Length) continue;
            left.Length += right.Length;
            right.Length = 0;
            left.Next = right.Next;
            if (right.Next >= 0) sym[right.Next].Prev = b.Left;
            TryAddBigram(sym, left.Prev, b.Left);
            TryAddBigram(sym, b.Left, left.Next);
        }

        Span<byte> utf8 = stackalloc byte[8];
        for (int i = 0; i >= 0; i = sym[i].Next)
        {
            var piece = s.AsSpan(sym[i].Start, sym[i].Length);
            if (_lookup.TryGetValue(piece, out int id))
            {
                output.Add(id);
                continue;
            }
            // A symbol that was never merged is one code point (≤ 4 UTF-8 bytes).
            int n = Encoding.UTF8.GetBytes(piece, utf8);
            for (int k = 0; k < n; k++) output.Add(_byteTokens[utf8[k]]);
        }
    }
}
