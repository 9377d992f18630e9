using System.Collections.Frozen;
using Lowbit.Model;

namespace Lowbit.Advisor;

/// <summary>
/// Shapes of well-known Llama-family models, for `lowbit advise` without a model file and for
/// tests. Every value is copied from the model's published Hugging Face <c>config.json</c>
/// (hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
/// intermediate_size, vocab_size, tie_word_embeddings, rope_theta, max_position_embeddings,
/// rms_norm_eps); the repository is named on each entry.
/// </summary>
public static class ModelShapes
{
    private static readonly FrozenDictionary<string, ModelConfig> Shapes = Build();

    /// <summary>Known names, lower case (e.g. "llama-3.1-8b").</summary>
    public static IReadOnlyList<string> Names { get; } = Shapes.Keys.Order(StringComparer.Ordinal).ToArray();

    public static ModelConfig? TryGet(string name) => Shapes.GetValueOrDefault(name.Trim());

    public static ModelConfig Get(string name) =>
        TryGet(name) ?? throw new LowbitException(
            $"unknown model shape '{name}'. Known shapes: {string.Join(", ", Names)}.");

    private static FrozenDictionary<string, ModelConfig> Build()
    {
        var d = new Dictionary<string, ModelConfig>(StringComparer.OrdinalIgnoreCase)
        {
            // meta-llama/Llama-3.1-8B config.json
            ["llama-3.1-8b"] = Llama(vocab: 128256, hidden: 4096, ffn: 14336, layers: 32, heads: 32, kv: 8,
                theta: 500000f, maxPos: 131072, tied: false, bos: 128000, eos: 128001),
            // meta-llama/Llama-3.1-70B config.json
            ["llama-3.1-70b"] = Llama(vocab: 128256, hidden: 8192, ffn: 28672, layers: 80, heads: 64, kv: 8,
                theta: 500000f, maxPos: 131072, tied: false, bos: 128000, eos: 128001),
            // meta-llama/Llama-3.2-1B config.json (head_dim 64)
            ["llama-3.2-1b"] = Llama(vocab: 128256, hidden: 2048, ffn: 8192, layers: 16, heads: 32, kv: 8,
                theta: 500000f, maxPos: 131072, tied: true, bos: 128000, eos: 128001),
            // meta-llama/Llama-3.2-3B config.json
            ["llama-3.2-3b"] = Llama(vocab: 128256, hidden: 3072, ffn: 8192, layers: 28, heads: 24, kv: 8,
                theta: 500000f, maxPos: 131072, tied: true, bos: 128000, eos: 128001),
            // meta-llama/Llama-2-7b-hf config.json (no GQA)
            ["llama-2-7b"] = Llama(vocab: 32000, hidden: 4096, ffn: 11008, layers: 32, heads: 32, kv: 32,
                theta: 10000f, maxPos: 4096, tied: false, bos: 1, eos: 2),
            // mistralai/Mistral-7B-v0.3 config.json (sliding_window null, rope_theta 1e6)
            ["mistral-7b-v0.3"] = Llama(vocab: 32768, hidden: 4096, ffn: 14336, layers: 32, heads: 32, kv: 8,
                theta: 1000000f, maxPos: 32768, tied: false, bos: 1, eos: 2) with { Architecture = "llama" },
            // Qwen/Qwen2.5-0.5B config.json (tied, q/k/v biases)
            ["qwen2.5-0.5b"] = Qwen2(vocab: 151936, hidden: 896, ffn: 4864, layers: 24, heads: 14, kv: 2, tied: true),
            // Qwen/Qwen2.5-7B config.json
            ["qwen2.5-7b"] = Qwen2(vocab: 152064, hidden: 3584, ffn: 18944, layers: 28, heads: 28, kv: 4, tied: false),
            // Qwen/Qwen3-8B config.json (head_dim 128, q/k RMSNorm, no biases)
            ["qwen3-8b"] = new ModelConfig
            {
                Architecture = "qwen3", VocabSize = 151936, HiddenSize = 4096, IntermediateSize = 12288,
                NumLayers = 36, NumHeads = 32, NumKvHeads = 8, HeadDim = 128, RmsNormEps = 1e-6f,
                RopeTheta = 1000000f, MaxPositions = 40960, TieEmbeddings = false, QkNorm = true,
                Rope = RopeStyle.NeoX, BosTokenId = 151643, EosTokenId = 151645,
            },
        };
        d["mistral-7b"] = d["mistral-7b-v0.3"];
        return d.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase);
    }

    private static ModelConfig Llama(int vocab, int hidden, int ffn, int layers, int heads, int kv,
        float theta, int maxPos, bool tied, int bos, int eos) => new()
    {
        Architecture = "llama", VocabSize = vocab, HiddenSize = hidden, IntermediateSize = ffn,
        NumLayers = layers, NumHeads = heads, NumKvHeads = kv, HeadDim = hidden / heads,
        RmsNormEps = 1e-5f, RopeTheta = theta, MaxPositions = maxPos, TieEmbeddings = tied,
        Rope = RopeStyle.Interleaved, BosTokenId = bos, EosTokenId = eos,
    };

    private static ModelConfig Qwen2(int vocab, int hidden, int ffn, int layers, int heads, int kv, bool tied) => new()
    {
        Architecture = "qwen2", VocabSize = vocab, HiddenSize = hidden, IntermediateSize = ffn,
        NumLayers = layers, NumHeads = heads, NumKvHeads = kv, HeadDim = hidden / heads,
        RmsNormEps = 1e-6f, RopeTheta = 1000000f, MaxPositions = 32768, TieEmbeddings = tied,
        AttentionBias = true, Rope = RopeStyle.NeoX, BosTokenId = 151643, EosTokenId = 151643,
    };
}
