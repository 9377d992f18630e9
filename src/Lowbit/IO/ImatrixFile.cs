using System.Buffers.Binary;
using System.Text;
using Lowbit.Formats;

namespace Lowbit.IO;

/// <summary>One tensor's activation statistics: Σx² per input column (per expert matrix) and token counts.</summary>
public sealed record ImatrixEntry(float[] SumSquares, float[] Counts)
{
    /// <summary>Mean of x² per column (what llama.cpp's quantizers take as importance).</summary>
    public float[] MeanSquares()
    {
        int perMatrix = SumSquares.Length / Math.Max(1, Counts.Length);
        var r = new float[SumSquares.Length];
        for (int i = 0; i < r.Length; i++)
        {
            float c = Counts[i / perMatrix];
            r[i] = c > 0 ? SumSquares[i] / c : 1f; // no data: neutral importance, as llama.cpp stores for partial entries
        }
        return r;
    }
}

/// <summary>
/// llama.cpp importance matrix files, both layouts: the GGUF one llama-imatrix writes by default
/// (general.type = "imatrix", tensors "&lt;name&gt;.in_sum2" and "&lt;name&gt;.counts", keys imatrix.datasets,
/// imatrix.chunk_count, imatrix.chunk_size) and the legacy ".dat" one (entries of name, ncall and
/// values = mean x² × ncall, then the chunk count and the dataset name).
/// </summary>
public sealed class ImportanceMatrix
{
    public ImportanceMatrix(IReadOnlyDictionary<string, ImatrixEntry> entries, IReadOnlyList<string> datasets, int chunkCount, int chunkSize)
    {
        Entries = entries;
        Datasets = datasets;
        ChunkCount = chunkCount;
        ChunkSize = chunkSize;
    }

    public IReadOnlyDictionary<string, ImatrixEntry> Entries { get; }
    public IReadOnlyList<string> Datasets { get; }
    public int ChunkCount { get; }
    public int ChunkSize { get; }

    /// <summary>Importance vector for a weight tensor, or empty when the file has none for it.</summary>
    public ReadOnlyMemory<float> For(string tensorName) =>
        Entries.TryGetValue(tensorName, out var e) ? e.MeanSquares() : ReadOnlyMemory<float>.Empty;

    public static ImportanceMatrix Read(string path, int legacyChunkSize = 512)
    {
        if (!File.Exists(path)) throw new LowbitException($"{path}: imatrix file not found");
        Span<byte> magic = stackalloc byte[4];
        using (var fs = File.OpenRead(path))
            if (fs.ReadAtLeast(magic, 4, throwOnEndOfStream: false) == 4 && magic.SequenceEqual("GGUF"u8))
                return ReadGguf(path);
        return ReadLegacy(path, legacyChunkSize);
    }

    private static ImportanceMatrix ReadGguf(string path)
    {
        using var f = GgufFile.Open(path);
        string? type = f.Metadata.TryGetString("general.type");
        if (type is not null && type != "imatrix")
            throw new InvalidModelFileException(path, $"GGUF general.type is '{type}', expected 'imatrix'");
        var sums = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var counts = new Dictionary<string, float[]>(StringComparer.Ordinal);
        foreach (var t in f.Tensors)
        {
            if (t.Type != GgmlType.F32) throw new InvalidModelFileException(path, t.Offset, $"imatrix tensor '{t.Name}' is {t.Type}, expected F32");
            float[] Data() => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(f.GetTensorData(t).Span).ToArray();
            if (t.Name.EndsWith(".in_sum2", StringComparison.Ordinal)) sums[t.Name[..^8]] = Data();
            else if (t.Name.EndsWith(".counts", StringComparison.Ordinal)) counts[t.Name[..^7]] = Data();
        }
        var entries = new Dictionary<string, ImatrixEntry>(StringComparer.Ordinal);
        foreach (var (name, s) in sums)
        {
            if (!counts.TryGetValue(name, out var c))
                throw new InvalidModelFileException(path, $"imatrix entry '{name}' has in_sum2 but no counts");
            if (c.Length == 0 || s.Length % c.Length != 0)
                throw new InvalidModelFileException(path, $"imatrix entry '{name}': {s.Length} sums do not divide into {c.Length} matrices");
            entries[name] = new ImatrixEntry(s, c);
        }
        if (entries.Count == 0) throw new InvalidModelFileException(path, "imatrix GGUF holds no in_sum2/counts tensors");
        var datasets = f.Metadata.TryGetArray<string>("imatrix.datasets") ?? [];
        int chunks = (int)(f.Metadata.TryGetInteger("imatrix.chunk_count") ?? 0);
        int chunkSize = (int)(f.Metadata.TryGetInteger("imatrix.chunk_size") ?? 0);
        return new ImportanceMatrix(entries, datasets, chunks, chunkSize);
    }

    private static ImportanceMatrix ReadLegacy(string path, int chunkSize)
    {
        var bytes = File.ReadAllBytes(path);
        int pos = 0;
        int ReadInt(string what)
        {
            if (pos + 4 > bytes.Length) throw new InvalidModelFileException(path, pos, $"file ends inside {what} (expected a 4-byte integer)");
            int v = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(pos));
            pos += 4;
            return v;
        }
        int n = ReadInt("the entry count");
        if (n < 1 || n > 1_000_000) throw new InvalidModelFileException(path, 0, $"entry count {n} is not plausible (not an imatrix file?)");
        var entries = new Dictionary<string, ImatrixEntry>(StringComparer.Ordinal);
        for (int i = 0; i < n; i++)
        {
            int len = ReadInt("a name length");
            if (len <= 0 || len > 1024 || pos + len > bytes.Length) throw new InvalidModelFileException(path, pos - 4, $"entry {i}: name length {len} is invalid");
            string name = Encoding.UTF8.GetString(bytes, pos, len);
            pos += len;
            int ncall = ReadInt("a call count");
            int nval = ReadInt("a value count");
            if (nval < 1 || (long)pos + 4L * nval > bytes.Length)
                throw new InvalidModelFileException(path, pos - 4, $"entry '{name}': {nval} values do not fit in the file");
            var values = new float[nval];
            for (int j = 0; j < nval; j++) values[j] = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(pos + 4 * j));
            pos += 4 * nval;
            // Stored as mean x² × ncall; rebuild sums and counts as llama.cpp does when loading.
            var sumsq = values.Select(v => v * chunkSize).ToArray();
            entries[name] = new ImatrixEntry(sumsq, [Math.Max(1, ncall) * (float)chunkSize]);
        }
        int lastChunk = pos + 4 <= bytes.Length ? ReadInt("the chunk count") : 0;
        var datasets = new List<string>();
        if (pos + 4 <= bytes.Length)
        {
            int len = ReadInt("the dataset name length");
            if (len > 0 && pos + len <= bytes.Length) datasets.Add(Encoding.UTF8.GetString(bytes, pos, len));
        }
        return new ImportanceMatrix(entries, datasets, lastChunk, chunkSize);
    }

    /// <summary>Writes the GGUF layout llama-imatrix writes by default (readable by llama-quantize --imatrix).</summary>
    public void WriteGguf(string path, params string[] inputsNeverToOverwrite)
    {
        var w = new GgufWriter();
        w.Metadata.Set("general.type", "imatrix");
        w.Metadata.Set("imatrix.datasets", Datasets.ToArray());
        w.Metadata.Set("imatrix.chunk_count", (uint)ChunkCount);
        w.Metadata.Set("imatrix.chunk_size", (uint)ChunkSize);
        var names = Entries.Keys.OrderBy(k => k, StringComparer.Ordinal).ToList();
        var blobs = new List<float[]>();
        foreach (var name in names)
        {
            var e = Entries[name];
            int nmat = e.Counts.Length;
            w.AddTensorGgml(name + ".in_sum2", [e.SumSquares.Length / nmat, nmat], GgmlType.F32);
            blobs.Add(e.SumSquares);
            w.AddTensorGgml(name + ".counts", [1, nmat], GgmlType.F32);
            blobs.Add(e.Counts);
        }
        w.Write(path, (i, s) => s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(blobs[i].AsSpan())), null, default, inputsNeverToOverwrite);
    }

    /// <summary>Writes the legacy ".dat" layout (llama-imatrix --output-format dat).</summary>
    public void WriteLegacy(string path, params string[] inputsNeverToOverwrite)
    {
        using var file = AtomicFile.Create(path, inputsNeverToOverwrite);
        using (var bw = new BinaryWriter(file.Stream, Encoding.UTF8, leaveOpen: true))
        {
            var names = Entries.Keys.OrderBy(k => k, StringComparer.Ordinal).ToList();
            bw.Write(names.Count);
            int chunk = Math.Max(1, ChunkSize);
            foreach (var name in names)
            {
                var e = Entries[name];
                var nameBytes = Encoding.UTF8.GetBytes(name);
                bw.Write(nameBytes.Length);
                bw.Write(nameBytes);
                float maxCount = e.Counts.Max();
                int ncall = (int)((maxCount + chunk - 1) / chunk);
                bw.Write(ncall);
                bw.Write(e.SumSquares.Length);
                int perMatrix = e.SumSquares.Length / e.Counts.Length;
                for (int i = 0; i < e.SumSquares.Length; i++)
                {
                    float count = e.Counts[i / perMatrix], value = e.SumSquares[i];
                    if (count == 0) { value = 1; count = 1; }
                    bw.Write(value / count * ncall);
                }
            }
            bw.Write(ChunkCount);
            var ds = Encoding.UTF8.GetBytes(Datasets.Count > 0 ? Datasets[^1] : "");
            bw.Write(ds.Length);
            bw.Write(ds);
        }
        file.Commit();
    }
}
