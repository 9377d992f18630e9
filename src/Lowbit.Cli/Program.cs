using System.CommandLine;
using Lowbit.Cli.Commands;

namespace Lowbit.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("Lowbit: quantize LLMs, run them on fast CPU kernels, and measure what quantization cost.");
        foreach (var c in CommandCatalog.All()) root.Subcommands.Add(c);
        return CliRunner.Run(root, args);
    }
}
