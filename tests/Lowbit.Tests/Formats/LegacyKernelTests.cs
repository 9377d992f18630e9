using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>The fused dot kernels agree with their scalar references and with dequantize-then-dot.</summary>
public sealed class LegacyKernelTests
{
    private delegate float DotF32(ReadOnlySpan<byte> row, ReadOnlySpan<float> x);
    private delegate float DotQ8(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq);

    private sealed record Kernels(DotF32 F32Avx2, DotF32 F32Portable, DotF32 F32Scalar, DotQ8? Q8Avx2, DotQ8? Q8Portable, DotQ8? Q8Scalar, Action<byte[]> CheckDecoders);

    private static Kernels For(string name) => name switch
    {
        "q4_0" => Make<Q4_0Block>(true),
        "q4_1" => Make<Q4_1Block>(true),
        "q5_0" => Make<Q5_0Block>(true),
        "q5_1" => Make<Q5_1Block>(true),
        "q8_0" => Make<Q8_0Block>(true),
        "q8_1" => Make<Q8_1Block>(false),
        "iq4_nl" => Make<IQ4_NLBlock>(true),
        "iq4_xs" => Make<IQ4_XSBlock>(false),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    private static Kernels Make<T>(bool integerPath) where T : struct, ILegacyBlock => new(
        LegacyKernels.DotF32Avx2<T>, LegacyKernels.DotF32Portable<T>, LegacyKernels.DotF32Scalar<T>,
        integerPath ? LegacyKernels.DotQ8Avx2<T> : null, integerPath ? LegacyKernels.DotQ8Portable<T> : null,
        integerPath ? LegacyKernels.DotQ8Scalar<T> : null, CheckDecoders<T>);

    /// <summary>The AVX2 and Vector128 decoders give exactly the reference levels for every group of a block.</summary>
    private static unsafe void CheckDecoders<T>(byte[] block) where T : struct, ILegacyBlock
    {
        Span<sbyte> reference = stackalloc sbyte[32];
        var fast = new sbyte[32];
        fixed (byte* p = block)
        {
            for (int g = 0; g < T.Groups; g++)
            {
                T.Levels(p, g, reference);
                T.LevelsVector128(p, g, out var first, out var second);
                first.CopyTo(fast);
                second.CopyTo(fast, 16);
                Assert.Equal(reference.ToArray(), fast);
                if (Avx2.IsSupported)
                {
                    T.LevelsAvx2(p, g).CopyTo(fast);
                    Assert.Equal(reference.ToArray(), fast);
                }
            }
        }
    }

    public static TheoryData<string, int> WeightFormats()
    {
        var data = new TheoryData<string, int>();
        foreach (var name in new[] { "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "iq4_nl", "iq4_xs" })
            foreach (int cols in new[] { 256, 2304 })
                data.Add(name, cols);
        return data;
    }

    public static TheoryData<string> IntegerFormats() => ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl"];

    internal static float[] Gaussian(int n, int seed, float sigma = 1f, float mean = 0f)
    {
        var rng = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++)
            v[i] = mean + sigma * (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return v;
    }

    private static byte[] Encode(TensorCodec codec, float[] values, int cols)
    {
        var bytes = new byte[codec.RowBytes(cols) * (values.Length / cols)];
        codec.QuantizeRows(values, bytes, cols, []);
        return bytes;
    }

    /// <summary>Exact-ish reference Σ a_i·b_i in double, with Σ|a_i·b_i| for a relative tolerance.</summary>
    private static (double Dot, double Magnitude) Reference(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double dot = 0, mag = 0;
        for (int i = 0; i < a.Length; i++) { dot += (double)a[i] * b[i]; mag += Math.Abs((double)a[i] * b[i]); }
        return (dot, mag);
    }

    private static void Close(double expected, double actual, double magnitude, double relTol, string what) =>
        Assert.True(Math.Abs(expected - actual) <= relTol * magnitude + 1e-30,
            $"{what}: expected {expected:R}, got {actual:R} (|diff| {Math.Abs(expected - actual):E3}, allowed {relTol * magnitude:E3})");

    [Theory]
    [MemberData(nameof(WeightFormats))]
    public void DotRow_matches_dot_of_dequantized_row(string name, int cols)
    {
        var codec = CodecRegistry.Get(name);
        const int rows = 3;
        float[] w = Gaussian(rows * cols, 11 + cols, sigma: 0.5f, mean: name.EndsWith("_1") ? 0.3f : 0f);
        float[] x = Gaussian(cols, 23 + cols);
        byte[] encoded = Encode(codec, w, cols);
        var deq = new float[rows * cols];
        codec.DequantizeRows(encoded, deq, cols);
        int rowBytes = (int)codec.RowBytes(cols);
        for (int r = 0; r < rows; r++)
        {
            var (dot, mag) = Reference(deq.AsSpan(r * cols, cols), x);
            float actual = codec.DotRow(encoded.AsSpan(r * rowBytes, rowBytes), x);
            Close(dot, actual, mag, 1e-5, $"{name} row {r}");
        }
    }

    [Theory]
    [MemberData(nameof(WeightFormats))]
    public void Simd_float_kernels_match_scalar_reference(string name, int cols)
    {
        var codec = CodecRegistry.Get(name);
        var k = For(name);
        float[] w = Gaussian(cols, 5 + cols, sigma: 2f, mean: 0.1f);
        float[] x = Gaussian(cols, 7 + cols);
        byte[] row = Encode(codec, w, cols);
        var deq = new float[cols];
        codec.DequantizeRows(row, deq, cols);
        var (_, mag) = Reference(deq, x);

        float scalar = k.F32Scalar(row, x);
        Close(scalar, k.F32Portable(row, x), mag, 1e-5, $"{name} portable vs scalar");
        if (Avx2.IsSupported && Fma.IsSupported)
            Close(scalar, k.F32Avx2(row, x), mag, 1e-5, $"{name} avx2 vs scalar");
    }

    [Theory]
    [MemberData(nameof(IntegerFormats))]
    public void Simd_integer_kernel_matches_scalar_reference(string name)
    {
        const int cols = 1024;
        var codec = CodecRegistry.Get(name);
        var act = codec.VecDotCodec!;
        var k = For(name);
        byte[] row = Encode(codec, Gaussian(cols, 31, sigma: 0.7f, mean: 0.2f), cols);
        byte[] xq = Encode(act, Gaussian(cols, 37), cols);

        float scalar = k.Q8Scalar!(row, xq);
        double magnitude = QuantizedMagnitude(codec, act, row, xq, cols);
        Close(scalar, codec.DotRowQuantized(row, xq), magnitude, 1e-5, $"{name} dispatch vs scalar");
        Close(scalar, k.Q8Portable!(row, xq), magnitude, 1e-5, $"{name} portable vs scalar");
        if (Avx2.IsSupported && Fma.IsSupported)
            Close(scalar, k.Q8Avx2!(row, xq), magnitude, 1e-5, $"{name} avx2 vs scalar");
    }

    [Theory]
    [MemberData(nameof(WeightFormats))]
    public void Simd_decoders_match_reference_decoder_on_arbitrary_bytes(string name, int seed)
    {
        var codec = CodecRegistry.Get(name);
        var rng = new Random(seed);
        var block = new byte[codec.BlockBytes];
        for (int i = 0; i < 50; i++)
        {
            rng.NextBytes(block);
            if (name.StartsWith("q8")) // Q8 levels are in [-127, 127]; −128 never occurs in valid data
                for (int j = 0; j < block.Length; j++) if (block[j] == 0x80) block[j] = 0x81;
            For(name).CheckDecoders(block);
        }
    }

    private static double QuantizedMagnitude(TensorCodec codec, TensorCodec act, byte[] row, byte[] xq, int cols)
    {
        var w = new float[cols];
        var a = new float[cols];
        codec.DequantizeRows(row, w, cols);
        act.DequantizeRows(xq, a, cols);
        return Reference(w, a).Magnitude;
    }

    /// <summary>
    /// The integer path computes Σ d_w·d_a·Σq_w·q_a (+ m·s with Q8_1's stored s = fp16(d_a·Σq_a)):
    /// dequantizing both rows and dotting gives the same number up to float rounding, except that
    /// Q8_1's s is rounded to fp16, which the reference accounts for by using the stored s.
    /// </summary>
    [Theory]
    [MemberData(nameof(IntegerFormats))]
    public void DotRowQuantized_matches_dot_of_dequantized_rows(string name)
    {
        const int cols = 512;
        var codec = CodecRegistry.Get(name);
        var act = codec.VecDotCodec!;
        Assert.Equal(name is "q4_1" or "q5_1" ? "q8_1" : "q8_0", act.Name);
        const int rows = 3;
        byte[] weights = Encode(codec, Gaussian(rows * cols, 41, sigma: 0.3f, mean: name.EndsWith("_1") ? -0.2f : 0f), cols);
        float[] x = Gaussian(cols, 43);
        byte[] xq = Encode(act, x, cols);
        var a = new float[cols];
        act.DequantizeRows(xq, a, cols);
        var w = new float[rows * cols];
        codec.DequantizeRows(weights, w, cols);
        int rowBytes = (int)codec.RowBytes(cols);
        for (int r = 0; r < rows; r++)
        {
            var (dot, mag) = Reference(w.AsSpan(r * cols, cols), a);
            if (act.Name == "q8_1")
                dot += StoredSumCorrection(weights.AsSpan(r * rowBytes, rowBytes), xq, cols);
            float actual = codec.DotRowQuantized(weights.AsSpan(r * rowBytes, rowBytes), xq);
            Close(dot, actual, mag, 1e-5, $"{name} row {r}");
        }
    }

    /// <summary>Σ_blocks m·(s − d_a·Σq_a): what using Q8_1's fp16 block sum changes against exact dequantization.</summary>
    private static double StoredSumCorrection(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq, int cols)
    {
        int weightBlockBytes = row.Length / (cols / 32);
        double correction = 0;
        for (int b = 0; b < cols / 32; b++)
        {
            double m = (double)MemoryMarshal.Read<Half>(row.Slice(b * weightBlockBytes + 2));
            ReadOnlySpan<byte> ab = xq.Slice(b * 36, 36);
            double d = (double)MemoryMarshal.Read<Half>(ab);
            double s = (double)MemoryMarshal.Read<Half>(ab.Slice(2));
            int sumq = 0;
            for (int j = 0; j < 32; j++) sumq += (sbyte)ab[4 + j];
            correction += m * (s - d * sumq);
        }
        return correction;
    }

    [Fact]
    public void Q8_1_block_sum_is_scale_times_sum_of_levels()
    {
        var q81 = CodecRegistry.Get("q8_1");
        float[] x = Gaussian(64, 3);
        byte[] xq = Encode(q81, x, 64);
        for (int b = 0; b < 2; b++)
        {
            ReadOnlySpan<byte> blk = xq.AsSpan(b * 36, 36);
            float d = (float)MemoryMarshal.Read<Half>(blk);
            int sum = 0;
            for (int j = 0; j < 32; j++) sum += (sbyte)blk[4 + j];
            // ggml forms s from the float scale before it is rounded to fp16.
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = MathF.Max(amax, MathF.Abs(x[b * 32 + j]));
            Assert.Equal((Half)(sum * (amax / 127)), MemoryMarshal.Read<Half>(blk.Slice(2)));
            Assert.Equal((Half)(amax / 127), (Half)d);
        }
    }

    [Fact]
    public void Kernels_reject_rows_that_do_not_match_the_activation_length()
    {
        var codec = CodecRegistry.Get("q4_0");
        byte[] row = Encode(codec, Gaussian(64, 1), 64);
        Assert.Throws<ArgumentException>(() => codec.DotRow(row, new float[96]));
        Assert.Throws<ArgumentException>(() => codec.DotRow(row, new float[33]));
        Assert.Throws<ArgumentException>(() => codec.DotRow(row.AsSpan(0, 18), new float[64]));
        var xq = Encode(codec.VecDotCodec!, Gaussian(96, 2), 96);
        Assert.Throws<ArgumentException>(() => codec.DotRowQuantized(row, xq));
    }
}

/// <summary>The kernels' inlined fp16 readers agree with System.Half on every bit pattern.</summary>
public sealed class LegacyHalfTests
{
    [Fact]
    public unsafe void F16_reader_matches_System_Half_for_all_65536_patterns()
    {
        for (int bits = 0; bits < 65536; bits++)
        {
            ushort h = (ushort)bits;
            float expected = (float)BitConverter.UInt16BitsToHalf(h);
            float actual = Lowbit.Formats.LegacyKernels.F16((byte*)&h);
            float kquant = Lowbit.Formats.KQuantMath.FromHalfBitsInline(h);
            Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(actual),
                $"0x{bits:x4}: expected {expected:R}, got {actual:R}");
            Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(kquant),
                $"KQuantMath 0x{bits:x4}: expected {expected:R}, got {kquant:R}");
        }
    }
}

/// <summary>The IQ4_NL nearest-level search: ties go up, as ggml's best_index_int8 does, and the fast form agrees.</summary>
public sealed class LegacyIq4IndexTests
{
    [Fact]
    public void Specialized_search_matches_generic_search_including_exact_midpoints()
    {
        ReadOnlySpan<sbyte> values = Lowbit.Formats.LegacyQuantMath.Iq4NlValues;
        var probes = new List<float> { -1000f, -127f, 0f, 113f, 1000f, float.Epsilon, -float.Epsilon };
        for (int j = 1; j < 16; j++)
        {
            float mid = (values[j - 1] + values[j]) / 2f;
            probes.AddRange([mid, MathF.BitDecrement(mid), MathF.BitIncrement(mid)]);
        }
        var rng = new Random(5);
        for (int i = 0; i < 2000; i++) probes.Add((float)(rng.NextDouble() * 300 - 150));
        foreach (float x in probes)
            Assert.Equal(Lowbit.Formats.LegacyQuantMath.BestIndexInt8(values, x), Lowbit.Formats.LegacyQuantMath.Iq4NlBestIndex(x));

        for (int j = 1; j < 16; j++)
        {
            float mid = (values[j - 1] + values[j]) / 2f;
            Assert.Equal(j, Lowbit.Formats.LegacyQuantMath.Iq4NlBestIndex(mid));
            Assert.Equal(j - 1, Lowbit.Formats.LegacyQuantMath.Iq4NlBestIndex(MathF.BitDecrement(mid)));
        }
    }
}

/// <summary>The AVX2 activation quantizers write exactly the bytes of the scalar ggml reference.</summary>
public sealed class LegacyQ8QuantizeTests
{
    public static TheoryData<bool> Variants() => [false, true];

    [Theory]
    [MemberData(nameof(Variants))]
    public void Avx2_q8_quantizer_matches_scalar_reference_bytes(bool withSum)
    {
        if (!System.Runtime.Intrinsics.X86.Avx2.IsSupported) return; // nothing to compare on this CPU
        int blockBytes = withSum ? 36 : 34;
        var values = new List<float>();
        var rng = new Random(9);
        foreach (float scale in new[] { 1e-6f, 0.02f, 1f, 300f, 6e4f })
            for (int i = 0; i < 32 * 16; i++) values.Add(scale * (float)(rng.NextDouble() * 2 - 1));
        // Exact ties: amax 127 gives d = 1, so k + 0.5 must round away from zero.
        for (int i = 0; i < 32 * 4; i++) values.Add(i % 32 == 0 ? (i % 64 == 0 ? 127f : -127f) : (rng.Next(-120, 120) + 0.5f));
        values.AddRange(new float[64]); // zero blocks
        float[] x = values.ToArray();
        var fast = new byte[x.Length / 32 * blockBytes];
        var reference = new byte[fast.Length];

        Lowbit.Formats.LegacyKernels.QuantizeQ8Avx2(x, fast, withSum);
        if (withSum) Lowbit.Formats.Q8_1Codec.QuantizeRowsScalar(x, reference);
        else Lowbit.Formats.Q8_0Codec.QuantizeRowsScalar(x, reference);

        Assert.Equal(reference, fast);
    }
}
