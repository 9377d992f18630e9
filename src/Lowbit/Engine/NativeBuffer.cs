using System.Runtime.InteropServices;

namespace Lowbit.Engine;

/// <summary>
/// Unmanaged, 2 MiB-aligned memory for weights the engine streams every token. On Linux it asks for
/// transparent huge pages (madvise MADV_HUGEPAGE; this machine's default is "madvise", so the managed
/// heap gets 4 KiB pages): with 4 KiB pages every 4 KiB of a weight stream costs a TLB miss and stops
/// the hardware prefetcher at the page boundary. Without huge pages it is ordinary memory.
/// </summary>
internal sealed unsafe class NativeBuffer : IDisposable
{
    private const nuint HugePage = 2 << 20;
    private const int MadvHugepage = 14;
    private byte* _pointer;

    public NativeBuffer(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        Length = length;
        nuint size = ((nuint)length + HugePage - 1) & ~(HugePage - 1);
        _pointer = (byte*)NativeMemory.AlignedAlloc(size, HugePage);
        GC.AddMemoryPressure(length);
        if (OperatingSystem.IsLinux())
        {
            try { _ = Madvise(_pointer, size, MadvHugepage); } // best effort: an error only means 4 KiB pages
            catch (DllNotFoundException) { }
            catch (EntryPointNotFoundException) { }
        }
    }

    public long Length { get; }

    public byte* Pointer => _pointer != null ? _pointer : throw new ObjectDisposedException(nameof(NativeBuffer));

    [DllImport("libc", EntryPoint = "madvise", SetLastError = false)]
    private static extern int Madvise(void* address, nuint length, int advice);

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    ~NativeBuffer() => Free();

    private void Free()
    {
        if (_pointer == null) return;
        NativeMemory.AlignedFree(_pointer);
        _pointer = null;
        GC.RemoveMemoryPressure(Length);
    }
}
