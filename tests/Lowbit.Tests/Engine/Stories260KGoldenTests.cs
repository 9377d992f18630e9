using System.Globalization;
using Lowbit.Engine;
using Lowbit.IO;

namespace Lowbit.Tests.Engine;

/// <summary>The engine reproduces llama2.c's run.c greedy decoding of stories260K from BOS.</summary>
public sealed class Stories260KGoldenTests
{
    internal sealed record GoldenStep(int Pos, int Input, int Next, float MaxLogit, double Sum);

    internal static List<GoldenStep> ReadGolden()
    {
        var steps = new List<GoldenStep>();
        foreach (var line in File.ReadLines(EngineTestPaths.Stories260KGolden))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            // pos P in T next N argmax A logit[argmax] L sum S
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("pos", f[0]);
            steps.Add(new GoldenStep(int.Parse(f[1], CultureInfo.InvariantCulture), int.Parse(f[3], CultureInfo.InvariantCulture),
                int.Parse(f[5], CultureInfo.InvariantCulture), float.Parse(f[9], CultureInfo.InvariantCulture),
                double.Parse(f[11], CultureInfo.InvariantCulture)));
        }
        return steps;
    }

    [Theory]
    [InlineData(1, KvCacheType.F32)]
    [InlineData(2, KvCacheType.F32)]
    public void Greedy_decoding_from_BOS_matches_llama2c_token_for_token(int threads, KvCacheType kv)
    {
        var golden = ReadGolden();
        Assert.True(golden.Count >= 64);
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var engine = new InferenceEngine(model, new EngineOptions { Threads = threads, KvCache = kv });
        int token = 1;
        foreach (var step in golden)
        {
            Assert.Equal(step.Pos, engine.Position);
            Assert.Equal(step.Input, token);
            var logits = engine.Decode(token);
            int argmax = Sampler.ArgMax(logits);
            Assert.Equal(step.Next, argmax);
            Assert.True(Math.Abs(logits[argmax] - step.MaxLogit) <= 1e-4 * Math.Max(1, Math.Abs(step.MaxLogit)),
                $"pos {step.Pos}: max logit {logits[argmax]} vs {step.MaxLogit}");
            double sum = 0;
            foreach (float v in logits) sum += v;
            Assert.True(Math.Abs(sum - step.Sum) <= 1e-4 * Math.Max(1, Math.Abs(step.Sum)),
                $"pos {step.Pos}: sum of logits {sum} vs {step.Sum}");
            token = argmax;
        }
    }

    [Fact]
    public void Batched_prefill_of_the_golden_sequence_matches_its_greedy_tokens()
    {
        var golden = ReadGolden();
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var engine = new InferenceEngine(model, new EngineOptions { Threads = 2 });
        int[] inputs = golden.Select(s => s.Input).ToArray();
        var logits = new float[inputs.Length * engine.VocabSize];
        engine.Evaluate(inputs, 0, logits);
        for (int i = 0; i < inputs.Length; i++)
        {
            var row = logits.AsSpan(i * engine.VocabSize, engine.VocabSize);
            Assert.Equal(golden[i].Next, Sampler.ArgMax(row));
            Assert.True(Math.Abs(row[golden[i].Next] - golden[i].MaxLogit) <= 1e-4 * Math.Max(1, Math.Abs(golden[i].MaxLogit)));
        }
    }
}
