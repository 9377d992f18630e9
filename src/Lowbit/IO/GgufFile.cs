using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Lowbit.Formats;

namespace Lowbit.IO;

/// <summary>One tensor described in a GGUF header.</summary>
public sealed class GgufTensorInfo
{
    internal GgufTensorInfo(int index, string name, long[] dimensions, GgmlType type, long offset, long byteSize, long dataOffset)
    {
        Index = index;
        Name = name;
        Dimensions = dimensions;
        Type = type;
        Offset = offset;
        ByteSize = byteSize;
        DataOffset = dataOffset;
    }

    /// <summary>Position in the file's tensor list.</summary>
    public int Index { get; }
    public string Name { get; }
    /// <summary>Dimensions in ggml order: innermost (the row length) first.</summary>
    public long[] Dimensions { get; }
    public GgmlType Type { get; }
    /// <summary>Offset of the data relative to the start of the data section, as stored in the file.</summary>
    public long Offset { get; }
    /// <summary>Absolute offset of the data in the file.</summary>
    public long DataOffset { get; }
    public long ByteSize { get; }

    /// <summary>Shape outermost first (PyTorch / <see cref="Model.ModelTensor.Shape"/> order).</summary>
    public long[] ShapeRowMajor
    {
        get
        {
            var s = (long[])Dimensions.Clone();
            Array.Reverse(s);
            return s;
        }
    }

    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Dimensions) n *= d;
            return n;
        }
    }

    public override string ToString() => $"{Name} {Type} [{string.Join(", ", Dimensions)}] @{Offset} ({ByteSize} bytes)";
}

/// <summary>
/// A GGUF file (versions 2 and 3, little-endian), memory-mapped. <see cref="Open"/> parses and
/// validates the whole header before any tensor data is touched: every malformed input ends in an
/// <see cref="InvalidModelFileException"/> naming the file, the offset and what was expected.
/// Tensor data views stay valid until the file is disposed.
/// </summary>
public sealed class GgufFile : IDisposable
{
    public const uint DefaultAlignment = 32;
    public const string AlignmentKey = "general.alignment";
    /// <summary>ggml's GGML_MAX_NAME is 64 bytes including the terminating zero.</summary>
    public const int MaxTensorNameBytes = 63;
    /// <summary>ggml's GGML_MAX_DIMS.</summary>
    public const int MaxDims = 4;
    internal const uint Magic = 0x46554747; // "GGUF" read as little-endian uint32
    private const int MaxArrayNesting = 8;

    private readonly MappedFile _map;
    private readonly Dictionary<string, GgufTensorInfo> _byName;

    private GgufFile(MappedFile map, uint version, uint alignment, GgufMetadata metadata, List<GgufTensorInfo> tensors, long dataOffset)
    {
        _map = map;
        Version = version;
        Alignment = alignment;
        Metadata = metadata;
        Tensors = tensors;
        DataOffset = dataOffset;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    public string Path => _map.Path;
    public long FileLength => _map.Length;
    public uint Version { get; }
    public uint Alignment { get; }
    public GgufMetadata Metadata { get; }
    public IReadOnlyList<GgufTensorInfo> Tensors { get; }
    /// <summary>Absolute offset where the (aligned) tensor data section starts.</summary>
    public long DataOffset { get; }

    public GgufTensorInfo? TryGetTensor(string name) => _byName.GetValueOrDefault(name);

    public GgufTensorInfo GetTensor(string name) => TryGetTensor(name)
        ?? throw new InvalidModelFileException(Path, $"tensor '{name}' is missing");

    /// <summary>A zero-copy view of the tensor's bytes (valid until this file is disposed).</summary>
    public ReadOnlyMemory<byte> GetTensorData(GgufTensorInfo tensor) => _map.Slice(tensor.DataOffset, tensor.ByteSize);

    public ReadOnlyMemory<byte> GetTensorData(string name) => GetTensorData(GetTensor(name));

    public void Dispose() => _map.Dispose();

    public static GgufFile Open(string path)
    {
        var map = MappedFile.Open(path);
        try
        {
            // The header is parsed from one span; GGUF headers are far below 2 GiB (a larger one is reported as such).
            int window = (int)Math.Min(map.Length, int.MaxValue);
            var parser = new HeaderParser(map.Span(0, window), path, map.Length);
            return parser.Parse(map);
        }
        catch
        {
            map.Dispose();
            throw;
        }
    }

    private ref struct HeaderParser(ReadOnlySpan<byte> data, string path, long fileLength)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _pos;
        private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

        private readonly int Remaining => _data.Length - _pos;

        public GgufFile Parse(MappedFile map)
        {
            uint magic = ReadUInt32("the GGUF magic");
            if (magic != Magic)
            {
                string found = Convert.ToHexString(_data[..4]);
                throw Fail(0, $"not a GGUF file: expected the magic bytes 47475546 (\"GGUF\"), found {found}");
            }

            int versionAt = _pos;
            uint version = ReadUInt32("the GGUF version");
            if (version != 2 && version != 3)
            {
                uint swapped = BinaryPrimitives.ReverseEndianness(version);
                string what = version == 1
                    ? "GGUF version 1 is not supported (only versions 2 and 3)"
                    : swapped is 2 or 3
                        ? $"big-endian GGUF (version {swapped}) is not supported; convert it to little-endian"
                        : $"unsupported GGUF version {version}; expected 2 or 3";
                throw Fail(versionAt, what);
            }

            int countsAt = _pos;
            ulong tensorCount = ReadUInt64("the tensor count");
            ulong kvCount = ReadUInt64("the metadata key/value count");
            // Every key/value takes at least 13 bytes (key length, type, a 1-byte value); every tensor
            // info at least 32 (name length, n_dims, one dim, type, offset): counts beyond that are lies.
            if (kvCount > (ulong)Remaining / 13)
                throw Fail(countsAt + 8, $"metadata count {kvCount} is impossible: only {RemainingInFile} bytes follow");
            if (tensorCount > (ulong)Remaining / 32)
                throw Fail(countsAt, $"tensor count {tensorCount} is impossible: only {RemainingInFile} bytes follow");

            var metadata = new GgufMetadata(path);
            uint alignment = DefaultAlignment;
            for (ulong i = 0; i < kvCount; i++)
            {
                int keyAt = _pos;
                string key = ReadString($"the key of metadata entry {i}");
                if (key.Length == 0) throw Fail(keyAt, $"metadata entry {i} has an empty key");
                int typeAt = _pos;
                uint typeId = ReadUInt32($"the type of metadata '{key}'");
                if (!GgufValue.IsKnown(typeId))
                    throw Fail(typeAt, $"metadata '{key}' has unknown value type {typeId} (known: 0..12)");
                var type = (GgufValueType)typeId;
                object value = ReadValue(type, key, 0);
                if (!metadata.TryAddNew(new GgufMetadataEntry(key, type, value)))
                    throw Fail(keyAt, $"duplicate metadata key '{key}'");
                if (key == AlignmentKey)
                {
                    if (value is not uint a)
                        throw Fail(typeAt, $"'{AlignmentKey}' must be a UInt32, found {type}");
                    if (a == 0 || (a & (a - 1)) != 0)
                        throw Fail(typeAt + 4, $"'{AlignmentKey}' = {a} is not a power of two");
                    alignment = a;
                }
            }

            var tensors = new List<GgufTensorInfo>((int)tensorCount);
            var names = new HashSet<string>(StringComparer.Ordinal);
            var infoOffsets = new int[(int)tensorCount];
            var relative = new List<(string Name, long[] Dims, GgmlType Type, long Offset, long Size)>((int)tensorCount);
            for (int i = 0; i < (int)tensorCount; i++)
            {
                int nameAt = _pos;
                infoOffsets[i] = nameAt;
                string name = ReadString($"the name of tensor {i}");
                int nameBytes = Encoding.UTF8.GetByteCount(name);
                if (nameBytes == 0) throw Fail(nameAt, $"tensor {i} has an empty name");
                if (nameBytes > MaxTensorNameBytes)
                    throw Fail(nameAt, $"tensor name '{name}' is {nameBytes} bytes; ggml allows at most {MaxTensorNameBytes}");
                if (!names.Add(name)) throw Fail(nameAt, $"duplicate tensor name '{name}'");

                int dimsAt = _pos;
                uint nDims = ReadUInt32($"n_dims of tensor '{name}'");
                if (nDims is 0 or > MaxDims)
                    throw Fail(dimsAt, $"tensor '{name}' has {nDims} dimensions; expected 1 to {MaxDims}");
                var dims = new long[nDims];
                long elements = 1;
                for (int d = 0; d < nDims; d++)
                {
                    int dimAt = _pos;
                    ulong dim = ReadUInt64($"dimension {d} of tensor '{name}'");
                    if (dim == 0 || dim > long.MaxValue)
                        throw Fail(dimAt, $"tensor '{name}' dimension {d} is {(dim == 0 ? "0" : ((long)dim).ToString())}; expected a positive size");
                    dims[d] = (long)dim;
                    if (elements > long.MaxValue / dims[d])
                        throw Fail(dimAt, $"tensor '{name}' element count overflows 64 bits");
                    elements *= dims[d];
                }

                int typeAt = _pos;
                uint typeId = ReadUInt32($"the type of tensor '{name}'");
                var type = (GgmlType)typeId;
                if (!GgmlTypeTraits.TryGet(type, out int blockSize, out _))
                {
                    string? removed = GgmlTypeTraits.RemovedTypeName(typeId);
                    throw Fail(typeAt, removed is not null
                        ? $"tensor '{name}' has type {removed} (id {typeId}), which ggml removed; requantize the model"
                        : $"tensor '{name}' has unknown ggml type id {typeId}");
                }
                if (dims[0] % blockSize != 0)
                    throw Fail(dimsAt, $"tensor '{name}' row length {dims[0]} is not a multiple of {type}'s block size {blockSize}");
                long size;
                try
                {
                    size = GgmlTypeTraits.TensorBytes(type, dims);
                }
                catch (OverflowException)
                {
                    throw Fail(dimsAt, $"tensor '{name}' byte size overflows 64 bits");
                }

                int offsetAt = _pos;
                ulong offset = ReadUInt64($"the data offset of tensor '{name}'");
                if (offset > long.MaxValue)
                    throw Fail(offsetAt, $"tensor '{name}' data offset {offset} is past any possible end of file");
                if (offset % alignment != 0)
                    throw Fail(offsetAt, $"tensor '{name}' data offset {offset} is not a multiple of the alignment {alignment}");
                relative.Add((name, dims, type, (long)offset, size));
            }

            long headerEnd = _pos;
            long dataOffset = (headerEnd + alignment - 1) / alignment * alignment;
            if (tensorCount > 0 && dataOffset > fileLength)
                throw Fail(headerEnd, $"file ends at {fileLength} bytes, before the tensor data section at {dataOffset}");

            for (int i = 0; i < relative.Count; i++)
            {
                var (name, dims, type, offset, size) = relative[i];
                long available = fileLength - dataOffset;
                if (offset > available || size > available - offset)
                    throw Fail(infoOffsets[i], $"data of tensor '{name}' [{dataOffset + offset}, {dataOffset + offset + size}) runs past the end of the file ({fileLength} bytes)");
                tensors.Add(new GgufTensorInfo(i, name, dims, type, offset, size, dataOffset + offset));
            }

            var byOffset = tensors.OrderBy(t => t.Offset).ToList();
            for (int i = 1; i < byOffset.Count; i++)
            {
                var prev = byOffset[i - 1];
                var cur = byOffset[i];
                if (cur.Offset < prev.Offset + prev.ByteSize)
                    throw Fail(infoOffsets[cur.Index], $"data of tensor '{cur.Name}' [{cur.DataOffset}, {cur.DataOffset + cur.ByteSize}) overlaps tensor '{prev.Name}' [{prev.DataOffset}, {prev.DataOffset + prev.ByteSize})");
            }

            return new GgufFile(map, version, alignment, metadata, tensors, dataOffset);
        }

        private readonly long RemainingInFile => fileLength - _pos;

        private object ReadValue(GgufValueType type, string key, int depth)
        {
            switch (type)
            {
                case GgufValueType.UInt8: return Take(1, Value(key))[0];
                case GgufValueType.Int8: return (sbyte)Take(1, Value(key))[0];
                case GgufValueType.UInt16: return BinaryPrimitives.ReadUInt16LittleEndian(Take(2, Value(key)));
                case GgufValueType.Int16: return BinaryPrimitives.ReadInt16LittleEndian(Take(2, Value(key)));
                case GgufValueType.UInt32: return BinaryPrimitives.ReadUInt32LittleEndian(Take(4, Value(key)));
                case GgufValueType.Int32: return BinaryPrimitives.ReadInt32LittleEndian(Take(4, Value(key)));
                case GgufValueType.Float32: return BinaryPrimitives.ReadSingleLittleEndian(Take(4, Value(key)));
                case GgufValueType.UInt64: return BinaryPrimitives.ReadUInt64LittleEndian(Take(8, Value(key)));
                case GgufValueType.Int64: return BinaryPrimitives.ReadInt64LittleEndian(Take(8, Value(key)));
                case GgufValueType.Float64: return BinaryPrimitives.ReadDoubleLittleEndian(Take(8, Value(key)));
                case GgufValueType.Bool:
                {
                    int at = _pos;
                    byte b = Take(1, Value(key))[0];
                    if (b > 1) throw Fail(at, $"metadata '{key}': bool value {b}; expected 0 or 1");
                    return b == 1;
                }
                case GgufValueType.String: return ReadString($"the value of metadata '{key}'");
                case GgufValueType.Array: return ReadArray(key, depth);
                default: throw new InvalidOperationException("unreachable: type validated by the caller");
            }
        }

        private GgufArray ReadArray(string key, int depth)
        {
            int typeAt = _pos;
            if (depth >= MaxArrayNesting)
                throw Fail(typeAt, $"metadata '{key}': arrays nested deeper than {MaxArrayNesting} levels");
            uint typeId = ReadUInt32($"the element type of array '{key}'");
            if (!GgufValue.IsKnown(typeId))
                throw Fail(typeAt, $"metadata '{key}': array has unknown element type {typeId} (known: 0..12)");
            var elementType = (GgufValueType)typeId;
            int countAt = _pos;
            ulong count = ReadUInt64($"the length of array '{key}'");
            int minSize = GgufValue.MinEncodedSize(elementType);
            if (count > (ulong)(Remaining / minSize))
                throw Fail(countAt, $"metadata '{key}': array of {count} {elementType} elements cannot fit in the {RemainingInFile} bytes left in the file");
            int n = (int)count;

            int fixedSize = GgufValue.FixedSize(elementType);
            if (fixedSize > 0)
            {
                var raw = Take(checked(n * fixedSize), $"the elements of array '{key}'");
                Array values = elementType switch
                {
                    GgufValueType.UInt8 => raw.ToArray(),
                    GgufValueType.Int8 => MemoryMarshal.Cast<byte, sbyte>(raw).ToArray(),
                    GgufValueType.UInt16 => LittleEndian<ushort>(raw),
                    GgufValueType.Int16 => LittleEndian<short>(raw),
                    GgufValueType.UInt32 => LittleEndian<uint>(raw),
                    GgufValueType.Int32 => LittleEndian<int>(raw),
                    GgufValueType.Float32 => LittleEndian<float>(raw),
                    GgufValueType.UInt64 => LittleEndian<ulong>(raw),
                    GgufValueType.Int64 => LittleEndian<long>(raw),
                    GgufValueType.Float64 => LittleEndian<double>(raw),
                    GgufValueType.Bool => ReadBools(raw, countAt + 8, key),
                    _ => throw new InvalidOperationException("unreachable"),
                };
                return new GgufArray(elementType, values);
            }
            if (elementType == GgufValueType.String)
            {
                var strings = new string[n];
                for (int i = 0; i < n; i++) strings[i] = ReadString(key, i);
                return new GgufArray(elementType, strings);
            }
            var nested = new GgufArray[n];
            for (int i = 0; i < n; i++) nested[i] = ReadArray(key, depth + 1);
            return new GgufArray(elementType, nested);
        }

        private readonly bool[] ReadBools(ReadOnlySpan<byte> raw, int at, string key)
        {
            var values = new bool[raw.Length];
            for (int i = 0; i < raw.Length; i++)
            {
                if (raw[i] > 1) throw Fail(at + i, $"metadata '{key}': bool element {i} is {raw[i]}; expected 0 or 1");
                values[i] = raw[i] == 1;
            }
            return values;
        }

        private static T[] LittleEndian<T>(ReadOnlySpan<byte> raw) where T : unmanaged
        {
            // GGUF is little-endian; so is every platform .NET runs Lowbit on (checked once here).
            if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("GGUF reading needs a little-endian CPU");
            return MemoryMarshal.Cast<byte, T>(raw).ToArray();
        }

        /// <summary>Reads element <paramref name="index"/> of array <paramref name="key"/> (messages built only on failure).</summary>
        private string ReadString(string key, int index)
        {
            if (Remaining < 8 || BinaryPrimitives.ReadUInt64LittleEndian(_data.Slice(_pos, 8)) > (ulong)(Remaining - 8))
                return ReadString($"element {index} of array '{key}'");
            int len = (int)BinaryPrimitives.ReadUInt64LittleEndian(_data.Slice(_pos, 8));
            int at = _pos;
            _pos += 8;
            var bytes = _data.Slice(_pos, len);
            _pos += len;
            try
            {
                return StrictUtf8.GetString(bytes);
            }
            catch (DecoderFallbackException)
            {
                throw Fail(at + 8, $"element {index} of array '{key}' is not valid UTF-8");
            }
        }

        private string ReadString(string what)
        {
            int at = _pos;
            ulong len = ReadUInt64($"the length of {what}");
            if (len > (ulong)Remaining)
                throw Fail(at, $"string length {len} of {what} runs past the end of the file ({RemainingInFile} bytes left)");
            var bytes = Take((int)len, what);
            try
            {
                return StrictUtf8.GetString(bytes);
            }
            catch (DecoderFallbackException)
            {
                throw Fail(at + 8, $"{what} is not valid UTF-8");
            }
        }

        private static string Value(string key) => $"the value of metadata '{key}'";

        private uint ReadUInt32(string what) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, what));
        private ulong ReadUInt64(string what) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, what));

        private ReadOnlySpan<byte> Take(int n, string what)
        {
            if (n > Remaining)
            {
                string why = _data.Length < fileLength
                    ? $"the GGUF header exceeds the 2 GiB Lowbit supports while reading {what}"
                    : $"file ends at {fileLength} bytes while reading {what} ({n} bytes needed, {Remaining} left)";
                throw Fail(_pos, why);
            }
            var s = _data.Slice(_pos, n);
            _pos += n;
            return s;
        }

        private readonly InvalidModelFileException Fail(long offset, string what) => new(path, offset, what);
    }
}
