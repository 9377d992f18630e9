namespace Lowbit.Formats;

/// <summary>
/// A codec whose encoding needs parameters shared across rows or a whole tensor (per-row FP32
/// scales, a per-tensor global scale, double-quantized block scales). Layout of every such tensor:
/// a header of <see cref="HeaderBytes"/> bytes, then <c>rows × RowBytes(cols)</c> bytes of row
/// payload (row r at <c>HeaderBytes + r·RowBytes</c>), so any row range is addressable.
/// <para>
/// The row-level members keep working on their own terms: <see cref="QuantizeRows"/> encodes its
/// input as a complete tensor of <c>src.Length / cols</c> rows (header included),
/// <see cref="DequantizeRows"/> decodes such a tensor, and <see cref="DotRow"/> treats its row
/// argument as a one-row tensor. An engine holding a larger tensor reads rows through
/// <see cref="TensorCodec.DequantizeTensorRows"/> and <see cref="DotTensorRow"/>.
/// </para>
/// <see cref="TensorCodec.BitsPerWeight"/> counts the row payload plus header statistics that
/// grow with the weight count (NF4's per-block absmax), not per-row or per-tensor parameters;
/// <see cref="EffectiveBitsPerWeight"/> is the exact figure for a given shape.
/// </summary>
public abstract class TensorLevelCodec : TensorCodec
{
    /// <summary>Bytes of the tensor header for a rows × cols tensor.</summary>
    public abstract long HeaderBytes(long rows, int cols);

    public override long TensorBytes(long rows, long cols) => HeaderBytes(rows, checked((int)cols)) + rows * RowBytes(cols);

    /// <summary>Storage bits per weight for a rows × cols tensor, header included.</summary>
    public double EffectiveBitsPerWeight(long rows, int cols) => 8.0 * TensorBytes(rows, cols) / ((double)rows * cols);

    /// <summary>Dot product of row <paramref name="row"/> of an encoded tensor with x (x.Length == cols).</summary>
    public abstract float DotTensorRow(ReadOnlySpan<byte> tensor, long rows, int cols, long row, ReadOnlySpan<float> x);

    public abstract override void QuantizeTensor(ReadOnlySpan<float> src, Span<byte> dst, long rows, int cols, ReadOnlySpan<float> importance);

    public abstract override void DequantizeTensorRows(ReadOnlySpan<byte> tensor, long rows, int cols, long rowStart, int rowCount, Span<float> dst);

    public sealed override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        long rows = CheckShape(src.Length, cols);
        QuantizeTensor(src, dst, rows, cols, importance);
    }

    public sealed override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        long rows = CheckShape(dst.Length, cols);
        DequantizeTensorRows(src, rows, cols, 0, checked((int)rows), dst);
    }

    public sealed override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
        => DotTensorRow(row, 1, x.Length, 0, x);

    /// <summary>Validates a tensor's shape and buffer sizes; returns rows.</summary>
    protected long CheckShape(long values, int cols)
    {
        if (cols <= 0 || values % cols != 0)
            throw new LowbitException($"{Name}: {values} values do not form rows of {cols}.");
        if (!CanEncodeRow(cols))
            throw new LowbitException($"{Name}: row length {cols} is not a multiple of the block size {BlockSize}.");
        return values / cols;
    }

    /// <summary>Throws when an encoded buffer is shorter than the tensor it should hold.</summary>
    protected void CheckEncoded(int length, long rows, int cols)
    {
        long need = TensorBytes(rows, cols);
        if (length < need)
            throw new LowbitException($"{Name}: encoded tensor of {rows}×{cols} needs {need} bytes, got {length}.");
    }

    /// <summary>Byte offset of row r's payload.</summary>
    protected long RowOffset(long rows, int cols, long r) => HeaderBytes(rows, cols) + r * RowBytes(cols);
}
