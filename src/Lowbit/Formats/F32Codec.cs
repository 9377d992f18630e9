using System.Runtime.InteropServices;
using System.Numerics.Tensors;

namespace Lowbit.Formats;

/// <summary>IEEE binary32, stored little-endian, one value per "block".</summary>
public sealed class F32Codec : TensorCodec
{
    public override string Name => "f32";
    public override GgmlType? Ggml => GgmlType.F32;
    public override int BlockSize => 1;
    public override int BlockBytes => 4;
    public override bool IsFloat => true;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
        => MemoryMarshal.AsBytes(src).CopyTo(dst);

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
        => MemoryMarshal.Cast<byte, float>(src).CopyTo(dst);

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
        => TensorPrimitives.Dot(MemoryMarshal.Cast<byte, float>(row), x);
}
