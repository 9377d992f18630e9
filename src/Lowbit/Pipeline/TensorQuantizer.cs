using System.Buffers;
using Lowbit.Formats;
using Lowbit.Model;

namespace Lowbit.Pipeline;

/// <summary>
/// Converts one tensor from its source encoding to a target codec, row chunk by row chunk on all
/// cores. Each chunk is decoded to F32 into a pooled buffer and encoded straight into its slice of
/// the destination, so memory stays bounded by the output tensor plus one chunk per thread, and
/// the bytes do not depend on the thread count (rows are encoded independently).
/// </summary>
public static class TensorQuantizer
{
    /// <summary>Rows per work item: roughly 1 MiB of F32 per chunk.</summary>
    private static int RowsPerChunk(long cols) => (int)Math.Clamp((1 << 18) / Math.Max(1, cols), 1, 4096);

    /// <summary>True when the codec encodes rows independently (no tensor-wide header).</summary>
    public static bool IsRowCodec(TensorCodec codec, long rows, long cols) =>
        codec.TensorBytes(rows, cols) == rows * codec.RowBytes(cols);

    /// <summary>
    /// Encodes <paramref name="source"/> (any codec) into <paramref name="dst"/> with <paramref name="target"/>.
    /// <paramref name="importance"/> is empty or one weight per column.
    /// </summary>
    public static void Quantize(ModelTensor source, ReadOnlyMemory<byte> sourceData, TensorCodec target, ReadOnlyMemory<float> importance,
        Memory<byte> dst, int threads, CancellationToken cancel)
    {
        long rows = source.Rows;
        int cols = checked((int)source.Cols);
        long expected = target.TensorBytes(rows, cols);
        if (dst.Length != expected)
            throw new ArgumentException($"destination holds {dst.Length} bytes, {expected} needed");
        if (!importance.IsEmpty && importance.Length != cols)
            throw new LowbitException($"importance vector for '{source.Name}' has {importance.Length} values, expected {cols} (one per column)");

        if (ReferenceEquals(source.Codec, target) || (source.Codec.Ggml is { } sg && target.Ggml == sg && source.Codec.IsFloat))
        {
            sourceData.Span.CopyTo(dst.Span);
            return;
        }

        if (!IsRowCodec(target, rows, cols))
        {
            // Tensor-level codecs (per-tensor scale, double-quantized scales) need the whole tensor at once.
            var all = new float[checked(rows * cols)];
            source.Codec.DequantizeTensorRows(sourceData.Span, rows, cols, 0, checked((int)rows), all);
            target.QuantizeTensor(all, dst.Span, rows, cols, importance.Span);
            return;
        }

        int chunkRows = RowsPerChunk(cols);
        long chunks = (rows + chunkRows - 1) / chunkRows;
        long dstRowBytes = target.RowBytes(cols);
        var options = new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, threads), CancellationToken = cancel };
        Parallel.For(0L, chunks, options, () => ArrayPool<float>.Shared.Rent(chunkRows * cols), (chunk, _, buffer) =>
        {
            long r0 = chunk * chunkRows;
            int n = (int)Math.Min(chunkRows, rows - r0);
            var f = buffer.AsSpan(0, n * cols);
            source.Codec.DequantizeTensorRows(sourceData.Span, rows, cols, r0, n, f);
            target.QuantizeRows(f, dst.Span.Slice(checked((int)(r0 * dstRowBytes)), checked((int)(n * dstRowBytes))), cols, importance.Span);
            return buffer;
        }, buffer => ArrayPool<float>.Shared.Return(buffer));
    }
}
