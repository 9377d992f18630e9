using System.CommandLine;
using System.Text.Json;
using Lowbit.Engine;
using Lowbit.IO;
using Lowbit.Methods.Calibration;
using Lowbit.Model;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>`lowbit imatrix`: collect a llama.cpp importance matrix (Σx² per input column of every linear) over calibration text.</summary>
public static class ImatrixCommand
{
    public static Command Create()
    {
        var model = CliOptions.ModelArgument();
        var calib = new Option<string?>("--calib", "-f") { Description = "Calibration text (text, JSONL, Parquet). Default: bundled WikiText-2 validation." };
        var output = new Option<string>("--output", "-o") { Description = "Output path.", DefaultValueFactory = _ => "imatrix.gguf" };
        var outputFormat = new Option<string>("--output-format") { Description = "gguf (llama.cpp's default) or dat (legacy).", DefaultValueFactory = _ => "gguf" };
        var chunks = new Option<int?>("--chunks") { Description = "Process at most this many chunks." };
        var ctx = new Option<int>("--ctx", "-c") { Description = "Tokens per chunk (capped at the model's context).", DefaultValueFactory = _ => 512 };
        var textField = new Option<string>("--text-field") { Description = "JSONL/Parquet text field.", DefaultValueFactory = _ => "text" };
        var threads = CliOptions.Threads();
        var json = CliOptions.Json();
        var cmd = new Command("imatrix", "Compute an importance matrix over calibration text, as llama-imatrix does (use with `quantize --imatrix`).")
        {
            model, calib, output, outputFormat, chunks, ctx, textField, threads, json,
        };
        cmd.SetAction((pr, ct) =>
        {
            var console = CliRunner.Human(pr.GetValue(json));
            string path = CliOptions.ResolveModel(pr.GetValue(model));
            string fmt = pr.GetValue(outputFormat)!.ToLowerInvariant();
            if (fmt is not ("gguf" or "dat")) throw new LowbitException($"unknown --output-format '{fmt}' (gguf, dat)");
            string calibPath = pr.GetValue(calib) ?? BundledPaths.Resolve(BundledPaths.DefaultCalibrationText);
            using var m = ModelLoader.Open(path);
            var tok = Tokenizer.ForModel(m) ?? throw new LowbitException($"{path}: the model has no tokenizer");
            int context = Math.Min(pr.GetValue(ctx), m.Config.MaxPositions);
            var text = string.Join("\n\n", CalibrationData.ReadDocuments(calibPath, pr.GetValue(textField)!));
            var tokens = tok.Encode(text, addBos: false);
            var engine = new InferenceEngine(m, new EngineOptions { Threads = pr.GetValue(threads), ContextLength = context, QuantizedActivations = false });
            console.WriteLine($"{Path.GetFileName(calibPath)}: {tokens.Length} tokens, chunks of {context}");
            ImportanceMatrix im = null!;
            console.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(c =>
                {
                    var task = c.AddTask("imatrix", maxValue: 1);
                    im = ImatrixCollector.Collect(engine, tokens, context, pr.GetValue(chunks), tok.BosId, Path.GetFileName(calibPath),
                        new SyncProgress<ImatrixProgress>(p =>
                        {
                            task.MaxValue = p.Chunks;
                            task.Value = p.Chunk;
                            task.Description = $"imatrix: chunk {p.Chunk}/{p.Chunks}";
                        }), ct);
                });
            string outPath = pr.GetValue(output)!;
            if (fmt == "gguf") im.WriteGguf(outPath, path);
            else im.WriteLegacy(outPath, path);
            console.WriteLine($"stored {im.Entries.Count} entries from {im.ChunkCount} chunks × {im.ChunkSize} tokens in {outPath}");
            if (pr.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new { model = path, output = outPath, format = fmt, entries = im.Entries.Count, chunks = im.ChunkCount, chunkSize = im.ChunkSize }, JsonOutput.Options));
            return Task.FromResult(0);
        });
        return cmd;
    }
}
