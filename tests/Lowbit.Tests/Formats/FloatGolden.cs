using System.Runtime.InteropServices;

namespace Lowbit.Tests.Formats;

/// <summary>
/// Reads the ggml reference quantizations in tests/data/ggml-golden (see its README.md):
/// one <see cref="Case"/> per manifest row of a given ggml type.
/// </summary>
internal static class FloatGolden
{
    public sealed record Case(string Name, int Rows, int Cols, bool WithImatrix, float[] Input, float[] Imatrix,
        byte[] Bytes, float[] Dequant)
    {
        public override string ToString() => WithImatrix ? $"{Name}+imatrix" : Name;
    }

    private static readonly Lazy<string> Root = new(() =>
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Lowbit.slnx"))) return dir.FullName;
        throw new InvalidOperationException("repository root (Lowbit.slnx) not found above " + AppContext.BaseDirectory);
    });

    public static string RepoRoot => Root.Value;

    public static string GoldenDir => Path.Combine(RepoRoot, "tests", "data", "ggml-golden");

    /// <summary>All manifest cases for a ggml type name (e.g. "mxfp4"), with and without imatrix.</summary>
    public static IReadOnlyList<Case> Cases(string type)
    {
        var result = new List<Case>();
        foreach (var line in File.ReadAllLines(Path.Combine(GoldenDir, "manifest.tsv")).Skip(1))
        {
            var f = line.Split('\t');
            if (f.Length < 9 || f[3] != type) continue;
            string dir = Path.Combine(GoldenDir, f[0]);
            result.Add(new Case(f[0], int.Parse(f[1]), int.Parse(f[2]), f[5] == "1",
                ReadFloats(Path.Combine(dir, "input.f32")),
                ReadFloats(Path.Combine(dir, "imatrix.f32")),
                File.ReadAllBytes(Path.Combine(GoldenDir, f[7])),
                ReadFloats(Path.Combine(GoldenDir, f[8]))));
        }
        if (result.Count == 0) throw new InvalidOperationException($"no golden cases for type '{type}'");
        return result;
    }

    /// <summary>Names of the manifest cases for a type, for xunit theories ("case" or "case+imatrix").</summary>
    public static TheoryData<string> CaseNames(string type)
    {
        var data = new TheoryData<string>();
        foreach (var c in Cases(type)) data.Add(c.ToString());
        return data;
    }

    public static Case Get(string type, string caseName) => Cases(type).Single(c => c.ToString() == caseName);

    public static float[] ReadFloats(string path) => MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(path)).ToArray();

    /// <summary>Index of the first difference, or -1 (for readable failure messages).</summary>
    public static int FirstDifference(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int n = Math.Min(a.Length, b.Length);
        for (int i = 0; i < n; i++) if (a[i] != b[i]) return i;
        return a.Length == b.Length ? -1 : n;
    }

    /// <summary>Asserts two float arrays are bit-identical, naming the first differing index.</summary>
    public static void AssertBitsEqual(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        int d = FirstDifference(MemoryMarshal.AsBytes(expected), MemoryMarshal.AsBytes(actual));
        Assert.True(d < 0, d < 0 ? "" : $"first difference at value {d / 4}: expected {expected[d / 4]:R}, got {actual[d / 4]:R}");
    }

    public static void AssertBytesEqual(ReadOnlySpan<byte> expected, ReadOnlySpan<byte> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        int d = FirstDifference(expected, actual);
        Assert.True(d < 0, d < 0 ? "" : $"first difference at byte {d}: expected 0x{expected[d]:x2}, got 0x{actual[d]:x2}");
    }
}
