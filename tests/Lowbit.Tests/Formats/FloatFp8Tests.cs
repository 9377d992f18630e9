using System.Runtime.Intrinsics;
using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>OCP FP8 E4M3 / E5M2: exhaustive code tests, RNE ties, saturation, vector == scalar, codecs.</summary>
public sealed class FloatFp8Tests
{
    public static TheoryData<Fp8Kind> Kinds => [Fp8Kind.E4M3, Fp8Kind.E5M2];

    [Fact]
    public void E4M3_known_codes_decode_per_the_OCP_spec()
    {
        Assert.Equal(448f, Fp8.Decode(0x7E, Fp8Kind.E4M3));
        Assert.Equal(-448f, Fp8.Decode(0xFE, Fp8Kind.E4M3));
        Assert.Equal(1f, Fp8.Decode(0x38, Fp8Kind.E4M3));
        Assert.Equal(MathF.ScaleB(1, -9), Fp8.Decode(0x01, Fp8Kind.E4M3));     // min subnormal
        Assert.Equal(MathF.ScaleB(7, -9), Fp8.Decode(0x07, Fp8Kind.E4M3));     // max subnormal
        Assert.Equal(MathF.ScaleB(1, -6), Fp8.Decode(0x08, Fp8Kind.E4M3));     // min normal
        Assert.True(float.IsNaN(Fp8.Decode(0x7F, Fp8Kind.E4M3)));
        Assert.True(float.IsNaN(Fp8.Decode(0xFF, Fp8Kind.E4M3)));
        Assert.Equal(240f, Fp8.Decode(0x77, Fp8Kind.E4M3));                    // exp 14, no infinities below NaN
        Assert.Equal(256f, Fp8.Decode(0x78, Fp8Kind.E4M3));
        int nanCount = 0;
        for (int c = 0; c < 256; c++) if (float.IsNaN(Fp8.Decode((byte)c, Fp8Kind.E4M3))) nanCount++;
        Assert.Equal(2, nanCount);
    }

    [Fact]
    public void E5M2_known_codes_decode_per_the_OCP_spec()
    {
        Assert.Equal(57344f, Fp8.Decode(0x7B, Fp8Kind.E5M2));
        Assert.Equal(1f, Fp8.Decode(0x3C, Fp8Kind.E5M2));
        Assert.Equal(MathF.ScaleB(1, -16), Fp8.Decode(0x01, Fp8Kind.E5M2));
        Assert.Equal(MathF.ScaleB(1, -14), Fp8.Decode(0x04, Fp8Kind.E5M2));
        Assert.Equal(float.PositiveInfinity, Fp8.Decode(0x7C, Fp8Kind.E5M2));
        Assert.Equal(float.NegativeInfinity, Fp8.Decode(0xFC, Fp8Kind.E5M2));
        Assert.True(float.IsNaN(Fp8.Decode(0x7D, Fp8Kind.E5M2)));
        Assert.True(float.IsNaN(Fp8.Decode(0xFF, Fp8Kind.E5M2)));
        // E5M2 is the top byte of binary16: every code decodes to the same value as that half.
        for (int c = 0; c < 256; c++)
        {
            float h = (float)BitConverter.UInt16BitsToHalf((ushort)(c << 8));
            float v = Fp8.Decode((byte)c, Fp8Kind.E5M2);
            Assert.True(h.Equals(v), $"code {c:x2}: {v} vs half {h}");
        }
    }

    [Theory, MemberData(nameof(Kinds))]
    public void Every_finite_code_round_trips_exactly(Fp8Kind kind)
    {
        for (int c = 0; c < 256; c++)
        {
            float v = Fp8.Decode((byte)c, kind);
            if (!float.IsFinite(v)) continue;
            Assert.Equal((byte)c, Fp8.Encode(v, kind));
        }
    }

    [Theory, MemberData(nameof(Kinds))]
    public void Midpoints_round_to_the_even_code_and_neighbours_to_the_nearest(Fp8Kind kind)
    {
        for (int c = 0; c < 0x7F; c++)
        {
            float a = Fp8.Decode((byte)c, kind), b = Fp8.Decode((byte)(c + 1), kind);
            if (!float.IsFinite(b)) continue;
            float mid = (a + b) / 2; // exact: both have few significant bits
            byte even = (byte)((c & 1) == 0 ? c : c + 1);
            Assert.Equal(even, Fp8.Encode(mid, kind));
            Assert.Equal((byte)(even | 0x80), Fp8.Encode(-mid, kind));
            Assert.Equal((byte)c, Fp8.Encode(MathF.BitDecrement(mid), kind));
            Assert.Equal((byte)(c + 1), Fp8.Encode(MathF.BitIncrement(mid), kind));
        }
    }

    [Theory, MemberData(nameof(Kinds))]
    public void Out_of_range_values_saturate_and_NaN_stays_NaN(Fp8Kind kind)
    {
        byte max = kind == Fp8Kind.E4M3 ? (byte)0x7E : (byte)0x7B;
        float m = Fp8.Max(kind);
        foreach (float v in new[] { m, MathF.BitIncrement(m), m * 1.1f, 1e30f, float.MaxValue, float.PositiveInfinity })
        {
            Assert.Equal(max, Fp8.Encode(v, kind));
            Assert.Equal((byte)(max | 0x80), Fp8.Encode(-v, kind));
        }
        Assert.True(float.IsNaN(Fp8.Decode(Fp8.Encode(float.NaN, kind), kind)));
        Assert.Equal(0x00, Fp8.Encode(0f, kind));
        Assert.Equal(0x80, Fp8.Encode(-0f, kind));
        Assert.Equal(0x00, Fp8.Encode(MathF.ScaleB(1, kind == Fp8Kind.E4M3 ? -11 : -18), kind)); // below half min subnormal
    }

    [Theory, MemberData(nameof(Kinds))]
    public void Vector_decode_equals_table_for_all_codes(Fp8Kind kind)
    {
        var codes = new byte[256];
        for (int c = 0; c < 256; c++) codes[c] = (byte)c;
        var vec = new float[256];
        Fp8.DecodeSpan(codes, vec, kind);
        for (int c = 0; c < 256; c++)
        {
            float t = Fp8.Decode((byte)c, kind);
            if (float.IsNaN(t)) Assert.True(float.IsNaN(vec[c]), $"code {c:x2}");
            else Assert.Equal(BitConverter.SingleToInt32Bits(t), BitConverter.SingleToInt32Bits(vec[c]));
        }
        if (Vector256.IsHardwareAccelerated)
            for (int c = 0; c < 256; c += 8)
            {
                var v = Fp8.Decode8(Vector128.Create(codes.AsSpan(c < 248 ? c : 240, 16)), kind);
                int start = c < 248 ? c : 240;
                for (int k = 0; k < 8; k++)
                {
                    float t = Fp8.Decode((byte)(start + k), kind);
                    Assert.True(float.IsNaN(t) ? float.IsNaN(v[k]) : t.Equals(v[k]));
                }
            }
    }

    [Theory, MemberData(nameof(Kinds))]
    public void Vector_dot_agrees_with_scalar_dot(Fp8Kind kind)
    {
        var rng = new Random(7);
        foreach (int n in new[] { 1, 15, 16, 33, 256, 1000 })
        {
            var codes = new byte[n];
            var x = new float[n];
            for (int i = 0; i < n; i++)
            {
                do codes[i] = (byte)rng.Next(256); while (!float.IsFinite(Fp8.Decode(codes[i], kind)));
                x[i] = (float)(rng.NextDouble() * 2 - 1);
            }
            double mag = 0;
            for (int i = 0; i < n; i++) mag += Math.Abs(Fp8.Decode(codes[i], kind) * x[i]);
            Assert.True(Math.Abs(Fp8.Dot(codes, x, kind) - Fp8.DotScalar(codes, x, kind)) <= 1e-5 * mag + 1e-30);
        }
    }

    [Theory, MemberData(nameof(Kinds))]
    public void Vector_dot_propagates_special_codes_like_the_scalar_dot(Fp8Kind kind)
    {
        var codes = new byte[64];
        var x = new float[64];
        for (int i = 0; i < 64; i++) { codes[i] = (byte)(0x30 + i % 8); x[i] = 0.25f * (i % 5); }
        codes[37] = kind == Fp8Kind.E4M3 ? (byte)0x7F : (byte)0x7C; // NaN / +Inf
        float vec = Fp8.Dot(codes, x, kind), sca = Fp8.DotScalar(codes, x, kind);
        Assert.Equal(float.IsNaN(sca), float.IsNaN(vec));
        if (!float.IsNaN(sca)) Assert.Equal(sca, vec);
        Assert.False(float.IsFinite(vec));
    }

    [Theory, MemberData(nameof(Kinds))]
    public void Channel_codec_round_trip_error_is_within_half_a_step(Fp8Kind kind)
    {
        var codec = (Fp8ChannelCodec)CodecRegistry.Get(kind == Fp8Kind.E4M3 ? "fp8_e4m3-channel" : "fp8_e5m2-channel");
        int rows = 5, cols = 96;
        var rng = new Random(3);
        var w = new float[rows * cols];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() * 2 - 1) * (1 + i / cols) * 0.05f;
        var enc = new byte[codec.TensorBytes(rows, cols)];
        Assert.Equal(rows * (4 + cols), enc.Length);
        codec.QuantizeTensor(w, enc, rows, cols, default);
        var deq = new float[w.Length];
        codec.DequantizeTensorRows(enc, rows, cols, 0, rows, deq);
        int mb = kind == Fp8Kind.E4M3 ? 3 : 2;
        double subnormalStep = kind == Fp8Kind.E4M3 ? Math.ScaleB(1, -9) : Math.ScaleB(1, -16);
        for (int r = 0; r < rows; r++)
        {
            float scale = Fp8ChannelCodec.RowScale(enc, r);
            float amax = 0;
            for (int c = 0; c < cols; c++) amax = MathF.Max(amax, MathF.Abs(w[r * cols + c]));
            Assert.Equal(amax / Fp8.Max(kind), scale);
            for (int c = 0; c < cols; c++)
            {
                double x = w[r * cols + c], err = Math.Abs(x - deq[r * cols + c]);
                Assert.True(err <= Math.Max(Math.Abs(x) * Math.ScaleB(1, -(mb + 1)), scale * subnormalStep / 2) * 1.0001 + 1e-12,
                    $"row {r} col {c}: {x} -> {deq[r * cols + c]}");
            }
        }
        // Row-range access equals whole-tensor decoding; DotTensorRow agrees with dequantize + dot.
        var part = new float[2 * cols];
        codec.DequantizeTensorRows(enc, rows, cols, 2, 2, part);
        Assert.Equal(deq.AsSpan(2 * cols, 2 * cols).ToArray(), part);
        var xv = new float[cols];
        for (int i = 0; i < cols; i++) xv[i] = (float)rng.NextDouble() - 0.5f;
        for (int r = 0; r < rows; r++)
        {
            double expected = 0;
            for (int c = 0; c < cols; c++) expected += (double)deq[r * cols + c] * xv[c];
            Assert.Equal(expected, codec.DotTensorRow(enc, rows, cols, r, xv), 1e-5);
        }
    }

    [Fact]
    public void Channel_codec_represents_scaled_codes_exactly_and_zero_rows()
    {
        var codec = new Fp8ChannelCodec(Fp8Kind.E4M3);
        // Row 0: codes with amax 448 → scale 1 → exact. Row 1: zeros.
        var w = new float[2 * 16];
        for (int i = 0; i < 16; i++) w[i] = Fp8.Decode((byte)(0x70 + i % 15), Fp8Kind.E4M3) * (i % 2 == 0 ? 1 : -1);
        w[0] = 448f;
        var enc = new byte[codec.TensorBytes(2, 16)];
        codec.QuantizeRows(w, enc, 16, default);
        var deq = new float[w.Length];
        codec.DequantizeRows(enc, deq, 16);
        Assert.Equal(w, deq);
    }

    [Theory, MemberData(nameof(Kinds))]
    public void Raw_codec_is_deterministic_and_registered(Fp8Kind kind)
    {
        var codec = CodecRegistry.Get(kind == Fp8Kind.E4M3 ? "fp8_e4m3" : "fp8_e5m2");
        Assert.Equal(8.0, codec.BitsPerWeight);
        var rng = new Random(11);
        var w = new float[64];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() * 100 - 50);
        var a = new byte[64];
        var b = new byte[64];
        codec.QuantizeRows(w, a, 64, default);
        codec.QuantizeRows(w, b, 64, default);
        Assert.Equal(a, b);
        for (int i = 0; i < 64; i++) Assert.Equal(Fp8.Encode(w[i], kind), a[i]);
    }

    [Fact]
    public void Ggml_UE4M3_helpers_follow_ggml_semantics()
    {
        Assert.Equal(0f, Fp8.GgmlUE4M3ToFloatHalf(0));
        Assert.Equal(0f, Fp8.GgmlUE4M3ToFloatHalf(0x7F));
        Assert.Equal(0.5f, Fp8.GgmlUE4M3ToFloatHalf(0x38));
        Assert.Equal(224f, Fp8.GgmlUE4M3ToFloatHalf(0x7E));
        Assert.Equal(3 * MathF.ScaleB(1, -10), Fp8.GgmlUE4M3ToFloatHalf(3));
        Assert.Equal(0, Fp8.GgmlFloatToUE4M3(0f));
        Assert.Equal(0, Fp8.GgmlFloatToUE4M3(-1f));
        Assert.Equal(0x7E, Fp8.GgmlFloatToUE4M3(1e9f));
        Assert.Equal(0x38, Fp8.GgmlFloatToUE4M3(1f));
        // Half-up (not even) on the first dropped bit: 1 + 1/16 is a tie between 0x38 and 0x39.
        Assert.Equal(0x39, Fp8.GgmlFloatToUE4M3(1.0625f));
        // Every UE4M3 value below exponent 15 (times 2 for the half convention) encodes back to its
        // code; ggml's encoder treats exponent 15 as overflow, so 256..448 all become 0x7E.
        for (int c = 1; c < 0x78; c++) Assert.Equal((byte)c, Fp8.GgmlFloatToUE4M3(2 * Fp8.GgmlUE4M3ToFloatHalf((byte)c)));
        for (int c = 0x78; c < 0x7F; c++) Assert.Equal(0x7E, Fp8.GgmlFloatToUE4M3(2 * Fp8.GgmlUE4M3ToFloatHalf((byte)c)));
    }
}
