using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Lowbit.Formats;

/// <summary>
/// ggml Q8_K, the activation format of the k-quant integer dot products: per 256 values a float32
/// scale d, 256 int8 codes (value = d·q) and 16 int16 sums of the codes of each group of 16
/// (bsums, which let the dot kernels apply mins and code offsets without touching the codes).
/// Layout (292 bytes): d f32, qs[256], bsums[16] int16, all little-endian.
/// </summary>
public sealed class Q8_KCodec : TensorCodec
{
    internal const int OffD = 0, OffQs = 4, OffBsums = 260;

    public override string Name => "q8_K";
    public override GgmlType? Ggml => GgmlType.Q8_K;
    public override int BlockSize => KQuantMath.SuperBlock;
    public override int BlockBytes => 292;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        long rowBytes = RowBytes(cols);
        if (src.Length % cols != 0)
            throw new ArgumentException($"{Name}: source length {src.Length} is not a multiple of the row length {cols}.");
        int blocks = src.Length / KQuantMath.SuperBlock;
        if (dst.Length < blocks * (long)BlockBytes)
            throw new ArgumentException($"{Name}: destination holds {dst.Length} bytes, {blocks * (long)BlockBytes} needed.");
        bool simd = Vector256.IsHardwareAccelerated && BitConverter.IsLittleEndian;
        for (int b = 0; b < blocks; b++)
        {
            var x = src.Slice(b * KQuantMath.SuperBlock, KQuantMath.SuperBlock);
            var block = dst.Slice(b * BlockBytes, BlockBytes);
            if (simd) QuantizeBlockSimd(x, block);
            else QuantizeBlock(x, block);
        }
    }

    /// <summary>
    /// <see cref="QuantizeBlock"/> with 8-lane vectors, byte for byte the same (decode quantizes every
    /// activation vector once per matrix, on one thread, while the others wait). The scale comes from the
    /// first value of largest magnitude, as in the scalar loop; NaN inputs go through the scalar path.
    /// </summary>
    internal static unsafe void QuantizeBlockSimd(ReadOnlySpan<float> x, Span<byte> block)
    {
        if (x.Length < KQuantMath.SuperBlock || block.Length < 292) throw new ArgumentException("Q8_K block buffers too small.");
        fixed (float* px = x) fixed (byte* pb = block)
        {
            switch (QuantizeBlockSimd(px, (sbyte*)(pb + OffQs), (short*)(pb + OffBsums), out float d))
            {
                case SimdOutcome.NaN: QuantizeBlock(x, block); return;
                case SimdOutcome.Zero: block.Slice(0, 292).Clear(); return;
                default: BinaryPrimitives.WriteSingleLittleEndian(block, d); return;
            }
        }
    }

    /// <summary>What <see cref="QuantizeBlockSimd(float*, sbyte*, short*, out float)"/> did with a block.</summary>
    internal enum SimdOutcome { Done, Zero, NaN }

    /// <summary>
    /// The vector quantization of one block into separate places: the 256 codes at <paramref name="qs"/>, the 16 sums at
    /// <paramref name="bsums"/>, the scale in <paramref name="d"/>. Writes nothing for an all-zero block
    /// (<see cref="SimdOutcome.Zero"/>: all zero) or one with a NaN (<see cref="SimdOutcome.NaN"/>: the scalar path's).
    /// </summary>
    internal static unsafe SimdOutcome QuantizeBlockSimd(float* px, sbyte* qs, short* bsums, out float d)
    {
        d = 0;
        var absMask = Vector256.Create(0x7FFFFFFF).AsSingle();
        var amaxV = Vector256<float>.Zero;
        var nan = Vector256<float>.Zero;
        for (int j = 0; j < 256; j += 8)
        {
            var v = Vector256.Load(px + j);
            amaxV = Vector256.Max(amaxV, v & absMask);
            nan |= ~Vector256.Equals(v, v);
        }
        if (nan != Vector256<float>.Zero) return SimdOutcome.NaN;
        var m4 = Vector128.Max(amaxV.GetLower(), amaxV.GetUpper());
        m4 = Vector128.Max(m4, Vector128.Shuffle(m4, Vector128.Create(2, 3, 0, 1)));
        float amax = MathF.Max(m4[0], m4[1]);
        if (amax == 0) return SimdOutcome.Zero;
        // The first value of that magnitude, 8 lanes at a time (the scalar loop's choice among equal maxima).
        float max = 0;
        var target = Vector256.Create(amax);
        for (int j = 0; j < 256; j += 8)
        {
            uint hits = Vector256.Equals(Vector256.Load(px + j) & absMask, target).ExtractMostSignificantBits();
            if (hits != 0) { max = px[j + BitOperations.TrailingZeroCount(hits)]; break; }
        }
        float iscale = -127f / max;
        var scale = Vector256.Create(iscale);
        var magic = Vector256.Create(12582912f);
        var mantissa = Vector256.Create(0x007fffff);
        var offset = Vector256.Create(0x00400000);
        var top = Vector256.Create(127);
        for (int j = 0; j < 256; j += 32)
        {
            // KQuantMath.NearestInt on 8 lanes: add 1.5·2^23, read the mantissa.
            var q0 = Vector256.Min((Vector256.AsInt32(Vector256.Load(px + j) * scale + magic) & mantissa) - offset, top);
            var q1 = Vector256.Min((Vector256.AsInt32(Vector256.Load(px + j + 8) * scale + magic) & mantissa) - offset, top);
            var q2 = Vector256.Min((Vector256.AsInt32(Vector256.Load(px + j + 16) * scale + magic) & mantissa) - offset, top);
            var q3 = Vector256.Min((Vector256.AsInt32(Vector256.Load(px + j + 24) * scale + magic) & mantissa) - offset, top);
            var w0 = Vector256.Narrow(q0, q1);
            var w1 = Vector256.Narrow(q2, q3);
            Vector256.Narrow(w0, w1).Store(qs + j);
            // Two groups of 16: sums of the (int16) codes.
            bsums[j / 16] = (short)Vector256.Sum(q0 + q1);
            bsums[j / 16 + 1] = (short)Vector256.Sum(q2 + q3);
        }
        d = 1 / iscale;
        return SimdOutcome.Done;
    }

    /// <summary>
    /// ggml's quantize_row_q8_K_ref for one block: scale −127/max where max is the value of largest
    /// magnitude (so that value maps to −127 exactly), codes nearest_int clamped to ≤ 127, bsums.
    /// An all-zero block is all zero (ggml leaves its bsums unwritten; they are zeroed here).
    /// </summary>
    internal static void QuantizeBlock(ReadOnlySpan<float> x, Span<byte> block)
    {
        float max = 0, amax = 0;
        for (int j = 0; j < KQuantMath.SuperBlock; j++)
        {
            float ax = MathF.Abs(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
        var qs = MemoryMarshal.Cast<byte, sbyte>(block.Slice(OffQs, KQuantMath.SuperBlock));
        if (amax == 0)
        {
            block.Clear();
            return;
        }
        float iscale = -127f / max;
        for (int j = 0; j < KQuantMath.SuperBlock; j++)
            qs[j] = (sbyte)Math.Min(127, KQuantMath.NearestInt(iscale * x[j]));
        for (int g = 0; g < 16; g++)
        {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += qs[16 * g + i];
            BinaryPrimitives.WriteInt16LittleEndian(block.Slice(OffBsums + 2 * g), (short)sum);
        }
        BinaryPrimitives.WriteSingleLittleEndian(block, 1 / iscale);
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        int blocks = src.Length / BlockBytes;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * BlockBytes, BlockBytes);
            float d = BinaryPrimitives.ReadSingleLittleEndian(block);
            var qs = MemoryMarshal.Cast<byte, sbyte>(block.Slice(OffQs, KQuantMath.SuperBlock));
            var y = dst.Slice(b * KQuantMath.SuperBlock, KQuantMath.SuperBlock);
            for (int j = 0; j < KQuantMath.SuperBlock; j++) y[j] = d * qs[j];
        }
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        int blocks = x.Length / KQuantMath.SuperBlock;
        Span<float> q = stackalloc float[KQuantMath.SuperBlock];
        float sum = 0;
        for (int b = 0; b < blocks; b++)
        {
            var block = row.Slice(b * BlockBytes, BlockBytes);
            float d = BinaryPrimitives.ReadSingleLittleEndian(block);
            var qs = MemoryMarshal.Cast<byte, sbyte>(block.Slice(OffQs, KQuantMath.SuperBlock));
            for (int j = 0; j < q.Length; j++) q[j] = qs[j];
            sum += d * System.Numerics.Tensors.TensorPrimitives.Dot(q, x.Slice(b * KQuantMath.SuperBlock, KQuantMath.SuperBlock));
        }
        return sum;
    }
}
