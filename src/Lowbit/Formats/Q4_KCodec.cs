using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// ggml Q4_K: 256 values in 8 groups of 32; 4-bit codes u with value d·sc·u − dmin·m, where the
/// 6-bit (sc, m) of each group are packed in 12 bytes. Layout (144 bytes): d fp16, dmin fp16,
/// scales[12], qs[128] (each 32-byte run holds two groups: low nibbles then high nibbles).
/// </summary>
public sealed class Q4_KCodec : KQuantCodec
{
    private const int OffD = 0, OffDmin = 2, OffScales = 4, OffQs = 16;

    public override string Name => "q4_K";
    public override GgmlType? Ggml => GgmlType.Q4_K;
    public override int BlockBytes => 144;
    internal override int GroupSize => 32;
    internal override int MaxCode => 15;

    internal override void QuantizeBlock(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> block)
    {
        Span<byte> codes = stackalloc byte[KQuantMath.SuperBlock];
        if (importance.IsEmpty) ChooseScalesReference(x, block, codes, nmax: 15, rmin: -1f, nstep: 20);
        else ChooseScalesWeighted(x, importance, block, codes, nmax: 15, clampScaleCodes: false);
        Requantize(x, block, codes);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                block[OffQs + 32 * c + l] = (byte)(codes[64 * c + l] | codes[64 * c + 32 + l] << 4);
    }

    /// <summary>
    /// ggml's reference choice of the 8 (scale, min) pairs shared by Q4_K and Q5_K (quantize_row_q4_K_ref /
    /// q5_K_ref): make_qkx2_quants per group with weights rms(x)+|x|, then 6-bit quantization of the
    /// scales and mins against their maxima. Writes d, dmin and the packed scales; leaves the search codes in
    /// <paramref name="codes"/>.
    /// </summary>
    internal static void ChooseScalesReference(ReadOnlySpan<float> x, Span<byte> block, Span<byte> codes, int nmax, float rmin, int nstep)
    {
        Span<float> weights = stackalloc float[KQuantMath.SuperBlock];
        Span<float> scales = stackalloc float[8];
        Span<float> mins = stackalloc float[8];
        for (int j = 0; j < 8; j++)
        {
            var xg = x.Slice(32 * j, 32);
            float sumX2 = 0;
            for (int l = 0; l < 32; l++) sumX2 += xg[l] * xg[l];
            float avX = MathF.Sqrt(sumX2 / 32);
            for (int l = 0; l < 32; l++) weights[32 * j + l] = avX + MathF.Abs(xg[l]);
        }
        KQuantMath.MakeQkxQuantsX8(32, nmax, x, weights, codes, scales, mins, rmin, 0.1f, nstep, useMad: false, qkx3: false);
        float maxScale = 0, maxMin = 0;
        for (int j = 0; j < 8; j++)
        {
            if (scales[j] > maxScale) maxScale = scales[j];
            if (mins[j] > maxMin) maxMin = mins[j];
        }
        float invScale = maxScale > 0 ? 63f / maxScale : 0f;
        float invMin = maxMin > 0 ? 63f / maxMin : 0f;
        Span<byte> ls = stackalloc byte[8];
        Span<byte> lm = stackalloc byte[8];
        for (int j = 0; j < 8; j++)
        {
            // ggml stores nearest_int into a uint8_t before clamping: keep the wrap-around.
            ls[j] = Math.Min((byte)63, (byte)KQuantMath.NearestInt(invScale * scales[j]));
            lm[j] = Math.Min((byte)63, (byte)KQuantMath.NearestInt(invMin * mins[j]));
        }
        KQuantMath.PackScalesMinsK4(ls, lm, block.Slice(OffScales, 12));
        KQuantMath.WriteHalf(block, OffD, maxScale / 63f);
        KQuantMath.WriteHalf(block, OffDmin, maxMin / 63f);
    }

    /// <summary>
    /// ggml's importance-weighted choice of scales shared by Q4_K and Q5_K (quantize_row_q4_K_impl /
    /// q5_K_impl): per-value weight importance·sqrt(σ² + x²) with σ² = 2·mean(x²), make_qkx3_quants per
    /// group, then make_qp_quants for the 6-bit scales and mins weighted by each group's total weight.
    /// </summary>
    internal static void ChooseScalesWeighted(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> block, Span<byte> codes, int nmax, bool clampScaleCodes)
    {
        Span<float> weights = stackalloc float[KQuantMath.SuperBlock];
        Span<float> scales = stackalloc float[8];
        Span<float> mins = stackalloc float[8];
        Span<float> groupWeight = stackalloc float[8];
        float sumX2 = 0;
        for (int l = 0; l < KQuantMath.SuperBlock; l++) sumX2 += x[l] * x[l];
        float sigma2 = 2 * sumX2 / KQuantMath.SuperBlock;
        for (int j = 0; j < 8; j++)
        {
            var xg = x.Slice(32 * j, 32);
            var qw = importance.Slice(32 * j, 32);
            var wg = weights.Slice(32 * j, 32);
            for (int l = 0; l < 32; l++) wg[l] = qw[l] * MathF.Sqrt(sigma2 + xg[l] * xg[l]);
            float sumW = 0;
            for (int l = 0; l < 32; l++) sumW += wg[l];
            groupWeight[j] = sumW;
        }
        KQuantMath.MakeQkxQuantsX8(32, nmax, x, weights, codes, scales, mins, -0.9f, 0.05f, 36, useMad: false, qkx3: true);
        Span<byte> ls = stackalloc byte[8];
        Span<byte> lm = stackalloc byte[8];
        float dBlock = KQuantMath.MakeQpQuants(8, 63, scales, ls, groupWeight);
        float mBlock = KQuantMath.MakeQpQuants(8, 63, mins, lm, groupWeight);
        // Q5_K clamps the 6-bit codes, Q4_K does not (a no-op unless a search returned a negative scale).
        if (clampScaleCodes)
        {
            for (int j = 0; j < 8; j++)
            {
                ls[j] = Math.Min((byte)63, ls[j]);
                lm[j] = Math.Min((byte)63, lm[j]);
            }
        }
        KQuantMath.PackScalesMinsK4(ls, lm, block.Slice(OffScales, 12));
        KQuantMath.WriteHalf(block, OffD, dBlock);
        KQuantMath.WriteHalf(block, OffDmin, mBlock);
    }

    internal static KQuantGroupGrid GridK4(ReadOnlySpan<byte> block, int group, int maxCode)
    {
        KQuantMath.GetScaleMinK4(group, block.Slice(OffScales, 12), out int sc, out int m);
        float d = KQuantMath.ReadHalf(block, OffD) * sc;
        float min = KQuantMath.ReadHalf(block, OffDmin) * m;
        return new KQuantGroupGrid(d, min, 0, maxCode);
    }

    internal static void UnpackScalesK4(ReadOnlySpan<byte> block, Span<short> scales, Span<short> mins, out float d, out float dmin)
    {
        for (int j = 0; j < 8; j++)
        {
            KQuantMath.GetScaleMinK4(j, block.Slice(OffScales, 12), out int sc, out int m);
            scales[2 * j] = scales[2 * j + 1] = (short)sc;
            mins[2 * j] = mins[2 * j + 1] = (short)m;
        }
        d = KQuantMath.ReadHalf(block, OffD);
        dmin = KQuantMath.ReadHalf(block, OffDmin);
    }

    internal override KQuantGroupGrid GetGroupGrid(ReadOnlySpan<byte> block, int group) => GridK4(block, group, 15);

    internal override int GetCode(ReadOnlySpan<byte> block, int index)
    {
        int r = index & 63;
        byte b = block[OffQs + 32 * (index >> 6) + (r & 31)];
        return r < 32 ? b & 0xF : b >> 4;
    }

    internal override void SetCode(Span<byte> block, int index, int code)
    {
        int r = index & 63;
        ref byte b = ref block[OffQs + 32 * (index >> 6) + (r & 31)];
        b = r < 32 ? (byte)((b & 0xF0) | (code & 0xF)) : (byte)((b & 0x0F) | (code & 0xF) << 4);
    }

    internal override void DequantizeBlock(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = KQuantMath.ReadHalf(block, OffD);
        float min = KQuantMath.ReadHalf(block, OffDmin);
        var packed = block.Slice(OffScales, 12);
        for (int c = 0; c < 4; c++)
        {
            KQuantMath.GetScaleMinK4(2 * c, packed, out int sc1, out int m1);
            KQuantMath.GetScaleMinK4(2 * c + 1, packed, out int sc2, out int m2);
            float d1 = d * sc1, min1 = min * m1, d2 = d * sc2, min2 = min * m2;
            var q = block.Slice(OffQs + 32 * c, 32);
            var yc = y.Slice(64 * c, 64);
            for (int l = 0; l < 32; l++) yc[l] = d1 * (q[l] & 0xF) - min1;
            for (int l = 0; l < 32; l++) yc[32 + l] = d2 * (q[l] >> 4) - min2;
        }
    }

    internal override void UnpackForDot(ReadOnlySpan<byte> block, Span<byte> codes, Span<short> scales, Span<short> mins, out float d, out float dmin)
    {
        if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated) KQuantDot.UnpackNibbles(block.Slice(OffQs, 128), codes);
        else UnpackCodesScalar(block, codes);
        UnpackScalesK4(block, scales, mins, out d, out dmin);
    }

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) =>
        Avx2.IsSupported && BitConverter.IsLittleEndian ? DotQ8KAvx2(row, xq) : KQuantDot.DotQ8K(this, row, xq, useSimd: false);

    /// <summary>
    /// Fused Q4_K × Q8_K kernel (ggml's AVX2 scheme: nibbles × int8 with pmaddubsw, group scales with
    /// pmaddwd, mins through the Q8_K bsums). Integer sums are exact and combined per block with the same float
    /// expression as <see cref="KQuantDot.DotQ8K(KQuantCodec, ReadOnlySpan{byte}, ReadOnlySpan{byte}, bool)"/>,
    /// so the result is bit-identical to the scalar reference.
    /// </summary>
    internal unsafe float DotQ8KAvx2(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
    {
        int blocks = KQuantDot.CheckQ8Pair(this, row, xq);
        var low = Vector256.Create((byte)0x0F);
        float sum = 0;
        fixed (byte* pr = row)
        fixed (byte* py = xq)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* x = pr + 144 * b;
                byte* y = py + KQuantDot.Q8Bytes * b;
                float d = KQuantMath.FromHalfBits(*(ushort*)x);
                float dmin = KQuantMath.FromHalfBits(*(ushort*)(x + 2));
                float yd = *(float*)y;

                // 12 packed bytes → 8 scale bytes (scales03, scales47) and 8 min bytes (mins03, mins47).
                KQuantMath.UnpackScaleMinK4(x + 4, out ulong scales, out ulong mins);

                short* bsums = (short*)(y + Q8_KCodec.OffBsums);
                int summ = 0;
                for (int j = 0; j < 8; j++)
                    summ += (int)((mins >> (8 * j)) & 0xFF) * (bsums[2 * j] + bsums[2 * j + 1]);

                var acc = Vector256<int>.Zero;
                for (int c = 0; c < 4; c++)
                {
                    var q = Avx.LoadVector256(x + OffQs + 32 * c);
                    var lo = Avx2.And(q, low);
                    var hi = Avx2.And(Avx2.ShiftRightLogical(q.AsUInt16(), 4).AsByte(), low);
                    var plo = Avx2.MultiplyAddAdjacent(lo, Avx.LoadVector256((sbyte*)y + Q8_KCodec.OffQs + 64 * c));
                    var phi = Avx2.MultiplyAddAdjacent(hi, Avx.LoadVector256((sbyte*)y + Q8_KCodec.OffQs + 64 * c + 32));
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

    public override void DotRowsQuantized(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y)
    {
        if (!(Avx2.IsSupported && BitConverter.IsLittleEndian))
        {
            base.DotRowsQuantized(rows, count, xq, y);
            return;
        }
        if (AvxVnni.IsSupported) DotQ8KRowsVnni(rows, count, xq, y);
        else DotQ8KRowsAvx2(rows, count, xq, y);
    }

    /// <summary><see cref="DotRowsQuantized"/> with pmaddwd for the group scales (AVX2).</summary>
    internal void DotQ8KRowsAvx2(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y) => DotQ8KRows<KQuantDot.MaddScale>(rows, count, xq, y);

    /// <summary><see cref="DotRowsQuantized"/> with vpdpwssd for the group scales (AVX-VNNI).</summary>
    internal void DotQ8KRowsVnni(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y) => DotQ8KRows<KQuantDot.VnniScale>(rows, count, xq, y);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private unsafe void DotQ8KRows<TScale>(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y) where TScale : struct, KQuantDot.IScaledPairs
    {
        int rb = RowsBytesPerRow(rows, count, y);
        int blocks = KQuantDot.CheckQ8Pair(this, rows.Slice(0, rb), xq);
        fixed (byte* pr = rows) fixed (byte* py = xq) fixed (float* out0 = y)
        {
            int r = 0;
            for (; r + 4 <= count; r += 4) DotQ8KRows4<TScale>(pr + (long)r * rb, rb, py, blocks, out0 + r);
            for (; r < count; r++) out0[r] = DotQ8KAvx2(new ReadOnlySpan<byte>(pr + (long)r * rb, rb), xq);
        }
    }

    /// <summary>
    /// Four rows of <see cref="DotQ8KAvx2"/> at once, bit-identical to it: the same exact integers
    /// sumi = Σ_g sc_g·Σ u·q and summ = Σ_g m_g·(bsum_2g + bsum_2g+1) per super-block (computed with
    /// shared activation loads, in-register scale broadcasts and one pmaddwd for the mins), then the
    /// same float expression sum += d·yd·sumi − dmin·yd·summ per row, super-block by super-block.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void DotQ8KRows4<TScale>(byte* w0, int rowBytes, byte* y, int blocks, float* output) where TScale : struct, KQuantDot.IScaledPairs
    {
        var low = Vector256.Create((byte)0x0F);
        float sum0 = 0, sum1 = 0, sum2 = 0, sum3 = 0;
        byte* next = w0 + 4L * rowBytes, prefetch = next;
        for (int b = 0; b < blocks; b++, y += KQuantDot.Q8Bytes)
        {
            byte* x0 = w0 + 144 * b, x1 = x0 + rowBytes, x2 = x1 + rowBytes, x3 = x2 + rowBytes;
            // One pass ahead: the next four (contiguous) rows at this pass's pace (see LegacyKernels.DotQ8Rows4).
            for (byte* target = next + 4L * 144 * (b + 1); prefetch < target; prefetch += 64) Sse.Prefetch0(prefetch);
            float yd = *(float*)y;
            // bsum pairs (one per 32-value group), shared by the four rows: |pair| ≤ 2·16·127, no int16 overflow.
            var bs = Vector256.Load((short*)(y + Q8_KCodec.OffBsums));
            var bsumPairs = Ssse3.HorizontalAdd(bs.GetLower(), bs.GetUpper());
            Vector256<short> sc0 = ScaleWords(x0, bsumPairs, out Vector128<int> m0);
            Vector256<short> sc1 = ScaleWords(x1, bsumPairs, out Vector128<int> m1);
            Vector256<short> sc2 = ScaleWords(x2, bsumPairs, out Vector128<int> m2);
            Vector256<short> sc3 = ScaleWords(x3, bsumPairs, out Vector128<int> m3);
            Vector256<int> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
            sbyte* q = (sbyte*)y + Q8_KCodec.OffQs;
            for (int c = 0; c < 4; c++)
            {
                var qa = Avx.LoadVector256(q + 64 * c);
                var qb = Avx.LoadVector256(q + 64 * c + 32);
                var selA = KQuantDot.WordBroadcast(2 * c);
                var selB = KQuantDot.WordBroadcast(2 * c + 1);
                acc0 = Chunk<TScale>(x0 + OffQs + 32 * c, qa, qb, sc0, selA, selB, low, acc0);
                acc1 = Chunk<TScale>(x1 + OffQs + 32 * c, qa, qb, sc1, selA, selB, low, acc1);
                acc2 = Chunk<TScale>(x2 + OffQs + 32 * c, qa, qb, sc2, selA, selB, low, acc2);
                acc3 = Chunk<TScale>(x3 + OffQs + 32 * c, qa, qb, sc3, selA, selB, low, acc3);
            }
            // Four integer horizontal sums at once (integer addition: any order is exact).
            var h = Avx2.HorizontalAdd(Avx2.HorizontalAdd(acc0, acc1), Avx2.HorizontalAdd(acc2, acc3));
            Vector128<int> sumi = Sse2.Add(h.GetLower(), h.GetUpper());
            Vector128<int> summ = Ssse3.HorizontalAdd(Ssse3.HorizontalAdd(m0, m1), Ssse3.HorizontalAdd(m2, m3));
            sum0 += KQuantMath.FromHalfBitsInline(*(ushort*)x0) * yd * sumi.GetElement(0) - KQuantMath.FromHalfBitsInline(*(ushort*)(x0 + 2)) * yd * summ.GetElement(0);
            sum1 += KQuantMath.FromHalfBitsInline(*(ushort*)x1) * yd * sumi.GetElement(1) - KQuantMath.FromHalfBitsInline(*(ushort*)(x1 + 2)) * yd * summ.GetElement(1);
            sum2 += KQuantMath.FromHalfBitsInline(*(ushort*)x2) * yd * sumi.GetElement(2) - KQuantMath.FromHalfBitsInline(*(ushort*)(x2 + 2)) * yd * summ.GetElement(2);
            sum3 += KQuantMath.FromHalfBitsInline(*(ushort*)x3) * yd * sumi.GetElement(3) - KQuantMath.FromHalfBitsInline(*(ushort*)(x3 + 2)) * yd * summ.GetElement(3);
        }
        output[0] = sum0; output[1] = sum1; output[2] = sum2; output[3] = sum3;
    }

    /// <summary>
    /// The 8 group scales of a block as int16 words in both 128-bit halves (for in-register broadcasts),
    /// and the mins dotted with the bsum pairs as 4 int32 partial sums (their total is summ).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<short> ScaleWords(byte* x, Vector128<short> bsumPairs, out Vector128<int> minTerms)
    {
        KQuantMath.UnpackScaleMinK4(x + 4, out ulong scales, out ulong mins);
        minTerms = Sse2.MultiplyAddAdjacent(Sse41.ConvertToVector128Int16(Vector128.CreateScalar(mins).AsByte()), bsumPairs);
        Vector128<short> s = Sse41.ConvertToVector128Int16(Vector128.CreateScalar(scales).AsByte());
        return Vector256.Create(s, s);
    }

    /// <summary>acc + sc_A·(low nibbles · qa) + sc_B·(high nibbles · qb) over one 32-byte run (two groups), as int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<int> Chunk<TScale>(byte* packed, Vector256<sbyte> qa, Vector256<sbyte> qb, Vector256<short> scaleWords,
        Vector256<byte> selA, Vector256<byte> selB, Vector256<byte> low, Vector256<int> acc) where TScale : struct, KQuantDot.IScaledPairs
    {
        var v = Avx.LoadVector256(packed);
        var lo = Avx2.And(v, low);
        var hi = Avx2.And(Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte(), low);
        var sA = Avx2.Shuffle(scaleWords.AsByte(), selA).AsInt16();
        var sB = Avx2.Shuffle(scaleWords.AsByte(), selB).AsInt16();
        acc = TScale.Add(acc, Avx2.MultiplyAddAdjacent(lo, qa), sA);
        return TScale.Add(acc, Avx2.MultiplyAddAdjacent(hi, qb), sB);
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) =>
        Avx2.IsSupported && Fma.IsSupported && BitConverter.IsLittleEndian ? DotFloatAvx2(row, x) : KQuantDot.DotFloat(this, row, x, useSimd: false);

    /// <summary>Fused Q4_K × float kernel: per group of 32, (d·sc)·Σ u·x − (dmin·m)·Σ x with AVX2+FMA.</summary>
    private unsafe float DotFloatAvx2(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        int blocks = KQuantDot.CheckFloatPair(this, row, x);
        var low = Vector256.Create((byte)0x0F);
        var acc = Vector256<float>.Zero;
        fixed (byte* pr = row)
        fixed (float* px = x)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* q0 = pr + 144 * b;
                float* xb = px + KQuantMath.SuperBlock * b;
                float d = KQuantMath.FromHalfBits(*(ushort*)q0);
                float dmin = KQuantMath.FromHalfBits(*(ushort*)(q0 + 2));
                KQuantMath.UnpackScaleMinK4(q0 + 4, out ulong scales, out ulong mins);
                for (int c = 0; c < 4; c++)
                {
                    var q = Avx.LoadVector256(q0 + OffQs + 32 * c);
                    var lo = Avx2.And(q, low);
                    var hi = Avx2.And(Avx2.ShiftRightLogical(q.AsUInt16(), 4).AsByte(), low);
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
