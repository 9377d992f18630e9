namespace Lowbit.Formats;

/// <summary>
/// A numeric format for weight tensors. A tensor is stored row-major as <c>rows × cols</c>;
/// each row is a sequence of independent blocks of <see cref="BlockSize"/> values taking
/// <see cref="BlockBytes"/> bytes (ggml's type-traits model). Codecs whose encoding needs
/// tensor-wide parameters (a per-tensor scale, double-quantized scales) override the
/// tensor-level members; the engine only ever reads a tensor through row ranges.
/// </summary>
public abstract class TensorCodec
{
    /// <summary>Canonical lower-case-insensitive name, e.g. "q4_K", "f16", "mxfp4", "int4-g128-sym".</summary>
    public abstract string Name { get; }

    /// <summary>The GGUF type id when this codec is a GGUF block type, else null.</summary>
    public virtual GgmlType? Ggml => null;

    /// <summary>Values per block along a row. A row length must be a multiple of it.</summary>
    public abstract int BlockSize { get; }

    /// <summary>Bytes per block.</summary>
    public abstract int BlockBytes { get; }

    /// <summary>Bits per weight of the block payload (excluding any per-tensor header).</summary>
    public virtual double BitsPerWeight => 8.0 * BlockBytes / BlockSize;

    /// <summary>True when <see cref="QuantizeRows"/> uses an importance vector (imatrix) when given one.</summary>
    public virtual bool UsesImportance => false;

    /// <summary>True for float formats stored without blocks (F32, F16, BF16).</summary>
    public virtual bool IsFloat => false;

    public bool CanEncodeRow(long cols) => cols > 0 && cols % BlockSize == 0;

    /// <summary>
    /// Encoded bytes of one row. Block codecs: cols / BlockSize × BlockBytes. Virtual for row codecs
    /// that add a fixed per-row header (W8A8: one FP32 scale per row, then one byte per value).
    /// </summary>
    public virtual long RowBytes(long cols)
    {
        if (!CanEncodeRow(cols))
            throw new ArgumentException($"{Name}: row length {cols} is not a multiple of the block size {BlockSize}.");
        return cols / BlockSize * BlockBytes;
    }

    /// <summary>Total bytes of a rows × cols tensor, including any per-tensor header.</summary>
    public virtual long TensorBytes(long rows, long cols) => rows * RowBytes(cols);

    /// <summary>
    /// Quantizes whole rows: <paramref name="src"/> holds <c>n × cols</c> values, <paramref name="dst"/>
    /// receives <c>n × RowBytes(cols)</c> bytes. <paramref name="importance"/> is empty or holds one
    /// weight per column (llama.cpp imatrix semantics).
    /// </summary>
    public abstract void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance);

    /// <summary>Dequantizes whole rows (inverse of <see cref="QuantizeRows"/>).</summary>
    public abstract void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols);

    /// <summary>
    /// Dot product of one encoded row with a float vector. The default dequantizes block by block
    /// (the reference); codecs override it with fused SIMD kernels that must agree with it.
    /// </summary>
    public virtual float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        int cols = x.Length;
        int chunk = BlockSize;
        while (chunk < 256 && cols % (chunk * 2) == 0) chunk *= 2;
        Span<float> tmp = stackalloc float[chunk];
        int chunkBytes = chunk / BlockSize * BlockBytes;
        double sum = 0;
        for (int c = 0, b = 0; c < cols; c += chunk, b += chunkBytes)
        {
            DequantizeRows(row.Slice(b, chunkBytes), tmp, chunk);
            float s = 0;
            for (int i = 0; i < chunk; i++) s += tmp[i] * x[c + i];
            sum += s;
        }
        return (float)sum;
    }

    /// <summary>
    /// The activation format of the integer dot path (ggml's vec_dot_type: Q8_0 for legacy quants,
    /// Q8_K for k-quants), or null when this codec only dots against float activations.
    /// </summary>
    public virtual TensorCodec? VecDotCodec => null;

    /// <summary>
    /// Dot product of one encoded weight row with an activation row already encoded in
    /// <see cref="VecDotCodec"/> (same number of values). Must agree with dequantize-both-and-dot.
    /// </summary>
    public virtual float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
        => throw new NotSupportedException($"{Name} has no quantized-activation dot product.");

    /// <summary>
    /// <paramref name="count"/> consecutive encoded rows (<paramref name="rows"/> holds exactly count rows)
    /// dotted with one activation row encoded in <see cref="VecDotCodec"/>: y[i] must equal
    /// <see cref="DotRowQuantized"/> of row i bit for bit. Codecs override it with multi-row kernels
    /// that share activation loads across rows (the decode hot path).
    /// </summary>
    public virtual void DotRowsQuantized(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y)
    {
        int rb = RowsBytesPerRow(rows, count, y);
        for (int r = 0; r < count; r++) y[r] = DotRowQuantized(rows.Slice(r * rb, rb), xq);
    }

    /// <summary>The argument check of every <see cref="DotRowsQuantized"/> kernel: the bytes of one row.</summary>
    internal static int RowsBytesPerRow(ReadOnlySpan<byte> rows, int count, Span<float> y)
    {
        if (count <= 0 || rows.Length % count != 0 || y.Length < count)
            throw new ArgumentException($"{rows.Length} bytes do not split into {count} rows, or {y.Length} outputs are too few.");
        return rows.Length / count;
    }

    /// <summary>Quantizes a whole tensor. Tensor-level codecs (with headers) override this.</summary>
    public virtual void QuantizeTensor(ReadOnlySpan<float> src, Span<byte> dst, long rows, int cols, ReadOnlySpan<float> importance)
        => QuantizeRows(src, dst.Slice(0, checked((int)(rows * RowBytes(cols)))), cols, importance);

    /// <summary>Dequantizes rows [rowStart, rowStart + rowCount) of an encoded tensor.</summary>
    public virtual void DequantizeTensorRows(ReadOnlySpan<byte> tensor, long rows, int cols, long rowStart, int rowCount, Span<float> dst)
    {
        long rb = RowBytes(cols);
        DequantizeRows(tensor.Slice(checked((int)(rowStart * rb)), checked((int)(rowCount * rb))), dst, cols);
    }

    public override string ToString() => Name;
}
