using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>Seeded inputs and small numeric helpers for the k-quant tests.</summary>
internal static class KQuantTestData
{
    public static readonly string[] WeightCodecs = ["q2_K", "q3_K", "q4_K", "q5_K", "q6_K"];

    public static KQuantCodec Codec(string name) => (KQuantCodec)CodecRegistry.Get(name);

    /// <summary>N(0, sigma²) values from a fixed seed (Box–Muller).</summary>
    public static float[] Gaussian(int count, int seed, float sigma = 1f)
    {
        var rng = new Random(seed);
        var v = new float[count];
        for (int i = 0; i < count; i++)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            v[i] = (float)(sigma * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return v;
    }

    public static float[] Uniform(int count, int seed, float lo, float hi)
    {
        var rng = new Random(seed);
        var v = new float[count];
        for (int i = 0; i < count; i++) v[i] = (float)(lo + (hi - lo) * rng.NextDouble());
        return v;
    }

    public static byte[] Quantize(TensorCodec codec, float[] src, int cols, ReadOnlySpan<float> importance = default)
    {
        var dst = new byte[codec.TensorBytes(src.Length / cols, cols)];
        codec.QuantizeRows(src, dst, cols, importance);
        return dst;
    }

    public static float[] Dequantize(TensorCodec codec, byte[] src, int count, int cols)
    {
        var dst = new float[count];
        codec.DequantizeRows(src, dst, cols);
        return dst;
    }

    /// <summary>Signal-to-quantization-noise ratio in dB.</summary>
    public static double Sqnr(float[] x, float[] y)
    {
        double signal = 0, noise = 0;
        for (int i = 0; i < x.Length; i++)
        {
            signal += (double)x[i] * x[i];
            double e = (double)x[i] - y[i];
            noise += e * e;
        }
        return 10 * Math.Log10(signal / noise);
    }
}
