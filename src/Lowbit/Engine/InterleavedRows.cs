using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Lowbit.Formats;

namespace Lowbit.Engine;

/// <summary>
/// A decode copy of Q4_0 / Q8_0 / Q4_K (and F16) weights with 8 rows interleaved (Q4_0 without VNNI: 16, two rows a
/// byte, see <see cref="PairsNibbles"/>), made once when the model loads
/// (as llama.cpp's CPU "repack" buffers do). Decode reads every weight once per token, so it is bound
/// by how fast memory streams in and how little work each byte costs:
/// <list type="bullet">
/// <item>one sequential stream per thread (GGUF rows are read 4–8 at a time, so 4–8 streams that the
/// hardware prefetcher follows badly);</item>
/// <item>per 4-value slice, one 32-byte load holds that slice for all 8 rows, one int32 lane per row:
/// vpdpbusd with the slice's 4 activation bytes broadcast leaves each row's exact block sum in its
/// own lane, so no horizontal reduction and no gathering of per-row scales (they are stored 8 together).</item>
/// </list>
/// Each group's rows are stored whole, group after group ([group][block]), so a thread's share of a step is one
/// sequential stream however the step is cut into pieces. Stops 6–22 cut rows longer than 2048 columns into segments
/// stored segment by segment ([segment][group][blocks of the segment]) so that a pass over a group touched only 2 KB of
/// activations; but a piece of groups was then one run per segment, and the decode steps' pieces shrink to a few groups
/// as a share runs out (<see cref="ParallelRunner.ForRanges"/>), so the 2048 x 8192 down projection of the 1B model
/// was read as dozens of short runs, each starting cold and prefetching past its end. Two threads over 12–16 sets of
/// 2048 x 8192 matrices in one arena, the layouts alternated, each pass bucketed by a plain read after it (stop 23):
/// Q4_0 streamed at 78.1 % of the read whole against 66.6 % segmented near 60 GB/s, 85.1 against 73.1 near 52, 93.9
/// against 88.4 near 33; Q4_K 71.0 / 67.9, 81.8 / 76.9, 92.3 / 88.7; Q8_0 84.7 / 73.9, 91.8 / 83.0, 97.5 / 92.9
/// (8192 x 2048 matrices, one segment either way: Q4_0 84.2 %, Q4_K 81.6, Q8_0 89.4 near 60). Decode of the synthetic
/// 1B Q4_0 model, two engines alternated every 4 tokens, each measured against a read of its own weights: 77.4 against
/// 74.5 % near 60 GB/s, 88.7 against 80.4 near 52, 97.1 against 94.8 near 33. The activation of a whole row (10 KB
/// for 8192 Q4_0 columns) was then met once per group and left L1 between groups; since stop 24 a group of such rows
/// stacks several kernel groups segment by segment (<see cref="StackedGroups"/>), so each 2048-column segment of the
/// activation serves the whole stack from L1 and the copy is still one stream.
/// Layouts cannot be compared with one engine (or one set of matrices) per layout in a process
/// unless each is measured against a read of its own memory: on this VM identical sets of matrices, built and streamed
/// alike in one process and alternated, streamed at 33.6–38.7 GB/s (six 512 MiB sets of 2048x2048 Q4_0) and 32.8–42.8
/// (four), by where their memory landed.
/// Per row the arithmetic is the canonical one (Q4_0: <see cref="QuantizedGemm.ReferenceDot"/>; Q4_K:
/// the scalar Q8_K integer dot): exact int32 sums per block, then one float fold per block in block
/// order, so decode through this copy equals the GEMM (prefill) and the scalar references bit for bit.
/// <para>
/// The kernels stay 256-bit on AVX-512 CPUs. A Q4_0 kernel on 16-row groups in 512-bit registers (.NET 10 has
/// vpdpbusd on zmm only under AVX10, so vpmaddubsw with int16 block sums, then one vpmaddwd) ran 1.4–1.7× faster
/// with its weights in cache, yet from DRAM it decoded the synthetic 1B model 20–31 % slower at one thread (one process
/// alternating the two copies every 4 tokens) and streamed 22–27 % slower at two (<c>lowbit bench --kernels q4_0</c>),
/// with the scales after a segment's codes or inline (and no better with paired blocks in a standalone test):
/// decode here is bound by how a core streams memory, not by its instructions, and the 144-byte block streams best.
/// </para>
/// <para>
/// Yet on this VM the cores' speed moves as much as the memory's (the same in-cache kernel ran 74 and 96 GB/s at
/// two threads an hour apart), and with weights in cache the kernels ran at ~5 instructions a cycle, so each
/// instruction a block spends counts whenever memory is the faster of the two. Stop 15 wrote the Q8_0 and Q4_K
/// slice loops out (the JIT kept them as loops at ~8–9 scalar instructions per pair of slices), built the GFNI
/// constant once per call instead of per block, and indexed blocks with nint (no sign extension per block). With
/// 384 KiB a thread in cache (two threads, one process alternating old and new): Q4_0 +4.5 %, Q8_0 +24 %, Q4_K
/// +22 %; in the synthetic 1B model from DRAM, neutral (new/old 0.987–1.013, one process alternating every 4
/// tokens, at 37–50 GB/s, when memory was the bound). Same bits: integer sums are exact in any order. Two groups
/// sharing each activation broadcast (16 rows a pass) cut Q4_0's instructions a further 13 % and ran 22 % faster in
/// cache, but read as two streams 9 KB apart it streamed at 29 GB/s against 53 (one process, same memory), and
/// interleaved as one 288-byte stream it was no faster from DRAM; a single dpbusd chain per Q4_0 block was 4 %
/// slower in cache than two.
/// </para>
/// </summary>
internal static unsafe class InterleavedRows
{
    public const int GroupRows = 8;

    /// <summary>
    /// How far ahead of the block being multiplied the kernels ask for weights (software prefetch, every 64-byte line
    /// once; non-temporal since <see cref="PrefetchStream"/>, the figures here were measured with PREFETCHT0). With
    /// the hardware prefetcher alone, two threads decoded Q4_K at 60 % and Q4_0 / Q8_0 at 67–74 % of the machine's
    /// read bandwidth (synthetic 1B model); asking ~6 KB ahead (about one DRAM latency
    /// at one thread's streaming rate) gained 8–22 % (4 KB alike, 12 KB and more less; measured in one process,
    /// alternating distances every 4 tokens, against prefetching nothing ahead). The F16 kernel, measured the same
    /// way once decode steps ran as per-thread shares (<see cref="ParallelRunner.ForRanges"/>), gained 4–9 %. Checked
    /// again at stop 13: a standalone one-thread stream of one long run favoured no prefetch (the F16 kernel at 75–77 %
    /// of a plain read against 65–67 %), but in the model at two threads the F16 decode ran 31.0 t/s with it, 28.1 with
    /// only each run's head prefetched and 27.4 with none. At stop 15 that no longer held, and the F16 kernel prefetches
    /// only each run's head: with the weights in the same memory (one process switching every 4 tokens, three runs of
    /// 60 s), the synthetic 1B F16 model decoded 3.5, 4.4 and 8.7 % faster without the prefetch ahead, and a long F16
    /// stream over one 512 MiB buffer ran 44.8–45.0 GB/s without it against 41.6–43.3 with it at 6 KB (3, 12 and 12 KB
    /// doubled no better). The integer kernels still gain from it: without it Q4_0 decoded 5.2 and 10.1 % slower and
    /// Q4_K 2.8 and 5.5 % (Q8_0 within ±2 %; same test), and 6 KB is still the distance: against it, 3 / 9 / 12 KB
    /// decoded Q4_0 at 0.922 / 0.990 / 0.969 and Q4_K at 0.995 / 0.963 / 0.938 (one process cycling the four every 4
    /// tokens for 60 s). At stop 22, with each cycle bucketed by a plain read of the weights after it (the VM's memory
    /// reads near 34, 51 or 58 GB/s by the hour), 4 KB beat 6 KB in every bucket: Q4_0 1.008 / 1.104 / 1.023, Q4_K
    /// 1.015 / 1.063 / 1.010, Q8_0 1.010 / 1.019 / 1.026 (3 KB: 1.011 / 1.093 / 1.011, 1.018 / 1.049 / 1.011, 1.004 /
    /// 0.992 / 0.985; 130 s a format), and in two earlier Q4_0 runs that day 1.006 / 1.043 / 1.046 and 1.017 / 1.034 /
    /// 1.006. So 4 KB.
    /// </summary>
    private const int PrefetchBytes = 4096;

    /// <summary>
    /// Asks for the first <see cref="PrefetchBytes"/> of a run of <paramref name="runBytes"/> weights: the kernels
    /// prefetch that far ahead of where they read, so without this a run starts cold (a piece taken from the back of
    /// another thread's share).
    /// </summary>
    private static void PrefetchHead(byte* run, long runBytes)
    {
        long head = Math.Min(runBytes, PrefetchBytes);
        for (long o = 0; o < head; o += 64) PrefetchStream(run + o);
    }

    /// <summary>
    /// The kernels' software prefetch of weights ahead: non-temporal (PREFETCHNTA), as every weight byte is used once
    /// per token. Against PREFETCHT0 at the same distance, decode of the synthetic 1B model ran 1.9–6.9 % faster for
    /// Q4_0, 2.0–5.2 % for Q4_K, 0–1.3 % for Q8_0 (one process, switching every 4 tokens, two or more runs each) and
    /// 1.8 % for F16 (one run); presumably because lines fetched non-temporally are kept out of the L2 and so do not
    /// push the L2's victims into the L3 at the rate weights stream. A plain read gained nothing from it (56.5 GB/s
    /// without, 53.9 with), so the read bandwidth the fractions use stays the plain read's. PREFETCHT1 (to the L2) at the
    /// same distance was no better at stop 14: −0.9 % for Q4_0, +4.6 % Q8_0, −0.6 % Q4_K, −2.0 % F16 (one process,
    /// alternating every 4 tokens), and PREFETCHT1 far ahead (12–16 KB) beside PREFETCHNTA near lost 3–4 % on Q4_0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchStream(byte* p) => Sse.PrefetchNonTemporal(p);

    // Q4_0, per 32-value block of a group: d[row:8] f16, then codes [s:4][row:8][4 bytes] (bytes 4s..4s+3 of
    // each row's 16 nibble bytes: low nibbles = values 4s..4s+3, high nibbles = values 16+4s..16+4s+3).
    private const int Q40Block = 144, Q40Codes = 16;

    // Q8_0, per 32-value block of a group: d[row:8] f16, then codes [s:8][row:8][4 bytes] (int8 values 4s..4s+3).
    private const int Q80Block = 272, Q80Codes = 16;

    // Q4_K, per 256-value super-block of a group: d[row:8] f16, dmin[row:8] f16, scales [g:8][row:8] u8,
    // mins [k:4][row:8][m_2k, m_2k+1] u8, codes [c:4][s:8][row:8][4 bytes] (bytes 32c+4s.. of each row's
    // 128 nibble bytes: low nibbles = group 2c, high nibbles = group 2c+1).
    private const int KBlock = 1184, KDmin = 16, KSc = 32, KMins = 96, KCodes = 160;

    // Q4_0 with paired nibbles (see PairsNibbles), 16 rows a group, per 32-value block: d[row:16] f16, then codes
    // [s:8][slot:8][4 bytes]: byte j of slot r holds value 4s + j of row r in its low nibble and of row r + 8 in its high.
    private const int Q40PairBlock = 288, Q40PairCodes = 32;

    /// <summary>
    /// The high nibble of every byte (x &gt;&gt; 4). With GFNI one affine transform (output bits 0–3 = input bits
    /// 4–7) replaces shift-and-mask: one vector op fewer per 32 code bytes, which decoded Q4_K and Q4_0 at two
    /// threads 5–7 % faster (the kernels are close to their issue limit even when memory-bound). The caller makes
    /// <paramref name="matrix"/> (<see cref="HighNibbleMatrix"/>) once, outside its loop: built here, the JIT rebuilt
    /// the constant every block.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<byte> High(Vector256<byte> v, Vector256<byte> low, Vector256<byte> matrix)
        => Gfni.V256.IsSupported ? Gfni.V256.GaloisFieldAffineTransform(v, matrix, 0)
                                 : Vector256.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & low;

    /// <summary>The GF(2) affine matrix whose transform moves each byte's bits 4–7 to bits 0–3 and clears 4–7.</summary>
    internal static Vector256<byte> HighNibbleMatrix => Vector256.Create(0x1020408000000000UL).AsByte();

    /// <summary>Formats with an interleaved decode kernel on this CPU.</summary>
    public static bool IsSupported(GemmFormat f) => f is GemmFormat.Q4_0 or GemmFormat.Q8_0 or GemmFormat.Q4_K && QuantizedGemm.BestIsa != GemmIsa.Scalar;

    /// <summary>
    /// Rows per group of <paramref name="f"/>'s interleaved copy of rows of <paramref name="cols"/> columns for the kernels
    /// of <paramref name="isa"/>: the kernel group's rows (<see cref="BaseRows"/>) times the groups a stack holds
    /// (<see cref="StackedGroups"/>; 1 for rows of up to 2048 columns). A matrix's rows short of a last group decode
    /// through the row kernels.
    /// </summary>
    public static int RowsPerGroup(GemmFormat f, GemmIsa isa, int cols) => BaseRows(f, isa) * StackedGroups(f, isa, cols);

    /// <summary>Rows of one group as the kernels take it: 16 where the copy pairs nibbles, otherwise <see cref="GroupRows"/>.</summary>
    private static int BaseRows(GemmFormat f, GemmIsa isa) => PairsNibbles(f, isa) ? 2 * GroupRows : GroupRows;

    /// <summary>Columns of one segment of a stacked group (<see cref="StackedGroups"/>).</summary>
    private const int SegmentValues = 2048;

    /// <summary>Largest size of a stacked group (<see cref="StackedGroups"/>).</summary>
    private const int StackBytes = 256 << 10;

    /// <summary>
    /// How many kernel groups (<see cref="BaseRows"/> rows each) one group of the copy stacks, for rows of
    /// <paramref name="cols"/> columns: 1 for rows of up to <see cref="SegmentValues"/> columns, otherwise the largest
    /// power of two whose stack stays within <see cref="StackBytes"/>. A stack is stored segment by segment
    /// ([segment of 2048 columns][kernel group][blocks]), so a pass over one segment of its kernel groups reads only that
    /// segment's activations (2 KB for Q4_0), which stay in L1 across the stack, while the copy is still one sequential
    /// stream. With whole rows, the activation of a long row (8.6 KB for 8192 Q4_K columns) left L1 between groups, as
    /// 38 KB of weights streamed past it, and came back from L2 each time; keeping it in L1 (a kernel that wrapped its
    /// activation every 2048 columns, same stream) took two threads over 2048 x 8192 Q4_K matrices from 70.5 to 77.9 %
    /// of a plain read near 59 GB/s, 76.3 to 85.1 near 51 and 89.7 to 94.7 near 33, where 8192 x 2048 matrices stayed
    /// level (80.7 / 80.1 %; one process alternating the sets, each pass bucketed by a read after it). Prefetching the
    /// next segment's activation during the stack's last or middle kernel group was level (75.6 / 77.6 against 77.1 %
    /// near 63 GB/s, 87.6 / 87.9 against 88.4 near 50; stop 25).
    /// </summary>
    internal static int StackedGroups(GemmFormat f, GemmIsa isa, int cols)
    {
        if (cols <= SegmentValues) return 1;
        long baseBytes = (long)BaseGroupBytes(f, isa, cols);
        int n = 1;
        while (2 * n * baseBytes <= StackBytes) n *= 2;
        return n;
    }

    private static int BaseGroupBytes(GemmFormat f, GemmIsa isa, int cols) => cols / QuantizedGemm.BlockValues(f) * StoredBlockBytes(f, isa);

    /// <summary>
    /// Whether the copy of <paramref name="f"/> for <paramref name="isa"/> holds 16 rows a group with the codes of rows
    /// r and r + 8 in the two nibbles of one byte: Q4_0 without VNNI. Both nibbles of a byte are then the same column,
    /// so one activation broadcast feeds two pmaddubsw (rows 0–7 from the low nibbles, 8–15 from the high), where the
    /// 8-row copy, whose nibbles are two columns of one row, needs a broadcast for each: half the activation loads for
    /// the same multiplies, and the copy is still one stream. On a Zen 4 VM (AVX-512 VNNI, which .NET 10 does not
    /// reach, and no AVX-VNNI) a microbenchmark showed pmaddubsw, pmaddwd, pmulld, GFNI and vmulps sharing two pipes and
    /// 256-bit loads and broadcasts issuing two a cycle; the 8-row Q4_0 kernel spent 17 loads and 16 of those multiplies
    /// a block, ~13 cycles. With its weights in L2 one thread ran 7–16 % faster paired. Two threads over 512 MiB of
    /// 8192 × 2048 matrices in huge pages (one process alternating the two copies and a plain read, runs of 2 minutes
    /// bucketed by the read's speed; /tmp harness, bits compared): +4.6 and +4.9 % when memory gave ~52 GB/s, −1.4 %
    /// (47 passes) at ~58, −0.7 to +1.0 % at ~33. The same pairing for Q4_K (2368-byte super-blocks of 16 rows, a group's
    /// scales met in one pmaddwd) was 16–35 % faster in L2 but streamed 5 % slower from huge pages and 1–7 % slower
    /// from 4 KiB pages (prefetching 4, 6 or 9 KB ahead alike), so Q4_K keeps the 8-row copy. The VNNI kernels keep it
    /// too: no CPU here runs them.
    /// </summary>
    private static bool PairsNibbles(GemmFormat f, GemmIsa isa) => f == GemmFormat.Q4_0 && isa != GemmIsa.AvxVnni;

    /// <summary>Bytes of one interleaved group (<see cref="RowsPerGroup"/> rows) of <paramref name="f"/> for <paramref name="isa"/>.</summary>
    public static int GroupBytes(GemmFormat f, GemmIsa isa, int cols) => StackedGroups(f, isa, cols) * BaseGroupBytes(f, isa, cols);

    /// <summary>
    /// Whether every fp16 scale (Q4_K: d and dmin) of <paramref name="rowCount"/> encoded rows is finite. The kernels
    /// convert scales with <see cref="MatKernels.HalfToSingleAvx2"/>, exact for every finite half (a quarter of
    /// the exact general conversion's work), so a matrix with an infinite or NaN scale gets no interleaved copy.
    /// </summary>
    public static bool ScalesFinite(GemmFormat f, byte* rows, long rowCount, int rowBytes, int cols)
    {
        int fileBlock = QuantizedGemm.WeightBlockBytes(f), blocks = cols / QuantizedGemm.BlockValues(f), halves = f == GemmFormat.Q4_K ? 2 : 1;
        for (long r = 0; r < rowCount; r++)
            for (int b = 0; b < blocks; b++)
                for (int i = 0; i < halves; i++)
                    if ((Unsafe.ReadUnaligned<ushort>(rows + r * rowBytes + (long)b * fileBlock + 2 * i) & 0x7C00) == 0x7C00) return false;
        return true;
    }

    private static int StoredBlockBytes(GemmFormat f, GemmIsa isa) => f switch
    {
        GemmFormat.Q4_0 => PairsNibbles(f, isa) ? Q40PairBlock : Q40Block,
        GemmFormat.Q8_0 => Q80Block,
        GemmFormat.Q4_K => KBlock,
        _ => throw new ArgumentException($"{f} has no interleaved layout", nameof(f)),
    };

    /// <summary>
    /// Packs <see cref="RowsPerGroup"/> consecutive encoded rows (<paramref name="rowBytes"/> apart) as the group of
    /// <see cref="GroupBytes"/> bytes at <paramref name="group"/>, for the kernels of <paramref name="isa"/>: per
    /// segment (<see cref="StackedGroups"/>; one for rows of up to <see cref="SegmentValues"/> columns) each kernel group
    /// of the stack, its blocks in column order, each holding every row's block.
    /// </summary>
    public static void PackGroup(GemmFormat f, GemmIsa isa, byte* rows, int rowBytes, int cols, byte* group)
    {
        int blockBytes = StoredBlockBytes(f, isa), blocks = cols / QuantizedGemm.BlockValues(f);
        int fileBlock = QuantizedGemm.WeightBlockBytes(f), stack = StackedGroups(f, isa, cols), baseRows = BaseRows(f, isa);
        int segmentBlocks = SegmentBlocks(f, stack, blocks);
        for (int b0 = 0; b0 < blocks; b0 += segmentBlocks)
        {
            int n = Math.Min(segmentBlocks, blocks - b0);
            for (int j = 0; j < stack; j++)
                PackBlocks(f, isa, rows + (long)j * baseRows * rowBytes + (long)b0 * fileBlock, rowBytes, n,
                    group + KernelGroupOffset(b0, n, j, stack, blockBytes));
        }
    }

    /// <summary>Blocks per segment of a group stacking <paramref name="stack"/> kernel groups of <paramref name="blocks"/> blocks a row.</summary>
    private static int SegmentBlocks(GemmFormat f, int stack, int blocks) => stack == 1 ? blocks : SegmentValues / QuantizedGemm.BlockValues(f);

    /// <summary>
    /// Where, in a group of <paramref name="stack"/> kernel groups, kernel group <paramref name="j"/>'s segment from block
    /// <paramref name="b0"/> (<paramref name="n"/> blocks) starts: the layout [segment][kernel group][blocks], every
    /// segment before it full.
    /// </summary>
    private static long KernelGroupOffset(int b0, int n, int j, int stack, int blockBytes) => ((long)b0 * stack + (long)j * n) * blockBytes;

    /// <summary>
    /// Packs <paramref name="blocks"/> blocks of <see cref="BaseRows"/> rows (from <paramref name="rows"/>,
    /// <paramref name="rowBytes"/> apart) at <paramref name="group"/>, in column order, each holding every row's block.
    /// </summary>
    private static void PackBlocks(GemmFormat f, GemmIsa isa, byte* rows, int rowBytes, int blocks, byte* group)
    {
        int blockBytes = StoredBlockBytes(f, isa), fileBlock = QuantizedGemm.WeightBlockBytes(f);
        if (PairsNibbles(f, isa))
        {
            PackPairedQ40Group(rows, rowBytes, fileBlock, blocks, blockBytes, group);
            return;
        }
        if (f is GemmFormat.Q4_0 or GemmFormat.Q8_0)
        {
            // Per 32-value block: the 8 rows' fp16 scales, then each 4-byte slice of the codes for all 8 rows.
            int slices = (fileBlock - 2) / 4;
            for (int b = 0; b < blocks; b++)
            {
                byte* o = group + (long)b * blockBytes;
                for (int r = 0; r < GroupRows; r++)
                {
                    byte* blk = rows + (long)r * rowBytes + b * fileBlock;
                    ((ushort*)o)[r] = Unsafe.ReadUnaligned<ushort>(blk);
                    for (int s = 0; s < slices; s++) Unsafe.WriteUnaligned(o + 16 + 32 * s + 4 * r, Unsafe.ReadUnaligned<uint>(blk + 2 + 4 * s));
                }
            }
            return;
        }
        for (int b = 0; b < blocks; b++)
        {
            byte* o = group + (long)b * blockBytes;
            for (int r = 0; r < GroupRows; r++)
            {
                byte* x = rows + (long)r * rowBytes + b * fileBlock;
                ((ushort*)o)[r] = Unsafe.ReadUnaligned<ushort>(x);
                ((ushort*)(o + KDmin))[r] = Unsafe.ReadUnaligned<ushort>(x + 2);
                // The 12 packed bytes → 8 six-bit scales and 8 six-bit mins (get_scale_min_k4).
                KQuantMath.UnpackScaleMinK4(x + 4, out ulong scales, out ulong mins);
                for (int j = 0; j < 8; j++)
                {
                    o[KSc + 8 * j + r] = (byte)(scales >> (8 * j));
                    o[KMins + 16 * (j / 2) + 2 * r + (j & 1)] = (byte)(mins >> (8 * j));
                }
                for (int c = 0; c < 4; c++)
                    for (int s = 0; s < 8; s++)
                        Unsafe.WriteUnaligned(o + KCodes + 256 * c + 32 * s + 4 * r, Unsafe.ReadUnaligned<uint>(x + 16 + 32 * c + 4 * s));
            }
        }
    }

    /// <summary><see cref="PackGroup"/> for the paired-nibble copy of Q4_0 (<see cref="PairsNibbles"/>): 16 rows.</summary>
    private static void PackPairedQ40Group(byte* rows, int rowBytes, int fileBlock, int blocks, int blockBytes, byte* group)
    {
        byte* values = stackalloc byte[32];
        for (int b = 0; b < blocks; b++)
        {
            byte* o = group + (long)b * blockBytes;
            for (int r = 0; r < 2 * GroupRows; r++) ((ushort*)o)[r] = Unsafe.ReadUnaligned<ushort>(rows + (long)r * rowBytes + (long)b * fileBlock);
            for (int r = 0; r < GroupRows; r++)
            {
                // 16 code bytes a row: values 0–15 in the low nibbles, 16–31 in the high.
                byte* lo = rows + (long)r * rowBytes + (long)b * fileBlock + 2, hi = lo + (long)GroupRows * rowBytes;
                for (int i = 0; i < 16; i++)
                {
                    values[i] = (byte)((lo[i] & 0x0F) | (hi[i] << 4));
                    values[16 + i] = (byte)((lo[i] >> 4) | (hi[i] & 0xF0));
                }
                for (int s = 0; s < 8; s++) Unsafe.WriteUnaligned(o + Q40PairCodes + 32 * s + 4 * r, Unsafe.ReadUnaligned<uint>(values + 4 * s));
            }
        }
    }

    /// <summary>
    /// y[n(g − g0) + r] = row (ng + r) · x, n = <see cref="RowsPerGroup"/>, for the <paramref name="count"/> groups from
    /// <paramref name="g0"/> of a copy of <paramref name="groups"/> groups packed for <paramref name="isa"/>, x prepared
    /// by <see cref="QuantizedGemm.PrepareActivations"/> for the same format and instruction set: one sequential stream.
    /// </summary>
    public static void Multiply(GemmFormat f, GemmIsa isa, byte* copy, int groups, int g0, int count, int cols, byte* act, float* y)
    {
        if (!IsSupported(f) || isa == GemmIsa.Scalar || !QuantizedGemm.IsSupported(isa))
            throw new ArgumentException($"no interleaved {f} kernel for {isa}");
        if (g0 < 0 || count < 0 || g0 + count > groups) throw new ArgumentOutOfRangeException(nameof(count));
        int groupBytes = GroupBytes(f, isa, cols), blocks = cols / QuantizedGemm.BlockValues(f), blockBytes = StoredBlockBytes(f, isa);
        int stack = StackedGroups(f, isa, cols), baseRows = BaseRows(f, isa), rowsPerGroup = stack * baseRows;
        int segmentBlocks = SegmentBlocks(f, stack, blocks);
        bool vnni = isa == GemmIsa.AvxVnni;
        PrefetchHead(copy + (long)g0 * groupBytes, (long)count * groupBytes);
        for (int g = g0; g < g0 + count; g++)
        {
            byte* group = copy + (long)g * groupBytes;
            float* yg = y + rowsPerGroup * (g - g0);
            // Segment by segment, each kernel group of the stack in turn; later segments carry on from y.
            for (int b0 = 0; b0 < blocks; b0 += segmentBlocks)
            {
                int n = Math.Min(segmentBlocks, blocks - b0);
                bool carry = b0 > 0;
                for (int j = 0; j < stack; j++)
                {
                    byte* w = group + KernelGroupOffset(b0, n, j, stack, blockBytes);
                    float* yj = yg + baseRows * j;
                    switch (f)
                    {
                        case GemmFormat.Q4_0 when vnni: Q40Group(w, b0, n, cols, act, yj, carry); break;
                        case GemmFormat.Q4_0: Q40Pairs(w, b0, n, cols, act, yj, carry); break;
                        case GemmFormat.Q8_0 when vnni: Q80Group<QuantizedGemm.Q80Vnni>(w, b0, n, cols, act, yj, carry); break;
                        case GemmFormat.Q8_0: Q80Group<QuantizedGemm.Q80Avx2>(w, b0, n, cols, act, yj, carry); break;
                        case GemmFormat.Q4_K when vnni: Q4KGroup<QuantizedGemm.Q40Vnni>(w, b0, n, cols, act, yj, carry); break;
                        default: Q4KGroup<QuantizedGemm.Q40Avx2>(w, b0, n, cols, act, yj, carry); break;
                    }
                }
            }
        }
    }

    // The group kernels write the dots of a kernel group's rows (8, or 16 for the paired copy) over blocks
    // [first, first + blocks) into y; with carry they go on from the partial dots y holds (the earlier segments), adding
    // block after block as a whole row does, so the same bits.

    /// <summary>Q4_0 on the 8-row copy with VNNI: two vpdpbusd chains (low / high nibbles) a block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q40Group(byte* w, int first, int blocks, int cols, byte* act, float* y, bool carry)
    {
        float* da = (float*)(act + cols) + first;
        int* corr = (int*)(act + cols + 4 * (cols / 32)) + first;
        var low = Vector256.Create((byte)0x0F);
        var highMatrix = HighNibbleMatrix;
        var acc = carry ? Vector256.Load(y) : default;
        byte* a = act + 32 * first;
        for (nint b = 0; b < blocks; b++, w += Q40Block, a += 32)
        {
            // Every 64-byte line of the block ahead (prefetch gaps ≤ 64 bytes).
            byte* ahead = w + PrefetchBytes;
            PrefetchStream(ahead);
            PrefetchStream(ahead + 64);
            PrefetchStream(ahead + 128);
            var v0 = Vector256.Load(w + Q40Codes);
            var v1 = Vector256.Load(w + Q40Codes + 32);
            var v2 = Vector256.Load(w + Q40Codes + 64);
            var v3 = Vector256.Load(w + Q40Codes + 96);
            // −8·Σa makes the unsigned codes stand for q − 8.
            var i0 = Vector256.Create(corr[b]);
            var i1 = QuantizedGemm.Step<QuantizedGemm.Q40Vnni>(Vector256<int>.Zero, High(v0, low, highMatrix), default, QuantizedGemm.Bcast(a + 16));
            i0 = QuantizedGemm.Step<QuantizedGemm.Q40Vnni>(i0, v0 & low, default, QuantizedGemm.Bcast(a));
            i1 = QuantizedGemm.Step<QuantizedGemm.Q40Vnni>(i1, High(v1, low, highMatrix), default, QuantizedGemm.Bcast(a + 20));
            i0 = QuantizedGemm.Step<QuantizedGemm.Q40Vnni>(i0, v1 & low, default, QuantizedGemm.Bcast(a + 4));
            i1 = QuantizedGemm.Step<QuantizedGemm.Q40Vnni>(i1, High(v2, low, highMatrix), default, QuantizedGemm.Bcast(a + 24));
            i0 = QuantizedGemm.Step<QuantizedGemm.Q40Vnni>(i0, v2 & low, default, QuantizedGemm.Bcast(a + 8));
            i1 = QuantizedGemm.Step<QuantizedGemm.Q40Vnni>(i1, High(v3, low, highMatrix), default, QuantizedGemm.Bcast(a + 28));
            i0 = QuantizedGemm.Step<QuantizedGemm.Q40Vnni>(i0, v3 & low, default, QuantizedGemm.Bcast(a + 12));
            acc = Fold(acc, (short*)w, da[b], Avx2.Add(i0, i1));
        }
        acc.Store(y);
    }

    /// <summary>
    /// acc + d_w·d_a·(float)isum for 8 rows, the reference's <c>sum += d_w·d_a·sumi</c> (d_w: the 8 rows' fp16 scales
    /// at <paramref name="dw"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Fold(Vector256<float> acc, short* dw, float da, Vector256<int> isum)
        => Avx.Add(acc, Avx.Multiply(Avx.Multiply(MatKernels.HalfToSingleAvx2(dw), Vector256.Create(da)), Avx.ConvertToVector256Single(isum)));

    /// <summary>
    /// Q4_0 on the paired copy (<see cref="PairsNibbles"/>), without VNNI: per block rows 0–7 and 8–15 each get their
    /// int16 pair sums from <see cref="PairSums"/> (one activation broadcast per two pmaddubsw), widened by one pmaddwd.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q40Pairs(byte* w, int first, int blocks, int cols, byte* act, float* y, bool carry)
    {
        float* da = (float*)(act + cols) + first;
        int* corr = (int*)(act + cols + 4 * (cols / 32)) + first;
        var low = Vector256.Create((byte)0x0F);
        var highMatrix = HighNibbleMatrix;
        var ones = Vector256.Create((short)1);
        var acc0 = carry ? Vector256.Load(y) : default;
        var acc1 = carry ? Vector256.Load(y + GroupRows) : default;
        byte* a = act + 32 * first;
        for (nint b = 0; b < blocks; b++, w += Q40PairBlock, a += 32)
        {
            // Every 64-byte line of the 288-byte block ahead.
            byte* ahead = w + PrefetchBytes;
            PrefetchStream(ahead);
            PrefetchStream(ahead + 64);
            PrefetchStream(ahead + 128);
            PrefetchStream(ahead + 192);
            PrefetchStream(ahead + 256);
            PairSums(w + Q40PairCodes, a, low, highMatrix, out var rows0, out var rows8);
            // −8·Σa makes the unsigned codes stand for q − 8.
            var c = Vector256.Create(corr[b]);
            acc0 = Fold(acc0, (short*)w, da[b], Avx2.Add(Avx2.MultiplyAddAdjacent(rows0, ones), c));
            acc1 = Fold(acc1, (short*)w + GroupRows, da[b], Avx2.Add(Avx2.MultiplyAddAdjacent(rows8, ones), c));
        }
        acc0.Store(y);
        acc1.Store(y + GroupRows);
    }

    /// <summary>
    /// One paired Q4_0 block: 32 columns of 16 rows, 8 slices of 32 code bytes, against the 32
    /// activations at <paramref name="a"/>. Each slice's broadcast activation bytes meet its low nibbles (rows 0–7)
    /// and its high nibbles (rows 8–15); the pmaddubsw pair sums add up in int16, two chains a half (per lane at most
    /// 8 · 2 · 15 · 128 = 30720 &lt; 2^15), into <paramref name="rows0"/> and <paramref name="rows8"/>: per row two
    /// int16 lanes whose sum is the row's 32-value dot.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PairSums(byte* codes, byte* a, Vector256<byte> low, Vector256<byte> highMatrix, out Vector256<short> rows0, out Vector256<short> rows8)
    {
        ActivationHalves(a, out var lo, out var hi);
        Vector256<short> l0 = default, l1 = default, h0 = default, h1 = default;
        PairSlices(codes, 0, Avx2.Shuffle(lo, 0x00), Avx2.Shuffle(lo, 0x55), low, highMatrix, ref l0, ref l1, ref h0, ref h1);
        PairSlices(codes, 2, Avx2.Shuffle(lo, 0xAA), Avx2.Shuffle(lo, 0xFF), low, highMatrix, ref l0, ref l1, ref h0, ref h1);
        PairSlices(codes, 4, Avx2.Shuffle(hi, 0x00), Avx2.Shuffle(hi, 0x55), low, highMatrix, ref l0, ref l1, ref h0, ref h1);
        PairSlices(codes, 6, Avx2.Shuffle(hi, 0xAA), Avx2.Shuffle(hi, 0xFF), low, highMatrix, ref l0, ref l1, ref h0, ref h1);
        rows0 = Avx2.Add(l0, l1);
        rows8 = Avx2.Add(h0, h1);
    }

    /// <summary>
    /// The block's 32 activation bytes at <paramref name="a"/>: bytes 0–15 in both 128-bit lanes of <paramref name="lo"/>,
    /// bytes 16–31 in both of <paramref name="hi"/>; one vpshufd of either then gives a 4-byte slice broadcast the kernels
    /// multiply by. One 32-byte load and shuffles instead of a broadcast load per slice: a decode step moves its weights
    /// through the same load ports, and the eight 4-byte loads a block cost more than their shuffles. Decode of the
    /// synthetic 1B model on the Zen 4 VM (stop 22, one process alternating the two every 4 tokens, each cycle bucketed
    /// by a plain read of the weights after it): Q4_0 +2.9 % with reads near 59 GB/s, +3.3 % near 51, +1.0 % near 34;
    /// Q8_0 +2.1 % near 61, +0.5 % near 34 (−3 % near 53, over 5 cycles only). Q4_K was level (+0.7, −0.7, +0.2 %) and
    /// keeps its broadcast loads. Same values in the same lanes, so the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ActivationHalves(byte* a, out Vector256<int> lo, out Vector256<int> hi)
    {
        var v = Vector256.Load((int*)a);
        lo = Avx2.Permute2x128(v, v, 0x00);
        hi = Avx2.Permute2x128(v, v, 0x11);
    }

    /// <summary>Slices <paramref name="s"/> and s + 1 of <see cref="PairSums"/> (a constant s, folded into the addresses), with their broadcast activations.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PairSlices(byte* codes, int s, Vector256<int> a0, Vector256<int> a1, Vector256<byte> low, Vector256<byte> highMatrix,
        ref Vector256<short> l0, ref Vector256<short> l1, ref Vector256<short> h0, ref Vector256<short> h1)
    {
        var v0 = Vector256.Load(codes + 32 * s);
        var v1 = Vector256.Load(codes + 32 * s + 32);
        l0 = Avx2.Add(l0, Avx2.MultiplyAddAdjacent(v0 & low, a0.AsSByte()));
        h0 = Avx2.Add(h0, Avx2.MultiplyAddAdjacent(High(v0, low, highMatrix), a0.AsSByte()));
        l1 = Avx2.Add(l1, Avx2.MultiplyAddAdjacent(v1 & low, a1.AsSByte()));
        h1 = Avx2.Add(h1, Avx2.MultiplyAddAdjacent(High(v1, low, highMatrix), a1.AsSByte()));
    }

    /// <summary>
    /// Q8_0: signed codes. VNNI multiplies the activation biased by +128 (unsigned, as prepared) with the
    /// codes and subtracts 128·Σw, itself one vpdpbusd of 0x80 bytes with the codes; AVX2 uses |w| ⊗ sign(a, w).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q80Group<V>(byte* w, int first, int blocks, int cols, byte* act, float* y, bool carry) where V : struct, QuantizedGemm.IVariant
    {
        float* da = (float*)(act + cols) + first;
        var bias = Vector256.Create((byte)0x80);
        var acc = carry ? Vector256.Load(y) : default;
        byte* a = act + 32 * first;
        for (nint b = 0; b < blocks; b++, w += Q80Block, a += 32)
        {
            // One line ahead per 272-byte block, not every line: prefetching all five lines of the block ahead
            // decoded the 1B Q8_0 model at the same speed (0.9995 and 0.9973, stop 16, one process alternating).
            PrefetchStream(w + PrefetchBytes);
            // The eight slices written out (the JIT keeps a loop over them, at ~9 scalar instructions a pair).
            Vector256<int> i0 = default, i1 = default, c0 = default, c1 = default;
            // The slices' activation broadcasts from one load and shuffles (see ActivationHalves).
            ActivationHalves(a, out var lo, out var hi);
            Q80Slices<V>(w, 0, Avx2.Shuffle(lo, 0x00), Avx2.Shuffle(lo, 0x55), bias, ref i0, ref i1, ref c0, ref c1);
            Q80Slices<V>(w, 2, Avx2.Shuffle(lo, 0xAA), Avx2.Shuffle(lo, 0xFF), bias, ref i0, ref i1, ref c0, ref c1);
            Q80Slices<V>(w, 4, Avx2.Shuffle(hi, 0x00), Avx2.Shuffle(hi, 0x55), bias, ref i0, ref i1, ref c0, ref c1);
            Q80Slices<V>(w, 6, Avx2.Shuffle(hi, 0xAA), Avx2.Shuffle(hi, 0xFF), bias, ref i0, ref i1, ref c0, ref c1);
            var isum = Avx2.Add(i0, i1);
            if (V.Vnni) isum = Avx2.Subtract(isum, Avx2.Add(c0, c1));
            acc = Fold(acc, (short*)w, da[b], isum);
        }
        acc.Store(y);
    }

    /// <summary>
    /// Slices <paramref name="s"/> and s + 1 of the Q8_0 block at <paramref name="w"/> (their activations broadcast in
    /// <paramref name="a0"/>, <paramref name="a1"/>).
    /// VNNI multiplies the activation biased by +128 (unsigned, as prepared) with the codes and counts 128·Σw in
    /// <paramref name="c0"/>/<paramref name="c1"/> (one vpdpbusd of <paramref name="bias"/>, 0x80 bytes, with the codes)
    /// to subtract; AVX2 uses |w| ⊗ sign(a, w). The caller passes a constant s and builds the bias once: with the
    /// bias made here, the JIT rebuilt it every block.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q80Slices<V>(byte* w, int s, Vector256<int> a0, Vector256<int> a1, Vector256<byte> bias,
        ref Vector256<int> i0, ref Vector256<int> i1, ref Vector256<int> c0, ref Vector256<int> c1) where V : struct, QuantizedGemm.IVariant
    {
        PrefetchStream(w + PrefetchBytes + Q80Codes + 32 * s);
        var v0 = Vector256.Load(w + Q80Codes + 32 * s);
        var v1 = Vector256.Load(w + Q80Codes + 32 * s + 32);
        if (V.Vnni)
        {
            i0 = QuantizedGemm.Step<V>(i0, v0, default, a0);
            i1 = QuantizedGemm.Step<V>(i1, v1, default, a1);
            c0 = AvxVnni.MultiplyWideningAndAdd(c0, bias, v0.AsSByte());
            c1 = AvxVnni.MultiplyWideningAndAdd(c1, bias, v1.AsSByte());
        }
        else
        {
            i0 = QuantizedGemm.Step<V>(i0, v0, Avx2.Abs(v0.AsSByte()), a0);
            i1 = QuantizedGemm.Step<V>(i1, v1, Avx2.Abs(v1.AsSByte()), a1);
        }
    }

    /// <summary>
    /// Q4_K on the 8-row copy, 256-bit registers. On the Zen 4 VM one thread ran it at ~38 GB/s from L2, ~115 cycles a
    /// 1184-byte block at 3.66 GHz, where its 112 pmaddubsw / GFNI / pmaddwd / pmulld (two a cycle) allow ~56: a copy of
    /// its inner loop alone, loads from L1, took 95–118 cycles, so it is bound near three instructions a cycle, not by
    /// the multiply pipes. Stop 25 tried the same multiplies in half the instructions: 512-bit registers on the same
    /// 1184-byte blocks (codes stored [c][s:4][row:8][8 bytes], one qword broadcast of the activation per 64 bytes, the
    /// scales met in the pmaddwd that widens, a row's two dwords added once a block; same bits). Its inner loop alone ran
    /// ~65 cycles and the kernel 1.13–1.16x faster from L2, but the synthetic 1B model decoded slower with it: 63.9 and
    /// 64.7 % of the read near 60 GB/s against 73.3 and 74.0 % with this kernel, 87.4–90.1 against 93.5–93.6
    /// near 34 (one process alternating the two every 4 tokens; prefetching 8 KB ahead for it changed nothing). Half of
    /// its 64-byte loads straddled two lines (1184 = 18.5 lines a block); padded to 1216-byte blocks, every load aligned,
    /// it decoded at 69.2 against 73.0 t/s near 60 GB/s (−5 %, 2.7 % of it the padding, against −12 % unaligned), so
    /// still slower, as stop 24's 16-row 512-bit kernel was (its 2368-byte blocks are whole lines).
    /// Prefetching every other line (10 prefetches a block, not 19) was level: 71.5 against 71.9 % near 60. So was a
    /// 256-bit layout with half the activation broadcasts (each 64 bytes holding 8 bytes of rows 0, 1, 4, 5, 2, 3, 6, 7,
    /// one qword broadcast per nibble half, vphaddw + pmaddwd per group; same bits): 4–5 % faster in cache, 71.3
    /// against 71.0 % near 60 and 92.6 against 92.5 near 34.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q4KGroup<V>(byte* w, int first, int blocks, int cols, byte* act, float* y, bool carry) where V : struct, QuantizedGemm.IVariant
    {
        float* yd = (float*)(act + cols) + first;
        int* pairs = (int*)(act + cols + 4 * (cols / 256)) + 4 * first;
        var low = Vector256.Create((byte)0x0F);
        var highMatrix = HighNibbleMatrix;
        var ones = Vector256.Create((short)1);
        var acc = carry ? Vector256.Load(y) : default;
        byte* a = act + 256 * first;
        for (nint b = 0; b < blocks; b++, w += KBlock, a += 256, pairs += 4)
        {
            byte* ahead = w + PrefetchBytes;
            PrefetchStream(ahead);
            PrefetchStream(ahead + 64);
            PrefetchStream(ahead + 128);
            Vector256<int> sumi = default;
            byte* codes = w + KCodes;
            byte* ac = a;
            for (int c = 0; c < 4; c++, codes += 256, ac += 64)
            {
                byte* codesAhead = codes + PrefetchBytes;
                PrefetchStream(codesAhead);
                PrefetchStream(codesAhead + 64);
                PrefetchStream(codesAhead + 128);
                PrefetchStream(codesAhead + 192);
                // Group 2c (low nibbles) and 2c + 1 (high nibbles), two chains each; the four slice pairs written out
                // (the JIT keeps a loop over them, at ~8 scalar instructions a pair).
                Vector256<int> gA, gB;
                if (V.Vnni)
                {
                    Vector256<int> a0 = default, a1 = default, b0 = default, b1 = default;
                    Q4KSlices<V>(codes, ac, 0, low, highMatrix, ref a0, ref a1, ref b0, ref b1);
                    Q4KSlices<V>(codes, ac, 2, low, highMatrix, ref a0, ref a1, ref b0, ref b1);
                    Q4KSlices<V>(codes, ac, 4, low, highMatrix, ref a0, ref a1, ref b0, ref b1);
                    Q4KSlices<V>(codes, ac, 6, low, highMatrix, ref a0, ref a1, ref b0, ref b1);
                    gA = Avx2.Add(a0, a1);
                    gB = Avx2.Add(b0, b1);
                }
                else
                {
                    // Without VNNI a group's pair sums add up in int16 (8 steps · 2 · 15 · 128 = 30720 < 2^15), so a
                    // group takes one pmaddwd instead of one per step.
                    Vector256<short> p0 = default, p1 = default, q0 = default, q1 = default;
                    Q4KSlices16(codes, ac, 0, low, highMatrix, ref p0, ref p1, ref q0, ref q1);
                    Q4KSlices16(codes, ac, 2, low, highMatrix, ref p0, ref p1, ref q0, ref q1);
                    Q4KSlices16(codes, ac, 4, low, highMatrix, ref p0, ref p1, ref q0, ref q1);
                    Q4KSlices16(codes, ac, 6, low, highMatrix, ref p0, ref p1, ref q0, ref q1);
                    gA = Avx2.MultiplyAddAdjacent(Avx2.Add(p0, p1), ones);
                    gB = Avx2.MultiplyAddAdjacent(Avx2.Add(q0, q1), ones);
                }
                // Σ_g sc_g·(group dot), exact in int32 (≤ 8·63·32·15·128 < 2^31).
                var scA = Avx2.ConvertToVector256Int32(w + KSc + 16 * c);
                var scB = Avx2.ConvertToVector256Int32(w + KSc + 16 * c + 8);
                sumi = Avx2.Add(sumi, Avx2.Add(Avx2.MultiplyLow(gA, scA), Avx2.MultiplyLow(gB, scB)));
            }
            // Σ_g m_g·(32-value activation sum) from (m_2k, m_2k+1) × (bsum_2k, bsum_2k+1) int16 pairs.
            Vector256<int> summ = default;
            summ = MinsStep<V>(summ, w + KMins, pairs[0]);
            summ = MinsStep<V>(summ, w + KMins + 16, pairs[1]);
            summ = MinsStep<V>(summ, w + KMins + 32, pairs[2]);
            summ = MinsStep<V>(summ, w + KMins + 48, pairs[3]);
            var d = MatKernels.HalfToSingleAvx2((short*)w);
            var dmin = MatKernels.HalfToSingleAvx2((short*)(w + KDmin));
            var ydv = Vector256.Create(yd[b]);
            // The reference's sum += d·yd·sumi − dmin·yd·summ, eight rows at once.
            acc = Avx.Add(acc, Avx.Subtract(Avx.Multiply(Avx.Multiply(d, ydv), Avx.ConvertToVector256Single(sumi)),
                                            Avx.Multiply(Avx.Multiply(dmin, ydv), Avx.ConvertToVector256Single(summ))));
        }
        acc.Store(y);
    }

    /// <summary>
    /// Slices <paramref name="s"/> and s + 1 of a Q4_K code chunk (low nibbles into a0/a1, high nibbles into b0/b1); the
    /// caller passes a constant s, which the JIT folds into the addresses (pointers passed in cost an lea each).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q4KSlices<V>(byte* codes, byte* ac, int s, Vector256<byte> low, Vector256<byte> highMatrix,
        ref Vector256<int> a0, ref Vector256<int> a1, ref Vector256<int> b0, ref Vector256<int> b1) where V : struct, QuantizedGemm.IVariant
    {
        var v0 = Vector256.Load(codes + 32 * s);
        var v1 = Vector256.Load(codes + 32 * s + 32);
        a0 = QuantizedGemm.Step<V>(a0, v0 & low, default, QuantizedGemm.Bcast(ac + 4 * s));
        b0 = QuantizedGemm.Step<V>(b0, High(v0, low, highMatrix), default, QuantizedGemm.Bcast(ac + 32 + 4 * s));
        a1 = QuantizedGemm.Step<V>(a1, v1 & low, default, QuantizedGemm.Bcast(ac + 4 * s + 4));
        b1 = QuantizedGemm.Step<V>(b1, High(v1, low, highMatrix), default, QuantizedGemm.Bcast(ac + 36 + 4 * s));
    }

    /// <summary>
    /// <see cref="Q4KSlices{V}"/> without VNNI: the pmaddubsw pair sums are added in int16, each chain reduced by the
    /// caller with one pmaddwd.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q4KSlices16(byte* codes, byte* ac, int s, Vector256<byte> low, Vector256<byte> highMatrix,
        ref Vector256<short> a0, ref Vector256<short> a1, ref Vector256<short> b0, ref Vector256<short> b1)
    {
        var v0 = Vector256.Load(codes + 32 * s);
        var v1 = Vector256.Load(codes + 32 * s + 32);
        a0 = Avx2.Add(a0, Avx2.MultiplyAddAdjacent(v0 & low, QuantizedGemm.Bcast(ac + 4 * s).AsSByte()));
        b0 = Avx2.Add(b0, Avx2.MultiplyAddAdjacent(High(v0, low, highMatrix), QuantizedGemm.Bcast(ac + 32 + 4 * s).AsSByte()));
        a1 = Avx2.Add(a1, Avx2.MultiplyAddAdjacent(v1 & low, QuantizedGemm.Bcast(ac + 4 * s + 4).AsSByte()));
        b1 = Avx2.Add(b1, Avx2.MultiplyAddAdjacent(High(v1, low, highMatrix), QuantizedGemm.Bcast(ac + 36 + 4 * s).AsSByte()));
    }

    /// <summary>summ + the 8 rows' (m_2k, m_2k+1) int16 pairs at <paramref name="mins"/> dotted with one activation pair.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> MinsStep<V>(Vector256<int> summ, byte* mins, int pair) where V : struct, QuantizedGemm.IVariant
    {
        var m = Avx2.ConvertToVector256Int16(mins);
        var p = Vector256.Create(pair).AsInt16();
        return V.Vnni ? AvxVnni.MultiplyWideningAndAdd(summ, m, p) : Avx2.Add(summ, Avx2.MultiplyAddAdjacent(m, p));
    }

    // ---- F16 (float activations) ----

    /// <summary>Bytes of one interleaved F16 group: [k-slice: cols/8][row:8][8 halves].</summary>
    public static int F16GroupBytes(int cols) => cols * GroupRows * 2;

    /// <summary>Whether an F16 matrix with rows of <paramref name="cols"/> values can be interleaved on this CPU.</summary>
    public static bool F16Supported(int cols) => cols % 8 == 0 && Avx2.IsSupported && Fma.IsSupported && BitConverter.IsLittleEndian;

    /// <summary>Packs 8 consecutive F16 rows (<paramref name="rowBytes"/> apart) into one group.</summary>
    public static void PackF16Group(byte* rows, int rowBytes, int cols, byte* dst)
    {
        for (int k = 0; k < cols / 8; k++)
            for (int r = 0; r < GroupRows; r++)
                Unsafe.CopyBlockUnaligned(dst + 128L * k + 16 * r, rows + (long)r * rowBytes + 16L * k, 16);
    }

    /// <summary>
    /// y[8g + r] = row (8g + r) · x for F16 rows holding no infinity or NaN, each with exactly the
    /// arithmetic of <see cref="MatKernels.DotF16x4Finite"/> (one 8-lane FMA chain over the row, then the
    /// fixed horizontal sum), so bit-identical to it. With <paramref name="xScaled"/> x holds the activations
    /// times 2^112 (<see cref="ScaleForF16"/>): the weights then enter the FMA as their bits moved into a float
    /// (the value times 2^−112) without the multiply that completes the conversion; both products are w·x
    /// exactly, so the sums are the same bits, for a fifth fewer operations per weight. On AVX-512 the kernel holds
    /// two rows per zmm (<see cref="F16GroupWide"/>, same layout and bits): half the instructions per weight. An
    /// earlier try of it (stop 13) was 22 % faster in cache but not from DRAM (−5.2 to +3.7 % over six model runs);
    /// at stop 16, without the prefetch ahead, the synthetic 1B F16 model decoded 4.4, 4.3, 2.9, 3.0 and 3.5 % faster
    /// with it (five runs of 60 s, one process alternating the two kernels every 4 tokens, at 13–20 t/s).
    /// </summary>
    public static void MultiplyF16(byte* groups, int groupCount, int cols, float* x, float* y, bool xScaled = false)
        => MultiplyF16(groups, groupCount, cols, x, y, xScaled, WideF16Supported);

    /// <summary>Whether this CPU runs the 512-bit F16 kernel (<see cref="F16GroupWide"/>).</summary>
    internal static bool WideF16Supported => Avx512F.IsSupported && Avx512DQ.IsSupported;

    /// <summary><see cref="MultiplyF16(byte*, int, int, float*, float*, bool)"/> with the kernel width chosen (tests pin both).</summary>
    internal static void MultiplyF16(byte* groups, int groupCount, int cols, float* x, float* y, bool xScaled, bool wide)
    {
        if (!F16Supported(cols)) throw new ArgumentException($"no interleaved F16 kernel for rows of {cols} values");
        if (wide && !WideF16Supported) throw new ArgumentException("no 512-bit F16 kernel on this CPU");
        PrefetchHead(groups, (long)groupCount * F16GroupBytes(cols));
        for (int g = 0; g < groupCount; g++)
        {
            short* w = (short*)(groups + (long)g * F16GroupBytes(cols));
            if (wide)
            {
                if (xScaled) F16GroupWide<ScaledHalves>(w, cols, x, y + GroupRows * g);
                else F16GroupWide<ExactHalves>(w, cols, x, y + GroupRows * g);
            }
            else if (xScaled) F16Group<ScaledHalves>(w, cols, x, y + GroupRows * g);
            else F16Group<ExactHalves>(w, cols, x, y + GroupRows * g);
        }
    }

    /// <summary>
    /// dst = x · 2^112 when every |x| &lt; 2^16, so that the product is exact (no overflow) and
    /// <see cref="MultiplyF16"/> can take the scaled activations; false (dst unused) otherwise.
    /// </summary>
    public static bool ScaleForF16(ReadOnlySpan<float> x, Span<float> dst)
    {
        if (x.IsEmpty) return false;
        float max = System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(x);
        if (!(MathF.Abs(max) < 65536f)) return false; // NaN fails too
        System.Numerics.Tensors.TensorPrimitives.Multiply(x, KQuantMath.TwoPow112, dst);
        return true;
    }

    private interface IHalfEntry
    {
        static abstract Vector256<float> Load(short* p);
        static abstract Vector512<float> LoadPair(short* p);
    }

    /// <summary>8 finite halves as floats.</summary>
    private readonly struct ExactHalves : IHalfEntry
    {
        public static Vector256<float> Load(short* p) => MatKernels.HalfToSingleAvx2(p);
        public static Vector512<float> LoadPair(short* p) => MatKernels.HalfToSingleAvx512(p);
    }

    /// <summary>8 finite halves as floats times 2^−112 (exact, subnormal for small halves).</summary>
    private readonly struct ScaledHalves : IHalfEntry
    {
        public static Vector256<float> Load(short* p) => MatKernels.HalfBitsAsSingleAvx2(p);
        public static Vector512<float> LoadPair(short* p) => MatKernels.HalfBitsAsSingleAvx512(p);
    }

    /// <summary>
    /// <see cref="F16Group{H}"/> with rows 2i and 2i + 1 in the two halves of one zmm: each half is that row's
    /// 8-lane FMA chain, so the sums are the same bits. No software prefetch ahead either: checked again with this
    /// kernel at stop 16, prefetching every line 6 KB ahead decoded the 1B F16 model 9.3 and 5.5 % slower (two 60 s
    /// runs, one process alternating every 4 tokens).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void F16GroupWide<H>(short* w, int cols, float* x, float* y) where H : struct, IHalfEntry
    {
        Vector512<float> a01 = default, a23 = default, a45 = default, a67 = default;
        for (int k = 0; k < cols; k += 8, w += 64)
        {
            var u = Avx512DQ.BroadcastVector256ToVector512(x + k);
            a01 = Avx512F.FusedMultiplyAdd(H.LoadPair(w), u, a01);
            a23 = Avx512F.FusedMultiplyAdd(H.LoadPair(w + 16), u, a23);
            a45 = Avx512F.FusedMultiplyAdd(H.LoadPair(w + 32), u, a45);
            a67 = Avx512F.FusedMultiplyAdd(H.LoadPair(w + 48), u, a67);
        }
        FloatSums.HSum4(a01.GetLower(), a01.GetUpper(), a23.GetLower(), a23.GetUpper()).Store(y);
        FloatSums.HSum4(a45.GetLower(), a45.GetUpper(), a67.GetLower(), a67.GetUpper()).Store(y + 4);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void F16Group<H>(short* w, int cols, float* x, float* y) where H : struct, IHalfEntry
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        // No software prefetch ahead here (only each run's head, in MultiplyF16): see PrefetchBytes.
        for (int k = 0; k < cols; k += 8, w += 64)
        {
            var u = Avx.LoadVector256(x + k);
            a0 = Fma.MultiplyAdd(H.Load(w), u, a0);
            a1 = Fma.MultiplyAdd(H.Load(w + 8), u, a1);
            a2 = Fma.MultiplyAdd(H.Load(w + 16), u, a2);
            a3 = Fma.MultiplyAdd(H.Load(w + 24), u, a3);
            a4 = Fma.MultiplyAdd(H.Load(w + 32), u, a4);
            a5 = Fma.MultiplyAdd(H.Load(w + 40), u, a5);
            a6 = Fma.MultiplyAdd(H.Load(w + 48), u, a6);
            a7 = Fma.MultiplyAdd(H.Load(w + 56), u, a7);
        }
        FloatSums.HSum4(a0, a1, a2, a3).Store(y);
        FloatSums.HSum4(a4, a5, a6, a7).Store(y + 4);
    }
}
