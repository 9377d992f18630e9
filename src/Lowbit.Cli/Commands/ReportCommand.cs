using System.CommandLine;
using Lowbit.Engine;
using Lowbit.Eval;
using Lowbit.IO;
using Lowbit.Report;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>
/// `lowbit evaluate-variants` fills a run directory (variants.json + sensitivity.json);
/// `lowbit report RUN_DIR` renders every Lowbit JSON file in it as one self-contained HTML page.
/// </summary>
public static class ReportCommand
{
    public const string DefaultFormats = "Q2_K,Q3_K_M,Q4_K_M,Q5_K_M,Q6_K,Q8_0";

    public static Command Create()
    {
        var runDir = new Argument<string>("run-dir") { Description = "Directory of Lowbit result files (evaluate-variants --out, sensitivity -o, quantize --budget --save)." };
        var output = new Option<string?>("--output", "-o") { Description = "HTML file to write (default: RUN_DIR/report.html)." };
        var title = new Option<string?>("--title") { Description = "Page title." };
        var cmd = new Command("report", "Render a run directory as one self-contained HTML page (quality vs size, sensitivity heatmap, speed, deployment fit).")
        {
            runDir, output, title,
        };
        cmd.SetAction(pr =>
        {
            string dir = pr.GetValue(runDir)!;
            var contents = RunFiles.Read(dir);
            string outPath = pr.GetValue(output) ?? Path.Combine(dir, "report.html");
            string name = contents.Variants.FirstOrDefault()?.Model ?? contents.Sensitivity.FirstOrDefault()?.Model ?? contents.Budgets.FirstOrDefault()?.Model ?? Path.GetFileName(Path.GetFullPath(dir));
            string html = HtmlReport.Render(contents, pr.GetValue(title) ?? $"Lowbit report: {name}");
            using (var f = AtomicFile.Create(outPath))
            {
                using (var w = new StreamWriter(f.Stream, new System.Text.UTF8Encoding(false), leaveOpen: true)) w.Write(html);
                f.Commit();
            }
            AnsiConsole.WriteLine($"read {contents.Files.Count} result files ({string.Join(", ", contents.Files)}); wrote {outPath} ({html.Length / 1024} KiB)");
            return 0;
        });
        return cmd;
    }

    public static Command CreateEvaluateVariants()
    {
        var model = CliOptions.ModelArgument();
        var formats = new Option<string>("--formats") { Description = "Mixtures or codecs to evaluate, comma-separated.", DefaultValueFactory = _ => DefaultFormats };
        var sensFormat = new Option<string?>("--sensitivity-format") { Description = "Also measure per-component sensitivity in these formats (comma-separated; empty = skip).", DefaultValueFactory = _ => "q4_K" };
        var chunks = new Option<int>("--chunks") { Description = "Chunks of text to measure on.", DefaultValueFactory = _ => 4 };
        var text = new Option<string?>("--text") { Description = "Text file (default: bundled WikiText-2 test)." };
        var outDir = new Option<string>("--out") { Description = "Run directory to write variants.json (and sensitivity.json) into.", Required = true };
        var eng = new EngineCliOptions();
        eng.Context.DefaultValueFactory = _ => 128;
        var cmd = new Command("evaluate-variants", "Quantize a model in memory to several formats, measure size, PPL, KLD and speed, and save them in a run directory for `lowbit report`.")
        {
            model, formats, sensFormat, chunks, text, outDir,
        };
        eng.AddTo(cmd);
        cmd.SetAction((pr, ct) =>
        {
            var console = AnsiConsole.Console;
            string path = CliOptions.ResolveModel(pr.GetValue(model));
            string dir = pr.GetValue(outDir)!;
            var list = pr.GetValue(formats)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            using var m = ModelLoader.Open(path);
            foreach (var f in list) VariantEvaluation.Plan(m, f); // validate names before the long part
            string name = QuantizeCommand.ModelName(path);
            string textContent = ModelSession.ReadText(pr.GetValue(text));
            var tok = ModelSession.RequireTokenizer(m, null);
            var engineOptions = new EngineOptions
            {
                Threads = pr.GetValue(eng.Threads), ContextLength = eng.EffectiveContext(pr, m.Config), KvCache = EngineCliOptions.ParseKv(pr.GetValue(eng.KvCache)!),
                InterleavedDecode = !pr.GetValue(eng.NoInterleave),
            };
            var tokens = SensitivityCommand.EncodePrefix(tok, textContent, (long)pr.GetValue(chunks) * engineOptions.ContextLength);
            var baseline = SensitivityBaseline.Capture(new InferenceEngine(m, engineOptions), tokens,
                new PerplexityOptions { Context = engineOptions.ContextLength, MaxChunks = pr.GetValue(chunks), BosToken = tok.BosId }, ct);
            console.WriteLine($"evaluate-variants: {baseline.Chunks} chunks of {baseline.Context} tokens, base PPL {baseline.BasePerplexity:F4}");
            var report = VariantEvaluation.Evaluate(m, name, baseline, list, engineOptions, new SyncProgress<string>(f => console.WriteLine($"  measuring {f} ..")), ct);
            var table = new Table().AddColumns("variant", "bytes", "bpw", "PPL", "mean KLD", "same top %", "prefill tok/s", "decode tok/s");
            foreach (var r in new[] { report.Base }.Concat(report.Variants))
                table.AddTextRow(r.Name, r.Bytes.ToString("N0"), Format.F(r.BitsPerWeight, "0.000"), Format.F(r.Perplexity, "0.0000"), Format.F(r.MeanKld, "0.000000"),
                    Format.F(100 * r.SameTop, "0.00"), Format.F(r.PrefillTokensPerSecond, "0"), Format.F(r.DecodeTokensPerSecond, "0"));
            console.Write(table);
            Directory.CreateDirectory(dir);
            RunFiles.Write(Path.Combine(dir, "variants.json"), report);
            if (pr.GetValue(sensFormat) is { Length: > 0 } sf)
            {
                var sens = SensitivityCommand.Run(console, m, name, SensitivityCommand.ParseFormats(sf), baseline.Chunks, textContent, engineOptions, ct);
                RunFiles.Write(Path.Combine(dir, "sensitivity.json"), sens);
            }
            console.WriteLine($"wrote {dir}; render it with `lowbit report {dir}`");
            return Task.FromResult(0);
        });
        return cmd;
    }
}
