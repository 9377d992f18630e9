using System.Text.Json.Serialization;
using Lowbit.Model;

namespace Lowbit.Advisor;

/// <summary>Element type of the KV cache (llama.cpp --cache-type-k/-v, vLLM --kv-cache-dtype fp8).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<KvCacheType>))]
public enum KvCacheType { F32, F16, BF16, Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, IQ4_NL, Fp8 }

public static class KvCacheTypes
{
    /// <summary>
    /// (values per block, bytes per block): floats are 1-value blocks; the ggml block types use
    /// their block layouts (q8_0: 32 int8 + f16 scale = 34 B; q4_0: 16 B nibbles + f16 scale = 18 B;
    /// q4_1 20 B, q5_0 22 B, q5_1 24 B, iq4_nl 18 B, all per 32 values); FP8 is one byte per value.
    /// </summary>
    public static (int BlockSize, int BlockBytes) Geometry(KvCacheType type) => type switch
    {
        KvCacheType.F32 => (1, 4),
        KvCacheType.F16 or KvCacheType.BF16 => (1, 2),
        KvCacheType.Fp8 => (1, 1),
        KvCacheType.Q8_0 => (32, 34),
        KvCacheType.Q5_1 => (32, 24),
        KvCacheType.Q5_0 => (32, 22),
        KvCacheType.Q4_1 => (32, 20),
        KvCacheType.Q4_0 or KvCacheType.IQ4_NL => (32, 18),
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>Bytes of one cached K (or V) row of <paramref name="values"/> elements.</summary>
    public static long RowBytes(KvCacheType type, long values)
    {
        var (bs, bb) = Geometry(type);
        if (values % bs != 0)
            throw new LowbitException($"KV cache type {type} needs rows that are a multiple of {bs} values; this model's K/V row has {values}.");
        return values / bs * bb;
    }

    /// <summary>Parses "f16", "q8_0", "fp8", "fp8_e4m3" etc. (case-insensitive).</summary>
    public static KvCacheType Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "f32" => KvCacheType.F32,
        "f16" or "fp16" => KvCacheType.F16,
        "bf16" => KvCacheType.BF16,
        "q8_0" => KvCacheType.Q8_0,
        "q5_1" => KvCacheType.Q5_1,
        "q5_0" => KvCacheType.Q5_0,
        "q4_1" => KvCacheType.Q4_1,
        "q4_0" => KvCacheType.Q4_0,
        "iq4_nl" => KvCacheType.IQ4_NL,
        "fp8" or "fp8_e4m3" or "fp8_e5m2" => KvCacheType.Fp8,
        _ => throw new LowbitException($"unknown KV cache type '{text}'. Known: f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl, fp8."),
    };
}

/// <summary>How the model is run: context per sequence, parallel sequences, prompt micro-batch, cache type.</summary>
public sealed record InferenceSettings
{
    /// <summary>Tokens of context per sequence (KV cache length).</summary>
    public int Context { get; init; } = 4096;
    /// <summary>Sequences decoded in parallel (each has its own <see cref="Context"/> of KV cache).</summary>
    public int Batch { get; init; } = 1;
    /// <summary>Tokens per prompt-processing step (llama.cpp -ub, default 512).</summary>
    public int MicroBatch { get; init; } = 512;
    public KvCacheType KvCache { get; init; } = KvCacheType.F16;
    /// <summary>With flash attention the attention-score matrix is never materialized.</summary>
    public bool FlashAttention { get; init; }

    internal void Validate()
    {
        if (Context <= 0) throw new LowbitException($"context must be positive, got {Context}.");
        if (Batch <= 0) throw new LowbitException($"batch must be positive, got {Batch}.");
        if (MicroBatch <= 0) throw new LowbitException($"micro-batch must be positive, got {MicroBatch}.");
    }
}

/// <summary>Bytes of one tensor under a plan.</summary>
public sealed record TensorSize(string Name, long Rows, long Cols, string Format, long Bytes);

/// <summary>Total bytes and parameters stored in one format.</summary>
public sealed record FormatShare(string Format, int Tensors, long Parameters, long Bytes);

/// <summary>Weight bytes of a model under a plan, exact per tensor.</summary>
public sealed record WeightEstimate
{
    public required string Plan { get; init; }
    public required long Parameters { get; init; }
    public required long TotalBytes { get; init; }
    /// <summary>8 × bytes ÷ parameters over all tensors.</summary>
    public required double BitsPerWeight { get; init; }
    public required long EmbeddingBytes { get; init; }
    /// <summary>output.weight (0 when the embeddings are tied: the embedding doubles as output).</summary>
    public required long OutputBytes { get; init; }
    public required long AttentionBytes { get; init; }
    public required long FfnBytes { get; init; }
    public required long NormAndBiasBytes { get; init; }
    /// <summary>
    /// Weight bytes one decode step reads: every tensor except the token embedding, of which only
    /// one row is read — unless it is tied, then it is read in full as the output matrix.
    /// </summary>
    public required long BytesReadPerToken { get; init; }
    /// <summary>Multiply-accumulate weights one token passes through (all matrices but the embedding lookup).</summary>
    public required long MatmulParameters { get; init; }
    public required IReadOnlyList<FormatShare> ByFormat { get; init; }
    /// <summary>Every tensor (left out of JSON: hundreds of rows; use <see cref="ByFormat"/>).</summary>
    [JsonIgnore]
    public required IReadOnlyList<TensorSize> Tensors { get; init; }
}

/// <summary>
/// Compute-buffer (activation workspace) estimate for a llama.cpp-like engine, per part.
/// See <see cref="MemoryEstimator.ComputeBuffer"/> for the formula.
/// </summary>
public sealed record ComputeBufferEstimate(
    int MicroBatchTokens, long LogitsBytes, long HiddenBytes, long QkvBytes, long FfnBytes, long AttentionScoreBytes)
{
    public long TotalBytes => LogitsBytes + HiddenBytes + QkvBytes + FfnBytes + AttentionScoreBytes;
}

/// <summary>Memory the runtime takes besides the model: driver/context reserve and framework overhead.</summary>
public sealed record RuntimeOverhead(long DeviceReserveBytes, long FrameworkBytes, string Assumption)
{
    public long TotalBytes => DeviceReserveBytes + FrameworkBytes;

    public const long MiB = 1L << 20;

    /// <summary>Lowbit's own host-side buffers, tokenizer, graph metadata and allocator slack: 256 MiB (assumption).</summary>
    public const long DefaultFrameworkBytes = 256 * MiB;

    /// <summary>
    /// Defaults per device kind (assumptions, not measurements):
    /// GPU — 512 MiB for the CUDA/ROCm context and BLAS workspaces (a CUDA context alone typically
    /// takes ~300–500 MB of device memory depending on GPU, driver and lazy module loading);
    /// Apple — 0, because the usable fraction of unified memory (Metal's default working-set
    /// limit, see <see cref="DeploymentAdvisor"/>) already leaves macOS and the driver their share;
    /// CPU — 2 GiB for the operating system and other processes.
    /// </summary>
    public static RuntimeOverhead For(DeviceKind kind) => kind switch
    {
        DeviceKind.Gpu => new(512 * MiB, DefaultFrameworkBytes, "GPU: 512 MiB CUDA/ROCm context + BLAS workspace; 256 MiB framework"),
        DeviceKind.Apple => new(0, DefaultFrameworkBytes, "Apple: OS/driver share covered by the Metal working-set limit; 256 MiB framework"),
        DeviceKind.Cpu => new(2048 * MiB, DefaultFrameworkBytes, "CPU: 2 GiB for the OS and other processes; 256 MiB framework"),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };
}

/// <summary>Everything a model needs in memory on one device, with the parts named.</summary>
public sealed record MemoryEstimate
{
    public required WeightEstimate Weights { get; init; }
    public required InferenceSettings Settings { get; init; }
    public required long KvCacheBytes { get; init; }
    public required ComputeBufferEstimate ComputeBuffer { get; init; }
    public required RuntimeOverhead Overhead { get; init; }
    public long TotalBytes => Weights.TotalBytes + KvCacheBytes + ComputeBuffer.TotalBytes + Overhead.TotalBytes;
}

/// <summary>Memory math for Llama-family models: exact weight bytes, KV cache, compute buffer, overhead.</summary>
public static class MemoryEstimator
{
    /// <summary>Sizes every tensor of <paramref name="config"/> with the codec <paramref name="plan"/> chooses.</summary>
    public static WeightEstimate Weights(ModelConfig config, QuantizationPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var slots = LlamaTensorLayout.Enumerate(config);
        var sizes = new List<TensorSize>(slots.Count);
        var shares = new Dictionary<string, (int N, long P, long B)>(StringComparer.OrdinalIgnoreCase);
        var order = new List<string>();
        long total = 0, parameters = 0, emb = 0, output = 0, attn = 0, ffn = 0, vec = 0, embRow = 0, matmul = 0;
        foreach (var s in slots)
        {
            var codec = plan.Choose(s);
            long bytes = codec.TensorBytes(s.Rows, s.Cols);
            sizes.Add(new TensorSize(s.Name, s.Rows, s.Cols, codec.Name, bytes));
            if (!shares.TryGetValue(codec.Name, out var sh)) { order.Add(codec.Name); sh = default; }
            shares[codec.Name] = (sh.N + 1, sh.P + s.Elements, sh.B + bytes);
            total += bytes;
            parameters += s.Elements;
            switch (s.Role)
            {
                case TensorRole.TokenEmbedding:
                    emb += bytes;
                    embRow = codec.RowBytes(s.Cols);
                    if (s.SharedWithOutput) matmul += s.Elements;
                    break;
                case TensorRole.Output: output += bytes; matmul += s.Elements; break;
                case TensorRole.AttnQ or TensorRole.AttnK or TensorRole.AttnV or TensorRole.AttnOutput:
                    attn += bytes; matmul += s.Elements; break;
                case TensorRole.FfnGate or TensorRole.FfnUp or TensorRole.FfnDown:
                    ffn += bytes; matmul += s.Elements; break;
                default: vec += bytes; break;
            }
        }
        long readPerToken = config.TieEmbeddings ? total : total - emb + embRow;
        return new WeightEstimate
        {
            Plan = plan.Name,
            Parameters = parameters,
            TotalBytes = total,
            BitsPerWeight = 8.0 * total / parameters,
            EmbeddingBytes = emb,
            OutputBytes = output,
            AttentionBytes = attn,
            FfnBytes = ffn,
            NormAndBiasBytes = vec,
            BytesReadPerToken = readPerToken,
            MatmulParameters = matmul,
            ByFormat = order.Select(n => new FormatShare(n, shares[n].N, shares[n].P, shares[n].B)).ToArray(),
            Tensors = sizes,
        };
    }

    /// <summary>
    /// KV cache bytes: 2 (K and V) × layers × context × batch × bytes of one K/V row of
    /// kv_heads × head_dim values in <paramref name="type"/>. For float types this is
    /// 2 × layers × context × kv_heads × head_dim × batch × bytes per element.
    /// (Sliding-window models could cache less; llama.cpp caches the full context for them too.)
    /// </summary>
    public static long KvCacheBytes(ModelConfig config, int context, int batch, KvCacheType type)
    {
        ArgumentNullException.ThrowIfNull(config);
        LlamaTensorLayout.Validate(config);
        if (context <= 0) throw new LowbitException($"context must be positive, got {context}.");
        if (batch <= 0) throw new LowbitException($"batch must be positive, got {batch}.");
        return checked(2L * config.NumLayers * context * batch * KvCacheTypes.RowBytes(type, config.KvDim));
    }

    /// <summary>KV bytes one sequence reads per decoded token at <paramref name="context"/> tokens of history.</summary>
    public static long KvBytesReadPerToken(ModelConfig config, int context, KvCacheType type) =>
        KvCacheBytes(config, context, 1, type);

    /// <summary>
    /// Conservative compute-buffer estimate for a llama.cpp-like engine processing a micro-batch
    /// of n = min(MicroBatch, Context × Batch) tokens, all intermediates F32 (4 bytes):
    /// <list type="bullet">
    /// <item>logits: vocab × n × 4 (llama.cpp reserves the graph for every token producing logits);</item>
    /// <item>hidden-sized: 4 × hidden × n × 4 (residual stream, normed input, attention output, FFN output);</item>
    /// <item>q/k/v projections: (q_dim + 2 × kv_dim) × n × 4;</item>
    /// <item>FFN: 3 × ffn × n × 4 (gate, up, and their product);</item>
    /// <item>attention scores: heads × (Context × Batch) × n × 4 — the KQ matrix over a unified
    /// cache; 0 with flash attention, which never materializes it.</item>
    /// </list>
    /// ggml's graph allocator reuses buffers across ops and layers, so the true peak is about one
    /// layer's live tensors plus the logits; summing all parts as if simultaneously live
    /// over-estimates (e.g. ~0.93 GB for Llama-3.1-8B at context 8192 where llama.cpp's CUDA build
    /// reports a compute buffer of roughly 0.5–0.6 GB) — deliberately, to keep "fits" honest.
    /// </summary>
    public static ComputeBufferEstimate ComputeBuffer(ModelConfig config, InferenceSettings settings)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(settings);
        LlamaTensorLayout.Validate(config);
        settings.Validate();
        long kvLen = (long)settings.Context * settings.Batch;
        int n = (int)Math.Min(settings.MicroBatch, kvLen);
        const long F32 = 4;
        long logits = (long)config.VocabSize * n * F32;
        long hidden = 4L * config.HiddenSize * n * F32;
        long qkv = ((long)config.QDim + 2L * config.KvDim) * n * F32;
        long ffn = 3L * config.IntermediateSize * n * F32;
        long scores = settings.FlashAttention ? 0 : checked(config.NumHeads * kvLen * n * F32);
        return new ComputeBufferEstimate(n, logits, hidden, qkv, ffn, scores);
    }

    /// <summary>Weights + KV cache + compute buffer + runtime overhead.</summary>
    public static MemoryEstimate Estimate(ModelConfig config, QuantizationPlan plan, InferenceSettings settings, RuntimeOverhead overhead)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(overhead);
        settings.Validate();
        return new MemoryEstimate
        {
            Weights = Weights(config, plan),
            Settings = settings,
            KvCacheBytes = KvCacheBytes(config, settings.Context, settings.Batch, settings.KvCache),
            ComputeBuffer = ComputeBuffer(config, settings),
            Overhead = overhead,
        };
    }
}
