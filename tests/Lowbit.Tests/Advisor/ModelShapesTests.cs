using Lowbit.Advisor;
using Lowbit.Model;

namespace Lowbit.Tests.Advisor;

public sealed class ModelShapesTests
{
    // Published parameter counts (Hugging Face model cards / safetensors metadata).
    [Theory]
    [InlineData("llama-3.1-8b", 8_030_261_248)]
    [InlineData("llama-3.1-70b", 70_553_706_496)]
    [InlineData("llama-3.2-1b", 1_235_814_400)]
    [InlineData("llama-3.2-3b", 3_212_749_824)]
    [InlineData("llama-2-7b", 6_738_415_616)]
    [InlineData("mistral-7b", 7_248_023_552)]
    [InlineData("qwen2.5-0.5b", 494_032_768)]
    [InlineData("qwen2.5-7b", 7_615_616_512)]
    [InlineData("qwen3-8b", 8_190_735_360)]
    public void Shapes_reproduce_published_parameter_counts(string name, long parameters)
    {
        var cfg = ModelShapes.Get(name);
        Assert.Equal(parameters, cfg.ParameterCount);
        Assert.Equal(parameters, LlamaTensorLayout.Enumerate(cfg).Sum(s => s.Elements));
    }

    [Fact]
    public void Qwen_layouts_carry_biases_and_qk_norms()
    {
        var qwen2 = LlamaTensorLayout.Enumerate(ModelShapes.Get("qwen2.5-7b"));
        Assert.Contains(qwen2, s => s.Name == TensorNames.AttnKBias(3) && s.Cols == 512 && s.IsVector);
        var qwen3 = LlamaTensorLayout.Enumerate(ModelShapes.Get("qwen3-8b"));
        Assert.Contains(qwen3, s => s.Name == TensorNames.AttnQNorm(0) && s.Cols == 128);
        Assert.DoesNotContain(qwen3, s => s.Role == TensorRole.AttnQBias);
    }

    [Fact]
    public void Unknown_shape_names_the_known_ones()
    {
        var e = Assert.Throws<LowbitException>(() => ModelShapes.Get("gpt-5"));
        Assert.Contains("llama-3.1-8b", e.Message);
        Assert.NotNull(ModelShapes.TryGet("LLAMA-3.1-8B"));
    }
}

public sealed class LayoutProperties
{
    [FsCheck.Xunit.Property(MaxTest = 200)]
    public bool Layout_elements_equal_parameter_count_and_f16_bytes_follow(
        FsCheck.PositiveInt vocab, FsCheck.PositiveInt heads, FsCheck.PositiveInt groups, FsCheck.PositiveInt headDim,
        FsCheck.PositiveInt ffn, FsCheck.PositiveInt layers, bool tied, bool bias, bool qkNorm)
    {
        int kv = 1 + heads.Get % 4, h = kv * (1 + groups.Get % 4);
        var cfg = new ModelConfig
        {
            Architecture = "llama", VocabSize = 1 + vocab.Get % 1000, NumHeads = h, NumKvHeads = kv,
            HeadDim = 1 + headDim.Get % 64, HiddenSize = h * (1 + headDim.Get % 64), IntermediateSize = 1 + ffn.Get % 512,
            NumLayers = 1 + layers.Get % 6, TieEmbeddings = tied, AttentionBias = bias, QkNorm = qkNorm,
        };
        var slots = LlamaTensorLayout.Enumerate(cfg);
        long vectors = slots.Where(s => s.IsVector).Sum(s => s.Elements);
        long all = slots.Sum(s => s.Elements);
        var w = MemoryEstimator.Weights(cfg, QuantizationPlan.Uniform(Lowbit.Formats.CodecRegistry.Get("f16")));
        return all == cfg.ParameterCount && w.TotalBytes == 2 * (all - vectors) + 4 * vectors
            && slots.Select(s => s.Name).Distinct().Count() == slots.Count;
    }
}
