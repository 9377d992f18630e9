using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>
/// The TensorCodec contract for every codec of this family: sizes, determinism, row-range decoding
/// equal to whole-tensor decoding, fused dot equal to dequantize-then-dot, registry round trip.
/// </summary>
public sealed class FloatCodecContractTests
{
    public static TheoryData<string> Names => new()
    {
        "f16", "bf16", "mxfp4", "nvfp4", "nvfp4-ts", "fp8_e4m3", "fp8_e5m2", "fp8_e4m3-channel", "fp8_e5m2-channel",
        "fp4_e2m1", "nf4", "nf4-nodq", "int4-g128-sym", "int4-g32-asym-mse", "int3-g64-asym", "int2-g16-sym",
        "int8-channel-sym", "int4-channel-asym-mse", "int3-tensor-asym", "int8-tensor-sym",
    };

    [Theory, MemberData(nameof(Names))]
    public void Codec_honours_the_tensor_contract(string name)
    {
        var codec = CodecRegistry.Get(name);
        Assert.Equal(name, codec.Name);
        Assert.Same(codec.GetType(), CodecRegistry.Get(name.ToUpperInvariant()).GetType());
        int rows = 5, cols = 256;
        var rng = new Random(name.Length * 31 + name[^1]);
        var w = new float[rows * cols];
        for (int i = 0; i < w.Length; i++) w[i] = (float)((rng.NextDouble() * 2 - 1) * (i % 97 == 0 ? 0.3 : 0.03));
        var imp = new float[cols];
        for (int i = 0; i < cols; i++) imp[i] = (float)rng.NextDouble() + 0.01f;

        long bytes = codec.TensorBytes(rows, cols);
        if (codec is TensorLevelCodec t)
        {
            Assert.Equal(t.HeaderBytes(rows, cols) + rows * codec.RowBytes(cols), bytes);
            Assert.True(t.EffectiveBitsPerWeight(rows, cols) >= codec.BitsPerWeight - 1e-9);
        }
        else
        {
            Assert.Equal(rows * codec.RowBytes(cols), bytes);
            Assert.Equal(8.0 * codec.RowBytes(cols) / cols, codec.BitsPerWeight, 12);
        }

        var a = new byte[bytes];
        var b = new byte[bytes];
        codec.QuantizeTensor(w, a, rows, cols, imp);
        codec.QuantizeTensor(w, b, rows, cols, imp);
        Assert.Equal(a, b);

        var all = new float[w.Length];
        codec.DequantizeTensorRows(a, rows, cols, 0, rows, all);
        var mid = new float[2 * cols];
        codec.DequantizeTensorRows(a, rows, cols, 1, 2, mid);
        Assert.Equal(all.AsSpan(cols, 2 * cols).ToArray(), mid);

        // Reconstruction is close for every scaled format here: SQNR above 6 dB (0 dB for one
        // scale per tensor, which the 10× outliers stretch).
        double sig = 0, noise = 0;
        for (int i = 0; i < w.Length; i++) { sig += (double)w[i] * w[i]; noise += (double)(w[i] - all[i]) * (w[i] - all[i]); }
        if (name != "fp4_e2m1" && !name.StartsWith("fp8_e") || name.EndsWith("channel"))
            Assert.True(sig > (name.Contains("tensor") ? 1 : 4) * noise, $"SQNR {10 * Math.Log10(sig / noise):F1} dB");

        var x = new float[cols];
        for (int i = 0; i < cols; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        for (int r = 0; r < rows; r++)
        {
            double expected = 0, mag = 0;
            for (int c = 0; c < cols; c++) { expected += (double)all[r * cols + c] * x[c]; mag += Math.Abs((double)all[r * cols + c] * x[c]); }
            float got = codec is TensorLevelCodec tl
                ? tl.DotTensorRow(a, rows, cols, r, x)
                : codec.DotRow(a.AsSpan((int)(r * codec.RowBytes(cols)), (int)codec.RowBytes(cols)), x);
            Assert.True(Math.Abs(got - expected) <= 1e-5 * mag + 1e-7, $"row {r}: {got} vs {expected}");
        }
    }

    [Fact]
    public void Row_lengths_that_are_not_block_multiples_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => CodecRegistry.Get("mxfp4").RowBytes(48));
        Assert.Throws<ArgumentException>(() => CodecRegistry.Get("int4-g128-sym").RowBytes(64));
        Assert.Throws<ArgumentException>(() => CodecRegistry.Get("nf4").TensorBytes(2, 100));
        Assert.Throws<LowbitException>(() => CodecRegistry.Get("nf4").QuantizeRows(new float[100], new byte[1000], 50, default));
    }
}
