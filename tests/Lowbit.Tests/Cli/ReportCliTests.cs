using System.Text.RegularExpressions;
using Lowbit.Report;
using Lowbit.Tests.Engine;

namespace Lowbit.Tests.Cli;

/// <summary>Serialized with the other CLI tests (one swaps the process-wide console).</summary>
[Collection("Lowbit CLI")]
public sealed class ReportCliTests
{
    // The bundled model and text resolve upwards from the test binaries (inside the repository).
    private static int RunCli(params string[] args) => global::Lowbit.Cli.Program.Main(args);

    [Fact]
    public void Evaluate_variants_sensitivity_and_report_render_a_self_contained_page_for_the_bundled_model()
    {
        string dir = Path.Combine(Path.GetTempPath(), "lowbit-report-" + Guid.NewGuid().ToString("N"));
        try
        {
            Assert.Equal(0, RunCli("evaluate-variants", "--formats", "Q4_K_M,q8_0", "--chunks", "2", "--ctx", "128", "--sensitivity-format", "", "--out", dir, "-t", "2"));
            Assert.Equal(0, RunCli("sensitivity", "--format", "q4_K", "--chunks", "1", "--ctx", "48", "-o", Path.Combine(dir, "sensitivity.json"), "-t", "2"));
            string html = Path.Combine(dir, "page.html");
            Assert.Equal(0, RunCli("report", dir, "-o", html));

            var run = RunFiles.Read(dir);
            var variants = Assert.Single(run.Variants);
            Assert.Equal(["Q4_K_M", "Q8_0"], variants.Variants.Select(v => v.Name));
            Assert.Equal(2, variants.Chunks);
            Assert.Equal(128, variants.Context);
            Assert.All(variants.Variants, v => Assert.True(v.MeanKld > 0 && v.BitsPerWeight is > 4 and < 9));
            Assert.True(variants.Variants[0].MeanKld > variants.Variants[1].MeanKld, "Q4_K_M must lose more than q8_0");
            var sens = Assert.Single(run.Sensitivity);
            Assert.Equal(6 * 7 + 2, sens.Components.Count);

            string page = File.ReadAllText(html);
            Assert.StartsWith("<!DOCTYPE html>", page);
            Assert.EndsWith("</html>\n", page);
            Assert.True(Regex.Matches(page, "<svg ").Count >= 4, "charts: KLD, PPL, heatmap, speed");
            Assert.Equal(Regex.Matches(page, "<svg ").Count, Regex.Matches(page, "</svg>").Count);
            foreach (var name in new[] { "Q4_K_M", "q8_0", "refmodel-llama-6m", "attn_q", "ffn_down", "token_embd", "Mean KLD vs bits per weight", "decode tokens/s", "Deployment estimate" })
                Assert.Contains(name, page);
            // Self-contained: nothing fetched from anywhere, no scripts.
            Assert.DoesNotMatch(new Regex("https?:|//[a-z]|<script|<link|<img|@import|url\\(", RegexOptions.IgnoreCase), page);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Report_of_a_missing_directory_is_a_one_line_error()
    {
        Assert.Equal(1, RunCli("report", Path.Combine(Path.GetTempPath(), "lowbit-no-such-dir-" + Guid.NewGuid().ToString("N"))));
    }

    [Fact]
    public void Quantize_rejects_a_budget_it_cannot_parse()
    {
        Assert.Equal(1, RunCli("quantize", "--budget", "lots", "--dry-run"));
    }
}
