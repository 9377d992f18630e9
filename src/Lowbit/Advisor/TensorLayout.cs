using Lowbit.Model;

namespace Lowbit.Advisor;

/// <summary>What a tensor is in a Llama-family decoder; plans choose formats by role.</summary>
public enum TensorRole
{
    TokenEmbedding,
    Output,
    OutputNorm,
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    AttnQBias,
    AttnKBias,
    AttnVBias,
    AttnQNorm,
    AttnKNorm,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
}

/// <summary>
/// One tensor of a model as a quantization plan sees it: canonical (GGUF) name, role, layer
/// (-1 outside the blocks) and shape as rows × cols, where cols is the row length the codec's
/// blocks run along (ggml ne[0], the input features of a linear layer). Vectors have one row.
/// <paramref name="SharedWithOutput"/> marks token_embd of a model with tied embeddings (it is
/// also the output matrix, so llama.cpp quantizes it like output.weight).
/// </summary>
public sealed record TensorSlot(string Name, TensorRole Role, int Layer, long Rows, long Cols, bool SharedWithOutput = false)
{
    public long Elements => Rows * Cols;

    /// <summary>True for 1-D tensors (norm weights, biases; stored with one row); llama.cpp never quantizes these.</summary>
    public bool IsVector => Role is TensorRole.AttnNorm or TensorRole.FfnNorm or TensorRole.OutputNorm
        or TensorRole.AttnQNorm or TensorRole.AttnKNorm or TensorRole.AttnQBias or TensorRole.AttnKBias or TensorRole.AttnVBias;

    /// <summary>True for the projections inside a block (what weight-only quantizers touch).</summary>
    public bool IsBlockLinear => Role is TensorRole.AttnQ or TensorRole.AttnK or TensorRole.AttnV
        or TensorRole.AttnOutput or TensorRole.FfnGate or TensorRole.FfnUp or TensorRole.FfnDown;
}

/// <summary>The tensor list of a Llama-family model, in GGUF order and naming.</summary>
public static class LlamaTensorLayout
{
    /// <summary>
    /// Every tensor a llama/mistral/qwen2/qwen3 GGUF holds for <paramref name="config"/>:
    /// token_embd, per block attn_norm, attn_q/k/v (+ biases when AttentionBias, + q/k norms when
    /// QkNorm), attn_output, ffn_norm, ffn_gate/up/down, then output_norm and output (absent when
    /// the embeddings are tied).
    /// </summary>
    public static IReadOnlyList<TensorSlot> Enumerate(ModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        Validate(config);
        long h = config.HiddenSize, q = config.QDim, kv = config.KvDim, ff = config.IntermediateSize;
        var list = new List<TensorSlot>(2 + config.NumLayers * 15 + 2)
        {
            new(TensorNames.TokenEmbedding, TensorRole.TokenEmbedding, -1, config.VocabSize, h, config.TieEmbeddings),
        };
        for (int l = 0; l < config.NumLayers; l++)
        {
            list.Add(new(TensorNames.AttnNorm(l), TensorRole.AttnNorm, l, 1, h));
            list.Add(new(TensorNames.AttnQ(l), TensorRole.AttnQ, l, q, h));
            list.Add(new(TensorNames.AttnK(l), TensorRole.AttnK, l, kv, h));
            list.Add(new(TensorNames.AttnV(l), TensorRole.AttnV, l, kv, h));
            if (config.AttentionBias)
            {
                list.Add(new(TensorNames.AttnQBias(l), TensorRole.AttnQBias, l, 1, q));
                list.Add(new(TensorNames.AttnKBias(l), TensorRole.AttnKBias, l, 1, kv));
                list.Add(new(TensorNames.AttnVBias(l), TensorRole.AttnVBias, l, 1, kv));
            }
            if (config.QkNorm)
            {
                list.Add(new(TensorNames.AttnQNorm(l), TensorRole.AttnQNorm, l, 1, config.HeadDim));
                list.Add(new(TensorNames.AttnKNorm(l), TensorRole.AttnKNorm, l, 1, config.HeadDim));
            }
            list.Add(new(TensorNames.AttnOutput(l), TensorRole.AttnOutput, l, h, q));
            list.Add(new(TensorNames.FfnNorm(l), TensorRole.FfnNorm, l, 1, h));
            list.Add(new(TensorNames.FfnGate(l), TensorRole.FfnGate, l, ff, h));
            list.Add(new(TensorNames.FfnUp(l), TensorRole.FfnUp, l, ff, h));
            list.Add(new(TensorNames.FfnDown(l), TensorRole.FfnDown, l, h, ff));
        }
        list.Add(new(TensorNames.OutputNorm, TensorRole.OutputNorm, -1, 1, h));
        if (!config.TieEmbeddings)
            list.Add(new(TensorNames.Output, TensorRole.Output, -1, config.VocabSize, h));
        return list;
    }

    internal static void Validate(ModelConfig c)
    {
        static void Positive(string what, long v)
        {
            if (v <= 0) throw new LowbitException($"model shape: {what} must be positive, got {v}.");
        }
        Positive("vocab size", c.VocabSize);
        Positive("hidden size", c.HiddenSize);
        Positive("intermediate size", c.IntermediateSize);
        Positive("layer count", c.NumLayers);
        Positive("head count", c.NumHeads);
        Positive("KV head count", c.NumKvHeads);
        Positive("head dimension", c.HeadDim);
        if (c.NumHeads % c.NumKvHeads != 0)
            throw new LowbitException($"model shape: head count {c.NumHeads} is not a multiple of KV head count {c.NumKvHeads}.");
    }
}
