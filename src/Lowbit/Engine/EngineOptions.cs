namespace Lowbit.Engine;

/// <summary>Run-time settings of an <see cref="InferenceEngine"/>.</summary>
public sealed record EngineOptions
{
    /// <summary>Worker threads (default: all processors). Results do not depend on it.</summary>
    public int Threads { get; init; } = Environment.ProcessorCount;

    /// <summary>KV cache capacity in tokens; 0 = the model's MaxPositions capped at 4096.</summary>
    public int ContextLength { get; init; }

    public KvCacheType KvCache { get; init; } = KvCacheType.F32;

    /// <summary>
    /// Decode through the codec's integer dot product on activations quantized once per matrix
    /// (ggml's vec_dot_type) when the codec has one; false = float activations (codec.DotRow).
    /// </summary>
    public bool QuantizedActivations { get; init; } = true;

    /// <summary>
    /// Also use the integer dot path for batched prefill (each activation row quantized once, then
    /// codec.DotRowQuantized per weight row), as ggml does for every batch size, so perplexity
    /// includes the same activation rounding as llama.cpp. Default false: prefill multiplies F32
    /// activations by weight tiles dequantized to F32 (faster for most codecs, more accurate).
    /// Q4_0, Q8_0 and Q4_K ignore this: with <see cref="QuantizedActivations"/> on they always take the
    /// register-blocked integer GEMM (<see cref="QuantizedGemm"/>) in prefill and decode alike, which is
    /// 2.5–3× faster than the F32 tiles and gives decode's logits exactly.
    /// </summary>
    public bool QuantizedActivationsInPrefill { get; init; }

    /// <summary>
    /// Give Q4_0, Q8_0, Q4_K and (finite) F16 matrices a decode copy with 8 rows interleaved (<see cref="InterleavedRows"/>),
    /// made once at load: one sequential weight stream per thread, no horizontal sums, 1.2–2× faster decode.
    /// Results are unchanged (bit for bit); the cost is a second copy of those weights in memory
    /// (false: decode from the file's layout, no extra memory).
    /// </summary>
    public bool InterleavedDecode { get; init; } = true;

    /// <summary>Largest number of tokens processed in one forward batch (longer inputs are split).</summary>
    public int MaxBatch { get; init; } = 512;
}
