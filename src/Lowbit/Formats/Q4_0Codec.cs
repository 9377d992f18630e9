using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// GGUF Q4_0: 32 values per 18-byte block = fp16 scale d + 16 bytes of 4-bit levels q;
/// value = d·(q − 8). Byte j holds value j in its low nibble and value j+16 in its high nibble.
/// </summary>
public sealed class Q4_0Codec : TensorCodec
{
    public override string Name => "q4_0";
    public override GgmlType? Ggml => GgmlType.Q4_0;
    public override int BlockSize => 32;
    public override int BlockBytes => 18;
    public override bool UsesImportance => true;
    public override TensorCodec? VecDotCodec => CodecRegistry.Get(GgmlType.Q8_0);

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        int rows = LegacyQuantMath.ValidateQuantize(this, src, dst, cols, importance);
        int rowBytes = (int)RowBytes(cols);
        Span<float> weight = stackalloc float[32];
        Span<byte> levels = stackalloc byte[32];
        for (int r = 0; r < rows; r++)
        {
            ReadOnlySpan<float> x = src.Slice(r * cols, cols);
            Span<byte> y = dst.Slice(r * rowBytes, rowBytes);
            if (importance.IsEmpty)
            {
                for (int b = 0; b < cols / 32; b++)
                    QuantizeBlockReference(x.Slice(b * 32, 32), y.Slice(b * 18, 18));
                continue;
            }
            // ggml's quantize_row_q4_0_impl: weights qw·sqrt(σ² + x²) with σ² the row's mean square.
            float sigma2 = LegacyQuantMath.SumOfSquares(x) / cols;
            for (int b = 0; b < cols / 32; b++)
            {
                ReadOnlySpan<float> xb = x.Slice(b * 32, 32);
                ReadOnlySpan<float> qw = importance.Slice(b * 32, 32);
                for (int j = 0; j < 32; j++) weight[j] = qw[j] * MathF.Sqrt(sigma2 + xb[j] * xb[j]);
                float d = LegacyQuantMath.MakeQxQuants(8, xb, levels, weight);
                Span<byte> block = y.Slice(b * 18, 18);
                LegacyQuantMath.WriteHalf(block, 0, d);
                for (int j = 0; j < 16; j++) block[2 + j] = (byte)(levels[j] | (levels[j + 16] << 4));
            }
        }
    }

    /// <summary>ggml's quantize_row_q4_0_ref: d = (signed max)/−8, q = min(15, trunc(x/d + 8.5)).</summary>
    private static void QuantizeBlockReference(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
        {
            float v = x[j];
            if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
        }
        float d = max / -8;
        float id = d != 0 ? 1.0f / d : 0.0f;
        LegacyQuantMath.WriteHalf(block, 0, d);
        // x·id lies in [−8, 8] (up to rounding), so x·id + 8.5 truncates to 0..16 as C's (int8_t) cast does.
        for (int j = 0; j < 16; j++)
        {
            int q0 = Math.Min(15, (int)(x[j] * id + 8.5f));
            int q1 = Math.Min(15, (int)(x[j + 16] * id + 8.5f));
            block[2 + j] = (byte)(q0 | (q1 << 4));
        }
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        LegacyQuantMath.ValidateDequantize(this, src, dst, cols);
        LegacyKernels.Dequantize<Q4_0Block>(src, dst);
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => LegacyKernels.DotF32<Q4_0Block>(row, x);

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) => LegacyKernels.DotQ8<Q4_0Block>(row, xq);

    public override void DotRowsQuantized(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y) => LegacyKernels.DotQ8Rows<Q4_0Block>(rows, count, xq, y);
}

internal readonly unsafe struct Q4_0Block : ILegacyBlock
{
    public static int BlockBytes => 18;
    public static int Groups => 1;
    public static bool HasOffset => false;
    public static Vector256<sbyte> LevelsAvx2(byte* block, int group)
        => Avx2.Subtract(LegacyKernels.NibblesAvx2(block + 2), Vector256.Create((byte)8)).AsSByte();
    public static void LevelsVector128(byte* block, int group, out Vector128<sbyte> first, out Vector128<sbyte> second)
    {
        LegacyKernels.NibblesVector128(block + 2, out var lo, out var hi);
        first = (lo - Vector128.Create((byte)8)).AsSByte();
        second = (hi - Vector128.Create((byte)8)).AsSByte();
    }
    public static void Levels(byte* block, int group, Span<sbyte> levels) => LegacyKernels.Nibbles(block + 2, levels, 8);
    public static float Scale(byte* block, int group) => LegacyKernels.F16(block);
    public static bool ScaleIsLeadingHalf => true;
    public static float Offset(byte* block) => 0f;
    public static int Bias => 8;
    public static Vector256<byte> CodesAvx2(byte* block, int group) => LegacyKernels.NibblesAvx2(block + 2);
}
