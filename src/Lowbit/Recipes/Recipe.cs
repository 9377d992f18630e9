using System.Globalization;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Lowbit.Recipes;

/// <summary>Calibration settings of a recipe (llm-compressor's num_calibration_samples, max_seq_length, seed, dataset).</summary>
public sealed record RecipeCalibration
{
    public int Samples { get; init; } = 128;
    /// <summary>Tokens per sample; capped at the model's context when the recipe is run.</summary>
    public int SeqLen { get; init; } = 2048;
    public int Seed { get; init; } = 42;
    /// <summary>Calibration text file (text, JSONL, Parquet); null = the caller's default.</summary>
    public string? Dataset { get; init; }
    public string TextField { get; init; } = "text";
}

/// <summary>
/// One stage of a recipe: a method applied to the tensors whose canonical names fully match one of
/// <see cref="Targets"/> (regular expressions) and none of <see cref="Ignore"/>.
/// </summary>
public sealed record RecipeStage(string Method, string? Format, IReadOnlyList<string> Targets, IReadOnlyList<string> Ignore,
    IReadOnlyDictionary<string, string> Options)
{
    public bool GetBool(string key, bool fallback) => Options.TryGetValue(key, out var v) ? ParseBool(key, v) : fallback;
    public int GetInt(string key, int fallback) => Options.TryGetValue(key, out var v) ? ParseInt(key, v) : fallback;
    public double GetDouble(string key, double fallback) => Options.TryGetValue(key, out var v) ? ParseDouble(key, v) : fallback;

    internal bool ParseBool(string key, string v) => v.ToLowerInvariant() switch
    {
        "true" or "yes" or "on" => true,
        "false" or "no" or "off" => false,
        _ => throw new LowbitException($"stage '{Method}': option {key} must be true or false, got '{v}'"),
    };

    internal int ParseInt(string key, string v) => int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) && i > 0
        ? i : throw new LowbitException($"stage '{Method}': option {key} must be a positive integer, got '{v}'");

    internal double ParseDouble(string key, string v) => double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && double.IsFinite(d)
        ? d : throw new LowbitException($"stage '{Method}': option {key} must be a number, got '{v}'");
}

/// <summary>
/// A declarative quantization recipe (YAML or JSON): calibration settings and an ordered list of stages.
/// <code>
/// name: gptq-w4g128
/// calibration: { samples: 128, seq_len: 2048, seed: 42 }
/// stages:
///   - method: gptq            # rtn | gptq | imatrix | awq | smoothquant
///     format: int4-g128-sym   # a codec (lowbit formats) or a llama.cpp mixture (Q4_K_M); "int4" + group_size/symmetric composes one
///     targets: ['blk\..*\.(attn|ffn)_.*\.weight']
///     ignore: []
///     options: { act_order: true, damp_percent: 0.01, block_size: 128 }
/// </code>
/// Transform stages (awq, smoothquant) rewrite the float model before quantization; quantizing stages
/// (rtn, gptq, imatrix, and awq/smoothquant when they name a format) choose each target tensor's codec and
/// method — a tensor may be claimed by one quantizing stage only.
/// </summary>
public sealed record Recipe(string Name, RecipeCalibration Calibration, IReadOnlyList<RecipeStage> Stages)
{
    public static readonly IReadOnlyList<string> Methods = ["rtn", "gptq", "imatrix", "awq", "smoothquant"];

    private static readonly string[] GroupOptions = ["group_size", "symmetric"];

    /// <summary>The options each method accepts.</summary>
    public static IReadOnlyList<string> OptionsOf(string method) => method switch
    {
        "rtn" or "imatrix" => GroupOptions,
        "gptq" => [.. GroupOptions, "act_order", "damp_percent", "block_size", "static_groups", "true_sequential", "hessian_importance"],
        "awq" => [.. GroupOptions, "n_grid", "clip", "duo_scaling"],
        "smoothquant" => ["alpha", "smooth_down", "smooth_attn_output"],
        _ => [],
    };

    /// <summary>Whether a stage rewrites the float model (AWQ/SmoothQuant scale migration) before quantization.</summary>
    public static bool IsTransform(string method) => method is "awq" or "smoothquant";

    /// <summary>A preset by name, or a recipe file (.yaml, .yml, .json).</summary>
    public static Recipe Load(string nameOrPath)
    {
        if (RecipePresets.TryGet(nameOrPath) is { } preset) return preset;
        if (!File.Exists(nameOrPath))
            throw new LowbitException($"'{nameOrPath}' is neither a recipe preset ({string.Join(", ", RecipePresets.Names)}) nor a recipe file");
        return Parse(File.ReadAllText(nameOrPath), nameOrPath);
    }

    /// <summary>Parses and validates a recipe (YAML; JSON is accepted as YAML's subset).</summary>
    public static Recipe Parse(string text, string source)
    {
        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            throw new LowbitException($"{source}: invalid YAML/JSON at line {e.Start.Line}: {e.Message}");
        }
        if (stream.Documents.Count != 1 || stream.Documents[0].RootNode is not YamlMappingNode root)
            throw new LowbitException($"{source}: a recipe is one mapping with 'stages' (and optionally 'name', 'calibration')");

        string name = Path.GetFileNameWithoutExtension(source);
        var calibration = new RecipeCalibration();
        List<RecipeStage>? stages = null;
        foreach (var (k, v) in root.Children)
        {
            string key = Scalar(k, source, "key");
            switch (key)
            {
                case "name": name = Scalar(v, source, "name"); break;
                case "calibration": calibration = ParseCalibration(v, source); break;
                case "stages":
                    if (v is not YamlSequenceNode seq) throw new LowbitException($"{source}: 'stages' must be a list");
                    stages = seq.Children.Select((s, i) => ParseStage(s, source, i)).ToList();
                    break;
                default: throw new LowbitException($"{source}: unknown key '{key}' (expected name, calibration, stages)");
            }
        }
        if (stages is null || stages.Count == 0) throw new LowbitException($"{source}: the recipe has no stages");
        if (!stages.Any(s => s.Format is not null)) throw new LowbitException($"{source}: no stage names a format, so nothing would be quantized");
        var seqValues = stages.Where(s => s.Options.ContainsKey("true_sequential")).Select(s => s.GetBool("true_sequential", true)).Distinct().ToList();
        if (seqValues.Count > 1) throw new LowbitException($"{source}: stages disagree on true_sequential");
        return new Recipe(name, calibration, stages);
    }

    private static RecipeCalibration ParseCalibration(YamlNode node, string source)
    {
        if (node is not YamlMappingNode map) throw new LowbitException($"{source}: 'calibration' must be a mapping");
        var c = new RecipeCalibration();
        foreach (var (k, v) in map.Children)
        {
            string key = Scalar(k, source, "key"), value = Scalar(v, source, key);
            int Positive() => int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) && i > 0
                ? i : throw new LowbitException($"{source}: calibration.{key} must be a positive integer, got '{value}'");
            c = key switch
            {
                "samples" => c with { Samples = Positive() },
                "seq_len" => c with { SeqLen = Positive() < 2 ? throw new LowbitException($"{source}: calibration.seq_len must be at least 2") : Positive() },
                "seed" => c with { Seed = int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int s) ? s : throw new LowbitException($"{source}: calibration.seed must be an integer, got '{value}'") },
                "dataset" => c with { Dataset = value },
                "text_field" => c with { TextField = value },
                _ => throw new LowbitException($"{source}: unknown calibration setting '{key}' (expected samples, seq_len, seed, dataset, text_field)"),
            };
        }
        return c;
    }

    private static RecipeStage ParseStage(YamlNode node, string source, int index)
    {
        string where = $"{source}: stage {index + 1}";
        if (node is not YamlMappingNode map) throw new LowbitException($"{where}: must be a mapping with 'method'");
        string? method = null, format = null;
        List<string> targets = [], ignore = [];
        var options = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in map.Children)
        {
            string key = Scalar(k, where, "key");
            switch (key)
            {
                case "method": method = Scalar(v, where, key).ToLowerInvariant(); break;
                case "format": format = Scalar(v, where, key); break;
                case "targets": targets = Patterns(v, where, key); break;
                case "ignore": ignore = Patterns(v, where, key); break;
                case "options":
                    if (v is not YamlMappingNode om) throw new LowbitException($"{where}: 'options' must be a mapping");
                    foreach (var (ok, ov) in om.Children) options[Scalar(ok, where, "option")] = Scalar(ov, where, "option value");
                    break;
                default: throw new LowbitException($"{where}: unknown key '{key}' (expected method, format, targets, ignore, options)");
            }
        }
        if (method is null) throw new LowbitException($"{where}: 'method' is required ({string.Join(", ", Methods)})");
        if (!Methods.Contains(method)) throw new LowbitException($"{where}: unknown method '{method}' (expected {string.Join(", ", Methods)})");
        where = $"{source}: stage {index + 1} ({method})";
        var allowed = OptionsOf(method);
        foreach (var key in options.Keys)
            if (!allowed.Contains(key))
                throw new LowbitException($"{where}: unknown option '{key}' (allowed: {string.Join(", ", allowed)})");
        if (format is null && !IsTransform(method)) throw new LowbitException($"{where}: 'format' is required");
        var stage = new RecipeStage(method, format, targets, ignore, options);
        // Typed checks up front, so a bad value fails before any work.
        foreach (var (key, value) in options)
        {
            switch (key)
            {
                case "act_order" or "static_groups" or "true_sequential" or "hessian_importance" or "symmetric" or "clip" or "duo_scaling"
                    or "smooth_down" or "smooth_attn_output":
                    stage.ParseBool(key, value); break;
                case "group_size" or "block_size" or "n_grid":
                    stage.ParseInt(key, value); break;
                case "damp_percent":
                    if (stage.ParseDouble(key, value) is <= 0 or >= 1) throw new LowbitException($"{where}: damp_percent must be in (0, 1), got {value}");
                    break;
                case "alpha":
                    if (stage.ParseDouble(key, value) is < 0 or > 1) throw new LowbitException($"{where}: alpha must be in [0, 1], got {value}");
                    break;
            }
        }
        if (format is not null) RecipePlanner.ResolveFormat(stage, where); // unknown formats fail here
        return stage;
    }

    private static List<string> Patterns(YamlNode node, string where, string key)
    {
        var list = node switch
        {
            YamlSequenceNode s => s.Children.Select(c => Scalar(c, where, key)).ToList(),
            YamlScalarNode => [Scalar(node, where, key)],
            _ => throw new LowbitException($"{where}: '{key}' must be a list of name patterns"),
        };
        foreach (var p in list)
        {
            try
            {
                _ = new Regex(p);
            }
            catch (ArgumentException e)
            {
                throw new LowbitException($"{where}: {key} pattern '{p}' is not a valid regular expression: {e.Message}");
            }
        }
        return list;
    }

    private static string Scalar(YamlNode node, string where, string what) =>
        node is YamlScalarNode { Value: { } v } ? v : throw new LowbitException($"{where}: {what} must be a single value");
}
