using Lowbit.Formats;

namespace Lowbit.Methods.Grids;

/// <summary>GPTQ grid of the integer group codecs (int4-g128-sym, ...): one (FP16 scale, zero) per group.</summary>
public sealed class IntGroupGrid(IntGroupCodec codec) : IQuantGrid
{
    public int GroupSize => codec.GroupSize;
    public int ParamCount => 2;

    public void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<float> p)
    {
        var (scale, zero) = codec.ComputeGroupParams(weights, importance);
        p[0] = scale;
        p[1] = zero;
    }

    public float Round(ReadOnlySpan<float> p, int index, float w) =>
        IntQuant.DequantizeValue(IntQuant.QuantizeValue(w, p[0], (int)p[1], codec.Bits), p[0], (int)p[1]);

    public void EncodeRow(ReadOnlySpan<float> values, ReadOnlySpan<float> rowParameters, Span<byte> dst)
    {
        int g = codec.GroupSize;
        Span<byte> codes = g <= 4096 ? stackalloc byte[g] : new byte[g];
        for (int gi = 0; gi < values.Length / g; gi++)
        {
            float scale = rowParameters[2 * gi];
            int zero = (int)rowParameters[2 * gi + 1];
            for (int i = 0; i < g; i++) codes[i] = (byte)IntQuant.QuantizeValue(values[gi * g + i], scale, zero, codec.Bits);
            codec.WriteBlock(dst.Slice(gi * codec.BlockBytes, codec.BlockBytes), scale, zero, codes);
        }
    }
}
