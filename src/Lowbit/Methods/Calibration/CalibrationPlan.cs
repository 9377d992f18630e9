using Lowbit.Formats;

namespace Lowbit.Methods.Calibration;

/// <summary>How one tensor's values are chosen on its target grid.</summary>
public enum QuantMethod
{
    /// <summary>Round to nearest (the codec's own quantizer), optionally importance-weighted.</summary>
    Rtn,
    /// <summary>GPTQ: column-wise rounding with Hessian error compensation.</summary>
    Gptq,
}

/// <summary>
/// The target of one tensor in a calibrated quantization: codec, method and the method's options.
/// <paramref name="UseImportance"/> passes the calibration mean x² (the imatrix statistic) to RTN
/// codecs that use importance; GPTQ always fits group parameters with the Hessian diagonal
/// when <see cref="GptqOptions.HessianImportance"/> is set.
/// </summary>
public sealed record TensorTarget(TensorCodec Codec, QuantMethod Method, GptqOptions? Gptq = null, bool UseImportance = false)
{
    public GptqOptions GptqOptions => Gptq ?? new GptqOptions();

    /// <summary>Whether quantizing needs activation statistics of the tensor's input.</summary>
    public bool NeedsStatistics => Method == QuantMethod.Gptq || (UseImportance && Codec.UsesImportance);

    public override string ToString() => Method == QuantMethod.Gptq ? $"gptq:{Codec.Name}" : UseImportance ? $"rtn+imatrix:{Codec.Name}" : $"rtn:{Codec.Name}";
}

/// <summary>Run settings of <see cref="CalibrationPipeline"/>.</summary>
public sealed record CalibrationOptions
{
    /// <summary>Worker threads for the engine, the Hessian accumulation and RTN. Results do not depend on it.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>
    /// Quantize the linears of a block in execution order — [q,k,v] → [o] → [gate,up] → [down] — re-running
    /// the block after each group so that later groups see the inputs the quantized earlier groups produce.
    /// </summary>
    public bool TrueSequential { get; init; } = true;

    /// <summary>Directory for resumable checkpoints (finished blocks' tensors and hidden states), or null.</summary>
    public string? CheckpointDirectory { get; init; }

    /// <summary>With <see cref="CheckpointDirectory"/>: continue from the last finished block found there.</summary>
    public bool Resume { get; init; }

    /// <summary>
    /// Diagnostics hook: called with each group's accumulated input statistics (layer, input kind, Gram matrix)
    /// before the group's linears are quantized.
    /// </summary>
    public Action<int, Engine.LinearInput, GramAccumulator>? OnStatistics { get; init; }
}

/// <summary>Per-tensor outcome of the pipeline.</summary>
public sealed record CalibratedTensorReport(string Name, string Codec, string Method, long Bytes, double? GptqLoss, double Seconds);

/// <summary>Per-block outcome: wall time, memory, and the block's tensors.</summary>
public sealed record CalibrationBlockReport(int Layer, double Seconds, long ManagedBytes, long PeakWorkingSetBytes, bool Resumed,
    IReadOnlyList<CalibratedTensorReport> Tensors)
{
    /// <summary>Seconds spent running the block to accumulate input statistics (forward + Gram).</summary>
    public double StatisticsSeconds { get; init; }
    /// <summary>Seconds spent quantizing (GPTQ / RTN).</summary>
    public double QuantizeSeconds { get; init; }
    /// <summary>Seconds spent re-running the quantized block to produce the next block's inputs.</summary>
    public double PropagateSeconds { get; init; }
}

/// <summary>Progress after each finished block (and once for the non-block tensors, Layer = −1).</summary>
public sealed record CalibrationProgress(int BlocksDone, int Blocks, CalibrationBlockReport Block);
