using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Lowbit.Formats;

/// <summary>
/// GGUF IQ4_XS: 256 values per 136-byte super-block = fp16 d, 16-bit scales_h, 4 bytes scales_l,
/// 128 bytes of IQ4_NL-table indices. Each 32-value group g has a 6-bit scale
/// ls = (scales_l nibble g) | (2 bits g of scales_h) &lt;&lt; 4 and values d·(ls − 32)·table[i].
/// Its integer dot pairs with Q8_K (k-quant activations), which this codec leaves to the k-quant family.
/// </summary>
public sealed class IQ4_XSCodec : TensorCodec
{
    public override string Name => "iq4_xs";
    public override GgmlType? Ggml => GgmlType.IQ4_XS;
    public override int BlockSize => 256;
    public override int BlockBytes => 136;
    public override bool UsesImportance => true;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        int rows = LegacyQuantMath.ValidateQuantize(this, src, dst, cols, importance);
        int rowBytes = (int)RowBytes(cols);
        var scratch = new Iq4Scratch(stackalloc float[8], stackalloc float[32], stackalloc byte[256]);
        for (int r = 0; r < rows; r++)
        {
            for (int b = 0; b < cols / 256; b++)
            {
                ReadOnlySpan<float> qw = importance.IsEmpty ? default : importance.Slice(b * 256, 256);
                Iq4Quantizer.Quantize(src.Slice(r * cols + b * 256, 256), qw, dst.Slice(r * rowBytes + b * 136, 136), scratch);
            }
        }
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        LegacyQuantMath.ValidateDequantize(this, src, dst, cols);
        LegacyKernels.Dequantize<IQ4_XSBlock>(src, dst);
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => LegacyKernels.DotF32<IQ4_XSBlock>(row, x);
}

internal readonly unsafe struct IQ4_XSBlock : ILegacyBlock
{
    public static int BlockBytes => 136;
    public static int Groups => 8;
    public static bool HasOffset => false;
    public static Vector256<sbyte> LevelsAvx2(byte* block, int group) => LegacyKernels.Iq4LevelsAvx2(block + 8 + 16 * group);
    public static void LevelsVector128(byte* block, int group, out Vector128<sbyte> first, out Vector128<sbyte> second)
        => LegacyKernels.Iq4LevelsVector128(block + 8 + 16 * group, out first, out second);
    public static void Levels(byte* block, int group, Span<sbyte> levels) => LegacyKernels.Iq4Levels(block + 8 + 16 * group, levels);

    /// <summary>d·(ls − 32) in float, as ggml's dequantize_row_iq4_xs forms it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Scale(byte* block, int group)
    {
        int scalesH = Unsafe.ReadUnaligned<ushort>(block + 2);
        int ls = ((block[4 + group / 2] >> (4 * (group % 2))) & 0x0F) | (((scalesH >> (2 * group)) & 3) << 4);
        return LegacyKernels.F16(block) * (ls - 32);
    }
    public static float Offset(byte* block) => 0f;
}
