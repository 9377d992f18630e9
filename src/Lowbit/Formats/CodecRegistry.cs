using System.Collections.Frozen;

namespace Lowbit.Formats;

/// <summary>
/// The one table from format names and GGUF type ids to codecs (ggml's type-traits idea).
/// Adding a format is one file plus one line in <see cref="BuiltIn"/>. Parametric families
/// (e.g. "int4-g128-sym") are resolved through <see cref="ParametricFactories"/>.
/// </summary>
public static class CodecRegistry
{
    private static TensorCodec[] BuiltIn() =>
    [
        new F32Codec(),
        new F16Codec(),
        new BF16Codec(),
        // --- registry lines: one per codec ---
        new Q4_0Codec(),
        new Q4_1Codec(),
        new Q5_0Codec(),
        new Q5_1Codec(),
        new Q8_0Codec(),
        new Q8_1Codec(),
        new IQ4_NLCodec(),
        new IQ4_XSCodec(),
        new Q2_KCodec(),
        new Q3_KCodec(),
        new Q4_KCodec(),
        new Q5_KCodec(),
        new Q6_KCodec(),
        new Q8_KCodec(),
        new MxFp4Codec(),
        new NvFp4Codec(),
        new Fp8Codec(Fp8Kind.E4M3),
        new Fp8Codec(Fp8Kind.E5M2),
        new Fp8ChannelCodec(Fp8Kind.E4M3),
        new Fp8ChannelCodec(Fp8Kind.E5M2),
        new Nf4Codec(doubleQuant: true),
        new Nf4Codec(doubleQuant: false),
        new Fp4Codec(),
        new NvFp4TensorScaledCodec(),
        new W8A8Int8Codec(),
        new W8A8Fp8Codec(),
        new LlmInt8Codec(),
    ];

    /// <summary>Factories for parametric names; each returns null when the name is not its family.</summary>
    private static Func<string, TensorCodec?>[] ParametricFactories() =>
    [
        // --- parametric families ---
        IntCodecFamily.TryCreate,
        LlmInt8Family.TryCreate,
    ];

    private static readonly TensorCodec[] All = BuiltIn();
    private static readonly Func<string, TensorCodec?>[] Factories = ParametricFactories();
    private static readonly FrozenDictionary<string, TensorCodec> ByName =
        All.ToFrozenDictionary(c => c.Name, StringComparer.OrdinalIgnoreCase);
    private static readonly FrozenDictionary<GgmlType, TensorCodec> ByGgml =
        All.Where(c => c.Ggml is not null).ToFrozenDictionary(c => c.Ggml!.Value);

    /// <summary>All fixed (non-parametric) codecs.</summary>
    public static IReadOnlyList<TensorCodec> Codecs => All;

    public static TensorCodec? TryGet(string name)
    {
        if (ByName.TryGetValue(name, out var c)) return c;
        foreach (var f in Factories)
            if (f(name) is { } p) return p;
        return null;
    }

    public static TensorCodec Get(string name) =>
        TryGet(name) ?? throw new LowbitException(
            $"unknown format '{name}'. Known formats: {string.Join(", ", All.Select(c => c.Name))} (run 'lowbit formats').");

    public static TensorCodec? TryGet(GgmlType type) => ByGgml.GetValueOrDefault(type);

    public static TensorCodec Get(GgmlType type) =>
        TryGet(type) ?? throw new LowbitException($"GGUF tensor type {type} ({(uint)type}) is not supported.");
}
