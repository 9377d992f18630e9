using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>Integer affine family: naming, layout, error bounds, MSE search, GPTQ helpers, vector == scalar.</summary>
public sealed class IntAffineTests
{
    private static float[] RandomWeights(int n, int seed, float sigma = 0.02f)
    {
        var rng = new Random(seed);
        var w = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            w[i] = (float)(sigma * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return w;
    }

    [Theory]
    [InlineData("int4-g128-sym", 4, 128, true, 4 + 16.0 / 128)]
    [InlineData("int4-g128-asym", 4, 128, false, 4 + 24.0 / 128)]
    [InlineData("int3-g64-asym-mse", 3, 64, false, 3 + 24.0 / 64)]
    [InlineData("int2-g32-sym", 2, 32, true, 2 + 16.0 / 32)]
    [InlineData("int8-g32-sym", 8, 32, true, 8.5)]
    [InlineData("int3-g100-sym", 3, 100, true, 8.0 * (2 + 38) / 100)]
    public void Group_names_parse_to_the_documented_layout(string name, int bits, int g, bool sym, double bpw)
    {
        var codec = Assert.IsType<IntGroupCodec>(CodecRegistry.Get(name));
        Assert.Equal(name, codec.Name);
        Assert.Equal((bits, g, sym), (codec.Bits, codec.GroupSize, codec.Symmetric));
        Assert.Equal(bpw, codec.BitsPerWeight, 12);
    }

    [Theory]
    [InlineData("int8-channel-sym", 8, IntGranularity.Channel, true)]
    [InlineData("int3-tensor-asym", 3, IntGranularity.Tensor, false)]
    [InlineData("int4-channel-asym-mse", 4, IntGranularity.Channel, false)]
    public void Channel_and_tensor_names_parse(string name, int bits, IntGranularity gran, bool sym)
    {
        var codec = Assert.IsType<IntAffineCodec>(CodecRegistry.Get(name));
        Assert.Equal(name, codec.Name);
        Assert.Equal((bits, gran, sym), (codec.Bits, codec.Granularity, codec.Symmetric));
        Assert.Equal(bits, codec.BitsPerWeight);
    }

    [Theory]
    [InlineData("int5-g128-sym")]
    [InlineData("int4-g0-sym")]
    [InlineData("int4-g128")]
    [InlineData("int4-row-sym")]
    public void Malformed_names_are_rejected(string name)
    {
        if (name == "int4-g0-sym") Assert.Throws<LowbitException>(() => CodecRegistry.TryGet(name));
        else Assert.Null(CodecRegistry.TryGet(name));
    }

    public static TheoryData<string> AllShapes => new()
    {
        "int2-g32-sym", "int2-g32-asym", "int3-g64-sym", "int3-g24-asym", "int4-g128-sym", "int4-g32-asym",
        "int4-g48-sym", "int8-g64-sym", "int8-g32-asym", "int3-g100-asym",
        "int4-channel-sym", "int4-channel-asym", "int8-channel-sym", "int2-channel-asym", "int3-tensor-sym", "int8-tensor-asym",
    };

    [Theory, MemberData(nameof(AllShapes))]
    public void Round_trip_error_is_at_most_half_a_step(string name)
    {
        var codec = CodecRegistry.Get(name);
        int rows = 4, cols = name.Contains("g100") ? 400 : name.Contains("g24") || name.Contains("g48") ? 96 * 2 : 256;
        var w = RandomWeights(rows * cols, name.GetHashCode() & 0xffff);
        var enc = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeTensor(w, enc, rows, cols, default);
        var deq = new float[w.Length];
        codec.DequantizeTensorRows(enc, rows, cols, 0, rows, deq);
        int bits = name[3] - '0';
        int groups = name.Contains("-g") ? int.Parse(name.Split('-')[1][1..]) : name.Contains("channel") ? cols : rows * cols;
        for (int start = 0; start < w.Length; start += groups)
        {
            float lo = 0, hi = 0;
            for (int i = start; i < start + groups; i++) { lo = MathF.Min(lo, w[i]); hi = MathF.Max(hi, w[i]); }
            double step = name.Contains("asym") ? (hi - lo) / ((1 << bits) - 1) : 2 * Math.Max(-lo, hi) / ((1 << bits) - 1);
            // FP16-stored scales may be up to 2^-11 relative off, which moves the grid ends a little.
            double bound = step / 2 * (1 + 2e-3 * (1 << bits)) + 1e-9;
            for (int i = start; i < start + groups; i++)
                Assert.True(Math.Abs(w[i] - deq[i]) <= bound, $"{name} value {i}: {w[i]} -> {deq[i]} (step {step})");
        }
    }

    [Theory, MemberData(nameof(AllShapes))]
    public void Fused_dot_agrees_with_dequantize_then_dot_and_with_scalar_kernels(string name)
    {
        var codec = CodecRegistry.Get(name);
        int rows = 3, cols = name.Contains("g100") ? 400 : name.Contains("g24") || name.Contains("g48") ? 192 : 256;
        var w = RandomWeights(rows * cols, 5, 1f);
        var x = RandomWeights(cols, 6, 1f);
        var enc = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeTensor(w, enc, rows, cols, default);
        var deq = new float[w.Length];
        codec.DequantizeTensorRows(enc, rows, cols, 0, rows, deq);
        for (int r = 0; r < rows; r++)
        {
            double expected = 0, mag = 0;
            for (int c = 0; c < cols; c++) { expected += (double)deq[r * cols + c] * x[c]; mag += Math.Abs((double)deq[r * cols + c] * x[c]); }
            float got = codec switch
            {
                IntAffineCodec t => t.DotTensorRow(enc, rows, cols, r, x),
                _ => codec.DotRow(enc.AsSpan((int)(r * codec.RowBytes(cols)), (int)codec.RowBytes(cols)), x),
            };
            Assert.True(Math.Abs(got - expected) <= 1e-5 * mag + 1e-6, $"{name} row {r}: {got} vs {expected}");
            if (codec is IntGroupCodec g)
            {
                var row = enc.AsSpan((int)(r * codec.RowBytes(cols)), (int)codec.RowBytes(cols));
                Assert.True(Math.Abs(g.DotRowScalar(row, x) - got) <= 1e-5 * mag + 1e-6);
            }
        }
    }

    [Fact]
    public void Vector_code_kernels_equal_scalar_kernels()
    {
        var rng = new Random(9);
        foreach (int bits in new[] { 2, 3, 4, 8 })
            foreach (int n in new[] { 8, 16, 40, 128, 1024 })
            {
                var codes = new byte[n];
                for (int i = 0; i < n; i++) codes[i] = (byte)rng.Next(1 << bits);
                var packed = new byte[(n * bits + 7) / 8 + 8];
                IntQuant.PackBits(codes, bits, packed);
                for (int i = 0; i < n; i++) Assert.Equal(codes[i], IntQuant.ReadBits(packed, i, bits));
                var x = RandomWeights(n, n + bits, 1f);
                double mag = 0;
                for (int i = 0; i < n; i++) mag += Math.Abs(codes[i] * x[i]);
                Assert.True(Math.Abs(IntKernels.DotCodes(packed, bits, x) - IntKernels.DotCodesScalar(packed, bits, x)) <= 1e-5 * mag);
            }
    }

    [Theory]
    [InlineData("int4-g128-asym")]
    [InlineData("int3-g64-asym")]
    [InlineData("int2-g32-asym")]
    [InlineData("int8-channel-asym")]
    [InlineData("int4-tensor-asym")]
    public void Exactly_representable_weights_round_trip_exactly(string name)
    {
        // Asymmetric grids: values (q − z)·s with s a power of two (exact in FP16) and both grid
        // ends present reproduce the same s and z, hence themselves.
        var codec = CodecRegistry.Get(name);
        int bits = name[3] - '0', cols = 128, rows = 2, maxq = (1 << bits) - 1;
        float s = 1f / 64;
        int z = Math.Min(3, maxq - 1);
        int groups = name.Contains("-g") ? int.Parse(name.Split('-')[1][1..]) : name.Contains("channel") ? cols : rows * cols;
        var rng = new Random(4);
        var w = new float[rows * cols];
        for (int i = 0; i < w.Length; i++)
        {
            int q = (i % groups) switch { 0 => 0, 1 => maxq, _ => rng.Next(maxq + 1) };
            w[i] = (q - z) * s;
        }
        var enc = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeTensor(w, enc, rows, cols, default);
        var deq = new float[w.Length];
        codec.DequantizeTensorRows(enc, rows, cols, 0, rows, deq);
        Assert.Equal(w, deq);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(8)]
    public void Every_code_round_trips_through_the_value_helpers(int bits)
    {
        foreach (bool sym in new[] { true, false })
        {
            float s = 0.013f;
            int z = sym ? 1 << (bits - 1) : 1;
            for (int q = 0; q < 1 << bits; q++)
                Assert.Equal(q, IntQuant.QuantizeValue(IntQuant.DequantizeValue(q, s, z), s, z, bits));
            Assert.Equal(0, IntQuant.QuantizeValue(-1e9f, s, z, bits));
            Assert.Equal((1 << bits) - 1, IntQuant.QuantizeValue(1e9f, s, z, bits));
        }
    }

    [Theory]
    [InlineData(4, true)]
    [InlineData(4, false)]
    [InlineData(3, false)]
    [InlineData(2, true)]
    public void Mse_search_never_increases_the_error_and_helps_with_outliers(int bits, bool sym)
    {
        var w = RandomWeights(256, 21); // Gaussian tails: clipping the extremes pays off
        var plain = IntQuant.GroupParams(w, bits, sym, mseSearch: false, default, fp16Scale: true);
        var mse = IntQuant.GroupParams(w, bits, sym, mseSearch: true, default, fp16Scale: true);
        double ePlain = IntQuant.SquaredError(w, plain.Scale, plain.Zero, bits, default);
        double eMse = IntQuant.SquaredError(w, mse.Scale, mse.Zero, bits, default);
        Assert.True(eMse <= ePlain);
        if (bits >= 3)
        {
            Assert.True(eMse < ePlain, $"mse {eMse} vs plain {ePlain}");
            Assert.True(mse.Scale < plain.Scale);
        }
    }

    [Fact]
    public void Gptq_helpers_compose_to_the_codec_output()
    {
        var codec = (IntGroupCodec)CodecRegistry.Get("int4-g32-asym");
        var w = RandomWeights(64, 31);
        var expected = new byte[codec.RowBytes(64)];
        codec.QuantizeRows(w, expected, 64, default);
        var built = new byte[expected.Length];
        var codes = new byte[32];
        for (int g = 0; g < 2; g++)
        {
            var x = w.AsSpan(g * 32, 32);
            var (s, z) = codec.ComputeGroupParams(x, default);
            for (int i = 0; i < 32; i++) codes[i] = (byte)IntQuant.QuantizeValue(x[i], s, z, 4);
            codec.WriteBlock(built.AsSpan(g * codec.BlockBytes, codec.BlockBytes), s, z, codes);
            Assert.Equal((s, z), codec.ReadBlockParams(built.AsSpan(g * codec.BlockBytes)));
        }
        Assert.Equal(expected, built);
    }

    [Theory]
    [InlineData("int4-channel-asym")]
    [InlineData("int3-tensor-sym")]
    [InlineData("int8-channel-sym-mse")]
    public void Pack_tensor_from_helper_codes_equals_quantize_tensor(string name)
    {
        var codec = (IntAffineCodec)CodecRegistry.Get(name);
        int rows = 3, cols = 64;
        var w = RandomWeights(rows * cols, 41);
        var expected = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeTensor(w, expected, rows, cols, default);
        bool perRow = codec.Granularity == IntGranularity.Channel;
        int n = perRow ? rows : 1;
        var scales = new float[n];
        var zeros = new int[n];
        for (int p = 0; p < n; p++)
            (scales[p], zeros[p]) = codec.ComputeParams(perRow ? w.AsSpan(p * cols, cols) : w, default);
        var codes = new byte[rows * cols];
        for (int i = 0; i < codes.Length; i++)
        {
            int p = perRow ? i / cols : 0;
            codes[i] = (byte)IntQuant.QuantizeValue(w[i], scales[p], zeros[p], codec.Bits);
        }
        var built = new byte[expected.Length];
        codec.PackTensor(codes, scales, zeros, rows, cols, built);
        Assert.Equal(expected, built);
        for (int p = 0; p < n; p++) Assert.Equal((scales[p], zeros[p]), codec.ReadParams(built, rows, p));
    }

    [Fact]
    public void Zero_groups_decode_to_zero_and_layout_nibbles_are_low_first()
    {
        var codec = (IntGroupCodec)CodecRegistry.Get("int4-g16-sym");
        var w = new float[32];
        w[16] = 1f; // second group: amax 1 → scale 2/15, code for 1 = round(7.5)+8 → clamped 15
        w[17] = -1f;
        var enc = new byte[codec.RowBytes(32)];
        codec.QuantizeRows(w, enc, 32, default);
        var deq = new float[32];
        codec.DequantizeRows(enc, deq, 32);
        for (int i = 0; i < 16; i++) Assert.Equal(0f, deq[i]);
        int b = codec.BlockBytes + codec.ParamBytes;
        Assert.Equal(15, enc[b] & 0x0F);  // value 16 in the low nibble
        Assert.Equal(0, enc[b] >> 4);     // value 17 = −1 → round(−7.5) = −8 → code 0
        Assert.Equal(8, enc[b + 1] & 0x0F);
    }

    [Fact]
    public void Importance_weights_steer_the_mse_search()
    {
        var codec = (IntGroupCodec)CodecRegistry.Get("int3-g64-asym-mse");
        Assert.True(codec.UsesImportance);
        var w = RandomWeights(64, 77);
        w[0] = 0.3f;
        var imp = new float[64];
        Array.Fill(imp, 1e-3f);
        imp[0] = 1000f; // the outlier matters most: clipping it would be costly
        var pImp = codec.ComputeGroupParams(w, imp);
        var pFlat = codec.ComputeGroupParams(w, default);
        Assert.True(pImp.Scale > pFlat.Scale);
    }
}
