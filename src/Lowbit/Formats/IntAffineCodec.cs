using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Text.RegularExpressions;

namespace Lowbit.Formats;

/// <summary>
/// The integer affine family "int{2,3,4,8}-{gN|channel|tensor}-{sym|asym}[-mse]", e.g.
/// "int4-g128-sym", "int4-g128-asym", "int8-channel-sym", "int3-tensor-asym", "int4-g64-asym-mse".
/// Per-group names give an <see cref="IntGroupCodec"/>; per-channel and per-tensor names an
/// <see cref="IntAffineCodec"/>. Quantization math: <see cref="IntQuant"/>.
/// </summary>
public static partial class IntCodecFamily
{
    [GeneratedRegex(@"^int([2348])-(?:g(\d{1,7})|(channel)|(tensor))-(sym|asym)(-mse)?$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();

    /// <summary>Parses a family name; null when the name is not of this family.</summary>
    public static TensorCodec? TryCreate(string name)
    {
        var m = NamePattern().Match(name);
        if (!m.Success) return null;
        int bits = int.Parse(m.Groups[1].Value);
        bool sym = m.Groups[5].Value.Equals("sym", StringComparison.OrdinalIgnoreCase);
        bool mse = m.Groups[6].Success;
        if (m.Groups[2].Success)
        {
            int g = int.Parse(m.Groups[2].Value);
            if (g < 1 || g > 1 << 20) throw new LowbitException($"'{name}': group size must be between 1 and {1 << 20}.");
            return new IntGroupCodec(bits, g, sym, mse);
        }
        return new IntAffineCodec(bits, m.Groups[3].Success ? IntGranularity.Channel : IntGranularity.Tensor, sym, mse);
    }

    internal static string Suffix(bool symmetric, bool mse) => (symmetric ? "sym" : "asym") + (mse ? "-mse" : "");
}

/// <summary>
/// Integer affine with one scale (and zero point) per group of <see cref="GroupSize"/> consecutive
/// values of a row. Block layout (one group): FP16 scale (2 bytes, LE); for asym a u8 zero point;
/// then ⌈G·bits/8⌉ bytes of codes packed LSB-first (code i at bits [i·bits, (i+1)·bits), so 4-bit
/// codes are low nibble first). Value = (code − zero)·scale; symmetric zero = 2^(bits−1), not stored.
/// </summary>
public sealed class IntGroupCodec : TensorCodec
{
    public IntGroupCodec(int bits, int groupSize, bool symmetric, bool mse)
    {
        if (bits is not (2 or 3 or 4 or 8)) throw new LowbitException($"int codec: unsupported bit width {bits} (2, 3, 4 or 8).");
        if (groupSize < 1) throw new LowbitException($"int codec: group size {groupSize} must be positive.");
        Bits = bits;
        GroupSize = groupSize;
        Symmetric = symmetric;
        Mse = mse;
    }

    public int Bits { get; }
    public int GroupSize { get; }
    public bool Symmetric { get; }
    public bool Mse { get; }

    public override string Name => $"int{Bits}-g{GroupSize}-{IntCodecFamily.Suffix(Symmetric, Mse)}";
    public override int BlockSize => GroupSize;
    public override int BlockBytes => ParamBytes + CodeBytes;
    public override bool UsesImportance => Mse;

    /// <summary>Bytes of the per-group parameters (FP16 scale, u8 zero for asym).</summary>
    public int ParamBytes => Symmetric ? 2 : 3;
    public int CodeBytes => (GroupSize * Bits + 7) / 8;

    /// <summary>(scale, zero) for one group, as this codec would store them (FP16 scale).</summary>
    public (float Scale, int Zero) ComputeGroupParams(ReadOnlySpan<float> group, ReadOnlySpan<float> importance)
        => IntQuant.GroupParams(group, Bits, Symmetric, Mse, importance, fp16Scale: true);

    /// <summary>Writes one block from its parameters and codes (for GPTQ-style callers choosing codes).</summary>
    public void WriteBlock(Span<byte> block, float scale, int zero, ReadOnlySpan<byte> codes)
    {
        BinaryPrimitives.WriteHalfLittleEndian(block, (Half)scale);
        if (!Symmetric) block[2] = checked((byte)zero);
        IntQuant.PackBits(codes, Bits, block.Slice(ParamBytes, CodeBytes));
    }

    /// <summary>Reads one block's (scale, zero).</summary>
    public (float Scale, int Zero) ReadBlockParams(ReadOnlySpan<byte> block)
        => ((float)BinaryPrimitives.ReadHalfLittleEndian(block), Symmetric ? 1 << (Bits - 1) : block[2]);

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        long rowBytes = RowBytes(cols);
        int groups = cols / GroupSize;
        Span<byte> codes = GroupSize <= 4096 ? stackalloc byte[GroupSize] : new byte[GroupSize];
        for (int r = 0; r < src.Length / cols; r++)
        {
            for (int g = 0; g < groups; g++)
            {
                var x = src.Slice(r * cols + g * GroupSize, GroupSize);
                var imp = importance.IsEmpty ? default : importance.Slice(g * GroupSize, GroupSize);
                var (scale, zero) = ComputeGroupParams(x, imp);
                for (int i = 0; i < GroupSize; i++) codes[i] = (byte)IntQuant.QuantizeValue(x[i], scale, zero, Bits);
                WriteBlock(dst.Slice((int)(r * rowBytes) + g * BlockBytes, BlockBytes), scale, zero, codes);
            }
        }
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        int nb = src.Length / BlockBytes;
        for (int b = 0; b < nb; b++)
        {
            var block = src.Slice(b * BlockBytes, BlockBytes);
            var (scale, zero) = ReadBlockParams(block);
            var codes = block.Slice(ParamBytes);
            var y = dst.Slice(b * GroupSize, GroupSize);
            for (int i = 0; i < GroupSize; i++) y[i] = IntQuant.DequantizeValue(IntQuant.ReadBits(codes, i, Bits), scale, zero);
        }
    }

    /// <summary>Σ over groups of scale·(Σ code·x − zero·Σ x), the codes dotted by <see cref="IntKernels.DotCodes"/>.</summary>
    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => Dot(row, x, vector: true);

    /// <summary>Same as <see cref="DotRow"/> with scalar code kernels (the reference for tests).</summary>
    public float DotRowScalar(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => Dot(row, x, vector: false);

    private float Dot(ReadOnlySpan<byte> row, ReadOnlySpan<float> x, bool vector)
    {
        float sum = 0;
        for (int b = 0, c = 0; c < x.Length; b += BlockBytes, c += GroupSize)
        {
            var block = row.Slice(b, BlockBytes);
            var (scale, zero) = ReadBlockParams(block);
            var xs = x.Slice(c, GroupSize);
            var codes = block.Slice(ParamBytes);
            float qx = vector ? IntKernels.DotCodes(codes, Bits, xs) : IntKernels.DotCodesScalar(codes, Bits, xs);
            float sx = vector ? TensorPrimitives.Sum(xs) : ScalarSum(xs);
            sum += scale * (qx - zero * sx);
        }
        return sum;
    }

    internal static float ScalarSum(ReadOnlySpan<float> x)
    {
        float s = 0;
        foreach (float v in x) s += v;
        return s;
    }
}

/// <summary>Scale granularity of <see cref="IntAffineCodec"/>.</summary>
public enum IntGranularity
{
    /// <summary>One scale (and zero) per row = per output channel.</summary>
    Channel,
    /// <summary>One scale (and zero) for the whole tensor.</summary>
    Tensor,
}

/// <summary>
/// Integer affine with per-row ("channel") or per-tensor parameters; a tensor-level codec.
/// Layout: header, then each row's codes packed LSB-first (cols·bits/8 bytes; cols must be a
/// multiple of 8). Header, channel: rows × FP32 scale, then (asym) rows × u8 zero point.
/// Header, tensor: one FP32 scale, then (asym) one u8 zero point. Value = (code − zero)·scale;
/// symmetric zero = 2^(bits−1), not stored. Scales are FP32 (they are few).
/// The per-tensor MSE search weighs all values equally (importance is per column, the range
/// is tensor-wide); per-channel MSE uses the importance vector.
/// </summary>
public sealed class IntAffineCodec : TensorLevelCodec
{
    public IntAffineCodec(int bits, IntGranularity granularity, bool symmetric, bool mse)
    {
        if (bits is not (2 or 3 or 4 or 8)) throw new LowbitException($"int codec: unsupported bit width {bits} (2, 3, 4 or 8).");
        Bits = bits;
        Granularity = granularity;
        Symmetric = symmetric;
        Mse = mse;
    }

    public int Bits { get; }
    public IntGranularity Granularity { get; }
    public bool Symmetric { get; }
    public bool Mse { get; }

    public override string Name =>
        $"int{Bits}-{(Granularity == IntGranularity.Channel ? "channel" : "tensor")}-{IntCodecFamily.Suffix(Symmetric, Mse)}";
    public override int BlockSize => 8;
    public override int BlockBytes => Bits;
    public override bool UsesImportance => Mse && Granularity == IntGranularity.Channel;

    private long ParamCount(long rows) => Granularity == IntGranularity.Channel ? rows : 1;

    public override long HeaderBytes(long rows, int cols) => ParamCount(rows) * (Symmetric ? 4 : 5);

    /// <summary>(scale, zero) for one parameter set over <paramref name="values"/>, as stored (FP32 scale).</summary>
    public (float Scale, int Zero) ComputeParams(ReadOnlySpan<float> values, ReadOnlySpan<float> importance)
        => IntQuant.GroupParams(values, Bits, Symmetric, Mse, importance, fp16Scale: false);

    /// <summary>(scale, zero) of parameter set p (row p for channel, 0 for tensor).</summary>
    public (float Scale, int Zero) ReadParams(ReadOnlySpan<byte> tensor, long rows, long p)
    {
        float scale = BinaryPrimitives.ReadSingleLittleEndian(tensor.Slice(checked((int)(4 * p))));
        int zero = Symmetric ? 1 << (Bits - 1) : tensor[checked((int)(4 * ParamCount(rows) + p))];
        return (scale, zero);
    }

    /// <summary>
    /// Writes a complete tensor from codes chosen elsewhere (e.g. by GPTQ): codes holds rows × cols
    /// values in 0..2^bits−1; scales/zeros hold one entry per parameter set (rows, or 1).
    /// zeros is ignored for symmetric codecs.
    /// </summary>
    public void PackTensor(ReadOnlySpan<byte> codes, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeros, long rows, int cols, Span<byte> dst)
    {
        CheckShape(codes.Length, cols);
        CheckEncoded(dst.Length, rows, cols);
        long n = ParamCount(rows);
        for (long p = 0; p < n; p++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(dst.Slice(checked((int)(4 * p))), scales[(int)p]);
            if (!Symmetric) dst[checked((int)(4 * n + p))] = checked((byte)zeros[(int)p]);
        }
        for (long r = 0; r < rows; r++)
            IntQuant.PackBits(codes.Slice(checked((int)(r * cols)), cols), Bits,
                dst.Slice(checked((int)RowOffset(rows, cols, r)), checked((int)RowBytes(cols))));
    }

    public override void QuantizeTensor(ReadOnlySpan<float> src, Span<byte> dst, long rows, int cols, ReadOnlySpan<float> importance)
    {
        CheckShape(src.Length, cols);
        CheckEncoded(dst.Length, rows, cols);
        long n = ParamCount(rows);
        (float Scale, int Zero) shared = Granularity == IntGranularity.Tensor ? ComputeParams(src, default) : default;
        var codes = new byte[cols];
        for (long r = 0; r < rows; r++)
        {
            var x = src.Slice(checked((int)(r * cols)), cols);
            var (s, z) = Granularity == IntGranularity.Tensor ? shared : ComputeParams(x, importance);
            long p = Granularity == IntGranularity.Tensor ? 0 : r;
            if (p == r || r == 0)
            {
                BinaryPrimitives.WriteSingleLittleEndian(dst.Slice(checked((int)(4 * p))), s);
                if (!Symmetric) dst[checked((int)(4 * n + p))] = (byte)z;
            }
            for (int i = 0; i < cols; i++) codes[i] = (byte)IntQuant.QuantizeValue(x[i], s, z, Bits);
            IntQuant.PackBits(codes, Bits, dst.Slice(checked((int)RowOffset(rows, cols, r)), checked((int)RowBytes(cols))));
        }
    }

    public override void DequantizeTensorRows(ReadOnlySpan<byte> tensor, long rows, int cols, long rowStart, int rowCount, Span<float> dst)
    {
        CheckEncoded(tensor.Length, rows, cols);
        for (int i = 0; i < rowCount; i++)
        {
            long r = rowStart + i;
            var (scale, zero) = ReadParams(tensor, rows, Granularity == IntGranularity.Channel ? r : 0);
            var codes = tensor.Slice(checked((int)RowOffset(rows, cols, r)));
            var y = dst.Slice(i * cols, cols);
            for (int c = 0; c < cols; c++) y[c] = IntQuant.DequantizeValue(IntQuant.ReadBits(codes, c, Bits), scale, zero);
        }
    }

    public override float DotTensorRow(ReadOnlySpan<byte> tensor, long rows, int cols, long row, ReadOnlySpan<float> x)
    {
        var (scale, zero) = ReadParams(tensor, rows, Granularity == IntGranularity.Channel ? row : 0);
        var codes = tensor.Slice(checked((int)RowOffset(rows, cols, row)), checked((int)RowBytes(cols)));
        return scale * (IntKernels.DotCodes(codes, Bits, x) - zero * TensorPrimitives.Sum(x));
    }
}
