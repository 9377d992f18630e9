using System.Text.RegularExpressions;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Methods;
using Lowbit.Methods.Calibration;
using Lowbit.Model;

namespace Lowbit.Recipes;

/// <summary>A transform stage with the tensors it applies to.</summary>
public sealed record RecipeTransformStep(RecipeStage Stage, IReadOnlyList<string> Tensors);

/// <summary>A recipe resolved against a model: every target tensor's codec and method, and the transform steps.</summary>
public sealed record RecipePlan(Recipe Recipe, IReadOnlyDictionary<string, TensorTarget> Targets, IReadOnlyList<RecipeTransformStep> Transforms,
    LlamaFileType FileType, bool TrueSequential)
{
    /// <summary>Every target codec is a GGUF tensor type, so the result can be written as GGUF.</summary>
    public bool AllGguf => Targets.Values.All(t => t.Codec.Ggml is not null);

    /// <summary>Whether running the plan needs calibration samples.</summary>
    public bool NeedsCalibration => Transforms.Count > 0 || Targets.Values.Any(t => t.NeedsStatistics);
}

/// <summary>Resolves a <see cref="Recipe"/> against a model's tensors, with strict checks.</summary>
public static class RecipePlanner
{
    /// <summary>The linears of the decoder blocks (the default targets of codec stages).</summary>
    public const string BlockLinears = @"blk\.\d+\.(attn_(q|k|v|output)|ffn_(gate|up|down))\.weight";

    /// <summary>
    /// A stage's format: one codec (every target gets it; "int4" + group_size/symmetric composes an int group codec),
    /// or, for names that are not codecs, a llama.cpp mixture such as Q4_K_M (per-tensor types by llama.cpp's rules).
    /// </summary>
    public static (GgufMixture? Mixture, TensorCodec? Codec) ResolveFormat(RecipeStage stage, string where)
    {
        string fmt = stage.Format ?? throw new LowbitException($"{where}: no format");
        bool composes = Regex.IsMatch(fmt, @"^int[2348]$", RegexOptions.IgnoreCase);
        if (!composes && (stage.Options.ContainsKey("group_size") || stage.Options.ContainsKey("symmetric")))
            throw new LowbitException($"{where}: group_size/symmetric compose a bare 'intN' format; '{fmt}' already fixes them");
        if (composes)
        {
            int group = stage.GetInt("group_size", 128);
            bool sym = stage.GetBool("symmetric", true);
            fmt = $"{fmt.ToLowerInvariant()}-g{group}-{(sym ? "sym" : "asym")}";
        }
        // A codec name means that one type for every target (like llama-quantize --pure); other names are mixtures (Q4_K_M).
        if (CodecRegistry.TryGet(fmt) is { } codec) return (null, codec);
        if (GgufMixture.TryGet(fmt) is { } mix && !mix.IsFloat) return (mix, null);
        throw new LowbitException($"{where}: unknown format '{stage.Format}' (a codec from 'lowbit formats' or a mixture: {string.Join(", ", GgufMixture.Names)})");
    }

    public static RecipePlan Plan(Recipe recipe, LoadedModel model)
    {
        var candidates = model.Tensors.Where(GgufMixture.IsQuantizable).Select(t => t.Name).ToList();
        var targets = new Dictionary<string, TensorTarget>(StringComparer.Ordinal);
        var claimedBy = new Dictionary<string, int>(StringComparer.Ordinal);
        var transforms = new List<RecipeTransformStep>();
        LlamaFileType? fileType = null;
        bool trueSequential = true;
        for (int si = 0; si < recipe.Stages.Count; si++)
        {
            var stage = recipe.Stages[si];
            string where = $"recipe '{recipe.Name}': stage {si + 1} ({stage.Method})";
            GgufMixture? mixture = null;
            TensorCodec? codec = null;
            if (stage.Format is not null) (mixture, codec) = ResolveFormat(stage, where);
            var patterns = stage.Targets.Count > 0 ? stage.Targets
                : mixture is not null ? [".*"] : [BlockLinears];
            var chosen = Select(candidates, patterns, stage.Ignore, where);
            if (stage.Options.ContainsKey("true_sequential")) trueSequential = stage.GetBool("true_sequential", true);
            if (Recipe.IsTransform(stage.Method)) transforms.Add(new RecipeTransformStep(stage, chosen));
            if (stage.Format is null) continue;

            MixturePlan? mixturePlan = mixture?.Plan(model.Config, model.Tensors, pure: false, hasImportance: stage.Method is "imatrix" or "gptq");
            fileType ??= mixture?.FileType;
            var method = stage.Method == "gptq" ? QuantMethod.Gptq : QuantMethod.Rtn;
            var gptq = stage.Method == "gptq"
                ? new GptqOptions
                {
                    ActOrder = stage.GetBool("act_order", false),
                    StaticGroups = stage.GetBool("static_groups", false),
                    DampPercent = stage.GetDouble("damp_percent", 0.01),
                    BlockSize = stage.GetInt("block_size", 128),
                    HessianImportance = stage.GetBool("hessian_importance", true),
                }
                : null;
            foreach (var name in chosen)
            {
                if (claimedBy.TryGetValue(name, out int other))
                    throw new LowbitException($"{where}: tensor '{name}' is already quantized by stage {other + 1}; narrow the targets or add it to ignore");
                var c = codec ?? CodecRegistry.Get(mixturePlan!.Entries.First(e => e.Tensor.Name == name).Type);
                var tensor = model.Get(name);
                if (!c.CanEncodeRow(tensor.Cols))
                    throw new LowbitException($"{where}: {c.Name} cannot encode rows of {tensor.Cols} values ('{name}'); block size is {c.BlockSize}");
                targets[name] = new TensorTarget(c, method, gptq, UseImportance: stage.Method == "imatrix");
                claimedBy[name] = si;
            }
        }
        if (targets.Count == 0) throw new LowbitException($"recipe '{recipe.Name}': no tensor is quantized");
        fileType ??= FileTypeFor(targets.Values.Select(t => t.Codec));
        return new RecipePlan(recipe, targets, transforms, fileType.Value, trueSequential);
    }

    /// <summary>Tensors matching a target pattern (full match) and no ignore pattern; every pattern must match something.</summary>
    private static List<string> Select(IReadOnlyList<string> names, IReadOnlyList<string> targets, IReadOnlyList<string> ignore, string where)
    {
        Regex Full(string p) => new($"^(?:{p})$", RegexOptions.CultureInvariant);
        var t = targets.Select(Full).ToList();
        var ig = ignore.Select(Full).ToList();
        for (int i = 0; i < t.Count; i++)
            if (!names.Any(t[i].IsMatch)) throw new LowbitException($"{where}: target pattern '{targets[i]}' matches no quantizable tensor of the model");
        for (int i = 0; i < ig.Count; i++)
            if (!names.Any(ig[i].IsMatch)) throw new LowbitException($"{where}: ignore pattern '{ignore[i]}' matches no quantizable tensor of the model");
        var chosen = names.Where(n => t.Any(r => r.IsMatch(n)) && !ig.Any(r => r.IsMatch(n))).ToList();
        if (chosen.Count == 0) throw new LowbitException($"{where}: the ignore patterns exclude every target");
        return chosen;
    }

    /// <summary>The GGUF file type of the most common target type (general.file_type is informational), F16 when none fits.</summary>
    private static LlamaFileType FileTypeFor(IEnumerable<TensorCodec> codecs)
    {
        var common = codecs.Where(c => c.Ggml is not null).GroupBy(c => c.Ggml!.Value).OrderByDescending(g => g.Count()).FirstOrDefault()?.Key;
        if (common is { } g && GgufMixture.Names.Select(GgufMixture.TryGet).FirstOrDefault(m => m!.DefaultType == g) is { } mix) return mix.FileType;
        return GgufMixture.TryGet("F16")!.FileType;
    }
}
