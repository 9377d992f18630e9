using System.Text.Json.Serialization;
using Lowbit.Formats;
using Lowbit.Model;

namespace Lowbit.Advisor;

/// <summary>A speed measured on a real device, shown next to the estimate for the same device and format.</summary>
public sealed record MeasuredSpeed(string Device, string Format, double DecodeTokensPerSecond, double? PrefillTokensPerSecond = null);

/// <summary>
/// The constants behind every estimate. They are assumptions, not measurements; each report
/// carries the values it used.
/// </summary>
public sealed record AdvisorAssumptions
{
    /// <summary>Fraction of GPU/CPU memory a deployment may plan to fill (fragmentation, other processes).</summary>
    public double SafetyMargin { get; init; } = 0.90;

    /// <summary>
    /// Fraction of Apple unified memory the GPU may use: Metal's default
    /// recommendedMaxWorkingSetSize is roughly 2/3–3/4 of RAM (it can be raised with the
    /// iogpu.wired_limit_mb sysctl); 0.75 is used instead of <see cref="SafetyMargin"/>.
    /// </summary>
    public double AppleWorkingSetFraction { get; init; } = 0.75;

    /// <summary>Achieved fraction of peak memory bandwidth while decoding (llama.cpp-class kernels reach ~60–80 % on GPUs).</summary>
    public double GpuDecodeEfficiency { get; init; } = 0.70;
    public double AppleDecodeEfficiency { get; init; } = 0.65;
    public double CpuDecodeEfficiency { get; init; } = 0.60;

    /// <summary>Achieved fraction of peak FP16/FP8/FP4 tensor (or SIMD) throughput during prompt processing.</summary>
    public double PrefillEfficiency { get; init; } = 0.50;

    /// <summary>
    /// Achieved fraction of peak INT8 throughput for GGUF prompt processing: llama.cpp's MMQ and
    /// CPU dot kernels unpack blocks and rescale inside the kernel, so they reach a smaller share
    /// of the INT8 peak than dense BLAS reaches of the FP16 peak (assumption).
    /// </summary>
    public double IntegerPrefillEfficiency { get; init; } = 0.30;

    /// <summary>Purchase prices are spread over this many years of use at <see cref="HoursPerDay"/> for cost per token.</summary>
    public double AmortizationYears { get; init; } = 3;
    public double HoursPerDay { get; init; } = 8;

    public double DecodeEfficiency(DeviceKind kind) => kind switch
    {
        DeviceKind.Gpu => GpuDecodeEfficiency,
        DeviceKind.Apple => AppleDecodeEfficiency,
        _ => CpuDecodeEfficiency,
    };

    internal void Validate()
    {
        static void Fraction(string what, double v)
        {
            if (!(v > 0 && v <= 1)) throw new LowbitException($"advisor assumption {what} must be in (0, 1], got {v}.");
        }
        Fraction("SafetyMargin", SafetyMargin);
        Fraction("AppleWorkingSetFraction", AppleWorkingSetFraction);
        Fraction("GpuDecodeEfficiency", GpuDecodeEfficiency);
        Fraction("AppleDecodeEfficiency", AppleDecodeEfficiency);
        Fraction("CpuDecodeEfficiency", CpuDecodeEfficiency);
        Fraction("PrefillEfficiency", PrefillEfficiency);
        Fraction("IntegerPrefillEfficiency", IntegerPrefillEfficiency);
        if (!(AmortizationYears > 0)) throw new LowbitException($"amortization years must be positive, got {AmortizationYears}.");
        if (!(HoursPerDay > 0 && HoursPerDay <= 24)) throw new LowbitException($"hours per day must be in (0, 24], got {HoursPerDay}.");
    }
}

/// <summary>
/// An extra row set for a plan the advisor does not build itself (e.g. the lead's exact Q4_K_M
/// mixture). <paramref name="KernelFormat"/> is the advisor format whose kernels and compute
/// path the plan runs on (e.g. "q4_K"): it decides the fast-kernel flag and the prefill rate.
/// </summary>
public sealed record CustomPlan(string Label, QuantizationPlan Plan, string KernelFormat);

/// <summary>What to advise on.</summary>
public sealed record AdviceRequest
{
    /// <summary>Label of the model in the report (e.g. "llama-3.1-8b" or a file name).</summary>
    public required string ModelName { get; init; }
    public required ModelConfig Model { get; init; }
    public InferenceSettings Settings { get; init; } = new();
    /// <summary>Formats to evaluate (advisor names); null = <see cref="AdvisorFormats.DefaultSweep"/>.</summary>
    public IReadOnlyList<string>? Formats { get; init; }
    /// <summary>Plans evaluated in addition to <see cref="Formats"/>, reported under their labels.</summary>
    public IReadOnlyList<CustomPlan> CustomPlans { get; init; } = [];
    public IReadOnlyList<MeasuredSpeed> Measured { get; init; } = [];
    public AdvisorAssumptions Assumptions { get; init; } = new();
    /// <summary>Codec lookup; default <see cref="CodecRegistry.TryGet(string)"/>.</summary>
    public Func<string, TensorCodec?>? ResolveCodec { get; init; }
    /// <summary>Plan for a format; default <see cref="QuantizationPlan.ForFormat"/>.</summary>
    public Func<FormatInfo, TensorCodec, QuantizationPlan>? PlanFor { get; init; }
    /// <summary>Runtime overhead per device; default <see cref="RuntimeOverhead.For"/> of its kind.</summary>
    public Func<DeviceSpec, RuntimeOverhead>? OverheadFor { get; init; }
}

/// <summary>A format's size on this model, independent of the device.</summary>
public sealed record FormatPlanSummary(string Format, string Plan, double BitsPerWeight, long WeightBytes, IReadOnlyList<FormatShare> ByFormat);

/// <summary>A requested format the advisor could not evaluate, and why.</summary>
public sealed record SkippedFormat(string Format, string Reason);

/// <summary>One device × format. Speeds and costs are estimates unless in a Measured… field.</summary>
public sealed record FormatEstimate
{
    /// <summary>The advisor format name, or a custom plan's label.</summary>
    public required string Format { get; init; }
    /// <summary>The format whose kernels run this row (= <see cref="Format"/> except for custom plans).</summary>
    public required string KernelFormat { get; init; }
    public required string Plan { get; init; }
    public required double BitsPerWeight { get; init; }
    public required long WeightBytes { get; init; }
    public required long KvCacheBytes { get; init; }
    public required long ComputeBufferBytes { get; init; }
    public required long OverheadBytes { get; init; }
    public required long TotalBytes { get; init; }
    /// <summary>Device memory − total (negative when it does not fit at all).</summary>
    public required long HeadroomBytes { get; init; }
    /// <summary>Usable memory (after the safety margin or Apple working-set limit) − total.</summary>
    public required long UsableHeadroomBytes { get; init; }
    public required bool Fits { get; init; }
    /// <summary>True when the device lists the format among its fast kernels.</summary>
    public required bool FastKernel { get; init; }
    /// <summary>Which peak rate prefill uses: fp16, int8, fp8, fp4 (or fp32 with no rate).</summary>
    public required string ComputePath { get; init; }
    /// <summary>Estimated decode tokens/s summed over the batch, at the full context.</summary>
    public required double DecodeTokensPerSecondEstimate { get; init; }
    /// <summary>Estimated decode tokens/s of one sequence (= aggregate ÷ batch).</summary>
    public required double DecodeTokensPerSecondPerSequenceEstimate { get; init; }
    /// <summary>Estimated prompt-processing tokens/s; null when the catalog has no rate for the compute path.</summary>
    public required double? PrefillTokensPerSecondEstimate { get; init; }
    /// <summary>USD per million generated tokens at the estimated aggregate decode speed; null without a price.</summary>
    public required double? CostPerMillionTokensUsd { get; init; }
    public double? MeasuredDecodeTokensPerSecond { get; init; }
    public double? MeasuredPrefillTokensPerSecond { get; init; }
}

/// <summary>Everything the advisor says about one device.</summary>
public sealed record DeviceAdvice
{
    public required DeviceSpec Device { get; init; }
    public required long MemoryBytes { get; init; }
    public required long UsableBytes { get; init; }
    public required double HourlyCostUsd { get; init; }
    /// <summary>Most bits per weight among formats that fit and have fast kernels here; null when none does.</summary>
    public required string? BestFormat { get; init; }
    public required IReadOnlyList<FormatEstimate> Formats { get; init; }
}

public sealed record AdviceReport
{
    public required string Model { get; init; }
    public required long Parameters { get; init; }
    public required InferenceSettings Settings { get; init; }
    public required AdvisorAssumptions Assumptions { get; init; }
    public required IReadOnlyList<FormatPlanSummary> Formats { get; init; }
    public required IReadOnlyList<SkippedFormat> Skipped { get; init; }
    public required IReadOnlyList<DeviceAdvice> Devices { get; init; }
    /// <summary>Things about the request a user should know (context beyond the model's limit, cache types an engine rejects).</summary>
    public required IReadOnlyList<string> Warnings { get; init; }
    public string Note => DeploymentAdvisor.EstimateNote;
}

/// <summary>
/// Fits, speed and cost estimates for a model on catalog devices, per weight format.
/// <para>Decode (memory-bound): tokens/s = batch × bandwidth × efficiency ÷ bytes per step,
/// bytes per step = weight bytes read per token (<see cref="WeightEstimate.BytesReadPerToken"/>)
/// + batch × KV bytes of one sequence at the full context.</para>
/// <para>Prefill (compute-bound, capped by bandwidth): FLOPs per token = 2 × matmul parameters
/// + 4 × layers × q_dim × context/2 (QKᵀ and AV over the average history of a context-long
/// prompt); tokens/s = min(peak × efficiency ÷ FLOPs per token (efficiency 0.5, or 0.3 on the
/// INT8 path), micro-batch × bandwidth × decode efficiency ÷ weight bytes), with peak the rate
/// of the format's compute path: float → FP16; GGUF → the better of INT8 (llama.cpp MMQ/VNNI)
/// and FP16 (dequantize + BLAS), FP16 on Apple Metal; FP8 → FP8 when native else FP16;
/// MXFP4/NVFP4 → FP4 when native, else as GGUF for MXFP4 (llama.cpp) / FP16 for NVFP4;
/// weight-only int4/NF4 → FP16 (see <see cref="AchievedComputeRate"/>).</para>
/// <para>Cost per million tokens = hourly cost ÷ (aggregate decode tokens/s × 3600) × 10⁶, with
/// hourly cost = cloud $/h, or purchase price ÷ (years × 365 × hours per day).</para>
/// </summary>
public static class DeploymentAdvisor
{
    public const string EstimateNote =
        "Speeds and costs are estimates from catalog peak figures and the listed efficiency assumptions, not measurements; memory totals are conservative.";

    public static AdviceReport Advise(AdviceRequest request, IReadOnlyList<DeviceSpec> devices)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(devices);
        request.Settings.Validate();
        request.Assumptions.Validate();
        LlamaTensorLayout.Validate(request.Model);
        var resolve = request.ResolveCodec ?? CodecRegistry.TryGet;
        var planFor = request.PlanFor ?? ((f, c) => QuantizationPlan.ForFormat(f, c, resolve));
        var overheadFor = request.OverheadFor ?? (d => RuntimeOverhead.For(d.Kind));
        var formats = request.Formats is null ? AdvisorFormats.DefaultSweep : request.Formats.Select(AdvisorFormats.Get).ToArray();

        var cfg = request.Model;
        var settings = request.Settings;
        long kv = MemoryEstimator.KvCacheBytes(cfg, settings.Context, settings.Batch, settings.KvCache);
        long kvPerSequence = MemoryEstimator.KvBytesReadPerToken(cfg, settings.Context, settings.KvCache);
        var compute = MemoryEstimator.ComputeBuffer(cfg, settings);

        var sized = new List<(string Label, FormatInfo Info, WeightEstimate Weights)>();
        var skipped = new List<SkippedFormat>();
        foreach (var f in formats.DistinctBy(f => f.Name))
        {
            var codec = resolve(f.Name);
            if (codec is null)
            {
                skipped.Add(new SkippedFormat(f.Name, "no codec for this format in this build"));
                continue;
            }
            try
            {
                sized.Add((f.Name, f, MemoryEstimator.Weights(cfg, planFor(f, codec))));
            }
            catch (LowbitException e)
            {
                skipped.Add(new SkippedFormat(f.Name, e.Message));
            }
        }
        foreach (var custom in request.CustomPlans)
        {
            if (sized.Any(s => string.Equals(s.Label, custom.Label, StringComparison.OrdinalIgnoreCase)))
                throw new LowbitException($"custom plan label '{custom.Label}' is already used by another row.");
            sized.Add((custom.Label, AdvisorFormats.Get(custom.KernelFormat), MemoryEstimator.Weights(cfg, custom.Plan)));
        }

        var a = request.Assumptions;
        var advice = new List<DeviceAdvice>(devices.Count);
        foreach (var device in devices)
        {
            var overhead = overheadFor(device);
            long memory = device.MemoryBytes;
            double usableFraction = device.Kind == DeviceKind.Apple ? a.AppleWorkingSetFraction : a.SafetyMargin;
            long usable = (long)(memory * usableFraction);
            double hourly = HourlyCost(device.Price, a);
            var rows = new List<FormatEstimate>(sized.Count);
            foreach (var (label, info, w) in sized)
            {
                long total = w.TotalBytes + kv + compute.TotalBytes + overhead.TotalBytes;
                double decode = DecodeTokensPerSecond(device, a, w.BytesReadPerToken, kvPerSequence, settings.Batch);
                var (path, achieved) = AchievedComputeRate(device, info, a);
                double? prefill = achieved is null ? null
                    : PrefillTokensPerSecond(cfg, settings, w, achieved.Value, device, a);
                var measured = request.Measured.LastOrDefault(m =>
                    string.Equals(m.Format, label, StringComparison.OrdinalIgnoreCase) &&
                    (string.Equals(m.Device, device.Id, StringComparison.OrdinalIgnoreCase) ||
                     string.Equals(m.Device, device.Name, StringComparison.OrdinalIgnoreCase)));
                rows.Add(new FormatEstimate
                {
                    Format = label,
                    KernelFormat = info.Name,
                    Plan = w.Plan,
                    BitsPerWeight = w.BitsPerWeight,
                    WeightBytes = w.TotalBytes,
                    KvCacheBytes = kv,
                    ComputeBufferBytes = compute.TotalBytes,
                    OverheadBytes = overhead.TotalBytes,
                    TotalBytes = total,
                    HeadroomBytes = memory - total,
                    UsableHeadroomBytes = usable - total,
                    Fits = total <= usable,
                    FastKernel = device.HasFastKernel(info.Name),
                    ComputePath = path,
                    DecodeTokensPerSecondEstimate = decode,
                    DecodeTokensPerSecondPerSequenceEstimate = decode / settings.Batch,
                    PrefillTokensPerSecondEstimate = prefill,
                    CostPerMillionTokensUsd = hourly > 0 ? CostPerMillionTokens(hourly, decode) : null,
                    MeasuredDecodeTokensPerSecond = measured?.DecodeTokensPerSecond,
                    MeasuredPrefillTokensPerSecond = measured?.PrefillTokensPerSecond,
                });
            }
            var best = rows.Where(r => r.Fits && r.FastKernel)
                .OrderByDescending(r => r.BitsPerWeight).ThenByDescending(r => r.DecodeTokensPerSecondEstimate)
                .FirstOrDefault();
            advice.Add(new DeviceAdvice
            {
                Device = device, MemoryBytes = memory, UsableBytes = usable, HourlyCostUsd = hourly,
                BestFormat = best?.Format, Formats = rows,
            });
        }

        var warnings = new List<string>();
        if (settings.Context > cfg.MaxPositions)
            warnings.Add($"context {settings.Context} exceeds the model's trained maximum of {cfg.MaxPositions} positions.");
        if (settings.KvCache is not (KvCacheType.F32 or KvCacheType.F16 or KvCacheType.BF16 or KvCacheType.Fp8) && !settings.FlashAttention)
            warnings.Add($"llama.cpp quantizes the V cache ({settings.KvCache}) only with flash attention enabled.");

        return new AdviceReport
        {
            Warnings = warnings,
            Model = request.ModelName,
            Parameters = cfg.ParameterCount,
            Settings = settings,
            Assumptions = a,
            Formats = sized.Select(s => new FormatPlanSummary(s.Label, s.Weights.Plan, s.Weights.BitsPerWeight, s.Weights.TotalBytes, s.Weights.ByFormat)).ToArray(),
            Skipped = skipped,
            Devices = advice,
        };
    }

    /// <summary>batch × bandwidth × efficiency ÷ (weights read per step + batch × KV read per sequence).</summary>
    public static double DecodeTokensPerSecond(DeviceSpec device, AdvisorAssumptions a, long weightBytesPerStep, long kvBytesPerSequence, int batch)
    {
        double bytesPerStep = weightBytesPerStep + (double)batch * kvBytesPerSequence;
        return batch * device.MemoryBandwidthGBps * 1e9 * a.DecodeEfficiency(device.Kind) / bytesPerStep;
    }

    /// <summary>
    /// See the class remarks: min(compute-bound rate at <paramref name="achievedTera"/> (peak ×
    /// efficiency, tera-ops/s), bandwidth-bound rate for one weight pass per micro-batch).
    /// </summary>
    public static double PrefillTokensPerSecond(ModelConfig cfg, InferenceSettings settings, WeightEstimate w, double achievedTera,
        DeviceSpec device, AdvisorAssumptions a)
    {
        double flopsPerToken = PrefillFlopsPerToken(cfg, settings.Context, w.MatmulParameters);
        double computeBound = achievedTera * 1e12 / flopsPerToken;
        int n = (int)Math.Min(settings.MicroBatch, (long)settings.Context * settings.Batch);
        double bandwidthBound = n * device.MemoryBandwidthGBps * 1e9 * a.DecodeEfficiency(device.Kind) / w.BytesReadPerToken;
        return Math.Min(computeBound, bandwidthBound);
    }

    /// <summary>2 × matmul parameters + 4 × layers × q_dim × context/2.</summary>
    public static double PrefillFlopsPerToken(ModelConfig cfg, int context, long matmulParameters) =>
        2.0 * matmulParameters + 4.0 * cfg.NumLayers * cfg.QDim * (context / 2.0);

    /// <summary>
    /// The compute path a format uses on a device and its achieved rate (peak × efficiency,
    /// tera-ops/s); null rate when the catalog has none (f32). GGUF types (and MXFP4 without FP4
    /// tensor cores) take the better of llama.cpp's two GPU/CPU paths: integer dot (INT8 peak ×
    /// <see cref="AdvisorAssumptions.IntegerPrefillEfficiency"/>) or dequantize + FP16 BLAS (FP16
    /// peak × <see cref="AdvisorAssumptions.PrefillEfficiency"/>); Apple Metal always uses FP16.
    /// </summary>
    public static (string Path, double? AchievedTera) AchievedComputeRate(DeviceSpec device, FormatInfo format, AdvisorAssumptions a)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(format);
        ArgumentNullException.ThrowIfNull(a);
        double half = device.Fp16Tflops * a.PrefillEfficiency;
        if (format.Name == "f32") return ("fp32", null);
        return format.Family switch
        {
            FormatFamily.Float or FormatFamily.WeightOnly => ("fp16", half),
            FormatFamily.Gguf => IntegerOrHalf(),
            FormatFamily.Fp8 => device.Fp8Tflops is { } f8 ? ("fp8", f8 * a.PrefillEfficiency) : ("fp16", half),
            FormatFamily.Fp4 => device.Fp4Tflops is { } f4 ? ("fp4", f4 * a.PrefillEfficiency)
                : format.Name == "mxfp4" ? IntegerOrHalf() : ("fp16", half),
            _ => throw new ArgumentOutOfRangeException(nameof(format)),
        };

        (string, double?) IntegerOrHalf()
        {
            if (device.Kind == DeviceKind.Apple || device.Int8Tops is not { } i8) return ("fp16", half);
            double integer = i8 * a.IntegerPrefillEfficiency;
            return integer > half ? ("int8", integer) : ("fp16", half);
        }
    }

    /// <summary>Cloud $/h as is; purchase prices ÷ (years × 365 × hours per day); 0 without a price.</summary>
    public static double HourlyCost(DevicePrice? price, AdvisorAssumptions a) => price switch
    {
        null => 0,
        { Kind: PriceKind.CloudHourly } => price.Usd,
        _ => price.Usd / (a.AmortizationYears * 365 * a.HoursPerDay),
    };

    public static double CostPerMillionTokens(double hourlyUsd, double tokensPerSecond) =>
        hourlyUsd / (tokensPerSecond * 3600) * 1e6;
}
