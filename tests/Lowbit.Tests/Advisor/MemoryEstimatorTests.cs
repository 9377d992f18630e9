using Lowbit.Advisor;
using Lowbit.Formats;
using Lowbit.Model;

namespace Lowbit.Tests.Advisor;

public sealed class MemoryEstimatorTests
{
    // vocab 100, hidden 64, ffn 128, 2 layers, 4 heads × 16, 2 KV heads → kv_dim 32, untied.
    private static readonly ModelConfig Tiny = new()
    {
        Architecture = "llama", VocabSize = 100, HiddenSize = 64, IntermediateSize = 128,
        NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 16,
    };

    private static TensorCodec C(string name) => TestCodecs.Get(name);

    [Fact]
    public void Tiny_model_tensor_list_matches_hand_count()
    {
        var slots = LlamaTensorLayout.Enumerate(Tiny);
        // token_embd + 2 × 9 per layer + output_norm + output
        Assert.Equal(1 + 2 * 9 + 2, slots.Count);
        Assert.Equal(86_848, slots.Sum(s => s.Elements));
        Assert.Equal(Tiny.ParameterCount, slots.Sum(s => s.Elements));
        var down = slots.Single(s => s.Name == "blk.1.ffn_down.weight");
        Assert.Equal((64L, 128L), (down.Rows, down.Cols));
        var k = slots.Single(s => s.Name == "blk.0.attn_k.weight");
        Assert.Equal((32L, 64L), (k.Rows, k.Cols));
    }

    [Fact]
    public void Tiny_model_f16_weights_are_hand_computed()
    {
        // vectors: 2 layers × 2 norms × 64 + output_norm 64 = 320 values × 4 B = 1,280 B
        // matrices: 86,848 − 320 = 86,528 values × 2 B = 173,056 B
        var w = MemoryEstimator.Weights(Tiny, QuantizationPlan.Uniform(C("f16")));
        Assert.Equal(174_336, w.TotalBytes);
        Assert.Equal(1_280, w.NormAndBiasBytes);
        Assert.Equal(12_800, w.EmbeddingBytes);
        Assert.Equal(12_800, w.OutputBytes);
        Assert.Equal(2 * (4096 + 2048 + 2048 + 4096) * 2, w.AttentionBytes);
        Assert.Equal(2 * 3 * 8192 * 2, w.FfnBytes);
        // decode reads everything but the embedding table, plus one embedding row (64 × 2 B)
        Assert.Equal(174_336 - 12_800 + 128, w.BytesReadPerToken);
        Assert.Equal(86_848 - 320 - 6_400, w.MatmulParameters);
    }

    [Fact]
    public void Llama_cpp_convention_sends_output_to_q6_K_then_falls_back_to_q8_0_for_short_rows()
    {
        // Target q4_0 (32-blocks). output.weight would become q6_K, but 64 is not a multiple of
        // 256, so llama.cpp's fallback turns it into q8_0 (200 blocks × 34 B = 6,800 B).
        // q4_0: token_embd 6,400 + 2 × 36,864 block weights = 80,128 values → 2,504 blocks × 18 B = 45,072 B.
        var plan = QuantizationPlan.LlamaCppDefault(C("q4_0"), resolve: TestCodecs.Resolve);
        var w = MemoryEstimator.Weights(Tiny, plan);
        Assert.Equal("q8_0", w.Tensors.Single(t => t.Name == "output.weight").Format);
        Assert.Equal("q4_0", w.Tensors.Single(t => t.Name == "token_embd.weight").Format);
        Assert.Equal("f32", w.Tensors.Single(t => t.Name == "output_norm.weight").Format);
        Assert.Equal(45_072 + 6_800 + 1_280, w.TotalBytes);
        Assert.Equal(8.0 * 53_152 / 86_848, w.BitsPerWeight, 12);
        Assert.Equal(3, w.ByFormat.Count);
        Assert.Equal(53_152, w.ByFormat.Sum(f => f.Bytes));
    }

    [Fact]
    public void Llama_3_1_8B_in_bf16_is_16_060_522_496_bytes()
    {
        var cfg = ModelShapes.Get("llama-3.1-8b");
        Assert.Equal(8_030_261_248, cfg.ParameterCount);
        var bf16 = C("bf16");
        var everythingBf16 = new QuantizationPlan("all bf16", _ => bf16);
        Assert.Equal(16_060_522_496, MemoryEstimator.Weights(cfg, everythingBf16).TotalBytes);
        // Norms in F32 (GGUF convention): 32 × 2 × 4096 + 4096 = 266,240 values, 2 more bytes each.
        var w = MemoryEstimator.Weights(cfg, QuantizationPlan.Uniform(bf16));
        Assert.Equal(16_060_522_496 + 2 * 266_240, w.TotalBytes);
        Assert.Equal(128_256L * 4096 * 2, w.EmbeddingBytes);
        Assert.Equal(128_256L * 4096 * 2, w.OutputBytes);
    }

    [Fact]
    public void Llama_3_1_8B_q8_0_keeps_output_in_q8_0()
    {
        var cfg = ModelShapes.Get("llama-3.1-8b");
        var w = MemoryEstimator.Weights(cfg, QuantizationPlan.LlamaCppDefault(C("q8_0"), resolve: TestCodecs.Resolve));
        // every matrix: values / 32 × 34 B; norms F32
        long matrices = 8_030_261_248 - 266_240;
        Assert.Equal(matrices / 32 * 34 + 266_240 * 4, w.TotalBytes);
    }

    [Fact]
    public void Tied_embedding_is_quantized_like_the_output_matrix()
    {
        var cfg = ModelShapes.Get("llama-3.2-1b");
        var slots = LlamaTensorLayout.Enumerate(cfg);
        Assert.DoesNotContain(slots, s => s.Name == "output.weight");
        Assert.True(slots.Single(s => s.Name == "token_embd.weight").SharedWithOutput);
        var w = MemoryEstimator.Weights(cfg, QuantizationPlan.LlamaCppDefault(C("q4_0"), resolve: TestCodecs.Resolve));
        var emb = w.Tensors.Single(t => t.Name == "token_embd.weight");
        Assert.Equal("q6_K", emb.Format);
        Assert.Equal(128_256L * 2048 / 256 * 210, emb.Bytes);
        // tied: the whole table is read every token (as the output matrix)
        Assert.Equal(w.TotalBytes, w.BytesReadPerToken);
        Assert.Equal(1_235_814_400, w.Parameters);
    }

    [Fact]
    public void Qwen2_5_0_5B_rows_of_896_fall_back_like_llama_quantize_does()
    {
        // hidden 896 is not a multiple of 256: q4_K tensors reading it fall back to q5_0, the
        // tied embedding/output goes to q8_0 (row not a multiple of the target block), ffn_down
        // (rows of 4864 = 19 × 256) stays q4_K, biases and norms stay F32.
        var w = MemoryEstimator.Weights(ModelShapes.Get("qwen2.5-0.5b"),
            QuantizationPlan.LlamaCppDefault(C("q4_K"), resolve: TestCodecs.Resolve));
        string F(string name) => w.Tensors.Single(t => t.Name == name).Format;
        Assert.Equal("q5_0", F("blk.0.attn_q.weight"));
        Assert.Equal("q5_0", F("blk.0.ffn_up.weight"));
        Assert.Equal("q4_K", F("blk.0.ffn_down.weight"));
        Assert.Equal("q8_0", F("token_embd.weight"));
        Assert.Equal("f32", F("blk.0.attn_v.bias"));
        Assert.Equal(151_936L * 896 / 32 * 34, w.EmbeddingBytes);
    }

    [Fact]
    public void Linear_only_plan_keeps_embeddings_in_bf16()
    {
        var cfg = ModelShapes.Get("llama-3.1-8b");
        var w = MemoryEstimator.Weights(cfg, QuantizationPlan.LinearOnly(C("q4_0"), resolve: TestCodecs.Resolve));
        Assert.Equal("bf16", w.Tensors.Single(t => t.Name == "token_embd.weight").Format);
        Assert.Equal("bf16", w.Tensors.Single(t => t.Name == "output.weight").Format);
        Assert.Equal("q4_0", w.Tensors.Single(t => t.Name == "blk.31.ffn_down.weight").Format);
        long blockLinear = 32L * (4096 * 4096 * 2 + 1024 * 4096 * 2 + 3L * 4096 * 14336);
        Assert.Equal(blockLinear / 32 * 18 + 2 * 128_256L * 4096 * 2 + 266_240 * 4, w.TotalBytes);
    }

    [Theory]
    [InlineData("q4_K", "q5_0")]
    [InlineData("q5_K", "q5_1")]
    [InlineData("q6_K", "q8_0")]
    [InlineData("q2_K", "q4_0")]
    [InlineData("iq4_xs", "iq4_nl")]
    public void Llama_cpp_shape_fallback_table(string wanted, string expected)
    {
        var slot = new TensorSlot("blk.0.ffn_down.weight", TensorRole.FfnDown, 0, 64, 96); // 96: not a multiple of 256
        Assert.Equal(expected, QuantizationPlan.LlamaCppFallback(slot, C(wanted), TestCodecs.Resolve).Name);
        var fits = slot with { Cols = 512 };
        Assert.Same(C(wanted), QuantizationPlan.LlamaCppFallback(fits, C(wanted), TestCodecs.Resolve));
    }

    [Fact]
    public void Fallback_goes_to_f16_when_no_block_type_fits_or_is_registered()
    {
        var odd = new TensorSlot("x.weight", TensorRole.FfnUp, 0, 8, 40); // 40 is not a multiple of 32
        Assert.Equal("f16", QuantizationPlan.LlamaCppFallback(odd, C("q4_K"), TestCodecs.Resolve).Name);
        var slot = odd with { Cols = 96 };
        Assert.Equal("f16", QuantizationPlan.LlamaCppFallback(slot, C("q4_K"), TestCodecs.Only("q4_K")).Name);
    }

    [Fact]
    public void Plan_that_picks_an_incompatible_codec_is_rejected_with_the_tensor_name()
    {
        var q4k = C("q4_K");
        var plan = new QuantizationPlan("bad", _ => q4k);
        var e = Assert.Throws<LowbitException>(() => MemoryEstimator.Weights(Tiny, plan));
        Assert.Contains("token_embd.weight", e.Message);
        Assert.Contains("256", e.Message);
    }

    [Fact]
    public void Llama_cpp_plan_reports_a_missing_q6_K()
    {
        var plan = QuantizationPlan.LlamaCppDefault(C("q4_0"), resolve: TestCodecs.Only("q4_0"));
        var e = Assert.Throws<LowbitException>(() => MemoryEstimator.Weights(ModelShapes.Get("llama-3.1-8b"), plan));
        Assert.Contains("q6_K", e.Message);
    }

    [Fact]
    public void Kv_cache_for_llama_3_1_8B_at_8192_f16_is_one_GiB()
    {
        var cfg = ModelShapes.Get("llama-3.1-8b");
        // 2 × 32 layers × 8192 × 8 kv heads × 128 × 1 × 2 B
        Assert.Equal(1_073_741_824, MemoryEstimator.KvCacheBytes(cfg, 8192, 1, KvCacheType.F16));
        Assert.Equal(2_147_483_648, MemoryEstimator.KvCacheBytes(cfg, 8192, 1, KvCacheType.F32));
        Assert.Equal(536_870_912, MemoryEstimator.KvCacheBytes(cfg, 8192, 1, KvCacheType.Fp8));
        // q8_0: 1024 values per row → 32 blocks × 34 B = 1,088 B
        Assert.Equal(2L * 32 * 8192 * 1088, MemoryEstimator.KvCacheBytes(cfg, 8192, 1, KvCacheType.Q8_0));
        Assert.Equal(2L * 32 * 8192 * 576, MemoryEstimator.KvCacheBytes(cfg, 8192, 1, KvCacheType.Q4_0));
        Assert.Equal(4 * 1_073_741_824L, MemoryEstimator.KvCacheBytes(cfg, 8192, 4, KvCacheType.F16));
    }

    [Fact]
    public void Kv_cache_block_type_rejects_rows_it_cannot_split()
    {
        var odd = Tiny with { NumKvHeads = 1, NumHeads = 4, HeadDim = 20 }; // kv row 20 values
        var e = Assert.Throws<LowbitException>(() => MemoryEstimator.KvCacheBytes(odd, 16, 1, KvCacheType.Q8_0));
        Assert.Contains("32", e.Message);
        Assert.Equal(2L * 2 * 16 * 20 * 2, MemoryEstimator.KvCacheBytes(odd, 16, 1, KvCacheType.F16));
    }

    [Theory]
    [InlineData("f16", KvCacheType.F16)]
    [InlineData("Q8_0", KvCacheType.Q8_0)]
    [InlineData("fp8_e4m3", KvCacheType.Fp8)]
    [InlineData("q4_0", KvCacheType.Q4_0)]
    public void Kv_cache_type_names_parse(string text, KvCacheType expected) =>
        Assert.Equal(expected, KvCacheTypes.Parse(text));

    [Fact]
    public void Unknown_kv_cache_type_is_a_user_error() =>
        Assert.Throws<LowbitException>(() => KvCacheTypes.Parse("q3_K"));

    [Fact]
    public void Compute_buffer_terms_are_hand_computed()
    {
        var s = new InferenceSettings { Context = 16, Batch = 2, MicroBatch = 512 };
        var cb = MemoryEstimator.ComputeBuffer(Tiny, s);
        Assert.Equal(32, cb.MicroBatchTokens);             // min(512, 16 × 2)
        Assert.Equal(100 * 32 * 4, cb.LogitsBytes);          // 12,800
        Assert.Equal(4 * 64 * 32 * 4, cb.HiddenBytes);       // 32,768
        Assert.Equal((64 + 2 * 32) * 32 * 4, cb.QkvBytes);   // 16,384
        Assert.Equal(3 * 128 * 32 * 4, cb.FfnBytes);         // 49,152
        Assert.Equal(4 * 32 * 32 * 4, cb.AttentionScoreBytes); // 16,384
        Assert.Equal(127_488, cb.TotalBytes);
        Assert.Equal(0, MemoryEstimator.ComputeBuffer(Tiny, s with { FlashAttention = true }).AttentionScoreBytes);
    }

    [Fact]
    public void Compute_buffer_for_llama_3_1_8B_at_8192_is_under_a_gigabyte()
    {
        var cb = MemoryEstimator.ComputeBuffer(ModelShapes.Get("llama-3.1-8b"), new InferenceSettings { Context = 8192 });
        Assert.Equal(128_256L * 512 * 4, cb.LogitsBytes);
        Assert.Equal(32L * 8192 * 512 * 4, cb.AttentionScoreBytes);
        Assert.InRange(cb.TotalBytes, 900_000_000, 1_000_000_000);
    }

    [Fact]
    public void Estimate_total_is_the_sum_of_its_parts()
    {
        var s = new InferenceSettings { Context = 16, Batch = 2, KvCache = KvCacheType.Q8_0 };
        var overhead = RuntimeOverhead.For(DeviceKind.Gpu);
        var e = MemoryEstimator.Estimate(Tiny, QuantizationPlan.Uniform(C("f16")), s, overhead);
        Assert.Equal(2L * 2 * 16 * 2 * 34, e.KvCacheBytes); // 2 × layers × ctx × batch × (32 values → 34 B)
        Assert.Equal(174_336 + 4_352 + 127_488 + (512 + 256) * (1L << 20), e.TotalBytes);
    }

    [Fact]
    public void Bad_settings_are_user_errors()
    {
        Assert.Throws<LowbitException>(() => MemoryEstimator.KvCacheBytes(Tiny, 0, 1, KvCacheType.F16));
        Assert.Throws<LowbitException>(() => MemoryEstimator.ComputeBuffer(Tiny, new InferenceSettings { Batch = 0 }));
        Assert.Throws<LowbitException>(() => LlamaTensorLayout.Enumerate(Tiny with { NumKvHeads = 3 }));
    }
}
