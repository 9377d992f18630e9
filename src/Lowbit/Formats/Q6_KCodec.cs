using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// ggml Q6_K: 256 values in 16 groups of 16; 6-bit codes u with value d·sc·(u − 32), sc an int8 per
/// group. Layout (210 bytes): ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] int8, d fp16.
/// Each half of 128 values uses 64 ql bytes (values l and l+64 share a byte, likewise l+32 and l+96)
/// and 32 qh bytes (four 2-bit fields for values l, l+32, l+64, l+96).
/// </summary>
public sealed class Q6_KCodec : KQuantCodec
{
    private const int OffQl = 0, OffQh = 128, OffScales = 192, OffD = 208;

    public override string Name => "q6_K";
    public override GgmlType? Ggml => GgmlType.Q6_K;
    public override int BlockBytes => 210;
    internal override int GroupSize => 16;
    internal override int MaxCode => 63;

    /// <summary>
    /// quantize_row_q6_K_ref (empty importance) / quantize_row_q6_K_impl: make_qx_quants per group of 16
    /// (x² weights, or the raw importance), int8 scales against the group scale of largest magnitude
    /// (which maps to −128), then requantization on the stored grid.
    /// </summary>
    internal override void QuantizeBlock(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> block)
    {
        Span<byte> codes = stackalloc byte[KQuantMath.SuperBlock];
        var signedCodes = MemoryMarshal.Cast<byte, sbyte>(codes);
        Span<float> scales = stackalloc float[16];
        for (int half = 0; half < 2; half++)
            KQuantMath.MakeQxQuantsX8(16, 32, x.Slice(128 * half, 128), importance.IsEmpty ? default : importance.Slice(128 * half, 128),
                signedCodes.Slice(128 * half, 128), scales.Slice(8 * half, 8));
        float maxScale = 0, maxAbsScale = 0;
        for (int g = 0; g < 16; g++)
        {
            float scale = scales[g];
            float abs = MathF.Abs(scale);
            if (abs > maxAbsScale)
            {
                maxAbsScale = abs;
                maxScale = scale;
            }
        }
        if (maxAbsScale < KQuantMath.GroupMaxEps)
        {
            block.Clear();
            return;
        }
        float iscale = -128f / maxScale;
        KQuantMath.WriteHalf(block, OffD, 1 / iscale);
        for (int g = 0; g < 16; g++)
            block[OffScales + g] = (byte)(sbyte)Math.Min(127, KQuantMath.NearestInt(iscale * scales[g]));

        Requantize(x, block, codes);

        for (int h = 0; h < 2; h++)
        {
            var c = codes.Slice(128 * h, 128);
            for (int l = 0; l < 32; l++)
            {
                block[OffQl + 64 * h + l] = (byte)((c[l] & 0xF) | (c[l + 64] & 0xF) << 4);
                block[OffQl + 64 * h + l + 32] = (byte)((c[l + 32] & 0xF) | (c[l + 96] & 0xF) << 4);
                block[OffQh + 32 * h + l] = (byte)((c[l] >> 4) | (c[l + 32] >> 4) << 2 | (c[l + 64] >> 4) << 4 | (c[l + 96] >> 4) << 6);
            }
        }
    }

    internal override KQuantGroupGrid GetGroupGrid(ReadOnlySpan<byte> block, int group) =>
        new(KQuantMath.ReadHalf(block, OffD) * (sbyte)block[OffScales + group], 0f, 32, 63);

    internal override int GetCode(ReadOnlySpan<byte> block, int index)
    {
        Locate(index, out int qlIndex, out int nibbleShift, out int qhIndex, out int qhShift);
        return ((block[qlIndex] >> nibbleShift) & 0xF) | ((block[qhIndex] >> qhShift) & 3) << 4;
    }

    internal override void SetCode(Span<byte> block, int index, int code)
    {
        Locate(index, out int qlIndex, out int nibbleShift, out int qhIndex, out int qhShift);
        block[qlIndex] = (byte)((block[qlIndex] & ~(0xF << nibbleShift)) | (code & 0xF) << nibbleShift);
        block[qhIndex] = (byte)((block[qhIndex] & ~(3 << qhShift)) | ((code >> 4) & 3) << qhShift);
    }

    private static void Locate(int index, out int qlIndex, out int nibbleShift, out int qhIndex, out int qhShift)
    {
        int h = index >> 7, quarter = (index >> 5) & 3, l = index & 31;
        qlIndex = OffQl + 64 * h + l + 32 * (quarter & 1);
        nibbleShift = quarter >= 2 ? 4 : 0;
        qhIndex = OffQh + 32 * h + l;
        qhShift = 2 * quarter;
    }

    internal override void DequantizeBlock(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = KQuantMath.ReadHalf(block, OffD);
        for (int h = 0; h < 2; h++)
        {
            var ql = block.Slice(OffQl + 64 * h, 64);
            var qh = block.Slice(OffQh + 32 * h, 32);
            var sc = MemoryMarshal.Cast<byte, sbyte>(block.Slice(OffScales + 8 * h, 8));
            var yh = y.Slice(128 * h, 128);
            for (int l = 0; l < 32; l++)
            {
                int s = l / 16;
                int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
                int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
                int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                yh[l] = d * sc[s] * q1;
                yh[l + 32] = d * sc[s + 2] * q2;
                yh[l + 64] = d * sc[s + 4] * q3;
                yh[l + 96] = d * sc[s + 6] * q4;
            }
        }
    }

    internal override void UnpackForDot(ReadOnlySpan<byte> block, Span<byte> codes, Span<short> scales, Span<short> mins, out float d, out float dmin)
    {
        if (Vector256.IsHardwareAccelerated)
        {
            var low = Vector256.Create((byte)0xF);
            var two = Vector256.Create((byte)3);
            for (int h = 0; h < 2; h++)
            {
                var ql0 = Vector256.Create(block.Slice(OffQl + 64 * h, 32));
                var ql1 = Vector256.Create(block.Slice(OffQl + 64 * h + 32, 32));
                var qh = Vector256.Create(block.Slice(OffQh + 32 * h, 32)).AsUInt16();
                var hi0 = Vector256.ShiftLeft((qh.AsByte() & two).AsUInt16(), 4).AsByte();
                var hi1 = Vector256.ShiftLeft((Vector256.ShiftRightLogical(qh, 2).AsByte() & two).AsUInt16(), 4).AsByte();
                var hi2 = Vector256.ShiftLeft((Vector256.ShiftRightLogical(qh, 4).AsByte() & two).AsUInt16(), 4).AsByte();
                var hi3 = Vector256.ShiftLeft((Vector256.ShiftRightLogical(qh, 6).AsByte() & two).AsUInt16(), 4).AsByte();
                ((ql0 & low) | hi0).CopyTo(codes.Slice(128 * h));
                ((ql1 & low) | hi1).CopyTo(codes.Slice(128 * h + 32));
                ((Vector256.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte() & low) | hi2).CopyTo(codes.Slice(128 * h + 64));
                ((Vector256.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte() & low) | hi3).CopyTo(codes.Slice(128 * h + 96));
            }
        }
        else
        {
            UnpackCodesScalar(block, codes);
        }
        for (int g = 0; g < 16; g++)
        {
            int sc = (sbyte)block[OffScales + g];
            scales[g] = (short)sc;
            mins[g] = (short)(32 * sc);
        }
        d = dmin = KQuantMath.ReadHalf(block, OffD);
    }

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) =>
        Avx2.IsSupported && BitConverter.IsLittleEndian ? DotQ8KAvx2(row, xq) : KQuantDot.DotQ8K(this, row, xq, useSimd: false);

    /// <summary>
    /// Fused Q6_K × Q8_K kernel: 6-bit codes u (0..63) × int8 via pmaddubsw, int8 group scales via pmaddwd,
    /// and the −32 code offset applied once per block as 32·Σ scale·bsum. Bit-identical to the scalar reference
    /// (exact integer sums, same float combination).
    /// </summary>
    private unsafe float DotQ8KAvx2(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
    {
        int blocks = KQuantDot.CheckQ8Pair(this, row, xq);
        var low = Vector256.Create((byte)0x0F);
        var two = Vector256.Create((byte)0x03);
        float sum = 0;
        fixed (byte* pr = row)
        fixed (byte* py = xq)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* x = pr + 210 * b;
                byte* y = py + KQuantDot.Q8Bytes * b;
                sbyte* sc = (sbyte*)(x + OffScales);
                float d = KQuantMath.FromHalfBits(*(ushort*)(x + OffD));
                float yd = *(float*)y;
                short* bsums = (short*)(y + Q8_KCodec.OffBsums);
                int summ = 0;
                for (int g = 0; g < 16; g++) summ += 32 * sc[g] * bsums[g];

                sbyte* yq = (sbyte*)y + Q8_KCodec.OffQs;
                var acc = Vector256<int>.Zero;
                for (int h = 0; h < 2; h++)
                {
                    var ql0 = Avx.LoadVector256(x + OffQl + 64 * h);
                    var ql1 = Avx.LoadVector256(x + OffQl + 64 * h + 32);
                    var qh = Avx.LoadVector256(x + OffQh + 32 * h).AsUInt16();
                    var q1 = Avx2.Or(Avx2.And(ql0, low), Avx2.ShiftLeftLogical(Avx2.And(qh.AsByte(), two).AsUInt16(), 4).AsByte());
                    var q2 = Avx2.Or(Avx2.And(ql1, low), Avx2.ShiftLeftLogical(Avx2.And(Avx2.ShiftRightLogical(qh, 2).AsByte(), two).AsUInt16(), 4).AsByte());
                    var q3 = Avx2.Or(Avx2.And(Avx2.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte(), low),
                        Avx2.ShiftLeftLogical(Avx2.And(Avx2.ShiftRightLogical(qh, 4).AsByte(), two).AsUInt16(), 4).AsByte());
                    var q4 = Avx2.Or(Avx2.And(Avx2.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte(), low),
                        Avx2.ShiftLeftLogical(Avx2.And(Avx2.ShiftRightLogical(qh, 6).AsByte(), two).AsUInt16(), 4).AsByte());
                    sbyte* yh = yq + 128 * h;
                    sbyte* sh = sc + 8 * h;
                    acc = Avx2.Add(acc, KQuantDot.GroupPairAvx2(q1, yh, sh[0], sh[1]));
                    acc = Avx2.Add(acc, KQuantDot.GroupPairAvx2(q2, yh + 32, sh[2], sh[3]));
                    acc = Avx2.Add(acc, KQuantDot.GroupPairAvx2(q3, yh + 64, sh[4], sh[5]));
                    acc = Avx2.Add(acc, KQuantDot.GroupPairAvx2(q4, yh + 96, sh[6], sh[7]));
                }
                int sumi = Vector256.Sum(acc);
                sum += d * yd * sumi - d * yd * summ;
            }
        }
        return sum;
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) =>
        Avx2.IsSupported && Fma.IsSupported && BitConverter.IsLittleEndian ? DotFloatAvx2(row, x) : KQuantDot.DotFloat(this, row, x, useSimd: false);

    /// <summary>Fused Q6_K × float kernel: codes re-centred to int8 (u − 32), per group of 16 (d·sc)·Σ q·x with AVX2+FMA.</summary>
    private unsafe float DotFloatAvx2(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        int blocks = KQuantDot.CheckFloatPair(this, row, x);
        var low = Vector256.Create((byte)0x0F);
        var two = Vector256.Create((byte)0x03);
        var offset = Vector256.Create((byte)32);
        var acc = Vector256<float>.Zero;
        fixed (byte* pr = row)
        fixed (float* px = x)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* blk = pr + 210 * b;
                float* xb = px + KQuantMath.SuperBlock * b;
                sbyte* sc = (sbyte*)(blk + OffScales);
                float d = KQuantMath.FromHalfBits(*(ushort*)(blk + OffD));
                for (int h = 0; h < 2; h++)
                {
                    var ql0 = Avx.LoadVector256(blk + OffQl + 64 * h);
                    var ql1 = Avx.LoadVector256(blk + OffQl + 64 * h + 32);
                    var qh = Avx.LoadVector256(blk + OffQh + 32 * h).AsUInt16();
                    var q1 = Avx2.Or(Avx2.And(ql0, low), Avx2.ShiftLeftLogical(Avx2.And(qh.AsByte(), two).AsUInt16(), 4).AsByte());
                    var q2 = Avx2.Or(Avx2.And(ql1, low), Avx2.ShiftLeftLogical(Avx2.And(Avx2.ShiftRightLogical(qh, 2).AsByte(), two).AsUInt16(), 4).AsByte());
                    var q3 = Avx2.Or(Avx2.And(Avx2.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte(), low),
                        Avx2.ShiftLeftLogical(Avx2.And(Avx2.ShiftRightLogical(qh, 4).AsByte(), two).AsUInt16(), 4).AsByte());
                    var q4 = Avx2.Or(Avx2.And(Avx2.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte(), low),
                        Avx2.ShiftLeftLogical(Avx2.And(Avx2.ShiftRightLogical(qh, 6).AsByte(), two).AsUInt16(), 4).AsByte());
                    float* xh = xb + 128 * h;
                    sbyte* sh = sc + 8 * h;
                    acc = Accumulate(Avx2.Subtract(q1, offset).AsSByte(), xh, d * sh[0], d * sh[1], acc);
                    acc = Accumulate(Avx2.Subtract(q2, offset).AsSByte(), xh + 32, d * sh[2], d * sh[3], acc);
                    acc = Accumulate(Avx2.Subtract(q3, offset).AsSByte(), xh + 64, d * sh[4], d * sh[5], acc);
                    acc = Accumulate(Avx2.Subtract(q4, offset).AsSByte(), xh + 96, d * sh[6], d * sh[7], acc);
                }
            }
        }
        return Vector256.Sum(acc);

        static Vector256<float> Accumulate(Vector256<sbyte> q, float* x, float s0, float s1, Vector256<float> acc)
        {
            acc = Fma.MultiplyAdd(Vector256.Create(s0), KQuantDot.Dot16(q.GetLower(), x), acc);
            return Fma.MultiplyAdd(Vector256.Create(s1), KQuantDot.Dot16(q.GetUpper(), x + 16), acc);
        }
    }
}
