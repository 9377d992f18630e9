using System.Runtime.Intrinsics.X86;
using Lowbit.Engine;

namespace Lowbit.Tests.Engine;

/// <summary>The fused F16 conversion inside the decode dots is exact, and the dots equal the convert-then-dot reference.</summary>
public sealed unsafe class MatKernelF16Tests
{
    private static bool HasAvx2 => Avx2.IsSupported && Fma.IsSupported;

    [Fact]
    public void Fused_conversion_is_exact_for_every_finite_half()
    {
        if (!HasAvx2) return; // the fused conversion is the AVX2 path
        var bits = new short[8];
        for (int h = 0; h < 65536; h += 8)
        {
            for (int i = 0; i < 8; i++) bits[i] = (short)(h + i);
            fixed (short* p = bits)
            {
                var f = MatKernels.HalfToSingleAvx2(p);
                for (int i = 0; i < 8; i++)
                {
                    Half half = BitConverter.UInt16BitsToHalf((ushort)(h + i));
                    if (Half.IsFinite(half))
                        Assert.Equal(BitConverter.SingleToInt32Bits((float)half), BitConverter.SingleToInt32Bits(f[i]));
                    else // what the dots detect to fall back: no finite half reaches 65536
                        Assert.True(Math.Abs(f[i]) >= 65536f);
                }
            }
        }
    }

    private static Half[] RandomHalves(int n, int seed)
    {
        var rng = new Random(seed);
        var h = new Half[n];
        for (int i = 0; i < n; i++)
        {
            int exponent = rng.Next(6) == 0 ? rng.Next(3) : rng.Next(5, 20); // subnormals and zeros included
            h[i] = BitConverter.UInt16BitsToHalf((ushort)((rng.Next(2) << 15) | (exponent << 10) | rng.Next(1024)));
        }
        return h;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(13)]
    [InlineData(256)]
    [InlineData(517)]
    [InlineData(2048)]
    public void F16_dots_equal_the_converting_reference_bit_for_bit(int n)
    {
        var w = RandomHalves(4 * n, n);
        var rng = new Random(n + 1);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        var y = new float[4];
        var yRef = new float[4];
        fixed (Half* pw = w) fixed (float* px = x) fixed (float* py = y) fixed (float* pr = yRef)
        {
            Assert.True(MatKernels.HalvesAllFinite((ushort*)pw, 4L * n));
            var yFinite = new float[4];
            fixed (float* pf = yFinite) MatKernels.DotF16x4Finite(pw, n, px, n, pf);
            MatKernels.DotF16x4(pw, n, px, n, py);
            MatKernels.DotF16x4Converted(pw, n, px, n, pr);
            Assert.Equal(y, yFinite);
            for (int r = 0; r < 4; r++)
            {
                float reference = MatKernels.DotF16Converted(pw + r * n, px, n);
                Assert.Equal(reference, yRef[r]);
                Assert.Equal(reference, y[r]);
                Assert.Equal(reference, MatKernels.DotF16(pw + r * n, px, n));
                double naive = 0, magnitude = 0;
                for (int i = 0; i < n; i++) { naive += (double)w[r * n + i] * x[i]; magnitude += Math.Abs((double)w[r * n + i] * x[i]); }
                Assert.True(Math.Abs(reference - naive) <= 1e-5 * magnitude + 1e-30);
            }
        }
    }

    [Theory]
    [InlineData(0x7C00)] // +inf
    [InlineData(0xFC00)] // −inf
    [InlineData(0x7E01)] // NaN
    public void Rows_with_infinities_or_NaNs_fall_back_to_the_exact_conversion(int special)
    {
        const int n = 40;
        var w = RandomHalves(4 * n, 3);
        w[2 * n + 17] = BitConverter.UInt16BitsToHalf((ushort)special);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = 0.25f + i;
        var y = new float[4];
        fixed (Half* pw = w) fixed (float* px = x) fixed (float* py = y)
        {
            MatKernels.DotF16x4(pw, n, px, n, py);
            for (int r = 0; r < 4; r++)
            {
                float reference = MatKernels.DotF16Converted(pw + r * n, px, n);
                Assert.Equal(reference, y[r]);
                Assert.Equal(reference, MatKernels.DotF16(pw + r * n, px, n));
            }
            Assert.False(float.IsFinite(y[2]));
            Assert.False(MatKernels.HalvesAllFinite((ushort*)pw, 4L * n));
            Assert.True(MatKernels.HalvesAllFinite((ushort*)pw, 2L * n + 17)); // the special value is the next one
            Assert.False(MatKernels.HalvesAllFinite((ushort*)pw, 2L * n + 18)); // found in the scalar tail too
        }
    }
}
