using System.Text.Json;

namespace Lowbit.Tests.Cli;

/// <summary>`lowbit bench --kernels` and bench option checks: serialized with the other CLI tests (it swaps the process-wide console).</summary>
[Collection("Lowbit CLI")]
public sealed class BenchKernelsCliTests
{
    private static (int Code, string Stdout) RunCli(params string[] args) => CliHarness.InProcess(args);

    [Fact]
    public void Kernel_bench_json_lists_one_result_per_format_and_shape()
    {
        var (code, stdout) = RunCli("bench", "--kernels", "q4_0,f16", "--kernel-shapes", "64x256", "--kernel-mib", "1", "-p", "4", "--no-limits", "--json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(stdout.Trim()); // human output goes to stderr with --json
        var kernels = doc.RootElement.GetProperty("kernels").EnumerateArray().ToList();
        Assert.Equal(2, kernels.Count);
        Assert.All(kernels, k => Assert.True(k.GetProperty("decode_bytes_per_second").GetDouble() > 0));
        Assert.Equal(["q4_0", "f16"], kernels.Select(k => k.GetProperty("format").GetString()!).ToArray());
    }

    [Fact]
    public void A_malformed_shape_is_a_clear_error()
    {
        var (code, _) = RunCli("bench", "--kernels", "q4_0", "--kernel-shapes", "64by256", "--no-limits");
        Assert.NotEqual(0, code);
    }

    [Fact]
    public void A_test_of_zero_tokens_gets_no_row()
    {
        // Child processes: the in-process console keeps the writer of its first run.
        var genOnly = CliHarness.Run("bench", "--synthetic", "tiny", "-p", "0", "-n", "4", "-r", "1", "--no-limits");
        Assert.Equal(0, genOnly.ExitCode);
        Assert.Contains("tg4", genOnly.Stdout);
        Assert.DoesNotContain("pp0", genOnly.Stdout);
        var promptOnly = CliHarness.Run("bench", "--synthetic", "tiny", "-p", "8", "-n", "0", "-r", "1", "--no-limits");
        Assert.Equal(0, promptOnly.ExitCode);
        Assert.Contains("pp8", promptOnly.Stdout);
        Assert.DoesNotContain("tg0", promptOnly.Stdout);
    }

    [Fact]
    public void A_read_interval_below_one_token_is_a_clear_error()
    {
        var (code, _) = RunCli("bench", "--synthetic", "tiny", "--read-every", "0");
        Assert.Equal(1, code);
    }
}
