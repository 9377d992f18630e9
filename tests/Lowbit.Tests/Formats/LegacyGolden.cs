using System.Runtime.InteropServices;

namespace Lowbit.Tests.Formats;

/// <summary>One row of tests/data/ggml-golden/manifest.tsv: a case quantized by ggml to one type.</summary>
public sealed record LegacyGoldenEntry(string Case, int Rows, int Cols, string Type, bool Imatrix, int Bytes, string File, string DequantFile)
{
    public override string ToString() => $"{Case}/{Type}{(Imatrix ? "+imatrix" : "")}";
}

/// <summary>Reads ggml's reference quantizations (see tests/data/ggml-golden/README.md).</summary>
public static class LegacyGolden
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string Dir => Path.Combine(RepoRoot, "tests", "data", "ggml-golden");

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Lowbit.slnx"))) return dir.FullName;
        throw new InvalidOperationException("repository root (the directory holding Lowbit.slnx) not found above " + AppContext.BaseDirectory);
    }

    public static IReadOnlyList<LegacyGoldenEntry> Manifest()
    {
        var lines = File.ReadAllLines(Path.Combine(Dir, "manifest.tsv"));
        var entries = new List<LegacyGoldenEntry>();
        foreach (var line in lines.Skip(1))
        {
            if (line.Length == 0) continue;
            var f = line.Split('\t');
            entries.Add(new LegacyGoldenEntry(f[0], int.Parse(f[1]), int.Parse(f[2]), f[3], f[5] == "1", int.Parse(f[6]), f[7], f[8]));
        }
        return entries;
    }

    public static byte[] Bytes(string relative) => File.ReadAllBytes(Path.Combine(Dir, relative));

    public static float[] Floats(string relative) => MemoryMarshal.Cast<byte, float>(Bytes(relative)).ToArray();

    public static float[] Input(string @case) => Floats(Path.Combine(@case, "input.f32"));

    public static float[] Imatrix(string @case) => Floats(Path.Combine(@case, "imatrix.f32"));
}
