using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>
/// The four-row Q4_K × Q8_K decode kernels (AVX2 and AVX-VNNI) equal the single-row kernel and the
/// scalar reference bit for bit, on quantized data and on random block bytes (any 6-bit scales and
/// mins, any nibbles, finite fp16 d and dmin including subnormals), for row counts with and without a tail.
/// </summary>
public sealed class Q4_KRowsDotTests
{
    private static readonly Q4_KCodec Codec = (Q4_KCodec)CodecRegistry.Get("q4_K");

    public static TheoryData<int, bool> Cases()
    {
        var data = new TheoryData<int, bool>();
        foreach (int blocks in new[] { 1, 3, 8 })
            foreach (bool randomBytes in new[] { false, true })
                data.Add(blocks, randomBytes);
        return data;
    }

    private static ushort RandomHalfBits(Random rng)
    {
        int exponent = rng.Next(4) == 0 ? rng.Next(31) : 5 + rng.Next(10);
        return (ushort)((rng.Next(2) << 15) | (exponent << 10) | rng.Next(1024));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Four_row_kernels_equal_single_row_and_scalar_bit_for_bit(int blocks, bool randomBytes)
    {
        const int rows = 9;
        int cols = 256 * blocks;
        int rb = (int)Codec.RowBytes(cols);
        var rng = new Random(blocks * 31 + (randomBytes ? 1 : 0));
        byte[] w;
        if (randomBytes)
        {
            w = new byte[rows * rb];
            rng.NextBytes(w);
            for (int b = 0; b < rows * blocks; b++)
            {
                MemoryMarshal.Write(w.AsSpan(b * 144), RandomHalfBits(rng));
                MemoryMarshal.Write(w.AsSpan(b * 144 + 2), RandomHalfBits(rng));
            }
        }
        else
        {
            w = KQuantTestData.Quantize(Codec, KQuantTestData.Gaussian(rows * cols, blocks, 0.05f), cols);
        }
        byte[] xq = KQuantTestData.Quantize(CodecRegistry.Get("q8_K"), KQuantTestData.Gaussian(cols, 500 + blocks), cols);

        var expected = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            var row = w.AsSpan(r * rb, rb);
            expected[r] = KQuantDot.DotQ8K(Codec, row, xq, useSimd: false);
            Assert.Equal(expected[r], Codec.DotRowQuantized(row, xq));
        }
        for (int count = 1; count <= rows; count++)
        {
            byte[] part = w.AsSpan(0, count * rb).ToArray();
            Check(expected, count, y => Codec.DotRowsQuantized(part, count, xq, y));
            if (Avx2.IsSupported) Check(expected, count, y => Codec.DotQ8KRowsAvx2(part, count, xq, y));
            if (Avx2.IsSupported && AvxVnni.IsSupported) Check(expected, count, y => Codec.DotQ8KRowsVnni(part, count, xq, y));
        }
    }

    private static void Check(float[] expected, int count, Action<float[]> run)
    {
        var y = new float[count];
        run(y);
        for (int r = 0; r < count; r++) Assert.Equal(BitConverter.SingleToInt32Bits(expected[r]), BitConverter.SingleToInt32Bits(y[r]));
    }
}
