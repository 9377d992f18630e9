namespace Lowbit.Formats;

/// <summary>
/// Raw OCP FP8 ("fp8_e4m3" / "fp8_e5m2"): one byte per value, no scale. Values are rounded to
/// nearest-even and saturated at ±max (448 / 57344); NaN stays NaN. Useful for activations or
/// weights already in range; for weights use <see cref="Fp8ChannelCodec"/>.
/// </summary>
public sealed class Fp8Codec(Fp8Kind kind) : TensorCodec
{
    public Fp8Kind Kind { get; } = kind;
    public override string Name => Kind == Fp8Kind.E4M3 ? "fp8_e4m3" : "fp8_e5m2";
    public override int BlockSize => 1;
    public override int BlockBytes => 1;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        for (int i = 0; i < src.Length; i++) dst[i] = Fp8.Encode(src[i], Kind);
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
        => Fp8.DecodeSpan(src, dst, Kind);

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => Fp8.Dot(row, x, Kind);
}

/// <summary>
/// OCP FP8 weights with one FP32 scale per row (per output channel), scale = amax(row) / max
/// (448 for E4M3, 57344 for E5M2) as in compressed-tensors' "channel" FP8 scheme.
/// Names "fp8_e4m3-channel", "fp8_e5m2-channel".
/// Layout: header = rows × FP32 scale (little-endian), then rows × cols FP8 codes.
/// Value = decode(code) × scale[row]. A zero row stores scale 0 and codes 0.
/// </summary>
public sealed class Fp8ChannelCodec(Fp8Kind kind) : TensorLevelCodec
{
    public Fp8Kind Kind { get; } = kind;
    public override string Name => Kind == Fp8Kind.E4M3 ? "fp8_e4m3-channel" : "fp8_e5m2-channel";
    public override int BlockSize => 1;
    public override int BlockBytes => 1;

    public override long HeaderBytes(long rows, int cols) => 4 * rows;

    public override void QuantizeTensor(ReadOnlySpan<float> src, Span<byte> dst, long rows, int cols, ReadOnlySpan<float> importance)
    {
        CheckShape(src.Length, cols);
        CheckEncoded(dst.Length, rows, cols);
        float max = Fp8.Max(Kind);
        for (long r = 0; r < rows; r++)
        {
            var x = src.Slice(checked((int)(r * cols)), cols);
            float amax = 0;
            foreach (float v in x) if (MathF.Abs(v) > amax) amax = MathF.Abs(v); // NaN never wins
            float scale = amax / max;
            BitConverter.TryWriteBytes(dst.Slice(checked((int)(4 * r)), 4), scale);
            var codes = dst.Slice(checked((int)RowOffset(rows, cols, r)), cols);
            if (scale == 0f || !float.IsFinite(scale))
            {
                // All-zero row, or a row holding ±Inf: there is no finite scale; store raw codes.
                if (!float.IsFinite(scale)) BitConverter.TryWriteBytes(dst.Slice(checked((int)(4 * r)), 4), 1f);
                for (int i = 0; i < cols; i++) codes[i] = Fp8.Encode(x[i], Kind);
                continue;
            }
            for (int i = 0; i < cols; i++) codes[i] = Fp8.Encode(x[i] / scale, Kind);
        }
    }

    /// <summary>The FP32 scale of row r.</summary>
    public static float RowScale(ReadOnlySpan<byte> tensor, long r) => BitConverter.ToSingle(tensor.Slice(checked((int)(4 * r)), 4));

    public override void DequantizeTensorRows(ReadOnlySpan<byte> tensor, long rows, int cols, long rowStart, int rowCount, Span<float> dst)
    {
        CheckEncoded(tensor.Length, rows, cols);
        for (int i = 0; i < rowCount; i++)
        {
            long r = rowStart + i;
            Fp8.DecodeSpan(tensor.Slice(checked((int)RowOffset(rows, cols, r)), cols), dst.Slice(i * cols, cols), Kind, RowScale(tensor, r));
        }
    }

    public override float DotTensorRow(ReadOnlySpan<byte> tensor, long rows, int cols, long row, ReadOnlySpan<float> x)
        => RowScale(tensor, row) * Fp8.Dot(tensor.Slice(checked((int)RowOffset(rows, cols, row)), cols), x, Kind);
}
