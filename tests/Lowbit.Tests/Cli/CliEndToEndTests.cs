using Lowbit.IO;

namespace Lowbit.Tests.Cli;

/// <summary>End-to-end: the CLI on the bundled model, and its contract for bad input (one line, non-zero exit, nothing half-written).</summary>
public sealed class CliEndToEndTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("lowbit-cli");
    public void Dispose() => _dir.Delete(true);
    private string Tmp(string name) => Path.Combine(_dir.FullName, name);

    [Fact]
    public void Quantize_to_Q4_K_M_writes_a_GGUF_that_inspects_and_evaluates()
    {
        var outPath = Tmp("m.gguf");
        var q = CliHarness.Run("quantize", "models/refmodel-llama-6m", "-f", "Q4_K_M", "-o", outPath);
        Assert.True(q.ExitCode == 0, q.All);
        Assert.Contains("q4_K", q.Stdout);
        Assert.Contains("q6_K", q.Stdout);
        using (var f = GgufFile.Open(outPath))
        {
            Assert.Equal("llama", f.Metadata.GetString("general.architecture"));
            Assert.Equal(15u, f.Metadata.GetUInt32("general.file_type"));
            Assert.Equal(57, f.Tensors.Count);
        }
        var i = CliHarness.Run("inspect", outPath, "--json");
        Assert.True(i.ExitCode == 0, i.All);
        Assert.Contains("\"architecture\": \"llama\"", i.Stdout);
        var p = CliHarness.Run("perplexity", outPath, "--chunks", "2", "--ctx", "128");
        Assert.True(p.ExitCode == 0, p.All);
        Assert.Matches(@"Final estimate: PPL = \d+\.\d{4} \+/- \d+\.\d+", p.Stdout);
        Assert.Empty(Directory.GetFiles(_dir.FullName, "*.tmp"));
    }

    [Fact]
    public void Kld_of_an_in_memory_quantization_prints_the_llama_cpp_summary()
    {
        var r = CliHarness.Run("kld", "--format", "q8_0", "--chunks", "2", "--ctx", "128");
        Assert.True(r.ExitCode == 0, r.All);
        Assert.Contains("====== KL divergence statistics ======", r.Stdout);
        Assert.Matches(@"Mean KLD: \d+\.\d{6}", r.Stdout);
    }

    [Fact]
    public void Truncated_gguf_is_a_one_line_error_naming_the_file()
    {
        var good = Tmp("good.gguf");
        Assert.Equal(0, CliHarness.Run("quantize", "-f", "Q8_0", "-o", good).ExitCode);
        var bad = Tmp("bad.gguf");
        var bytes = File.ReadAllBytes(good);
        File.WriteAllBytes(bad, bytes[..(bytes.Length / 2)]);
        var r = CliHarness.Run("inspect", bad);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("bad.gguf", r.Stderr);
        Assert.DoesNotContain("   at ", r.All); // no stack trace
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }

    [Fact]
    public void Wrong_magic_and_unknown_files_are_clear_errors()
    {
        var junk = Tmp("junk.bin");
        File.WriteAllBytes(junk, new byte[100]);
        var r = CliHarness.Run("inspect", junk);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("junk.bin", r.Stderr);
        var missing = CliHarness.Run("inspect", Tmp("nope.gguf"));
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("nope.gguf", missing.Stderr);
        var fmt = CliHarness.Run("quantize", "-f", "Q9_X", "-o", Tmp("x.gguf"));
        Assert.Equal(1, fmt.ExitCode);
        Assert.Contains("unknown format 'Q9_X'", fmt.Stderr);
        Assert.False(File.Exists(Tmp("x.gguf")));
    }

    [Fact]
    public void Unwritable_output_fails_cleanly_and_the_input_is_never_overwritten()
    {
        var r = CliHarness.Run("quantize", "-f", "Q8_0", "-o", Path.Combine(_dir.FullName, "no-such-dir", "m.gguf"));
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("does not exist", r.Stderr);

        var src = Tmp("src.gguf");
        Assert.Equal(0, CliHarness.Run("quantize", "-f", "F16", "-o", src).ExitCode);
        var before = File.ReadAllBytes(src);
        var same = CliHarness.Run("quantize", src, "-f", "Q8_0", "-o", src);
        Assert.Equal(1, same.ExitCode);
        Assert.Contains("refusing to overwrite the input", same.Stderr);
        Assert.Equal(before, File.ReadAllBytes(src));
        Assert.Empty(Directory.GetFiles(_dir.FullName, "*.tmp"));
    }

    [Fact]
    public void Requantizing_an_F16_GGUF_gives_the_same_bytes_as_quantizing_the_HF_model()
    {
        var f16 = Tmp("f16.gguf");
        Assert.Equal(0, CliHarness.Run("quantize", "-f", "F16", "-o", f16).ExitCode);
        var fromGguf = Tmp("a.gguf");
        var fromHf = Tmp("b.gguf");
        Assert.Equal(0, CliHarness.Run("quantize", f16, "-f", "Q4_0", "-o", fromGguf).ExitCode);
        Assert.Equal(0, CliHarness.Run("quantize", "-f", "Q4_0", "-o", fromHf, "--threads", "1").ExitCode);
        using var a = GgufFile.Open(fromGguf);
        using var b = GgufFile.Open(fromHf);
        // BF16 → F16 → Q4_0 may differ from BF16 → Q4_0 only through F16 rounding of BF16 values, which is exact
        // for the bundled weights' range, so the tensor data must be identical; thread count must not matter.
        foreach (var t in b.Tensors)
            Assert.True(a.GetTensorData(t.Name).Span.SequenceEqual(b.GetTensorData(t).Span), t.Name);
    }
}
