using System.Text.RegularExpressions;

namespace Lowbit.Model;

/// <summary>
/// Hugging Face (transformers Llama/Mistral/Qwen2/Qwen3) tensor names → canonical GGUF names,
/// the same mapping llama.cpp's converter applies.
/// </summary>
public static partial class HfTensorNameMap
{
    [GeneratedRegex(@"^model\.layers\.(\d+)\.(.+)$", RegexOptions.CultureInvariant)]
    private static partial Regex LayerName();

    /// <summary>Buffers some checkpoints save that carry no weights (recomputed from the config).</summary>
    public static bool IsIgnorable(string hfName) => hfName.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal);

    /// <summary>The canonical name, or null when the name is not a known tensor of these architectures.</summary>
    public static string? ToCanonical(string hfName)
    {
        switch (hfName)
        {
            case "model.embed_tokens.weight": return TensorNames.TokenEmbedding;
            case "model.norm.weight": return TensorNames.OutputNorm;
            case "lm_head.weight": return TensorNames.Output;
        }
        var m = LayerName().Match(hfName);
        if (!m.Success || !int.TryParse(m.Groups[1].ValueSpan, out int layer) || m.Groups[1].Value != layer.ToString())
            return null;
        return m.Groups[2].Value switch
        {
            "input_layernorm.weight" => TensorNames.AttnNorm(layer),
            "self_attn.q_proj.weight" => TensorNames.AttnQ(layer),
            "self_attn.k_proj.weight" => TensorNames.AttnK(layer),
            "self_attn.v_proj.weight" => TensorNames.AttnV(layer),
            "self_attn.o_proj.weight" => TensorNames.AttnOutput(layer),
            "self_attn.q_proj.bias" => TensorNames.AttnQBias(layer),
            "self_attn.k_proj.bias" => TensorNames.AttnKBias(layer),
            "self_attn.v_proj.bias" => TensorNames.AttnVBias(layer),
            "self_attn.q_norm.weight" => TensorNames.AttnQNorm(layer),
            "self_attn.k_norm.weight" => TensorNames.AttnKNorm(layer),
            "post_attention_layernorm.weight" => TensorNames.FfnNorm(layer),
            "mlp.gate_proj.weight" => TensorNames.FfnGate(layer),
            "mlp.up_proj.weight" => TensorNames.FfnUp(layer),
            "mlp.down_proj.weight" => TensorNames.FfnDown(layer),
            _ => null,
        };
    }

    /// <summary>
    /// Every tensor a model with this configuration must have, with its shape (row-major, outermost
    /// first, as HF stores it), in a stable order: embedding, layers, output norm, output.
    /// </summary>
    public static IReadOnlyList<(string Name, long[] Shape)> ExpectedTensors(ModelConfig c)
    {
        long h = c.HiddenSize, q = c.QDim, kv = c.KvDim, ff = c.IntermediateSize;
        var list = new List<(string, long[])> { (TensorNames.TokenEmbedding, [c.VocabSize, h]) };
        for (int l = 0; l < c.NumLayers; l++)
        {
            list.Add((TensorNames.AttnNorm(l), [h]));
            list.Add((TensorNames.AttnQ(l), [q, h]));
            list.Add((TensorNames.AttnK(l), [kv, h]));
            list.Add((TensorNames.AttnV(l), [kv, h]));
            if (c.AttentionBias)
            {
                list.Add((TensorNames.AttnQBias(l), [q]));
                list.Add((TensorNames.AttnKBias(l), [kv]));
                list.Add((TensorNames.AttnVBias(l), [kv]));
            }
            if (c.QkNorm)
            {
                list.Add((TensorNames.AttnQNorm(l), [c.HeadDim]));
                list.Add((TensorNames.AttnKNorm(l), [c.HeadDim]));
            }
            list.Add((TensorNames.AttnOutput(l), [h, q]));
            list.Add((TensorNames.FfnNorm(l), [h]));
            list.Add((TensorNames.FfnGate(l), [ff, h]));
            list.Add((TensorNames.FfnUp(l), [ff, h]));
            list.Add((TensorNames.FfnDown(l), [h, ff]));
        }
        list.Add((TensorNames.OutputNorm, [h]));
        if (!c.TieEmbeddings) list.Add((TensorNames.Output, [c.VocabSize, h]));
        return list;
    }
}
