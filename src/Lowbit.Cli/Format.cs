using System.Globalization;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Lowbit.Cli;

/// <summary>Human-readable numbers for tables.</summary>
public static class Format
{
    public static string Bytes(long b) => b switch
    {
        >= 1L << 30 => (b / (double)(1L << 30)).ToString("0.00", CultureInfo.InvariantCulture) + " GiB",
        >= 1L << 20 => (b / (double)(1L << 20)).ToString("0.00", CultureInfo.InvariantCulture) + " MiB",
        >= 1L << 10 => (b / (double)(1L << 10)).ToString("0.0", CultureInfo.InvariantCulture) + " KiB",
        _ => b.ToString(CultureInfo.InvariantCulture) + " B",
    };

    public static string Count(long n) => n switch
    {
        >= 1_000_000_000 => (n / 1e9).ToString("0.00", CultureInfo.InvariantCulture) + " B",
        >= 1_000_000 => (n / 1e6).ToString("0.00", CultureInfo.InvariantCulture) + " M",
        >= 1_000 => (n / 1e3).ToString("0.0", CultureInfo.InvariantCulture) + " K",
        _ => n.ToString(CultureInfo.InvariantCulture),
    };

    public static string F(double v, string fmt = "0.####") => v.ToString(fmt, CultureInfo.InvariantCulture);

    public static string Shape(long[] shape) => "[" + string.Join(", ", shape) + "]";
}

/// <summary>Table rows of plain text: cell strings are never parsed as Spectre markup (tensor shapes contain brackets).</summary>
public static class TextTableExtensions
{
    public static Table AddTextRow(this Table table, params string[] cells) =>
        table.AddRow(cells.Select(c => (IRenderable)new Text(c)).ToArray());
}
