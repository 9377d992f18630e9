using System.Runtime.InteropServices;
using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Model;

namespace Lowbit.Tests.Engine;

public sealed class InferenceEngineTests
{
    private static readonly int[] Sequence = [1, 461, 461, 401, 401, 401, 461, 378, 455, 22, 300, 17, 42, 333, 356, 305, 347, 314, 9, 88];

    private static float[] DecodeAll(InferenceEngine e, int[] tokens)
    {
        e.Reset();
        var all = new float[tokens.Length * e.VocabSize];
        for (int i = 0; i < tokens.Length; i++) e.Decode(tokens[i]).CopyTo(all, i * e.VocabSize);
        return all;
    }

    private static float[] PrefillAll(InferenceEngine e, int[] tokens)
    {
        e.Reset();
        var all = new float[tokens.Length * e.VocabSize];
        e.Evaluate(tokens, 0, all);
        return all;
    }

    [Fact]
    public void Prefill_equals_token_by_token_decode_for_f32_weights()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var e = new InferenceEngine(model, new EngineOptions { Threads = 2 });
        var a = PrefillAll(e, Sequence);
        var b = DecodeAll(e, Sequence);
        // Bit for bit: per value, the one-token attention (items = KV heads) and matrix products do prefill's arithmetic.
        Assert.Equal(a, b);
    }

    [Theory]
    [InlineData(4, 1)] // four query heads a KV head: one 4-head pass of the value sums, one 4x4 tile of the scores
    [InlineData(8, 1)] // eight: two 4-head passes; the scores in a 6-token tile and two single tokens
    public void Prefill_equals_token_by_token_decode_for_64_wide_heads(int heads, int kvHeads)
    {
        var config = new ModelConfig
        {
            Architecture = "llama", VocabSize = 512, HiddenSize = heads * 64, IntermediateSize = 96, NumLayers = 2,
            NumHeads = heads, NumKvHeads = kvHeads, HeadDim = 64, MaxPositions = 64, TieEmbeddings = false,
        };
        using var model = SyntheticModel.Create(config, CodecRegistry.Get("f32"), seed: 5);
        var e = new InferenceEngine(model, new EngineOptions { Threads = 2 });
        // Bit for bit: one-token attention's kernels (several query heads per pass) do the batched kernels' arithmetic.
        Assert.Equal(PrefillAll(e, Sequence), DecodeAll(e, Sequence));
    }

    [Fact]
    public void Batches_split_by_MaxBatch_give_the_same_logits()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var whole = PrefillAll(new InferenceEngine(model), Sequence);
        var split = PrefillAll(new InferenceEngine(model, new EngineOptions { MaxBatch = 7 }), Sequence);
        for (int i = 0; i < whole.Length; i++) Assert.True(Math.Abs(whole[i] - split[i]) <= 1e-4f * Math.Max(1, Math.Abs(whole[i])));
        // Only the requested rows.
        var e = new InferenceEngine(model, new EngineOptions { MaxBatch = 6 });
        var tail = new float[5 * e.VocabSize];
        e.Evaluate(Sequence, Sequence.Length - 5, tail);
        Assert.Equal(whole.AsSpan((Sequence.Length - 5) * e.VocabSize).ToArray(), tail);
    }

    [Theory]
    [InlineData("f16")]
    [InlineData("bf16")]
    public void Results_do_not_depend_on_the_thread_count(string codec)
    {
        using var model = SyntheticModel.Create(SmallConfig(), CodecRegistry.Get(codec), seed: 3);
        var one = PrefillAll(new InferenceEngine(model, new EngineOptions { Threads = 1 }), Sequence);
        var four = PrefillAll(new InferenceEngine(model, new EngineOptions { Threads = 4 }), Sequence);
        Assert.Equal(one, four);
        var d1 = DecodeAll(new InferenceEngine(model, new EngineOptions { Threads = 1 }), Sequence);
        var d3 = DecodeAll(new InferenceEngine(model, new EngineOptions { Threads = 3 }), Sequence);
        Assert.Equal(d1, d3);
        for (int i = 0; i < one.Length; i++) Assert.True(Math.Abs(one[i] - d1[i]) <= 1e-4f * Math.Max(1, Math.Abs(one[i])));
    }

    private static ModelConfig SmallConfig(bool qkNorm = false, bool bias = false, int window = 0) => new()
    {
        Architecture = qkNorm ? "qwen3" : "llama", VocabSize = 512, HiddenSize = 64, IntermediateSize = 96, NumLayers = 2,
        NumHeads = 4, NumKvHeads = 2, HeadDim = 16, MaxPositions = 64, TieEmbeddings = false, QkNorm = qkNorm,
        AttentionBias = bias, SlidingWindow = window, Rope = qkNorm ? RopeStyle.NeoX : RopeStyle.Interleaved,
    };

    [Theory]
    [InlineData(KvCacheType.F16, 0.01)]
    [InlineData(KvCacheType.Q8_0, 0.2)]
    [InlineData(KvCacheType.Fp8E4M3, 1.0)]
    public void Quantized_kv_caches_stay_close_to_f32(KvCacheType kv, double meanTolerance)
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var reference = PrefillAll(new InferenceEngine(model), Sequence);
        var e = new InferenceEngine(model, new EngineOptions { KvCache = kv });
        var q = PrefillAll(e, Sequence);
        var d = DecodeAll(e, Sequence);
        double sumErr = 0, sumErrD = 0, maxErr = 0;
        for (int i = 0; i < q.Length; i++)
        {
            sumErr += Math.Abs(q[i] - reference[i]);
            sumErrD += Math.Abs(d[i] - reference[i]);
            maxErr = Math.Max(maxErr, Math.Abs(q[i] - reference[i]));
        }
        double meanErr = sumErr / q.Length, meanErrD = sumErrD / q.Length;
        Assert.True(meanErr < meanTolerance && meanErrD < meanTolerance, $"{kv}: mean |logit error| {meanErr} / {meanErrD}, max {maxErr}");
        Assert.True(meanErr > 0, "a quantized cache must change something");
        int agree = 0;
        for (int t = 0; t < Sequence.Length; t++)
            if (Sampler.ArgMax(reference.AsSpan(t * e.VocabSize, e.VocabSize)) == Sampler.ArgMax(q.AsSpan(t * e.VocabSize, e.VocabSize))) agree++;
        Assert.True(agree >= Sequence.Length * 8 / 10, $"{kv}: top token agrees at {agree}/{Sequence.Length} positions");
    }

    [Theory]
    [InlineData(KvCacheType.F32, 0.0)]
    [InlineData(KvCacheType.F16, 1.0 / 2048)]
    [InlineData(KvCacheType.Q8_0, 0.5 / 127 + 1.0 / 2048)]
    [InlineData(KvCacheType.Fp8E4M3, 1.0 / 16)]
    public void Kv_cache_rows_round_trip_within_the_format_precision(KvCacheType type, double relative)
    {
        int kvDim = 64, headDim = 16;
        var cache = new KvCache(type, layers: 2, capacity: 4, kvDim, headDim);
        var r = new Random(11);
        var k = Enumerable.Range(0, kvDim).Select(_ => (float)(r.NextDouble() * 6 - 3)).ToArray();
        var v = Enumerable.Range(0, kvDim).Select(_ => (float)(r.NextDouble() * 0.2 - 0.1)).ToArray();
        cache.Write(1, 2, k, v);
        var kb = RowAt(false, 2);
        var vb = RowAt(true, 2);
        unsafe float[] RowAt(bool values, int pos) // the position's values, head by head
        {
            float* rows = cache.Read(1, values, 3, out var layout);
            var row = new float[kvDim];
            for (int i = 0; i < kvDim; i++) row[i] = rows[i / headDim * layout.HeadStride + pos * layout.RowStride + i % headDim];
            return row;
        }
        for (int i = 0; i < kvDim; i++)
        {
            // Q8_0 error is relative to the block maximum, the float formats' to the value.
            double kScale = type == KvCacheType.Q8_0 ? k.Take(32 * (i / 32 + 1)).Skip(32 * (i / 32)).Max(Math.Abs) : Math.Abs(k[i]);
            double vScale = type == KvCacheType.Q8_0 ? v.Take(32 * (i / 32 + 1)).Skip(32 * (i / 32)).Max(Math.Abs) : Math.Abs(v[i]);
            double absolute = type == KvCacheType.Fp8E4M3 ? 1.0 / 1024 : 1e-7; // FP8 subnormal step is 2^-9
            Assert.True(Math.Abs(kb[i] - k[i]) <= relative * kScale + absolute, $"{type} k[{i}] {kb[i]} vs {k[i]}");
            Assert.True(Math.Abs(vb[i] - v[i]) <= relative * vScale + absolute, $"{type} v[{i}] {vb[i]} vs {v[i]}");
        }
    }

    [Fact]
    public void NeoX_rope_on_rotate_half_permuted_qk_equals_interleaved_rope()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var c = model.Config;
        var tensors = new List<ModelTensor>();
        foreach (var t in model.Tensors)
        {
            bool qk = t.Name.EndsWith("attn_q.weight", StringComparison.Ordinal) || t.Name.EndsWith("attn_k.weight", StringComparison.Ordinal);
            if (!qk) { tensors.Add(t); continue; }
            var src = t.ToFloat();
            var dst = new float[src.Length];
            int hd = c.HeadDim, half = hd / 2, cols = (int)t.Cols;
            for (int head = 0; head < t.Rows / hd; head++)
                for (int i = 0; i < half; i++)
                {
                    src.AsSpan((head * hd + 2 * i) * cols, cols).CopyTo(dst.AsSpan((head * hd + i) * cols));
                    src.AsSpan((head * hd + 2 * i + 1) * cols, cols).CopyTo(dst.AsSpan((head * hd + half + i) * cols));
                }
            tensors.Add(new ModelTensor(t.Name, t.Shape, t.Codec, MemoryMarshal.AsBytes(dst.AsSpan()).ToArray()));
        }
        using var neox = new LoadedModel("neox", "test", c with { Rope = RopeStyle.NeoX }, null, tensors);
        var a = PrefillAll(new InferenceEngine(model), Sequence);
        var b = PrefillAll(new InferenceEngine(neox), Sequence);
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-4f * Math.Max(1, Math.Abs(a[i])));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(70)]
    public void One_token_attention_split_over_threads_equals_prefill(int window)
    {
        // Wide enough (512 query values × up to 80 positions) that one-token attention runs as a parallel step.
        var config = new ModelConfig
        {
            Architecture = "llama", VocabSize = 256, HiddenSize = 512, IntermediateSize = 256, NumLayers = 1,
            NumHeads = 8, NumKvHeads = 2, HeadDim = 64, MaxPositions = 128, SlidingWindow = window,
        };
        using var model = SyntheticModel.Create(config, CodecRegistry.Get("f32"), seed: 5);
        var tokens = Enumerable.Range(0, 80).Select(i => (i * 37 + 11) % 256).ToArray();
        var prefill = PrefillAll(new InferenceEngine(model, new EngineOptions { Threads = 1 }), tokens);
        Assert.Equal(prefill, DecodeAll(new InferenceEngine(model, new EngineOptions { Threads = 2 }), tokens));
        Assert.Equal(prefill, DecodeAll(new InferenceEngine(model, new EngineOptions { Threads = 3 }), tokens));
    }

    [Fact]
    public void Qwen_style_bias_qk_norm_and_sliding_window_run_consistently()
    {
        using var model = SyntheticModel.Create(SmallConfig(qkNorm: true, bias: true, window: 5), CodecRegistry.Get("f32"), seed: 9);
        var e = new InferenceEngine(model);
        var a = PrefillAll(e, Sequence);
        var b = DecodeAll(e, Sequence);
        Assert.Equal(a, b);
        // The window matters: without it later positions differ.
        using var noWindow = SyntheticModel.Create(SmallConfig(qkNorm: true, bias: true), CodecRegistry.Get("f32"), seed: 9);
        var c = PrefillAll(new InferenceEngine(noWindow), Sequence);
        int v = e.VocabSize;
        Assert.Equal(a.AsSpan(0, 5 * v).ToArray(), c.AsSpan(0, 5 * v).ToArray());
        Assert.NotEqual(a.AsSpan(10 * v, v).ToArray(), c.AsSpan(10 * v, v).ToArray());
    }

    [Fact]
    public void Bad_tokens_and_a_full_context_are_reported()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var e = new InferenceEngine(model, new EngineOptions { ContextLength = 8 });
        Assert.Throws<LowbitException>(() => e.Decode(512));
        Assert.Throws<LowbitException>(() => e.Decode(-1));
        e.Prefill(Sequence.AsSpan(0, 8));
        Assert.Throws<LowbitException>(() => e.Decode(1));
        e.Reset();
        Assert.Equal(0, e.Position);
        e.Decode(1);
        Assert.Equal(1, e.Position);
    }

    [Fact]
    public void Fp8_e4m3_round_trips_every_code_and_rounds_to_nearest()
    {
        for (int b = 0; b < 256; b++)
        {
            float f = Fp8E4M3.ToFloat((byte)b);
            if (float.IsNaN(f)) { Assert.True((b & 0x7F) == 0x7F); continue; }
            byte back = Fp8E4M3.FromFloat(f);
            if (f == 0) Assert.Equal(0f, Fp8E4M3.ToFloat(back));
            else Assert.Equal(b, back);
        }
        Assert.Equal(448f, Fp8E4M3.ToFloat(Fp8E4M3.FromFloat(1e6f)));
        Assert.Equal(-448f, Fp8E4M3.ToFloat(Fp8E4M3.FromFloat(-500f)));
        var r = new Random(5);
        var finite = Enumerable.Range(0, 256).Select(i => Fp8E4M3.ToFloat((byte)i)).Where(v => !float.IsNaN(v)).ToArray();
        for (int i = 0; i < 2000; i++)
        {
            float x = (float)((r.NextDouble() * 2 - 1) * Math.Pow(2, r.Next(-12, 9)));
            float q = Fp8E4M3.ToFloat(Fp8E4M3.FromFloat(x));
            float best = finite.MinBy(v => Math.Abs(v - x));
            Assert.Equal(Math.Abs(best - x), Math.Abs(q - x));
        }
    }

    [Fact]
    public void Decode_bytes_and_work_per_token_count_every_matrix()
    {
        using var model = Llama2cReader.Load(EngineTestPaths.Stories260K);
        var e = new InferenceEngine(model);
        var c = model.Config;
        long matrices = (long)c.NumLayers * (2L * c.HiddenSize * c.QDim + 2L * c.HiddenSize * c.KvDim + 3L * c.HiddenSize * c.IntermediateSize)
            + (long)c.VocabSize * c.HiddenSize;
        Assert.Equal(4 * matrices + 4L * c.HiddenSize, e.WeightBytesPerToken);
        Assert.Equal(e.WeightBytesPerToken + 10L * c.NumLayers * 2 * c.KvDim * 4, e.DecodeBytesPerToken(10));
    }
}
