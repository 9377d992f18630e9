using System.Runtime.InteropServices;
using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.Model;
using Lowbit.Pipeline;

namespace Lowbit.Tests.Methods;

/// <summary>Tiny synthetic Llama models with activation outlier channels, and helpers to compare their logits.</summary>
internal static class AwqTestModels
{
    public static ModelConfig Config(int kvHeads, bool bias = false) => new()
    {
        Architecture = "llama", VocabSize = 96, HiddenSize = 64, IntermediateSize = 128, NumLayers = 2,
        NumHeads = 4, NumKvHeads = kvHeads, HeadDim = 16, MaxPositions = 128, TieEmbeddings = true, AttentionBias = bias,
    };

    /// <summary>
    /// A random F32 model whose RMSNorm weights have a few large channels (as real LLMs do), so the
    /// inputs of q/k/v and gate/up carry outlier channels.
    /// </summary>
    public static LoadedModel WithOutliers(ModelConfig config, int seed = 5)
    {
        var model = SyntheticModel.Create(config, CodecRegistry.Get("f32"), seed);
        var rng = new Random(seed);
        var replacements = new Dictionary<string, ModelTensor>();
        // SyntheticModel's per-tensor seeds vary between processes: redraw every matrix and bias from one seeded stream.
        foreach (var t in model.Tensors)
        {
            bool isBias = t.Name.EndsWith(".bias", StringComparison.Ordinal);
            if (t.Shape.Length != 2 && !isBias) continue;
            var v = new float[t.ElementCount];
            float std = isBias ? 0.02f : 1f / MathF.Sqrt(t.Cols);
            for (int i = 0; i < v.Length; i++) v[i] = Gaussian(rng) * std;
            replacements[t.Name] = F32(t.Name, t.Shape, v);
        }
        for (int l = 0; l < config.NumLayers; l++)
            foreach (var name in new[] { TensorNames.AttnNorm(l), TensorNames.FfnNorm(l) })
            {
                var g = new float[config.HiddenSize];
                for (int c = 0; c < g.Length; c++) g[c] = 0.5f + (float)rng.NextDouble();
                foreach (int c in new[] { 3, 17, 40 }) g[c] = 25f + 10f * (float)rng.NextDouble();
                replacements[name] = F32(name, [config.HiddenSize], g);
            }
        return ModelTransforms.WithTensors(model, replacements);
    }

    private static float Gaussian(Random rng) =>
        (float)(Math.Sqrt(-2.0 * Math.Log(1.0 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));

    public static ModelTensor F32(string name, long[] shape, float[] values) =>
        new(name, shape, CodecRegistry.Get("f32"), MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    public static int[][] Samples(int count, int length, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, length).Select(_ => rng.Next(vocab)).ToArray()).ToArray();
    }

    public static float[] Logits(LoadedModel model, int[] tokens, bool quantizedActivations = true)
    {
        var engine = new InferenceEngine(model, new EngineOptions { Threads = 2, ContextLength = tokens.Length, QuantizedActivations = quantizedActivations });
        var logits = new float[tokens.Length * engine.VocabSize];
        engine.Evaluate(tokens, 0, logits);
        return logits;
    }

    public static double MeanSquaredError(float[] a, float[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += (double)(a[i] - b[i]) * (a[i] - b[i]);
        return s / a.Length;
    }

    public static double MaxAbs(float[] a) => a.Max(v => Math.Abs((double)v));

    /// <summary>Quantizes every block linear to <paramref name="codec"/> (round to nearest).</summary>
    public static LoadedModel QuantizeBlockLinears(LoadedModel model, TensorCodec codec)
    {
        var plan = Lowbit.Methods.AwqModelTransform.BlockLinearNames(model.Config).ToDictionary(n => n, _ => codec);
        return ModelTransforms.Quantize(model, plan, threads: 2);
    }
}
