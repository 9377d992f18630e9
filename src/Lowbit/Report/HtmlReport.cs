using System.Globalization;
using System.Net;
using System.Text;
using Lowbit.Advisor;
using Lowbit.Eval;

namespace Lowbit.Report;

/// <summary>
/// Renders a run directory as one self-contained HTML page: inline SVG charts drawn here (no
/// scripts, no fonts or styles from the network), so the file can be mailed or archived as is.
/// Sections: quality vs size (KLD on a log axis and PPL against bits per weight, Pareto front),
/// variants table, sensitivity heatmaps, budgeted mix vs fixed mixtures, measured speed, and the
/// advisor's fit table for a few devices.
/// </summary>
public static class HtmlReport
{
    /// <summary>Devices of the built-in catalog shown in the fit table.</summary>
    public static IReadOnlyList<string> DefaultDevices { get; } = ["rtx-4060", "rtx-4090", "h100-sxm", "apple-m4-max-40c", "cpu-ddr5-2ch"];

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    private sealed record Point(string Label, double X, double Y, string Series);

    public static string Render(RunFiles.Contents run, string title, IReadOnlyList<DeviceSpec>? devices = null)
    {
        ArgumentNullException.ThrowIfNull(run);
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>").Append(E(title)).Append("</title>\n<style>")
          .Append("body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1200px}")
          .Append("h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}")
          .Append("table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}")
          .Append("th{background:#f3f3f3}td.l,th.l{text-align:left}.note{color:#666;font-size:12px}svg{display:block;margin:8px 0}")
          .Append(".charts{display:flex;flex-wrap:wrap;gap:16px}</style></head><body>\n");
        sb.Append("<h1>").Append(E(title)).Append("</h1>\n");
        sb.Append("<p class=\"note\">Files: ").Append(E(run.Files.Count == 0 ? "none" : string.Join(", ", run.Files))).Append("</p>\n");
        if (run.Files.Count == 0)
            sb.Append("<p>The run directory holds no Lowbit results. Create some with <code>lowbit evaluate-variants MODEL --out RUN_DIR</code>.</p>\n");

        QualitySection(sb, run);
        foreach (var s in run.Sensitivity) SensitivitySection(sb, s, run.Variants.FirstOrDefault()?.Config.NumLayers);
        foreach (var b in run.Budgets) BudgetSection(sb, b);
        SpeedSection(sb, run);
        AdvisorSection(sb, run, devices);
        sb.Append("</body></html>\n");
        return sb.ToString();
    }

    private static string E(string s) => WebUtility.HtmlEncode(s);
    private static string N(double v, string fmt = "0.###") => v.ToString(fmt, Inv);

    // ---------- quality vs size ----------

    private static void QualitySection(StringBuilder sb, RunFiles.Contents run)
    {
        var points = new List<(string Label, double Bpw, double Kld, double Ppl, string Series)>();
        foreach (var v in run.Variants)
        {
            foreach (var r in v.Variants) points.Add((r.Name, r.BitsPerWeight, r.MeanKld, r.Perplexity, "variant"));
        }
        foreach (var b in run.Budgets)
        {
            points.Add((b.Planned.Name, b.Planned.BitsPerWeight, b.Planned.MeasuredKld, b.Planned.Perplexity, "budget"));
            foreach (var m in b.Mixtures)
                if (!points.Any(p => p.Label == m.Name)) points.Add((m.Name, m.BitsPerWeight, m.MeasuredKld, m.Perplexity, "mixture"));
        }
        if (points.Count == 0) return;
        sb.Append("<h2>Quality vs size</h2>\n<p class=\"note\">Every variant measured on the same chunks; the line joins the Pareto front (no other variant is both smaller and closer to the base). KLD axis is logarithmic.</p>\n<div class=\"charts\">");
        var kld = points.Where(p => p.Kld > 0).Select(p => new Point(p.Label, p.Bpw, p.Kld, p.Series)).ToList();
        sb.Append(Scatter("Mean KLD vs bits per weight", "bits per weight", "mean KLD (log)", kld, logY: true));
        var baseline = run.Variants.FirstOrDefault()?.BasePerplexity ?? run.Budgets.FirstOrDefault()?.BasePerplexity;
        var ppl = points.Select(p => new Point(p.Label, p.Bpw, p.Ppl, p.Series)).ToList();
        sb.Append(Scatter("Perplexity vs bits per weight", "bits per weight", "perplexity", ppl, logY: false, reference: baseline));
        sb.Append("</div>\n");

        foreach (var v in run.Variants)
        {
            sb.Append("<table><tr><th class=\"l\">variant (").Append(E(v.Model)).Append(")</th><th>bytes</th><th>bpw</th><th>PPL</th><th>mean KLD</th><th>± err</th><th>same top %</th><th>prefill tok/s</th><th>decode tok/s</th></tr>\n");
            foreach (var r in new[] { v.Base }.Concat(v.Variants))
                sb.Append("<tr><td class=\"l\">").Append(E(r.Name)).Append("</td><td>").Append(r.Bytes.ToString("N0", Inv)).Append("</td><td>").Append(N(r.BitsPerWeight, "0.000"))
                  .Append("</td><td>").Append(N(r.Perplexity, "0.000")).Append("</td><td>").Append(N(r.MeanKld, "0.000000")).Append("</td><td>").Append(N(r.KldError, "0.000000"))
                  .Append("</td><td>").Append(N(100 * r.SameTop, "0.00")).Append("</td><td>").Append(N(r.PrefillTokensPerSecond, "0")).Append("</td><td>").Append(N(r.DecodeTokensPerSecond, "0")).Append("</td></tr>\n");
            sb.Append("</table><p class=\"note\">").Append(E($"{v.Chunks} chunks × {v.Context} tokens, base PPL {v.BasePerplexity:F4}; measured on {v.Machine}.")).Append("</p>\n");
        }
    }

    private static string Scatter(string title, string xLabel, string yLabel, IReadOnlyList<Point> points, bool logY, double? reference = null)
    {
        const int W = 560, H = 380, L = 70, R = 20, T = 30, B = 50;
        var sb = new StringBuilder();
        sb.Append($"<svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{E(title)}\">");
        sb.Append($"<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fff\" stroke=\"#ddd\"/>");
        sb.Append($"<text x=\"{W / 2}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{E(title)}</text>");
        if (points.Count == 0)
        {
            sb.Append($"<text x=\"{W / 2}\" y=\"{H / 2}\" text-anchor=\"middle\" font-size=\"13\">no data</text></svg>");
            return sb.ToString();
        }
        double xMin = points.Min(p => p.X), xMax = points.Max(p => p.X);
        var ys = points.Select(p => logY ? Math.Log10(p.Y) : p.Y).Concat(reference is { } r0 ? [logY ? Math.Log10(r0) : r0] : []).ToArray();
        double yMin = ys.Min(), yMax = ys.Max();
        Pad(ref xMin, ref xMax, 0.5);
        if (logY) { yMin = Math.Floor(yMin); yMax = Math.Ceiling(yMax); if (yMax <= yMin) yMax = yMin + 1; }
        else Pad(ref yMin, ref yMax, Math.Max(1e-9, Math.Abs(yMax) * 0.05));
        double Sx(double x) => L + (x - xMin) / (xMax - xMin) * (W - L - R);
        double Sy(double y) => H - B - ((logY ? Math.Log10(y) : y) - yMin) / (yMax - yMin) * (H - T - B);

        // axes, grid and ticks
        sb.Append($"<line x1=\"{L}\" y1=\"{H - B}\" x2=\"{W - R}\" y2=\"{H - B}\" stroke=\"#333\"/><line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{H - B}\" stroke=\"#333\"/>");
        foreach (double x in Ticks(xMin, xMax, 8))
        {
            double px = Sx(x);
            sb.Append($"<line x1=\"{N(px, "0.#")}\" y1=\"{T}\" x2=\"{N(px, "0.#")}\" y2=\"{H - B}\" stroke=\"#eee\"/>");
            sb.Append($"<text x=\"{N(px, "0.#")}\" y=\"{H - B + 16}\" text-anchor=\"middle\" font-size=\"11\">{N(x, "0.##")}</text>");
        }
        var yTicks = logY ? Enumerable.Range((int)yMin, (int)(yMax - yMin) + 1).Select(e => Math.Pow(10, e)) : Ticks(yMin, yMax, 7);
        foreach (double y in yTicks)
        {
            double py = Sy(y);
            sb.Append($"<line x1=\"{L}\" y1=\"{N(py, "0.#")}\" x2=\"{W - R}\" y2=\"{N(py, "0.#")}\" stroke=\"#eee\"/>");
            string label = logY ? "1e" + N(Math.Log10(y), "0") : N(y, "0.##");
            sb.Append($"<text x=\"{L - 6}\" y=\"{N(py + 4, "0.#")}\" text-anchor=\"end\" font-size=\"11\">{E(label)}</text>");
        }
        sb.Append($"<text x=\"{(L + W - R) / 2}\" y=\"{H - 12}\" text-anchor=\"middle\" font-size=\"12\">{E(xLabel)}</text>");
        sb.Append($"<text x=\"16\" y=\"{(T + H - B) / 2}\" text-anchor=\"middle\" font-size=\"12\" transform=\"rotate(-90 16 {(T + H - B) / 2})\">{E(yLabel)}</text>");
        if (reference is { } rf)
        {
            double py = Sy(rf);
            sb.Append($"<line x1=\"{L}\" y1=\"{N(py, "0.#")}\" x2=\"{W - R}\" y2=\"{N(py, "0.#")}\" stroke=\"#888\" stroke-dasharray=\"5 4\"/>");
            sb.Append($"<text x=\"{W - R - 4}\" y=\"{N(py - 4, "0.#")}\" text-anchor=\"end\" font-size=\"11\" fill=\"#666\">base {N(rf, "0.###")}</text>");
        }
        // Pareto front: sorted by size, keep points better than every smaller one.
        var front = new List<Point>();
        foreach (var p in points.OrderBy(p => p.X).ThenBy(p => p.Y))
            if (front.Count == 0 || p.Y < front[^1].Y) front.Add(p);
        if (front.Count > 1)
            sb.Append("<polyline fill=\"none\" stroke=\"#1976d2\" stroke-width=\"1.5\" points=\"")
              .Append(string.Join(" ", front.Select(p => $"{N(Sx(p.X), "0.#")},{N(Sy(p.Y), "0.#")}"))).Append("\"/>");
        foreach (var p in points)
        {
            string color = p.Series switch { "budget" => "#d32f2f", "mixture" => "#7b1fa2", _ => "#1976d2" };
            double px = Sx(p.X), py = Sy(p.Y);
            sb.Append($"<circle cx=\"{N(px, "0.#")}\" cy=\"{N(py, "0.#")}\" r=\"{(p.Series == "budget" ? 6 : 4)}\" fill=\"{color}\"><title>{E($"{p.Label}: {p.X:0.000} bpw, {p.Y:G4}")}</title></circle>");
            sb.Append($"<text x=\"{N(px + 7, "0.#")}\" y=\"{N(py - 5, "0.#")}\" font-size=\"10\" fill=\"{color}\">{E(p.Label)}</text>");
        }
        // legend
        int ly = T + 4;
        foreach (var (series, color, text) in new[] { ("variant", "#1976d2", "variant"), ("mixture", "#7b1fa2", "fixed mixture"), ("budget", "#d32f2f", "budgeted mix") })
        {
            if (!points.Any(p => p.Series == series)) continue;
            sb.Append($"<circle cx=\"{W - R - 110}\" cy=\"{ly}\" r=\"4\" fill=\"{color}\"/><text x=\"{W - R - 100}\" y=\"{ly + 4}\" font-size=\"11\">{E(text)}</text>");
            ly += 16;
        }
        sb.Append("</svg>");
        return sb.ToString();
    }

    private static void Pad(ref double lo, ref double hi, double minSpan)
    {
        double span = hi - lo;
        if (span < minSpan) { lo -= (minSpan - span) / 2; hi += (minSpan - span) / 2; span = minSpan; }
        lo -= span * 0.06;
        hi += span * 0.06;
    }

    /// <summary>"Nice" ticks (1, 2, 5 × 10^k steps) inside [lo, hi].</summary>
    private static IEnumerable<double> Ticks(double lo, double hi, int target)
    {
        double raw = (hi - lo) / Math.Max(1, target);
        double mag = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = new[] { 1.0, 2, 5, 10 }.Select(m => m * mag).First(s => s >= raw);
        for (double t = Math.Ceiling(lo / step) * step; t <= hi + step * 1e-9; t += step) yield return Math.Round(t / step) * step;
    }

    // ---------- sensitivity ----------

    private static void SensitivitySection(StringBuilder sb, SensitivityReport s, int? layersHint)
    {
        int layers = layersHint ?? (s.Components.Count == 0 ? 0 : s.Components.Max(c => c.Layer) + 1);
        sb.Append("<h2>Sensitivity: ").Append(E(s.Model)).Append("</h2>\n<p class=\"note\">")
          .Append(E($"Mean KLD when only that tensor is quantized ({s.Chunks} chunks × {s.Context} tokens, base PPL {s.BasePerplexity:F4}). Colour: log scale per format, green = least sensitive, red = most."))
          .Append("</p>\n<div class=\"charts\">");
        foreach (var f in s.Formats) sb.Append(Heatmap(s, f, layers));
        sb.Append("</div>\n<table><tr><th class=\"l\">format</th><th>sum of component KLDs</th><th class=\"l\">most sensitive</th><th class=\"l\">least sensitive</th></tr>\n");
        foreach (var f in s.Formats)
        {
            var rows = s.Components.Where(c => c.Format == f).OrderByDescending(c => c.MeanKld).ToArray();
            if (rows.Length == 0) continue;
            sb.Append("<tr><td class=\"l\">").Append(E(f)).Append("</td><td>").Append(N(rows.Sum(r => r.MeanKld), "0.000000")).Append("</td><td class=\"l\">")
              .Append(E(string.Join(", ", rows.Take(3).Select(r => $"{r.Tensor} {r.MeanKld:0.0e0}")))).Append("</td><td class=\"l\">")
              .Append(E(string.Join(", ", rows.TakeLast(3).Select(r => $"{r.Tensor} {r.MeanKld:0.0e0}")))).Append("</td></tr>\n");
        }
        sb.Append("</table>\n");
    }

    private static string Heatmap(SensitivityReport s, string format, int layers)
    {
        var (grid, others) = Sensitivity.Heatmap(s, format, layers);
        var values = grid.Cast<double>().Concat(others.Select(o => o.MeanKld)).Where(v => double.IsFinite(v) && v > 0).ToArray();
        double lo = values.Length > 0 ? Math.Log10(values.Min()) : 0, hi = values.Length > 0 ? Math.Log10(values.Max()) : 1;
        const int Cell = 58, CellH = 22, Left = 50, Top = 46;
        int kinds = Sensitivity.LayerKinds.Count;
        int extraRows = others.Count;
        int w = Left + kinds * Cell + 10, h = Top + (layers + extraRows) * CellH + 34;
        var sb = new StringBuilder();
        sb.Append($"<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"sensitivity heatmap {E(format)}\">");
        sb.Append($"<text x=\"{w / 2}\" y=\"16\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">{E(format)}</text>");
        for (int k = 0; k < kinds; k++)
            sb.Append($"<text x=\"{Left + k * Cell + Cell / 2}\" y=\"{Top - 8}\" text-anchor=\"middle\" font-size=\"10\">{E(Sensitivity.LayerKinds[k])}</text>");
        string CellSvg(double x, double y, double v, double width)
        {
            double t = v > 0 && hi > lo ? (Math.Log10(v) - lo) / (hi - lo) : 0;
            string fill = double.IsFinite(v) ? HeatColor.Hex(t) : "#eee";
            string text = double.IsFinite(v) ? v.ToString("0.0e0", Inv) : "-";
            return $"<rect x=\"{N(x)}\" y=\"{N(y)}\" width=\"{N(width - 2)}\" height=\"{CellH - 2}\" fill=\"{fill}\"/>" +
                   $"<text x=\"{N(x + width / 2 - 1)}\" y=\"{N(y + CellH / 2 + 3)}\" text-anchor=\"middle\" font-size=\"10\">{E(text)}</text>";
        }
        for (int l = 0; l < layers; l++)
        {
            double y = Top + l * CellH;
            sb.Append($"<text x=\"{Left - 6}\" y=\"{N(y + CellH / 2 + 3)}\" text-anchor=\"end\" font-size=\"10\">blk {l}</text>");
            for (int k = 0; k < kinds; k++) sb.Append(CellSvg(Left + k * Cell, y, grid[l, k], Cell));
        }
        for (int i = 0; i < others.Count; i++)
        {
            double y = Top + (layers + i) * CellH + 4;
            sb.Append($"<text x=\"{Left - 6}\" y=\"{N(y + CellH / 2 + 3)}\" text-anchor=\"end\" font-size=\"10\">{E(others[i].Kind)}</text>");
            sb.Append(CellSvg(Left, y, others[i].MeanKld, 2 * Cell));
        }
        sb.Append("</svg>");
        return sb.ToString();
    }

    // ---------- budget ----------

    private static void BudgetSection(StringBuilder sb, BudgetResult b)
    {
        sb.Append("<h2>Budgeted mixed precision: ").Append(E(b.Budget)).Append("</h2>\n<p class=\"note\">")
          .Append(E($"Formats chosen per tensor from {string.Join(", ", b.Candidates)} to minimise the summed single-component KLDs within {b.BudgetBytes:N0} bytes; predicted = that sum, measured = the real KLD of the whole mix ({b.Chunks} chunks × {b.Context} tokens)."))
          .Append("</p>\n<table><tr><th class=\"l\">variant</th><th>bytes</th><th>bpw</th><th>predicted KLD</th><th>measured KLD</th><th>± err</th><th>same top %</th><th>PPL</th></tr>\n");
        foreach (var m in new[] { b.Planned }.Concat(b.Mixtures.OrderBy(m => m.Bytes)))
            sb.Append(m == b.Planned ? "<tr style=\"font-weight:bold\">" : "<tr>").Append("<td class=\"l\">").Append(E(m.Name)).Append("</td><td>").Append(m.Bytes.ToString("N0", Inv))
              .Append("</td><td>").Append(N(m.BitsPerWeight, "0.000")).Append("</td><td>").Append(m.PredictedKld is { } p ? N(p, "0.000000") : "-")
              .Append("</td><td>").Append(N(m.MeasuredKld, "0.000000")).Append("</td><td>").Append(N(m.KldError, "0.000000"))
              .Append("</td><td>").Append(N(100 * m.SameTop, "0.00")).Append("</td><td>").Append(N(m.Perplexity, "0.000")).Append("</td></tr>\n");
        sb.Append("</table>\n<table><tr><th class=\"l\">format</th><th>tensors</th><th class=\"l\">which</th></tr>\n");
        foreach (var g in b.Choice.GroupBy(kv => kv.Value).OrderBy(g => g.Key, StringComparer.Ordinal))
            sb.Append("<tr><td class=\"l\">").Append(E(g.Key)).Append("</td><td>").Append(g.Count()).Append("</td><td class=\"l\">")
              .Append(E(string.Join(" ", g.Select(kv => kv.Key.Replace(".weight", "", StringComparison.Ordinal))))).Append("</td></tr>\n");
        sb.Append("</table>\n");
    }

    // ---------- speed ----------

    private static void SpeedSection(StringBuilder sb, RunFiles.Contents run)
    {
        foreach (var v in run.Variants)
        {
            var rows = new[] { v.Base }.Concat(v.Variants).ToArray();
            if (rows.All(r => r.DecodeTokensPerSecond <= 0 && r.PrefillTokensPerSecond <= 0)) continue;
            sb.Append("<h2>Speed on this machine</h2>\n<p class=\"note\">").Append(E($"Lowbit's CPU engine, {v.Machine}: prefill = batched evaluation of the {v.Context}-token chunks, decode = one token at a time. Measured, not estimated."))
              .Append("</p>\n<div class=\"charts\">");
            sb.Append(Bars("prefill tokens/s", rows.Select(r => (r.Name, r.PrefillTokensPerSecond)).ToArray(), "#388e3c"));
            sb.Append(Bars("decode tokens/s", rows.Select(r => (r.Name, r.DecodeTokensPerSecond)).ToArray(), "#f57c00"));
            sb.Append("</div>\n");
        }
    }

    private static string Bars(string title, IReadOnlyList<(string Label, double Value)> rows, string color)
    {
        const int W = 560, Left = 150, BarH = 18, Top = 30;
        int h = Top + rows.Count * (BarH + 6) + 10;
        double max = Math.Max(1e-9, rows.Max(r => r.Value));
        var sb = new StringBuilder();
        sb.Append($"<svg width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" role=\"img\" aria-label=\"{E(title)}\">");
        sb.Append($"<text x=\"{W / 2}\" y=\"18\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">{E(title)}</text>");
        for (int i = 0; i < rows.Count; i++)
        {
            double y = Top + i * (BarH + 6);
            double w = (W - Left - 70) * rows[i].Value / max;
            sb.Append($"<text x=\"{Left - 6}\" y=\"{N(y + 13)}\" text-anchor=\"end\" font-size=\"11\">{E(rows[i].Label)}</text>");
            sb.Append($"<rect x=\"{Left}\" y=\"{N(y)}\" width=\"{N(Math.Max(0, w), "0.#")}\" height=\"{BarH}\" fill=\"{color}\"/>");
            sb.Append($"<text x=\"{N(Left + w + 4, "0.#")}\" y=\"{N(y + 13)}\" font-size=\"11\">{N(rows[i].Value, "0")}</text>");
        }
        sb.Append("</svg>");
        return sb.ToString();
    }

    // ---------- advisor ----------

    private static void AdvisorSection(StringBuilder sb, RunFiles.Contents run, IReadOnlyList<DeviceSpec>? devices)
    {
        var v = run.Variants.FirstOrDefault();
        if (v is null) return;
        var catalog = HardwareCatalog.LoadBuiltIn();
        devices ??= DefaultDevices.Select(catalog.Find).Where(d => d is not null).Select(d => d!).ToArray();
        if (devices.Count == 0) return;
        AdviceReport advice;
        try
        {
            advice = DeploymentAdvisor.Advise(new AdviceRequest
            {
                ModelName = v.Model,
                Model = v.Config,
                Settings = new InferenceSettings { Context = Math.Min(4096, v.Config.MaxPositions) },
                Formats = ["f16", "q8_0", "q6_K", "q5_K", "q4_K", "q3_K", "q2_K"],
            }, devices);
        }
        catch (LowbitException e)
        {
            sb.Append("<h2>Deployment estimate</h2><p>").Append(E("advisor: " + e.Message)).Append("</p>\n");
            return;
        }
        sb.Append("<h2>Deployment estimate (advisor)</h2>\n<p class=\"note\">").Append(E($"{advice.Model}, context {advice.Settings.Context}, batch {advice.Settings.Batch}. {DeploymentAdvisor.EstimateNote}"))
          .Append("</p>\n<table><tr><th class=\"l\">device</th><th class=\"l\">format</th><th>weights</th><th>total</th><th class=\"l\">fits (headroom)</th><th>est. decode tok/s</th><th>est. prefill tok/s</th><th>$/Mtok</th><th class=\"l\">best</th></tr>\n");
        foreach (var d in advice.Devices)
            foreach (var f in d.Formats)
                sb.Append("<tr><td class=\"l\">").Append(E(d.Device.Name)).Append("</td><td class=\"l\">").Append(E(f.Format)).Append("</td><td>").Append(E(Bytes(f.WeightBytes)))
                  .Append("</td><td>").Append(E(Bytes(f.TotalBytes))).Append("</td><td class=\"l\">").Append(f.Fits ? "yes (" + E(Bytes(f.UsableHeadroomBytes)) + ")" : "no")
                  .Append("</td><td>").Append(N(f.DecodeTokensPerSecondEstimate, "0")).Append("</td><td>").Append(f.PrefillTokensPerSecondEstimate is { } p ? N(p, "0") : "-")
                  .Append("</td><td>").Append(f.CostPerMillionTokensUsd is { } c ? N(c, "0.0000") : "-").Append("</td><td class=\"l\">").Append(f.Format == d.BestFormat ? "best" : "").Append("</td></tr>\n");
        sb.Append("</table>\n");
    }

    public static string Bytes(long b) => b switch
    {
        >= 1L << 30 => (b / (double)(1L << 30)).ToString("0.00", Inv) + " GiB",
        >= 1L << 20 => (b / (double)(1L << 20)).ToString("0.00", Inv) + " MiB",
        >= 1L << 10 => (b / (double)(1L << 10)).ToString("0.0", Inv) + " KiB",
        _ => b.ToString(Inv) + " B",
    };
}
