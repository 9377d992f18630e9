using Lowbit.Formats;

namespace Lowbit.Methods.Grids;

/// <summary>
/// GPTQ grid of the scale-free element formats (raw fp8_e4m3 / fp8_e5m2, raw fp4_e2m1): every value is its own
/// code, so there are no parameters to fit; <see cref="Round"/> is the codec's own encode followed by its decode
/// (round to nearest even, saturating), and <see cref="EncodeRow"/> is the codec's quantizer, which maps an
/// on-grid value back to its own code.
/// </summary>
public sealed class ElementGrid : IQuantGrid
{
    private readonly Func<float, float> round;
    private readonly TensorCodec codec;

    public ElementGrid(TensorCodec codec)
    {
        this.codec = codec;
        round = codec switch
        {
            Fp8Codec f => w => Fp8.Decode(Fp8.Encode(w, f.Kind), f.Kind),
            Fp4Codec => w => E2M1.Values[E2M1.Encode(w)],
            _ => throw new ArgumentException($"{codec.Name} is not a scale-free element format", nameof(codec)),
        };
    }

    public int GroupSize => codec.BlockSize;
    public int ParamCount => 0;

    public void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<float> parameters) { }

    public float Round(ReadOnlySpan<float> parameters, int index, float w) => round(w);

    public void EncodeRow(ReadOnlySpan<float> values, ReadOnlySpan<float> rowParameters, Span<byte> dst) =>
        codec.QuantizeRows(values, dst, values.Length, default);
}
