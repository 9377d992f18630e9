using Lowbit.Formats;

namespace Lowbit.Methods.Grids;

/// <summary>The GPTQ grid for a target codec: one line per supported codec family.</summary>
public static class QuantGrids
{
    public static IQuantGrid? TryFor(TensorCodec codec) => codec switch
    {
        IntGroupCodec c => new IntGroupGrid(c),
        KQuantCodec c => new KQuantGrid(c),
        Q4_0Codec or Q5_0Codec or Q8_0Codec or Q4_1Codec or Q5_1Codec => new LegacyGrid(codec),
        IQ4_NLCodec or IQ4_XSCodec => new Iq4Grid(codec),
        MxFp4Codec or NvFp4Codec => new Fp4Grid(codec),
        Fp8Codec or Fp4Codec => new ElementGrid(codec),
        _ => null,
    };

    public static IQuantGrid For(TensorCodec codec) => TryFor(codec)
        ?? throw new LowbitException($"GPTQ does not support format {codec.Name} yet");
}
