namespace Lowbit.Tests.Engine;

/// <summary>Locates bundled data from the test binaries (walks up to the directory holding Lowbit.slnx).</summary>
internal static class EngineTestPaths
{
    public static string Root { get; } = FindRoot();

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Lowbit.slnx"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("repository root (Lowbit.slnx) not found");
    }

    public static string Stories260K => Path.Combine(Root, "models", "stories260K", "stories260K.bin");
    public static string Stories260KGolden => Path.Combine(Root, "models", "stories260K", "greedy-from-bos.golden.txt");
}
