using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.Methods;
using Lowbit.Methods.Calibration;
using Lowbit.Model;

namespace Lowbit.Tests.Methods;

/// <summary>A tiny random Llama (hidden 64, 2 layers, vocab 64) and seeded calibration text for the pipeline tests.</summary>
internal static class CalibrationTestModels
{
    public static ModelConfig TinyConfig() => new()
    {
        Architecture = "llama", VocabSize = 64, HiddenSize = 64, IntermediateSize = 128, NumLayers = 2,
        NumHeads = 4, NumKvHeads = 2, HeadDim = 16, MaxPositions = 64, TieEmbeddings = false,
    };

    public static LoadedModel Tiny(int seed = 7) => SyntheticModel.Create(TinyConfig(), CodecRegistry.Get("f32"), seed);

    /// <summary>Seeded text over a small alphabet with a skewed distribution, tokenized one character per token.</summary>
    public static int[] Tokenize(string s) => s.Select(c => 2 + (c - 'a') % 62).ToArray();

    public static string Text(int seed, int chars = 4000)
    {
        var rng = new Random(seed);
        var sb = new System.Text.StringBuilder(chars);
        for (int i = 0; i < chars; i++)
        {
            // Skewed letters make activations correlated across channels, as real text does.
            double u = rng.NextDouble();
            sb.Append((char)('a' + (int)(26 * u * u)));
        }
        return sb.ToString();
    }

    public static CalibrationData Data(int samples = 16, int length = 32, int seed = 1) =>
        CalibrationData.Create([Text(seed)], Tokenize, samples, length, seed, bosToken: 1, "synthetic");

    public static Dictionary<string, TensorTarget> BlockPlan(LoadedModel model, string codec, QuantMethod method, Func<int, bool>? layers = null)
    {
        var c = CodecRegistry.Get(codec);
        var plan = new Dictionary<string, TensorTarget>();
        for (int l = 0; l < model.Config.NumLayers; l++)
        {
            if (layers is not null && !layers(l)) continue;
            foreach (var group in CalibrationPipeline.LinearGroups(l))
                foreach (var (name, _) in group) plan[name] = new TensorTarget(c, method, new GptqOptions());
        }
        return plan;
    }

    /// <summary>Σ (logit_q − logit_base)² over held-out sequences.</summary>
    public static double LogitError(LoadedModel baseModel, LoadedModel quant, int sequences = 4, int length = 32)
    {
        var tokens = Tokenize(Text(999, sequences * length));
        var eb = new InferenceEngine(baseModel, new EngineOptions { Threads = 1, QuantizedActivations = false });
        var eq = new InferenceEngine(quant, new EngineOptions { Threads = 1, QuantizedActivations = false });
        int v = eb.VocabSize;
        var lb = new float[length * v];
        var lq = new float[length * v];
        double err = 0;
        for (int s = 0; s < sequences; s++)
        {
            var seq = tokens.AsSpan(s * length, length);
            eb.Reset(); eq.Reset();
            eb.Evaluate(seq, 0, lb);
            eq.Evaluate(seq, 0, lq);
            for (int i = 0; i < lb.Length; i++) err += (double)(lb[i] - lq[i]) * (lb[i] - lq[i]);
        }
        return err;
    }
}
