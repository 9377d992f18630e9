using System.Diagnostics;

namespace Lowbit.Tests.Cli;

/// <summary>Runs the real `lowbit` CLI (Lowbit.Cli.dll from the test output) as a child process from the repository root.</summary>
public static class CliHarness
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public string All => Stdout + Stderr;
    }

    public static string RepoRoot
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Lowbit.slnx"))) return d.FullName;
            throw new InvalidOperationException("repository root not found");
        }
    }

    public static Result Run(params string[] args) => RunIn(RepoRoot, args);

    public static Result RunIn(string workingDirectory, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Lowbit.Cli.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment.Remove("LOWBIT_DEBUG");
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(4)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"lowbit {string.Join(' ', args)} did not finish in 4 minutes");
        }
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Runs the CLI in this process, capturing stdout (callers sit in the "Lowbit CLI" collection: the console is process-wide).</summary>
    public static (int Code, string Stdout) InProcess(params string[] args)
    {
        var stdout = Console.Out;
        var sw = new StringWriter();
        Console.SetOut(sw);
        try { return (global::Lowbit.Cli.Program.Main(args), sw.ToString()); }
        finally { Console.SetOut(stdout); }
    }
}
