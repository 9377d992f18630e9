using Lowbit.Advisor;

namespace Lowbit.Tests.Advisor;

public sealed class HardwareCatalogTests
{
    private static readonly HardwareCatalog BuiltIn = HardwareCatalog.LoadBuiltIn();

    [Theory]
    [InlineData("rtx-3060-12gb", 12, 360)]
    [InlineData("rtx-3070", 8, 448)]
    [InlineData("rtx-3080-10gb", 10, 760)]
    [InlineData("rtx-3090", 24, 936)]
    [InlineData("rtx-4060", 8, 272)]
    [InlineData("rtx-4060-ti-16gb", 16, 288)]
    [InlineData("rtx-4070", 12, 504)]
    [InlineData("rtx-4070-ti-super", 16, 672)]
    [InlineData("rtx-4080", 16, 716.8)]
    [InlineData("rtx-4090", 24, 1008)]
    [InlineData("rtx-5060-ti-16gb", 16, 448)]
    [InlineData("rtx-5070", 12, 672)]
    [InlineData("rtx-5080", 16, 960)]
    [InlineData("rtx-5090", 32, 1792)]
    [InlineData("rx-7600", 8, 288)]
    [InlineData("rx-7800-xt", 16, 624)]
    [InlineData("rx-7900-xtx", 24, 960)]
    [InlineData("rtx-a6000", 48, 768)]
    [InlineData("rtx-6000-ada", 48, 960)]
    [InlineData("l4", 24, 300)]
    [InlineData("l40s", 48, 864)]
    [InlineData("a10", 24, 600)]
    [InlineData("a100-40gb", 40, 1555)]
    [InlineData("a100-80gb", 80, 2039)]
    [InlineData("h100-pcie", 80, 2000)]
    [InlineData("h100-sxm", 80, 3350)]
    [InlineData("h200", 141, 4800)]
    [InlineData("b200", 180, 8000)]
    [InlineData("mi300x", 192, 5300)]
    [InlineData("apple-m2-max-38c-96gb", 96, 400)]
    [InlineData("apple-m3-max-30c-36gb", 36, 300)]
    [InlineData("apple-m3-max-40c-128gb", 128, 400)]
    [InlineData("apple-m4-pro-20c-64gb", 64, 273)]
    [InlineData("apple-m4-max-40c-128gb", 128, 546)]
    [InlineData("apple-m2-ultra-76c-192gb", 192, 800)]
    [InlineData("apple-m3-ultra-80c-512gb", 512, 819)]
    [InlineData("cpu-ddr5-2ch-64gb", 64, 89.6)]
    [InlineData("epyc-9654-12ch-384gb", 384, 460.8)]
    public void Built_in_catalog_lists_the_devices_users_buy(string id, double memoryGB, double bandwidth)
    {
        var d = BuiltIn.Get(id);
        Assert.Equal(memoryGB, d.MemoryGB);
        Assert.Equal(bandwidth, d.MemoryBandwidthGBps);
        Assert.Equal((long)(memoryGB * (1L << 30)), d.MemoryBytes);
        Assert.NotEmpty(d.Sources);
        Assert.NotNull(d.Price);
    }

    [Fact]
    public void Native_fp8_and_nvfp4_kernels_match_native_tensor_rates()
    {
        foreach (var d in BuiltIn.Devices)
        {
            Assert.Equal(d.Fp4Tflops is not null, d.HasFastKernel("nvfp4"));
            Assert.Equal(d.Fp8Tflops is not null, d.HasFastKernel("fp8_e4m3"));
            Assert.True(d.HasFastKernel("q4_K"), $"{d.Id}: GGUF k-quants run everywhere via llama.cpp");
            if (d.Fp4Tflops is not null) Assert.Contains("Blackwell", d.Architecture);
        }
        Assert.True(BuiltIn.Get("rtx-3090").HasFastKernel("int4-g128-sym"));
        Assert.False(BuiltIn.Get("rx-7900-xtx").HasFastKernel("int4-g128-sym"));
        Assert.False(BuiltIn.Get("apple-m4-max-40c-48gb").HasFastKernel("nf4"));
    }

    [Fact]
    public void Memory_options_expand_to_one_device_each()
    {
        var m3 = BuiltIn.Devices.Where(d => d.Id.StartsWith("apple-m3-ultra-80c-", StringComparison.Ordinal)).ToArray();
        Assert.Equal([96.0, 256.0, 512.0], m3.Select(d => d.MemoryGB));
        Assert.All(m3, d => Assert.Equal(819, d.MemoryBandwidthGBps));
        Assert.Equal("Apple M3 Ultra (80-core GPU), 256 GB", m3[1].Name);
        Assert.Equal(BuiltIn.Devices.Count, BuiltIn.Devices.Select(d => d.Id).Distinct().Count());
    }

    private const string Valid = """
        {
          "schemaVersion": 1,
          "formatSets": { "base": ["f16", "q4_K"] },
          "devices": [
            { "id": "card", "name": "Card", "vendor": "V", "kind": "gpu", "memoryGB": 8, "memoryBandwidthGBps": 100,
              "fp16Tflops": 10, "int8Tops": null, "fastFormats": ["@base", "fp8_e4m3"],
              "price": { "usd": 300, "kind": "msrp", "date": "2024-05" }, "sources": ["spec page"] }
          ]
        }
        """;

    [Fact]
    public void A_valid_user_catalog_parses()
    {
        var c = HardwareCatalog.Parse(Valid, "test.json");
        var d = Assert.Single(c.Devices);
        Assert.Equal(["f16", "q4_K", "fp8_e4m3"], d.FastFormats);
        Assert.Equal(new DevicePrice(300, PriceKind.Msrp, "2024-05"), d.Price);
        Assert.Null(d.Int8Tops);
    }

    [Theory]
    [InlineData("\"memoryGB\": 8, ", "", "memoryGB")]
    [InlineData("\"memoryGB\": 8", "\"memoryGB\": -8", "positive")]
    [InlineData("\"fp16Tflops\": 10", "\"fp16Tflops\": 0", "fp16Tflops")]
    [InlineData("\"fp8_e4m3\"", "\"q4_k_m\"", "unknown format 'q4_k_m'")]
    [InlineData("\"@base\"", "\"@nope\"", "unknown format set '@nope'")]
    [InlineData("\"kind\": \"gpu\"", "\"kind\": \"tpu\"", "\"kind\" must be gpu, cpu or apple")]
    [InlineData("\"sources\": [\"spec page\"]", "\"sources\": []", "sources")]
    [InlineData("\"date\": \"2024-05\"", "\"date\": \"May 2024\"", "price.date")]
    [InlineData("\"vendor\": \"V\",", "\"vendor\": \"V\", \"bandwith\": 1,", "unknown field \"bandwith\"")]
    [InlineData("\"name\": \"Card\",", "", "\"name\"")]
    public void Invalid_entries_are_rejected_naming_the_entry(string find, string replace, string expected)
    {
        Assert.Contains(find, Valid);
        var e = Assert.Throws<LowbitException>(() => HardwareCatalog.Parse(Valid.Replace(find, replace), "test.json"));
        Assert.Contains("test.json: device 'card'", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Duplicate_ids_and_broken_json_are_rejected()
    {
        string dup = Valid.Replace("\"devices\": [", "\"devices\": [ { \"id\": \"card\", \"name\": \"Other\", \"vendor\": \"V\", \"kind\": \"cpu\", \"memoryGB\": 8, \"memoryBandwidthGBps\": 50, \"fp16Tflops\": 1, \"fastFormats\": [], \"sources\": [\"x\"] },");
        Assert.Contains("duplicate id", Assert.Throws<LowbitException>(() => HardwareCatalog.Parse(dup, "t")).Message);
        Assert.Contains("not valid JSON", Assert.Throws<LowbitException>(() => HardwareCatalog.Parse("{", "t")).Message);
        Assert.Contains("schemaVersion", Assert.Throws<LowbitException>(() => HardwareCatalog.Parse("{\"devices\": []}", "t")).Message);
    }

    [Fact]
    public void A_user_catalog_overrides_by_id_and_appends_new_devices()
    {
        string user = Valid.Replace("\"id\": \"card\"", "\"id\": \"rtx-4090\"")
            .Replace("\"devices\": [", "\"devices\": [ { \"id\": \"my-box\", \"name\": \"My box\", \"vendor\": \"V\", \"kind\": \"cpu\", \"memoryGB\": 64, \"memoryBandwidthGBps\": 80, \"fp16Tflops\": 2, \"fastFormats\": [\"@base\"], \"sources\": [\"measured\"] },");
        var merged = BuiltIn.With(HardwareCatalog.Parse(user, "user.json"));
        Assert.Equal(BuiltIn.Devices.Count + 1, merged.Devices.Count);
        Assert.Equal("Card", merged.Get("rtx-4090").Name);
        Assert.Equal(BuiltIn.Devices.ToList().FindIndex(d => d.Id == "rtx-4090"), merged.Devices.ToList().FindIndex(d => d.Id == "rtx-4090"));
        Assert.Equal("my-box", merged.Devices[^1].Id);
    }

    [Fact]
    public void Unknown_device_lookup_names_the_known_ids()
    {
        var e = Assert.Throws<LowbitException>(() => BuiltIn.Get("rtx-9090"));
        Assert.Contains("rtx-4090", e.Message);
        Assert.Same(BuiltIn.Get("rtx-4090"), BuiltIn.Get("GeForce RTX 4090 24GB"));
    }
}
