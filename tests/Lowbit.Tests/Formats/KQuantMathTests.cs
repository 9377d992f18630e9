using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>The helpers behind the k-quant scale searches.</summary>
public sealed class KQuantMathTests
{
    [Theory]
    [InlineData(0.5f, 0)]
    [InlineData(1.5f, 2)]
    [InlineData(2.5f, 2)]
    [InlineData(-0.5f, 0)]
    [InlineData(-1.5f, -2)]
    [InlineData(-2.4f, -2)]
    [InlineData(3.7f, 4)]
    [InlineData(4194303f, 4194303)]
    public void NearestInt_rounds_half_to_even(float v, int expected) => Assert.Equal(expected, KQuantMath.NearestInt(v));

    /// <summary>Eight groups mixing ordinary data with the degenerate cases the searches special-case.</summary>
    private static float[] Groups(int n, int seed)
    {
        var rng = new Random(seed);
        var x = KQuantTestData.Gaussian(8 * n, seed, 0.1f + (float)rng.NextDouble());
        int kind = seed % 6;
        var g = x.AsSpan(n * (seed % 8), n);
        switch (kind)
        {
            case 0: g.Clear(); break;                                  // all zero
            case 1: g.Fill(0.375f); break;                             // constant > 0
            case 2: g.Fill(-1.25f); break;                             // constant < 0
            case 3: for (int i = 0; i < n; i++) g[i] = Math.Abs(g[i]) + 0.5f; break; // min > 0 → clamped to 0
            case 4: g.Clear(); g[3] = 2f; break;                       // single nonzero
            case 5: for (int i = 0; i < n; i++) g[i] *= 1e-7f; break;  // tiny
        }
        return x;
    }

    [Theory]
    [InlineData(16, 3, false, true, -0.5f, 0.1f, 15)]   // q2_K reference
    [InlineData(16, 3, true, false, -0.9f, 0.05f, 36)]  // q2_K imatrix
    [InlineData(32, 15, false, false, -1f, 0.1f, 20)]   // q4_K reference
    [InlineData(32, 15, true, false, -0.9f, 0.05f, 36)] // q4_K / q5_K imatrix
    [InlineData(32, 31, false, false, -0.5f, 0.1f, 15)] // q5_K reference
    public void Eight_lane_search_is_bit_identical_to_the_scalar_search(int n, int nmax, bool qkx3, bool useMad, float rmin, float rdelta, int nstep)
    {
        for (int seed = 0; seed < 24; seed++)
        {
            var x = Groups(n, seed);
            var w = KQuantTestData.Uniform(8 * n, seed + 100, 0f, 2f);
            var codes = new byte[8 * n];
            var scales = new float[8];
            var mins = new float[8];
            KQuantMath.MakeQkxQuantsX8(n, nmax, x, w, codes, scales, mins, rmin, rdelta, nstep, useMad, qkx3);

            var expectedCodes = new byte[n];
            var scratch = new byte[n];
            for (int j = 0; j < 8; j++)
            {
                var xg = x.AsSpan(n * j, n);
                var wg = w.AsSpan(n * j, n);
                float min;
                float scale = qkx3
                    ? KQuantMath.MakeQkx3Quants(n, nmax, xg, wg, expectedCodes, out min, scratch, rmin, rdelta, nstep, useMad)
                    : KQuantMath.MakeQkx2Quants(n, nmax, xg, wg, expectedCodes, out min, scratch, rmin, rdelta, nstep, useMad);
                Assert.Equal(BitConverter.SingleToInt32Bits(scale), BitConverter.SingleToInt32Bits(scales[j]));
                Assert.Equal(BitConverter.SingleToInt32Bits(min), BitConverter.SingleToInt32Bits(mins[j]));
                Assert.Equal(expectedCodes, codes.AsSpan(n * j, n).ToArray());
            }
        }
    }

    [Theory]
    [InlineData(32, false)] // q6_K reference
    [InlineData(32, true)]  // q6_K imatrix
    [InlineData(4, true)]   // q3_K imatrix
    public void Eight_lane_symmetric_search_is_bit_identical_to_the_scalar_search(int nmax, bool withWeights)
    {
        const int n = 16;
        for (int seed = 0; seed < 24; seed++)
        {
            var x = Groups(n, seed);
            var w = withWeights ? KQuantTestData.Uniform(8 * n, seed + 200, 0f, 2f) : [];
            var codes = new sbyte[8 * n];
            var scales = new float[8];
            KQuantMath.MakeQxQuantsX8(n, nmax, x, w, codes, scales);
            var expectedCodes = new sbyte[n];
            for (int j = 0; j < 8; j++)
            {
                float scale = KQuantMath.MakeQxQuants(n, nmax, x.AsSpan(n * j, n), expectedCodes, 1, withWeights ? w.AsSpan(n * j, n) : default);
                Assert.Equal(BitConverter.SingleToInt32Bits(scale), BitConverter.SingleToInt32Bits(scales[j]));
                Assert.Equal(expectedCodes, codes.AsSpan(n * j, n).ToArray());
            }
        }
    }

    [Fact]
    public void K4_scale_packing_round_trips()
    {
        var rng = new Random(3);
        for (int trial = 0; trial < 100; trial++)
        {
            var scales = new byte[8];
            var mins = new byte[8];
            for (int j = 0; j < 8; j++) { scales[j] = (byte)rng.Next(64); mins[j] = (byte)rng.Next(64); }
            var packed = new byte[12];
            KQuantMath.PackScalesMinsK4(scales, mins, packed);
            for (int j = 0; j < 8; j++)
            {
                KQuantMath.GetScaleMinK4(j, packed, out int sc, out int m);
                Assert.Equal(scales[j], sc);
                Assert.Equal(mins[j], m);
            }
        }
    }
}
