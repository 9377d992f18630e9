using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

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

    /// <summary>Dot with activations encoded as Q8_0 (or Q8_1 for offset formats), fastest path.</summary>
    public static float DotQ8<T>(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) where T : struct, ILegacyBlock
        => Avx2.IsSupported && Fma.IsSupported ? DotQ8Avx2<T>(row, xq) : DotQ8Portable<T>(row, xq);

    private static int ActivationBlocks<T>(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) where T : struct, ILegacyBlock
    {
        int actBytes = ActivationBlockBytes<T>();
        if (xq.Length % actBytes != 0)
            throw new ArgumentException($"activation row of {xq.Length} bytes is not a whole number of {actBytes}-byte blocks.");
        int groups = xq.Length / actBytes;
        BlockCount<T>(groups * Group, row.Length, "quantized dot");
        return groups;
    }

    /// <summary>
    /// AVX2 integer path (ggml's scheme): |w| ⊗ sign(a, w) with maddubs gives exact int16 pair sums,
    /// madd with ones widens to int32, one float FMA per 32 values applies d_w·d_a.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0, which would be many times slower
    public static float DotQ8Avx2<T>(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) where T : struct, ILegacyBlock
    {
        int groups = ActivationBlocks<T>(row, xq);
        int actBytes = ActivationBlockBytes<T>();
        int qsOffset = T.HasOffset ? 4 : 2;
        Vector256<short> ones = Vector256.Create((short)1);
        Vector256<float> total = Vector256<float>.Zero;
        float offsetSum = 0;
        fixed (byte* p0 = row)
        fixed (byte* a0 = xq)
        {
            byte* act = a0;
            for (int b = 0, blocks = groups / T.Groups; b < blocks; b++)
            {
                byte* block = p0 + (long)b * T.BlockBytes;
                for (int g = 0; g < T.Groups; g++, act += actBytes)
                {
                    Vector256<sbyte> w = T.LevelsAvx2(block, g);
                    Vector256<sbyte> a = Avx.LoadVector256((sbyte*)(act + qsOffset));
                    Vector256<short> pairs = Avx2.MultiplyAddAdjacent(Avx2.Abs(w), Avx2.Sign(a, w));
                    Vector256<float> sums = Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(pairs, ones));
                    float da = F16(act);
                    total = Fma.MultiplyAdd(sums, Vector256.Create(T.Scale(block, g) * da), total);
                    if (T.HasOffset)
                        offsetSum += T.Offset(block) * F16(act + 2);
                }
            }
        }
        return Vector256.Sum(total) + offsetSum;
    }

    /// <summary>Portable integer path: int8 widened to int16 products (|w·a| ≤ 127², exact), summed in int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // hot loop: skip tier-0, which would be many times slower
    public static float DotQ8Portable<T>(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) where T : struct, ILegacyBlock
    {
        int groups = ActivationBlocks<T>(row, xq);
        int actBytes = ActivationBlockBytes<T>();
        int qsOffset = T.HasOffset ? 4 : 2;
        Vector128<float> total = Vector128<float>.Zero;
        float offsetSum = 0;
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
                    Vector128<int> sums = ProductSums(w0, Vector128.Load((sbyte*)(act + qsOffset)))
                                        + ProductSums(w1, Vector128.Load((sbyte*)(act + qsOffset + 16)));
                    total += Vector128.ConvertToSingle(sums) * (T.Scale(block, g) * F16(act));
                    if (T.HasOffset) offsetSum += T.Offset(block) * F16(act + 2);
                }
            }
        }
        return Vector128.Sum(total) + offsetSum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> ProductSums(Vector128<sbyte> w, Vector128<sbyte> a)
    {
        (Vector128<short> wl, Vector128<short> wh) = Vector128.Widen(w);
        (Vector128<short> al, Vector128<short> ah) = Vector128.Widen(a);
        (Vector128<int> p0, Vector128<int> p1) = Vector128.Widen(wl * al);
        (Vector128<int> p2, Vector128<int> p3) = Vector128.Widen(wh * ah);
        return (p0 + p1) + (p2 + p3);
    }

    /// <summary>Scalar reference of the integer path, in ggml's scalar order: Σ (d_w·d_a)·Σ w·a (+ m_w·s_a).</summary>
    public static float DotQ8Scalar<T>(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) where T : struct, ILegacyBlock
    {
        int groups = ActivationBlocks<T>(row, xq);
        int actBytes = ActivationBlockBytes<T>();
        int qsOffset = T.HasOffset ? 4 : 2;
        Span<sbyte> levels = stackalloc sbyte[Group];
        float sum = 0;
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
                    int sumi = 0;
                    for (int j = 0; j < Group; j++) sumi += levels[j] * a[j];
                    float da = F16(act);
                    sum += T.Scale(block, g) * da * sumi;
                    if (T.HasOffset) sum += T.Offset(block) * F16(act + 2);
                }
            }
        }
        return sum;
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
        Vector256<float> absMask = Vector256.Create(0x7FFFFFFF).AsSingle();
        Vector256<float> signMask = Vector256.Create(unchecked((int)0x80000000)).AsSingle();
        Vector256<float> one = Vector256.Create(1f), half = Vector256.Create(0.5f);
        Vector256<int> packOrder = Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7);
        fixed (float* s0 = src)
        fixed (byte* d0 = dst)
        {
            for (int b = 0; b < blocks; b++)
            {
                float* x = s0 + b * Group;
                byte* block = d0 + (long)b * blockBytes;
                Vector256<float> v0 = Avx.LoadVector256(x), v1 = Avx.LoadVector256(x + 8);
                Vector256<float> v2 = Avx.LoadVector256(x + 16), v3 = Avx.LoadVector256(x + 24);
                Vector256<float> m = Avx.Max(Avx.Max(Avx.And(v0, absMask), Avx.And(v1, absMask)),
                                             Avx.Max(Avx.And(v2, absMask), Avx.And(v3, absMask)));
                Vector128<float> m4 = Sse.Max(m.GetLower(), m.GetUpper());
                m4 = Sse.Max(m4, Sse.MoveHighToLow(m4, m4));
                m4 = Sse.Max(m4, Sse.Shuffle(m4, m4, 0x55));
                float amax = m4.ToScalar();
                float d = amax / 127;
                float id = d != 0 ? 1.0f / d : 0.0f;
                Unsafe.WriteUnaligned(block, (Half)d);
                Vector256<float> idv = Vector256.Create(id);
                Vector256<int> q0 = RoundAwayToInt(Avx.Multiply(v0, idv), absMask, signMask, one, half);
                Vector256<int> q1 = RoundAwayToInt(Avx.Multiply(v1, idv), absMask, signMask, one, half);
                Vector256<int> q2 = RoundAwayToInt(Avx.Multiply(v2, idv), absMask, signMask, one, half);
                Vector256<int> q3 = RoundAwayToInt(Avx.Multiply(v3, idv), absMask, signMask, one, half);
                Vector256<short> p01 = Avx2.PackSignedSaturate(q0, q1);
                Vector256<short> p23 = Avx2.PackSignedSaturate(q2, q3);
                Vector256<sbyte> packed = Avx2.PackSignedSaturate(p01, p23);
                packed = Avx2.PermuteVar8x32(packed.AsInt32(), packOrder).AsSByte();
                if (withSum)
                {
                    int sum = Vector256.Sum(Avx2.Add(Avx2.Add(q0, q1), Avx2.Add(q2, q3)));
                    Unsafe.WriteUnaligned(block + 2, (Half)(sum * d));
                    Avx.Store((sbyte*)(block + 4), packed);
                }
                else
                {
                    Avx.Store((sbyte*)(block + 2), packed);
                }
            }
        }
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
        Vector128<byte> raw = Sse2.LoadVector128(packed);
        Vector256<uint> both = Vector256.Create(raw, raw).AsUInt32();
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

    /// <summary>
    /// Reads an fp16 value. Inlined bit conversion (System.Half's operator is an out-of-line call
    /// that makes the kernels spill their accumulators): placing the 15 magnitude bits at the top of
    /// a float's exponent/mantissa gives the value times 2^-112 for normals and subnormals alike, so
    /// one exact multiply restores it. Infinities and NaNs get the all-ones exponent directly.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float F16(byte* p)
    {
        uint h = Unsafe.ReadUnaligned<ushort>(p);
        uint shifted = (h & 0x7FFF) << 13;
        uint magnitude = (h & 0x7C00) == 0x7C00
            ? shifted | 0x7F800000 | ((h & 0x3FF) != 0 ? 0x00400000u : 0u) // infinity, or NaN made quiet as conversions do
            : BitConverter.SingleToUInt32Bits(BitConverter.UInt32BitsToSingle(shifted) * TwoPow112);
        return BitConverter.UInt32BitsToSingle(magnitude | ((h & 0x8000) << 16));
    }

    private const float TwoPow112 = 5.192296858534828e33f;
}
