using System.CommandLine;

namespace Lowbit.Cli.Commands;

/// <summary>Every `lowbit` sub-command; one line per command.</summary>
public static class CommandCatalog
{
    public static IEnumerable<Command> All() =>
    [
        FormatsCommand.Create(),
        InspectCommand.Create(),
        QuantizeCommand.Create(),
        PerplexityCommand.Create(),
        KldCommand.Create(),
        GenerateCommand.Create(),
        ImatrixCommand.Create(),
        BenchCommand.Create(),
        BenchQuantizeCommand.Create(),
        SensitivityCommand.Create(),
        ReportCommand.Create(),
        ReportCommand.CreateEvaluateVariants(),
        AdviseCommand.Create(),
    ];
}
