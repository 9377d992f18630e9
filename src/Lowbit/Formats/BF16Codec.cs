using System.Runtime.InteropServices;

namespace Lowbit.Formats;

/// <summary>bfloat16: the upper 16 bits of binary32, rounded to nearest even (NaN kept quiet), as ggml does.</summary>
public sealed class BF16Codec : TensorCodec
{
    public override string Name => "bf16";
    public override GgmlType? Ggml => GgmlType.BF16;
    public override int BlockSize => 1;
    public override int BlockBytes => 2;
    public override bool IsFloat => true;

    public static ushort FromFloat(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if ((u & 0x7fffffff) > 0x7f800000) return (ushort)((u >> 16) | 64); // quiet NaN
        return (ushort)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
    }

    public static float ToFloat(ushort b) => BitConverter.UInt32BitsToSingle((uint)b << 16);

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        var d = MemoryMarshal.Cast<byte, ushort>(dst);
        for (int i = 0; i < src.Length; i++) d[i] = FromFloat(src[i]);
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        var s = MemoryMarshal.Cast<byte, ushort>(src);
        for (int i = 0; i < s.Length; i++) dst[i] = ToFloat(s[i]);
    }
}
