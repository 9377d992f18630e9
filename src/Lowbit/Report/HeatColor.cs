namespace Lowbit.Report;

/// <summary>The heatmap colour ramp shared by the terminal and HTML renderings: green (0) → yellow (0.5) → red (1).</summary>
public static class HeatColor
{
    public static (byte R, byte G, byte B) Rgb(double t)
    {
        t = double.IsFinite(t) ? Math.Clamp(t, 0, 1) : 0;
        // Two linear segments through muted green (76,175,80), amber (255,193,7) and red (211,47,47).
        (double r0, double g0, double b0, double r1, double g1, double b1, double u) = t < 0.5
            ? (76, 175, 80, 255, 193, 7, t / 0.5)
            : (255, 193, 7, 211, 47, 47, (t - 0.5) / 0.5);
        return ((byte)Math.Round(r0 + (r1 - r0) * u), (byte)Math.Round(g0 + (g1 - g0) * u), (byte)Math.Round(b0 + (b1 - b0) * u));
    }

    public static string Hex(double t)
    {
        var (r, g, b) = Rgb(t);
        return $"#{r:x2}{g:x2}{b:x2}";
    }
}
