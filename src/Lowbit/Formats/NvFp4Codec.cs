using System.Runtime.Intrinsics;

namespace Lowbit.Formats;

/// <summary>
/// NVFP4 in ggml's GGUF layout (type 40, block_nvfp4): blocks of 64 values, 36 bytes = 4 UE4M3
/// scale bytes (one per 16-value sub-block), then 32 bytes of E2M1 codes, 8 per sub-block, where
/// sub-block byte j holds value j in its low nibble and value j+8 in its high nibble. There is no
/// per-tensor scale (see <see cref="NvFp4TensorScaledCodec"/> for the ModelOpt two-level form).
/// Encoding matches quantize_row_nvfp4_ref: UE4M3 scale of amax/6, nearest code (first wins ties).
/// ggml ignores the importance matrix for NVFP4, so this codec does too.
/// </summary>
public sealed class NvFp4Codec : TensorCodec
{
    public const int QK = 64;
    public const int SubBlock = 16;

    public override string Name => "nvfp4";
    public override GgmlType? Ggml => GgmlType.NVFP4;
    public override int BlockSize => QK;
    public override int BlockBytes => 36;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        int nb = src.Length / QK;
        for (int b = 0; b < nb; b++)
        {
            var y = dst.Slice(b * 36, 36);
            for (int s = 0; s < 4; s++)
            {
                var x = src.Slice(b * QK + s * SubBlock, SubBlock);
                float amax = 0f;
                foreach (float v in x) if (amax < MathF.Abs(v)) amax = MathF.Abs(v);
                byte ue = Fp8.GgmlFloatToUE4M3(amax / 6.0f);
                y[s] = ue;
                float d = Fp8.GgmlUE4M3ToFloatHalf(ue);
                if (Vector256.IsHardwareAccelerated)
                {
                    var (lo, hi) = E2M1.ScaledLevels(d);
                    for (int j = 0; j < SubBlock / 2; j++)
                        y[4 + s * 8 + j] = (byte)(E2M1.BestIndexGgml(x[j], lo, hi) | (E2M1.BestIndexGgml(x[j + 8], lo, hi) << 4));
                }
                else
                    for (int j = 0; j < SubBlock / 2; j++)
                        y[4 + s * 8 + j] = (byte)(E2M1.BestIndexGgml(x[j], d) | (E2M1.BestIndexGgml(x[j + 8], d) << 4));
            }
        }
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
        => DequantizeBlocks(src, dst, 1f);

    /// <summary>Dequantizes ggml NVFP4 blocks, multiplying every value by <paramref name="globalScale"/> (1 for ggml).</summary>
    internal static void DequantizeBlocks(ReadOnlySpan<byte> src, Span<float> dst, float globalScale)
    {
        var kv = E2M1.Doubled;
        int nb = src.Length / 36;
        for (int b = 0; b < nb; b++)
        {
            var q = src.Slice(b * 36, 36);
            for (int s = 0; s < 4; s++)
            {
                float d = Fp8.GgmlUE4M3ToFloatHalf(q[s]);
                if (globalScale != 1f) d *= globalScale;
                var y = dst.Slice(b * QK + s * SubBlock, SubBlock);
                for (int j = 0; j < 8; j++)
                {
                    byte c = q[4 + s * 8 + j];
                    y[j] = kv[c & 0x0F] * d;
                    y[j + 8] = kv[c >> 4] * d;
                }
            }
        }
    }

    /// <summary>Scalar fused dot (reference for the vector kernel), without any global scale.</summary>
    public static float DotRowScalar(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        var kv = E2M1.Doubled;
        float sum = 0;
        for (int b = 0, c = 0; c < x.Length; b += 36, c += QK)
        {
            for (int s = 0; s < 4; s++)
            {
                float t = 0;
                int xo = c + s * SubBlock;
                for (int j = 0; j < 8; j++)
                {
                    byte q = row[b + 4 + s * 8 + j];
                    t += kv[q & 0x0F] * x[xo + j] + kv[q >> 4] * x[xo + j + 8];
                }
                sum += t * Fp8.GgmlUE4M3ToFloatHalf(row[b + s]);
            }
        }
        return sum;
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => DotBlocks(row, x);

    /// <summary>Vector fused dot over ggml NVFP4 blocks (no global scale).</summary>
    internal static float DotBlocks(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        if (!Vector256.IsHardwareAccelerated) return DotRowScalar(row, x);
        var table = E2M1.DoubledTable;
        var mask = Vector128.Create((byte)0x0F);
        var acc = Vector256<float>.Zero;
        for (int b = 0, c = 0; c < x.Length; b += 36, c += QK)
        {
            var xs = x.Slice(c, QK);
            for (int half = 0; half < 2; half++)
            {
                // 16 code bytes = sub-blocks 2*half and 2*half+1.
                var q = Vector128.Create(row.Slice(b + 4 + half * 16, 16));
                var lo = E2M1.Lookup(table, q & mask);
                var hi = E2M1.Lookup(table, Vector128.ShiftRightLogical(q, 4));
                int xo = half * 32;
                var s0 = E2M1.Low8ToFloat(lo) * Vector256.Create(xs.Slice(xo, 8))
                       + E2M1.Low8ToFloat(hi) * Vector256.Create(xs.Slice(xo + 8, 8));
                var s1 = E2M1.High8ToFloat(lo) * Vector256.Create(xs.Slice(xo + 16, 8))
                       + E2M1.High8ToFloat(hi) * Vector256.Create(xs.Slice(xo + 24, 8));
                acc += s0 * Vector256.Create(Fp8.GgmlUE4M3ToFloatHalf(row[b + 2 * half]))
                     + s1 * Vector256.Create(Fp8.GgmlUE4M3ToFloatHalf(row[b + 2 * half + 1]));
            }
        }
        return Vector256.Sum(acc);
    }
}
