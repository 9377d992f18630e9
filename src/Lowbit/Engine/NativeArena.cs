namespace Lowbit.Engine;

/// <summary>
/// Hands out pieces of a few large <see cref="NativeBuffer"/>s for the engine's decode copies, so that nearly every
/// weight byte a token streams lies in a 2 MiB huge page. A buffer of its own per matrix leaves each matrix's last
/// partial huge page in 4 KiB pages (<see cref="NativeBuffer"/> never rounds up): in the synthetic 1B Q4_0 model
/// that was 92 MB of the 584 MB a token reads (k/v projections under 2 MiB, the 0.4–1.4 MB tails of the others),
/// each 4 KiB of it a TLB miss and a stop for the hardware prefetcher. Pieces are handed out in order, 64-byte
/// aligned, from chunks of <see cref="ChunkBytes"/> (whole huge pages; a larger request gets a chunk of its own):
/// a chunk's unused end is never touched, so it takes address space but no memory.
/// <para>
/// Measured at stop 17 with two engines over one synthetic 1B model in one process, one placing its copies here and
/// one a buffer per matrix, alternating every 4 tokens for 60 s, once with each engine built first: arena/separate
/// Q4_0 1.113 and 1.009, Q4_K 1.012 and 1.032, Q8_0 1.012 and 0.997, F16 1.054 and 0.982 (the wider formats have
/// proportionally smaller tails). The process then held 1,077 MB of huge pages against 493 MB for the separate
/// engine alone.
/// </para>
/// </summary>
internal sealed class NativeArena
{
    /// <summary>Bytes of each chunk (a multiple of 2 MiB).</summary>
    public const long ChunkBytes = 64L << 20;

    private readonly object _lock = new();
    private NativeBuffer? _chunk;
    private long _used;

    /// <summary>A piece of <paramref name="length"/> bytes, valid as long as the piece is reachable.</summary>
    public NativeSlice Allocate(long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        long size = (length + 63) & ~63L;
        lock (_lock)
        {
            if (_chunk is null || _used + size > _chunk.Length)
            {
                _chunk = new NativeBuffer(Math.Max(ChunkBytes, (size + NativeBuffer.HugePage - 1) / NativeBuffer.HugePage * NativeBuffer.HugePage), reportPressure: false);
                _used = 0;
            }
            var slice = new NativeSlice(_chunk, _used, length);
            _chunk.ReportUse(length);
            _used += size;
            return slice;
        }
    }
}

/// <summary>
/// <see cref="Length"/> bytes at <see cref="Offset"/> of a <see cref="NativeBuffer"/>, which the slice keeps alive
/// (GC.KeepAlive of the slice after reading through <see cref="Pointer"/> keeps the memory too).
/// </summary>
internal sealed unsafe class NativeSlice(NativeBuffer buffer, long offset, long length)
{
    public long Offset { get; } = offset;
    public long Length { get; } = length;
    public byte* Pointer => buffer.Pointer + Offset;

    /// <summary>A slice that is a whole buffer of its own (ordinary NativeBuffer rules: no rounding up to a huge page).</summary>
    public static NativeSlice Own(long length) => new(new NativeBuffer(length), 0, length);
}
