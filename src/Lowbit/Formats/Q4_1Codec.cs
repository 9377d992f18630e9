using System.Runtime.Intrinsics;

namespace Lowbit.Formats;

/// <summary>
/// GGUF Q4_1: 32 values per 20-byte block = fp16 scale d, fp16 offset m, 16 bytes of 4-bit levels q;
/// value = d·q + m. Nibble order as Q4_0 (low nibbles: values 0..15, high nibbles: 16..31).
/// </summary>
public sealed class Q4_1Codec : TensorCodec
{
    public override string Name => "q4_1";
    public override GgmlType? Ggml => GgmlType.Q4_1;
    public override int BlockSize => 32;
    public override int BlockBytes => 20;
    public override bool UsesImportance => true;
    public override TensorCodec? VecDotCodec => CodecRegistry.Get(GgmlType.Q8_1);

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        int rows = LegacyQuantMath.ValidateQuantize(this, src, dst, cols, importance);
        int rowBytes = (int)RowBytes(cols);
        Span<float> weight = stackalloc float[32];
        Span<byte> levels = stackalloc byte[32];
        Span<byte> levelsAux = stackalloc byte[32];
        for (int r = 0; r < rows; r++)
        {
            ReadOnlySpan<float> x = src.Slice(r * cols, cols);
            Span<byte> y = dst.Slice(r * rowBytes, rowBytes);
            if (importance.IsEmpty)
            {
                for (int b = 0; b < cols / 32; b++)
                    QuantizeBlockReference(x.Slice(b * 32, 32), y.Slice(b * 20, 20));
                continue;
            }
            // ggml's quantize_row_q4_1_impl: weighted least-squares scale and offset (make_qkx3_quants).
            float sigma2 = LegacyQuantMath.SumOfSquares(x) / cols;
            for (int b = 0; b < cols / 32; b++)
            {
                ReadOnlySpan<float> xb = x.Slice(b * 32, 32);
                ReadOnlySpan<float> qw = importance.Slice(b * 32, 32);
                for (int j = 0; j < 32; j++) weight[j] = qw[j] * MathF.Sqrt(sigma2 + xb[j] * xb[j]);
                float d = LegacyQuantMath.MakeQkx3Quants(15, xb, weight, levels, out float negMin, levelsAux, -0.9f, 0.05f, 36);
                Span<byte> block = y.Slice(b * 20, 20);
                LegacyQuantMath.WriteHalf(block, 0, d);
                LegacyQuantMath.WriteHalf(block, 2, -negMin);
                for (int j = 0; j < 16; j++) block[4 + j] = (byte)(levels[j] | (levels[j + 16] << 4));
            }
        }
    }

    /// <summary>ggml's quantize_row_q4_1_ref: d = (max − min)/15, m = min, q = min(15, trunc((x − min)/d + 0.5)).</summary>
    private static void QuantizeBlockReference(ReadOnlySpan<float> x, Span<byte> block)
    {
        float min = float.MaxValue, max = -float.MaxValue;
        for (int j = 0; j < 32; j++)
        {
            float v = x[j];
            if (v < min) min = v;
            if (v > max) max = v;
        }
        float d = (max - min) / 15;
        float id = d != 0 ? 1.0f / d : 0.0f;
        LegacyQuantMath.WriteHalf(block, 0, d);
        LegacyQuantMath.WriteHalf(block, 2, min);
        for (int j = 0; j < 16; j++)
        {
            int q0 = Math.Min(15, (int)((x[j] - min) * id + 0.5f));
            int q1 = Math.Min(15, (int)((x[j + 16] - min) * id + 0.5f));
            block[4 + j] = (byte)(q0 | (q1 << 4));
        }
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        LegacyQuantMath.ValidateDequantize(this, src, dst, cols);
        LegacyKernels.Dequantize<Q4_1Block>(src, dst);
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => LegacyKernels.DotF32<Q4_1Block>(row, x);

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) => LegacyKernels.DotQ8<Q4_1Block>(row, xq);

    public override void DotRowsQuantized(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y) => LegacyKernels.DotQ8Rows<Q4_1Block>(rows, count, xq, y);
}

internal readonly unsafe struct Q4_1Block : ILegacyBlock
{
    public static int BlockBytes => 20;
    public static int Groups => 1;
    public static bool HasOffset => true;
    public static Vector256<sbyte> LevelsAvx2(byte* block, int group) => LegacyKernels.NibblesAvx2(block + 4).AsSByte();
    public static void LevelsVector128(byte* block, int group, out Vector128<sbyte> first, out Vector128<sbyte> second)
    {
        LegacyKernels.NibblesVector128(block + 4, out var lo, out var hi);
        first = lo.AsSByte();
        second = hi.AsSByte();
    }
    public static void Levels(byte* block, int group, Span<sbyte> levels) => LegacyKernels.Nibbles(block + 4, levels, 0);
    public static float Scale(byte* block, int group) => LegacyKernels.F16(block);
    public static bool ScaleIsLeadingHalf => true;
    public static float Offset(byte* block) => LegacyKernels.F16(block + 2);
}
