using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// Raw FP4 E2M1 ("fp4_e2m1"): no scale, values {0, ±0.5, ±1, ±1.5, ±2, ±3, ±4, ±6}; two values per
/// byte, the first (even index) in the low nibble. Round to nearest, ties to the even code,
/// saturating at ±6; NaN encodes as +0 (E2M1 has no NaN).
/// </summary>
public sealed class Fp4Codec : TensorCodec
{
    public override string Name => "fp4_e2m1";
    public override int BlockSize => 2;
    public override int BlockBytes => 1;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        for (int i = 0; i + 1 < src.Length; i += 2)
            dst[i / 2] = (byte)(E2M1.Encode(src[i]) | (E2M1.Encode(src[i + 1]) << 4));
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        var v = E2M1.Values;
        for (int i = 0; i < src.Length; i++)
        {
            dst[2 * i] = v[src[i] & 0x0F];
            dst[2 * i + 1] = v[src[i] >> 4];
        }
    }

    /// <summary>Scalar fused dot (reference).</summary>
    public static float DotRowScalar(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        var v = E2M1.Values;
        float sum = 0;
        for (int i = 0; i < x.Length / 2; i++) sum += v[row[i] & 0x0F] * x[2 * i] + v[row[i] >> 4] * x[2 * i + 1];
        return sum;
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        if (!Vector256.IsHardwareAccelerated || !Sse2.IsSupported || x.Length < 16) return DotRowScalar(row, x);
        var table = E2M1.DoubledTable;
        var mask = Vector128.Create((byte)0x0F);
        var acc = Vector256<float>.Zero;
        int i = 0;
        for (; i + 16 <= x.Length; i += 16)
        {
            var b = Vector128.CreateScalar(BinaryPrimitives.ReadUInt64LittleEndian(row.Slice(i / 2))).AsByte();
            var codes = Sse2.UnpackLow(b & mask, Vector128.ShiftRightLogical(b, 4)); // 16 codes in order
            var vals = E2M1.Lookup(table, codes);
            acc += E2M1.Low8ToFloat(vals) * Vector256.Create(x.Slice(i, 8))
                 + E2M1.High8ToFloat(vals) * Vector256.Create(x.Slice(i + 8, 8));
        }
        float sum = 0.5f * Vector256.Sum(acc); // the table holds doubled values
        if (i < x.Length) sum += DotRowScalar(row.Slice(i / 2), x.Slice(i));
        return sum;
    }
}
