using System.Runtime.InteropServices;

namespace Lowbit.Tests.Formats;

/// <summary>Reads the ggml reference quantizations in tests/data/ggml-golden (see its README.md).</summary>
internal static class KQuantGolden
{
    public static readonly string[] Cases = ["gauss1", "gauss002", "outliers", "uniform", "special"];

    private static readonly Lazy<string> Root = new(FindRoot);

    public static string Dir => Path.Combine(Root.Value, "tests", "data", "ggml-golden");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Lowbit.slnx"))) return dir.FullName;
        throw new InvalidOperationException("repository root (Lowbit.slnx) not found above " + AppContext.BaseDirectory);
    }

    /// <summary>One manifest row: shape and files for (case, type, imatrix).</summary>
    public sealed record Entry(string Case, int Rows, int Cols, string Type, bool Imatrix, long Bytes, string File, string DequantFile);

    public static Entry Find(string caseName, string type, bool imatrix)
    {
        foreach (var line in System.IO.File.ReadLines(Path.Combine(Dir, "manifest.tsv")).Skip(1))
        {
            var f = line.Split('\t');
            if (f[0] == caseName && f[3] == type && (f[5] == "1") == imatrix)
                return new Entry(f[0], int.Parse(f[1]), int.Parse(f[2]), f[3], imatrix, long.Parse(f[6]), f[7], f[8]);
        }
        throw new InvalidOperationException($"manifest has no row for {caseName}/{type}/imatrix={imatrix}");
    }

    public static float[] Floats(string relative) =>
        MemoryMarshal.Cast<byte, float>(System.IO.File.ReadAllBytes(Path.Combine(Dir, relative))).ToArray();

    public static byte[] Bytes(string relative) => System.IO.File.ReadAllBytes(Path.Combine(Dir, relative));

    public static float[] Input(string caseName) => Floats(Path.Combine(caseName, "input.f32"));

    public static float[] Importance(string caseName) => Floats(Path.Combine(caseName, "imatrix.f32"));
}
