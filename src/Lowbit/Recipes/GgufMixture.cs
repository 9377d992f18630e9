using System.Globalization;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Model;

namespace Lowbit.Recipes;

/// <summary>
/// llama-quantize's per-tensor type choices for a target file type ("mixture"), e.g. Q4_K_M gives
/// attn_v and ffn_down of some layers Q6_K and the output Q6_K. Reproduces llama.cpp's
/// llama_tensor_get_type (src/llama-quant.cpp) for dense Llama-family models: the same rules,
/// including the fallback for rows whose length is not a multiple of the block size.
/// </summary>
public sealed class GgufMixture
{
    private GgufMixture(string name, LlamaFileType fileType, GgmlType defaultType)
    {
        Name = name;
        FileType = fileType;
        DefaultType = defaultType;
    }

    public string Name { get; }
    public LlamaFileType FileType { get; }
    /// <summary>The type most tensors get (llama_ftype_get_default_type).</summary>
    public GgmlType DefaultType { get; }
    /// <summary>Float conversions (F32/F16/BF16) keep no per-tensor rules.</summary>
    public bool IsFloat => DefaultType is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16;

    private static readonly (string Name, LlamaFileType Ftype, GgmlType Default)[] Table =
    [
        ("F32", LlamaFileType.AllF32, GgmlType.F32),
        ("F16", LlamaFileType.MostlyF16, GgmlType.F16),
        ("BF16", LlamaFileType.MostlyBF16, GgmlType.BF16),
        ("Q8_0", LlamaFileType.MostlyQ8_0, GgmlType.Q8_0),
        ("Q4_0", LlamaFileType.MostlyQ4_0, GgmlType.Q4_0),
        ("Q4_1", LlamaFileType.MostlyQ4_1, GgmlType.Q4_1),
        ("Q5_0", LlamaFileType.MostlyQ5_0, GgmlType.Q5_0),
        ("Q5_1", LlamaFileType.MostlyQ5_1, GgmlType.Q5_1),
        ("Q2_K", LlamaFileType.MostlyQ2_K, GgmlType.Q2_K),
        ("Q3_K_S", LlamaFileType.MostlyQ3_K_S, GgmlType.Q3_K),
        ("Q3_K_M", LlamaFileType.MostlyQ3_K_M, GgmlType.Q3_K),
        ("Q3_K_L", LlamaFileType.MostlyQ3_K_L, GgmlType.Q3_K),
        ("Q4_K_S", LlamaFileType.MostlyQ4_K_S, GgmlType.Q4_K),
        ("Q4_K_M", LlamaFileType.MostlyQ4_K_M, GgmlType.Q4_K),
        ("Q5_K_S", LlamaFileType.MostlyQ5_K_S, GgmlType.Q5_K),
        ("Q5_K_M", LlamaFileType.MostlyQ5_K_M, GgmlType.Q5_K),
        ("Q6_K", LlamaFileType.MostlyQ6_K, GgmlType.Q6_K),
        ("IQ4_NL", LlamaFileType.MostlyIQ4_NL, GgmlType.IQ4_NL),
        ("IQ4_XS", LlamaFileType.MostlyIQ4_XS, GgmlType.IQ4_XS),
        ("MXFP4", LlamaFileType.MostlyMXFP4_MoE, GgmlType.MXFP4),
        ("NVFP4", LlamaFileType.MostlyNVFP4, GgmlType.NVFP4),
    ];

    /// <summary>Names accepted by <see cref="TryGet"/> (llama-quantize spellings, case-insensitive).</summary>
    public static IReadOnlyList<string> Names { get; } = Table.Select(t => t.Name).ToArray();

    public static GgufMixture? TryGet(string name)
    {
        foreach (var t in Table)
            if (string.Equals(t.Name, name, StringComparison.OrdinalIgnoreCase))
                return new GgufMixture(t.Name, t.Ftype, t.Default);
        // A bare k-quant type name ("q4_K") is accepted as its plain mixture-free file type.
        if (string.Equals(name, "Q3_K", StringComparison.OrdinalIgnoreCase)) return TryGet("Q3_K_M");
        if (string.Equals(name, "Q4_K", StringComparison.OrdinalIgnoreCase)) return TryGet("Q4_K_M");
        if (string.Equals(name, "Q5_K", StringComparison.OrdinalIgnoreCase)) return TryGet("Q5_K_M");
        return null;
    }

    /// <summary>
    /// llama.cpp quantizes only 2-D tensors whose name ends in "weight" and that are not norms;
    /// everything else keeps its float type (1-D tensors are stored as F32, as convert_hf_to_gguf does).
    /// </summary>
    public static bool IsQuantizable(ModelTensor t) =>
        t.Shape.Length >= 2 && t.Name.EndsWith("weight", StringComparison.Ordinal) && !t.Name.Contains("_norm.weight", StringComparison.Ordinal);

    /// <summary>
    /// The type of every tensor of <paramref name="model"/>. With <paramref name="pure"/>, every
    /// quantizable tensor gets the default type (llama-quantize --pure); the block-size fallback still applies.
    /// <paramref name="hasImportance"/> mirrors llama.cpp's has_imatrix, which changes a few ffn_down choices.
    /// Returns the plan plus the fallbacks that were needed, in llama.cpp's tensor order.
    /// </summary>
    public MixturePlan Plan(ModelConfig config, IReadOnlyList<ModelTensor> tensors, bool pure, bool hasImportance = false)
    {
        var ordered = tensors.OrderBy(t => t, Comparer<ModelTensor>.Create(CompareLikeLlamaCpp)).ToList();
        bool tied = !tensors.Any(t => t.Name == TensorNames.Output);
        int nAttnV = tensors.Count(t => t.Name.Contains("attn_v.weight", StringComparison.Ordinal));
        int nLayers = config.NumLayers;
        int gqa = config.NumHeads / Math.Max(1, config.NumKvHeads);
        int iAttnV = 0, iFfnDown = 0;
        var entries = new List<MixtureEntry>();
        foreach (var t in ordered)
        {
            if (!IsQuantizable(t))
            {
                // 1-D tensors (norms, biases) are F32 in GGUF; other non-quantizable tensors keep a float type.
                var keep = t.Shape.Length < 2 ? GgmlType.F32 : FloatOr(t.Codec, DefaultType);
                entries.Add(new MixtureEntry(t, keep, null));
                continue;
            }
            if (IsFloat)
            {
                entries.Add(new MixtureEntry(t, DefaultType, null));
                continue;
            }
            GgmlType type = DefaultType;
            string name = t.Name;
            bool isOutput = name == TensorNames.Output;
            bool isTokenEmbd = name == TensorNames.TokenEmbedding;
            if (!pure)
            {
                if (isOutput || (tied && isTokenEmbd))
                {
                    long nx = t.Cols;
                    type = nx % BlockSizeOf(type) != 0 ? GgmlType.Q8_0 : type != GgmlType.Q8_0 ? GgmlType.Q6_K : type;
                }
                else if (isTokenEmbd)
                {
                    // token_embd keeps the default type for every mixture Lowbit offers (IQ1/IQ2/IQ3 rules don't apply).
                }
                else if (name.Contains("attn_v.weight", StringComparison.Ordinal))
                {
                    type = AttnVType(type, iAttnV, nAttnV, gqa);
                    // llama.cpp's 70B rule: 8 heads share attn_v, so more bits there cost little.
                    if (nLayers == 80 && config.Architecture == "llama" && type is GgmlType.Q3_K or GgmlType.Q4_K)
                        type = GgmlType.Q5_K;
                    iAttnV++;
                }
                else if (name.Contains("ffn_down", StringComparison.Ordinal))
                {
                    int layer = LayerOf(name) is >= 0 and var l ? l : iFfnDown;
                    type = FfnDownType(type, layer, nLayers, hasImportance);
                    iFfnDown++;
                }
                else if (name.Contains("attn_output.weight", StringComparison.Ordinal))
                {
                    type = FileType switch
                    {
                        LlamaFileType.MostlyQ2_K => GgmlType.Q3_K,
                        LlamaFileType.MostlyQ3_K_M => GgmlType.Q4_K,
                        LlamaFileType.MostlyQ3_K_L => GgmlType.Q5_K,
                        _ => type,
                    };
                }
            }
            var (final, fallback) = Fallback(type, t.Cols);
            entries.Add(new MixtureEntry(t, final, fallback ? $"{name}: row length {t.Cols} is not a multiple of {BlockSizeOf(type)} (required by {type}); falling back to {final}" : null));
        }
        return new MixturePlan(this, entries);
    }

    /// <summary>
    /// Tensor → codec for a format name: a GGUF mixture (llama.cpp's per-tensor rules, every tensor listed) or a
    /// codec applied to every quantizable tensor whose rows it can split (other tensors are absent and keep their type).
    /// </summary>
    public static IReadOnlyDictionary<string, TensorCodec> CodecPlan(LoadedModel model, string format, bool hasImportance = false)
    {
        if (TryGet(format) is { } mix)
            return mix.Plan(model.Config, model.Tensors, pure: false, hasImportance).Entries.ToDictionary(e => e.Tensor.Name, e => CodecRegistry.Get(e.Type));
        var codec = CodecRegistry.TryGet(format) ?? throw new LowbitException(
            $"unknown format '{format}': not a GGUF mixture ({string.Join(", ", Names)}) nor a codec (see 'lowbit formats')");
        var plan = new Dictionary<string, TensorCodec>();
        foreach (var t in model.Tensors)
            if (IsQuantizable(t) && codec.CanEncodeRow(t.Cols)) plan[t.Name] = codec;
        return plan;
    }

    private GgmlType AttnVType(GgmlType type, int i, int n, int gqa) => FileType switch
    {
        LlamaFileType.MostlyQ2_K => gqa >= 4 ? GgmlType.Q4_K : GgmlType.Q3_K,
        LlamaFileType.MostlyQ3_K_M => i < 2 ? GgmlType.Q5_K : GgmlType.Q4_K,
        LlamaFileType.MostlyQ3_K_L => GgmlType.Q5_K,
        LlamaFileType.MostlyIQ4_NL or LlamaFileType.MostlyIQ4_XS when gqa >= 4 => GgmlType.Q5_K,
        LlamaFileType.MostlyQ4_K_M or LlamaFileType.MostlyQ5_K_M when UseMoreBits(i, n) => GgmlType.Q6_K,
        LlamaFileType.MostlyQ4_K_S when i < 4 => GgmlType.Q5_K,
        _ => type,
    };

    private GgmlType FfnDownType(GgmlType type, int i, int n, bool hasImportance) => FileType switch
    {
        LlamaFileType.MostlyQ2_K => GgmlType.Q3_K,
        LlamaFileType.MostlyQ3_K_M => i < n / 16 ? GgmlType.Q5_K : GgmlType.Q4_K,
        LlamaFileType.MostlyQ3_K_L => GgmlType.Q5_K,
        LlamaFileType.MostlyQ4_K_M => UseMoreBits(i, n) ? GgmlType.Q6_K : type,
        LlamaFileType.MostlyIQ4_NL or LlamaFileType.MostlyIQ4_XS when i < n / 8 && !hasImportance => GgmlType.Q5_K,
        LlamaFileType.MostlyQ5_K_M when UseMoreBits(i, n) => GgmlType.Q6_K,
        LlamaFileType.MostlyQ4_K_S when i < n / 8 => GgmlType.Q5_K,
        // Guard against the first ffn_down layers going wrong with imatrix Q4_0/Q5_0 (llama.cpp does the same).
        LlamaFileType.MostlyQ4_0 when hasImportance && i < n / 8 => GgmlType.Q4_1,
        LlamaFileType.MostlyQ5_0 when hasImportance && i < n / 8 => GgmlType.Q5_1,
        _ => type,
    };

    /// <summary>llama.cpp's use_more_bits: the first and last eighth of layers, and every third layer between.</summary>
    public static bool UseMoreBits(int i, int n) => i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;

    /// <summary>llama.cpp's tensor_type_fallback: a type whose block doesn't divide the row length.</summary>
    public static (GgmlType Type, bool FellBack) Fallback(GgmlType type, long cols)
    {
        if (cols % BlockSizeOf(type) == 0) return (type, false);
        GgmlType next = type switch
        {
            GgmlType.IQ4_XS => GgmlType.IQ4_NL,
            GgmlType.Q2_K or GgmlType.Q3_K => GgmlType.Q4_0,
            GgmlType.Q4_K => GgmlType.Q5_0,
            GgmlType.Q5_K => GgmlType.Q5_1,
            GgmlType.Q6_K => GgmlType.Q8_0,
            _ => throw new LowbitException($"no fallback type is defined for {type} when the row length ({cols}) is not a multiple of its block size"),
        };
        if (cols % BlockSizeOf(next) != 0) next = GgmlType.F16;
        return (next, true);
    }

    private static int BlockSizeOf(GgmlType t) =>
        GgmlTypeTraits.TryGet(t, out int block, out _) ? block : throw new LowbitException($"unknown GGUF type {t}");

    private static GgmlType FloatOr(TensorCodec codec, GgmlType fallback) =>
        codec.IsFloat && codec.Ggml is { } g ? g : fallback is GgmlType.F32 or GgmlType.BF16 ? fallback : GgmlType.F16;

    /// <summary>Layer index of "blk.N.…", or -1.</summary>
    public static int LayerOf(string name)
    {
        if (!name.StartsWith("blk.", StringComparison.Ordinal)) return -1;
        int end = name.IndexOf('.', 4);
        return end > 4 && int.TryParse(name.AsSpan(4, end - 4), NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : -1;
    }

    /// <summary>llama.cpp's weight_name_comparer: by layer index (non-layer tensors first), then by name.</summary>
    public static int CompareLikeLlamaCpp(ModelTensor a, ModelTensor b)
    {
        int la = LayerOf(a.Name), lb = LayerOf(b.Name);
        return la != lb ? la.CompareTo(lb) : string.CompareOrdinal(a.Name, b.Name);
    }
}

/// <summary>One tensor's chosen type; <see cref="FallbackNote"/> says why it differs from the mixture's choice.</summary>
public sealed record MixtureEntry(ModelTensor Tensor, GgmlType Type, string? FallbackNote);

/// <summary>The per-tensor plan in output order.</summary>
public sealed record MixturePlan(GgufMixture Mixture, IReadOnlyList<MixtureEntry> Entries);
