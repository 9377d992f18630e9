using System.CommandLine;
using System.Text.Json;
using Lowbit.Engine;
using Lowbit.Eval;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Model;
using Lowbit.Pipeline;
using Lowbit.Recipes;
using Lowbit.Report;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>
/// `lowbit quantize --budget SIZE|BPW|MIXTURE`: per-tensor formats chosen from measured
/// sensitivities under a size budget, verified by measuring the real KLD of the mix and compared
/// with llama.cpp's fixed mixtures on the same chunks; then the GGUF is written (unless --dry-run).
/// </summary>
public sealed class QuantizeBudget
{
    private readonly Option<string?> _budget = new("--budget") { Description = "Size budget for budgeted mixed precision: e.g. 4.5bpw, 4MiB, 3.5MB, bytes, or a mixture name (Q4_K_M = its exact size)." };
    private readonly Option<string?> _sensitivity = new("--sensitivity") { Description = "With --budget: saved `lowbit sensitivity -o` measurements (default: measure the candidates now)." };
    private readonly Option<string> _candidates = new("--candidates") { Description = "With --budget: candidate formats.", DefaultValueFactory = _ => string.Join(",", BudgetPlanner.DefaultFormats) };
    private readonly Option<string> _compare = new("--compare") { Description = "With --budget: fixed mixtures to measure for comparison (empty: none).", DefaultValueFactory = _ => "Q2_K,Q3_K_S,Q3_K_M,Q3_K_L,Q4_K_S,Q4_K_M,Q5_K_S,Q5_K_M,Q6_K" };
    private readonly Option<int> _chunks = new("--budget-chunks") { Description = "With --budget: chunks of text for sensitivity and verification.", DefaultValueFactory = _ => 4 };
    private readonly Option<int> _ctx = new("--budget-ctx") { Description = "With --budget: tokens per chunk.", DefaultValueFactory = _ => 128 };
    private readonly Option<string?> _save = new("--save") { Description = "With --budget: save the result (plan, predicted vs measured, mixtures) as a run-directory JSON file." };
    private readonly Option<bool> _dryRun = new("--dry-run") { Description = "With --budget: plan and verify in memory, write no GGUF." };

    public void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { _budget, _sensitivity, _candidates, _compare, _chunks, _ctx, _save, _dryRun }) cmd.Options.Add(o);
    }

    public bool IsSet(ParseResult pr) => !string.IsNullOrWhiteSpace(pr.GetValue(_budget));

    public int Run(ParseResult pr, string path, string? output, int threads, bool json, CancellationToken ct)
    {
        var console = CliRunner.Human(json);
        using var m = ModelLoader.Open(path);
        string name = QuantizeCommand.ModelName(path);
        var budget = BudgetPlanner.ParseBudget(pr.GetValue(_budget)!, m);
        var candidates = SensitivityCommand.ParseFormats(pr.GetValue(_candidates)!).Select(c => c.Name).ToArray();
        var compare = pr.GetValue(_compare)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var c in compare)
            if (GgufMixture.TryGet(c) is null) throw new LowbitException($"unknown mixture '{c}' in --compare; known: {string.Join(", ", GgufMixture.Names)}");

        var tok = ModelSession.RequireTokenizer(m, null);
        var tokens = tok.Encode(ModelSession.ReadText(null), addBos: true);
        SensitivityReport? sens = pr.GetValue(_sensitivity) is { } sp ? RunFiles.ReadSensitivity(sp) : null;
        int ctx = Math.Min(sens?.Context ?? pr.GetValue(_ctx), m.Config.MaxPositions);
        int chunks = sens?.Chunks ?? pr.GetValue(_chunks);
        var engineOptions = new EngineOptions { Threads = threads, ContextLength = ctx };
        var baseline = SensitivityBaseline.Capture(new InferenceEngine(m, engineOptions), tokens,
            new PerplexityOptions { Context = ctx, MaxChunks = chunks, BosToken = tok.BosId }, ct);
        if (sens is null)
        {
            console.WriteLine($"measuring sensitivities for {string.Join(", ", candidates)} (save them with `lowbit sensitivity -o` to reuse) ..");
            sens = SensitivityCommand.Run(console, m, name, candidates.Select(CodecRegistry.Get).ToArray(), chunks, ModelSession.ReadText(null), engineOptions, ct);
        }
        console.WriteLine($"planning for {budget.Spec} = {budget.Bytes:N0} bytes ({8.0 * budget.Bytes / m.Tensors.Sum(t => t.ElementCount):0.000} bpw), verifying on {baseline.Chunks} chunks of {baseline.Context} ..");
        var result = BudgetVerification.Run(m, name, sens, baseline, candidates, budget, compare, engineOptions, ct);
        Print(console, result);
        if (pr.GetValue(_save) is { } save)
        {
            RunFiles.Write(save, result);
            console.WriteLine($"saved {save}");
        }
        ExportReport? report = null;
        if (!pr.GetValue(_dryRun))
        {
            if (m.Tokenizer is null) throw new LowbitException($"{path}: the model has no tokenizer, which a GGUF file for llama.cpp needs");
            var plan = BudgetPlanner.Plan(m, sens, candidates, budget);
            var (entries, fileType) = Entries(m, plan);
            string outPath = output ?? QuantizeCommand.DefaultOutput(name, "budget-" + budget.Spec.Replace('.', '_'));
            report = GgufExporter.Write(m, GgufModelMetadata.Build(m.Config, m.Tokenizer, name, fileType), entries, outPath, threads, cancel: ct);
            QuantizeCommand.PrintReport(console, path, "budget " + budget.Spec, report);
        }
        if (json) Console.WriteLine(JsonSerializer.Serialize(new { model = path, budget = result, report }, JsonOutput.Options));
        return 0;
    }

    /// <summary>GGUF entries in llama.cpp order: the planned types for components, F32 for vectors; file type of the dominant format.</summary>
    public static (IReadOnlyList<MixtureEntry> Entries, LlamaFileType FileType) Entries(LoadedModel m, BudgetPlan plan)
    {
        var all = plan.All();
        var basePlan = GgufMixture.TryGet("Q8_0")!.Plan(m.Config, m.Tensors, pure: true);
        var entries = basePlan.Entries.Select(e => all.TryGetValue(e.Tensor.Name, out var c) && c.Ggml is { } g
            ? e with { Type = g, FallbackNote = null }
            : e).ToArray();
        var dominant = plan.Codecs.Values.GroupBy(c => c.Name).OrderByDescending(g => g.Count()).First().First();
        var fileType = GgufMixture.Names.Select(GgufMixture.TryGet).FirstOrDefault(x => x!.DefaultType == dominant.Ggml)?.FileType
            ?? LlamaFileType.MostlyQ8_0;
        return (entries, fileType);
    }

    public static void Print(IAnsiConsole console, BudgetResult r)
    {
        var byFormat = new Table().Title(Markup.Escape($"budgeted mix for {r.Budget} ({Format.Bytes(r.BudgetBytes)})")).AddColumns("format", "components", "tensors");
        foreach (var g in r.Choice.GroupBy(kv => kv.Value).OrderBy(g => g.Key))
            byFormat.AddTextRow(g.Key, g.Count().ToString(), string.Join(" ", g.Select(kv => kv.Key.Replace(".weight", "")).Take(12)) + (g.Count() > 12 ? " …" : ""));
        console.Write(byFormat);
        var t = new Table().Title(Markup.Escape($"predicted vs measured KLD ({r.Chunks} chunks × {r.Context}, base PPL {r.BasePerplexity:F4})"))
            .AddColumns("variant", "bytes", "bpw", "pred. KLD", "KLD", "±", "top1 %", "PPL");
        foreach (var x in new[] { r.Planned }.Concat(r.Mixtures.OrderBy(x => x.Bytes)))
            t.AddTextRow(x.Name, x.Bytes.ToString("N0"), Format.F(x.BitsPerWeight, "0.000"), x.PredictedKld is { } p ? Format.F(p, "0.00000") : "-",
                Format.F(x.MeasuredKld, "0.00000"), Format.F(x.KldError, "0.00000"), Format.F(100 * x.SameTop, "0.0"), Format.F(x.Perplexity, "0.00"));
        console.Write(t);
        // The mixture the budget names, else the largest mixture within the budget.
        var same = r.Mixtures.FirstOrDefault(x => string.Equals(x.Name, r.Budget, StringComparison.OrdinalIgnoreCase))
            ?? r.Mixtures.Where(x => x.Bytes <= r.BudgetBytes).OrderByDescending(x => x.Bytes).FirstOrDefault();
        if (same is not null)
            console.WriteLine($"same budget: {same.Name} ({same.Bytes:N0} B) KLD {same.MeasuredKld:F6}; budgeted mix ({r.Planned.Bytes:N0} B) KLD {r.Planned.MeasuredKld:F6}" +
                $" (predicted {r.Planned.PredictedKld:F6}); ratio {same.MeasuredKld / Math.Max(1e-12, r.Planned.MeasuredKld):0.00}×");
    }
}
