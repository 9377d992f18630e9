using System.Runtime.Intrinsics;

namespace Lowbit.Formats;

/// <summary>
/// MXFP4 in ggml's GGUF layout (type 39, block_mxfp4): blocks of 32 values, 17 bytes =
/// 1 byte E8M0 shared exponent, then 16 bytes of E2M1 codes where byte j holds value j in its
/// low nibble and value j+16 in its high nibble. The scale is 2^(e-127); ggml keeps the E2M1
/// values doubled and multiplies by half the scale. Encoding matches quantize_row_mxfp4_ref:
/// e = floor(log2(amax)) - 2 + 127, then per value the nearest code (first wins ties).
/// ggml ignores the importance matrix for MXFP4, so this codec does too.
/// </summary>
public sealed class MxFp4Codec : TensorCodec
{
    public const int QK = 32;

    public override string Name => "mxfp4";
    public override GgmlType? Ggml => GgmlType.MXFP4;
    public override int BlockSize => QK;
    public override int BlockBytes => 17;

    /// <summary>ggml_e8m0_to_fp32_half: 2^(e-128) as a float, including the two subnormal codes.</summary>
    public static float E8M0ToFloatHalf(byte e)
    {
        uint bits = e < 2 ? 0x00200000u << e : (uint)(e - 1) << 23;
        return BitConverter.UInt32BitsToSingle(bits);
    }

    /// <summary>The shared exponent ggml picks for a block with absolute maximum <paramref name="amax"/>.</summary>
    public static byte ScaleExponent(float amax)
    {
        if (!(amax > 0f)) return 0;
        // ggml: (uint8_t)(floorf(log2f(amax)) - 2 + 127). glibc's log2f is correctly rounded; the
        // double log2 rounded once to float reproduces it (including values just below 2^k that
        // round up to k). The float→uint8 conversion goes through int, as x86 does.
        float l = (float)Math.Log2(amax);
        return unchecked((byte)(int)(MathF.Floor(l) - 2f + 127f));
    }

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        int nb = src.Length / QK;
        for (int b = 0; b < nb; b++)
        {
            var x = src.Slice(b * QK, QK);
            var y = dst.Slice(b * 17, 17);
            float amax = 0f;
            foreach (float v in x) if (amax < MathF.Abs(v)) amax = MathF.Abs(v);
            byte e = ScaleExponent(amax);
            float d = E8M0ToFloatHalf(e);
            y[0] = e;
            if (Vector256.IsHardwareAccelerated)
            {
                var (lo, hi) = E2M1.ScaledLevels(d);
                for (int j = 0; j < QK / 2; j++)
                    y[1 + j] = (byte)(E2M1.BestIndexGgml(x[j], lo, hi) | (E2M1.BestIndexGgml(x[j + QK / 2], lo, hi) << 4));
            }
            else
                for (int j = 0; j < QK / 2; j++)
                    y[1 + j] = (byte)(E2M1.BestIndexGgml(x[j], d) | (E2M1.BestIndexGgml(x[j + QK / 2], d) << 4));
        }
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        var kv = E2M1.Doubled;
        int nb = src.Length / 17;
        for (int b = 0; b < nb; b++)
        {
            var q = src.Slice(b * 17, 17);
            var y = dst.Slice(b * QK, QK);
            float d = E8M0ToFloatHalf(q[0]);
            for (int j = 0; j < QK / 2; j++)
            {
                y[j] = kv[q[1 + j] & 0x0F] * d;
                y[j + QK / 2] = kv[q[1 + j] >> 4] * d;
            }
        }
    }

    /// <summary>Scalar fused dot (reference for the vector kernel).</summary>
    public static float DotRowScalar(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        var kv = E2M1.Doubled;
        float sum = 0;
        for (int b = 0, c = 0; c < x.Length; b += 17, c += QK)
        {
            float s = 0;
            for (int j = 0; j < QK / 2; j++)
            {
                byte q = row[b + 1 + j];
                s += kv[q & 0x0F] * x[c + j] + kv[q >> 4] * x[c + j + QK / 2];
            }
            sum += s * E8M0ToFloatHalf(row[b]);
        }
        return sum;
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        if (!Vector256.IsHardwareAccelerated) return DotRowScalar(row, x);
        var table = E2M1.DoubledTable;
        var mask = Vector128.Create((byte)0x0F);
        var acc = Vector256<float>.Zero;
        for (int b = 0, c = 0; c < x.Length; b += 17, c += QK)
        {
            var q = Vector128.Create(row.Slice(b + 1, 16));
            var lo = E2M1.Lookup(table, q & mask);
            var hi = E2M1.Lookup(table, Vector128.ShiftRightLogical(q, 4));
            var xs = x.Slice(c, QK);
            var p = E2M1.Low8ToFloat(lo) * Vector256.Create(xs.Slice(0, 8))
                  + E2M1.High8ToFloat(lo) * Vector256.Create(xs.Slice(8, 8))
                  + E2M1.Low8ToFloat(hi) * Vector256.Create(xs.Slice(16, 8))
                  + E2M1.High8ToFloat(hi) * Vector256.Create(xs.Slice(24, 8));
            acc += p * Vector256.Create(E8M0ToFloatHalf(row[b]));
        }
        return Vector256.Sum(acc);
    }
}
