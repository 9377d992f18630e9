using System.CommandLine;

namespace Lowbit.Cli;

/// <summary>Options shared by several commands, built fresh per command (System.CommandLine options belong to one parent).</summary>
public static class CliOptions
{
    public static Argument<string?> ModelArgument(string description = "Model: HF directory (config.json + safetensors), .safetensors, .gguf or llama2.c .bin. Default: the bundled reference model.") =>
        new("model") { Arity = ArgumentArity.ZeroOrOne, Description = description };

    public static Option<int> Threads() => new("--threads", "-t")
    {
        Description = "Worker threads (default: all cores). Results do not depend on it.",
        DefaultValueFactory = _ => Environment.ProcessorCount,
    };

    public static Option<bool> Json() => new("--json") { Description = "Write machine-readable results to stdout (human output goes to stderr)." };

    /// <summary>The model path given, or the bundled default.</summary>
    public static string ResolveModel(string? given) => string.IsNullOrWhiteSpace(given) ? BundledPaths.DefaultModel() : given;
}
