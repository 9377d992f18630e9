using System.Text.Json;
using System.Text.Json.Nodes;
using Lowbit.Advisor;
using Lowbit.Eval;
using Lowbit.IO;

namespace Lowbit.Report;

/// <summary>
/// The run-directory convention: every result a command saves is one JSON file
/// <c>{"lowbit": KIND, "version": 1, "data": {...}}</c> with KIND one of <see cref="SensitivityKind"/>,
/// <see cref="VariantsKind"/>, <see cref="BudgetKind"/>. `lowbit report RUN_DIR` reads every *.json
/// in the directory and renders what it finds; files of other kinds (or not Lowbit's) are ignored.
/// </summary>
public static class RunFiles
{
    public const string SensitivityKind = "sensitivity";
    public const string VariantsKind = "variants";
    public const string BudgetKind = "budget";
    private const int Version = 1;

    /// <summary>camelCase, enums as the advisor spells them (so configs and advisor records round-trip).</summary>
    public static JsonSerializerOptions JsonOptions { get; } = AdvisorJson.CreateOptions();

    public static void Write(string path, SensitivityReport report) => Write(path, SensitivityKind, report);
    public static void Write(string path, VariantsReport report) => Write(path, VariantsKind, report);
    public static void Write(string path, BudgetResult report) => Write(path, BudgetKind, report);

    private static void Write<T>(string path, string kind, T data)
    {
        var node = new JsonObject
        {
            ["lowbit"] = kind,
            ["version"] = Version,
            ["data"] = JsonSerializer.SerializeToNode(data, JsonOptions),
        };
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        using var f = AtomicFile.Create(path);
        using (var w = new Utf8JsonWriter(f.Stream, new JsonWriterOptions { Indented = true })) node.WriteTo(w, JsonOptions);
        f.Commit();
    }

    /// <summary>Everything a run directory holds, by kind, in file-name order.</summary>
    public sealed record Contents(
        IReadOnlyList<SensitivityReport> Sensitivity,
        IReadOnlyList<VariantsReport> Variants,
        IReadOnlyList<BudgetResult> Budgets,
        IReadOnlyList<string> Files);

    /// <summary>A single sensitivity file (as written by `lowbit sensitivity -o`).</summary>
    public static SensitivityReport ReadSensitivity(string path)
    {
        if (!File.Exists(path)) throw new LowbitException($"{path}: sensitivity file not found");
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new LowbitException($"{path}: not valid JSON ({e.Message})"); }
        if (node is not JsonObject o || o["lowbit"]?.GetValueKind() != JsonValueKind.String || o["lowbit"]!.GetValue<string>() != SensitivityKind || o["data"] is not JsonNode data)
            throw new LowbitException($"{path}: not a Lowbit sensitivity file (expected \"lowbit\": \"{SensitivityKind}\")");
        try { return data.Deserialize<SensitivityReport>(JsonOptions) ?? throw new LowbitException($"{path}: empty sensitivity data"); }
        catch (JsonException e) { throw new LowbitException($"{path}: not a valid Lowbit sensitivity file ({e.Message})"); }
    }

    public static Contents Read(string runDir)
    {
        if (!Directory.Exists(runDir)) throw new LowbitException($"{runDir}: run directory not found");
        var sens = new List<SensitivityReport>();
        var variants = new List<VariantsReport>();
        var budgets = new List<BudgetResult>();
        var files = new List<string>();
        foreach (var path in Directory.GetFiles(runDir, "*.json").Order(StringComparer.Ordinal))
        {
            JsonNode? node;
            try { node = JsonNode.Parse(File.ReadAllText(path)); }
            catch (JsonException e) { throw new LowbitException($"{path}: not valid JSON ({e.Message})"); }
            if (node is not JsonObject o || o["lowbit"]?.GetValueKind() != JsonValueKind.String || o["data"] is not JsonNode data) continue;
            string kind = o["lowbit"]!.GetValue<string>();
            try
            {
                switch (kind)
                {
                    case SensitivityKind: sens.Add(data.Deserialize<SensitivityReport>(JsonOptions)!); break;
                    case VariantsKind: variants.Add(data.Deserialize<VariantsReport>(JsonOptions)!); break;
                    case BudgetKind: budgets.Add(data.Deserialize<BudgetResult>(JsonOptions)!); break;
                    default: continue;
                }
            }
            catch (JsonException e) { throw new LowbitException($"{path}: not a valid Lowbit {kind} file ({e.Message})"); }
            files.Add(Path.GetFileName(path));
        }
        return new Contents(sens, variants, budgets, files);
    }
}
