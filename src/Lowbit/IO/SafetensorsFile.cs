using System.Text;
using System.Text.Json;

namespace Lowbit.IO;

/// <summary>Element types a safetensors header may name. Only F32/F16/BF16 load as weights.</summary>
public enum SafetensorsDType
{
    F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, F8_E4M3, F8_E5M2, F8_E8M0,
}

/// <summary>One tensor entry of a safetensors header; offsets are absolute file offsets.</summary>
public sealed record SafetensorsTensor(string Name, SafetensorsDType DType, long[] Shape, long FileOffset, long ByteLength)
{
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n *= d;
            return n;
        }
    }
}

/// <summary>
/// A memory-mapped .safetensors file: an 8-byte little-endian header length, a UTF-8 JSON header
/// ({name: {dtype, shape, data_offsets}}, optional "__metadata__" of string values), then the byte buffer.
/// The whole header is validated on open (before any tensor data is touched): every entry well-formed,
/// byte ranges matching shape × element size, and the buffer fully indexed with no holes, overlaps or
/// trailing bytes, as the format's specification requires.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    /// <summary>Headers larger than this are rejected as corrupt (the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly MappedFile _map;
    private readonly Dictionary<string, SafetensorsTensor> _byName;

    private SafetensorsFile(MappedFile map, List<SafetensorsTensor> tensors, Dictionary<string, string> metadata, long dataStart)
    {
        _map = map;
        Tensors = tensors;
        Metadata = metadata;
        DataStart = dataStart;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    public string Path => _map.Path;
    /// <summary>Tensors in header order.</summary>
    public IReadOnlyList<SafetensorsTensor> Tensors { get; }
    /// <summary>The "__metadata__" strings (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>File offset of the byte buffer (8 + header length).</summary>
    public long DataStart { get; }

    public SafetensorsTensor? TryGet(string name) => _byName.GetValueOrDefault(name);

    public SafetensorsTensor Get(string name) => TryGet(name)
        ?? throw new InvalidModelFileException(Path, $"tensor '{name}' is not in this file");

    /// <summary>A zero-copy view of the tensor's bytes (valid while this file is open).</summary>
    public ReadOnlyMemory<byte> GetData(SafetensorsTensor tensor) => _map.Slice(tensor.FileOffset, tensor.ByteLength);

    /// <summary>Size of one element in bytes, or 0 for a name that is not a safetensors dtype.</summary>
    public static int ElementSize(SafetensorsDType t) => t switch
    {
        SafetensorsDType.F64 or SafetensorsDType.I64 or SafetensorsDType.U64 => 8,
        SafetensorsDType.F32 or SafetensorsDType.I32 or SafetensorsDType.U32 => 4,
        SafetensorsDType.F16 or SafetensorsDType.BF16 or SafetensorsDType.I16 or SafetensorsDType.U16 => 2,
        _ => 1,
    };

    public static SafetensorsFile Open(string path)
    {
        var map = MappedFile.Open(path);
        try
        {
            var (tensors, metadata, dataStart) = ParseAndValidate(map);
            return new SafetensorsFile(map, tensors, metadata, dataStart);
        }
        catch
        {
            map.Dispose();
            throw;
        }
    }

    private static (List<SafetensorsTensor>, Dictionary<string, string>, long) ParseAndValidate(MappedFile map)
    {
        string path = map.Path;
        if (map.Length < 8)
            throw new InvalidModelFileException(path, 0, $"file is {map.Length} bytes, shorter than the 8-byte safetensors header length");
        ulong headerLength = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(map.Span(0, 8));
        if (headerLength > MaxHeaderBytes)
            throw new InvalidModelFileException(path, 0, $"header length {headerLength} is absurd (limit {MaxHeaderBytes} bytes); not a safetensors file?");
        if ((long)headerLength > map.Length - 8)
            throw new InvalidModelFileException(path, 0, $"header length {headerLength} runs past the end of the file ({map.Length} bytes)");
        if (headerLength < 2)
            throw new InvalidModelFileException(path, 8, $"header of {headerLength} bytes is too short to hold a JSON object");

        var headerBytes = map.Span(8, (int)headerLength);
        long dataStart = 8 + (long)headerLength;
        long dataLength = map.Length - dataStart;

        string headerText;
        try
        {
            headerText = new UTF8Encoding(false, true).GetString(headerBytes);
        }
        catch (DecoderFallbackException)
        {
            throw new InvalidModelFileException(path, 8, "header is not valid UTF-8");
        }

        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(headerText, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(path, 8, $"header is not valid JSON ({e.Message})");
        }

        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(path, 8, $"header must be a JSON object, found {root.ValueKind}");

            var tensors = new List<SafetensorsTensor>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var prop in root.EnumerateObject())
            {
                if (!seen.Add(prop.Name))
                    throw new InvalidModelFileException(path, 8, $"header names '{prop.Name}' twice");
                if (prop.Name == "__metadata__")
                {
                    ReadMetadata(path, prop.Value, metadata);
                    continue;
                }
                tensors.Add(ReadEntry(path, prop.Name, prop.Value, dataStart));
            }

            CheckCoverage(path, tensors, dataStart, dataLength);
            return (tensors, metadata, dataStart);
        }
    }

    private static void ReadMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new InvalidModelFileException(path, 8, $"\"__metadata__\" must be an object of strings, found {value.ValueKind}");
        foreach (var m in value.EnumerateObject())
        {
            if (m.Value.ValueKind != JsonValueKind.String)
                throw new InvalidModelFileException(path, 8, $"\"__metadata__\" value '{m.Name}' must be a string, found {m.Value.ValueKind}");
            metadata[m.Name] = m.Value.GetString()!;
        }
    }

    private static SafetensorsTensor ReadEntry(string path, string name, JsonElement e, long dataStart)
    {
        string Where(string what) => $"tensor '{name}': {what}";
        if (e.ValueKind != JsonValueKind.Object)
            throw new InvalidModelFileException(path, 8, Where($"entry must be an object with dtype, shape and data_offsets, found {e.ValueKind}"));
        if (!e.TryGetProperty("dtype", out var dtypeEl) || dtypeEl.ValueKind != JsonValueKind.String)
            throw new InvalidModelFileException(path, 8, Where("missing string field \"dtype\""));
        if (!e.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
            throw new InvalidModelFileException(path, 8, Where("missing array field \"shape\""));
        if (!e.TryGetProperty("data_offsets", out var offEl) || offEl.ValueKind != JsonValueKind.Array)
            throw new InvalidModelFileException(path, 8, Where("missing array field \"data_offsets\""));

        string dtypeName = dtypeEl.GetString()!;
        if (!Enum.GetNames<SafetensorsDType>().Contains(dtypeName, StringComparer.Ordinal))
            throw new InvalidModelFileException(path, 8, Where($"unknown dtype '{dtypeName}' (known: {string.Join(", ", Enum.GetNames<SafetensorsDType>())})"));

        var shape = new long[shapeEl.GetArrayLength()];
        long elements = 1;
        int i = 0;
        foreach (var d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim))
                throw new InvalidModelFileException(path, 8, Where($"shape entry {i} is not an integer"));
            if (dim < 0)
                throw new InvalidModelFileException(path, 8, Where($"shape entry {i} is negative ({dim})"));
            shape[i++] = dim;
            try { elements = checked(elements * dim); }
            catch (OverflowException)
            {
                throw new InvalidModelFileException(path, 8, Where($"shape [{string.Join(", ", shape)}] overflows 64 bits"));
            }
        }

        if (offEl.GetArrayLength() != 2)
            throw new InvalidModelFileException(path, 8, Where($"data_offsets must have 2 entries, found {offEl.GetArrayLength()}"));
        long start = 0, end = 0;
        int k = 0;
        foreach (var o in offEl.EnumerateArray())
        {
            if (o.ValueKind != JsonValueKind.Number || !o.TryGetInt64(out long v) || v < 0)
                throw new InvalidModelFileException(path, 8, Where($"data_offsets[{k}] is not a non-negative integer"));
            if (k++ == 0) start = v; else end = v;
        }
        if (end < start)
            throw new InvalidModelFileException(path, 8, Where($"data_offsets [{start}, {end}] end before they start"));

        var dtype = Enum.Parse<SafetensorsDType>(dtypeName);
        long expected;
        try { expected = checked(elements * ElementSize(dtype)); }
        catch (OverflowException)
        {
            throw new InvalidModelFileException(path, 8, Where($"shape [{string.Join(", ", shape)}] × {dtypeName} overflows 64 bits"));
        }
        if (end - start != expected)
            throw new InvalidModelFileException(path, 8, Where(
                $"data_offsets [{start}, {end}] hold {end - start} bytes but {dtypeName} [{string.Join(", ", shape)}] needs {expected}"));

        return new SafetensorsTensor(name, dtype, shape, dataStart + start, end - start);
    }

    /// <summary>The byte buffer must be exactly covered by the tensors: no overlap, no hole, nothing past its end.</summary>
    private static void CheckCoverage(string path, List<SafetensorsTensor> tensors, long dataStart, long dataLength)
    {
        var sorted = tensors.OrderBy(t => t.FileOffset).ThenBy(t => t.ByteLength).ToList();
        long cursor = dataStart;
        SafetensorsTensor? previous = null;
        foreach (var t in sorted)
        {
            long relStart = t.FileOffset - dataStart, relEnd = relStart + t.ByteLength;
            if (relEnd > dataLength)
                throw new InvalidModelFileException(path, t.FileOffset,
                    $"tensor '{t.Name}': data_offsets [{relStart}, {relEnd}] run past the end of the data section ({dataLength} bytes; file truncated?)");
            if (t.FileOffset < cursor)
                throw new InvalidModelFileException(path, t.FileOffset,
                    $"tensor '{t.Name}': data_offsets [{relStart}, {relEnd}] overlap tensor '{previous!.Name}' (which ends at {cursor - dataStart})");
            if (t.FileOffset > cursor)
                throw new InvalidModelFileException(path, cursor,
                    $"hole of {t.FileOffset - cursor} unindexed bytes in the data section before tensor '{t.Name}' (the buffer must be fully indexed)");
            cursor = t.FileOffset + t.ByteLength;
            previous = t;
        }
        if (cursor != dataStart + dataLength)
            throw new InvalidModelFileException(path, cursor,
                $"{dataStart + dataLength - cursor} trailing bytes after the last tensor (the buffer must be fully indexed)");
    }

    public void Dispose() => _map.Dispose();
}
