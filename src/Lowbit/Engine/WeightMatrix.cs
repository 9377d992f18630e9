using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Lowbit.Formats;
using Lowbit.Model;

namespace Lowbit.Engine;

/// <summary>
/// A weight matrix (rows = outputs, cols = inputs) in any codec, with the engine's two products:
/// <see cref="MatVec"/> (decode: one activation vector; codec.DotRow, or the codec's integer dot on
/// activations quantized once) and <see cref="MatMul"/> (prefill: many activation rows; a tile of
/// weight rows is decoded once into an L1/L2-sized F32 buffer and multiplied against every
/// activation row; Q4_0/Q8_0/Q4_K with quantized activations use the integer GEMM of
/// WeightMatrix.Int8Gemm.cs for both). Never dequantizes the whole tensor. With interleaving on, Q4_0,
/// Q8_0, Q4_K and (finite) F16 matrices also hold an 8-row interleaved decode copy (<see cref="InterleavedRows"/>)
/// that MatVec streams instead of the file's rows, with bit-identical results.
/// </summary>
internal sealed unsafe partial class WeightMatrix
{
    private enum Kind { F32, F16, BF16, Generic }

    /// <summary>
    /// F32 weight bytes per float-GEMM tile (32 rows of 2048 columns): <see cref="MatKernels.MatMulTile"/> sweeps a tile's
    /// rows for every block of tokens, so the tile is re-read from L2 while each token block stays close. 256 KiB against
    /// 48 KiB, F16 prefill (pp64, synthetic 1B model, one process alternating): 76.7 → 88.8 and 78.5 → 85.7 t/s with the
    /// 512-bit tile, 64.6 → 70.8 with the 256-bit one; 128 and 512 KiB were in between.
    /// </summary>
    private const int TileBytesTarget = 256 * 1024;
    private const long SerialWorkThreshold = 1 << 15; // multiply-adds below which threading costs more than it saves
    // A fork/join costs several microseconds; a single-token product under ~256K multiply-adds
    // (≈10 µs on one core) finishes sooner on the calling thread.
    private const long MatVecSerialThreshold = 1 << 18;

    private readonly Kind _kind;
    private readonly long _rowBytes;
    private readonly bool _useQuantizedActivations;

    private readonly bool _quantizedPrefill;
    private readonly GemmFormat? _int8Gemm; // formats with the integer GEMM: used for prefill and decode
    private readonly bool _f16Finite;
    private readonly NativeSlice? _interleaved; // decode copy, 8 rows interleaved (InterleavedRows), or null

    /// <param name="decodeMemory">Where the interleaved decode copy goes: the engine's arena (huge pages throughout), or null for a buffer of its own.</param>
    public WeightMatrix(ModelTensor tensor, bool useQuantizedActivations, bool quantizedPrefill = false, bool interleave = false,
        NativeArena? decodeMemory = null)
    {
        Tensor = tensor;
        Name = tensor.Name;
        Codec = tensor.Codec;
        if (tensor.Shape.Length != 2)
            throw new LowbitException($"tensor '{tensor.Name}' must be 2-D, has shape [{string.Join(", ", tensor.Shape)}]");
        Rows = checked((int)tensor.Rows);
        Cols = checked((int)tensor.Cols);
        Data = tensor.Data; // held: materialized tensors rebuild on every access
        // Tensor-level codecs (a per-tensor header) are not row-addressable: rows are read through DequantizeTensorRows.
        long rowBytes = Codec.RowBytes(Cols);
        _rowBytes = Codec.TensorBytes(Rows, Cols) == Rows * rowBytes ? rowBytes : -1;
        _kind = Codec.Name switch
        {
            "f32" when Codec is F32Codec => Kind.F32,
            "f16" when Codec is F16Codec => Kind.F16,
            "bf16" when Codec is BF16Codec => Kind.BF16,
            _ => Kind.Generic,
        };
        _useQuantizedActivations = useQuantizedActivations && Codec.VecDotCodec is not null && _rowBytes > 0;
        // One scan at load lets decode skip the per-value infinity/NaN tracking of the fused F16 dot.
        if (_kind == Kind.F16)
            fixed (byte* p = Data.Span) _f16Finite = MatKernels.HalvesAllFinite((ushort*)p, Data.Length / 2);
        _quantizedPrefill = quantizedPrefill && _useQuantizedActivations;
        _int8Gemm = _useQuantizedActivations ? QuantizedGemm.FormatOf(Codec) : null;
        if (interleave)
        {
            if (_int8Gemm is { } f && InterleavedRows.IsSupported(f) && Rows >= InterleavedGroupRows && ScalesFinite(f)) _interleaved = Interleave(f, decodeMemory);
            else if (_kind == Kind.F16 && Rows >= InterleavedRows.GroupRows && _f16Finite && InterleavedRows.F16Supported(Cols)) _interleaved = Interleave(null, decodeMemory);
        }
    }

    private bool ScalesFinite(GemmFormat f)
    {
        fixed (byte* p = Data.Span) return InterleavedRows.ScalesFinite(f, p, Rows, (int)_rowBytes, Cols);
    }

    /// <summary>Whether prefill (<see cref="MatMul"/> of several tokens) multiplies on integer dot products (activations quantized).</summary>
    public bool IntegerPrefill => _int8Gemm is not null || _quantizedPrefill || QuantizesActivationRows;

    /// <summary>Bytes of the interleaved decode copy (0 without one).</summary>
    public long InterleavedBytes => _interleaved?.Length ?? 0;

    /// <summary>
    /// Rows per group of the interleaved copy: <see cref="InterleavedRows.RowsPerGroup"/> for a quantized format on this
    /// CPU, <see cref="InterleavedRows.GroupRows"/> for F16.
    /// </summary>
    private int InterleavedGroupRows => _int8Gemm is { } f ? InterleavedRows.RowsPerGroup(f, QuantizedGemm.BestIsa, Cols) : InterleavedRows.GroupRows;

    /// <summary>The interleaved decode copy of the whole groups of rows (format null: F16).</summary>
    private NativeSlice Interleave(GemmFormat? f, NativeArena? memory)
    {
        int groupRows = InterleavedGroupRows, groups = Rows / groupRows;
        int gb = f is { } q ? InterleavedRows.GroupBytes(q, QuantizedGemm.BestIsa, Cols) : InterleavedRows.F16GroupBytes(Cols);
        long bytes = (long)groups * gb;
        var copy = memory is not null ? memory.Allocate(bytes) : NativeSlice.Own(bytes);
        int perItem = Math.Max(1, (1 << 20) / gb);
        Parallel.For(0, (groups + perItem - 1) / perItem, item =>
        {
            byte* pc = copy.Pointer;
            fixed (byte* pw = Data.Span)
                for (int g = item * perItem, end = Math.Min(groups, g + perItem); g < end; g++)
                {
                    byte* src = pw + (long)g * groupRows * _rowBytes, dst = pc + (long)g * gb;
                    if (f is { } q) InterleavedRows.PackGroup(q, QuantizedGemm.BestIsa, src, (int)_rowBytes, Cols, dst);
                    else InterleavedRows.PackF16Group(src, (int)_rowBytes, Cols, dst);
                }
        });
        return copy;
    }

    /// <summary>
    /// Adds the memory a decode of this matrix streams to <paramref name="regions"/>: the interleaved copy (and the
    /// file's rows for the tail of rows short of a group) or the file's rows; <paramref name="pins"/> receives the handles that keep
    /// managed rows in place, to be disposed by the caller.
    /// </summary>
    internal void AddDecodeMemory(List<(nint Pointer, long Length)> regions, List<MemoryHandle> pins)
    {
        if (_interleaved is not null)
        {
            regions.Add(((nint)_interleaved.Pointer, _interleaved.Length));
            int tail = Rows % InterleavedGroupRows;
            if (tail == 0) return;
            var rows = Data.Pin();
            pins.Add(rows);
            regions.Add(((nint)rows.Pointer + (nint)((Rows - tail) * _rowBytes), tail * _rowBytes));
            return;
        }
        var all = Data.Pin();
        pins.Add(all);
        regions.Add(((nint)all.Pointer, Data.Length));
    }

    public ModelTensor Tensor { get; }
    public string Name { get; }
    public TensorCodec Codec { get; }
    public int Rows { get; }
    public int Cols { get; }
    public ReadOnlyMemory<byte> Data { get; }
    public long ByteCount => Data.Length;

    /// <summary>Row-addressable codecs have a fixed byte size per row and no tensor header.</summary>
    private bool RowAddressable => _rowBytes > 0;

    /// <summary>Dequantizes rows [r0, r0+count) into dst (count × Cols).</summary>
    public void DequantizeRows(int r0, int count, Span<float> dst)
    {
        var data = Data.Span;
        switch (_kind)
        {
            case Kind.F32:
                MemoryMarshal.Cast<byte, float>(data.Slice(checked((int)(r0 * _rowBytes)), checked((int)(count * _rowBytes)))).CopyTo(dst);
                break;
            case Kind.F16:
                TensorPrimitives.ConvertToSingle(MatKernels.AsHalf(data.Slice(checked((int)(r0 * _rowBytes)), checked((int)(count * _rowBytes)))), dst);
                break;
            case Kind.BF16:
                fixed (byte* p = data) fixed (float* d = dst)
                    MatKernels.ConvertBF16((ushort*)(p + r0 * _rowBytes), d, count * Cols);
                break;
            default:
                Codec.DequantizeTensorRows(data, Rows, Cols, r0, count, dst);
                break;
        }
    }

    /// <summary>y[r] = W[r]·x for all rows.</summary>
    public void MatVec(float[] x, int xOffset, float[] y, int yOffset, ParallelRunner par)
    {
        // Q4_0/Q8_0/Q4_K: the interleaved copy's kernels, or the file's rows with the same per-row arithmetic,
        // so decode == prefill either way.
        if (_int8Gemm is { } gemm)
        {
            if (_interleaved is not null) MatVecInterleaved(gemm, x, xOffset, y, yOffset, par);
            else MatVecInt8(gemm, x, xOffset, y, yOffset, par);
            return;
        }
        byte[]? xq = null;
        int xqLength = 0;
        if (_useQuantizedActivations)
        {
            var vc = Codec.VecDotCodec!;
            xqLength = checked((int)vc.RowBytes(Cols));
            xq = ArrayPool<byte>.Shared.Rent(xqLength);
            vc.QuantizeRows(x.AsSpan(xOffset, Cols), xq.AsSpan(0, xqLength), Cols, default);
        }
        // F16 through the interleaved copy: activations scaled once for the kernel's shorter conversion.
        float[]? xs = _interleaved is not null ? ArrayPool<float>.Shared.Rent(Cols) : null;
        if (xs is not null && !InterleavedRows.ScaleForF16(x.AsSpan(xOffset, Cols), xs.AsSpan(0, Cols)))
        {
            ArrayPool<float>.Shared.Return(xs);
            xs = null;
        }
        try
        {
            // Units of one row, or of one group of 8 rows for F16 with an interleaved copy.
            int unitRows = _interleaved is not null ? InterleavedRows.GroupRows : 1;
            int units = (Rows + unitRows - 1) / unitRows;
            DecodeRanges(par, units, ByteCount / Math.Max(1, units), (long)Rows * Cols < MatVecSerialThreshold,
                (u0, n) => MatVecRows(u0 * unitRows, Math.Min(Rows, (u0 + n) * unitRows), x, xOffset, y, yOffset, xq, xqLength, xs));
        }
        finally
        {
            if (xq is not null) ArrayPool<byte>.Shared.Return(xq);
            if (xs is not null) ArrayPool<float>.Shared.Return(xs);
        }
    }

    private void MatVecRows(int r0, int r1, float[] x, int xOffset, float[] y, int yOffset, byte[]? xq, int xqLength, float[]? xScaled = null)
    {
        var data = Data.Span;
        fixed (byte* pw = data) fixed (float* px = x) fixed (float* py = y) fixed (float* pxs = xScaled)
        {
            float* xv = px + xOffset;
            switch (_kind)
            {
                // Four rows at a time: independent FMA chains hide the FMA latency; per-row arithmetic
                // is the single-row kernel's, so decode equals prefill bit for bit.
                case Kind.F32:
                    MatKernels.MatMulTile((float*)(pw + r0 * _rowBytes), Cols, r1 - r0, xv, Cols, 1, Cols, py + yOffset + r0, 1);
                    return;
                case Kind.F16:
                {
                    int r = r0;
                    if (_interleaved is not null)
                    {
                        // Whole groups of 8 through the interleaved copy (chunks are whole groups, see MatVec).
                        int groups = Math.Min(r1, Rows / InterleavedRows.GroupRows * InterleavedRows.GroupRows) - r0;
                        if (groups > 0)
                        {
                            InterleavedRows.MultiplyF16(_interleaved.Pointer + (long)(r0 / InterleavedRows.GroupRows) * InterleavedRows.F16GroupBytes(Cols),
                                groups / InterleavedRows.GroupRows, Cols, xScaled is null ? xv : pxs, py + yOffset + r0, xScaled is not null);
                            GC.KeepAlive(_interleaved);
                            r += groups;
                        }
                    }
                    if (_f16Finite)
                        for (; r + 4 <= r1; r += 4) MatKernels.DotF16x4Finite((Half*)(pw + r * _rowBytes), Cols, xv, Cols, py + yOffset + r);
                    for (; r + 4 <= r1; r += 4) MatKernels.DotF16x4((Half*)(pw + r * _rowBytes), Cols, xv, Cols, py + yOffset + r);
                    for (; r < r1; r++) py[yOffset + r] = MatKernels.DotF16((Half*)(pw + r * _rowBytes), xv, Cols);
                    return;
                }
                case Kind.BF16:
                {
                    int r = r0;
                    for (; r + 4 <= r1; r += 4) MatKernels.DotBF16x4((ushort*)(pw + r * _rowBytes), Cols, xv, Cols, py + yOffset + r);
                    for (; r < r1; r++) py[yOffset + r] = MatKernels.DotBF16((ushort*)(pw + r * _rowBytes), xv, Cols);
                    return;
                }
            }
        }
        if (!RowAddressable)
        {
            // Tensor-level codec: decode rows through the tensor API, then dot.
            float[] buf = ArrayPool<float>.Shared.Rent(Cols);
            try
            {
                for (int r = r0; r < r1; r++)
                {
                    Codec.DequantizeTensorRows(data, Rows, Cols, r, 1, buf);
                    y[yOffset + r] = MatKernels.Dot(buf.AsSpan(0, Cols), x.AsSpan(xOffset, Cols));
                }
            }
            finally { ArrayPool<float>.Shared.Return(buf); }
            return;
        }
        int rb = (int)_rowBytes;
        if (xq is not null)
        {
            Codec.DotRowsQuantized(data.Slice(r0 * rb, (r1 - r0) * rb), r1 - r0, xq.AsSpan(0, xqLength), y.AsSpan(yOffset + r0, r1 - r0));
        }
        else
        {
            var xs = x.AsSpan(xOffset, Cols);
            for (int r = r0; r < r1; r++) y[yOffset + r] = Codec.DotRow(data.Slice(r * rb, rb), xs);
        }
    }

    /// <summary>ggml's batched path: every activation row quantized once, then the codec's integer dot per (row, token).</summary>
    private void MatMulQuantized(float[] x, int xOffset, int n, float[] y, int yOffset, ParallelRunner par)
    {
        var vc = Codec.VecDotCodec!;
        int xqRow = checked((int)vc.RowBytes(Cols));
        byte[] xq = ArrayPool<byte>.Shared.Rent(n * xqRow);
        try
        {
            par.For(n, (long)n * Cols < SerialWorkThreshold, t =>
                vc.QuantizeRows(x.AsSpan(xOffset + t * Cols, Cols), xq.AsSpan(t * xqRow, xqRow), Cols, default));
            int chunkRows = par.ChunkSize(Rows, (long)Rows * Cols * n, 4);
            int chunks = (Rows + chunkRows - 1) / chunkRows;
            int rb = (int)_rowBytes;
            par.For(chunks, (long)Rows * Cols * n < SerialWorkThreshold, c =>
            {
                var data = Data.Span;
                int r0 = c * chunkRows, r1 = Math.Min(Rows, r0 + chunkRows);
                for (int r = r0; r < r1; r++)
                {
                    var row = data.Slice(r * rb, rb);
                    for (int t = 0; t < n; t++)
                        y[yOffset + t * Rows + r] = Codec.DotRowQuantized(row, xq.AsSpan(t * xqRow, xqRow));
                }
            });
        }
        finally { ArrayPool<byte>.Shared.Return(xq); }
    }

    /// <summary>
    /// Y[t, r] = W[r]·X[t] for tokens t &lt; n: X is n × Cols at xOffset (row stride Cols), Y is
    /// n × Rows at yOffset (row stride Rows). One token goes through <see cref="MatVec"/>.
    /// </summary>
    public void MatMul(float[] x, int xOffset, int n, float[] y, int yOffset, ParallelRunner par)
    {
        if (n == 1)
        {
            MatVec(x, xOffset, y, yOffset, par);
            return;
        }
        if (_int8Gemm is { } gemm)
        {
            MatMulInt8(gemm, x, xOffset, n, y, yOffset, par);
            return;
        }
        // W8A8 codecs quantize activations per token as part of the format, so prefill (and PPL/KLD) must too.
        if (_quantizedPrefill || QuantizesActivationRows)
        {
            MatMulQuantized(x, xOffset, n, y, yOffset, par);
            return;
        }
        int tileRows = Math.Max(4, TileBytesTarget / (Cols * sizeof(float)) & ~3);
        // About eight tiles per thread, so dynamic scheduling absorbs a descheduled or slower thread.
        if (par.Threads > 1)
        {
            int perItem = (Rows + par.Threads * 8 - 1) / (par.Threads * 8);
            if (perItem < tileRows) tileRows = Math.Max(8, (perItem + 3) & ~3);
        }
        int tiles = (Rows + tileRows - 1) / tileRows;
        bool serial = (long)Rows * Cols * n < SerialWorkThreshold;
        // The 512-bit tile reads the tokens in pairs packed once here (MatKernels.PackTokenPairs).
        int packedTokens = MatKernels.WideTiles && Rows >= 4 ? n - n % 6 : 0;
        float[]? pairs = packedTokens > 0 ? ArrayPool<float>.Shared.Rent(packedTokens * (Cols & ~7)) : null;
        try
        {
            if (pairs is not null)
                par.For(packedTokens / 6, serial, b =>
                {
                    fixed (float* px = x) fixed (float* pp = pairs)
                        MatKernels.PackTokenPairs(px + xOffset + (long)6 * b * Cols, Cols, 6, Cols, pp + (long)6 * b * (Cols & ~7));
                });
            par.For(tiles, serial, tile =>
            {
                int r0 = tile * tileRows, count = Math.Min(tileRows, Rows - r0);
                fixed (float* px = x) fixed (float* py = y) fixed (float* pp = pairs)
                {
                    if (_kind == Kind.F32)
                    {
                        fixed (byte* pw = Data.Span)
                            MatKernels.MatMulTile((float*)(pw + r0 * _rowBytes), Cols, count, px + xOffset, Cols, n, Cols, py + yOffset + r0, Rows, pp);
                        return;
                    }
                    float[] buf = ArrayPool<float>.Shared.Rent(count * Cols);
                    try
                    {
                        DequantizeRows(r0, count, buf.AsSpan(0, count * Cols));
                        fixed (float* pw = buf)
                            MatKernels.MatMulTile(pw, Cols, count, px + xOffset, Cols, n, Cols, py + yOffset + r0, Rows, pp);
                    }
                    finally { ArrayPool<float>.Shared.Return(buf); }
                }
            });
        }
        finally
        {
            if (pairs is not null) ArrayPool<float>.Shared.Return(pairs);
        }
    }
}
