using Lowbit.Engine;
using Lowbit.IO;

namespace Lowbit.Tests.Engine;

public sealed class SamplerTests
{
    private static readonly float[] Logits = [1f, 3f, 2.5f, -1f, 0f, 2.9f];

    [Fact]
    public void Greedy_picks_the_argmax()
    {
        Assert.Equal(1, new Sampler().Sample(Logits));
        Assert.Equal(1, new Sampler(new SamplerOptions { Temperature = 1, TopK = 1 }).Sample(Logits));
    }

    [Fact]
    public void Same_seed_same_tokens_and_different_seeds_differ()
    {
        int[] Draw(ulong seed)
        {
            var s = new Sampler(new SamplerOptions { Temperature = 1.5f, Seed = seed });
            return Enumerable.Range(0, 200).Select(_ => s.Sample(Logits)).ToArray();
        }
        Assert.Equal(Draw(7), Draw(7));
        Assert.NotEqual(Draw(7), Draw(8));
        Assert.Equal(6, Draw(7).Distinct().Count());
    }

    [Fact]
    public void Top_k_and_top_p_restrict_the_candidates()
    {
        var k2 = new Sampler(new SamplerOptions { Temperature = 5, TopK = 2, Seed = 1 });
        Assert.All(Enumerable.Range(0, 300).Select(_ => k2.Sample(Logits)), t => Assert.Contains(t, new[] { 1, 5 }));
        // Probabilities at T=1: top three (3, 2.9, 2.5) hold ~0.77 of the mass; p=0.6 keeps the first two.
        var p = new Sampler(new SamplerOptions { Temperature = 1, TopP = 0.6f, Seed = 2 });
        var seen = Enumerable.Range(0, 300).Select(_ => p.Sample(Logits)).Distinct().OrderBy(x => x).ToArray();
        Assert.Equal(new[] { 1, 5 }, seen);
    }

    [Fact]
    public void Sampling_frequencies_follow_the_softmax()
    {
        var s = new Sampler(new SamplerOptions { Temperature = 1, Seed = 3 });
        var counts = new int[Logits.Length];
        const int n = 20000;
        for (int i = 0; i < n; i++) counts[s.Sample(Logits)]++;
        double z = Logits.Sum(v => Math.Exp(v));
        for (int i = 0; i < Logits.Length; i++)
            Assert.Equal(Math.Exp(Logits[i]) / z, counts[i] / (double)n, 0.015);
    }

    [Fact]
    public void Bad_settings_are_refused()
    {
        Assert.Throws<LowbitException>(() => new Sampler(new SamplerOptions { Temperature = -1 }));
        Assert.Throws<LowbitException>(() => new Sampler(new SamplerOptions { TopP = 0 }));
        Assert.Throws<LowbitException>(() => new Sampler(new SamplerOptions { TopK = -2 }));
    }

    [Fact]
    public void Generation_streams_the_golden_greedy_tokens_and_stops_at_the_budget()
    {
        var golden = Stories260KGoldenTests.ReadGolden();
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var e = new InferenceEngine(model);
        var generated = Generator.Generate(e, [1], maxTokens: 20).ToList();
        Assert.Equal(golden.Take(20).Select(g => g.Next), generated.Select(g => g.Token));
        Assert.Equal(20, e.Position); // BOS + 19 decoded; the 20th token is sampled but not evaluated
        // Treating a token the model emits as EOS stops before it.
        int stopAt = Enumerable.Range(1, 19).First(i => golden.Take(i).All(g => g.Next != golden[i].Next));
        var stopped = Generator.Generate(e, [1], maxTokens: 20, eosToken: golden[stopAt].Next).ToList();
        Assert.Equal(golden.Take(stopAt).Select(g => g.Next), stopped.Select(g => g.Token));
    }
}
