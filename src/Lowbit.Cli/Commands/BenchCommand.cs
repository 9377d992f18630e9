using System.CommandLine;
using System.Text.Json;
using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.Model;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>
/// `lowbit bench`: llama-bench-style prompt processing (pp) and token generation (tg) tokens/s, with tg as a
/// fraction of this machine's measured memory bandwidth and pp as a fraction of its measured FLOP peak.
/// </summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var model = CliOptions.ModelArgument("Model to benchmark (default: the bundled reference model). Ignored with --synthetic.");
        var synthetic = new Option<string?>("--synthetic") { Description = "Benchmark a synthetic model of a real shape instead: llama-1b or tiny." };
        var format = new Option<string?>("--format") { Description = "Weight format: quantize the model in memory (or the synthetic model's matrices) with this codec or mixture." };
        var pp = new Option<int>("-p", "--n-prompt") { Description = "Prompt tokens (pp test).", DefaultValueFactory = _ => 512 };
        var tg = new Option<int>("-n", "--n-gen") { Description = "Generated tokens (tg test).", DefaultValueFactory = _ => 128 };
        var reps = new Option<int>("-r", "--repetitions") { Description = "Repetitions per test.", DefaultValueFactory = _ => 5 };
        var noLimits = new Option<bool>("--no-limits") { Description = "Skip measuring memory bandwidth and FLOP peak." };
        var readEvery = new Option<int>("--read-every")
        {
            Description = "Generated tokens between the reads of the weights' memory timed alongside tg (\"of weight read alongside\"); 1 pairs every token with a read, " +
                          "for a machine whose bandwidth moves within seconds.",
            DefaultValueFactory = _ => new BenchOptions().ReadEveryTokens,
        };
        var kernels = new Option<string?>("--kernels")
        {
            Description = "Benchmark the matrix kernels alone instead of a model: comma-separated formats (e.g. q4_0,q4_K,q8_0,f16); " +
                          "decode = matrix-vector over 512 MiB of distinct matrices (GB/s, share of read bandwidth), prefill = -p tokens (GOP/s, share of the int8 dot peak for integer kernels, of the FMA peak otherwise).",
        };
        var kernelShapes = new Option<string>("--kernel-shapes")
        {
            Description = "Matrix shapes for --kernels, ROWSxCOLS comma-separated.", DefaultValueFactory = _ => "8192x2048,2048x8192",
        };
        var kernelMiB = new Option<int>("--kernel-mib")
        {
            Description = "MiB of distinct matrices the --kernels decode test streams (default 512: far beyond the caches; a few MiB measures in-cache speed).",
            DefaultValueFactory = _ => 512,
        };
        var json = CliOptions.Json();
        var eng = new EngineCliOptions();
        var cmd = new Command("bench", "Prompt-processing and generation speed (like llama-bench), as fractions of measured bandwidth and FLOP peak.")
        {
            model, synthetic, format, pp, tg, reps, noLimits, readEvery, kernels, kernelShapes, kernelMiB, json,
        };
        eng.AddTo(cmd);
        cmd.SetAction((pr, ct) =>
        {
            var console = CliRunner.Human(pr.GetValue(json));
            int threads = pr.GetValue(eng.Threads);
            if (pr.GetValue(readEvery) < 1)
                throw new LowbitException($"--read-every must be at least 1 token, got {pr.GetValue(readEvery)}");
            if (pr.GetValue(kernels) is { } kernelFormats)
                return Task.FromResult(RunKernels(console, kernelFormats, pr.GetValue(kernelShapes)!, pr.GetValue(kernelMiB), pr.GetValue(pp), threads,
                    !pr.GetValue(noLimits), !pr.GetValue(eng.NoInterleave), pr.GetValue(json), ct));
            LoadedModel m;
            LoadedModel? owner = null;
            string label;
            if (pr.GetValue(synthetic) is { } shape)
            {
                var cfg = shape.ToLowerInvariant() switch
                {
                    "llama-1b" => SyntheticModel.Llama1BLike(),
                    "tiny" => SyntheticModel.Tiny6MLike(),
                    _ => throw new LowbitException($"unknown synthetic shape '{shape}' (llama-1b, tiny)"),
                };
                var codec = CodecRegistry.Get(pr.GetValue(format) ?? "f16");
                console.WriteLine($"building synthetic {shape} model in {codec.Name} ...");
                m = SyntheticModel.Create(cfg, codec);
                label = $"synthetic {shape} {codec.Name}";
            }
            else
            {
                string path = CliOptions.ResolveModel(pr.GetValue(model));
                m = ModelSession.Open(path, pr.GetValue(format), threads, out owner);
                label = $"{Path.GetFileName(Path.GetFullPath(path).TrimEnd('/'))}{(pr.GetValue(format) is { } f ? " " + f : "")}";
            }
            using var o = owner;
            using var mm = m;
            var engine = new InferenceEngine(m, new EngineOptions
            {
                Threads = threads,
                ContextLength = Math.Min(m.Config.MaxPositions, Math.Max(pr.GetValue(pp), pr.GetValue(tg)) + 1),
                KvCache = EngineCliOptions.ParseKv(pr.GetValue(eng.KvCache)!),
                InterleavedDecode = !pr.GetValue(eng.NoInterleave),
            });
            MachineLimits? before = pr.GetValue(noLimits) ? null : Bench.MeasureMachine(threads);
            var result = Bench.Run(engine, new BenchOptions
            {
                PromptTokens = pr.GetValue(pp), GenerateTokens = pr.GetValue(tg), Repetitions = pr.GetValue(reps),
                MeasureReadAlongside = before is not null, ReadEveryTokens = pr.GetValue(readEvery),
            }, new SyncProgress<string>(s => console.MarkupLine($"[grey]{Markup.Escape(s)}[/]")), ct);
            MachineLimits? limits = before is null ? null : MachineLimits.Around(before, Bench.MeasureMachine(threads));
            long bytes = m.Tensors.Sum(t => t.ByteCount), parameters = m.Tensors.Sum(t => t.ElementCount);

            var table = new Table().AddColumns("model", "size", "params", "backend", "threads", "test", "t/s", "of limit");
            string ppFrac = limits is null ? "-"
                : $"{100 * result.PromptFractionOfPeak(limits.FlopsPerSecond, limits.Int8OpsPerSecond):F1}% of {(result.PromptIntegerShare > 0 && limits.Int8OpsPerSecond > 0 ? "int8/FMA" : "FLOP")} peak";
            string tgFrac = limits is null ? "-" : $"{100 * result.GenerateFractionOfBandwidth(limits.ReadBytesPerSecond):F1}% of bandwidth";
            if (limits is not null && result.ReadBytesPerSecondAlongside > 0)
                tgFrac += $", {100 * result.GenerateFractionOfBandwidth(result.ReadBytesPerSecondAlongside):F1}% of weight read alongside";
            // A test asked for 0 tokens was not run (as llama-bench skips -p 0 / -n 0): no row of zeros for it.
            void AddTest(string test, int tokens, Measurement tokensPerSecond, string fraction)
            {
                if (tokens > 0)
                    table.AddTextRow(label, Format.Bytes(bytes), Format.Count(parameters), "CPU", result.Threads.ToString(), $"{test}{tokens}",
                        tokensPerSecond.ToString(), fraction);
            }
            AddTest("pp", result.PromptTokens, result.PromptTokensPerSecond, ppFrac);
            AddTest("tg", result.GenerateTokens, result.GenerateTokensPerSecond, tgFrac);
            console.Write(table);
            if (limits is not null)
                console.WriteLine($"machine: read bandwidth {limits.ReadBandwidthText}" +
                                  (result.ReadBytesPerSecondAlongside > 0 ? $", weights read alongside tg {result.ReadBytesPerSecondAlongside / 1e9:F1}" : "") +
                                  $", triad {limits.TriadBytesPerSecond / 1e9:F1} GB/s, " +
                                  $"FMA peak {limits.FlopsPerSecond / 1e9:F1} GFLOP/s, int8 dot peak {limits.Int8OpsPerSecond / 1e9:F1} GOP/s ({limits.Threads} threads); " +
                                  $"decode reads {result.DecodeBytesPerToken / 1e6:F2} MB/token, prefill {result.PromptFlopsPerToken / 1e6:F1} MFLOP/token, " +
                                  $"{100 * result.PromptIntegerShare:F1}% of it on integer dot products (against the int8 peak, the rest against FMA)");
            if (pr.GetValue(json))
                Console.WriteLine(JsonSerializer.Serialize(new { model = label, bytes, parameters, result, limits }, JsonOutput.Options));
            return Task.FromResult(0);
        });
        return cmd;
    }

    private static int RunKernels(IAnsiConsole console, string formats, string shapes, int mib, int prefillTokens, int threads, bool measureLimits, bool interleave, bool json, CancellationToken ct)
    {
        var parsedShapes = shapes.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(ParseShape).ToArray();
        var codecs = formats.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(CodecRegistry.Get).ToArray();
        MachineLimits? before = measureLimits ? Bench.MeasureMachine(threads) : null;
        var results = new List<KernelSpeed>();
        foreach (var codec in codecs)
            foreach (var (rows, cols) in parsedShapes)
            {
                console.MarkupLine($"[grey]{Markup.Escape($"{codec.Name} {rows}x{cols} ...")}[/]");
                results.Add(KernelBench.Measure(codec, rows, cols, threads, decodeBytes: Math.Max(1, mib) * (1L << 20), prefillTokens: prefillTokens,
                    interleave: interleave, cancel: ct));
            }
        MachineLimits? limits = before is null ? null : MachineLimits.Around(before, Bench.MeasureMachine(threads));
        var table = new Table().AddColumns("format", "shape", "decode GB/s", "of bandwidth", $"prefill pp{prefillTokens} GOP/s", "of compute peak");
        foreach (var r in results)
            table.AddTextRow(r.Format, $"{r.Rows}x{r.Cols}", $"{r.DecodeBytesPerSecond / 1e9:F1}",
                limits is null ? "-" : $"{100 * r.DecodeFractionOfBandwidth(limits.ReadBytesPerSecond):F1}%",
                prefillTokens > 0 ? $"{2 * r.PrefillMultiplyAddsPerSecond / 1e9:F1}" : "-",
                limits is null || prefillTokens <= 0 ? "-" : $"{100 * r.PrefillFractionOfPeak(limits.FlopsPerSecond, limits.Int8OpsPerSecond):F1}%" + (r.IntegerPrefill ? " (int8)" : ""));
        console.Write(table);
        if (limits is not null)
            console.WriteLine($"machine: read bandwidth {limits.ReadBandwidthText}, FMA peak {limits.FlopsPerSecond / 1e9:F1} GFLOP/s, " +
                              $"int8 dot peak {limits.Int8OpsPerSecond / 1e9:F1} GOP/s ({limits.Threads} threads); " +
                              "GOP = 2 × multiply-adds; (int8) = integer kernels, against the int8 dot peak");
        if (json) Console.WriteLine(JsonSerializer.Serialize(new { kernels = results, limits }, JsonOutput.Options));
        return 0;
    }

    private static (int Rows, int Cols) ParseShape(string s)
    {
        var parts = s.Split('x');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int r) || !int.TryParse(parts[1], out int c) || r <= 0 || c <= 0)
            throw new LowbitException($"--kernel-shapes: '{s}' is not ROWSxCOLS (e.g. 8192x2048)");
        return (r, c);
    }
}
