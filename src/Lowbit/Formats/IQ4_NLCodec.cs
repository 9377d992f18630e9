using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Lowbit.Formats;

/// <summary>
/// GGUF IQ4_NL: 32 values per 18-byte block = fp16 scale d + 16 bytes of 4-bit indices into a fixed
/// non-linear table (kvalues_iq4nl); value = d·table[i]. Nibble order as Q4_0.
/// </summary>
public sealed class IQ4_NLCodec : TensorCodec
{
    public override string Name => "iq4_nl";
    public override GgmlType? Ggml => GgmlType.IQ4_NL;
    public override int BlockSize => 32;
    public override int BlockBytes => 18;
    public override bool UsesImportance => true;
    public override TensorCodec? VecDotCodec => CodecRegistry.Get(GgmlType.Q8_0);

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        int rows = LegacyQuantMath.ValidateQuantize(this, src, dst, cols, importance);
        int rowBytes = (int)RowBytes(cols);
        var scratch = new Iq4Scratch(stackalloc float[8], stackalloc float[32], stackalloc byte[256]);
        for (int r = 0; r < rows; r++)
        {
            for (int b = 0; b < cols / 32; b++)
            {
                ReadOnlySpan<float> qw = importance.IsEmpty ? default : importance.Slice(b * 32, 32);
                Iq4Quantizer.Quantize(src.Slice(r * cols + b * 32, 32), qw, dst.Slice(r * rowBytes + b * 18, 18), scratch);
            }
        }
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        LegacyQuantMath.ValidateDequantize(this, src, dst, cols);
        LegacyKernels.Dequantize<IQ4_NLBlock>(src, dst);
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => LegacyKernels.DotF32<IQ4_NLBlock>(row, x);

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) => LegacyKernels.DotQ8<IQ4_NLBlock>(row, xq);

    public override void DotRowsQuantized(ReadOnlySpan<byte> rows, int count, ReadOnlySpan<byte> xq, Span<float> y) => LegacyKernels.DotQ8Rows<IQ4_NLBlock>(rows, count, xq, y);
}

internal readonly unsafe struct IQ4_NLBlock : ILegacyBlock
{
    public static int BlockBytes => 18;
    public static int Groups => 1;
    public static bool HasOffset => false;
    public static Vector256<sbyte> LevelsAvx2(byte* block, int group) => LegacyKernels.Iq4LevelsAvx2(block + 2);
    public static void LevelsVector128(byte* block, int group, out Vector128<sbyte> first, out Vector128<sbyte> second)
        => LegacyKernels.Iq4LevelsVector128(block + 2, out first, out second);
    public static void Levels(byte* block, int group, Span<sbyte> levels) => LegacyKernels.Iq4Levels(block + 2, levels);
    public static float Scale(byte* block, int group) => LegacyKernels.F16(block);
    public static bool ScaleIsLeadingHalf => true;
    public static float Offset(byte* block) => 0f;
}

/// <summary>Working buffers of <see cref="Iq4Quantizer"/>, allocated once per QuantizeRows call.</summary>
internal readonly ref struct Iq4Scratch(Span<float> scales, Span<float> weight, Span<byte> levels)
{
    public readonly Span<float> Scales = scales;
    public readonly Span<float> Weight = weight;
    public readonly Span<byte> Levels = levels;
}

/// <summary>
/// ggml's quantize_row_iq4_nl_impl as used by quantize_iq4_nl / quantize_iq4_xs (7 scale trials
/// either side): per 32-value group a weighted least-squares scale over the non-linear table; for a
/// 256-value IQ4_XS super-block the group scales are then coded as 6-bit multiples of d = −max/32.
/// Without an importance vector the weights are x², with one they are qw·sqrt(σ² + x²).
/// </summary>
internal static class Iq4Quantizer
{
    private const int Trials = 7;

    /// <param name="x">One IQ4_NL block (32 values) or one IQ4_XS super-block (256 values).</param>
    /// <param name="qw">The importance weights of these values, or empty.</param>
    /// <param name="block">The encoded block: 18 bytes (IQ4_NL) or 136 bytes (IQ4_XS).</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // called per block: optimize at once instead of waiting for tiering
    public static void Quantize(ReadOnlySpan<float> x, ReadOnlySpan<float> qw, Span<byte> block, Iq4Scratch scratch)
    {
        ReadOnlySpan<sbyte> values = LegacyQuantMath.Iq4NlValues;
        int n = x.Length;
        int groups = n / 32;
        Span<float> scales = scratch.Scales;
        Span<float> weight = scratch.Weight;
        Span<byte> levels = scratch.Levels;

        float sigma2 = LegacyQuantMath.SumOfSquares(x);
        sigma2 *= 2f / n;

        float maxScale = 0, amaxScale = 0;
        for (int ib = 0; ib < groups; ib++)
        {
            ReadOnlySpan<float> xb = x.Slice(ib * 32, 32);
            Span<byte> lb = levels.Slice(ib * 32, 32);
            if (!qw.IsEmpty)
                for (int j = 0; j < 32; j++) weight[j] = qw[ib * 32 + j] * MathF.Sqrt(sigma2 + xb[j] * xb[j]);
            else
                for (int j = 0; j < 32; j++) weight[j] = xb[j] * xb[j];
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
            {
                float ax = MathF.Abs(xb[j]);
                if (ax > amax) { amax = ax; max = xb[j]; }
            }
            if (amax < LegacyQuantMath.GroupMaxEps)
            {
                scales[ib] = 0;
                lb.Clear();
                continue;
            }
            float d = -max / values[0];
            float id = 1 / d;
            float sumqx = 0, sumq2 = 0;
            for (int j = 0; j < 32; j++)
            {
                int l = LegacyQuantMath.Iq4NlBestIndex(id * xb[j]);
                lb[j] = (byte)l;
                float q = values[l];
                float w = weight[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            d = sumq2 > 0 ? sumqx / sumq2 : 0f;
            float best = d * sumqx;
            for (int trial = -Trials; trial <= Trials; trial++)
            {
                id = (trial + values[0]) / max;
                sumqx = sumq2 = 0;
                for (int j = 0; j < 32; j++)
                {
                    int l = LegacyQuantMath.Iq4NlBestIndex(id * xb[j]);
                    float q = values[l];
                    float w = weight[j];
                    sumqx += w * q * xb[j];
                    sumq2 += w * q * q;
                }
                if (sumq2 > 0 && sumqx * sumqx > best * sumq2)
                {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
            scales[ib] = d;
            float absD = MathF.Abs(d);
            if (absD > amaxScale) { amaxScale = absD; maxScale = d; }
        }

        Span<byte> packed;
        if (groups > 1)
        {
            // IQ4_XS: d(2) scales_h(2) scales_l(groups/2) qs(n/2).
            float d = -maxScale / 32;
            LegacyQuantMath.WriteHalf(block, 0, d);
            float id = d != 0 ? 1 / d : 0f;
            ushort scalesH = 0;
            Span<byte> scalesL = block.Slice(4, groups / 2);
            for (int ib = 0; ib < groups; ib++)
            {
                int l = Math.Clamp(LegacyQuantMath.NearestInt(id * scales[ib]), -32, 31);
                float dl = d * l;
                float idl = dl != 0 ? 1 / dl : 0f;
                ReadOnlySpan<float> xb = x.Slice(ib * 32, 32);
                for (int j = 0; j < 32; j++) levels[ib * 32 + j] = (byte)LegacyQuantMath.Iq4NlBestIndex(idl * xb[j]);
                l += 32;
                if (ib % 2 == 0) scalesL[ib / 2] = (byte)(l & 0x0F);
                else scalesL[ib / 2] |= (byte)((l & 0x0F) << 4);
                scalesH |= (ushort)((l >> 4) << (2 * (ib % 8)));
            }
            BinaryPrimitives.WriteUInt16LittleEndian(block.Slice(2), scalesH);
            packed = block.Slice(4 + groups / 2, n / 2);
        }
        else
        {
            LegacyQuantMath.WriteHalf(block, 0, scales[0]);
            float id = scales[0] != 0 ? 1 / scales[0] : 0f;
            for (int j = 0; j < 32; j++) levels[j] = (byte)LegacyQuantMath.Iq4NlBestIndex(id * x[j]);
            packed = block.Slice(2, 16);
        }

        for (int g = 0; g < groups; g++)
            for (int j = 0; j < 16; j++)
                packed[16 * g + j] = (byte)(levels[32 * g + j] | (levels[32 * g + 16 + j] << 4));
    }
}
