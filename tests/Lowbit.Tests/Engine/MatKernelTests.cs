using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.Model;

namespace Lowbit.Tests.Engine;

public sealed unsafe class MatKernelTests
{
    private static float[] Random(int n, int seed)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(r.NextDouble() * 2 - 1);
        return a;
    }

    private static double NaiveDot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += (double)a[i] * b[i];
        return s;
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(7, 5, 3)]
    [InlineData(13, 4, 172)]
    [InlineData(8, 9, 64)]
    [InlineData(33, 7, 259)]
    [InlineData(4, 6, 8)]       // the 512-bit tile (4 rows x 6 tokens) where the CPU has it: exactly one tile
    [InlineData(6, 13, 1001)]   // tiles plus a row tail, a token tail and a column tail
    [InlineData(12, 18, 2048)]
    [InlineData(16, 4, 64)]     // one-token attention: four query heads against a KV head's keys (4x4 512-bit tile)
    [InlineData(9, 10, 200)]    // a 4 rows x 6 tokens tile, then a 4 x 4 one, with a row tail
    [InlineData(8, 4, 1100)]    // the 4 x 4 tile on rows too long to pack its token pairs on the stack (loaded, with a column tail)
    public void Tiled_matmul_matches_naive_reference_and_plain_dot_bit_for_bit(int rows, int tokens, int n)
    {
        var w = Random(rows * n, 1);
        var x = Random(tokens * n, 2);
        var y = new float[tokens * rows];
        fixed (float* pw = w) fixed (float* px = x) fixed (float* py = y)
        {
            MatKernels.MatMulTile(pw, n, rows, px, n, tokens, n, py, rows);
            for (int t = 0; t < tokens; t++)
                for (int r = 0; r < rows; r++)
                {
                    double reference = NaiveDot(w.AsSpan(r * n, n), x.AsSpan(t * n, n));
                    Assert.True(Math.Abs(y[t * rows + r] - reference) <= 1e-5 * Math.Max(1, Math.Sqrt(n)), $"[{t},{r}]");
                    Assert.Equal(MatKernels.Dot(pw + r * n, px + t * n, n), y[t * rows + r]);
                }
        }
    }

    [Theory]
    [InlineData(4, 6, 8)]
    [InlineData(6, 13, 1001)]
    [InlineData(12, 18, 2048)]
    [InlineData(5, 7, 37)]
    [InlineData(7, 11, 45)]
    public void Tiled_matmul_on_packed_token_pairs_equals_plain_dot_bit_for_bit(int rows, int tokens, int n)
    {
        var w = Random(rows * n, 5);
        var x = Random(tokens * n, 6);
        var y = new float[tokens * rows];
        var pairs = new float[Math.Max(1, (tokens - tokens % 6) * (n & ~7))];
        fixed (float* pw = w) fixed (float* px = x) fixed (float* py = y) fixed (float* pp = pairs)
        {
            MatKernels.PackTokenPairs(px, n, tokens, n, pp);
            MatKernels.MatMulTile(pw, n, rows, px, n, tokens, n, py, rows, pp);
            for (int t = 0; t < tokens; t++)
                for (int r = 0; r < rows; r++)
                    Assert.Equal(MatKernels.Dot(pw + r * n, px + t * n, n), y[t * rows + r]);
        }
    }

    [Theory]
    [InlineData(3)]
    [InlineData(64)]
    [InlineData(300)]
    [InlineData(517)]
    public void F16_and_BF16_fused_dots_equal_convert_then_dot(int n)
    {
        var w = Random(n, 3);
        var x = Random(n, 4);
        var h = new Half[n];
        var b = new ushort[n];
        var hf = new float[n];
        var bf = new float[n];
        for (int i = 0; i < n; i++)
        {
            h[i] = (Half)w[i]; hf[i] = (float)h[i];
            b[i] = BF16Codec.FromFloat(w[i]); bf[i] = BF16Codec.ToFloat(b[i]);
        }
        fixed (float* px = x) fixed (ushort* pb = b) fixed (float* phf = hf) fixed (float* pbf = bf)
        {
            Assert.Equal(MatKernels.Dot(phf, px, n), MatKernels.DotF16(h, px, n));
            Assert.Equal(MatKernels.Dot(pbf, px, n), MatKernels.DotBF16(pb, px, n));
            var conv = new float[n];
            fixed (float* pc = conv) MatKernels.ConvertBF16(pb, pc, n);
            Assert.Equal(bf, conv);
        }
    }

    [Theory]
    [InlineData(5)]
    [InlineData(64)]
    [InlineData(600)]
    public void Four_row_F16_and_BF16_dots_equal_single_row_dots(int n)
    {
        var w = Random(4 * n, 9);
        var x = Random(n, 10);
        var h = w.Select(v => (Half)v).ToArray();
        var b = w.Select(BF16Codec.FromFloat).ToArray();
        var yh = new float[4];
        var yb = new float[4];
        fixed (Half* ph = h) fixed (ushort* pb = b) fixed (float* px = x) fixed (float* pyh = yh) fixed (float* pyb = yb)
        {
            MatKernels.DotF16x4(ph, n, px, n, pyh);
            MatKernels.DotBF16x4(pb, n, px, n, pyb);
            for (int r = 0; r < 4; r++)
            {
                Assert.Equal(MatKernels.DotF16(h.AsSpan(r * n, n), px, n), yh[r]);
                Assert.Equal(MatKernels.DotBF16(pb + r * n, px, n), yb[r]);
            }
        }
    }

    [Fact]
    public void Horizontal_sums_use_one_fixed_order()
    {
        var r = new Random(21);
        for (int i = 0; i < 200; i++)
        {
            var v = new System.Runtime.Intrinsics.Vector256<float>[4];
            for (int j = 0; j < 4; j++)
                v[j] = System.Runtime.Intrinsics.Vector256.Create(Enumerable.Range(0, 8).Select(_ => (float)((r.NextDouble() - 0.5) * Math.Pow(10, r.Next(-3, 4)))).ToArray());
            float Ordered(System.Runtime.Intrinsics.Vector256<float> x) =>
                ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]));
            var four = Lowbit.Formats.FloatSums.HSum4(v[0], v[1], v[2], v[3]);
            for (int j = 0; j < 4; j++)
            {
                Assert.Equal(Ordered(v[j]), Lowbit.Formats.FloatSums.HSum(v[j]));
                Assert.Equal(Ordered(v[j]), four[j]);
            }
        }
    }

    public static TheoryData<string> FloatCodecs => new() { "f32", "f16", "bf16" };

    [Theory]
    [MemberData(nameof(FloatCodecs))]
    public void WeightMatrix_prefill_and_decode_agree_exactly_for_float_codecs(string codecName)
    {
        var codec = CodecRegistry.Get(codecName);
        int rows = 37, cols = 88, n = 11;
        var w = Random(rows * cols, 5);
        var data = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeTensor(w, data, rows, cols, default);
        var m = new WeightMatrix(new ModelTensor("w", [rows, cols], codec, data), true);
        var x = Random(n * cols, 6);
        var yBatch = new float[n * rows];
        m.MatMul(x, 0, n, yBatch, 0, new ParallelRunner(2));
        var deq = new float[rows * cols];
        codec.DequantizeRows(data, deq, cols);
        for (int t = 0; t < n; t++)
        {
            var y1 = new float[rows];
            var xt = x.AsSpan(t * cols, cols).ToArray();
            m.MatVec(xt, 0, y1, 0, new ParallelRunner(1));
            for (int r = 0; r < rows; r++)
            {
                Assert.Equal(y1[r], yBatch[t * rows + r]);
                Assert.True(Math.Abs(y1[r] - NaiveDot(deq.AsSpan(r * cols, cols), xt)) < 1e-4);
            }
        }
    }

    [Fact]
    public void WeightMatrix_generic_codec_paths_match_dequantized_reference()
    {
        // A block codec without fused kernels: decode goes through DotRow / DotRowQuantized, prefill through tiles.
        var codec = new TestInt8Codec();
        int rows = 21, cols = 96, n = 5;
        var w = Random(rows * cols, 7);
        var data = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeRows(w, data, cols, default);
        var deq = new float[rows * cols];
        codec.DequantizeRows(data, deq, cols);
        var x = Random(n * cols, 8);
        foreach (bool quantizedActivations in new[] { false, true })
        {
            var m = new WeightMatrix(new ModelTensor("w", [rows, cols], codec, data), quantizedActivations);
            var yBatch = new float[n * rows];
            m.MatMul(x, 0, n, yBatch, 0, new ParallelRunner(2));
            for (int t = 0; t < n; t++)
            {
                var xt = x.AsSpan(t * cols, cols).ToArray();
                var y1 = new float[rows];
                m.MatVec(xt, 0, y1, 0, new ParallelRunner(2));
                for (int r = 0; r < rows; r++)
                {
                    double reference = NaiveDot(deq.AsSpan(r * cols, cols), xt);
                    Assert.True(Math.Abs(yBatch[t * rows + r] - reference) < 1e-4);
                    // The quantized-activation path loses activation precision (int8), within a few %.
                    Assert.True(Math.Abs(y1[r] - reference) < (quantizedActivations ? 0.05 : 1e-4), $"{y1[r]} vs {reference}");
                }
            }
            Assert.Equal(quantizedActivations, codec.QuantizedDots > 0);
        }
        // ggml-style prefill: the batch goes through the integer dot too, and equals token-by-token decode.
        codec.QuantizedDots = 0;
        var q = new WeightMatrix(new ModelTensor("w", [rows, cols], codec, data), true, quantizedPrefill: true);
        var yq = new float[n * rows];
        q.MatMul(x, 0, n, yq, 0, new ParallelRunner(2));
        Assert.Equal(n * rows, codec.QuantizedDots);
        for (int t = 0; t < n; t++)
        {
            var y1 = new float[rows];
            q.MatVec(x.AsSpan(t * cols, cols).ToArray(), 0, y1, 0, new ParallelRunner(1));
            Assert.Equal(y1, yq.AsSpan(t * rows, rows).ToArray());
        }
    }
}

/// <summary>Test-only symmetric int8 codec (blocks of 32, F32 scale) with an integer dot against itself.</summary>
internal sealed class TestInt8Codec : TensorCodec
{
    public int QuantizedDots;
    public override string Name => "test-int8";
    public override int BlockSize => 32;
    public override int BlockBytes => 36;
    public override TensorCodec? VecDotCodec => this;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        for (int b = 0; b < src.Length / 32; b++)
        {
            var x = src.Slice(b * 32, 32);
            float amax = 0;
            foreach (var v in x) amax = Math.Max(amax, Math.Abs(v));
            float d = amax / 127;
            BitConverter.TryWriteBytes(dst.Slice(b * 36, 4), d);
            for (int i = 0; i < 32; i++) dst[b * 36 + 4 + i] = (byte)(sbyte)(d == 0 ? 0 : MathF.Round(x[i] / d));
        }
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        for (int b = 0; b < dst.Length / 32; b++)
        {
            float d = BitConverter.ToSingle(src.Slice(b * 36, 4));
            for (int i = 0; i < 32; i++) dst[b * 32 + i] = d * (sbyte)src[b * 36 + 4 + i];
        }
    }

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
    {
        Interlocked.Increment(ref QuantizedDots);
        float s = 0;
        for (int b = 0; b < row.Length / 36; b++)
        {
            int acc = 0;
            for (int i = 0; i < 32; i++) acc += (sbyte)row[b * 36 + 4 + i] * (sbyte)xq[b * 36 + 4 + i];
            s += acc * BitConverter.ToSingle(row.Slice(b * 36, 4)) * BitConverter.ToSingle(xq.Slice(b * 36, 4));
        }
        return s;
    }
}

public sealed unsafe class AttentionKernelTests
{
    [Theory]
    [InlineData(1, 8)]
    [InlineData(17, 64)]
    [InlineData(5, 44)]
    [InlineData(30, 128)]
    [InlineData(9, 104)]
    [InlineData(12, 100)]
    public void Weighted_row_sum_matches_naive_reference(int count, int dim)
    {
        var r = new Random(count * 100 + dim);
        int ldv = dim + 8;
        var p = Enumerable.Range(0, count).Select(_ => (float)r.NextDouble()).ToArray();
        var v = Enumerable.Range(0, count * ldv).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var o = new float[dim];
        fixed (float* pp = p) fixed (float* pv = v) fixed (float* po = o) MatKernels.WeightedRowSum(pp, count, pv, ldv, po, dim);
        for (int d = 0; d < dim; d++)
        {
            double reference = 0;
            for (int j = 0; j < count; j++) reference += (double)p[j] * v[j * ldv + d];
            Assert.Equal(reference, o[d], 1e-4);
        }
        // Vector columns (all but dim mod 8) are one fused multiply-add chain over j, whatever pass width covers
        // them, so the one-token and batched attention agree bit for bit.
        if (!System.Runtime.Intrinsics.X86.Fma.IsSupported) return;
        for (int d = 0; d < dim / 8 * 8; d++)
        {
            float chain = 0;
            for (int j = 0; j < count; j++) chain = MathF.FusedMultiplyAdd(p[j], v[j * ldv + d], chain);
            Assert.Equal(chain, o[d]);
        }
    }

    [Theory]
    [InlineData(4, 37, 64)]   // one 4-head 512-bit pass
    [InlineData(9, 100, 128)] // two 4-head passes over two 64-column halves, then one head alone
    [InlineData(2, 21, 64)]   // fewer heads than a pass: the single-head kernel
    [InlineData(4, 13, 72)]   // a head dim that is not whole 64-column passes: the single-head kernel
    [InlineData(4, 0, 64)]    // no rows: zeros
    public void Weighted_row_sums_of_several_heads_equal_one_head_at_a_time_bit_for_bit(int heads, int count, int dim)
    {
        var r = new Random(heads * 1000 + count);
        int ldv = dim + 8, ldp = count + 3, ldo = dim + 5;
        var p = Enumerable.Range(0, heads * ldp).Select(_ => (float)r.NextDouble()).ToArray();
        var v = Enumerable.Range(0, Math.Max(1, count) * ldv).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var fused = Enumerable.Repeat(float.NaN, heads * ldo).ToArray();
        var single = new float[heads * dim];
        fixed (float* pp = p) fixed (float* pv = v) fixed (float* pf = fused) fixed (float* ps = single)
        {
            MatKernels.WeightedRowSums(pp, ldp, heads, count, pv, ldv, pf, ldo, dim);
            for (int h = 0; h < heads; h++) MatKernels.WeightedRowSum(pp + h * ldp, count, pv, ldv, ps + h * dim, dim);
        }
        for (int h = 0; h < heads; h++)
        {
            Assert.Equal(single.AsSpan(h * dim, dim).ToArray(), fused.AsSpan(h * ldo, dim).ToArray());
            Assert.All(fused.AsSpan(h * ldo + dim, h + 1 < heads ? ldo - dim : 0).ToArray(), x => Assert.True(float.IsNaN(x))); // nothing written between heads
        }
    }
}

public sealed class FastMathTests
{
    [Fact]
    public void Vector_exp_is_within_two_ulp_of_the_exact_value()
    {
        var r = new Random(12);
        for (int i = 0; i < 20000; i++)
        {
            float x = (float)(r.NextDouble() * 175 - 87);
            double exact = Math.Exp(x);
            float got = FastMath.Exp(x);
            Assert.True(Math.Abs(got - exact) <= 2.5e-7 * exact, $"exp({x}) = {got}, exact {exact}");
        }
        Assert.Equal(1f, FastMath.Exp(0f));
        Assert.True(FastMath.Exp(-200f) is > 0 and < 1e-37f);
        Assert.True(float.IsFinite(FastMath.Exp(200f)));
    }

    [Fact]
    public void Sum_exp_exp_in_place_and_swiglu_match_scalar_references()
    {
        var r = new Random(13);
        var x = Enumerable.Range(0, 1003).Select(_ => (float)(r.NextDouble() * 40 - 30)).ToArray();
        double reference = x.Sum(v => Math.Exp(v - 5.0));
        Assert.Equal(reference, FastMath.SumExp(x, 5f), reference * 1e-6);
        var y = (float[])x.Clone();
        float sum = FastMath.ExpInPlace(y, 5f, 0.5f);
        for (int i = 0; i < x.Length; i++) Assert.Equal(Math.Exp((x[i] - 5.0) * 0.5), y[i], Math.Exp((x[i] - 5.0) * 0.5) * 1e-6);
        Assert.Equal(y.Sum(v => (double)v), sum, sum * 1e-5);
        var g = (float[])x.Clone();
        var u = x.Select(v => v * 0.1f).ToArray();
        FastMath.SwiGlu(g, u);
        for (int i = 0; i < x.Length; i++)
        {
            double silu = x[i] / (1 + Math.Exp(-x[i])) * u[i];
            Assert.Equal(silu, g[i], Math.Abs(silu) * 1e-5 + 1e-30);
        }
    }
}
