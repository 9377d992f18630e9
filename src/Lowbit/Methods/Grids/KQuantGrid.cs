using Lowbit.Formats;

namespace Lowbit.Methods.Grids;

/// <summary>
/// GPTQ grid of the GGUF k-quants (Q2_K … Q6_K): one group is a 256-value super-block.
/// <see cref="Fit"/> runs the codec's own ggml quantizer on the super-block (the imatrix search
/// quantize_row_*_impl with importance = diag(H), or the reference search without), so d, dmin and the
/// packed sub-block scales/mins are exactly what the codec stores; the parameters are then the decoded
/// per-sub-block (scale, min) — fp16 rounding of d/dmin and the 6-/8-bit scale codes included — followed by
/// the block's scale bytes (two per float, exact). <see cref="Round"/> re-codes one value on its
/// sub-block's decoded grid as ggml's final requantization does, and returns what the decoder yields.
/// </summary>
public sealed class KQuantGrid : IQuantGrid
{
    private readonly KQuantCodec codec;
    private readonly int subGroups;
    private readonly int codeOffset;
    private readonly int[] headerOffsets; // bytes of the block that hold no code bits (d, dmin, scales)

    public KQuantGrid(KQuantCodec codec)
    {
        this.codec = codec;
        subGroups = KQuantMath.SuperBlock / codec.GroupSize;
        codeOffset = codec.GetGroupGrid(new byte[codec.BlockBytes], 0).CodeOffset;
        // A byte is a header byte when clearing every code leaves it untouched.
        var probe = new byte[codec.BlockBytes];
        probe.AsSpan().Fill(0xFF);
        for (int i = 0; i < KQuantMath.SuperBlock; i++) codec.SetCode(probe, i, 0);
        headerOffsets = Enumerable.Range(0, probe.Length).Where(i => probe[i] != 0).ToArray();
    }

    public int GroupSize => KQuantMath.SuperBlock;

    public int ParamCount => 2 * subGroups + (headerOffsets.Length + 1) / 2;

    public void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<float> parameters)
    {
        Span<byte> block = stackalloc byte[codec.BlockBytes];
        codec.QuantizeBlock(weights, GridMath.AllZero(importance) ? default : importance, block);
        for (int g = 0; g < subGroups; g++)
        {
            var grid = codec.GetGroupGrid(block, g);
            parameters[2 * g] = grid.Scale;
            parameters[2 * g + 1] = grid.Min;
        }
        GridMath.PackBytes(block, headerOffsets, parameters.Slice(2 * subGroups));
    }

    public float Round(ReadOnlySpan<float> parameters, int index, float w)
    {
        var grid = GridOf(parameters, index / codec.GroupSize);
        return grid.Dequantize(grid.Quantize(w));
    }

    private KQuantGroupGrid GridOf(ReadOnlySpan<float> parameters, int subGroup) =>
        new(parameters[2 * subGroup], parameters[2 * subGroup + 1], codeOffset, codec.MaxCode);

    /// <summary>Fallback when ggml's rounding misses a value's own code (float division at a tie): search every code.</summary>
    private int FindExactCode(KQuantGroupGrid grid, float value)
    {
        for (int c = 0; c <= codec.MaxCode; c++)
            if (grid.Dequantize(c) == value) return c;
        throw new LowbitException($"{codec.Name}: value {value} is not on the fitted grid, cannot encode it exactly");
    }

    public void EncodeRow(ReadOnlySpan<float> values, ReadOnlySpan<float> rowParameters, Span<byte> dst)
    {
        int pc = ParamCount;
        for (int b = 0; b < values.Length / KQuantMath.SuperBlock; b++)
        {
            var p = rowParameters.Slice(b * pc, pc);
            var block = dst.Slice(b * codec.BlockBytes, codec.BlockBytes);
            block.Clear();
            GridMath.UnpackBytes(p.Slice(2 * subGroups), headerOffsets, block);
            var v = values.Slice(b * KQuantMath.SuperBlock, KQuantMath.SuperBlock);
            for (int i = 0; i < KQuantMath.SuperBlock; i++)
            {
                var grid = GridOf(p, i / codec.GroupSize);
                int code = grid.Quantize(v[i]);
                if (grid.Dequantize(code) != v[i]) code = FindExactCode(grid, v[i]);
                codec.SetCode(block, i, code);
            }
        }
    }
}
