using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// ggml Q5_K: like Q4_K (8 groups of 32, packed 6-bit scales and mins, value d·sc·u − dmin·m) with
/// 5-bit codes. Layout (176 bytes): d fp16, dmin fp16, scales[12], qh[32], qs[128]. The low 4 bits sit
/// in qs as in Q4_K; the fifth bit of value 64c + 32s + l is bit 2c + s of qh[l].
/// </summary>
public sealed class Q5_KCodec : KQuantCodec
{
    private const int OffQh = 16, OffQs = 48;

    public override string Name => "q5_K";
    public override GgmlType? Ggml => GgmlType.Q5_K;
    public override int BlockBytes => 176;
    internal override int GroupSize => 32;
    internal override int MaxCode => 31;

    /// <summary>quantize_row_q5_K_ref (empty importance) or quantize_row_q5_K_impl; the scale choice is Q4_K's with nmax 31.</summary>
    internal override void QuantizeBlock(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> block)
    {
        Span<byte> codes = stackalloc byte[KQuantMath.SuperBlock];
        if (importance.IsEmpty) Q4_KCodec.ChooseScalesReference(x, block, codes, nmax: 31, rmin: -0.5f, nstep: 15);
        else Q4_KCodec.ChooseScalesWeighted(x, importance, block, codes, nmax: 31, clampScaleCodes: true);
        Requantize(x, block, codes);

        var qh = block.Slice(OffQh, 32);
        qh.Clear();
        for (int c = 0; c < 4; c++)
        {
            for (int l = 0; l < 32; l++)
            {
                int l1 = codes[64 * c + l], l2 = codes[64 * c + 32 + l];
                if (l1 > 15) { l1 -= 16; qh[l] |= (byte)(1 << (2 * c)); }
                if (l2 > 15) { l2 -= 16; qh[l] |= (byte)(2 << (2 * c)); }
                block[OffQs + 32 * c + l] = (byte)(l1 | l2 << 4);
            }
        }
    }

    internal override KQuantGroupGrid GetGroupGrid(ReadOnlySpan<byte> block, int group) => Q4_KCodec.GridK4(block, group, 31);

    internal override int GetCode(ReadOnlySpan<byte> block, int index)
    {
        int c = index >> 6, s = (index >> 5) & 1, l = index & 31;
        int low = (block[OffQs + 32 * c + l] >> (4 * s)) & 0xF;
        return low | ((block[OffQh + l] >> (2 * c + s)) & 1) << 4;
    }

    internal override void SetCode(Span<byte> block, int index, int code)
    {
        int c = index >> 6, s = (index >> 5) & 1, l = index & 31;
        ref byte q = ref block[OffQs + 32 * c + l];
        q = (byte)((q & ~(0xF << (4 * s))) | (code & 0xF) << (4 * s));
        int bit = 2 * c + s;
        ref byte h = ref block[OffQh + l];
        h = (byte)((h & ~(1 << bit)) | ((code >> 4) & 1) << bit);
    }

    internal override void DequantizeBlock(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = KQuantMath.ReadHalf(block, 0);
        float min = KQuantMath.ReadHalf(block, 2);
        var packed = block.Slice(4, 12);
        var qh = block.Slice(OffQh, 32);
        for (int c = 0; c < 4; c++)
        {
            KQuantMath.GetScaleMinK4(2 * c, packed, out int sc1, out int m1);
            KQuantMath.GetScaleMinK4(2 * c + 1, packed, out int sc2, out int m2);
            float d1 = d * sc1, min1 = min * m1, d2 = d * sc2, min2 = min * m2;
            int u1 = 1 << (2 * c), u2 = 2 << (2 * c);
            var ql = block.Slice(OffQs + 32 * c, 32);
            var yc = y.Slice(64 * c, 64);
            for (int l = 0; l < 32; l++) yc[l] = d1 * ((ql[l] & 0xF) + ((qh[l] & u1) != 0 ? 16 : 0)) - min1;
            for (int l = 0; l < 32; l++) yc[32 + l] = d2 * ((ql[l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0)) - min2;
        }
    }

    internal override void UnpackForDot(ReadOnlySpan<byte> block, Span<byte> codes, Span<short> scales, Span<short> mins, out float d, out float dmin)
    {
        if (Vector256.IsHardwareAccelerated)
        {
            KQuantDot.UnpackNibbles(block.Slice(OffQs, 128), codes);
            var h = Vector256.Create(block.Slice(OffQh, 32));
            var sixteen = Vector256.Create((byte)16);
            for (int bit = 0; bit < 8; bit++)
            {
                var mask = Vector256.Create((byte)(1 << bit));
                var c = Vector256.Create(codes.Slice(32 * bit, 32));
                (c | (Vector256.Equals(h & mask, mask) & sixteen)).CopyTo(codes.Slice(32 * bit));
            }
        }
        else
        {
            UnpackCodesScalar(block, codes);
        }
        Q4_KCodec.UnpackScalesK4(block, scales, mins, out d, out dmin);
    }

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) =>
        Avx2.IsSupported && BitConverter.IsLittleEndian ? DotQ8KAvx2(row, xq) : KQuantDot.DotQ8K(this, row, xq, useSimd: false);

    /// <summary>Fused Q5_K × Q8_K kernel (Q4_K's scheme plus the fifth bit from qh); bit-identical to the scalar reference.</summary>
    private unsafe float DotQ8KAvx2(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
    {
        int blocks = KQuantDot.CheckQ8Pair(this, row, xq);
        var low = Vector256.Create((byte)0x0F);
        var sixteen = Vector256.Create((byte)16);
        float sum = 0;
        fixed (byte* pr = row)
        fixed (byte* py = xq)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* x = pr + 176 * b;
                byte* y = py + KQuantDot.Q8Bytes * b;
                float d = KQuantMath.FromHalfBits(*(ushort*)x);
                float dmin = KQuantMath.FromHalfBits(*(ushort*)(x + 2));
                float yd = *(float*)y;
                KQuantMath.UnpackScaleMinK4(x + 4, out ulong scales, out ulong mins);
                short* bsums = (short*)(y + Q8_KCodec.OffBsums);
                int summ = 0;
                for (int j = 0; j < 8; j++)
                    summ += (int)((mins >> (8 * j)) & 0xFF) * (bsums[2 * j] + bsums[2 * j + 1]);

                sbyte* yq = (sbyte*)y + Q8_KCodec.OffQs;
                var qh = Avx.LoadVector256(x + OffQh);
                var acc = Vector256<int>.Zero;
                for (int c = 0; c < 4; c++)
                {
                    var q = Avx.LoadVector256(x + OffQs + 32 * c);
                    var mLo = Vector256.Create((byte)(1 << (2 * c)));
                    var mHi = Vector256.Create((byte)(2 << (2 * c)));
                    var lo = Avx2.Or(Avx2.And(q, low), Avx2.And(Avx2.CompareEqual(Avx2.And(qh, mLo), mLo), sixteen));
                    var hi = Avx2.Or(Avx2.And(Avx2.ShiftRightLogical(q.AsUInt16(), 4).AsByte(), low),
                        Avx2.And(Avx2.CompareEqual(Avx2.And(qh, mHi), mHi), sixteen));
                    var plo = Avx2.MultiplyAddAdjacent(lo, Avx.LoadVector256(yq + 64 * c));
                    var phi = Avx2.MultiplyAddAdjacent(hi, Avx.LoadVector256(yq + 64 * c + 32));
                    var sA = Vector256.Create((short)((scales >> (16 * c)) & 0xFF));
                    var sB = Vector256.Create((short)((scales >> (16 * c + 8)) & 0xFF));
                    acc = Avx2.Add(acc, Avx2.Add(Avx2.MultiplyAddAdjacent(plo, sA), Avx2.MultiplyAddAdjacent(phi, sB)));
                }
                int sumi = Vector256.Sum(acc);
                sum += d * yd * sumi - dmin * yd * summ;
            }
        }
        return sum;
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) =>
        Avx2.IsSupported && Fma.IsSupported && BitConverter.IsLittleEndian ? DotFloatAvx2(row, x) : KQuantDot.DotFloat(this, row, x, useSimd: false);

    /// <summary>Fused Q5_K × float kernel: per group of 32, (d·sc)·Σ u·x − (dmin·m)·Σ x with AVX2+FMA.</summary>
    private unsafe float DotFloatAvx2(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        int blocks = KQuantDot.CheckFloatPair(this, row, x);
        var low = Vector256.Create((byte)0x0F);
        var sixteen = Vector256.Create((byte)16);
        var acc = Vector256<float>.Zero;
        fixed (byte* pr = row)
        fixed (float* px = x)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* blk = pr + 176 * b;
                float* xb = px + KQuantMath.SuperBlock * b;
                float d = KQuantMath.FromHalfBits(*(ushort*)blk);
                float dmin = KQuantMath.FromHalfBits(*(ushort*)(blk + 2));
                KQuantMath.UnpackScaleMinK4(blk + 4, out ulong scales, out ulong mins);
                var qh = Avx.LoadVector256(blk + OffQh);
                for (int c = 0; c < 4; c++)
                {
                    var q = Avx.LoadVector256(blk + OffQs + 32 * c);
                    var mLo = Vector256.Create((byte)(1 << (2 * c)));
                    var mHi = Vector256.Create((byte)(2 << (2 * c)));
                    var lo = Avx2.Or(Avx2.And(q, low), Avx2.And(Avx2.CompareEqual(Avx2.And(qh, mLo), mLo), sixteen));
                    var hi = Avx2.Or(Avx2.And(Avx2.ShiftRightLogical(q.AsUInt16(), 4).AsByte(), low),
                        Avx2.And(Avx2.CompareEqual(Avx2.And(qh, mHi), mHi), sixteen));
                    float* xa = xb + 64 * c;
                    float* xh = xa + 32;
                    var qxA = Avx.Add(KQuantDot.Dot16(lo.GetLower(), xa), KQuantDot.Dot16(lo.GetUpper(), xa + 16));
                    var qxB = Avx.Add(KQuantDot.Dot16(hi.GetLower(), xh), KQuantDot.Dot16(hi.GetUpper(), xh + 16));
                    var sxA = Avx.Add(Avx.Add(Avx.LoadVector256(xa), Avx.LoadVector256(xa + 8)), Avx.Add(Avx.LoadVector256(xa + 16), Avx.LoadVector256(xa + 24)));
                    var sxB = Avx.Add(Avx.Add(Avx.LoadVector256(xh), Avx.LoadVector256(xh + 8)), Avx.Add(Avx.LoadVector256(xh + 16), Avx.LoadVector256(xh + 24)));
                    int shift = 16 * c;
                    acc = Fma.MultiplyAdd(Vector256.Create(d * (int)((scales >> shift) & 0xFF)), qxA, acc);
                    acc = Fma.MultiplyAddNegated(Vector256.Create(dmin * (int)((mins >> shift) & 0xFF)), sxA, acc);
                    acc = Fma.MultiplyAdd(Vector256.Create(d * (int)((scales >> (shift + 8)) & 0xFF)), qxB, acc);
                    acc = Fma.MultiplyAddNegated(Vector256.Create(dmin * (int)((mins >> (shift + 8)) & 0xFF)), sxB, acc);
                }
            }
        }
        return Vector256.Sum(acc);
    }
}
