using System.Globalization;
using Lowbit.Formats;
using Lowbit.Methods;
using Lowbit.Model;
using Lowbit.Recipes;

namespace Lowbit.Eval;

/// <summary>A size budget: total bytes of all tensors (quantized and not) of the output model.</summary>
public readonly record struct SizeBudget(long Bytes, string Spec);

/// <summary>The planner's choice: one codec per component, with the predicted (summed) KLD.</summary>
public sealed record BudgetPlan
{
    public required SizeBudget Budget { get; init; }
    /// <summary>Codec per tensor for every tensor the planner decided (components); other tensors keep the fixed type in <see cref="FixedTensors"/>.</summary>
    public required IReadOnlyDictionary<string, TensorCodec> Codecs { get; init; }
    /// <summary>Tensors that are not components (norms, biases) and their codec (F32 like GGUF, or kept).</summary>
    public required IReadOnlyDictionary<string, TensorCodec> FixedTensors { get; init; }
    /// <summary>Total bytes of all tensors under the plan.</summary>
    public required long TotalBytes { get; init; }
    public required long Parameters { get; init; }
    /// <summary>Sum of the measured single-component KLDs of the chosen formats (the additive model's prediction).</summary>
    public required double PredictedKld { get; init; }
    public double BitsPerWeight => 8.0 * TotalBytes / Math.Max(1, Parameters);

    /// <summary>Every tensor → codec (components and fixed), e.g. for <see cref="Pipeline.ModelTransforms.Quantize"/>.</summary>
    public IReadOnlyDictionary<string, TensorCodec> All()
    {
        var d = new Dictionary<string, TensorCodec>(FixedTensors);
        foreach (var (k, v) in Codecs) d[k] = v;
        return d;
    }

    /// <summary>Tensor count and bytes per chosen format.</summary>
    public IReadOnlyList<(string Format, int Tensors, long Bytes)> Summary(LoadedModel model) => All()
        .GroupBy(kv => kv.Value.Name)
        .Select(g => (g.Key, g.Count(), g.Sum(kv => kv.Value.TensorBytes(model.Get(kv.Key).Rows, model.Get(kv.Key).Cols))))
        .OrderByDescending(x => x.Item3).ToArray();
}

/// <summary>
/// Budgeted mixed precision: chooses a format per component to minimise the sum of measured
/// single-component KLDs (<see cref="Sensitivity"/>; additivity is the first-order assumption,
/// checked afterwards by measuring the real mix) under a total size, with exact sizes from the
/// codecs and <see cref="MixedPrecisionAllocator"/> solving the knapsack. Non-component tensors
/// (norms, biases) are stored as GGUF stores them (F32 for 1-D tensors) and count against the budget.
/// </summary>
public static class BudgetPlanner
{
    /// <summary>The default candidates: GGUF k-quants q2_K..q6_K and q8_0.</summary>
    public static IReadOnlyList<string> DefaultFormats { get; } = ["q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_0"];

    /// <summary>
    /// Parses "4.5bpw", "4MiB", "3.5MB", "1.2GiB", "123456" (bytes) or a GGUF mixture name
    /// ("Q4_K_M": the exact size that mixture gives this model).
    /// </summary>
    public static SizeBudget ParseBudget(string spec, LoadedModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        string s = (spec ?? "").Trim();
        if (s.Length == 0) throw new LowbitException("empty size budget; use e.g. 4.5bpw, 4MiB or Q4_K_M");
        if (GgufMixture.TryGet(s) is { } mix) return new SizeBudget(MixtureBytes(model, mix), s);
        string lower = s.ToLowerInvariant();
        (string suffix, double scale)[] units =
        [
            ("bpw", double.NaN), ("gib", 1L << 30), ("mib", 1L << 20), ("kib", 1L << 10),
            ("gb", 1e9), ("mb", 1e6), ("kb", 1e3), ("b", 1),
        ];
        foreach (var (suffix, scale) in units)
        {
            if (!lower.EndsWith(suffix, StringComparison.Ordinal)) continue;
            string num = lower[..^suffix.Length].Trim();
            if (!double.TryParse(num, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !(v > 0) || double.IsInfinity(v))
                throw new LowbitException($"size budget '{spec}': '{num}' is not a positive number");
            long parameters = model.Tensors.Sum(t => t.ElementCount);
            double bytes = double.IsNaN(scale) ? v * parameters / 8.0 : v * scale;
            return new SizeBudget((long)Math.Floor(bytes), s);
        }
        if (long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out long raw) && raw > 0) return new SizeBudget(raw, s);
        throw new LowbitException($"size budget '{spec}' not understood; use e.g. 4.5bpw, 4MiB, 3.5MB, 1234567 (bytes) or a mixture name like Q4_K_M");
    }

    /// <summary>Total tensor bytes of <paramref name="model"/> under a llama.cpp mixture (all tensors).</summary>
    public static long MixtureBytes(LoadedModel model, GgufMixture mixture) =>
        mixture.Plan(model.Config, model.Tensors, pure: false).Entries
            .Sum(e => CodecRegistry.Get(e.Type).TensorBytes(e.Tensor.Rows, e.Tensor.Cols));

    /// <summary>Codec per tensor of a llama.cpp mixture (for in-memory evaluation).</summary>
    public static IReadOnlyDictionary<string, TensorCodec> MixtureCodecs(LoadedModel model, GgufMixture mixture) =>
        GgufMixture.CodecPlan(model, mixture.Name);

    /// <summary>Chooses the formats. Every component needs a measurement in at least one candidate format.</summary>
    public static BudgetPlan Plan(LoadedModel model, SensitivityReport sensitivity, IReadOnlyList<string> candidates, SizeBudget budget)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sensitivity);
        ArgumentNullException.ThrowIfNull(candidates);
        var codecs = candidates.Select(c => CodecRegistry.TryGet(c) ?? throw new LowbitException($"unknown candidate format '{c}' (see 'lowbit formats')")).ToArray();
        // Components no candidate can split into blocks keep their type (as `quantize --format` does).
        var components = Sensitivity.Components(model).Where(t => codecs.Any(c => c.CanEncodeRow(t.Cols))).ToArray();
        var componentNames = components.Select(t => t.Name).ToHashSet();
        var f32 = CodecRegistry.Get("f32");
        var fixedTensors = new Dictionary<string, TensorCodec>();
        long fixedBytes = 0;
        foreach (var t in model.Tensors.Where(t => !componentNames.Contains(t.Name)))
        {
            var codec = t.Shape.Length < 2 ? f32 : t.Codec;
            if (!codec.CanEncodeRow(t.Cols)) codec = t.Codec;
            fixedTensors[t.Name] = codec;
            fixedBytes += codec.TensorBytes(t.Rows, t.Cols);
        }

        var choices = new List<TensorChoice>(components.Length);
        var byName = codecs.ToDictionary(c => c.Name, StringComparer.OrdinalIgnoreCase);
        foreach (var t in components)
        {
            var options = new List<FormatOption>();
            foreach (var codec in codecs)
            {
                if (!codec.CanEncodeRow(t.Cols)) continue;
                var m = sensitivity.Find(t.Name, codec.Name);
                if (m is null) continue;
                // KLD estimates can come out a hair below zero only through float rounding; costs must not reward size.
                options.Add(new FormatOption(codec.Name, codec.TensorBytes(t.Rows, t.Cols), Math.Max(0, m.MeanKld)));
            }
            if (options.Count == 0)
                throw new LowbitException($"no sensitivity measurement for {t.Name} in any candidate format ({string.Join(", ", candidates)}); run sensitivity with these formats");
            choices.Add(new TensorChoice(t.Name, options));
        }
        long componentBudget = budget.Bytes - fixedBytes;
        if (componentBudget <= 0)
            throw new LowbitException($"size budget {budget.Spec} ({budget.Bytes:N0} bytes) does not even hold the unquantized tensors ({fixedBytes:N0} bytes)");
        var allocation = MixedPrecisionAllocator.Allocate(choices, componentBudget);
        return new BudgetPlan
        {
            Budget = budget,
            Codecs = allocation.Choice.ToDictionary(kv => kv.Key, kv => byName[kv.Value.Format]),
            FixedTensors = fixedTensors,
            TotalBytes = fixedBytes + allocation.TotalBytes,
            Parameters = model.Tensors.Sum(t => t.ElementCount),
            PredictedKld = allocation.TotalCost,
        };
    }

    /// <summary>
    /// The predicted KLD of an arbitrary per-tensor plan under the additive model (sum of the
    /// measured KLDs of the components not left at their source format), or null when a component's
    /// format was not measured.
    /// </summary>
    public static double? Predict(LoadedModel model, SensitivityReport sensitivity, IReadOnlyDictionary<string, TensorCodec> plan)
    {
        double sum = 0;
        foreach (var t in Sensitivity.Components(model))
        {
            if (!plan.TryGetValue(t.Name, out var codec) || ReferenceEquals(codec, t.Codec)) continue;
            var m = sensitivity.Find(t.Name, codec.Name);
            if (m is null) return null;
            sum += Math.Max(0, m.MeanKld);
        }
        return sum;
    }
}
