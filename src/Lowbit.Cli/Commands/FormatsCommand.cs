using System.CommandLine;
using Lowbit.Formats;
using Lowbit.Recipes;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>`lowbit formats`: every codec with its block geometry and bits per weight, and the GGUF mixtures.</summary>
public static class FormatsCommand
{
    public static Command Create()
    {
        var cmd = new Command("formats", "List the numeric formats and llama.cpp mixtures Lowbit can write.");
        cmd.SetAction(_ =>
        {
            var console = CliRunner.Human(false);
            var table = new Table().AddColumns("format", "GGUF id", "block", "bytes/block", "bits/weight", "imatrix", "int dot");
            foreach (var c in CodecRegistry.Codecs)
                table.AddTextRow(c.Name, c.Ggml is { } g ? ((uint)g).ToString() : "-", c.BlockSize.ToString(), c.BlockBytes.ToString(),
                    c.BitsPerWeight.ToString("0.####"), c.UsesImportance ? "yes" : "-", c.VecDotCodec?.Name ?? "-");
            console.Write(table);
            console.WriteLine("Parametric: int{2,3,4,8}-{gN|channel|tensor}-{sym|asym}[-mse] (e.g. int4-g128-sym).");
            console.WriteLine($"GGUF mixtures (lowbit quantize --format): {string.Join(", ", GgufMixture.Names)}");
            return 0;
        });
        return cmd;
    }
}
