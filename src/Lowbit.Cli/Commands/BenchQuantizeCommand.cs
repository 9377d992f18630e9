using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Lowbit.Formats;
using Lowbit.Model;
using Lowbit.Pipeline;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>`lowbit bench-quantize`: quantization throughput per format (GB/s of F32 input), plus the RTN error it causes.</summary>
public static class BenchQuantizeCommand
{
    public static Command Create()
    {
        var formats = new Option<string>("--formats") { Description = "Comma-separated codecs.", DefaultValueFactory = _ => "q8_0,q4_0,q4_1,q5_0,q5_1,q2_K,q3_K,q4_K,q5_K,q6_K,iq4_nl,iq4_xs,mxfp4,nvfp4,nf4,fp8_e4m3,int4-g128-sym" };
        var rows = new Option<int>("--rows") { Description = "Rows of the synthetic matrix.", DefaultValueFactory = _ => 4096 };
        var cols = new Option<int>("--cols") { Description = "Columns of the synthetic matrix (a multiple of 256).", DefaultValueFactory = _ => 4096 };
        var reps = new Option<int>("-r", "--repetitions") { Description = "Timed repetitions (best is reported).", DefaultValueFactory = _ => 3 };
        var threads = CliOptions.Threads();
        var json = CliOptions.Json();
        var model = new Option<string?>("--model", "-m") { Description = "Measure on this model's 2-D weight tensors instead of a Gaussian matrix ('bundled' = the reference model)." };
        var cmd = new Command("bench-quantize", "Quantization throughput per format (GB/s of input) and the RMSE / SQNR it causes, on a Gaussian matrix or a real model's weights.")
        {
            formats, rows, cols, reps, threads, json, model,
        };
        cmd.SetAction((pr, ct) =>
        {
            var console = CliRunner.Human(pr.GetValue(json));
            var sources = new List<(ModelTensor Tensor, float[] Values)>();
            LoadedModel? loaded = null;
            string what;
            if (pr.GetValue(model) is { } mp)
            {
                loaded = IO.ModelLoader.Open(mp == "bundled" ? BundledPaths.DefaultModel() : mp);
                foreach (var t in loaded.Tensors.Where(Recipes.GgufMixture.IsQuantizable))
                {
                    // The source is materialized once as F32, so timing covers encoding, not decoding the source.
                    var values = t.ToFloat();
                    var raw = new byte[values.Length * 4];
                    Buffer.BlockCopy(values, 0, raw, 0, raw.Length);
                    sources.Add((new ModelTensor(t.Name, t.Shape, CodecRegistry.Get("f32"), raw), values));
                }
                what = $"{sources.Count} weight matrices of {loaded.SourcePath} ({sources.Sum(x => x.Values.LongLength):N0} weights)";
            }
            else
            {
                int r = pr.GetValue(rows), c = pr.GetValue(cols);
                var data = new float[(long)r * c];
                var rng = new Random(1);
                for (int i = 0; i < data.Length; i++)
                    data[i] = (float)(0.02 * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
                var raw = new byte[data.Length * 4];
                Buffer.BlockCopy(data, 0, raw, 0, raw.Length);
                sources.Add((new ModelTensor("bench.weight", [r, c], CodecRegistry.Get("f32"), raw), data));
                what = $"matrix {r}×{c} N(0, 0.02²)";
            }
            using var disposeModel = loaded;
            long totalWeights = sources.Sum(x => x.Values.LongLength);
            var table = new Table().AddColumns("format", "bpw", "GB/s (F32 in)", "Mweights/s", "RMSE", "SQNR dB");
            var results = new List<object>();
            foreach (var name in pr.GetValue(formats)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                var codec = CodecRegistry.Get(name);
                double best = double.MaxValue, err = 0, sig = 0;
                long outBytes = 0;
                var usable = sources.Where(x => codec.CanEncodeRow(x.Tensor.Cols)).ToList();
                for (int k = 0; k < Math.Max(1, pr.GetValue(reps)); k++)
                {
                    double seconds = 0;
                    foreach (var (t, _) in usable)
                    {
                        var dst = new byte[codec.TensorBytes(t.Rows, t.Cols)];
                        var sw = System.Diagnostics.Stopwatch.StartNew();
                        TensorQuantizer.Quantize(t, t.Data, codec, default, dst, pr.GetValue(threads), ct);
                        seconds += sw.Elapsed.TotalSeconds;
                        if (k == 0)
                        {
                            outBytes += dst.Length;
                            var back = new float[t.ElementCount];
                            codec.DequantizeTensorRows(dst, t.Rows, (int)t.Cols, 0, (int)t.Rows, back);
                            var v = sources.First(x => ReferenceEquals(x.Tensor, t)).Values;
                            for (int i = 0; i < v.Length; i++)
                            {
                                double d = v[i] - back[i];
                                err += d * d;
                                sig += (double)v[i] * v[i];
                            }
                        }
                    }
                    best = Math.Min(best, seconds);
                }
                long n = usable.Sum(x => x.Values.LongLength);
                double rmse = Math.Sqrt(err / Math.Max(1, n)), sqnr = 10 * Math.Log10(sig / Math.Max(err, 1e-300));
                double gbps = 4.0 * n / best / 1e9;
                double bpw = 8.0 * outBytes / Math.Max(1, n);
                table.AddTextRow(codec.Name + (usable.Count < sources.Count ? $" ({usable.Count}/{sources.Count} tensors)" : ""), bpw.ToString("0.000"),
                    gbps.ToString("0.000"), (n / best / 1e6).ToString("0.0"), rmse.ToString("E3"), sqnr.ToString("0.00"));
                results.Add(new { format = codec.Name, bpw, gb_per_s = gbps, rmse, sqnr_db = sqnr, seconds = best, tensors = usable.Count });
            }
            console.Write(table);
            console.WriteLine($"{what}, {pr.GetValue(threads)} threads, best of {pr.GetValue(reps)}");
            if (pr.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(results, JsonOutput.Options));
            return Task.FromResult(0);
        });
        return cmd;
    }
}
