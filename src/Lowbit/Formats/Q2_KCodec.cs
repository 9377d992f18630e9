using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// ggml Q2_K: 256 values in 16 groups of 16; 2-bit codes u with value d·sc·u − dmin·m, where each
/// group's 4-bit scale sc and 4-bit min m share one byte (sc low nibble). Layout (84 bytes):
/// scales[16], qs[64] (each half of 128 values: 32 bytes holding codes l, l+32, l+64, l+96 at bit
/// shifts 0, 2, 4, 6), d fp16, dmin fp16.
/// </summary>
public sealed class Q2_KCodec : KQuantCodec
{
    private const int OffScales = 0, OffQs = 16, OffD = 80, OffDmin = 82;

    public override string Name => "q2_K";
    public override GgmlType? Ggml => GgmlType.Q2_K;
    public override int BlockBytes => 84;
    internal override int GroupSize => 16;
    internal override int MaxCode => 3;

    /// <summary>
    /// quantize_row_q2_K_ref (empty importance: make_qkx2_quants with |x| weights and absolute-error
    /// criterion per group, 4-bit scales and mins against their maxima) or quantize_row_q2_K_impl
    /// (make_qkx3_quants with importance·sqrt(σ² + x²) weights, σ² = mean(x²), then make_qp_quants for
    /// the scales and mins).
    /// </summary>
    internal override void QuantizeBlock(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> block)
    {
        Span<byte> codes = stackalloc byte[KQuantMath.SuperBlock];
        Span<float> weights = stackalloc float[KQuantMath.SuperBlock];
        Span<float> scales = stackalloc float[16];
        Span<float> mins = stackalloc float[16];
        var packed = block.Slice(OffScales, 16);
        if (importance.IsEmpty)
        {
            const float q4scale = 15f;
            float maxScale = 0, maxMin = 0;
            for (int i = 0; i < KQuantMath.SuperBlock; i++) weights[i] = MathF.Abs(x[i]);
            for (int half = 0; half < 2; half++)
                KQuantMath.MakeQkxQuantsX8(16, 3, x.Slice(128 * half, 128), weights.Slice(128 * half, 128), codes.Slice(128 * half, 128),
                    scales.Slice(8 * half, 8), mins.Slice(8 * half, 8), -0.5f, 0.1f, 15, useMad: true, qkx3: false);
            for (int g = 0; g < 16; g++)
            {
                if (scales[g] > maxScale) maxScale = scales[g];
                if (mins[g] > maxMin) maxMin = mins[g];
            }
            if (maxScale > 0)
            {
                float iscale = q4scale / maxScale;
                for (int g = 0; g < 16; g++) packed[g] = (byte)KQuantMath.NearestInt(iscale * scales[g]);
                KQuantMath.WriteHalf(block, OffD, maxScale / q4scale);
            }
            else
            {
                packed.Clear();
                KQuantMath.WriteHalf(block, OffD, 0f);
            }
            if (maxMin > 0)
            {
                float iscale = q4scale / maxMin;
                for (int g = 0; g < 16; g++) packed[g] |= (byte)(KQuantMath.NearestInt(iscale * mins[g]) << 4);
                KQuantMath.WriteHalf(block, OffDmin, maxMin / q4scale);
            }
            else
            {
                KQuantMath.WriteHalf(block, OffDmin, 0f);
            }
        }
        else
        {
            Span<float> groupWeight = stackalloc float[16];
            float sumX2 = 0;
            for (int j = 0; j < KQuantMath.SuperBlock; j++) sumX2 += x[j] * x[j];
            float sigma2 = sumX2 / KQuantMath.SuperBlock;
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
                KQuantMath.MakeQkxQuantsX8(16, 3, x.Slice(128 * half, 128), weights.Slice(128 * half, 128), codes.Slice(128 * half, 128),
                    scales.Slice(8 * half, 8), mins.Slice(8 * half, 8), -0.9f, 0.05f, 36, useMad: false, qkx3: true);
            Span<byte> ls = stackalloc byte[16];
            Span<byte> lm = stackalloc byte[16];
            float dm = KQuantMath.MakeQpQuants(16, 15, scales, ls, groupWeight);
            float mm = KQuantMath.MakeQpQuants(16, 15, mins, lm, groupWeight);
            KQuantMath.WriteHalf(block, OffD, dm);
            KQuantMath.WriteHalf(block, OffDmin, mm);
            for (int g = 0; g < 16; g++) packed[g] = (byte)(ls[g] | lm[g] << 4);
        }

        Requantize(x, block, codes);

        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++)
                block[OffQs + 32 * h + l] = (byte)(codes[128 * h + l] | codes[128 * h + l + 32] << 2 | codes[128 * h + l + 64] << 4 | codes[128 * h + l + 96] << 6);
    }

    internal override KQuantGroupGrid GetGroupGrid(ReadOnlySpan<byte> block, int group)
    {
        int sc = block[OffScales + group];
        return new KQuantGroupGrid(KQuantMath.ReadHalf(block, OffD) * (sc & 0xF), KQuantMath.ReadHalf(block, OffDmin) * (sc >> 4), 0, 3);
    }

    internal override int GetCode(ReadOnlySpan<byte> block, int index)
    {
        int h = index >> 7, shift = 2 * ((index >> 5) & 3), l = index & 31;
        return (block[OffQs + 32 * h + l] >> shift) & 3;
    }

    internal override void SetCode(Span<byte> block, int index, int code)
    {
        int h = index >> 7, shift = 2 * ((index >> 5) & 3), l = index & 31;
        ref byte q = ref block[OffQs + 32 * h + l];
        q = (byte)((q & ~(3 << shift)) | (code & 3) << shift);
    }

    internal override void DequantizeBlock(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = KQuantMath.ReadHalf(block, OffD);
        float min = KQuantMath.ReadHalf(block, OffDmin);
        for (int h = 0; h < 2; h++)
        {
            var q = block.Slice(OffQs + 32 * h, 32);
            for (int j = 0; j < 4; j++)
            {
                int shift = 2 * j;
                for (int half = 0; half < 2; half++)
                {
                    int g = 8 * h + 2 * j + half;
                    int sc = block[OffScales + g];
                    float dl = d * (sc & 0xF), ml = min * (sc >> 4);
                    var yg = y.Slice(16 * g, 16);
                    for (int l = 0; l < 16; l++) yg[l] = dl * ((q[16 * half + l] >> shift) & 3) - ml;
                }
            }
        }
    }

    internal override void UnpackForDot(ReadOnlySpan<byte> block, Span<byte> codes, Span<short> scales, Span<short> mins, out float d, out float dmin)
    {
        if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated) KQuantDot.Unpack2Bit(block.Slice(OffQs, 64), codes);
        else UnpackCodesScalar(block, codes);
        for (int g = 0; g < 16; g++)
        {
            int sc = block[OffScales + g];
            scales[g] = (short)(sc & 0xF);
            mins[g] = (short)(sc >> 4);
        }
        d = KQuantMath.ReadHalf(block, OffD);
        dmin = KQuantMath.ReadHalf(block, OffDmin);
    }

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) =>
        Avx2.IsSupported && BitConverter.IsLittleEndian ? DotQ8KAvx2(row, xq) : KQuantDot.DotQ8K(this, row, xq, useSimd: false);

    /// <summary>Fused Q2_K × Q8_K kernel (2-bit codes × int8, 4-bit scales, mins through bsums); bit-identical to the scalar reference.</summary>
    private unsafe float DotQ8KAvx2(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
    {
        int blocks = KQuantDot.CheckQ8Pair(this, row, xq);
        var three = Vector256.Create((byte)3);
        float sum = 0;
        fixed (byte* pr = row)
        fixed (byte* py = xq)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* x = pr + 84 * b;
                byte* y = py + KQuantDot.Q8Bytes * b;
                float d = KQuantMath.FromHalfBits(*(ushort*)(x + OffD));
                float dmin = KQuantMath.FromHalfBits(*(ushort*)(x + OffDmin));
                float yd = *(float*)y;
                short* bsums = (short*)(y + Q8_KCodec.OffBsums);
                int summ = 0;
                for (int g = 0; g < 16; g++) summ += (x[OffScales + g] >> 4) * bsums[g];

                sbyte* yq = (sbyte*)y + Q8_KCodec.OffQs;
                var acc = Vector256<int>.Zero;
                for (int h = 0; h < 2; h++)
                {
                    var q = Avx.LoadVector256(x + OffQs + 32 * h).AsUInt16();
                    for (int j = 0; j < 4; j++)
                    {
                        int k = 4 * h + j;
                        var codes = Avx2.And(Vector256.ShiftRightLogical(q, 2 * j).AsByte(), three);
                        acc = Avx2.Add(acc, KQuantDot.GroupPairAvx2(codes, yq + 32 * k,
                            (short)(x[OffScales + 2 * k] & 0xF), (short)(x[OffScales + 2 * k + 1] & 0xF)));
                    }
                }
                int sumi = Vector256.Sum(acc);
                sum += d * yd * sumi - dmin * yd * summ;
            }
        }
        return sum;
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) =>
        Avx2.IsSupported && Fma.IsSupported && BitConverter.IsLittleEndian ? DotFloatAvx2(row, x) : KQuantDot.DotFloat(this, row, x, useSimd: false);

    /// <summary>Fused Q2_K × float kernel: per group of 16, (d·sc)·Σ u·x − (dmin·m)·Σ x with AVX2+FMA.</summary>
    private unsafe float DotFloatAvx2(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        int blocks = KQuantDot.CheckFloatPair(this, row, x);
        var three = Vector256.Create((byte)3);
        var acc = Vector256<float>.Zero;
        fixed (byte* pr = row)
        fixed (float* px = x)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* blk = pr + 84 * b;
                float* xb = px + KQuantMath.SuperBlock * b;
                float d = KQuantMath.FromHalfBits(*(ushort*)(blk + OffD));
                float dmin = KQuantMath.FromHalfBits(*(ushort*)(blk + OffDmin));
                for (int h = 0; h < 2; h++)
                {
                    var q = Avx.LoadVector256(blk + OffQs + 32 * h).AsUInt16();
                    for (int j = 0; j < 4; j++)
                    {
                        int k = 4 * h + j;
                        var codes = Avx2.And(Vector256.ShiftRightLogical(q, 2 * j).AsByte(), three);
                        float* xk = xb + 32 * k;
                        int sc0 = blk[OffScales + 2 * k], sc1 = blk[OffScales + 2 * k + 1];
                        var sx0 = Avx.Add(Avx.LoadVector256(xk), Avx.LoadVector256(xk + 8));
                        var sx1 = Avx.Add(Avx.LoadVector256(xk + 16), Avx.LoadVector256(xk + 24));
                        acc = Fma.MultiplyAdd(Vector256.Create(d * (sc0 & 0xF)), KQuantDot.Dot16(codes.GetLower(), xk), acc);
                        acc = Fma.MultiplyAddNegated(Vector256.Create(dmin * (sc0 >> 4)), sx0, acc);
                        acc = Fma.MultiplyAdd(Vector256.Create(d * (sc1 & 0xF)), KQuantDot.Dot16(codes.GetUpper(), xk + 16), acc);
                        acc = Fma.MultiplyAddNegated(Vector256.Create(dmin * (sc1 >> 4)), sx1, acc);
                    }
                }
            }
        }
        return Vector256.Sum(acc);
    }
}
