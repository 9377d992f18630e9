using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// GGUF Q5_1: 32 values per 24-byte block = fp16 scale d, fp16 offset m, 32-bit qh of fifth bits,
/// 16 bytes of low nibbles; value = d·q + m.
/// </summary>
public sealed class Q5_1Codec : TensorCodec
{
    public override string Name => "q5_1";
    public override GgmlType? Ggml => GgmlType.Q5_1;
    public override int BlockSize => 32;
    public override int BlockBytes => 24;
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
                    QuantizeBlockReference(x.Slice(b * 32, 32), y.Slice(b * 24, 24));
                continue;
            }
            // ggml's quantize_row_q5_1_impl: weighted least-squares scale and offset (make_qkx3_quants).
            float sigma2 = LegacyQuantMath.SumOfSquares(x) / cols;
            for (int b = 0; b < cols / 32; b++)
            {
                ReadOnlySpan<float> xb = x.Slice(b * 32, 32);
                ReadOnlySpan<float> qw = importance.Slice(b * 32, 32);
                for (int j = 0; j < 32; j++) weight[j] = qw[j] * MathF.Sqrt(sigma2 + xb[j] * xb[j]);
                float d = LegacyQuantMath.MakeQkx3Quants(31, xb, weight, levels, out float negMin, levelsAux, -0.9f, 0.05f, 36);
                Span<byte> block = y.Slice(b * 24, 24);
                LegacyQuantMath.WriteHalf(block, 0, d);
                LegacyQuantMath.WriteHalf(block, 2, -negMin);
                Q5_0Codec.Pack(levels, block.Slice(4));
            }
        }
    }

    /// <summary>ggml's quantize_row_q5_1_ref: d = (max − min)/31, m = min, q = trunc((x − min)/d + 0.5).</summary>
    private static void QuantizeBlockReference(ReadOnlySpan<float> x, Span<byte> block)
    {
        float min = float.MaxValue, max = -float.MaxValue;
        for (int j = 0; j < 32; j++)
        {
            float v = x[j];
            if (v < min) min = v;
            if (v > max) max = v;
        }
        float d = (max - min) / 31;
        float id = d != 0 ? 1.0f / d : 0.0f;
        LegacyQuantMath.WriteHalf(block, 0, d);
        LegacyQuantMath.WriteHalf(block, 2, min);
        Span<byte> levels = stackalloc byte[32];
        // ggml casts straight to uint8 without clamping; the level cannot exceed 31 for finite input.
        for (int j = 0; j < 32; j++) levels[j] = (byte)(int)((x[j] - min) * id + 0.5f);
        Q5_0Codec.Pack(levels, block.Slice(4));
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        LegacyQuantMath.ValidateDequantize(this, src, dst, cols);
        LegacyKernels.Dequantize<Q5_1Block>(src, dst);
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => LegacyKernels.DotF32<Q5_1Block>(row, x);

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) => LegacyKernels.DotQ8<Q5_1Block>(row, xq);

    public override void DotRowsQuantized(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y) => LegacyKernels.DotQ8Rows<Q5_1Block>(rows, count, xq, y);
}

internal readonly unsafe struct Q5_1Block : ILegacyBlock
{
    public static int BlockBytes => 24;
    public static int Groups => 1;
    public static bool HasOffset => true;
    public static Vector256<sbyte> LevelsAvx2(byte* block, int group)
        => Avx2.Or(LegacyKernels.NibblesAvx2(block + 8), LegacyKernels.HighBitsAvx2(Unsafe.ReadUnaligned<uint>(block + 4))).AsSByte();
    public static void LevelsVector128(byte* block, int group, out Vector128<sbyte> first, out Vector128<sbyte> second)
    {
        LegacyKernels.NibblesVector128(block + 8, out var lo, out var hi);
        LegacyKernels.HighBitsVector128(Unsafe.ReadUnaligned<uint>(block + 4), out var hlo, out var hhi);
        first = (lo | hlo).AsSByte();
        second = (hi | hhi).AsSByte();
    }
    public static void Levels(byte* block, int group, Span<sbyte> levels) => LegacyKernels.FiveBitLevels(block + 4, levels, 0);
    public static float Scale(byte* block, int group) => LegacyKernels.F16(block);
    public static bool ScaleIsLeadingHalf => true;
    public static float Offset(byte* block) => LegacyKernels.F16(block + 2);
}
