namespace Lowbit.Cli;

/// <summary>Finds the model and text files bundled with Lowbit (models/, data/ at the repository root).</summary>
public static class BundledPaths
{
    public const string DefaultModelDir = "models/refmodel-llama-6m";
    public const string DefaultEvalText = "data/wikitext-2-raw/wiki.test.full.raw";
    public const string DefaultCalibrationText = "data/wikitext-2-raw/wiki.valid.raw";

    /// <summary>Resolves a repository-relative path by walking up from the working directory and from the program's directory.</summary>
    public static string Resolve(string relative)
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, relative);
                if (File.Exists(candidate) || Directory.Exists(candidate)) return candidate;
            }
        }
        throw new LowbitException($"bundled file '{relative}' not found; pass the path explicitly");
    }

    public static string DefaultModel() => Resolve(DefaultModelDir);
}
