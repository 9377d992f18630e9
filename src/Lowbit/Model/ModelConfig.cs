namespace Lowbit.Model;

/// <summary>How RoPE pairs dimensions inside a head.</summary>
public enum RopeStyle
{
    /// <summary>Adjacent pairs (2i, 2i+1): ggml's "normal" mode, llama2.c; GGUF llama tensors are permuted for it.</summary>
    Interleaved,
    /// <summary>Rotate-half pairs (i, i + d/2): GPT-NeoX / HF transformers; GGUF qwen2/qwen3 use it unpermuted.</summary>
    NeoX,
}

/// <summary>
/// Hyper-parameters of a Llama-family decoder (llama, mistral, qwen2, qwen3), independent of the
/// file it came from.
/// </summary>
public sealed record ModelConfig
{
    /// <summary>"llama", "mistral", "qwen2" or "qwen3" (GGUF general.architecture spelling).</summary>
    public required string Architecture { get; init; }
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public float RmsNormEps { get; init; } = 1e-5f;
    public float RopeTheta { get; init; } = 10000f;
    public int MaxPositions { get; init; } = 2048;
    public bool TieEmbeddings { get; init; }
    /// <summary>q/k/v projections carry biases (qwen2).</summary>
    public bool AttentionBias { get; init; }
    /// <summary>Per-head RMSNorm on q and k before RoPE (qwen3).</summary>
    public bool QkNorm { get; init; }
    /// <summary>RoPE pairing the engine must use for this model's tensors as loaded (see <see cref="RopeStyle"/>).</summary>
    public RopeStyle Rope { get; init; } = RopeStyle.Interleaved;
    /// <summary>Sliding attention window (mistral), 0 when none.</summary>
    public int SlidingWindow { get; init; }
    public int BosTokenId { get; init; } = 1;
    public int EosTokenId { get; init; } = 2;

    public int QDim => NumHeads * HeadDim;
    public int KvDim => NumKvHeads * HeadDim;

    /// <summary>Parameter count implied by the shape (weights only, norms included).</summary>
    public long ParameterCount
    {
        get
        {
            long h = HiddenSize, kv = KvDim, q = QDim, ff = IntermediateSize;
            long perLayer = h * q + 2 * h * kv + q * h + 3 * h * ff + 2 * h;
            if (AttentionBias) perLayer += q + 2 * kv;
            if (QkNorm) perLayer += 2L * HeadDim;
            long emb = (long)VocabSize * h;
            return NumLayers * perLayer + emb + (TieEmbeddings ? 0 : emb) + h;
        }
    }
}
