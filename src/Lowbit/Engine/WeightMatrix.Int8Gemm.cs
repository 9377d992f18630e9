using System.Buffers;

namespace Lowbit.Engine;

internal sealed unsafe partial class WeightMatrix
{
    /// <summary>
    /// One activation vector quantized (VecDotCodec) into [0, xqRow) of a rented buffer, then prepared for the
    /// integer kernels after it (<see cref="QuantizedGemm.PrepareActivations"/>). Return the buffer to ArrayPool.
    /// </summary>
    private byte[] QuantizeForDecode(GemmFormat format, GemmIsa isa, float[] x, int xOffset, out int xqRow)
    {
        xqRow = QuantizedGemm.QuantizedRowBytes(format, Cols);
        int actStride = QuantizedGemm.ActivationStride(format, isa, Cols);
        byte[] xq = ArrayPool<byte>.Shared.Rent(xqRow + actStride);
        Codec.VecDotCodec!.QuantizeRows(x.AsSpan(xOffset, Cols), xq.AsSpan(0, xqRow), Cols, default);
        QuantizedGemm.PrepareActivations(format, isa, xq.AsSpan(0, xqRow), Cols, xq.AsSpan(xqRow, actStride));
        return xq;
    }

    /// <summary>Decode from the file's row layout (no interleaved copy): the same per-row result as prefill.</summary>
    private void MatVecInt8(GemmFormat format, float[] x, int xOffset, float[] y, int yOffset, ParallelRunner par)
    {
        GemmIsa isa = QuantizedGemm.BestIsa;
        byte[] xq = QuantizeForDecode(format, isa, x, xOffset, out int xqRow);
        try
        {
            int chunkRows = par.ChunkSize(Rows, (long)Rows * Cols, 16) & ~7;
            if (chunkRows == 0) chunkRows = 8;
            int chunks = (Rows + chunkRows - 1) / chunkRows;
            par.For(chunks, (long)Rows * Cols < MatVecSerialThreshold, c =>
            {
                int r0 = c * chunkRows;
                DecodeRows(format, isa, r0, Math.Min(chunkRows, Rows - r0), xq, xqRow, y, yOffset);
            });
        }
        finally { ArrayPool<byte>.Shared.Return(xq); }
    }

    /// <summary>
    /// Rows [r0, r0 + count) from the file's layout with the canonical per-row arithmetic: Q4_0/Q8_0 through the
    /// GEMM's one-token kernel, Q4_K through the codec's (bit-identical) multi-row dot on the raw Q8_K row.
    /// </summary>
    private void DecodeRows(GemmFormat format, GemmIsa isa, int r0, int count, byte[] xq, int xqRow, float[] y, int yOffset)
    {
        fixed (byte* pw = Data.Span) fixed (byte* pq = xq) fixed (float* py = y)
        {
            if (format == GemmFormat.Q4_K)
                Codec.DotRowsQuantized(new ReadOnlySpan<byte>(pw + r0 * _rowBytes, count * (int)_rowBytes), count,
                    new ReadOnlySpan<byte>(pq, xqRow), new Span<float>(py + yOffset + r0, count));
            else
                QuantizedGemm.MultiplyRowsOneToken(format, isa, pw + r0 * _rowBytes, (int)_rowBytes, count, Cols, pq + xqRow,
                    new ReadOnlySpan<byte>(pq, xqRow), py + yOffset + r0);
        }
    }

    /// <summary>Decode through the interleaved copy (<see cref="InterleavedRows"/>); the last Rows mod 8 rows through the row kernels.</summary>
    private void MatVecInterleaved(GemmFormat format, float[] x, int xOffset, float[] y, int yOffset, ParallelRunner par)
    {
        GemmIsa isa = QuantizedGemm.BestIsa;
        byte[] xq = QuantizeForDecode(format, isa, x, xOffset, out int xqRow);
        try
        {
            int items = InterleavedItems(par, out int perChunk);
            par.For(items, (long)Rows * Cols < MatVecSerialThreshold, c => InterleavedItem(format, isa, c, perChunk, xq, xqRow, y, yOffset));
        }
        finally { ArrayPool<byte>.Shared.Return(xq); }
    }

    /// <summary>
    /// Decode products of matrices that read the same activation (q/k/v, gate/up): when all have interleaved
    /// copies of one format and width, the activation is quantized once and all rows run as one parallel step
    /// (fewer, fuller steps: k and v alone are too small to keep two threads busy). Otherwise one MatVec each.
    /// The per-row arithmetic is MatVec's, so the results are the same bits.
    /// </summary>
    public static void MatVecShared(WeightMatrix[] matrices, float[][] outputs, float[] x, int xOffset, ParallelRunner par)
    {
        var first = matrices[0];
        bool fused = first._interleaved is not null && first._int8Gemm is not null;
        foreach (var m in matrices)
            fused &= m._interleaved is not null && m._int8Gemm == first._int8Gemm && m.Cols == first.Cols;
        if (!fused)
        {
            for (int i = 0; i < matrices.Length; i++) matrices[i].MatVec(x, xOffset, outputs[i], 0, par);
            return;
        }
        GemmFormat format = first._int8Gemm!.Value;
        GemmIsa isa = QuantizedGemm.BestIsa;
        byte[] xq = first.QuantizeForDecode(format, isa, x, xOffset, out int xqRow);
        try
        {
            var starts = new int[matrices.Length + 1];
            var perChunk = new int[matrices.Length];
            long work = 0;
            for (int i = 0; i < matrices.Length; i++)
            {
                starts[i + 1] = starts[i] + matrices[i].InterleavedItems(par, out perChunk[i]);
                work += (long)matrices[i].Rows * matrices[i].Cols;
            }
            par.For(starts[^1], work < MatVecSerialThreshold, item =>
            {
                int i = 0;
                while (item >= starts[i + 1]) i++;
                matrices[i].InterleavedItem(format, isa, item - starts[i], perChunk[i], xq, xqRow, outputs[i], 0);
            });
        }
        finally { ArrayPool<byte>.Shared.Return(xq); }
    }

    private const int MinItemBytes = 1 << 20;

    /// <summary>
    /// Groups of 8 rows per decode work item over an interleaved copy (<paramref name="groupBytes"/> a group):
    /// about 1 MiB of weights each, since every item is a fresh sequential stream the hardware prefetcher has to
    /// ramp up on (q/k/v at eight 37–147 KB items per thread ran 20–25 % slower), in a multiple of the thread
    /// count of near-equal items, so that no thread is left alone with a last item (ffn_down of the 1B model
    /// was cut into 9 items for 2 threads, attn_output into 111 + 111 + 34 groups).
    /// </summary>
    private int InterleavedGroupsPerItem(ParallelRunner par, int groupBytes)
    {
        int groups = Rows / InterleavedRows.GroupRows;
        if (groups <= 1) return 1;
        long items = Math.Max(1, ((long)groups * groupBytes + MinItemBytes - 1) / MinItemBytes);
        items = Math.Min(groups, (items + par.Threads - 1) / par.Threads * par.Threads);
        return (int)((groups + items - 1) / items);
    }

    /// <summary>Work items of an interleaved decode: chunks of whole groups, then one item for the Rows mod 8 tail rows.</summary>
    private int InterleavedItems(ParallelRunner par, out int perChunk)
    {
        int groups = Rows / InterleavedRows.GroupRows;
        perChunk = InterleavedGroupsPerItem(par, InterleavedRows.GroupBytes(_int8Gemm!.Value, Cols));
        return (groups + perChunk - 1) / perChunk + (Rows % InterleavedRows.GroupRows > 0 ? 1 : 0);
    }

    private void InterleavedItem(GemmFormat format, GemmIsa isa, int c, int perChunk, byte[] xq, int xqRow, float[] y, int yOffset)
    {
        int groups = Rows / InterleavedRows.GroupRows;
        int chunks = (groups + perChunk - 1) / perChunk;
        if (c == chunks)
        {
            int r0 = groups * InterleavedRows.GroupRows;
            DecodeRows(format, isa, r0, Rows - r0, xq, xqRow, y, yOffset);
            return;
        }
        int g0 = c * perChunk, count = Math.Min(perChunk, groups - g0);
        fixed (byte* pq = xq) fixed (float* py = y)
            InterleavedRows.Multiply(format, isa, _interleaved!.Pointer, groups, g0, count, Cols, pq + xqRow, py + yOffset + g0 * InterleavedRows.GroupRows);
        GC.KeepAlive(_interleaved); // the kernels read through a raw pointer into it
    }

    /// <summary>
    /// Products of Q4_0, Q8_0 and Q4_K weights with activations quantized once per token (Q8_0 / Q8_K,
    /// as ggml does for every batch size) through <see cref="QuantizedGemm"/>: panels of 16 weight
    /// rows are repacked and multiplied against all n tokens. Per (row, token) the result is the codec's
    /// scalar integer-dot reference bit for bit, so one token (decode) and many (prefill) agree and
    /// nothing depends on the thread count.
    /// </summary>
    private void MatMulInt8(GemmFormat format, float[] x, int xOffset, int n, float[] y, int yOffset, ParallelRunner par)
    {
        GemmIsa isa = QuantizedGemm.BestIsa;
        var vc = Codec.VecDotCodec!;
        int cols = Cols, rows = Rows;
        int xqRow = QuantizedGemm.QuantizedRowBytes(format, cols);
        int actStride = QuantizedGemm.ActivationStride(format, isa, cols);
        byte[] act = ArrayPool<byte>.Shared.Rent(n * actStride);
        try
        {
            par.For(n, (long)n * cols < SerialWorkThreshold || n == 1, t =>
            {
                byte[] xq = ArrayPool<byte>.Shared.Rent(xqRow);
                try
                {
                    vc.QuantizeRows(x.AsSpan(xOffset + t * cols, cols), xq.AsSpan(0, xqRow), cols, default);
                    QuantizedGemm.PrepareActivations(format, isa, xq.AsSpan(0, xqRow), cols, act.AsSpan(t * actStride, actStride));
                }
                finally { ArrayPool<byte>.Shared.Return(xq); }
            });
            int panels = (rows + QuantizedGemm.PanelRows - 1) / QuantizedGemm.PanelRows;
            int panelBytes = QuantizedGemm.PanelBytes(format, isa, cols);
            long work = (long)rows * cols * n;
            par.For(panels, n == 1 ? work < MatVecSerialThreshold : work < SerialWorkThreshold, p =>
            {
                int r0 = p * QuantizedGemm.PanelRows, count = Math.Min(QuantizedGemm.PanelRows, rows - r0);
                byte[] panel = ArrayPool<byte>.Shared.Rent(panelBytes);
                try
                {
                    fixed (byte* pw = Data.Span) fixed (byte* pp = panel) fixed (byte* pa = act) fixed (float* py = y)
                    {
                        QuantizedGemm.PackPanel(format, isa, pw + r0 * _rowBytes, (int)_rowBytes, count, cols, pp);
                        QuantizedGemm.MultiplyPanel(format, isa, pp, count, cols, pa, actStride, n, py + yOffset + r0, rows);
                    }
                }
                finally { ArrayPool<byte>.Shared.Return(panel); }
            });
        }
        finally { ArrayPool<byte>.Shared.Return(act); }
    }
}
