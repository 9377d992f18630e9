using System.Runtime.InteropServices;

namespace Lowbit.Engine;

/// <summary>
/// Unmanaged memory (2 MiB-aligned from 2 MiB up) for weights the engine streams every token. On Linux it asks for
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
        // Huge-page alignment only for buffers of at least one huge page, and no rounding up to whole huge pages:
        // a small matrix must not cost 2 MiB, and the partial last one stays in 4 KiB pages (madvise covers only
        // the buffer, so the kernel never backs the tail with a huge page).
        bool huge = (nuint)length >= HugePage;
        nuint size = ((nuint)length + 4095) & ~(nuint)4095;
        _pointer = (byte*)NativeMemory.AlignedAlloc(size, huge ? HugePage : 64);
        GC.AddMemoryPressure(length);
        if (huge && OperatingSystem.IsLinux())
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
