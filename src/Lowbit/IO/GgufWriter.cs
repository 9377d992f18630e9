using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Lowbit.Formats;

namespace Lowbit.IO;

/// <summary>A tensor planned for a GGUF file: its place and size in the data section.</summary>
public sealed record GgufPlannedTensor(string Name, long[] Dimensions, GgmlType Type, long Offset, long ByteSize)
{
    /// <summary>Shape outermost first (PyTorch order); <see cref="Dimensions"/> is ggml order.</summary>
    public long[] ShapeRowMajor => Dimensions.Reverse().ToArray();
}

/// <summary>Progress of <see cref="GgufWriter.Write"/>: reported after each tensor is written.</summary>
public readonly record struct GgufWriteProgress(int TensorsWritten, int TensorCount, string TensorName, long BytesWritten, long TotalBytes);

/// <summary>
/// Writes GGUF version 3 files the way llama.cpp's own writers lay them out: header, metadata in
/// insertion order, tensor infos, zero padding to the alignment, then each tensor's data in the
/// order added, each padded to the alignment. Tensor data is streamed by a callback (one tensor in
/// memory at a time) and the file appears only when complete (<see cref="AtomicFile"/>).
/// </summary>
public sealed class GgufWriter
{
    private readonly List<GgufPlannedTensor> _tensors = [];
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private long _dataBytes;

    public GgufWriter(uint alignment = GgufFile.DefaultAlignment)
    {
        if (alignment == 0 || (alignment & (alignment - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(alignment), alignment, "alignment must be a power of two");
        Alignment = alignment;
        // llama.cpp reads a non-default alignment from this key; the default is implied.
        if (alignment != GgufFile.DefaultAlignment) Metadata.Set(GgufFile.AlignmentKey, alignment);
    }

    public uint Alignment { get; }
    public GgufMetadata Metadata { get; } = new();
    public IReadOnlyList<GgufPlannedTensor> Tensors => _tensors;
    /// <summary>Bytes of the data section (all tensors with their padding).</summary>
    public long DataBytes => _dataBytes;

    /// <summary>
    /// Plans a tensor of <paramref name="shapeRowMajor"/> (outermost first, as PyTorch; stored
    /// reversed, innermost first, as ggml) encoded with <paramref name="codec"/>, which must be a GGUF
    /// block type. Returns the tensor index passed to the data callback.
    /// </summary>
    public int AddTensor(string name, long[] shapeRowMajor, TensorCodec codec)
    {
        ArgumentNullException.ThrowIfNull(codec);
        ArgumentNullException.ThrowIfNull(shapeRowMajor);
        var type = codec.Ggml ?? throw new LowbitException(
            $"tensor '{name}': format {codec.Name} has no GGUF type and cannot be stored in a GGUF file");
        int index = AddTensor(name, shapeRowMajor, type);
        var t = _tensors[index];
        long cols = shapeRowMajor[^1];
        long rows = t.Dimensions.Length == 1 ? 1 : t.Dimensions.Skip(1).Aggregate(1L, (a, b) => a * b);
        long codecBytes = codec.TensorBytes(rows, cols);
        if (codecBytes != t.ByteSize)
            throw new ArgumentException($"tensor '{name}': codec {codec.Name} encodes {codecBytes} bytes but ggml's {type} layout needs {t.ByteSize}");
        return index;
    }

    /// <summary>Plans a tensor of ggml type <paramref name="type"/> with a row-major shape (outermost first).</summary>
    public int AddTensor(string name, long[] shapeRowMajor, GgmlType type)
    {
        ArgumentNullException.ThrowIfNull(shapeRowMajor);
        var dims = shapeRowMajor.Reverse().ToArray();
        return AddTensorGgml(name, dims, type);
    }

    /// <summary>Plans a tensor given ggml-order dimensions (innermost first), e.g. copied from a <see cref="GgufTensorInfo"/>.</summary>
    public int AddTensorGgml(string name, long[] ggmlDims, GgmlType type)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(ggmlDims);
        int nameBytes = Encoding.UTF8.GetByteCount(name);
        if (nameBytes == 0) throw new ArgumentException("tensor name is empty", nameof(name));
        if (nameBytes > GgufFile.MaxTensorNameBytes)
            throw new LowbitException($"tensor name '{name}' is {nameBytes} bytes; GGUF (ggml) allows at most {GgufFile.MaxTensorNameBytes}");
        if (ggmlDims.Length is 0 or > GgufFile.MaxDims)
            throw new LowbitException($"tensor '{name}' has {ggmlDims.Length} dimensions; GGUF allows 1 to {GgufFile.MaxDims}");
        long elements = 1;
        foreach (var d in ggmlDims)
        {
            if (d <= 0) throw new LowbitException($"tensor '{name}' has a dimension of {d}; sizes must be positive");
            elements = checked(elements * d);
        }
        if (!GgmlTypeTraits.TryGet(type, out int blockSize, out _))
            throw new LowbitException($"tensor '{name}': ggml type {type} ({(uint)type}) is unknown");
        if (ggmlDims[0] % blockSize != 0)
            throw new LowbitException($"tensor '{name}': row length {ggmlDims[0]} is not a multiple of {type}'s block size {blockSize}");
        if (!_names.Add(name)) throw new LowbitException($"tensor '{name}' was added twice");
        long size = GgmlTypeTraits.TensorBytes(type, ggmlDims);
        _tensors.Add(new GgufPlannedTensor(name, (long[])ggmlDims.Clone(), type, _dataBytes, size));
        _dataBytes = checked(_dataBytes + Pad(size));
        return _tensors.Count - 1;
    }

    /// <summary>
    /// A writer planned to reproduce <paramref name="source"/>: same metadata (in order), alignment
    /// and tensors. Copy the data with <c>(i, s) =&gt; s.Write(source.GetTensorData(source.Tensors[i]).Span)</c>.
    /// </summary>
    public static GgufWriter CopyOf(GgufFile source)
    {
        var w = new GgufWriter(source.Alignment);
        foreach (var e in source.Metadata.Entries) w.Metadata.SetValue(e.Key, e.Type, e.Value);
        foreach (var t in source.Tensors) w.AddTensorGgml(t.Name, t.Dimensions, t.Type);
        return w;
    }

    /// <summary>
    /// Writes the file to <paramref name="path"/> through a temporary file renamed into place at the
    /// end: an exception (from the callback too) or cancellation leaves no file and the previous
    /// content of <paramref name="path"/> untouched. <paramref name="writeData"/> is called once per
    /// tensor, in order, and must write exactly that tensor's byte count.
    /// </summary>
    /// <param name="inputsNeverToOverwrite">Paths of the inputs (e.g. the model being quantized); writing over one is refused.</param>
    public void Write(string path, Action<int, Stream> writeData, IProgress<GgufWriteProgress>? progress = null,
        CancellationToken cancellationToken = default, params string[] inputsNeverToOverwrite)
    {
        ArgumentNullException.ThrowIfNull(writeData);
        byte[] header = BuildHeader();
        cancellationToken.ThrowIfCancellationRequested();
        using var file = AtomicFile.Create(path, inputsNeverToOverwrite);
        WriteBody(file.Stream, header, writeData, progress, cancellationToken);
        cancellationToken.ThrowIfCancellationRequested();
        file.Commit();
    }

    /// <summary>Writes the whole file to a stream (no atomicity; for in-memory use and tests).</summary>
    public void WriteTo(Stream output, Action<int, Stream> writeData, IProgress<GgufWriteProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(writeData);
        WriteBody(output, BuildHeader(), writeData, progress, cancellationToken);
    }

    /// <summary>The header (magic … tensor infos), padded to the alignment when tensor data follows.</summary>
    public byte[] BuildHeader()
    {
        if (Metadata.TryGet(GgufFile.AlignmentKey, out var a))
        {
            if (a.Value is not uint av || av != Alignment)
                throw new LowbitException($"metadata '{GgufFile.AlignmentKey}' = {a.Value} ({a.Type}) disagrees with the writer's alignment {Alignment} (UInt32)");
        }
        else if (Alignment != GgufFile.DefaultAlignment)
            throw new LowbitException($"metadata '{GgufFile.AlignmentKey}' was removed but the writer's alignment is {Alignment}");

        var ms = new MemoryStream();
        WriteUInt32(ms, GgufFile.Magic);
        WriteUInt32(ms, 3);
        WriteUInt64(ms, (ulong)_tensors.Count);
        WriteUInt64(ms, (ulong)Metadata.Count);
        foreach (var e in Metadata.Entries)
        {
            WriteString(ms, e.Key);
            WriteUInt32(ms, (uint)e.Type);
            WriteValue(ms, e.Type, e.Value);
        }
        foreach (var t in _tensors)
        {
            WriteString(ms, t.Name);
            WriteUInt32(ms, (uint)t.Dimensions.Length);
            foreach (var d in t.Dimensions) WriteUInt64(ms, (ulong)d);
            WriteUInt32(ms, (uint)t.Type);
            WriteUInt64(ms, (ulong)t.Offset);
        }
        // llama.cpp's vocab-only files end right after the header: pad only when a data section follows.
        if (_tensors.Count > 0) ms.Write(new byte[Pad(ms.Length) - ms.Length]);
        return ms.ToArray();
    }

    private void WriteBody(Stream output, byte[] header, Action<int, Stream> writeData,
        IProgress<GgufWriteProgress>? progress, CancellationToken ct)
    {
        output.Write(header);
        long total = header.Length + _dataBytes;
        long written = header.Length;
        var padding = new byte[Alignment];
        for (int i = 0; i < _tensors.Count; i++)
        {
            ct.ThrowIfCancellationRequested();
            var t = _tensors[i];
            var counting = new ExactLengthStream(output, t.Name, t.ByteSize, ct);
            writeData(i, counting);
            if (counting.Written != t.ByteSize)
                throw new LowbitException($"tensor '{t.Name}': the data writer produced {counting.Written} bytes, expected {t.ByteSize}");
            int pad = (int)(Pad(t.ByteSize) - t.ByteSize);
            output.Write(padding, 0, pad);
            written += t.ByteSize + pad;
            progress?.Report(new GgufWriteProgress(i + 1, _tensors.Count, t.Name, written, total));
        }
        output.Flush();
    }

    private long Pad(long n) => (n + Alignment - 1) / Alignment * Alignment;

    private static void WriteValue(Stream s, GgufValueType type, object value)
    {
        switch (value)
        {
            case byte v: s.WriteByte(v); break;
            case sbyte v: s.WriteByte((byte)v); break;
            case ushort v: { Span<byte> b = stackalloc byte[2]; BinaryPrimitives.WriteUInt16LittleEndian(b, v); s.Write(b); break; }
            case short v: { Span<byte> b = stackalloc byte[2]; BinaryPrimitives.WriteInt16LittleEndian(b, v); s.Write(b); break; }
            case uint v: WriteUInt32(s, v); break;
            case int v: WriteUInt32(s, (uint)v); break;
            case float v: { Span<byte> b = stackalloc byte[4]; BinaryPrimitives.WriteSingleLittleEndian(b, v); s.Write(b); break; }
            case bool v: s.WriteByte(v ? (byte)1 : (byte)0); break;
            case string v: WriteString(s, v); break;
            case ulong v: WriteUInt64(s, v); break;
            case long v: WriteUInt64(s, (ulong)v); break;
            case double v: { Span<byte> b = stackalloc byte[8]; BinaryPrimitives.WriteDoubleLittleEndian(b, v); s.Write(b); break; }
            case GgufArray a: WriteArray(s, a); break;
            default: throw new ArgumentException($"cannot write a {value.GetType().Name} as GGUF {type}");
        }
    }

    private static void WriteArray(Stream s, GgufArray a)
    {
        WriteUInt32(s, (uint)a.ElementType);
        WriteUInt64(s, (ulong)a.Count);
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("GGUF writing needs a little-endian CPU");
        switch (a.Values)
        {
            case byte[] v: s.Write(v); break;
            case sbyte[] v: s.Write(MemoryMarshal.AsBytes(v.AsSpan())); break;
            case ushort[] v: s.Write(MemoryMarshal.AsBytes(v.AsSpan())); break;
            case short[] v: s.Write(MemoryMarshal.AsBytes(v.AsSpan())); break;
            case uint[] v: s.Write(MemoryMarshal.AsBytes(v.AsSpan())); break;
            case int[] v: s.Write(MemoryMarshal.AsBytes(v.AsSpan())); break;
            case float[] v: s.Write(MemoryMarshal.AsBytes(v.AsSpan())); break;
            case ulong[] v: s.Write(MemoryMarshal.AsBytes(v.AsSpan())); break;
            case long[] v: s.Write(MemoryMarshal.AsBytes(v.AsSpan())); break;
            case double[] v: s.Write(MemoryMarshal.AsBytes(v.AsSpan())); break;
            case bool[] v: foreach (var b in v) s.WriteByte(b ? (byte)1 : (byte)0); break;
            case string[] v: foreach (var str in v) WriteString(s, str); break;
            case GgufArray[] v: foreach (var inner in v) WriteArray(s, inner); break;
            default: throw new ArgumentException($"cannot write a {a.Values.GetType().Name} as a GGUF array");
        }
    }

    private static void WriteString(Stream s, string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        byte[] bytes = Encoding.UTF8.GetBytes(value);
        WriteUInt64(s, (ulong)bytes.Length);
        s.Write(bytes);
    }

    private static void WriteUInt32(Stream s, uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        s.Write(b);
    }

    private static void WriteUInt64(Stream s, ulong v)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, v);
        s.Write(b);
    }

    /// <summary>
    /// The stream handed to the data callback: forwards to the file, refuses to go past the tensor's
    /// declared size (so a wrong writer cannot corrupt the next tensor), and observes cancellation.
    /// </summary>
    private sealed class ExactLengthStream(Stream inner, string tensorName, long expected, CancellationToken ct) : Stream
    {
        public long Written { get; private set; }

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => Written;
        public override long Position { get => Written; set => throw new NotSupportedException(); }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            ct.ThrowIfCancellationRequested();
            if (buffer.Length > expected - Written)
                throw new LowbitException($"tensor '{tensorName}': the data writer produced more than the declared {expected} bytes");
            inner.Write(buffer);
            Written += buffer.Length;
        }

        public override void WriteByte(byte value) => Write([value]);
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
