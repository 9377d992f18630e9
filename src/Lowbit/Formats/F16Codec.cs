using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Lowbit.Formats;

/// <summary>
/// IEEE binary16, round-to-nearest-even from F32 (what ggml's F16C path and its scalar fallback
/// produce). Conversions go through <see cref="TensorPrimitives"/>, which vectorizes the bit
/// manipulation with Vector128/256/512 (.NET 10 exposes no F16C intrinsics class); the scalar
/// <see cref="Half"/> casts are the reference the tests hold them to.
/// </summary>
public sealed class F16Codec : TensorCodec
{
    /// <summary>Values converted per stack chunk in <see cref="DotRow"/>.</summary>
    private const int DotChunk = 256;

    public override string Name => "f16";
    public override GgmlType? Ggml => GgmlType.F16;
    public override int BlockSize => 1;
    public override int BlockBytes => 2;
    public override bool IsFloat => true;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
        => TensorPrimitives.ConvertToHalf(src, MemoryMarshal.Cast<byte, Half>(dst).Slice(0, src.Length));

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        var s = MemoryMarshal.Cast<byte, Half>(src);
        TensorPrimitives.ConvertToSingle(s, dst.Slice(0, s.Length));
    }

    /// <summary>Scalar reference encoder (one value at a time through <see cref="Half"/>).</summary>
    public static void QuantizeScalar(ReadOnlySpan<float> src, Span<byte> dst)
    {
        var d = MemoryMarshal.Cast<byte, Half>(dst);
        for (int i = 0; i < src.Length; i++) d[i] = (Half)src[i];
    }

    /// <summary>Scalar reference decoder.</summary>
    public static void DequantizeScalar(ReadOnlySpan<byte> src, Span<float> dst)
    {
        var s = MemoryMarshal.Cast<byte, Half>(src);
        for (int i = 0; i < s.Length; i++) dst[i] = (float)s[i];
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        var h = MemoryMarshal.Cast<byte, Half>(row);
        int n = x.Length;
        Span<float> tmp = stackalloc float[DotChunk];
        double sum = 0;
        for (int c = 0; c < n; c += DotChunk)
        {
            int len = Math.Min(DotChunk, n - c);
            TensorPrimitives.ConvertToSingle(h.Slice(c, len), tmp.Slice(0, len));
            sum += TensorPrimitives.Dot(tmp.Slice(0, len), x.Slice(c, len));
        }
        return (float)sum;
    }
}
