using System.Runtime.InteropServices;

namespace Lowbit.Formats;

/// <summary>IEEE binary16 (round-to-nearest-even from F32, as ggml's F16C path does).</summary>
public sealed class F16Codec : TensorCodec
{
    public override string Name => "f16";
    public override GgmlType? Ggml => GgmlType.F16;
    public override int BlockSize => 1;
    public override int BlockBytes => 2;
    public override bool IsFloat => true;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        var d = MemoryMarshal.Cast<byte, Half>(dst);
        for (int i = 0; i < src.Length; i++) d[i] = (Half)src[i];
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        var s = MemoryMarshal.Cast<byte, Half>(src);
        for (int i = 0; i < s.Length; i++) dst[i] = (float)s[i];
    }
}
