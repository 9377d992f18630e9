using System.Text.Json;
using Lowbit.Advisor;
using Xunit.Abstractions;

namespace Lowbit.Tests.Advisor;

public sealed class DeploymentAdvisorTests(ITestOutputHelper output)
{
    private static readonly HardwareCatalog Catalog = HardwareCatalog.LoadBuiltIn();

    private static AdviceRequest Llama8B(int context = 8192, params string[] formats) => new()
    {
        ModelName = "llama-3.1-8b",
        Model = ModelShapes.Get("llama-3.1-8b"),
        Settings = new InferenceSettings { Context = context },
        Formats = formats.Length == 0 ? null : formats,
        ResolveCodec = TestCodecs.Resolve,
    };

    [Fact]
    public void Bf16_decode_estimate_on_rtx_4090_is_hand_computed()
    {
        var report = DeploymentAdvisor.Advise(Llama8B(8192, "bf16"), [Catalog.Get("rtx-4090")]);
        var row = Assert.Single(Assert.Single(report.Devices).Formats);
        // weights (norms F32): 16,061,054,976 B; read per token: minus the 1,050,673,152 B embedding
        // table plus one 8,192 B row = 15,010,390,016 B; KV at 8192 (F16) = 1,073,741,824 B.
        double expected = 1008e9 * 0.70 / (15_010_390_016.0 + 1_073_741_824.0);
        Assert.Equal(expected, row.DecodeTokensPerSecondEstimate, 9);
        Assert.InRange(row.DecodeTokensPerSecondEstimate, 43.8, 43.9);
        Assert.Equal(16_061_054_976, row.WeightBytes);
        Assert.Equal(1_073_741_824, row.KvCacheBytes);
        Assert.Equal((512 + 256) * (1L << 20), row.OverheadBytes);
        Assert.Equal(row.WeightBytes + row.KvCacheBytes + row.ComputeBufferBytes + row.OverheadBytes, row.TotalBytes);
        Assert.Equal(24L * (1L << 30) - row.TotalBytes, row.HeadroomBytes);
        Assert.True(row.Fits);
        Assert.Equal("fp16", row.ComputePath);
    }

    [Fact]
    public void Prefill_estimate_is_compute_bound_with_attention_flops()
    {
        var cfg = ModelShapes.Get("llama-3.1-8b");
        var report = DeploymentAdvisor.Advise(Llama8B(8192, "bf16"), [Catalog.Get("h100-sxm")]);
        var row = report.Devices[0].Formats[0];
        long matmul = 8_030_261_248 - 266_240 - 128_256L * 4096; // everything but norms and the embedding lookup
        double flops = 2.0 * matmul + 4.0 * 32 * 4096 * 4096;     // + QKᵀ and AV over the average history 8192/2
        Assert.Equal(flops, DeploymentAdvisor.PrefillFlopsPerToken(cfg, 8192, matmul));
        Assert.Equal(989e12 * 0.5 / flops, row.PrefillTokensPerSecondEstimate!.Value, 6);
    }

    [Fact]
    public void Prefill_is_capped_by_one_weight_pass_per_micro_batch()
    {
        var req = Llama8B(8192, "bf16") with { Settings = new InferenceSettings { Context = 8192, MicroBatch = 1 } };
        var row = DeploymentAdvisor.Advise(req, [Catalog.Get("rtx-4090")]).Devices[0].Formats[0];
        // one token per step reads all weights once: the decode rate without the KV term
        Assert.Equal(1008e9 * 0.70 / 15_010_390_016.0, row.PrefillTokensPerSecondEstimate!.Value, 9);
    }

    [Fact]
    public void Gguf_prefill_takes_the_faster_of_integer_and_half_precision_paths()
    {
        var a = new AdvisorAssumptions();
        var q8 = AdvisorFormats.Get("q8_0");
        // RTX 4090: INT8 660.6 × 0.3 = 198.2 beats FP16 165.2 × 0.5 = 82.6
        Assert.Equal(("int8", (double?)(660.6 * 0.3)), DeploymentAdvisor.AchievedComputeRate(Catalog.Get("rtx-4090"), q8, a));
        // RX 7900 XTX: INT8 runs at the FP16 rate, so dequantize + FP16 BLAS wins (122.8 × 0.5)
        Assert.Equal(("fp16", (double?)(122.8 * 0.5)), DeploymentAdvisor.AchievedComputeRate(Catalog.Get("rx-7900-xtx"), q8, a));
        // Apple Metal: FP16 always; FP8 without FP8 tensor cores: FP16; NVFP4 on Blackwell: FP4
        Assert.Equal("fp16", DeploymentAdvisor.AchievedComputeRate(Catalog.Get("apple-m4-max-40c-48gb"), q8, a).Path);
        Assert.Equal("fp16", DeploymentAdvisor.AchievedComputeRate(Catalog.Get("rtx-3090"), AdvisorFormats.Get("fp8_e4m3"), a).Path);
        Assert.Equal(("fp4", (double?)(1676 * 0.5)), DeploymentAdvisor.AchievedComputeRate(Catalog.Get("rtx-5090"), AdvisorFormats.Get("nvfp4"), a));
        Assert.Equal(("fp32", (double?)null), DeploymentAdvisor.AchievedComputeRate(Catalog.Get("rtx-5090"), AdvisorFormats.Get("f32"), a));
    }

    [Fact]
    public void Cpu_prefill_is_bound_by_its_simd_rate()
    {
        var row = DeploymentAdvisor.Advise(Llama8B(8192, "bf16"), [Catalog.Get("cpu-ddr4-2ch-32gb")]).Devices[0].Formats[0];
        // 1.1 TFLOPS × 0.5 ÷ ~17.2 GFLOP per token
        Assert.InRange(row.PrefillTokensPerSecondEstimate!.Value, 30, 34);
        Assert.True(row.Fits); // ~20.5 GB incl. the 2 GiB OS reserve, within 90 % of 32 GB
    }

    [Fact]
    public void Fits_uses_the_safety_margin_and_the_apple_working_set()
    {
        // context 16384: BF16 weights 16.06 GB + KV 2.15 GB + compute ~1.5 GB + overhead ≈ 20 GB
        var req = Llama8B(16384, "bf16");
        var report = DeploymentAdvisor.Advise(req, [Catalog.Get("rtx-3080-10gb"), Catalog.Get("apple-m4-pro-20c-24gb"), Catalog.Get("rtx-3090")]);
        var (r3080, m4pro, r3090) = (report.Devices[0], report.Devices[1], report.Devices[2]);
        Assert.False(r3080.Formats[0].Fits);
        Assert.True(r3080.Formats[0].HeadroomBytes < 0);
        Assert.Equal((long)(24L * (1L << 30) * 0.75), m4pro.UsableBytes); // Metal working set, not 90 %
        Assert.False(m4pro.Formats[0].Fits);                              // ~20 GB > 19.3 GB usable
        Assert.True(m4pro.Formats[0].HeadroomBytes > 0);                  // though it is below the 24 GB installed
        Assert.Equal((long)(24L * (1L << 30) * 0.90), r3090.UsableBytes);
        Assert.True(r3090.Formats[0].Fits);
    }

    [Fact]
    public void Best_format_is_the_most_bits_that_fit_with_fast_kernels()
    {
        var formats = new[] { "bf16", "q8_0", "q6_K", "q4_K", "q4_0", "nvfp4", "fp8_e4m3" };
        var report = DeploymentAdvisor.Advise(Llama8B(8192, formats),
            [Catalog.Get("rtx-3060-12gb"), Catalog.Get("rtx-4060"), Catalog.Get("rtx-4090"), Catalog.Get("rx-7600")]);
        foreach (var d in report.Devices)
        {
            var expected = d.Formats.Where(f => f.Fits && f.FastKernel).MaxBy(f => f.BitsPerWeight);
            Assert.Equal(expected?.Format, d.BestFormat);
            Assert.All(d.Formats.Where(f => f.Fits), f => Assert.True(f.TotalBytes <= d.UsableBytes));
        }
        Assert.Equal("bf16", report.Devices[2].BestFormat); // 24 GB holds BF16 at 8k
        Assert.Equal("q8_0", report.Devices[0].BestFormat); // 12 GB: q8_0 totals ~11.35 GB of 11.6 GB usable
        Assert.Equal("q4_K", report.Devices[1].BestFormat); // 8 GB: only 4-bit fits; q4_K and q4_0 are both 4.5 bpw,
        Assert.Equal("q4_K", report.Devices[3].BestFormat); // ties keep the request order
    }

    [Fact]
    public void Formats_are_ranked_by_bits_per_weight_of_the_whole_plan()
    {
        var report = DeploymentAdvisor.Advise(Llama8B(4096, "q8_0", "q6_K", "q4_K", "q4_0"), [Catalog.Get("rtx-4090")]);
        var bpw = report.Formats.ToDictionary(f => f.Format, f => f.BitsPerWeight);
        Assert.True(bpw["q8_0"] > bpw["q6_K"] && bpw["q6_K"] > bpw["q4_K"]);
        Assert.Equal(bpw["q4_K"], bpw["q4_0"], 12); // both bodies are 4.5 bpw (144 B / 256, 18 B / 32) with a q6_K output
        Assert.InRange(bpw["q4_0"], 4.5, 4.8);
    }

    [Fact]
    public void Costs_use_cloud_hourly_or_amortized_purchase_price()
    {
        var report = DeploymentAdvisor.Advise(Llama8B(8192, "bf16"), [Catalog.Get("h100-sxm"), Catalog.Get("rtx-4090")]);
        var h100 = report.Devices[0];
        Assert.Equal(2.99, h100.HourlyCostUsd);
        var row = h100.Formats[0];
        Assert.Equal(2.99 / (row.DecodeTokensPerSecondEstimate * 3600) * 1e6, row.CostPerMillionTokensUsd!.Value, 9);
        var r4090 = report.Devices[1];
        Assert.Equal(1599 / (3 * 365 * 8.0), r4090.HourlyCostUsd, 12);
    }

    [Fact]
    public void Measured_speeds_are_shown_next_to_estimates()
    {
        var req = Llama8B(8192, "bf16") with { Measured = [new MeasuredSpeed("rtx-4090", "BF16", 41.5, 5200)] };
        var report = DeploymentAdvisor.Advise(req, [Catalog.Get("rtx-4090"), Catalog.Get("rtx-3090")]);
        Assert.Equal(41.5, report.Devices[0].Formats[0].MeasuredDecodeTokensPerSecond);
        Assert.Equal(5200, report.Devices[0].Formats[0].MeasuredPrefillTokensPerSecond);
        Assert.Null(report.Devices[1].Formats[0].MeasuredDecodeTokensPerSecond);
    }

    [Fact]
    public void Batch_multiplies_kv_and_aggregate_decode()
    {
        var one = DeploymentAdvisor.Advise(Llama8B(4096, "bf16"), [Catalog.Get("h100-sxm")]).Devices[0].Formats[0];
        var req = Llama8B(4096, "bf16") with { Settings = new InferenceSettings { Context = 4096, Batch = 8 } };
        var eight = DeploymentAdvisor.Advise(req, [Catalog.Get("h100-sxm")]).Devices[0].Formats[0];
        Assert.Equal(8 * one.KvCacheBytes, eight.KvCacheBytes);
        Assert.True(eight.DecodeTokensPerSecondEstimate > 5 * one.DecodeTokensPerSecondEstimate);
        Assert.Equal(eight.DecodeTokensPerSecondEstimate / 8, eight.DecodeTokensPerSecondPerSequenceEstimate, 9);
    }

    [Fact]
    public void Json_spells_cache_types_and_price_kinds_as_users_write_them()
    {
        Assert.Equal("\"iq4_nl\"", AdvisorJson.Serialize(KvCacheType.IQ4_NL));
        Assert.Equal("\"q8_0\"", AdvisorJson.Serialize(KvCacheType.Q8_0));
        Assert.Equal("\"cloud-hourly\"", AdvisorJson.Serialize(PriceKind.CloudHourly));
        Assert.Equal("\"apple\"", AdvisorJson.Serialize(DeviceKind.Apple));
        var back = JsonSerializer.Deserialize<InferenceSettings>("{\"context\": 100, \"kvCache\": \"q4_0\"}", AdvisorJson.CreateOptions());
        Assert.Equal(KvCacheType.Q4_0, back!.KvCache);
        Assert.Equal(100, back.Context);
    }

    [Fact]
    public void Custom_plans_are_reported_under_their_label_with_their_kernel_format()
    {
        var q4k = TestCodecs.Get("q4_K");
        var q6k = TestCodecs.Get("q6_K");
        var f32 = TestCodecs.Get("f32");
        // a Q4_K_M-like mixture: attn_v, ffn_down and output in q6_K, other matrices q4_K
        var mixture = new QuantizationPlan("mix", s => s.IsVector ? f32
            : s.Role is TensorRole.AttnV or TensorRole.FfnDown or TensorRole.Output ? q6k : q4k);
        var req = Llama8B(8192, "q4_K") with { CustomPlans = [new CustomPlan("Q4_K_M-like", mixture, "q4_K")] };
        var report = DeploymentAdvisor.Advise(req, [Catalog.Get("rtx-4090")]);
        var rows = report.Devices[0].Formats;
        var custom = rows.Single(r => r.Format == "Q4_K_M-like");
        Assert.Equal("q4_K", custom.KernelFormat);
        Assert.True(custom.FastKernel);
        Assert.Equal("int8", custom.ComputePath);
        Assert.Equal(MemoryEstimator.Weights(ModelShapes.Get("llama-3.1-8b"), mixture).TotalBytes, custom.WeightBytes);
        Assert.True(custom.BitsPerWeight > rows.Single(r => r.Format == "q4_K").BitsPerWeight);
        Assert.Equal("Q4_K_M-like", report.Devices[0].BestFormat);

        var dup = req with { CustomPlans = [new CustomPlan("q4_K", mixture, "q4_K")] };
        Assert.Throws<LowbitException>(() => DeploymentAdvisor.Advise(dup, [Catalog.Get("rtx-4090")]));
    }

    [Fact]
    public void Requests_beyond_the_model_or_engine_limits_carry_warnings()
    {
        var ok = DeploymentAdvisor.Advise(Llama8B(8192, "bf16"), [Catalog.Get("h100-sxm")]);
        Assert.Empty(ok.Warnings);
        var req = Llama8B(8192, "bf16") with { Settings = new InferenceSettings { Context = 200_000, KvCache = KvCacheType.Q8_0 } };
        var report = DeploymentAdvisor.Advise(req, [Catalog.Get("h100-sxm")]);
        Assert.Contains(report.Warnings, w => w.Contains("131072"));
        Assert.Contains(report.Warnings, w => w.Contains("flash attention"));
    }

    [Fact]
    public void Unknown_format_in_a_request_is_a_user_error()
    {
        var e = Assert.Throws<LowbitException>(() => DeploymentAdvisor.Advise(Llama8B(4096, "q4_k_m"), [Catalog.Get("rtx-4090")]));
        Assert.Contains("q4_k_m", e.Message);
    }

    [Fact]
    public void Report_serializes_to_json_with_camel_case_and_string_enums()
    {
        var report = DeploymentAdvisor.Advise(Llama8B(8192, "bf16", "q4_0"), [Catalog.Get("rtx-4090")]);
        using var doc = JsonDocument.Parse(AdvisorJson.Serialize(report));
        var root = doc.RootElement;
        Assert.Equal("llama-3.1-8b", root.GetProperty("model").GetString());
        Assert.Equal("f16", root.GetProperty("settings").GetProperty("kvCache").GetString());
        var device = root.GetProperty("devices")[0];
        Assert.Equal("gpu", device.GetProperty("device").GetProperty("kind").GetString());
        var f = device.GetProperty("formats")[0];
        Assert.True(f.GetProperty("fits").GetBoolean());
        Assert.True(f.GetProperty("decodeTokensPerSecondEstimate").GetDouble() > 0);
        Assert.Contains("estimates", root.GetProperty("note").GetString());
        Assert.Equal(JsonValueKind.Array, root.GetProperty("formats")[0].GetProperty("byFormat").ValueKind);
    }

    [Fact]
    public void Example_table_for_llama_3_1_8B()
    {
        string[] ids = ["rtx-3060-12gb", "rtx-4060", "rtx-4090", "rtx-5090", "rx-7900-xtx", "l4", "a100-80gb", "h100-sxm", "apple-m4-max-40c-48gb", "cpu-ddr5-2ch-64gb"];
        var report = DeploymentAdvisor.Advise(Llama8B(8192, "bf16", "q8_0", "q6_K", "q4_K", "q4_0"), ids.Select(Catalog.Get).ToArray());
        foreach (var d in report.Devices)
        {
            output.WriteLine($"{d.Device.Id}: usable {d.UsableBytes / 1e9:F1} GB, best {d.BestFormat ?? "-"}");
            foreach (var f in d.Formats)
                output.WriteLine($"  {f.Format,-6} {f.BitsPerWeight,5:F2} bpw  total {f.TotalBytes / 1e9,6:F2} GB  fits {f.Fits,-5}  decode ~{f.DecodeTokensPerSecondEstimate,7:F1} t/s  prefill ~{f.PrefillTokensPerSecondEstimate,8:F0} t/s ({f.ComputePath})  $/Mtok {f.CostPerMillionTokensUsd,6:F3}");
        }
        Assert.Equal(ids.Length, report.Devices.Count);
    }
}
