using Lowbit.Formats;

namespace Lowbit.Engine;

internal sealed partial class WeightMatrix
{
    /// <summary>
    /// Codecs whose format quantizes activations (<see cref="IQuantizedActivationCodec"/>, W8A8) take the
    /// integer/FP8 path in prefill too: every activation row is quantized once (per-token dynamic scale).
    /// </summary>
    private bool QuantizesActivationRows => _useQuantizedActivations && Codec is IQuantizedActivationCodec;
}
