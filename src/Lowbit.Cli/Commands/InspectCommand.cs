using System.CommandLine;
using System.Text.Json;
using Lowbit.IO;
using Lowbit.Model;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>`lowbit inspect`: architecture, parameter count, size, bits per weight and every tensor.</summary>
public static class InspectCommand
{
    public static Command Create()
    {
        var model = CliOptions.ModelArgument();
        var all = new Option<bool>("--all") { Description = "List every tensor (default: summary and the first 24 tensors)." };
        var json = CliOptions.Json();
        var cmd = new Command("inspect", "Show a model's architecture, parameters, size, bits per weight and tensors.") { model, all, json };
        cmd.SetAction(pr =>
        {
            string path = CliOptions.ResolveModel(pr.GetValue(model));
            using var m = ModelLoader.Open(path);
            var summary = ModelSummary.Of(m);
            var console = CliRunner.Human(false);
            if (pr.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(summary, JsonOutput.Options));
                return 0;
            }
            var c = m.Config;
            var grid = new Grid().AddColumn().AddColumn();
            void Row(string k, string v) => grid.AddRow(new Markup($"[bold]{k}[/]"), new Text(v));
            Row("path", path);
            Row("source", m.SourceFormat);
            Row("architecture", c.Architecture);
            Row("layers", c.NumLayers.ToString());
            Row("hidden / ffn", $"{c.HiddenSize} / {c.IntermediateSize}");
            Row("heads / kv heads / head dim", $"{c.NumHeads} / {c.NumKvHeads} / {c.HeadDim}");
            Row("vocab", c.VocabSize.ToString());
            Row("context", c.MaxPositions.ToString());
            Row("rope", $"θ={c.RopeTheta}, {c.Rope}");
            Row("rms eps", c.RmsNormEps.ToString("G"));
            Row("tied embeddings", c.TieEmbeddings ? "yes" : "no");
            Row("tokenizer", m.Tokenizer is { } tk ? $"{tk.Model}, {tk.Tokens.Count} tokens" : "none");
            Row("parameters", $"{Format.Count(summary.Parameters)} ({summary.Parameters:N0})");
            Row("tensor bytes", $"{Format.Bytes(summary.TensorBytes)} ({summary.TensorBytes:N0})");
            Row("bits per weight", Format.F(summary.BitsPerWeight, "0.000"));
            console.Write(grid);

            var types = new Table().Title("by format").AddColumns("format", "tensors", "parameters", "bytes", "bpw");
            foreach (var g in summary.ByFormat)
                types.AddTextRow(g.Format, g.Tensors.ToString(), Format.Count(g.Parameters), Format.Bytes(g.Bytes), Format.F(g.BitsPerWeight, "0.000"));
            console.Write(types);

            var tensors = new Table().Title("tensors").AddColumns("name", "shape", "format", "bytes", "bpw");
            var list = pr.GetValue(all) ? summary.Tensors : summary.Tensors.Take(24).ToList();
            foreach (var t in list)
                tensors.AddTextRow(t.Name, Format.Shape(t.Shape), t.Format, Format.Bytes(t.Bytes), Format.F(t.BitsPerWeight, "0.00"));
            if (list.Count < summary.Tensors.Count) tensors.Caption($"{summary.Tensors.Count - list.Count} more: use --all");
            console.Write(tensors);
            return 0;
        });
        return cmd;
    }
}

/// <summary>Inspect's result, also its JSON form.</summary>
public sealed record ModelSummary(string Source, string Architecture, ModelConfig Config, long Parameters, long TensorBytes, double BitsPerWeight,
    IReadOnlyList<FormatGroup> ByFormat, IReadOnlyList<TensorSummary> Tensors)
{
    public static ModelSummary Of(LoadedModel m)
    {
        var tensors = m.Tensors.Select(t => new TensorSummary(t.Name, t.Shape, t.Codec.Name, t.ByteCount, 8.0 * t.ByteCount / Math.Max(1, t.ElementCount))).ToList();
        long p = m.Tensors.Sum(t => t.ElementCount), b = m.Tensors.Sum(t => t.ByteCount);
        var groups = m.Tensors.GroupBy(t => t.Codec.Name).Select(g =>
        {
            long gp = g.Sum(t => t.ElementCount), gb = g.Sum(t => t.ByteCount);
            return new FormatGroup(g.Key, g.Count(), gp, gb, 8.0 * gb / Math.Max(1, gp));
        }).OrderByDescending(g => g.Bytes).ToList();
        return new ModelSummary(m.SourceFormat, m.Config.Architecture, m.Config, p, b, 8.0 * b / Math.Max(1, p), groups, tensors);
    }
}

public sealed record FormatGroup(string Format, int Tensors, long Parameters, long Bytes, double BitsPerWeight);

public sealed record TensorSummary(string Name, long[] Shape, string Format, long Bytes, double BitsPerWeight);
