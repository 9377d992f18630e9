using Lowbit.Engine;
using Lowbit.Formats;

namespace Lowbit.Tests.Engine;

/// <summary>
/// The integer GEMM on every instruction set this CPU has is bit-identical, per (row, token), to the
/// scalar references (<see cref="QuantizedGemm.ReferenceDot"/> for Q4_0/Q8_0, scalar DotQ8K for Q4_K), and
/// those references agree with dequantize-both-and-dot.
/// </summary>
public sealed unsafe class QuantizedGemmTests
{
    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var f in new[] { "Q4_0", "Q8_0", "Q4_K" })
            foreach (var isa in new[] { "Scalar", "Avx2", "AvxVnni" })
                data.Add(f, isa);
        return data;
    }

    private static TensorCodec CodecOf(GemmFormat f) => CodecRegistry.Get(f switch
    {
        GemmFormat.Q4_0 => GgmlType.Q4_0,
        GemmFormat.Q8_0 => GgmlType.Q8_0,
        _ => GgmlType.Q4_K,
    });

    /// <summary>Random encoded rows with edge values: −128 / 0 / 127 codes, zero and tiny/huge scales.</summary>
    private static byte[] RandomWeights(GemmFormat f, int rows, int cols, Random rng)
    {
        int rb = QuantizedGemm.WeightRowBytes(f, cols);
        var w = new byte[rows * rb];
        rng.NextBytes(w);
        int bb = f switch { GemmFormat.Q4_0 => 18, GemmFormat.Q8_0 => 34, _ => 144 };
        for (int off = 0; off < w.Length; off += bb)
        {
            int kind = rng.Next(8);
            Half d = kind == 0 ? (Half)0f : kind == 1 ? (Half)6.1e-5f : kind == 2 ? (Half)30000f : (Half)(float)(rng.NextDouble() * 0.1 - 0.05);
            BitConverter.TryWriteBytes(w.AsSpan(off), BitConverter.HalfToUInt16Bits(d));
            if (f == GemmFormat.Q4_K)
                BitConverter.TryWriteBytes(w.AsSpan(off + 2), BitConverter.HalfToUInt16Bits((Half)(float)(rng.NextDouble() * 0.02)));
            if (f == GemmFormat.Q8_0 && kind == 3) w.AsSpan(off + 2, 32).Fill(0x80);           // all −128
            if (f == GemmFormat.Q8_0 && kind == 4) w.AsSpan(off + 2, 32).Fill(0x7F);           // all 127
            if (f == GemmFormat.Q4_0 && kind == 3) w.AsSpan(off + 2, 16).Fill(0x00);           // all −8
            if (f == GemmFormat.Q4_0 && kind == 4) w.AsSpan(off + 2, 16).Fill(0xFF);           // all +7: the largest int16 pair sums
            if (f == GemmFormat.Q4_K && kind == 3) w.AsSpan(off + 4, 140).Fill(0xFF);          // max scales, mins and codes
        }
        return w;
    }

    /// <summary>Activations quantized by the codec's VecDotCodec, with all-zero, huge and tiny blocks.</summary>
    private static byte[] RandomActivations(GemmFormat f, int n, int cols, Random rng)
    {
        var x = new float[n * cols];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        for (int b = 0; b < x.Length / 32; b++)
        {
            int kind = rng.Next(6);
            for (int j = 0; j < 32; j++)
                x[32 * b + j] = kind == 0 ? 0f : kind == 1 ? x[32 * b + j] * 1000f : kind == 2 ? x[32 * b + j] * 1e-3f
                    : kind == 3 ? (b % 2 == 0 ? 1f : -1f) // every code ±127: with the largest codes, the largest int16 sums a kernel keeps
                    : x[32 * b + j];
        }
        var vc = CodecOf(f).VecDotCodec!;
        int qb = QuantizedGemm.QuantizedRowBytes(f, cols);
        var xq = new byte[n * qb];
        for (int t = 0; t < n; t++) vc.QuantizeRows(x.AsSpan(t * cols, cols), xq.AsSpan(t * qb, qb), cols, default);
        return xq;
    }

    private static float Reference(GemmFormat f, ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) => f switch
    {
        GemmFormat.Q4_0 or GemmFormat.Q8_0 => QuantizedGemm.ReferenceDot(f, row, xq),
        _ => KQuantDot.DotQ8K((KQuantCodec)CodecOf(f), row, xq, useSimd: false),
    };

    [Theory]
    [InlineData("Q4_0")]
    [InlineData("Q8_0")]
    public void Legacy_reference_dot_equals_dequantize_both_and_dot(string format)
    {
        var f = Enum.Parse<GemmFormat>(format);
        var codec = CodecOf(f);
        var vc = codec.VecDotCodec!;
        var rng = new Random(17);
        foreach (int cols in new[] { 32, 96, 2048 })
        {
            var w = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            var x = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 6 - 3)).ToArray();
            var wq = new byte[codec.RowBytes(cols)];
            var xq = new byte[vc.RowBytes(cols)];
            codec.QuantizeRows(w, wq, cols, default);
            vc.QuantizeRows(x, xq, cols, default);
            var wd = new float[cols];
            var xd = new float[cols];
            codec.DequantizeRows(wq, wd, cols);
            vc.DequantizeRows(xq, xd, cols);
            double expected = wd.Zip(xd).Sum(p => (double)p.First * p.Second);
            double magnitude = wd.Zip(xd).Sum(p => Math.Abs((double)p.First * p.Second));
            Assert.Equal(expected, QuantizedGemm.ReferenceDot(f, wq, xq), 1e-5 * magnitude);
            Assert.Equal(expected, codec.DotRowQuantized(wq, xq), 1e-5 * magnitude);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void GemmIsBitIdenticalToScalarReference(string format, string isaName)
    {
        var f = Enum.Parse<GemmFormat>(format);
        var isa = Enum.Parse<GemmIsa>(isaName);
        if (!QuantizedGemm.IsSupported(isa)) return; // this CPU lacks the instruction set
        var rng = new Random(1234 + (int)f * 7 + (int)isa);
        int cols = f == GemmFormat.Q4_K ? 768 : 160;
        // 37 rows: two full panels and a 5-row tail; 1–11 tokens: 4-token tiles and every tail width.
        foreach (int rows in new[] { 37, 16, 3 })
            foreach (int n in new[] { 1, 2, 4, 5, 7, 10, 11 })
                Check(f, isa, rows, cols, n, rng, wide: false);
    }

    [Theory]
    [InlineData("Q4_0", "Avx2"), InlineData("Q4_0", "AvxVnni"), InlineData("Q4_K", "Avx2"), InlineData("Q4_K", "AvxVnni")]
    public void WideGemmIsBitIdenticalToScalarReference(string format, string isaName)
    {
        var f = Enum.Parse<GemmFormat>(format);
        var isa = Enum.Parse<GemmIsa>(isaName);
        if (!QuantizedGemm.IsSupported(isa) || !QuantizedGemm.WideTilesSupported) return; // this CPU lacks AVX-512BW
        var rng = new Random(4321 + (int)isa + 11 * (int)f);
        foreach (int cols in f == GemmFormat.Q4_K ? new[] { 256, 768, 4096 } : new[] { 32, 160, 4096 })
            foreach (int rows in new[] { 37, 16, 3 })
                foreach (int n in new[] { 1, 2, 3, 4, 5, 7, 10, 11 })
                    Check(f, isa, rows, cols, n, rng, wide: true);
    }

    [Theory]
    [InlineData(127), InlineData(-128)]
    public void WideQ4_0GemmKeepsExtremeBlockSumsExact(int activation)
    {
        // Every code 15 against every activation at its extreme: the int16 block sums' worst case (8 · 2 · 15 · 128).
        if (!QuantizedGemm.WideTilesSupported) return;
        const int rows = 16, cols = 256, n = 4;
        var isa = QuantizedGemm.BestIsa;
        int rb = QuantizedGemm.WeightRowBytes(GemmFormat.Q4_0, cols), qb = QuantizedGemm.QuantizedRowBytes(GemmFormat.Q4_0, cols);
        var w = new byte[rows * rb];
        for (int b = 0; b < w.Length / 18; b++)
        {
            BitConverter.TryWriteBytes(w.AsSpan(18 * b, 2), (Half)0.5f);
            w.AsSpan(18 * b + 2, 16).Fill(0xFF);
        }
        var xq = new byte[n * qb];
        for (int b = 0; b < xq.Length / 34; b++)
        {
            BitConverter.TryWriteBytes(xq.AsSpan(34 * b, 2), (Half)0.25f);
            xq.AsSpan(34 * b + 2, 32).Fill((byte)(sbyte)activation);
        }
        int stride = QuantizedGemm.ActivationStride(GemmFormat.Q4_0, isa, cols);
        var act = new byte[n * stride];
        for (int t = 0; t < n; t++) QuantizedGemm.PrepareActivations(GemmFormat.Q4_0, isa, xq.AsSpan(t * qb, qb), cols, act.AsSpan(t * stride, stride));
        var panel = new byte[QuantizedGemm.PanelBytes(GemmFormat.Q4_0, isa, cols)];
        var y = new float[n * rows];
        fixed (byte* pw = w) fixed (byte* pp = panel) fixed (byte* pa = act) fixed (float* py = y)
        {
            QuantizedGemm.PackPanel(GemmFormat.Q4_0, isa, pw, rb, rows, cols, pp);
            QuantizedGemm.MultiplyPanel(GemmFormat.Q4_0, isa, pp, rows, cols, pa, stride, n, py, rows, wide: true);
        }
        float expected = Reference(GemmFormat.Q4_0, w.AsSpan(0, rb), xq.AsSpan(0, qb));
        Assert.Equal(cols / 32 * 0.5f * 0.25f * 7 * activation * 32, expected); // (15 − 8) · a per value
        foreach (float v in y) Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(v));
    }

    private static void Check(GemmFormat f, GemmIsa isa, int rows, int cols, int n, Random rng, bool wide)
    {
        byte[] w = RandomWeights(f, rows, cols, rng);
        byte[] xq = RandomActivations(f, n, cols, rng);
        int rb = QuantizedGemm.WeightRowBytes(f, cols), qb = QuantizedGemm.QuantizedRowBytes(f, cols);
        int stride = QuantizedGemm.ActivationStride(f, isa, cols);
        var act = new byte[n * stride];
        for (int t = 0; t < n; t++) QuantizedGemm.PrepareActivations(f, isa, xq.AsSpan(t * qb, qb), cols, act.AsSpan(t * stride, stride));
        var panel = new byte[QuantizedGemm.PanelBytes(f, isa, cols)];
        int yStride = rows + 3; // a row stride wider than the matrix: the kernel writes only its rows
        var y = new float[n * yStride];
        Array.Fill(y, float.NaN);
        fixed (byte* pw = w) fixed (byte* pp = panel) fixed (byte* pa = act) fixed (float* py = y)
        {
            for (int r0 = 0; r0 < rows; r0 += QuantizedGemm.PanelRows)
            {
                int count = Math.Min(QuantizedGemm.PanelRows, rows - r0);
                QuantizedGemm.PackPanel(f, isa, pw + r0 * rb, rb, count, cols, pp);
                QuantizedGemm.MultiplyPanel(f, isa, pp, count, cols, pa, stride, n, py + r0, yStride, wide);
            }
        }
        for (int t = 0; t < n; t++)
        {
            for (int r = 0; r < rows; r++)
            {
                float expected = Reference(f, w.AsSpan(r * rb, rb), xq.AsSpan(t * qb, qb));
                float actual = y[t * yStride + r];
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(actual),
                    $"{f}/{isa} rows={rows} n={n}: y[{t},{r}] = {actual:R}, reference {expected:R}");
            }
            for (int r = rows; r < yStride; r++) Assert.True(float.IsNaN(y[t * yStride + r]), "wrote outside its rows");
        }
    }

    [Theory]
    [InlineData("Q4_0", "Avx2"), InlineData("Q4_0", "AvxVnni")]
    [InlineData("Q8_0", "Avx2"), InlineData("Q8_0", "AvxVnni")]
    [InlineData("Q4_K", "Avx2"), InlineData("Q4_K", "AvxVnni")]
    public void Activations_prepared_from_floats_equal_the_codec_blocks_then_prepared(string format, string isaName)
    {
        var f = Enum.Parse<GemmFormat>(format);
        var isa = Enum.Parse<GemmIsa>(isaName); // only the layout differs by ISA (VNNI biases Q8_0's codes): AVX2 code either way
        if (!System.Runtime.Intrinsics.X86.Avx2.IsSupported) return;
        var rng = new Random(7 + (int)f * 3 + (int)isa);
        var codec = CodecRegistry.Get(f == GemmFormat.Q4_K ? "q8_K" : "q8_0");
        foreach (int cols in f == GemmFormat.Q4_K ? new[] { 256, 1024, 2048 } : new[] { 32, 256, 2048 })
        {
            var x = new float[cols + 5]; // a longer vector: only the first cols values count
            for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() * 2 - 1) * Math.Pow(10, rng.Next(-3, 4)));
            if (cols >= 256)
            {
                for (int j = 0; j < 32; j++) x[32 + j] = 0;                        // an all-zero block: d = 0
                for (int j = 0; j < 32; j++) x[64 + j] = j % 2 == 0 ? 127 : j - 15.5f; // d = 1: exact halves round away from zero
                for (int j = 0; j < 32; j++) x[96 + j] = (j - 16) * 1e-40f;        // subnormals
                x[128] = -3e38f;                                                   // a huge scale
            }
            if (cols >= 1024)
            {
                for (int j = 0; j < 256; j++) x[512 + j] = 0;  // an all-zero Q8_K block
                x[800] = float.NaN;                             // a NaN (the Q8_K codec takes its scalar path)
                x[1000] = 5000; x[1001] = -5000;               // equal largest magnitudes: the first sets the scale
            }
            var row = new byte[QuantizedGemm.QuantizedRowBytes(f, cols)];
            // The codec's own quantizer, which decode used before: with subnormal values 1/d overflows and its AVX2 path
            // (like ggml's) stores −128 where the scalar reference stores 0, so the codec's bytes are the ones to keep.
            codec.QuantizeRows(x.AsSpan(0, cols), row, cols, default);
            int stride = QuantizedGemm.ActivationStride(f, isa, cols);
            var expected = new byte[stride];
            QuantizedGemm.PrepareActivations(f, isa, row, cols, expected);
            var direct = new byte[stride];
            direct.AsSpan().Fill(0xAB); // a rented buffer holds old bytes
            Assert.True(QuantizedGemm.TryPrepareActivations(f, isa, x, cols, direct));
            // Codes, scales, corrections (Q4_K: four int16 pairs a block); the rest of the stride is padding.
            int used = f == GemmFormat.Q4_K ? cols + 20 * (cols / 256) : cols + 8 * (cols / 32);
            int diff = expected.AsSpan(0, used).CommonPrefixLength(direct.AsSpan(0, used));
            Assert.True(diff == used, $"cols {cols}: first difference at byte {diff} of {used}");
        }
        Assert.False(QuantizedGemm.TryPrepareActivations(f, GemmIsa.Scalar, new float[256], 256, new byte[4096]));
    }

    [Theory]
    [InlineData("Q4_0", "Scalar"), InlineData("Q4_0", "Avx2"), InlineData("Q4_0", "AvxVnni")]
    [InlineData("Q8_0", "Scalar"), InlineData("Q8_0", "Avx2"), InlineData("Q8_0", "AvxVnni")]
    public void OneTokenKernelIsBitIdenticalToScalarReference(string format, string isaName)
    {
        var f = Enum.Parse<GemmFormat>(format);
        var isa = Enum.Parse<GemmIsa>(isaName);
        if (!QuantizedGemm.IsSupported(isa)) return;
        var rng = new Random(99 + (int)f * 5 + (int)isa);
        int cols = 192;
        foreach (int rows in new[] { 8, 29, 3 }) // whole 8-row groups, groups plus a scalar tail, tail only
        {
            byte[] w = RandomWeights(f, rows, cols, rng);
            byte[] xq = RandomActivations(f, 1, cols, rng);
            int rb = QuantizedGemm.WeightRowBytes(f, cols);
            var act = new byte[QuantizedGemm.ActivationStride(f, isa, cols)];
            QuantizedGemm.PrepareActivations(f, isa, xq, cols, act);
            var y = new float[rows];
            fixed (byte* pw = w) fixed (byte* pa = act) fixed (float* py = y)
                QuantizedGemm.MultiplyRowsOneToken(f, isa, pw, rb, rows, cols, pa, xq, py);
            for (int r = 0; r < rows; r++)
            {
                float expected = Reference(f, w.AsSpan(r * rb, rb), xq);
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(y[r]),
                    $"{f}/{isa} rows={rows}: y[{r}] = {y[r]:R}, reference {expected:R}");
            }
        }
    }

    [Theory]
    [InlineData("Q4_0", "Avx2"), InlineData("Q4_0", "AvxVnni")]
    [InlineData("Q8_0", "Avx2"), InlineData("Q8_0", "AvxVnni")]
    [InlineData("Q4_K", "Avx2"), InlineData("Q4_K", "AvxVnni")]
    public void InterleavedDecodeKernelIsBitIdenticalToScalarReference(string format, string isaName)
    {
        var f = Enum.Parse<GemmFormat>(format);
        var isa = Enum.Parse<GemmIsa>(isaName);
        if (!QuantizedGemm.IsSupported(isa) || !InterleavedRows.IsSupported(f)) return;
        var rng = new Random(4242 + (int)f * 5 + (int)isa);
        foreach (int cols in f == GemmFormat.Q4_K ? new[] { 256, 1024, 2560, 4096 } : new[] { 32, 192, 2144, 4096 })
        {
            int groupRows = InterleavedRows.RowsPerGroup(f, isa, cols), rows = 5 * groupRows;
            byte[] w = RandomWeights(f, rows, cols, rng);
            byte[] xq = RandomActivations(f, 1, cols, rng);
            int rb = QuantizedGemm.WeightRowBytes(f, cols);
            var act = new byte[QuantizedGemm.ActivationStride(f, isa, cols)];
            QuantizedGemm.PrepareActivations(f, isa, xq, cols, act);
            int gb = InterleavedRows.GroupBytes(f, isa, cols);
            var packed = new byte[5 * gb];
            var y = new float[rows];
            fixed (byte* pw = w) fixed (byte* pp = packed) fixed (byte* pa = act) fixed (float* py = y)
            {
                for (int g = 0; g < 5; g++) InterleavedRows.PackGroup(f, isa, pw + g * groupRows * rb, rb, cols, pp + g * gb);
                // Groups 1–4 first, then group 0 alone: a range of groups starting inside the copy.
                InterleavedRows.Multiply(f, isa, pp, 5, 1, 4, cols, pa, py + groupRows);
                InterleavedRows.Multiply(f, isa, pp, 5, 0, 1, cols, pa, py);
            }
            for (int r = 0; r < rows; r++)
            {
                float expected = Reference(f, w.AsSpan(r * rb, rb), xq);
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(y[r]),
                    $"{f}/{isa} cols={cols}: y[{r}] = {y[r]:R}, reference {expected:R}");
            }
        }
    }

    [Theory]
    [InlineData("Q4_0")]
    [InlineData("Q8_0")]
    [InlineData("Q4_K")]
    public void WeightMatrixDecodeThroughInterleavedCopyEqualsPrefillAndRowKernels(string format)
    {
        var f = Enum.Parse<GemmFormat>(format);
        var codec = CodecOf(f);
        var rng = new Random(77 + (int)f);
        // One segment, and several with a short last one (InterleavedRows.SegmentValues columns each; the groups of such
        // rows stack several kernel groups, InterleavedRows.StackedGroups).
        foreach (int cols in f == GemmFormat.Q4_K ? new[] { 512, 4864 } : new[] { 96, 4192 })
        {
            int g = InterleavedRows.RowsPerGroup(f, QuantizedGemm.BestIsa, cols);
            // Whole groups (of 8 or 16 rows, or a stack), groups plus a tail, tail only.
            foreach (int rows in new[] { 8, 16, 45, 3, 32, g, 2 * g + 5 })
            {
                bool copied = InterleavedDecodeCheck.Run(codec, rows, cols, tokens: 3, rng);
                Assert.Equal(InterleavedRows.IsSupported(f) && rows >= g, copied);
            }
        }
    }

    [Theory]
    [InlineData("Q4_0", 18, 0x7C00)]
    [InlineData("Q8_0", 34, 0xFE00)]
    [InlineData("Q4_K", 144, 0x7C00)]
    public void MatrixWithNonFiniteScaleGetsNoInterleavedCopyAndStillDecodesLikePrefill(string format, int blockBytes, int half)
    {
        // The interleaved kernels' scale conversion is exact for finite halves only.
        var f = Enum.Parse<GemmFormat>(format);
        int cols = f == GemmFormat.Q4_K ? 512 : 96, blocksPerRow = cols / (f == GemmFormat.Q4_K ? 256 : 32);
        bool copied = InterleavedDecodeCheck.Run(CodecOf(f), 16, cols, tokens: 2, new Random(5), data =>
        {
            int at = (9 * blocksPerRow + 1) * blockBytes; // row 9, block 1: d
            data[at] = (byte)half;
            data[at + 1] = (byte)(half >> 8);
        });
        Assert.False(copied);
    }

    [Fact]
    public void HighNibbleOfEveryByteIsItsTopFourBits()
    {
        var low = System.Runtime.Intrinsics.Vector256.Create((byte)0x0F);
        for (int start = 0; start < 256; start += 32)
        {
            var bytes = new byte[32];
            for (int i = 0; i < 32; i++) bytes[i] = (byte)(start + i);
            var high = InterleavedRows.High(System.Runtime.Intrinsics.Vector256.Create(bytes), low, InterleavedRows.HighNibbleMatrix);
            for (int i = 0; i < 32; i++) Assert.Equal(bytes[i] >> 4, high[i]);
        }
    }

    [Fact]
    public void VectorHalfConversionMatchesScalar()
    {
        var bits = new int[8];
        for (int start = 0; start < 65536; start += 8)
        {
            for (int i = 0; i < 8; i++) bits[i] = start + i;
            var v = QuantizedGemm.HalfToSingle(System.Runtime.Intrinsics.Vector256.Create(bits));
            for (int i = 0; i < 8; i++)
            {
                ushort h = (ushort)(start + i);
                float expected = LegacyKernels.F16((byte*)&h);
                Assert.Equal(BitConverter.SingleToInt32Bits(expected), BitConverter.SingleToInt32Bits(v[i]));
            }
        }
    }
}

/// <summary>The interleaved F16 decode copy: the same floats as the four-row F16 kernels.</summary>
public sealed class InterleavedF16Tests
{
    [Fact]
    public void F16_decode_through_the_interleaved_copy_equals_the_row_kernels_and_prefill()
    {
        var codec = Lowbit.Formats.CodecRegistry.Get("f16");
        var rng = new Random(3);
        // groups, groups + tail, tail only, cols % 8 ≠ 0, long rows
        foreach (var (rows, cols) in new[] { (8, 64), (45, 200), (5, 64), (16, 36), (24, 4200) })
        {
            bool copied = InterleavedDecodeCheck.Run(codec, rows, cols, tokens: 2, rng);
            Assert.Equal(rows >= 8 && cols % 8 == 0 && InterleavedRows.F16Supported(cols), copied);
        }
    }
}

/// <summary>Both widths of the interleaved F16 kernel (256-bit everywhere, 512-bit on AVX-512) give the four-row kernel's bits.</summary>
public sealed unsafe class InterleavedF16WidthTests
{
    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void Each_kernel_width_equals_the_four_row_kernel_bit_for_bit(bool wide, bool xScaled)
    {
        if (wide && !InterleavedRows.WideF16Supported) return;
        int groups = 3, rows = groups * InterleavedRows.GroupRows, cols = 1048;
        if (!InterleavedRows.F16Supported(cols)) return;
        var rng = new Random(wide ? 21 : 12);
        var w = new Half[rows * cols];
        for (int i = 0; i < w.Length; i++)
            w[i] = (Half)((i % 5 == 0 ? 1e-5 : 1.0) * (rng.NextDouble() * 2 - 1)); // normal and subnormal halves
        var x = new float[cols];
        for (int i = 0; i < cols; i++) x[i] = (float)(rng.NextDouble() * 4 - 2);
        var xs = new float[cols];
        Assert.True(InterleavedRows.ScaleForF16(x, xs));
        var expected = new float[rows];
        var actual = new float[rows];
        var packed = new byte[groups * InterleavedRows.F16GroupBytes(cols)];
        fixed (Half* pw = w) fixed (float* px = x) fixed (float* pxs = xs) fixed (float* pe = expected) fixed (float* pa = actual) fixed (byte* pp = packed)
        {
            for (int r = 0; r < rows; r += 4) MatKernels.DotF16x4Finite(pw + r * cols, cols, px, cols, pe + r);
            for (int g = 0; g < groups; g++)
                InterleavedRows.PackF16Group((byte*)(pw + g * InterleavedRows.GroupRows * cols), 2 * cols, cols, pp + g * InterleavedRows.F16GroupBytes(cols));
            InterleavedRows.MultiplyF16(pp, groups, cols, xScaled ? pxs : px, pa, xScaled, wide);
        }
        for (int r = 0; r < rows; r++)
            Assert.Equal(BitConverter.SingleToInt32Bits(expected[r]), BitConverter.SingleToInt32Bits(actual[r]));
    }
}

/// <summary>The F16 copy's scaled-activation path (x·2^112) and its fallback give the row kernels' bits.</summary>
public sealed class InterleavedF16ScalingTests
{
    [Theory]
    [InlineData(2.0f)]      // scaled activations
    [InlineData(70000f)]    // |x| ≥ 2^16: unscaled fallback
    public void Subnormal_weights_and_large_activations_decode_like_the_row_kernels(float xMax)
    {
        var codec = CodecRegistry.Get("f16");
        int rows = 16, cols = 64;
        var rng = new Random(9);
        var values = new float[rows * cols];
        for (int i = 0; i < values.Length; i++)
            values[i] = (i % 3) switch { 0 => (float)(rng.NextDouble() - 0.5) * 1e-6f, 1 => (float)(rng.NextDouble() - 0.5) * 1e-4f, _ => (float)(rng.NextDouble() * 2 - 1) };
        var data = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeTensor(values, data, rows, cols, default);
        Assert.Contains(Enumerable.Range(0, rows * cols), i => BitConverter.ToUInt16(data, 2 * i) is > 0 and < 0x0400); // subnormal halves present
        var tensor = new Lowbit.Model.ModelTensor("w", [rows, cols], codec, data);
        var interleaved = new WeightMatrix(tensor, useQuantizedActivations: false, interleave: true);
        var plain = new WeightMatrix(tensor, useQuantizedActivations: false);
        Assert.True(interleaved.InterleavedBytes > 0 || !InterleavedRows.F16Supported(cols));
        var x = new float[cols];
        for (int i = 0; i < cols; i++) x[i] = (float)(rng.NextDouble() * 2 - 1) * xMax;
        x[5] = 3e-40f; // a subnormal activation
        var par = new ParallelRunner(2);
        var a = new float[rows];
        var b = new float[rows];
        interleaved.MatVec(x, 0, a, 0, par);
        plain.MatVec(x, 0, b, 0, par);
        Assert.Equal(b.Select(BitConverter.SingleToInt32Bits), a.Select(BitConverter.SingleToInt32Bits));
    }

    [Fact]
    public void Activations_are_scaled_only_when_the_product_is_exact()
    {
        var dst = new float[3];
        Assert.True(InterleavedRows.ScaleForF16([1f, -65535f, 0f], dst));
        Assert.Equal(-65535f * 5.192296858534828e33f, dst[1]);
        Assert.False(InterleavedRows.ScaleForF16([1f, 65536f, 0f], dst));
        Assert.False(InterleavedRows.ScaleForF16([1f, float.NaN, 0f], dst));
    }
}

/// <summary>Fused decode of matrices sharing one input (q/k/v, gate/up) gives each matrix's own MatVec bits.</summary>
public sealed class SharedInputDecodeTests
{
    [Theory]
    [InlineData("q4_K", "q4_K", "q4_K")]
    [InlineData("q4_0", "q4_0", "q4_0")]
    [InlineData("q8_0", "q8_0", "q8_0")]
    [InlineData("q4_0", "q8_0", "f16")] // mixed formats: one MatVec each
    [InlineData("f16", "f16", "f16", 16)] // F16 in whole groups of 8 rows: one step over the interleaved copies
    [InlineData("f16", "f16", "f16")]     // 13 rows: one MatVec each
    [InlineData("f16", "f16", "f16", 16, 4200)]    // long rows
    [InlineData("q4_0", "q4_0", "q4_0", 13, 4224)] // rows in several segments
    public void Fused_decode_equals_separate_products(string f0, string f1, string f2, int lastRows = 13, int cols = 512)
    {
        var rng = new Random(11);
        var matrices = new[] { (f0, 40), (f1, 8), (f2, lastRows) }.Select(p =>
        {
            var codec = CodecRegistry.Get(p.Item1);
            var values = new float[p.Item2 * cols];
            for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 2 - 1);
            var data = new byte[codec.TensorBytes(p.Item2, cols)];
            codec.QuantizeTensor(values, data, p.Item2, cols, default);
            return new WeightMatrix(new Lowbit.Model.ModelTensor("w", [p.Item2, cols], codec, data), useQuantizedActivations: true, interleave: true);
        }).ToArray();
        var x = new float[cols];
        for (int i = 0; i < cols; i++) x[i] = (float)(rng.NextDouble() * 4 - 2);
        var par = new ParallelRunner(2);
        var fused = matrices.Select(m => new float[m.Rows]).ToArray();
        WeightMatrix.MatVecShared(matrices, fused, x, 0, par);
        for (int i = 0; i < matrices.Length; i++)
        {
            var alone = new float[matrices[i].Rows];
            matrices[i].MatVec(x, 0, alone, 0, par);
            Assert.Equal(alone.Select(BitConverter.SingleToInt32Bits), fused[i].Select(BitConverter.SingleToInt32Bits));
        }
    }
}

/// <summary>
/// Random weights in a codec; decode (MatVec) with the interleaved copy must equal decode without it and
/// prefill (MatMul) bit for bit, token by token. Returns whether the matrix got an interleaved copy.
/// </summary>
internal static class InterleavedDecodeCheck
{
    public static bool Run(TensorCodec codec, int rows, int cols, int tokens, Random rng, Action<byte[]>? edit = null)
    {
        var values = new float[rows * cols];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 2 - 1);
        var data = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeTensor(values, data, rows, cols, default);
        edit?.Invoke(data);
        var tensor = new Lowbit.Model.ModelTensor("w", [rows, cols], codec, data);
        var interleaved = new WeightMatrix(tensor, useQuantizedActivations: true, interleave: true);
        var plain = new WeightMatrix(tensor, useQuantizedActivations: true);
        var x = new float[tokens * cols];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 4 - 2);
        var par = new ParallelRunner(2);
        var batch = new float[tokens * rows];
        plain.MatMul(x, 0, tokens, batch, 0, par);
        for (int t = 0; t < tokens; t++)
        {
            var a = new float[rows];
            var b = new float[rows];
            interleaved.MatVec(x, t * cols, a, 0, par);
            plain.MatVec(x, t * cols, b, 0, par);
            for (int r = 0; r < rows; r++)
            {
                Assert.Equal(BitConverter.SingleToInt32Bits(b[r]), BitConverter.SingleToInt32Bits(a[r]));
                Assert.Equal(BitConverter.SingleToInt32Bits(batch[t * rows + r]), BitConverter.SingleToInt32Bits(a[r]));
            }
        }
        return interleaved.InterleavedBytes > 0;
    }
}
