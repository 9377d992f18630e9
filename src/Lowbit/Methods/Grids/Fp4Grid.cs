using Lowbit.Formats;

namespace Lowbit.Methods.Grids;

/// <summary>
/// GPTQ grid of ggml's E2M1 block formats: MXFP4 (32 values, one E8M0 scale) and NVFP4 (64 values, four
/// UE4M3 scales of 16 values each). <see cref="Fit"/> quantizes the block with the codec (ggml's reference:
/// the scale from each (sub-)block's absolute maximum). ggml ignores importance for these types; when GPTQ
/// passes importance = diag(H) the grid also tries the neighbouring representable scales (E8M0 exponent ± 1,
/// UE4M3 code ± 3) and keeps the one with the lowest importance-weighted rounding error. Parameters are the
/// decoded (sub-)block scales followed by the raw scale bytes. <see cref="Round"/>
/// picks the E2M1 code ggml's best_index_mxfp4 picks under that scale and returns doubled-value·scale, the
/// decoder's float expression — so RTN through this grid is exactly the codec's quantizer.
/// </summary>
public sealed class Fp4Grid : IQuantGrid
{
    private readonly TensorCodec codec;
    private readonly int subBlocks;   // scales per block: 1 (MXFP4) or 4 (NVFP4)
    private readonly int subBlockSize;

    public Fp4Grid(TensorCodec codec)
    {
        this.codec = codec;
        (subBlocks, subBlockSize) = codec switch
        {
            MxFp4Codec => (1, MxFp4Codec.QK),
            NvFp4Codec => (4, NvFp4Codec.SubBlock),
            _ => throw new ArgumentException($"{codec.Name} is not a ggml FP4 block codec", nameof(codec)),
        };
    }

    public int GroupSize => subBlocks * subBlockSize;
    public int ParamCount => 2 * subBlocks;

    private float DecodeScale(byte s) => subBlocks == 1 ? MxFp4Codec.E8M0ToFloatHalf(s) : Fp8.GgmlUE4M3ToFloatHalf(s);

    public void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<float> p)
    {
        Span<byte> block = stackalloc byte[codec.BlockBytes];
        codec.QuantizeRows(weights, block, GroupSize, default);
        bool weighted = !GridMath.AllZero(importance);
        for (int s = 0; s < subBlocks; s++)
        {
            byte code = block[s];
            if (weighted)
                code = BestWeightedScale(weights.Slice(s * subBlockSize, subBlockSize), importance.Slice(s * subBlockSize, subBlockSize), code);
            p[s] = DecodeScale(code);
            p[subBlocks + s] = code;
        }
    }

    /// <summary>The scale code near the reference one whose grid gives the lowest Σ importance·(x − Q(x))².</summary>
    private byte BestWeightedScale(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, byte reference)
    {
        // E8M0 codes 0..254 (255 is NaN in OCP MX); UE4M3 codes 1..0x7E are positive and increasing (0x7F is NaN).
        int radius = subBlocks == 1 ? 1 : 3;
        int lo = subBlocks == 1 ? 0 : 1, hi = subBlocks == 1 ? 254 : 0x7E;
        byte best = reference;
        double bestError = WeightedError(x, importance, DecodeScale(reference));
        for (int c = Math.Max(lo, reference - radius); c <= Math.Min(hi, reference + radius); c++)
        {
            if (c == reference) continue;
            double error = WeightedError(x, importance, DecodeScale((byte)c));
            if (error < bestError)
            {
                bestError = error;
                best = (byte)c;
            }
        }
        return best;
    }

    private static double WeightedError(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, float d)
    {
        double e = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double diff = x[i] - Decode(d, E2M1.BestIndexGgml(x[i], d));
            e += importance[i] * diff * diff;
        }
        return e;
    }

    private static float Decode(float d, int code) => E2M1.Doubled[code] * d;

    public float Round(ReadOnlySpan<float> p, int index, float w)
    {
        float d = p[index / subBlockSize];
        return Decode(d, E2M1.BestIndexGgml(w, d));
    }

    public void EncodeRow(ReadOnlySpan<float> values, ReadOnlySpan<float> rowParameters, Span<byte> dst)
    {
        int bytes = codec.BlockBytes, half = subBlockSize / 2;
        Span<byte> codes = stackalloc byte[subBlockSize];
        for (int b = 0; b < values.Length / GroupSize; b++)
        {
            var p = rowParameters.Slice(b * ParamCount, ParamCount);
            var block = dst.Slice(b * bytes, bytes);
            for (int s = 0; s < subBlocks; s++)
            {
                block[s] = (byte)p[subBlocks + s];
                float d = p[s];
                var v = values.Slice(b * GroupSize + s * subBlockSize, subBlockSize);
                for (int i = 0; i < subBlockSize; i++)
                {
                    int c = E2M1.BestIndexGgml(v[i], d);
                    if (Decode(d, c) != v[i]) c = FindExactCode(d, v[i]);
                    codes[i] = (byte)c;
                }
                var qs = block.Slice(subBlocks + s * half, half);
                for (int j = 0; j < half; j++) qs[j] = (byte)(codes[j] | codes[j + half] << 4);
            }
        }
    }

    private int FindExactCode(float d, float value)
    {
        for (int c = 0; c < 16; c++)
            if (Decode(d, c) == value) return c;
        throw new LowbitException($"{codec.Name}: value {value} is not on the fitted grid, cannot encode it exactly");
    }
}
