using System.CommandLine;
using System.Text.Json;
using Lowbit.Engine;
using Lowbit.Eval;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Methods.Calibration;
using Lowbit.Model;
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
        var recipe = new RecipeCliOptions();
        var cmd = new Command("quantize", "Quantize a model to GGUF (round-to-nearest, llama.cpp mixtures) and print the result table; "
            + "with --recipe, run a calibrated recipe (GPTQ, imatrix, ...; presets: " + string.Join(", ", RecipePresets.Names) + ").")
        {
            model, format, output, pure, imatrix, threads, json, eval, evalChunks,
        };
        var budget = new QuantizeBudget();
        budget.AddTo(cmd);
        recipe.AddTo(cmd);
        cmd.SetAction((pr, ct) =>
        {
            string path = CliOptions.ResolveModel(pr.GetValue(model));
            if (pr.GetValue(recipe.Recipe) is { } recipeName)
                return Task.FromResult(RecipeQuantize.Run(pr, recipe, path, recipeName, pr.GetValue(output), pr.GetValue(threads), pr.GetValue(json),
                    pr.GetValue(eval) ? pr.GetValue(evalChunks) : null, ct));
            if (budget.IsSet(pr)) return Task.FromResult(budget.Run(pr, path, pr.GetValue(output), pr.GetValue(threads), pr.GetValue(json), ct));
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

/// <summary>`lowbit quantize --recipe` options.</summary>
public sealed class RecipeCliOptions
{
    public Option<string?> Recipe { get; } = new("--recipe", "-r") { Description = "Recipe preset name or YAML/JSON recipe file (calibrated quantization)." };
    public Option<string?> Calib { get; } = new("--calib") { Description = "Calibration text (text, JSONL, Parquet). Default: the recipe's dataset, else bundled WikiText-2 validation." };
    public Option<int?> Samples { get; } = new("--samples") { Description = "Calibration samples (overrides the recipe)." };
    public Option<int?> SeqLen { get; } = new("--seq-len") { Description = "Tokens per calibration sample (overrides the recipe; capped at the model's context)." };
    public Option<bool> NoWrite { get; } = new("--no-write") { Description = "Do not write a file (evaluate in memory with --eval)." };
    public Option<string?> EvalText { get; } = new("--eval-text") { Description = "Evaluation text file (default: bundled WikiText-2 test)." };
    public Option<string?> Checkpoint { get; } = new("--checkpoint") { Description = "Directory for resumable per-block checkpoints." };
    public Option<bool> Resume { get; } = new("--resume") { Description = "Continue from the checkpoint directory's last finished block." };
    public Option<bool> NoTrueSequential { get; } = new("--no-true-sequential") { Description = "Quantize a block's linears from one statistics pass (faster, less accurate)." };

    public void AddTo(Command c)
    {
        foreach (var o in new Option[] { Recipe, Calib, Samples, SeqLen, NoWrite, EvalText, Checkpoint, Resume, NoTrueSequential }) c.Options.Add(o);
    }
}

/// <summary>The recipe path of `lowbit quantize`.</summary>
public static class RecipeQuantize
{
    /// <param name="evalChunks">With --eval: chunks of the evaluation text (the result is evaluated in memory against the base); null = no evaluation.</param>
    public static int Run(ParseResult pr, RecipeCliOptions o, string modelPath, string recipeName, string? output, int threads, bool json,
        int? evalChunks, CancellationToken ct)
    {
        var console = CliRunner.Human(json);
        var recipe = Recipes.Recipe.Load(recipeName);
        using var model = ModelLoader.Open(modelPath);
        var plan = RecipePlanner.Plan(recipe, model);
        var transforms = RecipeTransforms.BuiltIn();
        RecipeRunner.CheckTransforms(plan, transforms);
        bool write = !pr.GetValue(o.NoWrite);
        if (write && !plan.AllGguf)
        {
            var nonGguf = plan.Targets.Values.Select(t => t.Codec).Where(c => c.Ggml is null).Select(c => c.Name).Distinct();
            console.MarkupLineInterpolated($"[yellow]note:[/] {string.Join(", ", nonGguf)} are not GGUF tensor types; no file is written (evaluate with --eval).");
            write = false;
        }
        if (write && model.Tokenizer is null) throw new LowbitException($"{modelPath}: the model has no tokenizer, which a GGUF file for llama.cpp needs");

        CalibrationData? data = null;
        if (plan.NeedsCalibration)
        {
            var tok = Tokenizer.ForModel(model) ?? throw new LowbitException($"{modelPath}: calibration needs the model's tokenizer");
            string calibPath = pr.GetValue(o.Calib) ?? recipe.Calibration.Dataset ?? BundledPaths.Resolve(BundledPaths.DefaultCalibrationText);
            int length = Math.Min(pr.GetValue(o.SeqLen) ?? recipe.Calibration.SeqLen, model.Config.MaxPositions);
            int samples = pr.GetValue(o.Samples) ?? recipe.Calibration.Samples;
            data = CalibrationData.Create(CalibrationData.ReadDocuments(calibPath, recipe.Calibration.TextField), s => tok.Encode(s, addBos: false),
                samples, length, recipe.Calibration.Seed, tok.BosId, calibPath);
            console.WriteLine($"calibration: {data.Samples.Count} × {data.SampleLength} tokens from {Path.GetFileName(calibPath)}");
        }

        var options = new CalibrationOptions
        {
            Threads = threads,
            CheckpointDirectory = pr.GetValue(o.Checkpoint),
            Resume = pr.GetValue(o.Resume),
        };
        RecipeResult result = null!;
        bool trueSeq = !pr.GetValue(o.NoTrueSequential) && plan.TrueSequential;
        console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask($"{recipe.Name}", maxValue: model.Config.NumLayers + 1);
                result = RecipeRunner.Run(model, plan with { TrueSequential = trueSeq }, data, transforms, options,
                    new SyncProgress<CalibrationProgress>(p =>
                    {
                        task.Value = p.Block.Layer < 0 ? task.MaxValue : p.BlocksDone;
                        task.Description = p.Block.Layer < 0 ? $"{recipe.Name}: done" : $"{recipe.Name}: block {p.Block.Layer} ({p.Block.Seconds:0.0} s)";
                    }), ct);
            });

        PrintBlocks(console, result);
        PrintFormats(console, model, result);

        ExportReport? report = null;
        if (write)
        {
            string name = QuantizeCommand.ModelName(modelPath);
            string outPath = output ?? QuantizeCommand.DefaultOutput(name, recipe.Name);
            var entries = result.Model.Tensors
                .OrderBy(t => t, Comparer<ModelTensor>.Create(GgufMixture.CompareLikeLlamaCpp))
                .Select(t => new MixtureEntry(t, GgufTypeOf(t), null)).ToList();
            var metadata = GgufModelMetadata.Build(model.Config, model.Tokenizer!, name, plan.FileType);
            report = GgufExporter.Write(result.Model, metadata, entries, outPath, threads, null, null, ct);
            QuantizeCommand.PrintReport(console, modelPath, recipe.Name, report);
        }

        object? eval = null;
        if (evalChunks is { } chunkCount)
        {
            var tok = Tokenizer.ForModel(model) ?? throw new LowbitException($"{modelPath}: evaluation needs the model's tokenizer");
            var tokens = tok.Encode(ModelSession.ReadText(pr.GetValue(o.EvalText)), addBos: true);
            int ctx = Math.Min(512, model.Config.MaxPositions);
            var engineOptions = new EngineOptions { Threads = threads, ContextLength = ctx };
            var r = KlDivergence.Compute(new InferenceEngine(model, engineOptions), new InferenceEngine(result.Model, engineOptions), tokens,
                new PerplexityOptions { Context = ctx, MaxChunks = chunkCount, BosToken = tok.BosId }, null, ct);
            var table = new Table().AddColumns("recipe", "chunks × ctx", "PPL(base)", "PPL(Q)", "mean KLD", "same top");
            table.AddTextRow(recipe.Name, $"{r.Chunks} × {r.Context}", Format.F(r.PplBase.Value, "0.0000"), Format.F(r.PplQuantized.Value, "0.0000"),
                Format.F(r.MeanKld.Value, "0.000000"), Format.F(100 * r.SameTop.Value, "0.00") + " %");
            console.Write(table);
            eval = new { chunks = r.Chunks, context = r.Context, pplBase = r.PplBase.Value, pplQuant = r.PplQuantized.Value, meanKld = r.MeanKld.Value, sameTop = r.SameTop.Value };
        }

        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                model = modelPath, recipe = recipe.Name, seconds = result.Elapsed.TotalSeconds,
                blocks = result.Blocks, output = report?.OutputPath, eval,
            }, JsonOutput.Options));
        }
        return 0;
    }

    /// <summary>The GGUF type a tensor of the result is written as: its own when it has one; 1-D tensors F32, other floats F16.</summary>
    private static GgmlType GgufTypeOf(ModelTensor t) =>
        t.Shape.Length < 2 ? GgmlType.F32 : t.Codec.Ggml ?? GgmlType.F16;

    private static void PrintBlocks(IAnsiConsole console, RecipeResult r)
    {
        var table = new Table().AddColumns("block", "tensors", "methods", "seconds", "stats s", "quant s", "rerun s", "managed", "peak WS");
        foreach (var b in r.Blocks)
            table.AddTextRow(b.Layer < 0 ? "other" : b.Layer.ToString(), b.Tensors.Count.ToString(),
                string.Join(" ", b.Tensors.Select(t => t.Method).Distinct()), b.Resumed ? "resumed" : Format.F(b.Seconds, "0.00"),
                Format.F(b.StatisticsSeconds, "0.00"), Format.F(b.QuantizeSeconds, "0.00"), Format.F(b.PropagateSeconds, "0.00"),
                Format.Bytes(b.ManagedBytes), Format.Bytes(b.PeakWorkingSetBytes));
        console.Write(table);
        console.WriteLine($"total {r.Elapsed.TotalSeconds:0.00} s");
    }

    private static void PrintFormats(IAnsiConsole console, LoadedModel model, RecipeResult r)
    {
        var table = new Table().AddColumns("format", "tensors", "parameters", "bytes", "bpw");
        foreach (var g in r.Model.Tensors.GroupBy(t => t.Codec.Name).OrderByDescending(g => g.Sum(t => t.ByteCount)))
        {
            long p = g.Sum(t => t.ElementCount), b = g.Sum(t => t.ByteCount);
            table.AddTextRow(g.Key, g.Count().ToString(), Format.Count(p), Format.Bytes(b), Format.F(8.0 * b / p, "0.000"));
        }
        long tp = r.Model.Tensors.Sum(t => t.ElementCount), tb = r.Model.Tensors.Sum(t => t.ByteCount);
        table.AddTextRow("total", r.Model.Tensors.Count.ToString(), Format.Count(tp), Format.Bytes(tb), Format.F(8.0 * tb / tp, "0.000"));
        console.Write(table);
    }
}
