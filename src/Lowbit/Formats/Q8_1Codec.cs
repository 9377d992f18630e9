using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// GGUF Q8_1, an activation format: 32 values per 36-byte block = fp16 scale d, fp16 s = d·Σq,
/// 32 signed bytes q; value = d·q. The integer dot path of Q4_1 and Q5_1 pairs with it (s carries
/// the block sum their offset multiplies).
/// </summary>
public sealed class Q8_1Codec : TensorCodec
{
    public override string Name => "q8_1";
    public override GgmlType? Ggml => GgmlType.Q8_1;
    public override int BlockSize => 32;
    public override int BlockBytes => 36;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        int rows = LegacyQuantMath.ValidateQuantize(this, src, dst, cols, importance);
        if (Avx2.IsSupported)
            LegacyKernels.QuantizeQ8Avx2(src.Slice(0, rows * cols), dst, withSum: true); // the activation hot path
        else
            QuantizeRowsScalar(src.Slice(0, rows * cols), dst);
    }

    /// <summary>The scalar reference quantizer over whole blocks (the AVX2 path must produce the same bytes).</summary>
    internal static void QuantizeRowsScalar(ReadOnlySpan<float> src, Span<byte> dst)
    {
        for (int b = 0; b < src.Length / 32; b++)
            QuantizeBlock(src.Slice(b * 32, 32), dst.Slice(b * 36, 36));
    }

    /// <summary>ggml's quantize_row_q8_1_ref: as Q8_0, plus s = fp16(Σq · d).</summary>
    private static void QuantizeBlock(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = MathF.Max(amax, MathF.Abs(x[j]));
        float d = amax / 127;
        float id = d != 0 ? 1.0f / d : 0.0f;
        LegacyQuantMath.WriteHalf(block, 0, d);
        int sum = 0;
        for (int j = 0; j < 32; j++)
        {
            sbyte q = (sbyte)LegacyQuantMath.RoundAwayFromZero(x[j] * id);
            block[4 + j] = (byte)q;
            sum += q;
        }
        LegacyQuantMath.WriteHalf(block, 2, sum * d);
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        LegacyQuantMath.ValidateDequantize(this, src, dst, cols);
        LegacyKernels.Dequantize<Q8_1Block>(src, dst);
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => LegacyKernels.DotF32<Q8_1Block>(row, x);
}

/// <summary>Q8_1 as a weight layout for the float kernels (its s field is not needed there).</summary>
internal readonly unsafe struct Q8_1Block : ILegacyBlock
{
    public static int BlockBytes => 36;
    public static int Groups => 1;
    public static bool HasOffset => false;
    public static Vector256<sbyte> LevelsAvx2(byte* block, int group) => Vector256.Load((sbyte*)(block + 4));
    public static void LevelsVector128(byte* block, int group, out Vector128<sbyte> first, out Vector128<sbyte> second)
    {
        first = Vector128.Load((sbyte*)(block + 4));
        second = Vector128.Load((sbyte*)(block + 20));
    }
    public static void Levels(byte* block, int group, Span<sbyte> levels) => new ReadOnlySpan<sbyte>(block + 4, 32).CopyTo(levels);
    public static float Scale(byte* block, int group) => LegacyKernels.F16(block);
    public static float Offset(byte* block) => 0f;
}
