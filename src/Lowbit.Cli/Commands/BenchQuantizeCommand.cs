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
        var cmd = new Command("bench-quantize", "Quantization throughput per format on a Gaussian weight matrix (GB/s of F32 input) and its RMSE / SQNR.")
        {
            formats, rows, cols, reps, threads, json,
        };
        cmd.SetAction((pr, ct) =>
        {
            var console = CliRunner.Human(pr.GetValue(json));
            int r = pr.GetValue(rows), c = pr.GetValue(cols);
            var data = new float[(long)r * c];
            var rng = new Random(1);
            for (int i = 0; i < data.Length; i++)
                data[i] = (float)(0.02 * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
            var f32 = CodecRegistry.Get("f32");
            var bytes = new byte[data.Length * 4];
            Buffer.BlockCopy(data, 0, bytes, 0, bytes.Length);
            var source = new ModelTensor("bench.weight", [r, c], f32, bytes);
            var table = new Table().AddColumns("format", "bpw", "GB/s (F32 in)", "Mweights/s", "RMSE", "SQNR dB");
            var results = new List<object>();
            foreach (var name in pr.GetValue(formats)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                var codec = CodecRegistry.Get(name);
                var dst = new byte[codec.TensorBytes(r, c)];
                double best = double.MaxValue;
                for (int k = 0; k < Math.Max(1, pr.GetValue(reps)); k++)
                {
                    var sw = Stopwatch.StartNew();
                    TensorQuantizer.Quantize(source, bytes, codec, default, dst, pr.GetValue(threads), ct);
                    best = Math.Min(best, sw.Elapsed.TotalSeconds);
                }
                var back = new float[data.Length];
                codec.DequantizeTensorRows(dst, r, c, 0, r, back);
                double err = 0, sig = 0;
                for (int i = 0; i < data.Length; i++)
                {
                    double d = data[i] - back[i];
                    err += d * d;
                    sig += (double)data[i] * data[i];
                }
                double rmse = Math.Sqrt(err / data.Length), sqnr = 10 * Math.Log10(sig / Math.Max(err, 1e-300));
                double gbps = bytes.Length / best / 1e9;
                double bpw = 8.0 * dst.Length / data.Length;
                table.AddTextRow(codec.Name, bpw.ToString("0.000"), gbps.ToString("0.000"), (data.Length / best / 1e6).ToString("0.0"),
                    rmse.ToString("E3"), sqnr.ToString("0.00"));
                results.Add(new { format = codec.Name, bpw, gb_per_s = gbps, rmse, sqnr_db = sqnr, seconds = best });
            }
            console.Write(table);
            console.WriteLine($"matrix {r}×{c} N(0, 0.02²), {pr.GetValue(threads)} threads, best of {pr.GetValue(reps)}");
            if (pr.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(results, JsonOutput.Options));
            return Task.FromResult(0);
        });
        return cmd;
    }
}
