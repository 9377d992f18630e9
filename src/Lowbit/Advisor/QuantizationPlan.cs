using Lowbit.Formats;

namespace Lowbit.Advisor;

/// <summary>
/// A per-tensor format choice: (tensor) → codec. Build one from a delegate (e.g. the lead's
/// exact Q4_K_M rules) or from the presets below. Memory math asks the plan for every tensor of
/// the model and sizes it with the codec's <see cref="TensorCodec.TensorBytes"/>.
/// </summary>
public sealed class QuantizationPlan
{
    private readonly Func<TensorSlot, TensorCodec> _choose;

    /// <summary>A short label for reports, e.g. "q4_K (llama.cpp convention)".</summary>
    public string Name { get; }

    public QuantizationPlan(string name, Func<TensorSlot, TensorCodec> choose)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(choose);
        Name = name;
        _choose = choose;
    }

    /// <summary>The codec for <paramref name="slot"/>; throws when the plan picks one that cannot encode its rows.</summary>
    public TensorCodec Choose(TensorSlot slot)
    {
        var codec = _choose(slot) ?? throw new LowbitException($"plan '{Name}' chose no format for {slot.Name}.");
        if (!codec.CanEncodeRow(slot.Cols))
            throw new LowbitException(
                $"plan '{Name}' puts {slot.Name} ({slot.Rows}×{slot.Cols}) in {codec.Name}, whose block size {codec.BlockSize} does not divide the row length {slot.Cols}.");
        return codec;
    }

    private static Func<string, TensorCodec?> DefaultResolver => CodecRegistry.TryGet;

    private static TensorCodec Require(Func<string, TensorCodec?> resolve, string name, string why) =>
        resolve(name) ?? throw new LowbitException($"{why} needs format '{name}', which is not available in this build.");

    /// <summary>
    /// "Pure": every matrix in <paramref name="codec"/>, vectors (norms, biases) F32; matrices whose
    /// row length the codec cannot split fall back through <paramref name="fallback"/>
    /// (default: <see cref="LlamaCppFallback"/>).
    /// </summary>
    public static QuantizationPlan Uniform(TensorCodec codec,
        Func<TensorSlot, TensorCodec, TensorCodec>? fallback = null, Func<string, TensorCodec?>? resolve = null)
    {
        ArgumentNullException.ThrowIfNull(codec);
        var r = resolve ?? DefaultResolver;
        var f32 = Require(r, "f32", "norm weights");
        var fb = fallback ?? ((s, c) => LlamaCppFallback(s, c, r));
        return new QuantizationPlan($"{codec.Name} (all matrices)", s => s.IsVector ? f32 : fb(s, codec));
    }

    /// <summary>
    /// llama-quantize's convention for a single-type target without --pure (llama-quant.cpp,
    /// llama_tensor_get_type): vectors stay F32; float targets (f32/f16/bf16) are used as is;
    /// output.weight — or token_embd.weight when the embeddings are tied — becomes Q6_K, or Q8_0
    /// when the target is Q8_0 or the row length is not a multiple of the target's block size;
    /// the untied token embedding keeps the target type; then the shape fallback applies.
    /// Mixtures such as Q4_K_M have more rules: pass them as a delegate instead.
    /// </summary>
    public static QuantizationPlan LlamaCppDefault(TensorCodec codec,
        Func<TensorSlot, TensorCodec, TensorCodec>? fallback = null, Func<string, TensorCodec?>? resolve = null)
    {
        ArgumentNullException.ThrowIfNull(codec);
        var r = resolve ?? DefaultResolver;
        var f32 = Require(r, "f32", "norm weights");
        var fb = fallback ?? ((s, c) => LlamaCppFallback(s, c, r));
        if (codec.IsFloat)
            return new QuantizationPlan($"{codec.Name} (all matrices)", s => s.IsVector ? f32 : fb(s, codec));
        bool isQ8 = string.Equals(codec.Name, "q8_0", StringComparison.OrdinalIgnoreCase);
        TensorCodec? outputCodec = null; // resolved lazily so plans for models without the role don't need q6_K
        return new QuantizationPlan($"{codec.Name} (llama.cpp convention)", s =>
        {
            if (s.IsVector) return f32;
            bool isOutput = s.Role == TensorRole.Output;
            if (isOutput || s.SharedWithOutput)
            {
                TensorCodec target = !codec.CanEncodeRow(s.Cols) || isQ8
                    ? Require(r, "q8_0", $"{codec.Name} output tensor")
                    : outputCodec ??= Require(r, "q6_K", $"{codec.Name} output tensor (llama.cpp convention)");
                return fb(s, target);
            }
            return fb(s, codec);
        });
    }

    /// <summary>
    /// Weight-only checkpoints (GPTQ/AWQ, FP8, NVFP4, NF4 as vLLM/transformers load them): the
    /// block projections in <paramref name="codec"/>, token embedding and output in
    /// <paramref name="keep"/> (default BF16), vectors F32 (GGUF's convention for norms; HF keeps
    /// them BF16, a difference of a few hundred KB).
    /// </summary>
    public static QuantizationPlan LinearOnly(TensorCodec codec, TensorCodec? keep = null,
        Func<TensorSlot, TensorCodec, TensorCodec>? fallback = null, Func<string, TensorCodec?>? resolve = null)
    {
        ArgumentNullException.ThrowIfNull(codec);
        var r = resolve ?? DefaultResolver;
        var f32 = Require(r, "f32", "norm weights");
        var kept = keep ?? Require(r, "bf16", "embeddings of a linear-only plan");
        var fb = fallback ?? ((s, c) => LlamaCppFallback(s, c, r));
        return new QuantizationPlan($"{codec.Name} (linear layers; embeddings {kept.Name})",
            s => s.IsVector ? f32 : s.IsBlockLinear ? fb(s, codec) : fb(s, kept));
    }

    /// <summary>The advisor's default plan for a known format (see <see cref="FormatInfo.Convention"/>).</summary>
    public static QuantizationPlan ForFormat(FormatInfo format, TensorCodec codec, Func<string, TensorCodec?>? resolve = null)
    {
        ArgumentNullException.ThrowIfNull(format);
        return format.Convention switch
        {
            PlanConvention.Uniform => Uniform(codec, resolve: resolve),
            PlanConvention.LlamaCpp => LlamaCppDefault(codec, resolve: resolve),
            PlanConvention.LinearOnly => LinearOnly(codec, resolve: resolve),
            _ => throw new ArgumentOutOfRangeException(nameof(format)),
        };
    }

    /// <summary>
    /// llama.cpp's shape fallback (llama-quant.cpp, tensor_type_fallback): when the row length is
    /// not a multiple of the wanted type's block size, IQ2/IQ3/IQ4_XS → IQ4_NL, Q2_K/Q3_K → Q4_0,
    /// Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and F16 when that still does not fit. Formats
    /// llama.cpp has no rule for (e.g. int4-g128, nvfp4) go to Q8_0 (Lowbit's choice), and a
    /// fallback that is not registered in this build is replaced by F16.
    /// </summary>
    public static TensorCodec LlamaCppFallback(TensorSlot slot, TensorCodec wanted, Func<string, TensorCodec?>? resolve = null)
    {
        ArgumentNullException.ThrowIfNull(slot);
        ArgumentNullException.ThrowIfNull(wanted);
        if (wanted.CanEncodeRow(slot.Cols)) return wanted;
        var r = resolve ?? DefaultResolver;
        string name = wanted.Name.ToLowerInvariant();
        string next = name switch
        {
            "iq2_xxs" or "iq2_xs" or "iq2_s" or "iq3_xxs" or "iq3_s" or "iq4_xs" or "iq1_s" or "iq1_m" => "iq4_nl",
            "q2_k" or "q3_k" or "tq1_0" or "tq2_0" => "q4_0",
            "q4_k" => "q5_0",
            "q5_k" => "q5_1",
            _ => "q8_0",
        };
        if (r(next) is { } c && c.CanEncodeRow(slot.Cols)) return c;
        return Require(r, "f16", $"fallback for {slot.Name}");
    }
}
