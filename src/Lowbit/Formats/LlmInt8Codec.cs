using System.Buffers.Binary;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Lowbit.Formats;

/// <summary>
/// LLM.int8() (Dettmers et al. 2022, bitsandbytes <c>Linear8bitLt</c>): INT8 weights with one absmax
/// scale per output channel (the w8a8-int8 row layout: FP32 scale, then one code per value), and a
/// mixed-precision decomposition of the activations: values whose magnitude exceeds
/// <see cref="Threshold"/> (6.0 by default, as in the paper and bitsandbytes) stay in F16 and are
/// multiplied with the dequantized weight column in floating point; all other values are quantized
/// to INT8 with a per-token absmax scale that no longer has to cover the outliers.
/// <para>
/// One difference from bitsandbytes, on purpose: bitsandbytes picks outlier <em>columns</em> over the
/// whole batch (a column is outlier for every token if any token exceeds the threshold in it); here each
/// token picks its own outliers. That makes the result of a token independent of which other tokens
/// share its batch, so prefill equals decode exactly; a column that is outlier for one token only keeps
/// the other tokens' (small) values in INT8, where they are represented to within half a step anyway.
/// </para>
/// </summary>
public sealed class LlmInt8Codec : Int8RowCodec
{
    public const float DefaultThreshold = 6f;

    public LlmInt8Codec() : this(DefaultThreshold) { }

    public LlmInt8Codec(float threshold)
    {
        if (!(threshold > 0)) throw new LowbitException($"llm-int8: the outlier threshold must be positive, got {threshold}.");
        Threshold = threshold;
        Activations = new LlmInt8ActivationCodec(threshold);
    }

    /// <summary>Activation magnitude above which a value is kept in F16.</summary>
    public float Threshold { get; }

    public LlmInt8ActivationCodec Activations { get; }

    public override string Name => Threshold == DefaultThreshold
        ? "llm-int8"
        : "llm-int8-t" + Threshold.ToString("0.###", CultureInfo.InvariantCulture);

    public override TensorCodec? VecDotCodec => Activations;

    /// <summary>
    /// w_scale · (x_scale · Σ w·x over the INT8 part + Σ outlier · w over the F16 part). Outlier columns
    /// hold code 0 in the activation's INT8 part, so the integer dot skips them without a mask.
    /// </summary>
    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
    {
        int cols = row.Length - ScaleBytes;
        if (cols <= 0 || xq.Length != Activations.RowBytes(cols))
            throw new LowbitException($"{Name}: weight row of {row.Length} bytes does not match an activation row of {xq.Length} bytes.");
        var codes = row.Slice(ScaleBytes);
        float integerPart = Scale(xq) * W8A8Kernels.DotInt8(codes, xq.Slice(ScaleBytes, cols));
        float outlierPart = 0;
        var outliers = xq.Slice(ScaleBytes + cols);
        int count = BinaryPrimitives.ReadUInt16LittleEndian(outliers);
        for (int k = 0; k < count; k++)
        {
            var e = outliers.Slice(LlmInt8ActivationCodec.CountBytes + k * LlmInt8ActivationCodec.OutlierBytes);
            int col = checked((int)BinaryPrimitives.ReadUInt32LittleEndian(e));
            outlierPart += (float)BinaryPrimitives.ReadHalfLittleEndian(e.Slice(4)) * (sbyte)codes[col];
        }
        return Scale(row) * (integerPart + outlierPart);
    }
}

/// <summary>
/// The activation row of <see cref="LlmInt8Codec"/>: FP32 absmax scale of the non-outlier values, one
/// INT8 code per value (0 at outlier columns), a u16 outlier count, then up to
/// <see cref="MaxOutliers"/> entries of (u32 column, F16 value), columns ascending. All little-endian.
/// A token with more outliers than fit keeps the largest in F16 and quantizes the rest with the
/// INT8 part, so the row size is fixed (the engine quantizes activation rows into fixed slots).
/// </summary>
public sealed class LlmInt8ActivationCodec : TensorCodec
{
    public const int ScaleBytes = 4;
    public const int CountBytes = 2;
    public const int OutlierBytes = 6;

    internal LlmInt8ActivationCodec(float threshold) => Threshold = threshold;

    public float Threshold { get; }

    public override string Name => "llm-int8-act";
    public override int BlockSize => 1;
    public override int BlockBytes => 1;

    /// <summary>
    /// Outlier slots per row: 1/32 of the columns, at least 16 (the paper finds outliers concentrated in
    /// a handful of feature dimensions, at most ~7 per layer input even at 13B).
    /// </summary>
    public static int MaxOutliers(long cols) => (int)Math.Min(ushort.MaxValue, Math.Max(16, cols / 32));

    public override long RowBytes(long cols)
    {
        if (!CanEncodeRow(cols) || cols > uint.MaxValue) throw new ArgumentException($"{Name}: row length {cols} must be positive.");
        return ScaleBytes + cols + CountBytes + (long)OutlierBytes * MaxOutliers(cols);
    }

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        int rowBytes = checked((int)RowBytes(cols));
        if (src.Length % cols != 0) throw new LowbitException($"{Name}: {src.Length} values do not form rows of {cols}.");
        int rows = src.Length / cols;
        if (dst.Length < (long)rows * rowBytes) throw new LowbitException($"{Name}: {rows} rows need {(long)rows * rowBytes} bytes, got {dst.Length}.");
        int slots = MaxOutliers(cols);
        Span<int> picked = slots <= 1024 ? stackalloc int[slots] : new int[slots];
        for (int r = 0; r < rows; r++)
            QuantizeRow(src.Slice(r * cols, cols), dst.Slice(r * rowBytes, rowBytes), picked);
    }

    private void QuantizeRow(ReadOnlySpan<float> x, Span<byte> row, Span<int> picked)
    {
        int cols = x.Length;
        int count = PickOutliers(x, picked);
        var outliers = picked.Slice(0, count);
        outliers.Sort(); // entries in column order; also lets the absmax loop below skip them in one pass

        float amax = 0;
        for (int c = 0, k = 0; c < cols; c++)
        {
            if (k < count && outliers[k] == c) { k++; continue; }
            float a = Math.Abs(x[c]);
            if (a > amax) amax = a;
        }
        float scale = amax > 0 && float.IsFinite(amax) ? amax / 127f : 0f;
        BinaryPrimitives.WriteSingleLittleEndian(row, scale);
        var codes = row.Slice(ScaleBytes, cols);
        W8A8Kernels.EncodeInt8(x, scale == 0 ? 0f : 1f / scale, codes);
        var tail = row.Slice(ScaleBytes + cols);
        tail.Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(tail, (ushort)count);
        for (int k = 0; k < count; k++)
        {
            int c = outliers[k];
            codes[c] = 0;
            var e = tail.Slice(CountBytes + k * OutlierBytes);
            BinaryPrimitives.WriteUInt32LittleEndian(e, (uint)c);
            // F16 as in bitsandbytes' fp16 path; clamp so an extreme value stays finite.
            BinaryPrimitives.WriteHalfLittleEndian(e.Slice(4), (Half)Math.Clamp(x[c], -65504f, 65504f));
        }
    }

    /// <summary>
    /// Columns with |x| &gt; threshold, at most picked.Length of them: when there are more, the largest
    /// magnitudes win (ties to the lower column), so the choice is a pure function of the row.
    /// </summary>
    private int PickOutliers(ReadOnlySpan<float> x, Span<int> picked)
    {
        int count = 0;
        for (int c = 0; c < x.Length; c++)
        {
            float a = Math.Abs(x[c]);
            if (!(a > Threshold)) continue;
            if (count < picked.Length)
            {
                picked[count++] = c;
                continue;
            }
            // Full: replace the weakest kept outlier if this one is larger (a strict > keeps the lower column on ties).
            int weakest = 0;
            for (int k = 1; k < count; k++)
                if (Weaker(x, picked[k], picked[weakest])) weakest = k;
            if (a > Math.Abs(x[picked[weakest]])) picked[weakest] = c;
        }
        return count;
    }

    private static bool Weaker(ReadOnlySpan<float> x, int a, int b)
    {
        float ma = Math.Abs(x[a]), mb = Math.Abs(x[b]);
        return ma < mb || (ma == mb && a > b);
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        int rowBytes = checked((int)RowBytes(cols));
        int rows = dst.Length / cols;
        if (src.Length < (long)rows * rowBytes) throw new LowbitException($"{Name}: {rows} rows need {(long)rows * rowBytes} bytes, got {src.Length}.");
        int slots = MaxOutliers(cols);
        for (int r = 0; r < rows; r++)
        {
            var row = src.Slice(r * rowBytes, rowBytes);
            var x = dst.Slice(r * cols, cols);
            W8A8Kernels.DecodeInt8(row.Slice(ScaleBytes, cols), BinaryPrimitives.ReadSingleLittleEndian(row), x);
            var tail = row.Slice(ScaleBytes + cols);
            int count = BinaryPrimitives.ReadUInt16LittleEndian(tail);
            if (count > slots) throw new LowbitException($"{Name}: row {r} claims {count} outliers, at most {slots} fit.");
            for (int k = 0; k < count; k++)
            {
                var e = tail.Slice(CountBytes + k * OutlierBytes);
                uint c = BinaryPrimitives.ReadUInt32LittleEndian(e);
                if (c >= (uint)cols) throw new LowbitException($"{Name}: row {r} outlier column {c} is past the row length {cols}.");
                x[(int)c] = (float)BinaryPrimitives.ReadHalfLittleEndian(e.Slice(4));
            }
        }
    }
}

/// <summary>Resolves "llm-int8-t&lt;threshold&gt;" (e.g. "llm-int8-t4.5"): LLM.int8() with another outlier threshold.</summary>
public static partial class LlmInt8Family
{
    [GeneratedRegex(@"^llm-int8-t(\d{1,4}(?:\.\d{1,3})?)$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();

    public static TensorCodec? TryCreate(string name)
    {
        var m = NamePattern().Match(name);
        if (!m.Success) return null;
        float t = float.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        if (!(t > 0)) throw new LowbitException($"'{name}': the outlier threshold must be positive.");
        return new LlmInt8Codec(t);
    }
}
