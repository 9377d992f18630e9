using System.CommandLine;
using System.Text.Json;
using Lowbit.Engine;
using Lowbit.Eval;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Model;
using Lowbit.Report;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>`lowbit sensitivity`: KLD caused by quantizing one component at a time, as a table and a heatmap.</summary>
public static class SensitivityCommand
{
    public static Command Create()
    {
        var model = CliOptions.ModelArgument();
        var format = new Option<string>("--format", "-f")
        {
            Description = "Format(s) to quantize each component with, comma-separated (e.g. q4_K or q2_K,q3_K,q4_K,q5_K,q6_K,q8_0).",
            DefaultValueFactory = _ => "q4_K",
        };
        var chunks = new Option<int>("--chunks") { Description = "Chunks of text to measure KLD on.", DefaultValueFactory = _ => 4 };
        var text = new Option<string?>("--text") { Description = "Text file (default: bundled WikiText-2 test)." };
        var output = new Option<string?>("--output", "-o") { Description = "Save the measurements as JSON (input of `quantize --budget --sensitivity` and `report`)." };
        var top = new Option<int>("--top") { Description = "Rows in the most-sensitive table.", DefaultValueFactory = _ => 15 };
        var json = CliOptions.Json();
        var eng = new EngineCliOptions();
        eng.Context.DefaultValueFactory = _ => 128;
        var cmd = new Command("sensitivity", "Quantize one component at a time and measure the KL divergence each causes (per layer × kind heatmap).")
        {
            model, format, chunks, text, output, top, json,
        };
        eng.AddTo(cmd);
        cmd.SetAction((pr, ct) =>
        {
            var console = CliRunner.Human(pr.GetValue(json));
            string path = CliOptions.ResolveModel(pr.GetValue(model));
            var codecs = ParseFormats(pr.GetValue(format)!);
            using var m = ModelLoader.Open(path);
            var report = Run(console, m, QuantizeCommand.ModelName(path), codecs, pr.GetValue(chunks), ModelSession.ReadText(pr.GetValue(text)),
                new EngineOptions { Threads = pr.GetValue(eng.Threads), ContextLength = eng.EffectiveContext(pr, m.Config), KvCache = EngineCliOptions.ParseKv(pr.GetValue(eng.KvCache)!), InterleavedDecode = !pr.GetValue(eng.NoInterleave) }, ct);
            Print(console, report, m.Config.NumLayers, pr.GetValue(top));
            if (pr.GetValue(output) is { } o)
            {
                RunFiles.Write(o, report);
                console.WriteLine($"saved {o}");
            }
            if (pr.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(report, RunFiles.JsonOptions));
            return Task.FromResult(0);
        });
        return cmd;
    }

    public static IReadOnlyList<TensorCodec> ParseFormats(string list)
    {
        var names = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (names.Length == 0) throw new LowbitException("give at least one format");
        return names.Select(n => CodecRegistry.TryGet(n) ?? throw new LowbitException($"unknown format '{n}' (see 'lowbit formats')")).ToArray();
    }

    /// <summary>
    /// Tokenizes only as much of the text as <paramref name="needed"/> tokens take (a few chunks of a
    /// megabyte-long evaluation text), with a generous margin; the whole text when the prefix falls short.
    /// Only the cut at the end can tokenize differently, and it lies far beyond the tokens used.
    /// </summary>
    public static int[] EncodePrefix(Model.Tokenizer tok, string text, long needed)
    {
        long chars = Math.Max(4096, needed * 32);
        if (chars < text.Length)
        {
            var tokens = tok.Encode(text[..(int)chars], addBos: true);
            if (tokens.Length >= needed + 256) return tokens;
        }
        return tok.Encode(text, addBos: true);
    }

    /// <summary>Captures the base distributions and measures every component with a progress bar.</summary>
    public static SensitivityReport Run(IAnsiConsole console, LoadedModel m, string name, IReadOnlyList<TensorCodec> codecs, int chunks, string text,
        EngineOptions engineOptions, CancellationToken ct)
    {
        var tok = ModelSession.RequireTokenizer(m, null);
        var tokens = EncodePrefix(tok, text, (long)chunks * engineOptions.ContextLength);
        var baseEngine = new InferenceEngine(m, engineOptions);
        var options = new PerplexityOptions { Context = baseEngine.ContextLength, MaxChunks = chunks, BosToken = tok.BosId };
        var baseline = SensitivityBaseline.Capture(baseEngine, tokens, options, ct);
        console.WriteLine($"sensitivity: {baseline.Chunks} chunks of {baseline.Context} tokens, base PPL {baseline.BasePerplexity:F4}");
        SensitivityReport report = null!;
        console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("sensitivity", maxValue: 1);
                report = Sensitivity.Measure(m, name, baseline, codecs, engineOptions, new SyncProgress<SensitivityProgress>(p =>
                {
                    task.MaxValue = p.Total;
                    task.Value = p.Done;
                    task.Description = $"{p.Format} {p.Tensor}";
                }), ct);
                task.Description = "sensitivity measured";
            });
        return report;
    }

    public static void Print(IAnsiConsole console, SensitivityReport r, int layers, int top)
    {
        foreach (var f in r.Formats)
        {
            var rows = r.Components.Where(c => c.Format == f).ToArray();
            if (rows.Length == 0) continue;
            var table = new Table().Title(Markup.Escape($"most sensitive components in {f} (KLD when only that tensor is {f})"))
                .AddColumns("tensor", "bytes", "mean KLD", "± err", "same top %", "PPL");
            foreach (var c in rows.OrderByDescending(c => c.MeanKld).Take(top))
                table.AddTextRow(c.Tensor, Format.Bytes(c.Bytes), Format.F(c.MeanKld, "0.000000"), Format.F(c.KldError, "0.000000"),
                    Format.F(100 * c.SameTop, "0.00"), Format.F(c.Perplexity, "0.0000"));
            console.Write(table);
            PrintHeatmap(console, r, f, layers);
            console.WriteLine($"{f}: sum of single-component KLDs {rows.Sum(c => c.MeanKld):F6} over {rows.Length} components");
        }
        console.WriteLine($"base PPL {r.BasePerplexity:F4}; {r.Chunks} chunks × {r.Context} tokens; {r.Seconds:F1} s");
    }

    /// <summary>Layers × kinds, colour from green (least) to red (most) on a log scale of KLD.</summary>
    public static void PrintHeatmap(IAnsiConsole console, SensitivityReport r, string format, int layers)
    {
        var (grid, others) = Sensitivity.Heatmap(r, format, layers);
        var values = grid.Cast<double>().Concat(others.Select(o => o.MeanKld)).Where(v => double.IsFinite(v) && v > 0).ToArray();
        if (values.Length == 0) return;
        double lo = Math.Log10(values.Min()), hi = Math.Log10(values.Max());
        var table = new Table().Title(Markup.Escape($"KLD heatmap, {format} (log colour scale {values.Min():0.0e0} … {values.Max():0.0e0})"))
            .AddColumn("layer");
        foreach (var k in Sensitivity.LayerKinds) table.AddColumn(k.Replace("attn_output", "attn_o").Replace("ffn_", ""));
        for (int l = 0; l < layers; l++)
        {
            var cells = new List<Spectre.Console.Rendering.IRenderable> { new Text(l.ToString()) };
            for (int k = 0; k < Sensitivity.LayerKinds.Count; k++) cells.Add(Cell(grid[l, k], lo, hi));
            table.AddRow(cells);
        }
        console.Write(table);
        foreach (var o in others)
        {
            console.Write(new Text($"{o.Kind}: "));
            console.Write(Cell(o.MeanKld, lo, hi));
            console.WriteLine();
        }
    }

    private static Text Cell(double v, double lo, double hi)
    {
        if (!double.IsFinite(v)) return new Text("-");
        double t = v > 0 && hi > lo ? Math.Clamp((Math.Log10(v) - lo) / (hi - lo), 0, 1) : 0;
        var (red, green, blue) = HeatColor.Rgb(t);
        return new Text($"{v:0.0e0}", new Style(Color.Black, new Color(red, green, blue)));
    }
}
