using System.CommandLine;
using System.Text.Json;
using Lowbit.Engine;
using Lowbit.Eval;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>`lowbit perplexity`: llama.cpp-compatible perplexity (non-overlapping chunks, second half scored).</summary>
public static class PerplexityCommand
{
    public static Command Create()
    {
        var model = CliOptions.ModelArgument();
        var text = new Option<string?>("--text", "-f") { Description = "Text file (default: bundled WikiText-2 test, wiki.test.full.raw)." };
        var chunks = new Option<int?>("--chunks") { Description = "Evaluate at most this many chunks." };
        var format = new Option<string?>("--format") { Description = "Quantize the model in memory with this mixture or codec first (no file written)." };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Borrow the tokenizer of another model (for models without one)." };
        var saveBase = new Option<string?>("--save-logprobs") { Description = "Save the log-probabilities of the scored positions for later `lowbit kld --base-logprobs`." };
        var json = CliOptions.Json();
        var eng = new EngineCliOptions();
        var cmd = new Command("perplexity", "Perplexity of a model on a text, computed the way llama.cpp's llama-perplexity does.")
        {
            model, text, chunks, format, tokenizer, saveBase, json,
        };
        eng.AddTo(cmd);
        cmd.SetAction((pr, ct) =>
        {
            var console = CliRunner.Human(pr.GetValue(json));
            string path = CliOptions.ResolveModel(pr.GetValue(model));
            var m = ModelSession.Open(path, pr.GetValue(format), pr.GetValue(eng.Threads), out var owner);
            using var ownerDisposable = owner;
            using var disposeModel = m;
            var tok = ModelSession.RequireTokenizer(m, pr.GetValue(tokenizer));
            console.WriteLine("perplexity: tokenizing the input ..");
            var tokens = tok.Encode(ModelSession.ReadText(pr.GetValue(text)), addBos: true);
            var engine = eng.CreateEngine(pr, m);
            int ctx = engine.ContextLength;
            if (ctx < pr.GetValue(eng.Context)) console.MarkupLine($"[grey]context capped at the model's trained context: {ctx}[/]");
            var options = new PerplexityOptions { Context = ctx, MaxChunks = pr.GetValue(chunks), BosToken = tok.BosId };
            int total = Math.Min(tokens.Length / ctx, pr.GetValue(chunks) ?? int.MaxValue);
            console.WriteLine($"perplexity: calculating perplexity over {total} chunks, n_ctx={ctx}, tokens={tokens.Length}, threads={engine.Threads}");
            var line = new System.Text.StringBuilder();
            var result = Perplexity.Compute(engine, tokens, options, new SyncProgress<PerplexityProgress>(p =>
            {
                string s = $"[{p.Chunk}]{p.RunningPerplexity:F4},";
                console.Write(s);
            }), ct, pr.GetValue(saveBase));
            console.WriteLine();
            console.WriteLine($"{result.ScoredTokens} tokens scored in {result.Seconds:F2} s ({result.TokensPerSecond:F0} tokens/s evaluated)");
            if (pr.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new { model = path, format = pr.GetValue(format), context = ctx, result }, JsonOutput.Options));
            console.WriteLine($"Final estimate: PPL = {result.Perplexity:F4} +/- {result.PerplexityError:F5}");
            return Task.FromResult(0);
        });
        return cmd;
    }
}
