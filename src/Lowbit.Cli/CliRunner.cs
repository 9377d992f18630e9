using System.CommandLine;
using Spectre.Console;

namespace Lowbit.Cli;

/// <summary>
/// Runs a command with Lowbit's error contract: user errors print one line on stderr and exit 1,
/// Ctrl+C cancels cleanly (exit 130), and an unexpected failure prints one line (exit 2) rather than
/// a stack trace (set LOWBIT_DEBUG=1 to see the trace).
/// </summary>
public static class CliRunner
{
    public static int Run(RootCommand root, string[] args)
    {
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;
            cts.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            var parse = root.Parse(args);
            var config = new InvocationConfiguration { EnableDefaultExceptionHandler = false };
            return parse.InvokeAsync(config, cts.Token).GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("lowbit: cancelled");
            return 130;
        }
        catch (LowbitException e)
        {
            Console.Error.WriteLine($"lowbit: error: {e.Message}");
            return 1;
        }
        catch (Exception e) when (Environment.GetEnvironmentVariable("LOWBIT_DEBUG") != "1")
        {
            Console.Error.WriteLine($"lowbit: internal error: {e.GetType().Name}: {e.Message} (set LOWBIT_DEBUG=1 for details)");
            return 2;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>The console for human-readable output; stdout stays clean for --json.</summary>
    public static IAnsiConsole Human(bool json)
    {
        var console = json ? AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }) : AnsiConsole.Console;
        // Redirected output (logs, CI) gets wide tables instead of Spectre's 80-column default.
        if (json ? Console.IsErrorRedirected : Console.IsOutputRedirected) console.Profile.Width = 160;
        return console;
    }
}
