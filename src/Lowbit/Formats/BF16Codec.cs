using System.Numerics;
using System.Runtime.InteropServices;

namespace Lowbit.Formats;

/// <summary>
/// bfloat16: the upper 16 bits of binary32, rounded to nearest even (NaN kept quiet), as ggml does.
/// Vector paths use <see cref="Vector{T}"/> integer tricks (widen + shift to decode; add the
/// rounding bias, narrow to encode) and fall back to the scalar helpers for the tail.
/// </summary>
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
        => Encode(src, MemoryMarshal.Cast<byte, ushort>(dst).Slice(0, src.Length));

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        var s = MemoryMarshal.Cast<byte, ushort>(src);
        Decode(s, dst.Slice(0, s.Length));
    }

    /// <summary>Vectorized F32 → BF16 (bit-identical to <see cref="FromFloat"/> per element).</summary>
    public static void Encode(ReadOnlySpan<float> src, Span<ushort> dst)
    {
        var bits = MemoryMarshal.Cast<float, uint>(src);
        int i = 0;
        int w = Vector<uint>.Count;
        if (Vector.IsHardwareAccelerated)
        {
            var absMask = new Vector<uint>(0x7fffffff);
            var infBits = new Vector<uint>(0x7f800000);
            var bias = new Vector<uint>(0x7fff);
            var one = Vector<uint>.One;
            var quiet = new Vector<uint>(64);
            for (; i + 2 * w <= src.Length; i += 2 * w)
            {
                var lo = EncodeLanes(new Vector<uint>(bits.Slice(i, w)), absMask, infBits, bias, one, quiet);
                var hi = EncodeLanes(new Vector<uint>(bits.Slice(i + w, w)), absMask, infBits, bias, one, quiet);
                Vector.Narrow(lo, hi).CopyTo(dst.Slice(i, 2 * w));
            }
        }
        for (; i < src.Length; i++) dst[i] = FromFloat(src[i]);
    }

    private static Vector<uint> EncodeLanes(Vector<uint> u, Vector<uint> absMask, Vector<uint> infBits,
        Vector<uint> bias, Vector<uint> one, Vector<uint> quiet)
    {
        var isNaN = Vector.GreaterThan(u & absMask, infBits);
        var rounded = (u + bias + ((u >> 16) & one)) >> 16;
        var nan = (u >> 16) | quiet;
        return Vector.ConditionalSelect(isNaN, nan, rounded);
    }

    /// <summary>Vectorized BF16 → F32 (exact).</summary>
    public static void Decode(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        var outBits = MemoryMarshal.Cast<float, uint>(dst);
        int i = 0;
        int w = Vector<ushort>.Count;
        if (Vector.IsHardwareAccelerated)
        {
            for (; i + w <= src.Length; i += w)
            {
                Vector.Widen(new Vector<ushort>(src.Slice(i, w)), out var lo, out var hi);
                (lo << 16).CopyTo(outBits.Slice(i));
                (hi << 16).CopyTo(outBits.Slice(i + w / 2));
            }
        }
        for (; i < src.Length; i++) dst[i] = ToFloat(src[i]);
    }

    /// <summary>Fused decode + dot: widens BF16 lanes straight into float multiply-adds.</summary>
    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        var s = MemoryMarshal.Cast<byte, ushort>(row);
        int n = x.Length;
        int i = 0;
        float sum = 0;
        int w = Vector<ushort>.Count;
        if (Vector.IsHardwareAccelerated && n >= w)
        {
            var acc0 = Vector<float>.Zero;
            var acc1 = Vector<float>.Zero;
            for (; i + w <= n; i += w)
            {
                Vector.Widen(new Vector<ushort>(s.Slice(i, w)), out var lo, out var hi);
                acc0 += Vector.AsVectorSingle(lo << 16) * new Vector<float>(x.Slice(i, w / 2));
                acc1 += Vector.AsVectorSingle(hi << 16) * new Vector<float>(x.Slice(i + w / 2, w / 2));
            }
            sum = Vector.Sum(acc0 + acc1);
        }
        for (; i < n; i++) sum += ToFloat(s[i]) * x[i];
        return sum;
    }
}
