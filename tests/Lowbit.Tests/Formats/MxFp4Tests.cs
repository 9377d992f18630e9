using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>MXFP4 (ggml layout) beyond the golden vectors: scale rules, exact grid values, kernels.</summary>
public sealed class MxFp4Tests
{
    [Fact]
    public void E8M0_half_matches_ggml_including_subnormal_codes()
    {
        Assert.Equal(MathF.ScaleB(1, -128), MxFp4Codec.E8M0ToFloatHalf(0));
        Assert.Equal(MathF.ScaleB(1, -127), MxFp4Codec.E8M0ToFloatHalf(1));
        Assert.Equal(0.5f, MxFp4Codec.E8M0ToFloatHalf(127));
        for (int e = 2; e < 255; e++) Assert.Equal(MathF.ScaleB(1, e - 128), MxFp4Codec.E8M0ToFloatHalf((byte)e));
    }

    [Fact]
    public void Scale_exponent_is_floor_log2_minus_two()
    {
        Assert.Equal(0, MxFp4Codec.ScaleExponent(0f));
        Assert.Equal(125, MxFp4Codec.ScaleExponent(1f));
        Assert.Equal(125, MxFp4Codec.ScaleExponent(1.999f));
        Assert.Equal(126, MxFp4Codec.ScaleExponent(2f));
        Assert.Equal(127 - 2 - 24, MxFp4Codec.ScaleExponent(MathF.ScaleB(1.5f, -24)));
        // Just below a power of two, float log2 rounds up to the integer (as glibc's log2f does).
        Assert.Equal(125 + 10, MxFp4Codec.ScaleExponent(MathF.BitDecrement(1024f)));
    }

    [Fact]
    public void Values_on_the_block_grid_round_trip_exactly()
    {
        var codec = CodecRegistry.Get("mxfp4");
        var w = new float[64];
        for (int i = 0; i < 64; i++) w[i] = E2M1.Values[(i * 5) % 16] * 0.25f;
        w[0] = 6 * 0.25f; w[32] = -6 * 0.25f; // amax 1.5 → e = 127 − 2 → scale 0.25
        var enc = new byte[codec.RowBytes(64)];
        codec.QuantizeRows(w, enc, 64, default);
        var deq = new float[64];
        codec.DequantizeRows(enc, deq, 64);
        for (int i = 0; i < 64; i++) Assert.Equal(w[i], deq[i]);
    }

    [Theory]
    [InlineData(32)]
    [InlineData(96)]
    [InlineData(1024)]
    public void Vector_dot_equals_scalar_dot(int cols)
    {
        var rng = new Random(cols);
        var row = new byte[cols / 32 * 17];
        rng.NextBytes(row);
        for (int b = 0; b < cols / 32; b++) row[b * 17] = (byte)rng.Next(100, 140);
        var x = new float[cols];
        for (int i = 0; i < cols; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        var deq = new float[cols];
        var codec = new MxFp4Codec();
        codec.DequantizeRows(row, deq, cols);
        double expected = 0, mag = 0;
        for (int i = 0; i < cols; i++) { expected += (double)deq[i] * x[i]; mag += Math.Abs((double)deq[i] * x[i]); }
        Assert.True(Math.Abs(codec.DotRow(row, x) - expected) <= 1e-5 * mag);
        Assert.True(Math.Abs(MxFp4Codec.DotRowScalar(row, x) - expected) <= 1e-5 * mag);
    }

    [Fact]
    public void Quantization_is_deterministic_and_ignores_importance()
    {
        var codec = new MxFp4Codec();
        Assert.False(codec.UsesImportance);
        var rng = new Random(2);
        var w = new float[256];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() - 0.5);
        var imp = new float[256];
        for (int i = 0; i < imp.Length; i++) imp[i] = (float)rng.NextDouble();
        var a = new byte[codec.RowBytes(256)];
        var b = new byte[a.Length];
        codec.QuantizeRows(w, a, 256, default);
        codec.QuantizeRows(w, b, 256, imp);
        Assert.Equal(a, b);
    }
}
