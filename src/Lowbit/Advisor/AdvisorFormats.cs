using System.Collections.Frozen;

namespace Lowbit.Advisor;

/// <summary>How a weight format is executed, which decides the peak rate a prefill can use.</summary>
public enum FormatFamily
{
    /// <summary>F32/F16/BF16 weights: FP16/BF16 tensor-core (or SIMD) matmuls.</summary>
    Float,
    /// <summary>ggml block quants (q*_0/1, k-quants, iq4_*): llama.cpp integer-dot kernels (MMQ/dp4a, CPU VNNI).</summary>
    Gguf,
    /// <summary>FP8 E4M3 weights (+ activations on hardware with FP8 tensor cores).</summary>
    Fp8,
    /// <summary>4-bit float microscaled formats (MXFP4, NVFP4): FP4 tensor cores on Blackwell.</summary>
    Fp4,
    /// <summary>Weight-only integer formats dequantized to FP16 in the kernel (GPTQ/AWQ Marlin, bitsandbytes NF4).</summary>
    WeightOnly,
}

/// <summary>How the advisor's default plan places a format on a model's tensors.</summary>
public enum PlanConvention
{
    /// <summary>Every matrix in the format, vectors F32 (llama.cpp's float output types).</summary>
    Uniform,
    /// <summary>llama.cpp single-type convention: output (or the tied embedding) in Q6_K, Q8_0 for Q8_0.</summary>
    LlamaCpp,
    /// <summary>Block linear layers only; token embedding and output stay BF16 (vLLM/HF quantized checkpoints).</summary>
    LinearOnly,
}

/// <summary>A weight format the advisor knows by name (the catalog's vocabulary).</summary>
public sealed record FormatInfo(string Name, FormatFamily Family, PlanConvention Convention, string Description);

/// <summary>
/// The weight-format vocabulary of the advisor and the hardware catalog. Names match the codec
/// names of <see cref="Formats.CodecRegistry"/>; a name may be known here before its codec is
/// registered in a given build (the advisor then reports it as unavailable instead of guessing sizes).
/// </summary>
public static class AdvisorFormats
{
    private static readonly FormatInfo[] All =
    [
        new("f32", FormatFamily.Float, PlanConvention.Uniform, "IEEE float32"),
        new("f16", FormatFamily.Float, PlanConvention.Uniform, "IEEE float16"),
        new("bf16", FormatFamily.Float, PlanConvention.Uniform, "bfloat16"),
        new("q8_0", FormatFamily.Gguf, PlanConvention.LlamaCpp, "ggml 8-bit, 32-value blocks"),
        new("fp8_e4m3", FormatFamily.Fp8, PlanConvention.LinearOnly, "FP8 E4M3 (per-tensor or per-channel scale)"),
        new("q6_K", FormatFamily.Gguf, PlanConvention.LlamaCpp, "ggml 6-bit k-quant"),
        new("q5_K", FormatFamily.Gguf, PlanConvention.LlamaCpp, "ggml 5-bit k-quant"),
        new("q5_1", FormatFamily.Gguf, PlanConvention.LlamaCpp, "ggml 5-bit with min"),
        new("q5_0", FormatFamily.Gguf, PlanConvention.LlamaCpp, "ggml 5-bit"),
        new("q4_K", FormatFamily.Gguf, PlanConvention.LlamaCpp, "ggml 4-bit k-quant"),
        new("q4_1", FormatFamily.Gguf, PlanConvention.LlamaCpp, "ggml 4-bit with min"),
        new("q4_0", FormatFamily.Gguf, PlanConvention.LlamaCpp, "ggml 4-bit"),
        new("iq4_nl", FormatFamily.Gguf, PlanConvention.LlamaCpp, "ggml 4-bit non-linear, 32-value blocks"),
        new("iq4_xs", FormatFamily.Gguf, PlanConvention.LlamaCpp, "ggml 4-bit non-linear, 256-value super-blocks"),
        new("int4-g128-sym", FormatFamily.WeightOnly, PlanConvention.LinearOnly, "GPTQ/AWQ-style int4, group 128, symmetric"),
        new("nf4", FormatFamily.WeightOnly, PlanConvention.LinearOnly, "bitsandbytes NormalFloat4"),
        new("mxfp4", FormatFamily.Fp4, PlanConvention.LlamaCpp, "OCP MX FP4 (E2M1, E8M0 scale per 32)"),
        new("nvfp4", FormatFamily.Fp4, PlanConvention.LinearOnly, "NVIDIA FP4 (E2M1, FP8 scale per 16 + tensor scale)"),
        new("q3_K", FormatFamily.Gguf, PlanConvention.LlamaCpp, "ggml 3-bit k-quant"),
        new("q2_K", FormatFamily.Gguf, PlanConvention.LlamaCpp, "ggml 2-bit k-quant"),
    ];

    private static readonly FrozenDictionary<string, FormatInfo> ByName =
        All.ToFrozenDictionary(f => f.Name, StringComparer.OrdinalIgnoreCase);

    /// <summary>Every known format, highest precision first (the default sweep order; f32 excluded from it).</summary>
    public static IReadOnlyList<FormatInfo> Known => All;

    /// <summary>The formats the advisor evaluates when the caller names none (all but f32).</summary>
    public static IReadOnlyList<FormatInfo> DefaultSweep { get; } = All.Where(f => f.Name != "f32").ToArray();

    public static FormatInfo? TryGet(string name) => ByName.GetValueOrDefault(name.Trim());

    public static FormatInfo Get(string name) =>
        TryGet(name) ?? throw new LowbitException(
            $"unknown format '{name}' for the advisor. Known: {string.Join(", ", All.Select(f => f.Name))}.");
}
