using Lowbit.Formats;
using Lowbit.Model;

namespace Lowbit.Engine;

/// <summary>
/// Builds in-memory Llama-family models of a real shape with seeded random weights, quantized
/// with a chosen codec — for speed runs and tests without a model file. Weights are Gaussian with
/// standard deviation 1/sqrt(fan-in) so activations stay in a realistic range; norm weights are 1.
/// </summary>
public static class SyntheticModel
{
    /// <summary>Llama-3.2-1B-like shape (hidden 2048, 16 layers, 32 heads, 8 KV heads, FFN 8192).</summary>
    public static ModelConfig Llama1BLike(int vocab = 32000, int layers = 16) => new()
    {
        Architecture = "llama", VocabSize = vocab, HiddenSize = 2048, IntermediateSize = 8192, NumLayers = layers,
        NumHeads = 32, NumKvHeads = 8, HeadDim = 64, RopeTheta = 500000f, MaxPositions = 4096, TieEmbeddings = true,
    };

    /// <summary>The shape of the bundled refmodel-llama-6m (hidden 256, 6 layers, 4 heads, 2 KV heads, FFN 768, vocab 4096).</summary>
    public static ModelConfig Tiny6MLike() => new()
    {
        Architecture = "llama", VocabSize = 4096, HiddenSize = 256, IntermediateSize = 768, NumLayers = 6,
        NumHeads = 4, NumKvHeads = 2, HeadDim = 64, MaxPositions = 2048, TieEmbeddings = true,
    };

    /// <param name="codec">Codec of the 2-D weight matrices.</param>
    /// <param name="embeddingCodec">Codec of token_embd (and output when untied); default = <paramref name="codec"/>.</param>
    public static LoadedModel Create(ModelConfig config, TensorCodec codec, int seed = 1, TensorCodec? embeddingCodec = null)
    {
        var c = config;
        embeddingCodec ??= codec;
        var f32 = CodecRegistry.Get("f32");
        var specs = new List<(string Name, long Rows, long Cols, TensorCodec Codec, bool Ones)>
        {
            (TensorNames.TokenEmbedding, c.VocabSize, c.HiddenSize, embeddingCodec, false),
            (TensorNames.OutputNorm, 1, c.HiddenSize, f32, true),
        };
        if (!c.TieEmbeddings) specs.Add((TensorNames.Output, c.VocabSize, c.HiddenSize, embeddingCodec, false));
        for (int l = 0; l < c.NumLayers; l++)
        {
            specs.Add((TensorNames.AttnNorm(l), 1, c.HiddenSize, f32, true));
            specs.Add((TensorNames.FfnNorm(l), 1, c.HiddenSize, f32, true));
            specs.Add((TensorNames.AttnQ(l), c.QDim, c.HiddenSize, codec, false));
            specs.Add((TensorNames.AttnK(l), c.KvDim, c.HiddenSize, codec, false));
            specs.Add((TensorNames.AttnV(l), c.KvDim, c.HiddenSize, codec, false));
            specs.Add((TensorNames.AttnOutput(l), c.HiddenSize, c.QDim, codec, false));
            specs.Add((TensorNames.FfnGate(l), c.IntermediateSize, c.HiddenSize, codec, false));
            specs.Add((TensorNames.FfnUp(l), c.IntermediateSize, c.HiddenSize, codec, false));
            specs.Add((TensorNames.FfnDown(l), c.HiddenSize, c.IntermediateSize, codec, false));
            if (c.AttentionBias)
            {
                specs.Add((TensorNames.AttnQBias(l), 1, c.QDim, f32, false));
                specs.Add((TensorNames.AttnKBias(l), 1, c.KvDim, f32, false));
                specs.Add((TensorNames.AttnVBias(l), 1, c.KvDim, f32, false));
            }
            if (c.QkNorm)
            {
                specs.Add((TensorNames.AttnQNorm(l), 1, c.HeadDim, f32, true));
                specs.Add((TensorNames.AttnKNorm(l), 1, c.HeadDim, f32, true));
            }
        }
        foreach (var s in specs)
            if (!s.Codec.CanEncodeRow(s.Cols))
                throw new LowbitException($"{s.Codec.Name} cannot encode rows of {s.Cols} values ({s.Name}); block size is {s.Codec.BlockSize}");

        var tensors = new ModelTensor[specs.Count];
        Parallel.For(0, specs.Count, i =>
        {
            var (name, rows, cols, tc, ones) = specs[i];
            var rng = new Random(unchecked(seed * 1_000_003 + i)); // HashCode.Combine is randomized per process
            long[] shape = rows == 1 ? [cols] : [rows, cols];
            byte[] data = new byte[checked((int)tc.TensorBytes(rows, cols))];
            if (ones || name.EndsWith(".bias", StringComparison.Ordinal))
            {
                var v = new float[cols];
                for (int k = 0; k < cols; k++) v[k] = ones ? 1f : Gaussian(rng) * 0.02f;
                tc.QuantizeTensor(v, data, 1, (int)cols, default);
            }
            else
            {
                float std = 1f / MathF.Sqrt(cols);
                long rowBytes = tc.RowBytes(cols);
                bool rowAddressable = tc.TensorBytes(rows, cols) == rows * rowBytes;
                int block = rowAddressable ? (int)Math.Max(1, Math.Min(rows, (1 << 20) / cols)) : (int)rows;
                var src = new float[block * cols];
                for (long r0 = 0; r0 < rows; r0 += block)
                {
                    int n = (int)Math.Min(block, rows - r0);
                    for (int k = 0; k < n * cols; k++) src[k] = Gaussian(rng) * std;
                    if (rowAddressable)
                        tc.QuantizeRows(src.AsSpan(0, (int)(n * cols)), data.AsSpan((int)(r0 * rowBytes), (int)(n * rowBytes)), (int)cols, default);
                    else
                        tc.QuantizeTensor(src, data, rows, (int)cols, default);
                }
            }
            tensors[i] = new ModelTensor(name, shape, tc, data);
        });
        return new LoadedModel($"synthetic:{c.Architecture}-{c.HiddenSize}x{c.NumLayers}-{codec.Name}", "synthetic", c, tokenizer: null, tensors);
    }

    private static float Gaussian(Random rng)
    {
        // Box–Muller; one value per call keeps the stream simple and seeded.
        double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
        return (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }
}
