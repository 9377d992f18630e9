using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Model;
using Lowbit.Pipeline;

namespace Lowbit.Tests.Engine;

/// <summary>
/// Engine level: with Q4_0, Q8_0 and Q4_K weights (the integer GEMM formats), batched prefill gives the
/// logits of token-by-token decode, and neither depends on the thread count.
/// </summary>
public sealed class QuantizedPrefillTests
{
    private static LoadedModel Quantized(LoadedModel model, TensorCodec codec)
    {
        var plan = new Dictionary<string, TensorCodec>();
        foreach (var t in model.Tensors)
            if (t.Shape.Length == 2 && t.Cols % codec.BlockSize == 0) plan[t.Name] = codec;
        return ModelTransforms.Quantize(model, plan, threads: 2);
    }

    [Theory]
    [InlineData("q4_0")]
    [InlineData("q8_0")]
    [InlineData("q4_K")]
    public void Prefill_logits_equal_decode_logits(string codec)
    {
        using var source = ModelLoader.Open(Path.Combine(EngineTestPaths.Root, "models", "refmodel-llama-6m"));
        using var model = Quantized(source, CodecRegistry.Get(codec));
        Assert.Contains(model.Tensors, t => t.Codec.Name == codec && QuantizedGemm.FormatOf(t.Codec) is not null);
        var e2 = new InferenceEngine(model, new EngineOptions { Threads = 2 });
        int[] tokens = new int[13];
        for (int i = 0; i < tokens.Length; i++) tokens[i] = (1 + 37 * i * i) % e2.VocabSize;

        var prefill = new float[tokens.Length * e2.VocabSize];
        e2.Reset();
        e2.Evaluate(tokens, 0, prefill);
        var decode = new float[tokens.Length * e2.VocabSize];
        e2.Reset();
        for (int i = 0; i < tokens.Length; i++) e2.Decode(tokens[i]).CopyTo(decode, i * e2.VocabSize);
        Assert.Equal(decode, prefill);

        var e1 = new InferenceEngine(model, new EngineOptions { Threads = 1 });
        var one = new float[tokens.Length * e1.VocabSize];
        e1.Evaluate(tokens, 0, one);
        Assert.Equal(prefill, one);
    }
}
