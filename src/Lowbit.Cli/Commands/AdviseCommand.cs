using System.CommandLine;
using Lowbit.Advisor;
using Lowbit.IO;
using Lowbit.Model;
using Lowbit.Report;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>`lowbit advise`: memory breakdown per format, and fit / speed / cost estimates per device.</summary>
public static class AdviseCommand
{
    public static Command Create()
    {
        var model = new Argument<string?>("model")
        {
            Arity = ArgumentArity.ZeroOrOne,
            Description = $"A local model (HF dir, .safetensors, .gguf, llama2.c .bin), an HF config.json, or a known shape ({string.Join(", ", ModelShapes.Names)}). Default: the bundled model.",
        };
        var context = new Option<int>("--context") { Description = "Tokens of context per sequence (KV cache length).", DefaultValueFactory = _ => 4096 };
        var batch = new Option<int>("--batch") { Description = "Sequences decoded in parallel.", DefaultValueFactory = _ => 1 };
        var gpu = new Option<string?>("--gpu") { Description = "Device id(s) or name(s) from the catalog, comma-separated (default: every device, one summary row each)." };
        var format = new Option<string?>("--format") { Description = "Weight format(s) to evaluate, comma-separated (advisor names, e.g. q4_K,q8_0,nvfp4; default: the full sweep)." };
        var kv = new Option<string>("--kv-cache") { Description = "KV cache type: f16, bf16, f32, q8_0, q4_0, fp8, ...", DefaultValueFactory = _ => "f16" };
        var flash = new Option<bool>("--flash-attention") { Description = "Assume flash attention (no materialized attention scores)." };
        var catalogFile = new Option<string?>("--catalog") { Description = "A hardware catalog JSON applied over the built-in one (same ids replace, new ids append)." };
        var runs = new Option<string?>("--runs") { Description = "A run directory (evaluate-variants --out): show the speeds Lowbit measured on this machine next to the estimates." };
        var measuredOn = new Option<string?>("--measured-on") { Description = "With --runs: the catalog device this machine is (e.g. cpu-ddr5-2ch); its rows then show the measured speeds of variants named like advisor formats (q4_K, q8_0, ...)." };
        var json = CliOptions.Json();
        var cmd = new Command("advise", "Estimate memory, fit, speed and cost of a model per weight format and device (estimates, not measurements).")
        {
            model, context, batch, gpu, format, kv, flash, catalogFile, runs, measuredOn, json,
        };
        cmd.SetAction(pr =>
        {
            var console = CliRunner.Human(pr.GetValue(json));
            var (name, config) = ResolveModel(pr.GetValue(model));
            var catalog = HardwareCatalog.LoadBuiltIn();
            if (pr.GetValue(catalogFile) is { } cf) catalog = catalog.With(HardwareCatalog.Load(cf));
            IReadOnlyList<DeviceSpec> devices = pr.GetValue(gpu) is { } g
                ? g.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(catalog.Get).ToArray()
                : catalog.Devices;
            var run = pr.GetValue(runs) is { } rd ? RunFiles.Read(rd) : null;
            var measured = new List<MeasuredSpeed>();
            if (pr.GetValue(measuredOn) is { } mo)
            {
                if (run is null) throw new LowbitException("--measured-on needs --runs RUN_DIR");
                var here = catalog.Get(mo);
                foreach (var v in run.Variants.Where(v => string.Equals(v.Model, name, StringComparison.OrdinalIgnoreCase)))
                    foreach (var r in v.Variants)
                        if (AdvisorFormats.TryGet(r.Name) is { } af)
                            measured.Add(new MeasuredSpeed(here.Id, af.Name, r.DecodeTokensPerSecond, r.PrefillTokensPerSecond));
            }
            var formats = pr.GetValue(format)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            var report = DeploymentAdvisor.Advise(new AdviceRequest
            {
                ModelName = name,
                Model = config,
                Measured = measured,
                Formats = formats is { Length: > 0 } ? formats.Select(f => AdvisorFormats.Get(f).Name).ToArray() : null,
                Settings = new InferenceSettings
                {
                    Context = pr.GetValue(context), Batch = pr.GetValue(batch), KvCache = KvCacheTypes.Parse(pr.GetValue(kv)!),
                    FlashAttention = pr.GetValue(flash),
                },
            }, devices);
            if (pr.GetValue(json))
            {
                Console.WriteLine(AdvisorJson.Serialize(report));
                return 0;
            }
            var detailed = (pr.GetValue(gpu) is not null ? devices.Select(d => d.Id) : []).ToHashSet(StringComparer.OrdinalIgnoreCase);
            if (pr.GetValue(measuredOn) is { } thisDevice) detailed.Add(catalog.Get(thisDevice).Id);
            Print(console, report, detailed);
            if (run is not null) PrintMeasured(console, run, name);
            return 0;
        });
        return cmd;
    }

    /// <summary>A shape name, an HF config.json, or a model Lowbit can open.</summary>
    public static (string Name, ModelConfig Config) ResolveModel(string? given)
    {
        if (!string.IsNullOrWhiteSpace(given) && ModelShapes.TryGet(given) is { } shape) return (given.Trim().ToLowerInvariant(), shape);
        string path = CliOptions.ResolveModel(given);
        if (File.Exists(path) && string.Equals(Path.GetExtension(path), ".json", StringComparison.OrdinalIgnoreCase))
            return (Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(path))) ?? "model", HfConfig.Read(path));
        if (!File.Exists(path) && !Directory.Exists(path))
            throw new LowbitException($"'{given}' is neither a file, a directory, nor a known shape ({string.Join(", ", ModelShapes.Names)})");
        using var m = ModelLoader.Open(path);
        return (QuantizeCommand.ModelName(path), m.Config);
    }

    /// <param name="detailed">Ids of the devices that get a per-format table.</param>
    public static void Print(IAnsiConsole console, AdviceReport r, IReadOnlySet<string> detailed)
    {
        var s = r.Settings;
        console.WriteLine($"{r.Model}: {Format.Count(r.Parameters)} parameters; context {s.Context}, batch {s.Batch}, KV cache {s.KvCache.ToString().ToLowerInvariant()}{(s.FlashAttention ? ", flash attention" : "")}");
        foreach (var w in r.Warnings) console.MarkupLineInterpolated($"[yellow]warning:[/] {w}");
        foreach (var sk in r.Skipped) console.MarkupLineInterpolated($"[grey]skipped {sk.Format}: {sk.Reason}[/]");
        var first = r.Devices.FirstOrDefault();
        if (first is null) return;

        // Memory breakdown per format; the overhead column is the first device's kind.
        var mem = new Table().Title(Markup.Escape($"memory per format (overhead as on a {first.Device.Kind.ToString().ToLowerInvariant()}: {first.Device.Name})"))
            .AddColumns("format", "bpw", "weights", "KV cache", "activations", "overhead", "total");
        foreach (var f in first.Formats)
            mem.AddTextRow(f.Format, Format.F(f.BitsPerWeight, "0.00"), Format.Bytes(f.WeightBytes), Format.Bytes(f.KvCacheBytes),
                Format.Bytes(f.ComputeBufferBytes), Format.Bytes(f.OverheadBytes), Format.Bytes(f.TotalBytes));
        console.Write(mem);
        foreach (var f in first.Formats) console.MarkupLineInterpolated($"[grey]{f.Format}: {f.Plan}[/]");

        var dev = new Table().Title("per device (estimates)")
            .AddColumns("device", "memory", "best", "headroom", "decode tok/s", "prefill tok/s", "$/Mtok", "fit");
        foreach (var d in r.Devices)
        {
            var best = d.Formats.FirstOrDefault(f => f.Format == d.BestFormat);
            dev.AddTextRow(d.Device.Name, Format.Bytes(d.MemoryBytes), d.BestFormat ?? "none fits",
                best is null ? "-" : Format.Bytes(best.UsableHeadroomBytes),
                best is null ? "-" : Format.F(best.DecodeTokensPerSecondEstimate, "0"),
                best?.PrefillTokensPerSecondEstimate is { } p ? Format.F(p, "0") : "-",
                best?.CostPerMillionTokensUsd is { } c ? Format.F(c, "0.0000") : "-",
                $"{d.Formats.Count(f => f.Fits)}/{d.Formats.Count}");
        }
        console.Write(dev);

        foreach (var d in r.Devices.Where(d => detailed.Contains(d.Device.Id)))
            {
                bool anyMeasured = d.Formats.Any(f => f.MeasuredDecodeTokensPerSecond is not null);
                var t = new Table().Title(Markup.Escape($"{d.Device.Name}: {Format.Bytes(d.UsableBytes)} usable of {Format.Bytes(d.MemoryBytes)} (estimates)"))
                    .AddColumns("format", "total", "headroom", "kernel", "decode tok/s", "prefill tok/s", "$/Mtok");
                if (anyMeasured) t.AddColumns("measured decode", "measured prefill");
                foreach (var f in d.Formats)
                {
                    var cells = new List<string>
                    {
                        f.Format + (f.Format == d.BestFormat ? " *" : ""), Format.Bytes(f.TotalBytes),
                        f.Fits ? Format.Bytes(f.UsableHeadroomBytes) : "no fit",
                        f.ComputePath + (f.FastKernel ? "" : " (slow)"),
                        Format.F(f.DecodeTokensPerSecondEstimate, "0.0"), f.PrefillTokensPerSecondEstimate is { } p ? Format.F(p, "0") : "-",
                        f.CostPerMillionTokensUsd is { } c ? Format.F(c, "0.000") : "-",
                    };
                    if (anyMeasured)
                    {
                        cells.Add(f.MeasuredDecodeTokensPerSecond is { } md ? Format.F(md, "0.0") : "-");
                        cells.Add(f.MeasuredPrefillTokensPerSecond is { } mp ? Format.F(mp, "0") : "-");
                    }
                    t.AddTextRow([.. cells]);
                }
                console.Write(t);
            }
        console.WriteLine("* best: most bits per weight among formats that fit with a fast kernel. Headroom = usable memory − total.");
        console.MarkupLineInterpolated($"[grey]{DeploymentAdvisor.EstimateNote}[/]");
    }

    /// <summary>Speeds Lowbit measured on this machine (evaluate-variants), shown beside the estimates.</summary>
    public static void PrintMeasured(IAnsiConsole console, RunFiles.Contents run, string model)
    {
        if (run.Variants.Count == 0)
        {
            console.WriteLine("the run directory holds no variants.json (run `lowbit evaluate-variants ... --out DIR`)");
            return;
        }
        foreach (var v in run.Variants)
        {
            bool same = string.Equals(v.Model, model, StringComparison.OrdinalIgnoreCase);
            var t = new Table().Title(Markup.Escape($"measured by Lowbit on this machine ({v.Machine}): {v.Model}{(same ? "" : " (a different model than advised)")}"))
                .AddColumns("variant", "bytes", "bpw", "measured prefill tok/s", "measured decode tok/s", "mean KLD", "PPL");
            foreach (var r in new[] { v.Base }.Concat(v.Variants))
                t.AddTextRow(r.Name, Format.Bytes(r.Bytes), Format.F(r.BitsPerWeight, "0.00"), Format.F(r.PrefillTokensPerSecond, "0"),
                    Format.F(r.DecodeTokensPerSecond, "0"), Format.F(r.MeanKld, "0.000000"), Format.F(r.Perplexity, "0.00"));
            console.Write(t);
        }
    }
}
