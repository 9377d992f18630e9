using System.CommandLine;
using System.Text.Json;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Pipeline;
using Lowbit.Recipes;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>`lowbit quantize`: RTN quantization of a whole model to a GGUF file with llama.cpp's mixtures.</summary>
public static class QuantizeCommand
{
    public static Command Create()
    {
        var model = CliOptions.ModelArgument();
        var format = new Option<string>("--format", "-f")
        {
            Description = "llama.cpp mixture (Q4_K_M, Q4_K_S, Q5_K_M, Q3_K_M, Q2_K, Q6_K, Q8_0, Q4_0, IQ4_NL, F16, BF16, F32, ...) or a GGUF type name.",
            DefaultValueFactory = _ => "Q4_K_M",
        };
        var output = new Option<string?>("--output", "-o") { Description = "Output .gguf path (default: out/<model>-<FORMAT>.gguf)." };
        var pure = new Option<bool>("--pure") { Description = "Every quantizable tensor gets the one type (like llama-quantize --pure)." };
        var imatrix = new Option<string?>("--imatrix") { Description = "llama.cpp importance matrix (GGUF or legacy .dat) for importance-weighted k-quant/legacy/IQ4 rounding." };
        var threads = CliOptions.Threads();
        var json = CliOptions.Json();
        var eval = new Option<bool>("--eval") { Description = "After writing, measure size, bpw, PPL, KLD and tokens/s next to the unquantized model." };
        var evalChunks = new Option<int>("--eval-chunks") { Description = "Chunks of WikiText-2 test for --eval.", DefaultValueFactory = _ => 40 };
        var cmd = new Command("quantize", "Quantize a model to GGUF (round-to-nearest, llama.cpp mixtures) and print the result table.")
        {
            model, format, output, pure, imatrix, threads, json, eval, evalChunks,
        };
        cmd.SetAction((pr, ct) =>
        {
            string path = CliOptions.ResolveModel(pr.GetValue(model));
            string fmt = pr.GetValue(format)!;
            var console = CliRunner.Human(pr.GetValue(json));
            var mixture = ResolveMixture(fmt);
            using var m = ModelLoader.Open(path);
            if (m.Tokenizer is null)
                throw new LowbitException($"{path}: the model has no tokenizer, which a GGUF file for llama.cpp needs");
            string name = ModelName(path);
            string outPath = pr.GetValue(output) ?? DefaultOutput(name, mixture.Name);
            var importance = pr.GetValue(imatrix) is { } ip ? ImportanceMatrix.Read(ip) : null;
            var plan = mixture.Plan(m.Config, m.Tensors, pr.GetValue(pure), importance is not null);
            var metadata = GgufModelMetadata.Build(m.Config, m.Tokenizer, name, mixture.FileType);

            ExportReport report = null!;
            console.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask($"quantizing to {mixture.Name}", maxValue: plan.Entries.Count);
                    report = GgufExporter.Write(m, metadata, plan.Entries, outPath, pr.GetValue(threads), importance is null ? null : importance.For,
                        new SyncProgress<GgufWriteProgress>(p =>
                        {
                            task.Value = p.TensorsWritten;
                            task.Description = $"{mixture.Name}: {p.TensorName}";
                        }), ct);
                    task.Description = $"quantized to {mixture.Name}";
                });

            if (pr.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new { model = path, format = mixture.Name, report }, JsonOutput.Options));
            }
            PrintReport(console, path, mixture.Name, report);
            if (pr.GetValue(eval))
            {
                using var written = ModelLoader.Open(outPath);
                var rows = QuantEvaluation.Compare(m, written, mixture.Name, pr.GetValue(evalChunks), pr.GetValue(threads), console, ct);
                QuantEvaluation.Print(console, rows);
                if (pr.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(new { evaluation = rows }, JsonOutput.Options));
            }
            return Task.FromResult(0);
        });
        return cmd;
    }

    public static GgufMixture ResolveMixture(string fmt)
    {
        if (GgufMixture.TryGet(fmt) is { } mix) return mix;
        if (CodecRegistry.TryGet(fmt) is { } codec)
        {
            if (codec.Ggml is { } g && GgufMixture.Names.FirstOrDefault(n => GgufMixture.TryGet(n)!.DefaultType == g) is { } byType)
                return GgufMixture.TryGet(byType)!;
            throw new LowbitException($"format '{fmt}' has no GGUF file type; GGUF mixtures are: {string.Join(", ", GgufMixture.Names)}");
        }
        throw new LowbitException($"unknown format '{fmt}'; GGUF mixtures are: {string.Join(", ", GgufMixture.Names)} (see 'lowbit formats')");
    }

    public static string ModelName(string path)
    {
        string full = Path.GetFullPath(path).TrimEnd(Path.DirectorySeparatorChar);
        return Directory.Exists(full) ? Path.GetFileName(full) : Path.GetFileNameWithoutExtension(full);
    }

    public static string DefaultOutput(string modelName, string format)
    {
        Directory.CreateDirectory("out");
        return Path.Combine("out", $"{modelName}-{format}.gguf");
    }

    public static void PrintReport(IAnsiConsole console, string input, string format, ExportReport r)
    {
        var byType = new Table().Title(Markup.Escape($"{Path.GetFileName(input)} → {r.OutputPath}"))
            .AddColumns("type", "tensors", "parameters", "bytes", "bpw");
        foreach (var g in r.Tensors.GroupBy(t => t.Format).OrderByDescending(g => g.Sum(t => t.Bytes)))
        {
            long p = g.Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b)), b = g.Sum(t => t.Bytes);
            byType.AddTextRow(g.Key, g.Count().ToString(), Format.Count(p), Format.Bytes(b), Format.F(8.0 * b / p, "0.000"));
        }
        console.Write(byType);
        var totals = new Table().AddColumns("format", "input", "output file", "bpw", "elapsed", "input GB/s");
        totals.AddTextRow(format, Format.Bytes(r.SourceBytes), Format.Bytes(r.OutputFileBytes), Format.F(r.BitsPerWeight, "0.000"),
            $"{r.Elapsed.TotalSeconds:0.00} s", Format.F(r.InputGBps, "0.00"));
        console.Write(totals);
        foreach (var t in r.Tensors.Where(t => t.Note is not null)) console.MarkupLineInterpolated($"[yellow]fallback:[/] {t.Note}");
    }
}

/// <summary>An IProgress that reports on the calling thread (Progress&lt;T&gt; posts to the thread pool, out of order).</summary>
public sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
