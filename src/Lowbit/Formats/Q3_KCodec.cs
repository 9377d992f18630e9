using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// ggml Q3_K: 256 values in 16 groups of 16; 3-bit codes u with value d·(s − 32)·(u − 4), s a 6-bit
/// group scale. Layout (110 bytes): hmask[32] (third bit of value v is bit v/32 of hmask[v%32]),
/// qs[64] (low 2 bits, laid out as in Q2_K), scales[12] (16 × 6 bits: low nibbles in bytes 0–7,
/// top 2 bits in bytes 8–11), d fp16.
/// </summary>
public sealed class Q3_KCodec : KQuantCodec
{
    private const int OffHmask = 0, OffQs = 32, OffScales = 96, OffD = 108;

    public override string Name => "q3_K";
    public override GgmlType? Ggml => GgmlType.Q3_K;
    public override int BlockBytes => 110;
    internal override int GroupSize => 16;
    internal override int MaxCode => 7;

    /// <summary>
    /// quantize_row_q3_K_ref (empty importance: make_q3_quants per group, 6-bit scales against the scale of
    /// largest magnitude, which maps to −32) or quantize_row_q3_K_impl (make_qx_quants with
    /// importance·sqrt(σ² + x²) weights, σ² = 2·mean(x²), then make_qx_quants over the 16 scales).
    /// </summary>
    internal override void QuantizeBlock(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> block)
    {
        Span<byte> codes = stackalloc byte[KQuantMath.SuperBlock];
        var signedCodes = MemoryMarshal.Cast<byte, sbyte>(codes);
        Span<float> scales = stackalloc float[16];
        var packed = block.Slice(OffScales, 12);
        if (importance.IsEmpty)
        {
            float maxScale = 0, amax = 0;
            for (int g = 0; g < 16; g++)
            {
                scales[g] = KQuantMath.MakeQ3Quants(16, 4, x.Slice(16 * g, 16), signedCodes.Slice(16 * g, 16), true);
                float scale = MathF.Abs(scales[g]);
                if (scale > amax)
                {
                    amax = scale;
                    maxScale = scales[g];
                }
            }
            packed.Clear();
            if (maxScale != 0)
            {
                float iscale = -32f / maxScale;
                for (int g = 0; g < 16; g++)
                {
                    // ggml narrows nearest_int to int8_t before clamping.
                    int l = Math.Clamp((int)(sbyte)KQuantMath.NearestInt(iscale * scales[g]), -32, 31) + 32;
                    PackScale(packed, g, l);
                }
                KQuantMath.WriteHalf(block, OffD, 1 / iscale);
            }
            else
            {
                KQuantMath.WriteHalf(block, OffD, 0f);
            }
        }
        else
        {
            Span<float> weights = stackalloc float[KQuantMath.SuperBlock];
            Span<float> groupWeight = stackalloc float[16];
            float sumX2 = 0;
            for (int j = 0; j < KQuantMath.SuperBlock; j++) sumX2 += x[j] * x[j];
            float sigma2 = 2 * sumX2 / KQuantMath.SuperBlock;
            for (int g = 0; g < 16; g++)
            {
                var xg = x.Slice(16 * g, 16);
                var qw = importance.Slice(16 * g, 16);
                var wg = weights.Slice(16 * g, 16);
                for (int l = 0; l < 16; l++) wg[l] = qw[l] * MathF.Sqrt(sigma2 + xg[l] * xg[l]);
                float sumW = 0;
                for (int l = 0; l < 16; l++) sumW += wg[l];
                groupWeight[g] = sumW;
            }
            for (int half = 0; half < 2; half++)
                KQuantMath.MakeQxQuantsX8(16, 4, x.Slice(128 * half, 128), weights.Slice(128 * half, 128),
                    signedCodes.Slice(128 * half, 128), scales.Slice(8 * half, 8));
            packed.Clear();
            Span<sbyte> scaleCodes = stackalloc sbyte[16];
            float dBlock = KQuantMath.MakeQxQuants(16, 32, scales, scaleCodes, 1, groupWeight);
            for (int g = 0; g < 16; g++) PackScale(packed, g, scaleCodes[g]);
            KQuantMath.WriteHalf(block, OffD, dBlock);
        }

        Requantize(x, block, codes);

        var hmask = block.Slice(OffHmask, 32);
        hmask.Clear();
        for (int j = 0; j < KQuantMath.SuperBlock; j++)
        {
            if (codes[j] > 3)
            {
                hmask[j & 31] |= (byte)(1 << (j >> 5));
                codes[j] -= 4;
            }
        }
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++)
                block[OffQs + 32 * h + l] = (byte)(codes[128 * h + l] | codes[128 * h + l + 32] << 2 | codes[128 * h + l + 64] << 4 | codes[128 * h + l + 96] << 6);
    }

    /// <summary>Stores 6-bit scale code <paramref name="l"/> of group <paramref name="g"/> (the bytes must start zeroed).</summary>
    private static void PackScale(Span<byte> packed, int g, int l)
    {
        if (g < 8) packed[g] = (byte)(l & 0xF);
        else packed[g - 8] |= (byte)((l & 0xF) << 4);
        l >>= 4;
        packed[g % 4 + 8] |= (byte)(l << (2 * (g / 4)));
    }

    /// <summary>The signed scale (6-bit code − 32) of group <paramref name="g"/>.</summary>
    private static int UnpackScale(ReadOnlySpan<byte> packed, int g)
    {
        int low = g < 8 ? packed[g] & 0xF : packed[g - 8] >> 4;
        return (low | ((packed[8 + g % 4] >> (2 * (g / 4))) & 3) << 4) - 32;
    }

    internal override KQuantGroupGrid GetGroupGrid(ReadOnlySpan<byte> block, int group) =>
        new(KQuantMath.ReadHalf(block, OffD) * UnpackScale(block.Slice(OffScales, 12), group), 0f, 4, 7);

    internal override int GetCode(ReadOnlySpan<byte> block, int index)
    {
        int h = index >> 7, shift = 2 * ((index >> 5) & 3), l = index & 31;
        int low = (block[OffQs + 32 * h + l] >> shift) & 3;
        return low | ((block[OffHmask + l] >> (index >> 5)) & 1) << 2;
    }

    internal override void SetCode(Span<byte> block, int index, int code)
    {
        int h = index >> 7, shift = 2 * ((index >> 5) & 3), l = index & 31;
        ref byte q = ref block[OffQs + 32 * h + l];
        q = (byte)((q & ~(3 << shift)) | (code & 3) << shift);
        int bit = index >> 5;
        ref byte m = ref block[OffHmask + l];
        m = (byte)((m & ~(1 << bit)) | ((code >> 2) & 1) << bit);
    }

    internal override void DequantizeBlock(ReadOnlySpan<byte> block, Span<float> y)
    {
        float dAll = KQuantMath.ReadHalf(block, OffD);
        var packed = block.Slice(OffScales, 12);
        var hmask = block.Slice(OffHmask, 32);
        for (int h = 0; h < 2; h++)
        {
            var q = block.Slice(OffQs + 32 * h, 32);
            for (int j = 0; j < 4; j++)
            {
                int bit = 1 << (4 * h + j), shift = 2 * j;
                for (int half = 0; half < 2; half++)
                {
                    int g = 8 * h + 2 * j + half;
                    float dl = dAll * UnpackScale(packed, g);
                    var yg = y.Slice(16 * g, 16);
                    for (int l = 0; l < 16; l++)
                    {
                        int idx = 16 * half + l;
                        yg[l] = dl * (((q[idx] >> shift) & 3) - ((hmask[idx] & bit) != 0 ? 0 : 4));
                    }
                }
            }
        }
    }

    internal override void UnpackForDot(ReadOnlySpan<byte> block, Span<byte> codes, Span<short> scales, Span<short> mins, out float d, out float dmin)
    {
        if (Vector256.IsHardwareAccelerated)
        {
            KQuantDot.Unpack2Bit(block.Slice(OffQs, 64), codes);
            var h = Vector256.Create(block.Slice(OffHmask, 32));
            var four = Vector256.Create((byte)4);
            for (int bit = 0; bit < 8; bit++)
            {
                var mask = Vector256.Create((byte)(1 << bit));
                var c = Vector256.Create(codes.Slice(32 * bit, 32));
                (c | (Vector256.Equals(h & mask, mask) & four)).CopyTo(codes.Slice(32 * bit));
            }
        }
        else
        {
            UnpackCodesScalar(block, codes);
        }
        var packed = block.Slice(OffScales, 12);
        for (int g = 0; g < 16; g++)
        {
            int s = UnpackScale(packed, g);
            scales[g] = (short)s;
            mins[g] = (short)(4 * s);
        }
        d = dmin = KQuantMath.ReadHalf(block, OffD);
    }

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) =>
        Avx2.IsSupported && BitConverter.IsLittleEndian ? DotQ8KAvx2(row, xq) : KQuantDot.DotQ8K(this, row, xq, useSimd: false);

    /// <summary>
    /// Fused Q3_K × Q8_K kernel: unsigned 3-bit codes (2 low bits | hmask bit · 4) × int8, signed 6-bit
    /// scales, the −4 code offset applied as 4·Σ scale·bsum. Bit-identical to the scalar reference.
    /// </summary>
    private unsafe float DotQ8KAvx2(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
    {
        int blocks = KQuantDot.CheckQ8Pair(this, row, xq);
        var three = Vector256.Create((byte)3);
        var four = Vector256.Create((byte)4);
        float sum = 0;
        short* scales = stackalloc short[16];
        fixed (byte* pr = row)
        fixed (byte* py = xq)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* x = pr + 110 * b;
                byte* y = py + KQuantDot.Q8Bytes * b;
                float d = KQuantMath.FromHalfBits(*(ushort*)(x + OffD));
                float yd = *(float*)y;

                // 12 bytes → 16 six-bit codes: bytes of a0..a3 are the codes of groups 0..15.
                uint aux0 = *(uint*)(x + OffScales), aux1 = *(uint*)(x + OffScales + 4), tmp = *(uint*)(x + OffScales + 8);
                uint a0 = (aux0 & 0x0f0f0f0fu) | ((tmp & 0x03030303u) << 4);
                uint a1 = (aux1 & 0x0f0f0f0fu) | (((tmp >> 2) & 0x03030303u) << 4);
                uint a2 = ((aux0 >> 4) & 0x0f0f0f0fu) | (((tmp >> 4) & 0x03030303u) << 4);
                uint a3 = ((aux1 >> 4) & 0x0f0f0f0fu) | (((tmp >> 6) & 0x03030303u) << 4);
                short* bsums = (short*)(y + Q8_KCodec.OffBsums);
                int summ = 0;
                for (int g = 0; g < 4; g++)
                {
                    scales[g] = (short)((int)((a0 >> (8 * g)) & 0xFF) - 32);
                    scales[g + 4] = (short)((int)((a1 >> (8 * g)) & 0xFF) - 32);
                    scales[g + 8] = (short)((int)((a2 >> (8 * g)) & 0xFF) - 32);
                    scales[g + 12] = (short)((int)((a3 >> (8 * g)) & 0xFF) - 32);
                }
                for (int g = 0; g < 16; g++) summ += 4 * scales[g] * bsums[g];

                sbyte* yq = (sbyte*)y + Q8_KCodec.OffQs;
                var hm = Avx.LoadVector256(x + OffHmask);
                var acc = Vector256<int>.Zero;
                for (int h = 0; h < 2; h++)
                {
                    var q = Avx.LoadVector256(x + OffQs + 32 * h).AsUInt16();
                    for (int j = 0; j < 4; j++)
                    {
                        int k = 4 * h + j;
                        var m = Vector256.Create((byte)(1 << k));
                        var codes = Avx2.Or(Avx2.And(Vector256.ShiftRightLogical(q, 2 * j).AsByte(), three),
                            Avx2.And(Avx2.CompareEqual(Avx2.And(hm, m), m), four));
                        acc = Avx2.Add(acc, KQuantDot.GroupPairAvx2(codes, yq + 32 * k, scales[2 * k], scales[2 * k + 1]));
                    }
                }
                int sumi = Vector256.Sum(acc);
                sum += d * yd * sumi - d * yd * summ;
            }
        }
        return sum;
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) =>
        Avx2.IsSupported && Fma.IsSupported && BitConverter.IsLittleEndian ? DotFloatAvx2(row, x) : KQuantDot.DotFloat(this, row, x, useSimd: false);

    /// <summary>Fused Q3_K × float kernel: codes re-centred to int8 (u − 4), per group of 16 (d·s)·Σ q·x with AVX2+FMA.</summary>
    private unsafe float DotFloatAvx2(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        int blocks = KQuantDot.CheckFloatPair(this, row, x);
        var three = Vector256.Create((byte)3);
        var four = Vector256.Create((byte)4);
        var acc = Vector256<float>.Zero;
        float* groupScale = stackalloc float[16];
        fixed (byte* pr = row)
        fixed (float* px = x)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* blk = pr + 110 * b;
                float* xb = px + KQuantMath.SuperBlock * b;
                float d = KQuantMath.FromHalfBits(*(ushort*)(blk + OffD));
                uint aux0 = *(uint*)(blk + OffScales), aux1 = *(uint*)(blk + OffScales + 4), tmp = *(uint*)(blk + OffScales + 8);
                uint a0 = (aux0 & 0x0f0f0f0fu) | ((tmp & 0x03030303u) << 4);
                uint a1 = (aux1 & 0x0f0f0f0fu) | (((tmp >> 2) & 0x03030303u) << 4);
                uint a2 = ((aux0 >> 4) & 0x0f0f0f0fu) | (((tmp >> 4) & 0x03030303u) << 4);
                uint a3 = ((aux1 >> 4) & 0x0f0f0f0fu) | (((tmp >> 6) & 0x03030303u) << 4);
                for (int g = 0; g < 4; g++)
                {
                    groupScale[g] = d * ((int)((a0 >> (8 * g)) & 0xFF) - 32);
                    groupScale[g + 4] = d * ((int)((a1 >> (8 * g)) & 0xFF) - 32);
                    groupScale[g + 8] = d * ((int)((a2 >> (8 * g)) & 0xFF) - 32);
                    groupScale[g + 12] = d * ((int)((a3 >> (8 * g)) & 0xFF) - 32);
                }
                var hm = Avx.LoadVector256(blk + OffHmask);
                for (int h = 0; h < 2; h++)
                {
                    var q = Avx.LoadVector256(blk + OffQs + 32 * h).AsUInt16();
                    for (int j = 0; j < 4; j++)
                    {
                        int k = 4 * h + j;
                        var m = Vector256.Create((byte)(1 << k));
                        var codes = Avx2.Or(Avx2.And(Vector256.ShiftRightLogical(q, 2 * j).AsByte(), three),
                            Avx2.And(Avx2.CompareEqual(Avx2.And(hm, m), m), four));
                        var signed = Avx2.Subtract(codes, four).AsSByte();
                        float* xk = xb + 32 * k;
                        acc = Fma.MultiplyAdd(Vector256.Create(groupScale[2 * k]), KQuantDot.Dot16(signed.GetLower(), xk), acc);
                        acc = Fma.MultiplyAdd(Vector256.Create(groupScale[2 * k + 1]), KQuantDot.Dot16(signed.GetUpper(), xk + 16), acc);
                    }
                }
            }
        }
        return Vector256.Sum(acc);
    }
}
