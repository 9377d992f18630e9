using Lowbit.Formats;

namespace Lowbit.Methods.Grids;

/// <summary>The GPTQ grid for a target codec: one line per supported codec family.</summary>
public static class QuantGrids
{
    public static IQuantGrid? TryFor(TensorCodec codec) => codec switch
    {
        IntGroupCodec c => new IntGroupGrid(c),
        KQuantCodec c => new KQuantGrid(c),
        _ => null,
    };

    public static IQuantGrid For(TensorCodec codec) => TryFor(codec)
        ?? throw new LowbitException($"GPTQ does not support format {codec.Name} yet");
}
