using System.CommandLine;
using System.Text.Json;
using Lowbit.Eval;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>`lowbit kld`: KL-divergence of a quantized model's token distributions from the base model's.</summary>
public static class KldCommand
{
    public static Command Create()
    {
        var baseModel = new Argument<string?>("base") { Arity = ArgumentArity.ZeroOrOne, Description = "Base (unquantized) model. Default: the bundled reference model." };
        var quant = new Argument<string?>("quant") { Arity = ArgumentArity.ZeroOrOne, Description = "Quantized model file (or use --format to quantize the base in memory)." };
        var format = new Option<string?>("--format") { Description = "Compare against the base quantized in memory with this mixture or codec." };
        var baseLogprobs = new Option<string?>("--base-logprobs") { Description = "Use base log-probabilities saved by `perplexity --save-logprobs` instead of running the base model." };
        var text = new Option<string?>("--text", "-f") { Description = "Text file (default: bundled WikiText-2 test)." };
        var chunks = new Option<int?>("--chunks") { Description = "Evaluate at most this many chunks." };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Borrow the tokenizer of another model." };
        var json = CliOptions.Json();
        var eng = new EngineCliOptions();
        var cmd = new Command("kld", "KL-divergence, top-1 agreement and Δppl of a quantized model against its base (llama.cpp --kl-divergence).")
        {
            baseModel, quant, format, baseLogprobs, text, chunks, tokenizer, json,
        };
        eng.AddTo(cmd);
        cmd.SetAction((pr, ct) =>
        {
            var console = CliRunner.Human(pr.GetValue(json));
            string basePath = CliOptions.ResolveModel(pr.GetValue(baseModel));
            string? quantPath = pr.GetValue(quant);
            string? fmt = pr.GetValue(format);
            if (quantPath is null && fmt is null) throw new LowbitException("give a quantized model file or --format to quantize the base in memory");
            using var baseM = IO.ModelLoader.Open(basePath);
            using var quantFile = quantPath is null ? null : IO.ModelLoader.Open(quantPath);
            var quantM = quantFile is not null
                ? (fmt is null ? quantFile : ModelSession.QuantizeInMemory(quantFile, fmt, pr.GetValue(eng.Threads)))
                : ModelSession.QuantizeInMemory(baseM, fmt!, pr.GetValue(eng.Threads));
            var tok = ModelSession.RequireTokenizer(baseM, pr.GetValue(tokenizer));
            var tokens = tok.Encode(ModelSession.ReadText(pr.GetValue(text)), addBos: true);
            var qEngine = eng.CreateEngine(pr, quantM);
            var options = new PerplexityOptions { Context = qEngine.ContextLength, MaxChunks = pr.GetValue(chunks), BosToken = tok.BosId };
            var progress = new SyncProgress<KlDivergenceProgress>(p => console.Write($"[{p.Chunk}]{p.MeanKld:F6},"));
            KlDivergenceResult r = pr.GetValue(baseLogprobs) is { } saved
                ? KlDivergence.Compute(qEngine, saved, tokens, options, progress, ct)
                : KlDivergence.Compute(eng.CreateEngine(pr, baseM), qEngine, tokens, options, progress, ct);
            console.WriteLine();
            Print(console, r);
            if (pr.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new { @base = basePath, quant = quantPath, format = fmt, result = r }, JsonOutput.Options));
            console.WriteLine($"Mean KLD: {r.MeanKld.Value:F6}");
            return Task.FromResult(0);
        });
        return cmd;
    }

    public static void Print(IAnsiConsole c, KlDivergenceResult r)
    {
        c.WriteLine("====== Perplexity statistics ======");
        c.WriteLine($"Mean PPL(Q)                   : {r.PplQuantized.Value,10:F6} ± {r.PplQuantized.Error:F6}");
        c.WriteLine($"Mean PPL(base)                : {r.PplBase.Value,10:F6} ± {r.PplBase.Error:F6}");
        c.WriteLine($"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * r.LogPplCorrelation,9:F2}%");
        c.WriteLine($"Mean ln(PPL(Q)/PPL(base))     : {r.LogPplRatio.Value,10:F6} ± {r.LogPplRatio.Error:F6}");
        c.WriteLine($"Mean PPL(Q)/PPL(base)         : {r.PplRatio.Value,10:F6} ± {r.PplRatio.Error:F6}");
        c.WriteLine($"Mean PPL(Q)-PPL(base)         : {r.PplDelta.Value,10:F6} ± {r.PplDelta.Error:F6}");
        c.WriteLine();
        c.WriteLine("====== KL divergence statistics ======");
        c.WriteLine($"Mean    KLD: {r.MeanKld.Value,10:F6} ± {r.MeanKld.Error:F6}");
        c.WriteLine($"Maximum KLD: {r.MaxKld,10:F6}");
        c.WriteLine($"99.9%   KLD: {r.P999Kld,10:F6}");
        c.WriteLine($"99.0%   KLD: {r.P99Kld,10:F6}");
        c.WriteLine($"90.0%   KLD: {r.P90Kld,10:F6}");
        c.WriteLine($"Median  KLD: {r.MedianKld,10:F6}");
        c.WriteLine($"10.0%   KLD: {r.P10Kld,10:F6}");
        c.WriteLine($"Minimum KLD: {r.MinKld,10:F6}");
        c.WriteLine();
        c.WriteLine("====== Token probability statistics ======");
        c.WriteLine($"Mean    Δp: {100 * r.MeanDeltaP.Value,8:F3} ± {100 * r.MeanDeltaP.Error:F3} %");
        c.WriteLine($"Maximum Δp: {100 * r.MaxDeltaP,8:F3}%");
        c.WriteLine($"99.0%   Δp: {100 * r.P99DeltaP,8:F3}%");
        c.WriteLine($"Median  Δp: {100 * r.MedianDeltaP,8:F3}%");
        c.WriteLine($"1.0%    Δp: {100 * r.P1DeltaP,8:F3}%");
        c.WriteLine($"Minimum Δp: {100 * r.MinDeltaP,8:F3}%");
        c.WriteLine($"RMS Δp    : {100 * r.RmsDeltaP.Value,8:F3} ± {100 * r.RmsDeltaP.Error:F3} %");
        c.WriteLine($"Same top p: {100 * r.SameTop.Value,8:F3} ± {100 * r.SameTop.Error:F3} %");
    }
}
