using Lowbit.Eval;
using Lowbit.Report;

namespace Lowbit.Tests.Report;

public sealed class HtmlReportTests
{
    private static SensitivityReport Sensitivity(string model) => new()
    {
        Model = model, Context = 64, Chunks = 1, BasePerplexity = 10, Formats = ["q4_K"], Seconds = 1,
        Components =
        [
            new("blk.0.attn_q.weight", 0, "attn_q", "q4_K", 100, 60, 1e-4, 1e-5, 0.99, 10.1),
            new("blk.1.ffn_down.weight", 1, "ffn_down", "q4_K", 100, 60, 3e-3, 1e-4, 0.95, 10.4),
            new("output.weight", -1, "output", "q4_K", 100, 60, 2e-2, 1e-3, 0.9, 11),
        ],
    };

    [Fact]
    public void Run_files_round_trip_and_unknown_json_is_ignored()
    {
        string dir = Path.Combine(Path.GetTempPath(), "lowbit-runfiles-" + Guid.NewGuid().ToString("N"));
        try
        {
            RunFiles.Write(Path.Combine(dir, "s.json"), Sensitivity("m"));
            File.WriteAllText(Path.Combine(dir, "other.json"), "{\"hello\": 1}");
            var run = RunFiles.Read(dir);
            Assert.Equal(["s.json"], run.Files);
            var s = Assert.Single(run.Sensitivity);
            Assert.Equal(Sensitivity("m").Components, s.Components);
            Assert.Equal(Sensitivity("m").Formats, s.Formats);
            Assert.Equal(s.Components[1], RunFiles.ReadSensitivity(Path.Combine(dir, "s.json")).Components[1]);
            Assert.Throws<LowbitException>(() => RunFiles.ReadSensitivity(Path.Combine(dir, "other.json")));
            File.WriteAllText(Path.Combine(dir, "broken.json"), "{ not json");
            Assert.Throws<LowbitException>(() => RunFiles.Read(dir));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Text_from_the_results_is_escaped_and_the_heatmap_is_drawn()
    {
        var contents = new RunFiles.Contents([Sensitivity("<evil & model>")], [], [], ["s.json"]);
        string html = HtmlReport.Render(contents, "t <b>");
        Assert.DoesNotContain("<evil", html);
        Assert.Contains("&lt;evil &amp; model&gt;", html);
        Assert.Contains("t &lt;b&gt;", html);
        Assert.Contains("<svg ", html);
        Assert.Contains("2.0e-2", html); // the output cell's value
        Assert.Contains(HeatColor.Hex(1), html); // most sensitive cell in the hottest colour
        Assert.Contains(HeatColor.Hex(0), html);
    }

    [Fact]
    public void An_empty_run_directory_renders_a_hint()
    {
        string html = HtmlReport.Render(new RunFiles.Contents([], [], [], []), "empty");
        Assert.Contains("evaluate-variants", html);
        Assert.DoesNotContain("<svg", html);
    }

    [Fact]
    public void Heat_colours_run_from_green_to_red()
    {
        Assert.Equal("#4caf50", HeatColor.Hex(0));
        Assert.Equal("#ffc107", HeatColor.Hex(0.5));
        Assert.Equal("#d32f2f", HeatColor.Hex(1));
        Assert.Equal(HeatColor.Hex(0), HeatColor.Hex(double.NaN));
    }
}
