using Lowbit.Engine;

namespace Lowbit.Tests.Engine;

public sealed class RopeKernelsTests
{
    [Theory]
    [InlineData(2), InlineData(6), InlineData(8), InlineData(64), InlineData(72), InlineData(128)]
    public void Vector_rope_equals_the_scalar_pair_rotation_bit_for_bit(int headDim)
    {
        var rng = new Random(headDim);
        int half = headDim / 2;
        foreach (int pos in new[] { 0, 1, 37, 4095, 131071 })
        {
            var cos = new float[half];
            var sin = new float[half];
            for (int i = 0; i < half; i++)
            {
                float angle = pos * MathF.Pow(10000f, -2f * i / headDim);
                cos[i] = MathF.Cos(angle);
                sin[i] = MathF.Sin(angle);
            }
            var cos2 = new float[headDim];
            var sin2 = new float[headDim];
            RopeKernels.ExpandPairs(cos, sin, cos2, sin2);
            var x = new float[headDim];
            for (int i = 0; i < headDim; i++) x[i] = (float)(rng.NextDouble() * 200 - 100) * (i % 5 == 0 ? 1e-3f : 1f);

            var pairs = (float[])x.Clone();
            var pairsRef = (float[])x.Clone();
            RopeKernels.RotatePairs(pairs, cos2, sin2);
            RopeKernels.RotatePairsScalar(pairsRef, cos, sin);
            var halves = (float[])x.Clone();
            var halvesRef = (float[])x.Clone();
            RopeKernels.RotateHalves(halves, cos, sin);
            RopeKernels.RotateHalvesScalar(halvesRef, cos, sin);
            for (int i = 0; i < headDim; i++)
            {
                Assert.Equal(BitConverter.SingleToInt32Bits(pairsRef[i]), BitConverter.SingleToInt32Bits(pairs[i]));
                Assert.Equal(BitConverter.SingleToInt32Bits(halvesRef[i]), BitConverter.SingleToInt32Bits(halves[i]));
            }
            if (pos > 0) Assert.NotEqual(x, pairs); // it rotated something
        }
    }
}
