using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static Lowbit.Formats.FloatSums;

namespace Lowbit.Formats;

/// <summary>
/// How one legacy block stores its values: every 32-value group is <c>scale · level (+ offset)</c>
/// with an integer level in [-127, 127]. Implemented by small structs so the generic kernels in
/// <see cref="LegacyKernels"/> are specialized and inlined per format by the JIT.
/// </summary>
internal unsafe interface ILegacyBlock
{
    /// <summary>Bytes of one stored block.</summary>
    static abstract int BlockBytes { get; }

    /// <summary>32-value groups per block (1 for the 32-value formats, 8 for IQ4_XS).</summary>
    static abstract int Groups { get; }

    /// <summary>True when values are <c>scale·level + offset</c> (Q4_1, Q5_1); their integer dot pairs with Q8_1.</summary>
    static abstract bool HasOffset { get; }

    /// <summary>The 32 integer levels of group <paramref name="group"/> (AVX2 decode).</summary>
    static abstract Vector256<sbyte> LevelsAvx2(byte* block, int group);

    /// <summary>The 32 integer levels of group <paramref name="group"/> as two halves (portable Vector128 decode).</summary>
    static abstract void LevelsVector128(byte* block, int group, out Vector128<sbyte> first, out Vector128<sbyte> second);

    /// <summary>The 32 integer levels of group <paramref name="group"/> (portable decode, the reference).</summary>
    static abstract void Levels(byte* block, int group, Span<sbyte> levels);

    /// <summary>The float scale of a group, computed exactly as ggml's dequantizer does.</summary>
    static abstract float Scale(byte* block, int group);

    /// <summary>The float offset of the block (0 when <see cref="HasOffset"/> is false).</summary>
    static abstract float Offset(byte* block);

    /// <summary>
    /// When non-zero, levels are unsigned codes minus this bias and <see cref="CodesAvx2"/> returns the
    /// codes: the integer dot then multiplies codes (unsigned) by activations directly and subtracts
    /// Bias·Σa, computed once per activation group for all rows, instead of the sign trick per row.
    /// </summary>
    static virtual int Bias => 0;

    /// <summary>True when <see cref="Scale"/> is the fp16 value at the start of the block (every group), read as <see cref="LegacyKernels.F16"/> does.</summary>
    static virtual bool ScaleIsLeadingHalf => false;

    /// <summary>The 32 unsigned codes (level + <see cref="Bias"/>) of a group (AVX2 decode); only called when Bias ≠ 0.</summary>
    static virtual Vector256<byte> CodesAvx2(byte* block, int group) => throw new NotSupportedException();
}

/// <summary>
/// Σ of u·s over each run of 4 bytes into 8 int32 lanes (plus acc), for operands where the AVX2
/// form cannot saturate (every adjacent pair |u·s + u'·s'| ≤ 2·128·127 &lt; 2^15).
/// </summary>
internal interface IByteDot
{
    static abstract Vector256<int> Dot(Vector256<byte> u, Vector256<sbyte> s);
    static abstract Vector256<int> Dot(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s);
}

/// <summary>AVX2: pmaddubsw then pmaddwd with ones.</summary>
internal readonly struct MaddDot : IByteDot
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot(Vector256<byte> u, Vector256<sbyte> s)
        => Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), Vector256.Create((short)1));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s) => Avx2.Add(acc, Dot(u, s));
}

/// <summary>AVX-VNNI: one vpdpbusd (exact, no intermediate saturation).</summary>
internal readonly struct VnniDot : IByteDot
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot(Vector256<byte> u, Vector256<sbyte> s) => AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, u, s);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> Dot(Vector256<int> acc, Vector256<byte> u, Vector256<sbyte> s) => AvxVnni.MultiplyWideningAndAdd(acc, u, s);
}

/// <summary>
/// Dequantization and fused dot products shared by the legacy block formats: an AVX2/FMA path,
/// a portable Vector128 path, and naive scalar references that the tests hold the fast paths to.
/// </summary>
internal static unsafe class LegacyKernels
{
    private const int Group = 32;

    /// <summary>Bytes of a Q8_0 (d, 32 × int8) or Q8_1 (d, s, 32 × int8) activation block.</summary>
    public static int ActivationBlockBytes<T>() where T : struct, ILegacyBlock => T.HasOffset ? 36 : 34;

    private static int BlockCount<T>(int valueCount, int rowBytes, string what) where T : struct, ILegacyBlock
    {
        int perBlock = Group * T.Groups;
        if (valueCount % perBlock != 0)
            throw new ArgumentException($"{what}: {valueCount} values are not a whole number of {perBlock}-value blocks.");
        int blocks = valueCount / perBlock;
        if (rowBytes != (long)blocks * T.BlockBytes)
            throw new ArgumentException($"{what}: row holds {rowBytes} bytes, {(long)blocks * T.BlockBytes} expected for {valueCount} values.");
        return blocks;
    }

    /// <summary>ggml's dequantization: value = scale·level (+ offset), in float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0, which would be many times slower
    public static void Dequantize<T>(ReadOnlySpan<byte> src, Span<float> dst) where T : struct, ILegacyBlock
    {
        int blocks = src.Length / T.BlockBytes;
        if (dst.Length < blocks * Group * T.Groups)
            throw new ArgumentException($"destination holds {dst.Length} values, {blocks * Group * T.Groups} needed.");
        Span<sbyte> levels = stackalloc sbyte[Group];
        fixed (byte* p0 = src)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* block = p0 + (long)b * T.BlockBytes;
                float offset = T.Offset(block);
                for (int g = 0; g < T.Groups; g++)
                {
                    T.Levels(block, g, levels);
                    float scale = T.Scale(block, g);
                    Span<float> y = dst.Slice((b * T.Groups + g) * Group, Group);
                    if (T.HasOffset)
                        for (int j = 0; j < Group; j++) y[j] = levels[j] * scale + offset;
                    else
                        for (int j = 0; j < Group; j++) y[j] = levels[j] * scale;
                }
            }
        }
    }

    /// <summary>Dot of an encoded row with float activations, on the fastest path this CPU has.</summary>
    public static float DotF32<T>(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) where T : struct, ILegacyBlock
        => Avx2.IsSupported && Fma.IsSupported ? DotF32Avx2<T>(row, x) : DotF32Portable<T>(row, x);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0, which would be many times slower
    public static float DotF32Avx2<T>(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) where T : struct, ILegacyBlock
    {
        int blocks = BlockCount<T>(x.Length, row.Length, "dot");
        Vector256<float> total = Vector256<float>.Zero;
        Vector256<float> offsetTotal = Vector256<float>.Zero; // own chain, so offset formats don't double the FMA latency per block
        fixed (byte* p0 = row)
        fixed (float* x0 = x)
        {
            float* xp = x0;
            for (int b = 0; b < blocks; b++)
            {
                byte* block = p0 + (long)b * T.BlockBytes;
                for (int g = 0; g < T.Groups; g++, xp += Group)
                {
                    Vector256<sbyte> q = T.LevelsAvx2(block, g);
                    Vector128<sbyte> lo = q.GetLower(), hi = q.GetUpper();
                    var f0 = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(lo));
                    var f1 = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(lo, 8)));
                    var f2 = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(hi));
                    var f3 = Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(hi, 8)));
                    var xa = Avx.LoadVector256(xp);
                    var xb = Avx.LoadVector256(xp + 8);
                    var xc = Avx.LoadVector256(xp + 16);
                    var xd = Avx.LoadVector256(xp + 24);
                    var accA = Fma.MultiplyAdd(f1, xb, Avx.Multiply(f0, xa));
                    var accB = Fma.MultiplyAdd(f3, xd, Avx.Multiply(f2, xc));
                    total = Fma.MultiplyAdd(Avx.Add(accA, accB), Vector256.Create(T.Scale(block, g)), total);
                    if (T.HasOffset)
                    {
                        var sx = Avx.Add(Avx.Add(xa, xb), Avx.Add(xc, xd));
                        offsetTotal = Fma.MultiplyAdd(sx, Vector256.Create(T.Offset(block)), offsetTotal);
                    }
                }
            }
        }
        return Vector256.Sum(T.HasOffset ? Avx.Add(total, offsetTotal) : total);
    }

    /// <summary>Portable path: Vector128 decode and float arithmetic (SSE, NEON, WASM).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0, which would be many times slower
    public static float DotF32Portable<T>(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) where T : struct, ILegacyBlock
    {
        int blocks = BlockCount<T>(x.Length, row.Length, "dot");
        Vector128<float> total = Vector128<float>.Zero, offsetTotal = Vector128<float>.Zero;
        fixed (byte* p0 = row)
        fixed (float* x0 = x)
        {
            float* xp = x0;
            for (int b = 0; b < blocks; b++)
            {
                byte* block = p0 + (long)b * T.BlockBytes;
                for (int g = 0; g < T.Groups; g++, xp += Group)
                {
                    T.LevelsVector128(block, g, out Vector128<sbyte> first, out Vector128<sbyte> second);
                    Vector128<float> acc = HalfGroupDot(first, xp, ref offsetTotal, T.HasOffset ? T.Offset(block) : 0f)
                                         + HalfGroupDot(second, xp + 16, ref offsetTotal, T.HasOffset ? T.Offset(block) : 0f);
                    total += acc * T.Scale(block, g);
                }
            }
        }
        return Vector128.Sum(total) + Vector128.Sum(offsetTotal);
    }

    /// <summary>Σ level·x over 16 values as 4 float lanes; adds offset·Σx to <paramref name="offsetTotal"/> when offset ≠ 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> HalfGroupDot(Vector128<sbyte> q, float* xp, ref Vector128<float> offsetTotal, float offset)
    {
        (Vector128<short> qlo, Vector128<short> qhi) = Vector128.Widen(q);
        (Vector128<int> i0, Vector128<int> i1) = Vector128.Widen(qlo);
        (Vector128<int> i2, Vector128<int> i3) = Vector128.Widen(qhi);
        var xa = Vector128.Load(xp);
        var xb = Vector128.Load(xp + 4);
        var xc = Vector128.Load(xp + 8);
        var xd = Vector128.Load(xp + 12);
        if (offset != 0f) offsetTotal += ((xa + xb) + (xc + xd)) * offset;
        return (Vector128.ConvertToSingle(i0) * xa + Vector128.ConvertToSingle(i1) * xb)
             + (Vector128.ConvertToSingle(i2) * xc + Vector128.ConvertToSingle(i3) * xd);
    }

    /// <summary>Naive reference: Σ scale·Σ(level·x) (+ offset·Σx) per group, left to right.</summary>
    public static float DotF32Scalar<T>(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) where T : struct, ILegacyBlock
    {
        int blocks = BlockCount<T>(x.Length, row.Length, "dot");
        Span<sbyte> levels = stackalloc sbyte[Group];
        float sum = 0;
        fixed (byte* p0 = row)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* block = p0 + (long)b * T.BlockBytes;
                for (int g = 0; g < T.Groups; g++)
                {
                    T.Levels(block, g, levels);
                    ReadOnlySpan<float> xs = x.Slice((b * T.Groups + g) * Group, Group);
                    float lx = 0, sx = 0;
                    for (int j = 0; j < Group; j++) { lx += levels[j] * xs[j]; sx += xs[j]; }
                    sum += T.Scale(block, g) * lx;
                    if (T.HasOffset) sum += T.Offset(block) * sx;
                }
            }
        }
        return sum;
    }

    // ---- integer dot with Q8_0 / Q8_1 activations ----
    //
    // Canonical arithmetic. Every path below (AVX-VNNI, AVX2, portable Vector128, scalar), single-row
    // or four-row, computes exactly this, so DotRowQuantized is bit-identical whichever path, kernel or
    // thread produced it; a batched (prefill) kernel that must equal it has to do the same:
    //   for each 32-value group g of the row in order (block by block, groups within a block):
    //     p_g[k] = Σ_{j=4k}^{4k+3} w_j·a_j            k = 0..7: int32, exact (w = the group's integer
    //                                                  levels, a = the Q8 block's int8 values)
    //     s_g    = Scale_w(g) · d_a(g)                 one float multiply (d_a = the Q8 block's fp16 scale)
    //     acc[k] = fma((float)p_g[k], s_g, acc[k])     eight float lanes from +0, fused multiply-add
    //   offset formats (Q4_1, Q5_1 against Q8_1) also: o = o + m_w(g)·s_a(g) (float multiply, then add;
    //   o from 0, in group order), where s_a is Q8_1's stored fp16 block sum
    //   result = (((acc[0]+acc[1]) + (acc[2]+acc[3])) + ((acc[4]+acc[5]) + (acc[6]+acc[7]))) + o
    // The lane split p_g[k] is what pmaddubsw+pmaddwd and vpdpbusd produce natively on 32 values in order.

    /// <summary>Dot with activations encoded as Q8_0 (or Q8_1 for offset formats), fastest path.</summary>
    public static float DotQ8<T>(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) where T : struct, ILegacyBlock
        => Avx2.IsSupported && Fma.IsSupported
            ? AvxVnni.IsSupported ? DotQ8Vnni<T>(row, xq) : DotQ8Avx2<T>(row, xq)
            : DotQ8Portable<T>(row, xq);

    /// <summary>
    /// y[i] = <see cref="DotQ8{T}"/>(row i, xq) for <paramref name="count"/> consecutive rows, bit for bit;
    /// four rows per pass share each activation load and run four independent accumulator chains.
    /// </summary>
    public static void DotQ8Rows<T>(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y) where T : struct, ILegacyBlock
    {
        if (Avx2.IsSupported && Fma.IsSupported)
        {
            if (AvxVnni.IsSupported) DotQ8RowsVnni<T>(rows, count, xq, y);
            else DotQ8RowsAvx2<T>(rows, count, xq, y);
            return;
        }
        int rb = TensorCodec.RowsBytesPerRow(rows, count, y);
        for (int r = 0; r < count; r++) y[r] = DotQ8Portable<T>(rows.Slice(r * rb, rb), xq);
    }

    private static int ActivationBlocks<T>(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) where T : struct, ILegacyBlock
    {
        int actBytes = ActivationBlockBytes<T>();
        if (xq.Length % actBytes != 0)
            throw new ArgumentException($"activation row of {xq.Length} bytes is not a whole number of {actBytes}-byte blocks.");
        int groups = xq.Length / actBytes;
        BlockCount<T>(groups * Group, row.Length, "quantized dot");
        return groups;
    }

    /// <summary>AVX2 path: p_g from pmaddubsw (|w| ⊗ sign(a, w), or codes ⊗ a) and pmaddwd with ones.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0, which would be many times slower
    public static float DotQ8Avx2<T>(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) where T : struct, ILegacyBlock
    {
        int groups = ActivationBlocks<T>(row, xq);
        fixed (byte* p0 = row) fixed (byte* a0 = xq) return DotQ8Row<T, MaddDot>(p0, a0, groups);
    }

    /// <summary>AVX-VNNI path: p_g from one vpdpbusd per group and row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float DotQ8Vnni<T>(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) where T : struct, ILegacyBlock
    {
        int groups = ActivationBlocks<T>(row, xq);
        fixed (byte* p0 = row) fixed (byte* a0 = xq) return DotQ8Row<T, VnniDot>(p0, a0, groups);
    }

    /// <summary><see cref="DotQ8Rows{T}"/> on the AVX2 path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void DotQ8RowsAvx2<T>(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y) where T : struct, ILegacyBlock
        => DotQ8Rows<T, MaddDot>(rows, count, xq, y);

    /// <summary><see cref="DotQ8Rows{T}"/> on the AVX-VNNI path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void DotQ8RowsVnni<T>(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y) where T : struct, ILegacyBlock
        => DotQ8Rows<T, VnniDot>(rows, count, xq, y);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DotQ8Rows<T, TDot>(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y)
        where T : struct, ILegacyBlock where TDot : struct, IByteDot
    {
        int rb = TensorCodec.RowsBytesPerRow(rows, count, y);
        int groups = ActivationBlocks<T>(rows.Slice(0, rb), xq);
        fixed (byte* p0 = rows) fixed (byte* a0 = xq) fixed (float* y0 = y)
        {
            int r = 0;
            for (; r + 4 <= count; r += 4) DotQ8Rows4<T, TDot>(p0 + (long)r * rb, rb, a0, groups, y0 + r);
            for (; r < count; r++) y0[r] = DotQ8Row<T, TDot>(p0 + (long)r * rb, a0, groups);
        }
    }

    /// <summary>p_g of one group: codes ⊗ a minus Bias·Σa (<paramref name="biasTerm"/>), or |w| ⊗ sign(a, w).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> GroupProducts<T, TDot>(byte* block, int g, Vector256<sbyte> a, Vector256<int> biasTerm)
        where T : struct, ILegacyBlock where TDot : struct, IByteDot
    {
        if (T.Bias != 0) return TDot.Dot(biasTerm, T.CodesAvx2(block, g), a);
        Vector256<sbyte> w = T.LevelsAvx2(block, g);
        return TDot.Dot(Avx2.Abs(w), Avx2.Sign(a, w));
    }

    /// <summary>−Bias·Σa per 4-value lane (zero when levels are decoded signed).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> BiasTerm<T, TDot>(Vector256<sbyte> a) where T : struct, ILegacyBlock where TDot : struct, IByteDot
        => T.Bias != 0 ? Avx2.Subtract(Vector256<int>.Zero, TDot.Dot(Vector256.Create((byte)T.Bias), a)) : default;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float DotQ8Row<T, TDot>(byte* row, byte* act, int groups) where T : struct, ILegacyBlock where TDot : struct, IByteDot
    {
        int actBytes = ActivationBlockBytes<T>();
        int qsOffset = T.HasOffset ? 4 : 2;
        Vector256<float> acc = Vector256<float>.Zero;
        float o = 0;
        for (int b = 0, blocks = groups / T.Groups; b < blocks; b++)
        {
            byte* block = row + (long)b * T.BlockBytes;
            for (int g = 0; g < T.Groups; g++, act += actBytes)
            {
                Vector256<sbyte> a = Avx.LoadVector256((sbyte*)(act + qsOffset));
                Vector256<int> p = GroupProducts<T, TDot>(block, g, a, BiasTerm<T, TDot>(a));
                acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p), Vector256.Create(T.Scale(block, g) * F16(act)), acc);
                if (T.HasOffset) o += T.Offset(block) * F16(act + 2);
            }
        }
        return HSum(acc) + o;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DotQ8Rows4<T, TDot>(byte* w0, int rowBytes, byte* act, int groups, float* y) where T : struct, ILegacyBlock where TDot : struct, IByteDot
    {
        int actBytes = ActivationBlockBytes<T>();
        int qsOffset = T.HasOffset ? 4 : 2;
        byte* w1 = w0 + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
        Vector256<float> acc0 = default, acc1 = default, acc2 = default, acc3 = default;
        float o0 = 0, o1 = 0, o2 = 0, o3 = 0;
        byte* next = w0 + 4L * rowBytes, prefetch = next;
        for (int b = 0, blocks = groups / T.Groups; b < blocks; b++)
        {
            long off = (long)b * T.BlockBytes;
            byte* b0 = w0 + off, b1 = w1 + off, b2 = w2 + off, b3 = w3 + off;
            // Decode streams every weight from DRAM once, and four interleaved row streams get too few
            // misses in flight from the hardware prefetcher alone (measured: about half the bandwidth).
            // Prefetch the next pass's four rows (contiguous) at this pass's pace: one pass ahead.
            for (byte* target = next + 4L * (b + 1) * T.BlockBytes; prefetch < target; prefetch += 64) Sse.Prefetch0(prefetch);
            for (int g = 0; g < T.Groups; g++, act += actBytes)
            {
                Vector256<sbyte> a = Avx.LoadVector256((sbyte*)(act + qsOffset));
                Vector256<int> bias = BiasTerm<T, TDot>(a);
                float da = F16(act);
                Vector256<int> p0 = GroupProducts<T, TDot>(b0, g, a, bias);
                Vector256<int> p1 = GroupProducts<T, TDot>(b1, g, a, bias);
                Vector256<int> p2 = GroupProducts<T, TDot>(b2, g, a, bias);
                Vector256<int> p3 = GroupProducts<T, TDot>(b3, g, a, bias);
                // The four s_g: the rows' scales converted side by side when they are plain leading fp16
                // values (same floats as F16), then one multiply by d_a, each lane broadcast for its row.
                Vector128<float> ws = T.ScaleIsLeadingHalf
                    ? HalvesToSingle(b0, b1, b2, b3)
                    : Vector128.Create(T.Scale(b0, g), T.Scale(b1, g), T.Scale(b2, g), T.Scale(b3, g));
                Vector256<float> s = (ws * da).ToVector256Unsafe();
                acc0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p0), Avx2.PermuteVar8x32(s, Vector256<int>.Zero), acc0);
                acc1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p1), Avx2.PermuteVar8x32(s, Vector256.Create(1)), acc1);
                acc2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p2), Avx2.PermuteVar8x32(s, Vector256.Create(2)), acc2);
                acc3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(p3), Avx2.PermuteVar8x32(s, Vector256.Create(3)), acc3);
                if (T.HasOffset)
                {
                    float sa = F16(act + 2);
                    o0 += T.Offset(b0) * sa; o1 += T.Offset(b1) * sa; o2 += T.Offset(b2) * sa; o3 += T.Offset(b3) * sa;
                }
            }
        }
        Vector128<float> sums = HSum4(acc0, acc1, acc2, acc3);
        if (T.HasOffset) sums += Vector128.Create(o0, o1, o2, o3);
        else sums += Vector128<float>.Zero; // the canonical "+ o" with o = 0 (turns a −0 sum into +0, as the single-row path does)
        sums.Store(y);
    }

    /// <summary>
    /// The fp16 values at four addresses as floats, exactly as <see cref="F16"/> gives them: sign-extended
    /// and shifted left by 13, the magnitude bits sit at the top of a float's exponent/mantissa and the
    /// masked result is ±value·2^-112 (exact for zeros, subnormals and normals), so one multiply by 2^112
    /// restores it. Infinities and NaNs (exponent all ones), which that misses, take the scalar route.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> HalvesToSingle(byte* p0, byte* p1, byte* p2, byte* p3)
    {
        Vector128<int> h = Vector128.Create((int)*(short*)p0, *(short*)p1, *(short*)p2, *(short*)p3);
        if (Vector128.EqualsAny(h & Vector128.Create(0x7C00), Vector128.Create(0x7C00)))
            return Vector128.Create(F16(p0), F16(p1), F16(p2), F16(p3));
        Vector128<int> bits = (h << 13) & Vector128.Create(unchecked((int)0x8FFFE000));
        return bits.AsSingle() * Vector128.Create(KQuantMath.TwoPow112);
    }

    /// <summary>Portable path (SSE, NEON, WASM): the canonical lanes p_g[k] from widened int16 products.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0, which would be many times slower
    public static float DotQ8Portable<T>(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) where T : struct, ILegacyBlock
    {
        int groups = ActivationBlocks<T>(row, xq);
        int actBytes = ActivationBlockBytes<T>();
        int qsOffset = T.HasOffset ? 4 : 2;
        Vector128<float> acc0 = Vector128<float>.Zero, acc1 = Vector128<float>.Zero; // lanes 0..3 and 4..7
        float o = 0;
        fixed (byte* p0 = row)
        fixed (byte* a0 = xq)
        {
            byte* act = a0;
            for (int b = 0, blocks = groups / T.Groups; b < blocks; b++)
            {
                byte* block = p0 + (long)b * T.BlockBytes;
                for (int g = 0; g < T.Groups; g++, act += actBytes)
                {
                    T.LevelsVector128(block, g, out Vector128<sbyte> w0, out Vector128<sbyte> w1);
                    Vector128<float> s = Vector128.Create(T.Scale(block, g) * F16(act));
                    acc0 = Vector128.FusedMultiplyAdd(Vector128.ConvertToSingle(QuadSums(w0, Vector128.Load((sbyte*)(act + qsOffset)))), s, acc0);
                    acc1 = Vector128.FusedMultiplyAdd(Vector128.ConvertToSingle(QuadSums(w1, Vector128.Load((sbyte*)(act + qsOffset + 16)))), s, acc1);
                    if (T.HasOffset) o += T.Offset(block) * F16(act + 2);
                }
            }
        }
        return (((acc0[0] + acc0[1]) + (acc0[2] + acc0[3])) + ((acc1[0] + acc1[1]) + (acc1[2] + acc1[3]))) + o;
    }

    /// <summary>
    /// Σ w·a over each run of 4 consecutive values of 16 (4 int32 lanes, exact): int16 products
    /// (|w·a| ≤ 128·127), then adjacent pairs twice, split into even/odd elements by narrowing.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> QuadSums(Vector128<sbyte> w, Vector128<sbyte> a)
    {
        (Vector128<short> wl, Vector128<short> wh) = Vector128.Widen(w);
        (Vector128<short> al, Vector128<short> ah) = Vector128.Widen(a);
        Vector128<int> pl = (wl * al).AsInt32(), ph = (wh * ah).AsInt32();
        Vector128<short> even = Vector128.Narrow(pl, ph); // truncation keeps each int32's low int16: the even products
        Vector128<short> odd = Vector128.Narrow(Vector128.ShiftRightArithmetic(pl, 16), Vector128.ShiftRightArithmetic(ph, 16));
        (Vector128<int> el, Vector128<int> eh) = Vector128.Widen(even);
        (Vector128<int> ol, Vector128<int> oh) = Vector128.Widen(odd);
        Vector128<long> pairsLo = (el + ol).AsInt64(), pairsHi = (eh + oh).AsInt64(); // pair sums of values 0..7 and 8..15
        Vector128<int> evenPairs = Vector128.Narrow(pairsLo, pairsHi);
        Vector128<int> oddPairs = Vector128.Narrow(Vector128.ShiftRightArithmetic(pairsLo, 32), Vector128.ShiftRightArithmetic(pairsHi, 32));
        return evenPairs + oddPairs;
    }

    /// <summary>Scalar reference of the canonical arithmetic (see the comment above <see cref="DotQ8{T}"/>).</summary>
    public static float DotQ8Scalar<T>(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) where T : struct, ILegacyBlock
    {
        int groups = ActivationBlocks<T>(row, xq);
        int actBytes = ActivationBlockBytes<T>();
        int qsOffset = T.HasOffset ? 4 : 2;
        Span<sbyte> levels = stackalloc sbyte[Group];
        Span<float> acc = stackalloc float[8];
        acc.Clear();
        float o = 0;
        fixed (byte* p0 = row)
        fixed (byte* a0 = xq)
        {
            byte* act = a0;
            for (int b = 0, blocks = groups / T.Groups; b < blocks; b++)
            {
                byte* block = p0 + (long)b * T.BlockBytes;
                for (int g = 0; g < T.Groups; g++, act += actBytes)
                {
                    T.Levels(block, g, levels);
                    sbyte* a = (sbyte*)(act + qsOffset);
                    float s = T.Scale(block, g) * F16(act);
                    for (int k = 0; k < 8; k++)
                    {
                        int p = 0;
                        for (int j = 4 * k; j < 4 * k + 4; j++) p += levels[j] * a[j];
                        acc[k] = MathF.FusedMultiplyAdd(p, s, acc[k]);
                    }
                    if (T.HasOffset) o += T.Offset(block) * F16(act + 2);
                }
            }
        }
        return (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) + o;
    }

    /// <summary>
    /// Quantizes whole blocks to Q8_0 (or Q8_1 with <paramref name="withSum"/>) with AVX2, producing
    /// exactly the bytes of ggml's reference quantizer: same amax, same float d and 1/d, same products,
    /// and roundf's half-away-from-zero rounding done as trunc(v) + (|v − trunc v| ≥ ½ ? ±1 : 0).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void QuantizeQ8Avx2(ReadOnlySpan<float> src, Span<byte> dst, bool withSum)
    {
        int blockBytes = withSum ? 36 : 34;
        int blocks = src.Length / Group;
        if (dst.Length < blocks * blockBytes)
            throw new ArgumentException($"destination holds {dst.Length} bytes, {blocks * blockBytes} needed.");
        var k = new Q8Constants();
        fixed (float* s0 = src)
        fixed (byte* d0 = dst)
        {
            for (int b = 0; b < blocks; b++)
            {
                byte* block = d0 + (long)b * blockBytes;
                var packed = QuantizeQ8Block(s0 + b * Group, k, out float d, out var qsum);
                Unsafe.WriteUnaligned(block, (Half)d);
                if (withSum)
                {
                    Unsafe.WriteUnaligned(block + 2, (Half)(Vector256.Sum(qsum) * d));
                    Avx.Store((sbyte*)(block + 4), packed);
                }
                else
                {
                    Avx.Store((sbyte*)(block + 2), packed);
                }
            }
        }
    }

    /// <summary>
    /// Q8_0-quantizes whole blocks of <paramref name="src"/> straight into the integer decode kernels' activation layout
    /// (<c>QuantizedGemm.PrepareActivations</c>): the codes (biased by +128 when <paramref name="biased"/>), then per block
    /// the float value of the fp16 scale, then per block −8·Σq when <paramref name="q40Correction"/> (else 0). The same
    /// bytes as <see cref="QuantizeQ8Avx2"/> and then PrepareActivations, without writing and re-reading the block row
    /// between them.
    /// </summary>
    public static void QuantizeQ8Prepared(ReadOnlySpan<float> src, Span<byte> dst, bool q40Correction, bool biased)
    {
        int cols = src.Length - src.Length % Group, blocks = cols / Group;
        if (dst.Length < cols + 8 * blocks)
            throw new ArgumentException($"destination holds {dst.Length} bytes, {cols + 8 * blocks} needed.");
        var k = new Q8Constants();
        var bias = Vector256.Create((sbyte)-128);
        fixed (float* s0 = src)
        fixed (byte* d0 = dst)
        {
            float* da = (float*)(d0 + cols);
            int* corr = (int*)(d0 + cols + 4 * blocks);
            for (int b = 0; b < blocks; b++)
            {
                var packed = QuantizeQ8Block(s0 + b * Group, k, out float d, out _);
                Avx.Store((sbyte*)(d0 + (long)Group * b), biased ? Avx2.Xor(packed, bias) : packed);
                da[b] = (float)(Half)d;
                corr[b] = q40Correction ? -8 * CodeSum(packed) : 0;
            }
        }
    }

    /// <summary>
    /// Σq of 32 int8 codes: the bytes biased by +128 summed as unsigned (vpsadbw against zero), less 32·128 (the sum of the
    /// codes as stored, so saturated ones count as stored).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CodeSum(Vector256<sbyte> q)
    {
        var biased = Avx2.Xor(q, Vector256.Create((sbyte)-128)).AsByte();
        return (int)Vector256.Sum(Avx2.SumAbsoluteDifferences(biased, Vector256<byte>.Zero).AsUInt64()) - Group * 128;
    }

    /// <summary>The constants of <see cref="QuantizeQ8Block"/>, made once per call rather than per block.</summary>
    private readonly struct Q8Constants()
    {
        public readonly Vector256<float> AbsMask = Vector256.Create(0x7FFFFFFF).AsSingle();
        public readonly Vector256<float> SignMask = Vector256.Create(unchecked((int)0x80000000)).AsSingle();
        public readonly Vector256<float> One = Vector256.Create(1f), Half = Vector256.Create(0.5f);
        public readonly Vector256<int> PackOrder = Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7);
    }

    /// <summary>
    /// One Q8_0 block of the 32 floats at <paramref name="x"/>: ggml's d = amax/127 and q = round(x/d) half away from
    /// zero (as the scalar reference), returned as the 32 codes in order; <paramref name="qsum"/> holds Σq in 8 lanes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> QuantizeQ8Block(float* x, in Q8Constants k, out float d, out Vector256<int> qsum)
    {
        Vector256<float> v0 = Avx.LoadVector256(x), v1 = Avx.LoadVector256(x + 8);
        Vector256<float> v2 = Avx.LoadVector256(x + 16), v3 = Avx.LoadVector256(x + 24);
        Vector256<float> m = Avx.Max(Avx.Max(Avx.And(v0, k.AbsMask), Avx.And(v1, k.AbsMask)),
                                     Avx.Max(Avx.And(v2, k.AbsMask), Avx.And(v3, k.AbsMask)));
        Vector128<float> m4 = Sse.Max(m.GetLower(), m.GetUpper());
        m4 = Sse.Max(m4, Sse.MoveHighToLow(m4, m4));
        m4 = Sse.Max(m4, Sse.Shuffle(m4, m4, 0x55));
        float amax = m4.ToScalar();
        d = amax / 127;
        float id = d != 0 ? 1.0f / d : 0.0f;
        Vector256<float> idv = Vector256.Create(id);
        Vector256<int> q0 = RoundAwayToInt(Avx.Multiply(v0, idv), k.AbsMask, k.SignMask, k.One, k.Half);
        Vector256<int> q1 = RoundAwayToInt(Avx.Multiply(v1, idv), k.AbsMask, k.SignMask, k.One, k.Half);
        Vector256<int> q2 = RoundAwayToInt(Avx.Multiply(v2, idv), k.AbsMask, k.SignMask, k.One, k.Half);
        Vector256<int> q3 = RoundAwayToInt(Avx.Multiply(v3, idv), k.AbsMask, k.SignMask, k.One, k.Half);
        qsum = Avx2.Add(Avx2.Add(q0, q1), Avx2.Add(q2, q3));
        Vector256<short> p01 = Avx2.PackSignedSaturate(q0, q1);
        Vector256<short> p23 = Avx2.PackSignedSaturate(q2, q3);
        Vector256<sbyte> packed = Avx2.PackSignedSaturate(p01, p23);
        return Avx2.PermuteVar8x32(packed.AsInt32(), k.PackOrder).AsSByte();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> RoundAwayToInt(Vector256<float> v, Vector256<float> absMask, Vector256<float> signMask, Vector256<float> one, Vector256<float> half)
    {
        Vector256<float> t = Avx.RoundToZero(v);
        Vector256<float> frac = Avx.And(Avx.Subtract(v, t), absMask); // exact: v and trunc(v) share sign and exponent range
        Vector256<float> step = Avx.Or(Avx.And(v, signMask), one);   // ±1 with v's sign
        Vector256<float> r = Avx.Add(t, Avx.And(Avx.CompareGreaterThanOrEqual(frac, half), step));
        return Avx.ConvertToVector256Int32WithTruncation(r);
    }

    // ---- decode helpers shared by the block structs ----

    /// <summary>16 packed bytes → 32 nibbles: low nibbles (values 0..15) then high nibbles (16..31).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> NibblesAvx2(byte* packed)
    {
        Vector256<uint> both = Avx2.BroadcastVector128ToVector256(packed).AsUInt32();
        Vector256<uint> shifted = Avx2.ShiftRightLogicalVariable(both, Vector256.Create(0u, 0, 0, 0, 4, 4, 4, 4));
        return Avx2.And(shifted.AsByte(), Vector256.Create((byte)0x0F));
    }

    /// <summary>The 32 bits of a Q5 high-bit word as bytes 0x10 (bit set) or 0x00, in value order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> HighBitsAvx2(uint qh)
    {
        Vector256<byte> spread = Avx2.Shuffle(Vector256.Create(qh).AsByte(), Vector256.Create(
            (byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
        Vector256<byte> bit = Vector256.Create(0x8040201008040201ul).AsByte();
        Vector256<byte> set = Avx2.CompareEqual(Avx2.And(spread, bit), bit);
        return Avx2.And(set, Vector256.Create((byte)0x10));
    }

    /// <summary>Looks the 32 nibbles of an IQ4 group up in the non-linear level table.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<sbyte> Iq4LevelsAvx2(byte* packed)
    {
        Vector128<sbyte> table = Vector128.Create((sbyte)-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
        return Avx2.Shuffle(Vector256.Create(table, table), NibblesAvx2(packed).AsSByte());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Nibbles(byte* packed, Span<sbyte> levels, int bias)
    {
        for (int j = 0; j < 16; j++)
        {
            levels[j] = (sbyte)((packed[j] & 0x0F) - bias);
            levels[j + 16] = (sbyte)((packed[j] >> 4) - bias);
        }
    }

    /// <summary>16 packed bytes → low nibbles (values 0..15) and high nibbles (values 16..31), portable.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void NibblesVector128(byte* packed, out Vector128<byte> first, out Vector128<byte> second)
    {
        Vector128<byte> raw = Vector128.Load(packed);
        first = raw & Vector128.Create((byte)0x0F);
        second = Vector128.ShiftRightLogical(raw, 4);
    }

    /// <summary>The fifth bits of a Q5 word as 0x10/0x00 bytes: values 0..15 and 16..31, portable.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void HighBitsVector128(uint qh, out Vector128<byte> first, out Vector128<byte> second)
    {
        Vector128<byte> word = Vector128.Create(qh).AsByte();
        Vector128<byte> bit = Vector128.Create(0x8040201008040201ul).AsByte();
        Vector128<byte> fifth = Vector128.Create((byte)0x10);
        Vector128<byte> a = Vector128.Shuffle(word, Vector128.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
        Vector128<byte> b = Vector128.Shuffle(word, Vector128.Create((byte)2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
        first = Vector128.Equals(a & bit, bit) & fifth;
        second = Vector128.Equals(b & bit, bit) & fifth;
    }

    /// <summary>IQ4 levels of one 32-value group by table lookup, portable.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Iq4LevelsVector128(byte* packed, out Vector128<sbyte> first, out Vector128<sbyte> second)
    {
        Vector128<sbyte> table = Vector128.Create((sbyte)-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
        NibblesVector128(packed, out var lo, out var hi);
        first = Vector128.Shuffle(table, lo.AsSByte());
        second = Vector128.Shuffle(table, hi.AsSByte());
    }

    /// <summary>Q5 levels from a 32-bit fifth-bit word followed by 16 nibble bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void FiveBitLevels(byte* qhThenNibbles, Span<sbyte> levels, int bias)
    {
        uint qh = Unsafe.ReadUnaligned<uint>(qhThenNibbles);
        byte* qs = qhThenNibbles + 4;
        for (int j = 0; j < 16; j++)
        {
            levels[j] = (sbyte)(((qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4)) - bias);
            levels[j + 16] = (sbyte)(((qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - bias);
        }
    }

    /// <summary>IQ4 levels: each nibble indexes the non-linear table.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Iq4Levels(byte* packed, Span<sbyte> levels)
    {
        ReadOnlySpan<sbyte> table = LegacyQuantMath.Iq4NlValues;
        for (int j = 0; j < 16; j++)
        {
            levels[j] = table[packed[j] & 0x0F];
            levels[j + 16] = table[packed[j] >> 4];
        }
    }

    /// <summary>Reads an fp16 value (inlined exact conversion, see <see cref="KQuantMath.FromHalfBitsInline"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float F16(byte* p) => KQuantMath.FromHalfBitsInline(Unsafe.ReadUnaligned<ushort>(p));

}
