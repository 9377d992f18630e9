using System.Text.Json;
using Lowbit.Cli.Commands;
using Lowbit.Tests.Engine;

namespace Lowbit.Tests.Cli;

/// <summary>Serialized with the other CLI tests: this one swaps the process-wide console.</summary>
[Collection("Lowbit CLI")]
public sealed class AdviseCliTests
{
    private static (int Code, string Stdout) RunCli(params string[] args) => CliHarness.InProcess(args);

    [Fact]
    public void Models_resolve_from_a_shape_name_a_config_json_or_a_model_directory()
    {
        var (name, shape) = AdviseCommand.ResolveModel("Llama-3.1-8B");
        Assert.Equal("llama-3.1-8b", name);
        Assert.Equal(32, shape.NumLayers);
        string dir = Path.Combine(EngineTestPaths.Root, "models", "refmodel-llama-6m");
        var (_, fromJson) = AdviseCommand.ResolveModel(Path.Combine(dir, "config.json"));
        var (dirName, fromDir) = AdviseCommand.ResolveModel(dir);
        Assert.Equal("refmodel-llama-6m", dirName);
        Assert.Equal(256, fromJson.HiddenSize);
        Assert.Equal(fromJson.NumLayers, fromDir.NumLayers);
        Assert.Equal(fromJson.VocabSize, fromDir.VocabSize);
        Assert.Throws<LowbitException>(() => AdviseCommand.ResolveModel("no-such-model-or-shape"));
    }

    [Fact]
    public void Json_output_is_the_advisor_report()
    {
        var (code, stdout) = RunCli("advise", "llama-3.1-8b", "--context", "8192", "--gpu", "rtx-4090,h100-sxm", "--format", "q4_K,q8_0", "--json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(stdout);
        var root = doc.RootElement;
        Assert.Equal("llama-3.1-8b", root.GetProperty("model").GetString());
        Assert.Equal(8192, root.GetProperty("settings").GetProperty("context").GetInt32());
        var devices = root.GetProperty("devices").EnumerateArray().ToArray();
        Assert.Equal(["rtx-4090", "h100-sxm"], devices.Select(d => d.GetProperty("device").GetProperty("id").GetString()));
        var formats = devices[0].GetProperty("formats").EnumerateArray().ToArray();
        Assert.Equal(["q4_K", "q8_0"], formats.Select(f => f.GetProperty("format").GetString()));
        // KV cache at 8192 tokens in f16: 2 × 32 layers × 8192 × 1024 values × 2 bytes = 1 GiB.
        Assert.Equal(1L << 30, formats[0].GetProperty("kvCacheBytes").GetInt64());
        Assert.True(formats[0].GetProperty("weightBytes").GetInt64() < formats[1].GetProperty("weightBytes").GetInt64());
    }

    [Fact]
    public void Unknown_devices_and_formats_are_one_line_errors()
    {
        Assert.Equal(1, RunCli("advise", "llama-3.1-8b", "--gpu", "no-such-gpu").Code);
        Assert.Equal(1, RunCli("advise", "llama-3.1-8b", "--format", "q9_X").Code);
    }
}
