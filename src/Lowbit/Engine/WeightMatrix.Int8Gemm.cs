using System.Buffers;

namespace Lowbit.Engine;

internal sealed unsafe partial class WeightMatrix
{
    /// <summary>
    /// One activation vector quantized (VecDotCodec) into [0, xqRow) of a rented buffer, then prepared for the
    /// integer kernels after it (<see cref="QuantizedGemm.PrepareActivations"/>). Return the buffer to ArrayPool.
    /// Unless <paramref name="rowNeeded"/> (the row kernels of a tail read the quantized row), the activation goes
    /// straight from the floats to the prepared layout (<see cref="QuantizedGemm.TryPrepareActivations"/>, same bytes):
    /// the caller quantizes alone while the other threads wait, and on the Zen 4 VM writing and re-reading the block row
    /// cost that much more when memory ran fast (a 2048-value vector 1.7 µs near 34 GB/s, 4.4–5.4 near 58). Synthetic 1B
    /// model, one process alternating old and new every 4 tokens, cycles bucketed by a plain read of the weights after
    /// them (stop 22): Q4_0 1.003 / 1.038 / 1.030 near 33 / 51 / 58 GB/s, Q8_0 1.002 / 1.004 / 1.020; Q4_K (Q8_K
    /// activations, with fewer bytes to write a value) 1.005 / 0.990 (6 cycles) / 1.008, level.
    /// </summary>
    private byte[] QuantizeForDecode(GemmFormat format, GemmIsa isa, float[] x, int xOffset, out int xqRow, bool rowNeeded = true)
    {
        xqRow = QuantizedGemm.QuantizedRowBytes(format, Cols);
        int actStride = QuantizedGemm.ActivationStride(format, isa, Cols);
        byte[] xq = ArrayPool<byte>.Shared.Rent(xqRow + actStride);
        if (!rowNeeded && QuantizedGemm.TryPrepareActivations(format, isa, x.AsSpan(xOffset, Cols), Cols, xq.AsSpan(xqRow, actStride)))
            return xq;
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
            // Units of 8 rows (the multi-row kernels' width); the last one may be shorter.
            int units = (Rows + 7) / 8;
            long unitBytes = 8 * _rowBytes;
            DecodeRanges(par, units, unitBytes, (long)Rows * Cols < MatVecSerialThreshold,
                (u0, n) => DecodeRows(format, isa, 8 * u0, Math.Min(Rows, 8 * (u0 + n)) - 8 * u0, xq, xqRow, y, yOffset));
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

    /// <summary>Decode through the interleaved copy (<see cref="InterleavedRows"/>); the rows short of a last group through the row kernels.</summary>
    private void MatVecInterleaved(GemmFormat format, float[] x, int xOffset, float[] y, int yOffset, ParallelRunner par)
    {
        GemmIsa isa = QuantizedGemm.BestIsa;
        byte[] xq = QuantizeForDecode(format, isa, x, xOffset, out int xqRow, rowNeeded: Rows % InterleavedGroupRows != 0);
        try
        {
            long unitBytes = InterleavedRows.GroupBytes(format, isa, Cols);
            DecodeRanges(par, InterleavedUnits, unitBytes, (long)Rows * Cols < MatVecSerialThreshold,
                (u0, n) => InterleavedRange(format, isa, u0, n, xq, xqRow, y, yOffset));
        }
        finally { ArrayPool<byte>.Shared.Return(xq); }
    }

    /// <summary>
    /// Decode products of matrices that read the same activation (q/k/v, gate/up): when all have interleaved
    /// copies of one format and width, the activation is quantized (F16: scaled) once and all rows run as one parallel step
    /// (fewer, fuller steps: k and v alone are too small to keep two threads busy). Otherwise one MatVec each.
    /// The per-row arithmetic is MatVec's, so the results are the same bits.
    /// </summary>
    public static void MatVecShared(WeightMatrix[] matrices, float[][] outputs, float[] x, int xOffset, ParallelRunner par)
    {
        if (TryMatVecSharedF16(matrices, outputs, x, xOffset, par)) return;
        var firstMatrix = matrices[0];
        if (!FusesInt8Decode(matrices))
        {
            for (int i = 0; i < matrices.Length; i++) matrices[i].MatVec(x, xOffset, outputs[i], 0, par);
            return;
        }
        GemmFormat format = firstMatrix._int8Gemm!.Value;
        GemmIsa isa = QuantizedGemm.BestIsa;
        byte[] xq = firstMatrix.QuantizeForDecode(format, isa, x, xOffset, out int xqRow,
            rowNeeded: Array.Exists(matrices, m => m.Rows % m.InterleavedGroupRows != 0));
        try
        {
            SharedDecodeRanges(matrices, static m => m.InterleavedUnits, InterleavedRows.GroupBytes(format, isa, firstMatrix.Cols), par,
                (i, u0, count) => matrices[i].InterleavedRange(format, isa, u0, count, xq, xqRow, outputs[i], 0));
        }
        finally { ArrayPool<byte>.Shared.Return(xq); }
    }

    /// <summary>Whether <see cref="MatVecShared"/> runs these matrices' integer decode as one step.</summary>
    private static bool FusesInt8Decode(WeightMatrix[] matrices)
    {
        var first = matrices[0];
        bool fused = first._interleaved is not null && first._int8Gemm is not null;
        foreach (var m in matrices)
            fused &= m._interleaved is not null && m._int8Gemm == first._int8Gemm && m.Cols == first.Cols;
        return fused;
    }

    /// <summary>Whether <see cref="TryMatVecSharedF16"/> takes these matrices (when the activation allows the scaling).</summary>
    private static bool FusesF16Decode(WeightMatrix[] matrices)
    {
        foreach (var m in matrices)
            if (m._kind != Kind.F16 || m._interleaved is null || m.Cols != matrices[0].Cols || m.Rows % InterleavedRows.GroupRows != 0) return false;
        return true;
    }

    /// <summary>
    /// The warm-up (<see cref="ParallelRunner.Warmup"/>) for the decode step <see cref="MatVecShared"/> (or, for one
    /// matrix, <see cref="MatVec"/>) next runs on <paramref name="matrices"/> with <paramref name="par"/>:
    /// for each thread, the start of what it reads first there (its share's first piece, cut as
    /// <see cref="ParallelRunner.ForRanges"/> cuts it), up to <paramref name="bytes"/> spread over the piece's runs.
    /// Null when the step has no interleaved copy to warm. The plan's pointers stay valid as long as the matrices.
    /// </summary>
    internal static WarmPlan? DecodeWarmPlan(WeightMatrix[] matrices, ParallelRunner par, long bytes)
    {
        if (par.Threads < 2 || bytes <= 0) return null;
        bool f16 = FusesF16Decode(matrices);
        if (!f16 && !FusesInt8Decode(matrices)) matrices = [matrices[0]];
        var m0 = matrices[0];
        if (m0._interleaved is null) return null;
        f16 = m0._kind == Kind.F16;
        GemmFormat format = m0._int8Gemm.GetValueOrDefault();
        GemmIsa isa = QuantizedGemm.BestIsa;
        // Units per matrix and bytes per unit exactly as the decode step counts them.
        int[] unitsOf = new int[matrices.Length];
        int total = 0;
        long work = 0;
        for (int i = 0; i < matrices.Length; i++)
        {
            var m = matrices[i];
            unitsOf[i] = f16 ? (m.Rows + InterleavedRows.GroupRows - 1) / InterleavedRows.GroupRows : m.InterleavedUnits;
            total += unitsOf[i];
            work += (long)m.Rows * m.Cols;
        }
        if (work < MatVecSerialThreshold) return null; // the caller runs such a step alone, from its caches
        long unitBytes = f16 ? InterleavedRows.F16GroupBytes(m0.Cols) : InterleavedRows.GroupBytes(format, isa, m0.Cols);
        var (chunk, minChunk) = DecodePieceUnits(unitBytes);
        var plan = new (nint, long)[par.Threads][];
        var runs = new List<(nint Start, long Bytes)>();
        for (int t = 0; t < plan.Length; t++)
        {
            var (front, piece) = par.FirstPiece(total, chunk, minChunk, t);
            runs.Clear();
            long budget = bytes;
            for (int i = 0, first = 0; i < matrices.Length && piece > 0 && budget > 0; first += unitsOf[i], i++)
            {
                if (front >= first + unitsOf[i]) continue;
                var m = matrices[i];
                int u0 = front - first, take = Math.Min(piece, unitsOf[i] - u0);
                int groupRows = f16 ? InterleavedRows.GroupRows : m.InterleavedGroupRows, groups = m.Rows / groupRows;
                int g = Math.Min(take, groups - u0); // whole groups only: a tail unit reads the file's rows
                if (g > 0)
                {
                    // Both copies hold whole groups one after another: the piece's groups are one run.
                    long run = Math.Min(budget, (long)g * unitBytes);
                    runs.Add(((nint)((byte*)m._interleaved!.Pointer + (long)u0 * unitBytes), run));
                    budget -= run;
                }
                front += take;
                piece -= take;
            }
            plan[t] = runs.ToArray();
        }
        return new WarmPlan(plan, matrices);
    }

    /// <summary>
    /// One decode step over the units of several matrices laid end to end (<see cref="DecodeRanges"/>): each piece is
    /// cut at the matrix boundaries and <paramref name="body"/>(matrix, first unit in it, count) runs on each part.
    /// </summary>
    private static void SharedDecodeRanges(WeightMatrix[] matrices, Func<WeightMatrix, int> unitsOf, long unitBytes, ParallelRunner par,
        Action<int, int, int> body)
    {
        // Matrix i's units are [first[i], first[i + 1]) of the step's range.
        var first = new int[matrices.Length + 1];
        long work = 0;
        for (int i = 0; i < matrices.Length; i++)
        {
            first[i + 1] = first[i] + unitsOf(matrices[i]);
            work += (long)matrices[i].Rows * matrices[i].Cols;
        }
        DecodeRanges(par, first[^1], unitBytes, work < MatVecSerialThreshold, (u0, n) =>
        {
            for (int i = 0; i < matrices.Length && n > 0; i++)
            {
                if (u0 >= first[i + 1]) continue;
                int take = Math.Min(n, first[i + 1] - u0);
                body(i, u0 - first[i], take);
                u0 += take;
                n -= take;
            }
        });
    }

    /// <summary>
    /// <see cref="MatVecShared"/> for F16 matrices with interleaved copies and whole groups of 8 rows: the activation
    /// scaled once (<see cref="InterleavedRows.ScaleForF16"/>) and all groups in one step, each through the kernel
    /// MatVec uses, so the same bits. False (nothing done) when the matrices do not qualify or the scaling does not apply.
    /// Decode of the synthetic 1B F16 model (q/k/v in one step instead of three, gate/up in one instead of two) ran
    /// 1.0 and 1.3 % faster (two runs, one process alternating every 4 tokens).
    /// </summary>
    private static bool TryMatVecSharedF16(WeightMatrix[] matrices, float[][] outputs, float[] x, int xOffset, ParallelRunner par)
    {
        int cols = matrices[0].Cols;
        if (!FusesF16Decode(matrices)) return false;
        float[] xs = ArrayPool<float>.Shared.Rent(cols);
        try
        {
            if (!InterleavedRows.ScaleForF16(x.AsSpan(xOffset, cols), xs.AsSpan(0, cols))) return false;
            long groupBytes = InterleavedRows.F16GroupBytes(cols);
            SharedDecodeRanges(matrices, static m => m.Rows / InterleavedRows.GroupRows, groupBytes, par, (i, g0, count) =>
            {
                var m = matrices[i];
                fixed (float* pxs = xs) fixed (float* py = outputs[i])
                    InterleavedRows.MultiplyF16(m._interleaved!.Pointer + g0 * groupBytes, count, cols, pxs, py + g0 * InterleavedRows.GroupRows, xScaled: true);
                GC.KeepAlive(m._interleaved);
            });
            return true;
        }
        finally { ArrayPool<float>.Shared.Return(xs); }
    }

    /// <summary>
    /// Decode pieces (see <see cref="ParallelRunner.ForRanges"/>): each thread streams its own contiguous share of
    /// a step's rows in pieces of up to 1 MiB, shrinking to 512 KiB as the share runs out (a quarter of what is
    /// left), and a thread done early takes pieces from the back of the other shares. Fixed 1 MiB items, one
    /// per thread and step for the 2.4 MB attn_output of the 1B model, left the first thread to finish waiting
    /// for the other 0.5–0.8 ms per token; with shares and stealing, decode of the synthetic 1B model ran
    /// 5–8 % faster (Q4_0, Q4_K, Q8_0; same process, alternating every 4 tokens). Uniform 64 KiB pieces were
    /// 6 % slower: every piece taken from the back is a fresh stream. At stop 14 the floor did not matter (32, 64 and
    /// 256 KiB decoded the 1B Q4_0 model at the same 70.3–70.6 t/s as 128). Once the copies held whole rows (stop 23),
    /// a 512 KiB floor against 128, one process alternating every 4 tokens, each cycle bucketed by a plain read of the
    /// weights after it: Q4_0 +2.1 and +1.7 % with reads near 59 GB/s, +0.2 and +1.0 near 50, −0.3 and +0.5 near 34
    /// (two runs); Q4_K +0.9, +2.0, +0.9; Q8_0 +0.1, −1.0 (3 cycles), +0.4. Fixed 1 MiB pieces (no shrinking) gave Q4_0
    /// +1.1 / −0.7 / 0.0, fixed 2 MiB +3.1 and +0.7 near 59 but −1.0 near 34 and Q4_K +0.4 / 0.0 / −0.1.
    /// </summary>
    private const int DecodePieceBytes = 1 << 20, DecodeMinPieceBytes = 512 << 10;

    /// <summary>A decode step over <paramref name="units"/> units of about <paramref name="unitBytes"/> weight bytes each.</summary>
    private static void DecodeRanges(ParallelRunner par, int units, long unitBytes, bool serial, Action<int, int> body)
    {
        var (chunk, minChunk) = DecodePieceUnits(unitBytes);
        par.ForRanges(units, chunk, minChunk, serial, body);
    }

    /// <summary>A decode step's largest and smallest pieces, in units of <paramref name="unitBytes"/>.</summary>
    internal static (int Chunk, int MinChunk) DecodePieceUnits(long unitBytes)
    {
        unitBytes = Math.Max(1, unitBytes);
        return ((int)Math.Clamp(DecodePieceBytes / unitBytes, 1, int.MaxValue), (int)Math.Clamp(DecodeMinPieceBytes / unitBytes, 1, int.MaxValue));
    }

    /// <summary>Units of an interleaved decode: the groups of rows, then one unit for the tail rows short of a group.</summary>
    private int InterleavedUnits => Rows / InterleavedGroupRows + (Rows % InterleavedGroupRows > 0 ? 1 : 0);

    /// <summary>Units [u0, u0 + count) of an interleaved decode into y.</summary>
    private void InterleavedRange(GemmFormat format, GemmIsa isa, int u0, int count, byte[] xq, int xqRow, float[] y, int yOffset)
    {
        int groupRows = InterleavedGroupRows, groups = Rows / groupRows;
        int g1 = Math.Min(groups, u0 + count);
        if (g1 > u0)
        {
            fixed (byte* pq = xq) fixed (float* py = y)
                InterleavedRows.Multiply(format, isa, _interleaved!.Pointer, groups, u0, g1 - u0, Cols, pq + xqRow, py + yOffset + u0 * groupRows);
            GC.KeepAlive(_interleaved); // the kernels read through a raw pointer into it
        }
        if (u0 + count > groups)
        {
            int r0 = groups * groupRows;
            DecodeRows(format, isa, r0, Rows - r0, xq, xqRow, y, yOffset);
        }
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
