using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>
/// The integer (Q8 activation) dot of the legacy formats: every ISA path, single-row and four-row,
/// computes the one canonical arithmetic bit for bit (see LegacyKernels), and that arithmetic stays
/// within float rounding of a double-precision naive reference. Blocks are random bytes (any level,
/// −128 included for Q8_0) with finite fp16 scales spanning subnormals to 65504.
/// </summary>
public sealed class LegacyIntegerDotTests
{
    private delegate float Dot(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq);
    private delegate void Rows(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y);

    private sealed record Paths(int BlockBytes, bool HasOffset, Dot Scalar, Dot Portable, Dot Avx2, Dot Vnni, Dot Dispatch, Rows RowsAvx2, Rows RowsVnni, Rows RowsDispatch, Func<byte[], int, float[]> Levels);

    private static Paths For(string name) => name switch
    {
        "q4_0" => Make<Q4_0Block>(),
        "q4_1" => Make<Q4_1Block>(),
        "q5_0" => Make<Q5_0Block>(),
        "q5_1" => Make<Q5_1Block>(),
        "q8_0" => Make<Q8_0Block>(),
        "iq4_nl" => Make<IQ4_NLBlock>(),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    private static Paths Make<T>() where T : struct, ILegacyBlock => new(
        T.BlockBytes, T.HasOffset,
        LegacyKernels.DotQ8Scalar<T>, LegacyKernels.DotQ8Portable<T>, LegacyKernels.DotQ8Avx2<T>, LegacyKernels.DotQ8Vnni<T>, LegacyKernels.DotQ8<T>,
        LegacyKernels.DotQ8RowsAvx2<T>, LegacyKernels.DotQ8RowsVnni<T>, LegacyKernels.DotQ8Rows<T>, LevelsOf<T>);

    private static unsafe float[] LevelsOf<T>(byte[] block, int group) where T : struct, ILegacyBlock
    {
        Span<sbyte> levels = stackalloc sbyte[32];
        fixed (byte* p = block) T.Levels(p, group, levels);
        var result = new float[32];
        for (int i = 0; i < 32; i++) result[i] = levels[i];
        return result;
    }

    public static TheoryData<string, int> FormatsAndBlocks()
    {
        var data = new TheoryData<string, int>();
        foreach (var name in new[] { "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl" })
            foreach (int blocks in new[] { 1, 3, 8, 33 })
                data.Add(name, blocks);
        return data;
    }

    private static bool HasAvx2 => Avx2.IsSupported && Fma.IsSupported;
    private static bool HasVnni => HasAvx2 && AvxVnni.IsSupported;

    /// <summary>A random finite fp16: any sign, exponent 0..30 (zero and subnormals included), any mantissa.</summary>
    private static ushort RandomHalfBits(Random rng)
    {
        int exponent = rng.Next(8) == 0 ? 0 : rng.Next(31);
        if (rng.Next(4) != 0) exponent = 8 + rng.Next(10); // mostly ordinary magnitudes
        return (ushort)((rng.Next(2) << 15) | (exponent << 10) | rng.Next(1024));
    }

    private static byte[] RandomWeights(Random rng, Paths k, int rows, int blocks)
    {
        var bytes = new byte[rows * blocks * k.BlockBytes];
        rng.NextBytes(bytes);
        for (int b = 0; b < rows * blocks; b++)
        {
            var block = bytes.AsSpan(b * k.BlockBytes);
            MemoryMarshal.Write(block, RandomHalfBits(rng));
            if (k.HasOffset) MemoryMarshal.Write(block.Slice(2), RandomHalfBits(rng));
        }
        return bytes;
    }

    /// <summary>Q8_0 (34-byte) or Q8_1 (36-byte) activation blocks with int8 values in [−127, 127] (what the quantizer emits).</summary>
    private static byte[] RandomActivations(Random rng, bool withSum, int blocks)
    {
        int blockBytes = withSum ? 36 : 34, qs = withSum ? 4 : 2;
        var bytes = new byte[blocks * blockBytes];
        for (int b = 0; b < blocks; b++)
        {
            var block = bytes.AsSpan(b * blockBytes, blockBytes);
            MemoryMarshal.Write(block, RandomHalfBits(rng));
            if (withSum) MemoryMarshal.Write(block.Slice(2), RandomHalfBits(rng));
            for (int j = 0; j < 32; j++)
            {
                int v = rng.Next(6) switch { 0 => 127, 1 => -127, 2 => 0, _ => rng.Next(-127, 128) };
                block[qs + j] = (byte)(sbyte)v;
            }
        }
        return bytes;
    }

    [Theory]
    [MemberData(nameof(FormatsAndBlocks))]
    public void Every_path_computes_the_canonical_arithmetic_bit_for_bit(string name, int blocks)
    {
        var k = For(name);
        var rng = new Random(1000 * blocks + name.Length);
        const int rows = 9;
        int rb = blocks * k.BlockBytes;
        byte[] w = RandomWeights(rng, k, rows, blocks);
        byte[] xq = RandomActivations(rng, k.HasOffset, blocks);
        var expected = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            var row = w.AsSpan(r * rb, rb);
            expected[r] = k.Scalar(row, xq);
            Assert.Equal(expected[r], k.Portable(row, xq));
            Assert.Equal(expected[r], k.Dispatch(row, xq));
            if (HasAvx2) Assert.Equal(expected[r], k.Avx2(row, xq));
            if (HasVnni) Assert.Equal(expected[r], k.Vnni(row, xq));
        }
        var codec = CodecRegistry.Get(name);
        for (int count = 1; count <= rows; count++)
        {
            byte[] rowsBytes = w.AsSpan(0, count * rb).ToArray();
            AssertRows(expected, count, y => k.RowsDispatch(rowsBytes, count, xq, y));
            AssertRows(expected, count, y => codec.DotRowsQuantized(rowsBytes, count, xq, y));
            if (HasAvx2) AssertRows(expected, count, y => k.RowsAvx2(rowsBytes, count, xq, y));
            if (HasVnni) AssertRows(expected, count, y => k.RowsVnni(rowsBytes, count, xq, y));
        }
    }

    private static void AssertRows(float[] expected, int count, Action<float[]> run)
    {
        var y = new float[count];
        run(y);
        for (int r = 0; r < count; r++) Assert.Equal(expected[r], y[r]);
    }

    [Theory]
    [MemberData(nameof(FormatsAndBlocks))]
    public void Canonical_arithmetic_is_within_float_rounding_of_a_double_reference(string name, int blocks)
    {
        var k = For(name);
        var rng = new Random(77 + blocks);
        int actBytes = k.HasOffset ? 36 : 34, qs = k.HasOffset ? 4 : 2;
        byte[] w = RandomWeights(rng, k, 1, blocks);
        byte[] xq = RandomActivations(rng, k.HasOffset, blocks);
        double dot = 0, magnitude = 0;
        for (int b = 0; b < blocks; b++)
        {
            byte[] block = w.AsSpan(b * k.BlockBytes, k.BlockBytes).ToArray();
            float[] levels = k.Levels(block, 0);
            double dw = (double)MemoryMarshal.Read<Half>(block), da = (double)MemoryMarshal.Read<Half>(xq.AsSpan(b * actBytes));
            for (int j = 0; j < 32; j++)
            {
                double term = dw * da * levels[j] * (sbyte)xq[b * actBytes + qs + j];
                dot += term;
                magnitude += Math.Abs(term);
            }
            if (k.HasOffset)
            {
                double term = (double)MemoryMarshal.Read<Half>(block.AsSpan(2)) * (double)MemoryMarshal.Read<Half>(xq.AsSpan(b * actBytes + 2));
                dot += term;
                magnitude += Math.Abs(term);
            }
        }
        float actual = k.Scalar(w, xq);
        Assert.True(Math.Abs(actual - dot) <= 1e-5 * magnitude + 1e-30, $"{name}: expected {dot:R}, got {actual:R}");
    }

    [Fact]
    public void Infinite_weight_scale_takes_the_same_value_on_every_path()
    {
        var k = For("q4_0");
        var rng = new Random(5);
        const int rows = 4, blocks = 3;
        byte[] w = RandomWeights(rng, k, rows, blocks);
        MemoryMarshal.Write(w.AsSpan(2 * blocks * k.BlockBytes + k.BlockBytes), (ushort)0x7C00); // +inf in row 2, block 1
        byte[] xq = RandomActivations(rng, false, blocks);
        var y = new float[rows];
        k.RowsDispatch(w, rows, xq, y);
        int rb = blocks * k.BlockBytes;
        for (int r = 0; r < rows; r++) Assert.Equal(k.Scalar(w.AsSpan(r * rb, rb), xq), y[r]);
    }
}
