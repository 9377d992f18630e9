using System.CommandLine;
using System.Diagnostics;
using Lowbit.Engine;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>`lowbit generate`: stream text from a prompt (greedy, temperature, top-k, top-p).</summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var model = CliOptions.ModelArgument();
        var prompt = new Option<string>("--prompt", "-p") { Description = "Prompt text.", DefaultValueFactory = _ => "" };
        var tokensOpt = new Option<int>("--tokens", "-n") { Description = "Tokens to generate.", DefaultValueFactory = _ => 64 };
        var temp = new Option<float>("--temp") { Description = "Temperature (0 = greedy).", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "Keep the k most likely tokens (0 = all).", DefaultValueFactory = _ => 40 };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling threshold.", DefaultValueFactory = _ => 0.95f };
        var seed = new Option<ulong>("--seed") { Description = "Sampling seed.", DefaultValueFactory = _ => 42UL };
        var format = new Option<string?>("--format") { Description = "Quantize the model in memory with this mixture or codec first." };
        var eng = new EngineCliOptions();
        var cmd = new Command("generate", "Generate text from a prompt, streaming tokens as they come.") { model, prompt, tokensOpt, temp, topK, topP, seed, format };
        eng.AddTo(cmd);
        cmd.SetAction((pr, ct) =>
        {
            string path = CliOptions.ResolveModel(pr.GetValue(model));
            var m = ModelSession.Open(path, pr.GetValue(format), pr.GetValue(eng.Threads), out var owner);
            using var o = owner;
            using var mm = m;
            var tok = Model.Tokenizer.ForModel(m);
            var engine = eng.CreateEngine(pr, m);
            int bos = m.Config.BosTokenId;
            int[] input = tok is null ? [bos] : tok.Encode(pr.GetValue(prompt)!, addBos: true);
            if (input.Length == 0) input = [bos];
            var sampler = new Sampler(new SamplerOptions
            {
                Temperature = pr.GetValue(temp), TopK = pr.GetValue(topK), TopP = pr.GetValue(topP), Seed = pr.GetValue(seed),
            });
            var decoder = tok is null ? null : ContinuationDecoder(tok, pr.GetValue(prompt)!);
            Console.Write(pr.GetValue(prompt));
            var sw = Stopwatch.StartNew();
            var logits = engine.Prefill(input);
            double prefillS = sw.Elapsed.TotalSeconds;
            int n = Math.Min(pr.GetValue(tokensOpt), engine.ContextLength - input.Length);
            int produced = 0;
            var gen = Stopwatch.StartNew();
            for (int i = 0; i < n; i++)
            {
                ct.ThrowIfCancellationRequested();
                int next = sampler.Sample(logits);
                if (next == m.Config.EosTokenId && tok is not null) break;
                Console.Write(decoder is null ? $" {next}" : decoder.Push(next));
                produced++;
                if (i + 1 < n) logits = engine.Decode(next);
            }
            if (decoder is not null) Console.Write(decoder.Flush());
            Console.WriteLine();
            Console.Error.WriteLine($"prompt: {input.Length} tokens in {prefillS * 1000:F0} ms ({input.Length / Math.Max(prefillS, 1e-9):F1} t/s); " +
                                    $"generated: {produced} tokens in {gen.Elapsed.TotalSeconds:F2} s ({produced / Math.Max(gen.Elapsed.TotalSeconds, 1e-9):F1} t/s)");
            return Task.FromResult(0);
        });
        return cmd;
    }

    /// <summary>
    /// Decoder for the tokens printed after the prompt text: the generated text continues the
    /// prompt, so the SentencePiece dummy-prefix space is dropped only when there is no prompt
    /// (otherwise "The Python interpreter" + "▁is" would print "interpreteris").
    /// </summary>
    internal static Model.Tokenizer.StreamDecoder ContinuationDecoder(Model.Tokenizer tokenizer, string prompt) =>
        tokenizer.CreateStreamDecoder(atStartOfText: prompt.Length == 0);
}
