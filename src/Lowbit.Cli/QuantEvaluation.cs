using System.Diagnostics;
using Lowbit.Engine;
using Lowbit.Eval;
using Lowbit.Model;
using Spectre.Console;

namespace Lowbit.Cli;

/// <summary>One row of the quality/speed comparison printed by `quantize --eval`.</summary>
public sealed record QuantComparisonRow(string Name, long Bytes, double BitsPerWeight, double Perplexity, double PerplexityError,
    double? MeanKld, double? SameTopPercent, double PromptTokensPerSecond, double GenerateTokensPerSecond);

/// <summary>
/// Measures a quantized model next to its base: size, bpw, perplexity and KLD on the bundled WikiText-2
/// test text (llama.cpp's method), and pp/tg speed — the table `quantize --eval` prints.
/// </summary>
public static class QuantEvaluation
{
    public static IReadOnlyList<QuantComparisonRow> Compare(LoadedModel baseModel, LoadedModel quantModel, string quantName, int chunks, int threads,
        IAnsiConsole console, CancellationToken ct)
    {
        var tok = ModelSession.RequireTokenizer(baseModel, null);
        var tokens = tok.Encode(ModelSession.ReadText(null), addBos: true);
        int ctx = Math.Min(512, baseModel.Config.MaxPositions);
        var options = new PerplexityOptions { Context = ctx, MaxChunks = chunks, BosToken = tok.BosId };
        InferenceEngine Engine(LoadedModel m) => new(m, new EngineOptions { Threads = threads, ContextLength = ctx });
        var baseEngine = Engine(baseModel);
        var quantEngine = Engine(quantModel);
        console.WriteLine($"evaluating on {chunks} chunks of {ctx} tokens of WikiText-2 test ...");
        var pplBase = Perplexity.Compute(baseEngine, tokens, options, null, ct);
        var kld = KlDivergence.Compute(baseEngine, quantEngine, tokens, options, null, ct);
        var benchOptions = new BenchOptions { PromptTokens = Math.Min(ctx - 1, 128), GenerateTokens = 32, Repetitions = 2 };
        var bBase = Bench.Run(baseEngine, benchOptions, null, ct);
        var bQuant = Bench.Run(quantEngine, benchOptions, null, ct);
        long Bytes(LoadedModel m) => m.Tensors.Sum(t => t.ByteCount);
        double Bpw(LoadedModel m) => 8.0 * Bytes(m) / m.Tensors.Sum(t => t.ElementCount);
        return
        [
            new QuantComparisonRow($"base ({baseModel.Tensors.GroupBy(t => t.Codec.Name).MaxBy(g => g.Sum(t => t.ByteCount))!.Key})", Bytes(baseModel), Bpw(baseModel),
                pplBase.Perplexity, pplBase.PerplexityError, null, null, bBase.PromptTokensPerSecond.Mean, bBase.GenerateTokensPerSecond.Mean),
            new QuantComparisonRow(quantName, Bytes(quantModel), Bpw(quantModel), kld.PplQuantized.Value, kld.PplQuantized.Error,
                kld.MeanKld.Value, 100 * kld.SameTop.Value, bQuant.PromptTokensPerSecond.Mean, bQuant.GenerateTokensPerSecond.Mean),
        ];
    }

    public static void Print(IAnsiConsole console, IReadOnlyList<QuantComparisonRow> rows)
    {
        var t = new Table().Title("quality and speed (WikiText-2 test)").AddColumns("model", "size", "bpw", "PPL", "mean KLD", "top-1 agree", "pp t/s", "tg t/s");
        foreach (var r in rows)
            t.AddTextRow(r.Name, Format.Bytes(r.Bytes), Format.F(r.BitsPerWeight, "0.000"), $"{r.Perplexity:F4} ± {r.PerplexityError:F4}",
                r.MeanKld is { } k ? k.ToString("F6") : "-", r.SameTopPercent is { } s ? $"{s:F2}%" : "-",
                r.PromptTokensPerSecond.ToString("F1"), r.GenerateTokensPerSecond.ToString("F1"));
        console.Write(t);
    }
}
