using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// GGUF Q8_0: 32 values per 34-byte block = fp16 scale d + 32 signed bytes q; value = d·q.
/// Also the activation format of the integer dot path for Q4_0, Q5_0, Q8_0 and IQ4_NL.
/// ggml ignores an importance vector for this type, and so does this codec.
/// </summary>
public sealed class Q8_0Codec : TensorCodec
{
    public override string Name => "q8_0";
    public override GgmlType? Ggml => GgmlType.Q8_0;
    public override int BlockSize => 32;
    public override int BlockBytes => 34;
    public override TensorCodec? VecDotCodec => this;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        int rows = LegacyQuantMath.ValidateQuantize(this, src, dst, cols, importance);
        if (Avx2.IsSupported)
            LegacyKernels.QuantizeQ8Avx2(src.Slice(0, rows * cols), dst, withSum: false); // the activation hot path
        else
            QuantizeRowsScalar(src.Slice(0, rows * cols), dst);
    }

    /// <summary>The scalar reference quantizer over whole blocks (the AVX2 path must produce the same bytes).</summary>
    internal static void QuantizeRowsScalar(ReadOnlySpan<float> src, Span<byte> dst)
    {
        for (int b = 0; b < src.Length / 32; b++)
            QuantizeBlock(src.Slice(b * 32, 32), dst.Slice(b * 34, 34));
    }

    /// <summary>ggml's quantize_row_q8_0_ref: d = amax/127, q = roundf(x/d) (half away from zero).</summary>
    internal static void QuantizeBlock(ReadOnlySpan<float> x, Span<byte> block)
    {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = MathF.Max(amax, MathF.Abs(x[j]));
        float d = amax / 127;
        float id = d != 0 ? 1.0f / d : 0.0f;
        LegacyQuantMath.WriteHalf(block, 0, d);
        for (int j = 0; j < 32; j++) block[2 + j] = (byte)(sbyte)LegacyQuantMath.RoundAwayFromZero(x[j] * id);
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        LegacyQuantMath.ValidateDequantize(this, src, dst, cols);
        LegacyKernels.Dequantize<Q8_0Block>(src, dst);
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => LegacyKernels.DotF32<Q8_0Block>(row, x);

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) => LegacyKernels.DotQ8<Q8_0Block>(row, xq);

    public override void DotRowsQuantized(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y) => LegacyKernels.DotQ8Rows<Q8_0Block>(rows, count, xq, y);
}

internal readonly unsafe struct Q8_0Block : ILegacyBlock
{
    public static int BlockBytes => 34;
    public static int Groups => 1;
    public static bool HasOffset => false;
    public static Vector256<sbyte> LevelsAvx2(byte* block, int group) => Vector256.Load((sbyte*)(block + 2));
    public static void LevelsVector128(byte* block, int group, out Vector128<sbyte> first, out Vector128<sbyte> second)
    {
        first = Vector128.Load((sbyte*)(block + 2));
        second = Vector128.Load((sbyte*)(block + 18));
    }
    public static void Levels(byte* block, int group, Span<sbyte> levels) => new ReadOnlySpan<sbyte>(block + 2, 32).CopyTo(levels);
    public static float Scale(byte* block, int group) => LegacyKernels.F16(block);
    public static bool ScaleIsLeadingHalf => true;
    public static float Offset(byte* block) => 0f;
}
