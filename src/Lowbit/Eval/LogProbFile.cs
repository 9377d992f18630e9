using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Lowbit.IO;

namespace Lowbit.Eval;

/// <summary>
/// Base-model log-probabilities saved by a perplexity run for later KL-divergence runs (the role
/// of llama.cpp's --kl-divergence-base file, in Lowbit's own layout). Little-endian:
/// <code>
/// "LBLOGPRB"  magic (8 bytes)
/// int32       version (1)
/// int32       vocab, ctx, chunks, first (= ctx/2)
/// int32[chunks*ctx]  the evaluated tokens (before BOS substitution)
/// per chunk, per scored position (ctx−1−first of them), RowValues(vocab) uint16:
///     float32 scale, float32 minLogProb (as 4 uint16), then vocab uint16 q (padded to even):
///     log p_i ≈ scale·q_i + minLogProb, with the range limited to [maxLogit−16, maxLogit]
///     as llama.cpp does (q = 0 for anything 16 nats or more below the top logit).
/// </code>
/// </summary>
public sealed class LogProbFile : IDisposable
{
    private static readonly byte[] Magic = Encoding.ASCII.GetBytes("LBLOGPRB");
    private const int Version = 1;
    private const int HeaderInts = 5;

    private readonly AtomicFile? _out;
    private readonly Stream? _in;
    private readonly string _path;
    private int _chunksDone;

    public int Vocab { get; }
    public int Context { get; }
    public int Chunks { get; }
    public int First { get; }
    public int[] Tokens { get; }
    public int ScoredPerChunk => Context - 1 - First;

    /// <summary>uint16 values per scored position: 4 (two floats) + vocab rounded up to even.</summary>
    public static int RowValues(int vocab) => 2 * ((vocab + 1) / 2) + 4;

    private LogProbFile(string path, AtomicFile? output, Stream? input, int vocab, int ctx, int chunks, int first, int[] tokens)
    {
        _path = path; _out = output; _in = input;
        Vocab = vocab; Context = ctx; Chunks = chunks; First = first; Tokens = tokens;
    }

    internal static LogProbFile Create(string path, int vocab, int ctx, int chunks, int first, int[] tokens)
    {
        var f = AtomicFile.Create(path);
        var s = f.Stream;
        s.Write(Magic);
        Span<byte> b = stackalloc byte[4];
        foreach (int v in new[] { Version, vocab, ctx, chunks, first })
        {
            BinaryPrimitives.WriteInt32LittleEndian(b, v);
            s.Write(b);
        }
        s.Write(MemoryMarshal.AsBytes(tokens.AsSpan()));
        return new LogProbFile(path, f, null, vocab, ctx, chunks, first, tokens);
    }

    internal void WriteChunk(ReadOnlySpan<ushort> rows)
    {
        _out!.Stream.Write(MemoryMarshal.AsBytes(rows));
        _chunksDone++;
    }

    internal void Commit()
    {
        if (_chunksDone != Chunks) throw new InvalidOperationException("log-prob file incomplete");
        _out!.Commit();
    }

    /// <summary>Opens a saved file and validates its header and size.</summary>
    public static LogProbFile Open(string path)
    {
        if (!File.Exists(path)) throw new LowbitException($"{path}: file not found");
        var s = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        try
        {
            var head = new byte[8 + 4 * HeaderInts];
            if (s.ReadAtLeast(head, head.Length, throwOnEndOfStream: false) != head.Length || !head.AsSpan(0, 8).SequenceEqual(Magic))
                throw new InvalidModelFileException(path, 0, "not a Lowbit log-probability file (magic \"LBLOGPRB\" missing)");
            int Int(int i) => BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(8 + 4 * i, 4));
            int version = Int(0), vocab = Int(1), ctx = Int(2), chunks = Int(3), first = Int(4);
            if (version != Version) throw new InvalidModelFileException(path, 8, $"unsupported log-prob file version {version}");
            if (vocab <= 0 || ctx < 4 || chunks <= 0 || first != ctx / 2 || (long)ctx * chunks > int.MaxValue / 4)
                throw new InvalidModelFileException(path, 12, $"invalid header: vocab {vocab}, ctx {ctx}, chunks {chunks}, first {first}");
            long expected = head.Length + 4L * ctx * chunks + 2L * chunks * (ctx - 1 - first) * RowValues(vocab);
            if (s.Length != expected)
                throw new InvalidModelFileException(path, Math.Min(s.Length, expected),
                    $"file is {s.Length} bytes, expected {expected} for vocab {vocab}, ctx {ctx}, {chunks} chunks");
            var tokens = new int[ctx * chunks];
            s.ReadExactly(MemoryMarshal.AsBytes(tokens.AsSpan()));
            foreach (int t in tokens)
                if ((uint)t >= (uint)vocab) throw new InvalidModelFileException(path, head.Length, $"token id {t} outside the vocabulary of {vocab}");
            return new LogProbFile(path, null, s, vocab, ctx, chunks, first, tokens);
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    private long DataOffset => 8 + 4L * HeaderInts + 4L * Context * Chunks;

    /// <summary>Reads chunk <paramref name="chunk"/>'s encoded rows (ScoredPerChunk × RowValues(Vocab)); thread-safe.</summary>
    internal void ReadChunk(int chunk, Span<ushort> rows)
    {
        if ((uint)chunk >= (uint)Chunks) throw new ArgumentOutOfRangeException(nameof(chunk));
        lock (_in!)
        {
            long offset = DataOffset + 2L * chunk * ScoredPerChunk * RowValues(Vocab);
            try
            {
                _in.Position = offset;
                _in.ReadExactly(MemoryMarshal.AsBytes(rows));
            }
            catch (EndOfStreamException e)
            {
                throw new InvalidModelFileException(_path, offset, $"truncated log-prob data: {e.Message}");
            }
        }
    }

    /// <summary>
    /// Encodes the log-softmax of <paramref name="logits"/> into <paramref name="row"/>, returns log p(token).
    /// </summary>
    internal static double Encode(ReadOnlySpan<float> logits, int token, Span<ushort> row)
    {
        var (max, lse) = LogSoftmax.Normalizer(logits);
        float min = float.MaxValue;
        foreach (float v in logits) min = Math.Min(min, v);
        min = Math.Max(min, max - 16);
        float minLogProb = min - max - lse;
        float scale = (max - min) / 65535f;
        var header = MemoryMarshal.Cast<ushort, float>(row[..4]);
        header[0] = scale;
        header[1] = minLogProb;
        var q = row.Slice(4, logits.Length);
        if (scale > 0)
        {
            float inv = 1 / scale;
            for (int i = 0; i < q.Length; i++)
                q[i] = logits[i] > min ? (ushort)Math.Clamp((int)MathF.Round(inv * (logits[i] - min), MidpointRounding.ToEven), 0, 65535) : (ushort)0;
        }
        else q.Clear();
        return (double)logits[token] - max - lse;
    }

    /// <summary>Decodes one encoded row into log-probabilities.</summary>
    internal static void Decode(ReadOnlySpan<ushort> row, Span<float> logProbs)
    {
        var header = MemoryMarshal.Cast<ushort, float>(row[..4]);
        float scale = header[0], minLogProb = header[1];
        var q = row.Slice(4, logProbs.Length);
        for (int i = 0; i < logProbs.Length; i++) logProbs[i] = scale * q[i] + minLogProb;
    }

    public void Dispose()
    {
        _out?.Dispose();
        _in?.Dispose();
    }
}
