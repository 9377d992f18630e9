using System.Buffers;
using System.IO.MemoryMappedFiles;

namespace Lowbit.IO;

/// <summary>
/// A read-only memory map of a whole file, handing out <see cref="ReadOnlyMemory{T}"/> views
/// without copying. Views must not outlive the map (dispose the owner of the model last).
/// </summary>
public sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile? _mmf;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _ptr;

    public string Path { get; }
    public long Length { get; }

    private MappedFile(string path)
    {
        Path = path;
        var fi = new FileInfo(path);
        if (!fi.Exists) throw new LowbitException($"{path}: file not found");
        Length = fi.Length;
        if (Length == 0) return;
        try
        {
            _mmf = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            _view = _mmf.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* p = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _ptr = p + _view.PointerOffset;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Dispose();
            throw new LowbitException($"{path}: cannot open for reading: {e.Message}", e);
        }
    }

    public static MappedFile Open(string path) => new(path);

    /// <summary>A view of [offset, offset + length); the range must lie inside the file.</summary>
    public ReadOnlyMemory<byte> Slice(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > Length || length > Length - offset)
            throw new InvalidModelFileException(Path, offset, $"range of {length} bytes runs past the end of the file ({Length} bytes)");
        if (length > int.MaxValue)
            throw new InvalidModelFileException(Path, offset, $"tensor of {length} bytes exceeds the 2 GiB per-tensor limit");
        if (length == 0) return ReadOnlyMemory<byte>.Empty;
        return new PointerMemoryManager(_ptr + offset, (int)length).Memory;
    }

    public ReadOnlySpan<byte> Span(long offset, int length) => Slice(offset, length).Span;

    public void Dispose()
    {
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }
        _mmf?.Dispose();
    }

    private sealed class PointerMemoryManager(byte* ptr, int length) : MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => new(ptr, length);
        public override MemoryHandle Pin(int elementIndex = 0) => new(ptr + elementIndex);
        public override void Unpin() { }
        protected override void Dispose(bool disposing) { }
    }
}
