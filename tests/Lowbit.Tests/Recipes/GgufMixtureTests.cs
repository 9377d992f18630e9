using Lowbit.Formats;
using Lowbit.Model;
using Lowbit.Recipes;

namespace Lowbit.Tests.Recipes;

public sealed class GgufMixtureTests
{
    /// <summary>A tensor list of a given shape; data is never touched by the planner.</summary>
    private static List<ModelTensor> LlamaTensors(int layers, int hidden, int kvDim, int ffn, int vocab, bool tied)
    {
        var f16 = CodecRegistry.Get("f16");
        ModelTensor T(string name, params long[] shape) => new(name, shape, f16, () => throw new InvalidOperationException("data not needed"));
        var list = new List<ModelTensor> { T(TensorNames.TokenEmbedding, vocab, hidden), T(TensorNames.OutputNorm, hidden) };
        if (!tied) list.Add(T(TensorNames.Output, vocab, hidden));
        // Deliberately reversed layer order: the planner must sort like llama.cpp.
        for (int l = layers - 1; l >= 0; l--)
        {
            list.Add(T(TensorNames.AttnNorm(l), hidden));
            list.Add(T(TensorNames.AttnQ(l), hidden, hidden));
            list.Add(T(TensorNames.AttnK(l), kvDim, hidden));
            list.Add(T(TensorNames.AttnV(l), kvDim, hidden));
            list.Add(T(TensorNames.AttnOutput(l), hidden, hidden));
            list.Add(T(TensorNames.FfnNorm(l), hidden));
            list.Add(T(TensorNames.FfnGate(l), ffn, hidden));
            list.Add(T(TensorNames.FfnUp(l), ffn, hidden));
            list.Add(T(TensorNames.FfnDown(l), hidden, ffn));
        }
        return list;
    }

    private static ModelConfig Config(int layers, int heads, int kvHeads, int hidden) => new()
    {
        Architecture = "llama", VocabSize = 128256, HiddenSize = hidden, IntermediateSize = 8192, NumLayers = layers,
        NumHeads = heads, NumKvHeads = kvHeads, HeadDim = hidden / heads,
    };

    [Theory]
    [InlineData("Q4_K_M", GgmlType.Q4_K)]
    [InlineData("Q5_K_M", GgmlType.Q5_K)]
    public void KM_mixtures_match_llama_quantize_on_the_llama_3_2_1b_shape(string mixture, GgmlType baseType)
    {
        // llama-quantize on Llama-3.2-1B (16 layers, tied embeddings) gives attn_v and ffn_down Q6_K in
        // layers 0, 1, 4, 7, 10, 13, 14, 15 and the tied token embedding Q6_K.
        var moreBits = new HashSet<int> { 0, 1, 4, 7, 10, 13, 14, 15 };
        var plan = GgufMixture.TryGet(mixture)!.Plan(Config(16, 32, 8, 2048), LlamaTensors(16, 2048, 512, 8192, 128256, tied: true), pure: false);
        var byName = plan.Entries.ToDictionary(e => e.Tensor.Name, e => e.Type);
        Assert.Equal(GgmlType.Q6_K, byName[TensorNames.TokenEmbedding]);
        Assert.Equal(GgmlType.F32, byName[TensorNames.OutputNorm]);
        for (int l = 0; l < 16; l++)
        {
            var want = moreBits.Contains(l) ? GgmlType.Q6_K : baseType;
            Assert.Equal(want, byName[TensorNames.AttnV(l)]);
            Assert.Equal(want, byName[TensorNames.FfnDown(l)]);
            Assert.Equal(baseType, byName[TensorNames.AttnQ(l)]);
            Assert.Equal(baseType, byName[TensorNames.AttnK(l)]);
            Assert.Equal(baseType, byName[TensorNames.AttnOutput(l)]);
            Assert.Equal(baseType, byName[TensorNames.FfnGate(l)]);
            Assert.Equal(baseType, byName[TensorNames.FfnUp(l)]);
            Assert.Equal(GgmlType.F32, byName[TensorNames.AttnNorm(l)]);
        }
        Assert.Equal(16 * 9 + 2, plan.Entries.Count);
        Assert.All(plan.Entries, e => Assert.Null(e.FallbackNote));
    }

    [Fact]
    public void Untied_output_gets_Q6_K_and_token_embedding_keeps_the_base_type()
    {
        var plan = GgufMixture.TryGet("q4_k_m")!.Plan(Config(6, 4, 2, 256), LlamaTensors(6, 256, 128, 768, 4096, tied: false), pure: false);
        var byName = plan.Entries.ToDictionary(e => e.Tensor.Name, e => e.Type);
        Assert.Equal(GgmlType.Q6_K, byName[TensorNames.Output]);
        Assert.Equal(GgmlType.Q4_K, byName[TensorNames.TokenEmbedding]);
        // 6 layers: use_more_bits gives layers 0 (i < 0? no: n/8 = 0), 2 ((2-0)%3==2), 5 (>= 7*6/8 = 5)
        var more = Enumerable.Range(0, 6).Where(l => GgufMixture.UseMoreBits(l, 6)).ToArray();
        Assert.Equal(new[] { 2, 5 }, more);
        Assert.Equal(GgmlType.Q6_K, byName[TensorNames.FfnDown(2)]);
        Assert.Equal(GgmlType.Q4_K, byName[TensorNames.FfnDown(1)]);
    }

    [Fact]
    public void Pure_gives_every_quantizable_tensor_the_base_type()
    {
        var plan = GgufMixture.TryGet("Q4_K_M")!.Plan(Config(6, 4, 2, 256), LlamaTensors(6, 256, 128, 768, 4096, tied: false), pure: true);
        Assert.All(plan.Entries.Where(e => e.Tensor.Shape.Length == 2), e => Assert.Equal(GgmlType.Q4_K, e.Type));
        Assert.All(plan.Entries.Where(e => e.Tensor.Shape.Length == 1), e => Assert.Equal(GgmlType.F32, e.Type));
    }

    [Fact]
    public void Q3_K_M_and_Q2_K_follow_llama_cpp()
    {
        var t = LlamaTensors(32, 4096, 1024, 14336, 128256, tied: false);
        var cfg = Config(32, 32, 8, 4096);
        var q3 = GgufMixture.TryGet("Q3_K_M")!.Plan(cfg, t, false).Entries.ToDictionary(e => e.Tensor.Name, e => e.Type);
        Assert.Equal(GgmlType.Q5_K, q3[TensorNames.AttnV(0)]);
        Assert.Equal(GgmlType.Q5_K, q3[TensorNames.AttnV(1)]);
        Assert.Equal(GgmlType.Q4_K, q3[TensorNames.AttnV(2)]);
        Assert.Equal(GgmlType.Q5_K, q3[TensorNames.FfnDown(1)]); // 1 < 32/16
        Assert.Equal(GgmlType.Q4_K, q3[TensorNames.FfnDown(2)]);
        Assert.Equal(GgmlType.Q4_K, q3[TensorNames.AttnOutput(5)]);
        Assert.Equal(GgmlType.Q3_K, q3[TensorNames.AttnQ(5)]);
        Assert.Equal(GgmlType.Q6_K, q3[TensorNames.Output]);

        var q2 = GgufMixture.TryGet("Q2_K")!.Plan(cfg, t, false).Entries.ToDictionary(e => e.Tensor.Name, e => e.Type);
        Assert.Equal(GgmlType.Q4_K, q2[TensorNames.AttnV(3)]); // GQA 4
        Assert.Equal(GgmlType.Q3_K, q2[TensorNames.FfnDown(3)]);
        Assert.Equal(GgmlType.Q3_K, q2[TensorNames.AttnOutput(3)]);
        Assert.Equal(GgmlType.Q2_K, q2[TensorNames.FfnUp(3)]);
    }

    [Fact]
    public void Rows_not_divisible_by_the_block_fall_back_like_llama_cpp()
    {
        Assert.Equal((GgmlType.Q5_0, true), GgufMixture.Fallback(GgmlType.Q4_K, 4096 + 32));
        Assert.Equal((GgmlType.Q8_0, true), GgufMixture.Fallback(GgmlType.Q6_K, 96));
        Assert.Equal((GgmlType.Q4_0, true), GgufMixture.Fallback(GgmlType.Q3_K, 160));
        Assert.Equal((GgmlType.F16, true), GgufMixture.Fallback(GgmlType.Q4_K, 100));
        Assert.Equal((GgmlType.Q4_K, false), GgufMixture.Fallback(GgmlType.Q4_K, 512));
        var f16 = CodecRegistry.Get("f16");
        var odd = new List<ModelTensor>
        {
            new("blk.0.ffn_up.weight", [64, 96], f16, () => throw new InvalidOperationException()),
        };
        var cfg = Config(1, 1, 1, 96) with { IntermediateSize = 64 };
        var e = Assert.Single(GgufMixture.TryGet("Q4_K_M")!.Plan(cfg, odd, false).Entries);
        Assert.Equal(GgmlType.Q5_0, e.Type);
        Assert.Contains("falling back to Q5_0", e.FallbackNote);
    }
}
