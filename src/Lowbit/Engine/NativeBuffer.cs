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
    /// <summary>Bytes of a transparent huge page (x86-64): buffers this large are aligned to it.</summary>
    public const long HugePage = 2L << 20;
    private const int MadvHugepage = 14;
    private byte* _pointer;
    private long _pressure; // bytes reported to the GC, removed when freed

    /// <param name="length">Bytes.</param>
    /// <param name="reportPressure">
    /// Tell the GC about all of it now; false for memory that is reserved now and used piece by piece
    /// (<see cref="NativeArena"/>, which reports each piece through <see cref="ReportUse"/>).
    /// </param>
    public NativeBuffer(long length, bool reportPressure = true)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        Length = length;
        // Huge-page alignment only for buffers of at least one huge page, and no rounding up to whole huge pages:
        // a small matrix must not cost 2 MiB, and the partial last one stays in 4 KiB pages (madvise covers only
        // the buffer, so the kernel never backs the tail with a huge page).
        bool huge = length >= HugePage;
        nuint size = ((nuint)length + 4095) & ~(nuint)4095;
        _pointer = (byte*)NativeMemory.AlignedAlloc(size, huge ? (nuint)HugePage : 64);
        if (reportPressure) ReportUse(length);
        if (huge && OperatingSystem.IsLinux())
        {
            try { _ = Madvise(_pointer, size, MadvHugepage); } // best effort: an error only means 4 KiB pages
            catch (DllNotFoundException) { }
            catch (EntryPointNotFoundException) { }
        }
    }

    public long Length { get; }

    public byte* Pointer => _pointer != null ? _pointer : throw new ObjectDisposedException(nameof(NativeBuffer));

    /// <summary>Reports <paramref name="bytes"/> more of this buffer in use to the GC (memory pressure).</summary>
    public void ReportUse(long bytes)
    {
        GC.AddMemoryPressure(bytes);
        _pressure += bytes;
    }

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
        if (_pressure > 0) GC.RemoveMemoryPressure(_pressure);
        _pressure = 0;
    }
}
