using Lowbit.Formats;

namespace Lowbit.Methods.Grids;

/// <summary>
/// GPTQ grid of IQ4_NL (32-value blocks, value d·table[i]) and IQ4_XS (256-value super-blocks of eight
/// 32-value groups, value d·(ls − 32)·table[i]) over ggml's non-linear kvalues_iq4nl table.
/// <see cref="Fit"/> quantizes the block with the codec's own search (quantize_row_iq4_nl_impl, importance =
/// diag(H) when given); parameters are the decoded per-group scales (fp16 d and 6-bit ls applied, as the
/// decoder forms them) followed by the block's scale bytes, two per float. <see cref="Round"/> picks the
/// nearest table entry under the decoded scale (ggml's best_index_int8) and returns table[i]·scale.
/// ggml's own final pass picks indices with the unrounded scale, so RTN through this grid can differ from
/// the codec's bytes in the odd index next to a rounding boundary.
/// </summary>
public sealed unsafe class Iq4Grid : IQuantGrid
{
    private readonly TensorCodec codec;
    private readonly int groups;      // 32-value groups per block: 1 (IQ4_NL) or 8 (IQ4_XS)
    private readonly int headerBytes; // bytes before the packed indices: 2 (d) or 8 (d, scales_h, scales_l)

    public Iq4Grid(TensorCodec codec)
    {
        this.codec = codec;
        (groups, headerBytes) = codec switch
        {
            IQ4_NLCodec => (1, 2),
            IQ4_XSCodec => (8, 8),
            _ => throw new ArgumentException($"{codec.Name} is not an IQ4 codec", nameof(codec)),
        };
    }

    public int GroupSize => 32 * groups;
    public int ParamCount => groups + headerBytes / 2;

    public void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<float> p)
    {
        Span<byte> block = stackalloc byte[codec.BlockBytes];
        codec.QuantizeRows(weights, block, GroupSize, GridMath.AllZero(importance) ? default : importance);
        fixed (byte* b = block)
        {
            for (int g = 0; g < groups; g++)
                p[g] = groups == 1 ? IQ4_NLBlock.Scale(b, g) : IQ4_XSBlock.Scale(b, g);
        }
        for (int k = 0; k < headerBytes / 2; k++) p[groups + k] = block[2 * k] | block[2 * k + 1] << 8;
    }

    private static int Index(float scale, float w) =>
        LegacyQuantMath.Iq4NlBestIndex(scale != 0 ? w * (1.0f / scale) : 0f);

    private static float Decode(float scale, int index) => LegacyQuantMath.Iq4NlValues[index] * scale;

    public float Round(ReadOnlySpan<float> p, int index, float w)
    {
        float scale = p[index / 32];
        return Decode(scale, Index(scale, w));
    }

    public void EncodeRow(ReadOnlySpan<float> values, ReadOnlySpan<float> rowParameters, Span<byte> dst)
    {
        int pc = ParamCount, bytes = codec.BlockBytes;
        Span<byte> idx = stackalloc byte[32];
        for (int b = 0; b < values.Length / GroupSize; b++)
        {
            var p = rowParameters.Slice(b * pc, pc);
            var block = dst.Slice(b * bytes, bytes);
            for (int k = 0; k < headerBytes / 2; k++)
            {
                int packed = (int)p[groups + k];
                block[2 * k] = (byte)packed;
                block[2 * k + 1] = (byte)(packed >> 8);
            }
            for (int g = 0; g < groups; g++)
            {
                float scale = p[g];
                var v = values.Slice(b * GroupSize + 32 * g, 32);
                for (int i = 0; i < 32; i++)
                {
                    int l = Index(scale, v[i]);
                    if (Decode(scale, l) != v[i]) l = FindExactIndex(scale, v[i]);
                    idx[i] = (byte)l;
                }
                var qs = block.Slice(headerBytes + 16 * g, 16);
                for (int j = 0; j < 16; j++) qs[j] = (byte)(idx[j] | idx[j + 16] << 4);
            }
        }
    }

    private int FindExactIndex(float scale, float value)
    {
        for (int l = 0; l < 16; l++)
            if (Decode(scale, l) == value) return l;
        throw new LowbitException($"{codec.Name}: value {value} is not on the fitted grid, cannot encode it exactly");
    }
}
