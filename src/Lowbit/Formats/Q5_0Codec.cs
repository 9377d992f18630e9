using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// GGUF Q5_0: 32 values per 22-byte block = fp16 scale d, 32-bit word qh of fifth bits (bit j for
/// value j), 16 bytes of low nibbles (as Q4_0); value = d·(q − 16).
/// </summary>
public sealed class Q5_0Codec : TensorCodec
{
    public override string Name => "q5_0";
    public override GgmlType? Ggml => GgmlType.Q5_0;
    public override int BlockSize => 32;
    public override int BlockBytes => 22;
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
                    QuantizeBlockReference(x.Slice(b * 32, 32), y.Slice(b * 22, 22));
                continue;
            }
            // ggml's quantize_row_q5_0_impl: weighted symmetric search (make_qx_quants, nmax 16).
            float sigma2 = LegacyQuantMath.SumOfSquares(x) / cols;
            for (int b = 0; b < cols / 32; b++)
            {
                ReadOnlySpan<float> xb = x.Slice(b * 32, 32);
                ReadOnlySpan<float> qw = importance.Slice(b * 32, 32);
                for (int j = 0; j < 32; j++) weight[j] = qw[j] * MathF.Sqrt(sigma2 + xb[j] * xb[j]);
                float d = LegacyQuantMath.MakeQxQuants(16, xb, levels, weight);
                Span<byte> block = y.Slice(b * 22, 22);
                LegacyQuantMath.WriteHalf(block, 0, d);
                Pack(levels, block.Slice(2));
            }
        }
    }

    /// <summary>Writes 32 five-bit levels as qh (fifth bits) then 16 nibble bytes.</summary>
    internal static void Pack(ReadOnlySpan<byte> levels, Span<byte> qhAndNibbles)
    {
        uint qh = 0;
        for (int j = 0; j < 16; j++)
        {
            int q0 = levels[j], q1 = levels[j + 16];
            qhAndNibbles[4 + j] = (byte)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= (uint)((q0 & 0x10) >> 4) << j;
            qh |= (uint)((q1 & 0x10) >> 4) << (j + 16);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(qhAndNibbles, qh);
    }

    /// <summary>ggml's quantize_row_q5_0_ref: d = (signed max)/−16, q = min(31, trunc(x/d + 16.5)).</summary>
    private static void QuantizeBlockReference(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
        {
            float v = x[j];
            if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
        }
        float d = max / -16;
        float id = d != 0 ? 1.0f / d : 0.0f;
        LegacyQuantMath.WriteHalf(block, 0, d);
        Span<byte> levels = stackalloc byte[32];
        for (int j = 0; j < 32; j++) levels[j] = (byte)Math.Min(31, (int)(x[j] * id + 16.5f));
        Pack(levels, block.Slice(2));
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        LegacyQuantMath.ValidateDequantize(this, src, dst, cols);
        LegacyKernels.Dequantize<Q5_0Block>(src, dst);
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => LegacyKernels.DotF32<Q5_0Block>(row, x);

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) => LegacyKernels.DotQ8<Q5_0Block>(row, xq);

    public override void DotRowsQuantized(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y) => LegacyKernels.DotQ8Rows<Q5_0Block>(rows, count, xq, y);
}

internal readonly unsafe struct Q5_0Block : ILegacyBlock
{
    public static int BlockBytes => 22;
    public static int Groups => 1;
    public static bool HasOffset => false;
    public static Vector256<sbyte> LevelsAvx2(byte* block, int group)
    {
        Vector256<byte> q = Avx2.Or(LegacyKernels.NibblesAvx2(block + 6), LegacyKernels.HighBitsAvx2(Unsafe.ReadUnaligned<uint>(block + 2)));
        return Avx2.Subtract(q, Vector256.Create((byte)16)).AsSByte();
    }
    public static void LevelsVector128(byte* block, int group, out Vector128<sbyte> first, out Vector128<sbyte> second)
    {
        LegacyKernels.NibblesVector128(block + 6, out var lo, out var hi);
        LegacyKernels.HighBitsVector128(Unsafe.ReadUnaligned<uint>(block + 2), out var hlo, out var hhi);
        first = ((lo | hlo) - Vector128.Create((byte)16)).AsSByte();
        second = ((hi | hhi) - Vector128.Create((byte)16)).AsSByte();
    }
    public static void Levels(byte* block, int group, Span<sbyte> levels) => LegacyKernels.FiveBitLevels(block + 2, levels, 16);
    public static float Scale(byte* block, int group) => LegacyKernels.F16(block);
    public static bool ScaleIsLeadingHalf => true;
    public static float Offset(byte* block) => 0f;
    public static int Bias => 16;
    public static Vector256<byte> CodesAvx2(byte* block, int group)
        => Avx2.Or(LegacyKernels.NibblesAvx2(block + 6), LegacyKernels.HighBitsAvx2(Unsafe.ReadUnaligned<uint>(block + 2)));
}
