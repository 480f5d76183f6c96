using System.Globalization;
using RootDtd.Imaging;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace RootDtd.Evaluation.Benchmark;

/// <summary>One line of a <see cref="LinePlot"/>.</summary>
/// <param name="Name">Legend entry (ASCII; other characters are replaced).</param>
/// <param name="X">x values.</param>
/// <param name="Y">y values (same length; NaN points are skipped).</param>
/// <param name="Dashed">Draw dashed (reference rows).</param>
public sealed record PlotSeries(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y, bool Dashed = false);

/// <summary>
/// A small line-plot renderer on ImageSharp pixels (no drawing library needed): axes with ticks and labels, several
/// coloured lines and a legend, all text in the bitmap font of RootDtd.Imaging (ASCII).
/// </summary>
public static class LinePlot
{
    private static readonly Rgb24[] Palette =
    {
        new(31, 119, 180), new(255, 127, 14), new(44, 160, 44), new(214, 39, 40), new(148, 103, 189), new(140, 86, 75),
        new(227, 119, 194), new(127, 127, 127), new(188, 189, 34), new(23, 190, 207), new(0, 0, 128), new(128, 0, 0),
        new(0, 128, 128), new(128, 128, 0), new(255, 0, 255), new(0, 0, 0),
    };

    /// <summary>Colour of series <paramref name="index"/>.</summary>
    /// <param name="index">Series index.</param>
    /// <returns>The colour.</returns>
    public static Rgb24 ColorOf(int index) => Palette[((index % Palette.Length) + Palette.Length) % Palette.Length];

    /// <summary>Renders a plot.</summary>
    /// <param name="series">Lines.</param>
    /// <param name="title">Title (top).</param>
    /// <param name="xLabel">x-axis label.</param>
    /// <param name="yLabel">y-axis label.</param>
    /// <param name="width">Image width (≥ 200).</param>
    /// <param name="height">Image height (≥ 150).</param>
    /// <param name="yRange">Fixed y range, or <see langword="null"/> for the data range.</param>
    /// <returns>The image (caller disposes).</returns>
    public static Image<Rgb24> Render(IReadOnlyList<PlotSeries> series, string title, string xLabel, string yLabel, int width = 640, int height = 400,
        (double Min, double Max)? yRange = null)
    {
        ArgumentNullException.ThrowIfNull(series);
        if (width < 200 || height < 150) throw new ArgumentOutOfRangeException(nameof(width), "The plot must be at least 200×150 pixels.");
        foreach (var s in series)
            if (s.X.Count != s.Y.Count) throw new ArgumentException($"Series '{s.Name}' has {s.X.Count} x values but {s.Y.Count} y values.", nameof(series));

        var image = new Image<Rgb24>(width, height, new Rgb24(255, 255, 255));
        var black = new Rgb24(0, 0, 0);
        var grey = new Rgb24(225, 225, 225);
        var finite = series.SelectMany(s => s.X.Zip(s.Y)).Where(p => double.IsFinite(p.First) && double.IsFinite(p.Second)).ToList();
        double x0 = finite.Count > 0 ? finite.Min(p => p.First) : 0, x1 = finite.Count > 0 ? finite.Max(p => p.First) : 1;
        double y0 = yRange?.Min ?? (finite.Count > 0 ? finite.Min(p => p.Second) : 0), y1 = yRange?.Max ?? (finite.Count > 0 ? finite.Max(p => p.Second) : 1);
        if (!(x1 > x0)) x1 = x0 + 1;
        if (!(y1 > y0)) y1 = y0 + 1;

        // Layout: legend on the right, labels left and bottom.
        var legendWidth = series.Count == 0 ? 0 : Math.Min(width / 3, series.Max(s => BitmapFont.MeasureWidth(Ascii(s.Name))) + 36);
        int left = 52, right = width - legendWidth - 12, top = 26, bottom = height - 36;
        if (right - left < 50) right = left + 50;

        var titleText = Ascii(title);
        var titleScale = BitmapFont.MeasureWidth(titleText, 2) <= width - 8 ? 2 : 1;
        BitmapFont.DrawText(image, titleText, Math.Max(2, (width - BitmapFont.MeasureWidth(titleText, titleScale)) / 2), 6, black, titleScale);
        int Px(double x) => left + (int)Math.Round((x - x0) / (x1 - x0) * (right - left));
        int Py(double y) => bottom - (int)Math.Round((Math.Clamp(y, y0, y1) - y0) / (y1 - y0) * (bottom - top));

        // Grid, ticks and tick labels.
        for (var i = 0; i <= 5; i++)
        {
            var yv = y0 + (y1 - y0) * i / 5;
            var py = Py(yv);
            Line(image, left, py, right, py, grey, 1, false);
            Line(image, left - 4, py, left, py, black, 1, false);
            var label = Tick(yv);
            BitmapFont.DrawText(image, label, left - 6 - BitmapFont.MeasureWidth(label), py - BitmapFont.GlyphHeight / 2, black);
            var xv = x0 + (x1 - x0) * i / 5;
            var px = Px(xv);
            Line(image, px, top, px, bottom, grey, 1, false);
            Line(image, px, bottom, px, bottom + 4, black, 1, false);
            var xl = Tick(xv);
            BitmapFont.DrawText(image, xl, px - BitmapFont.MeasureWidth(xl) / 2, bottom + 7, black);
        }

        Line(image, left, top, left, bottom, black, 1, false);
        Line(image, left, bottom, right, bottom, black, 1, false);
        var xText = Ascii(xLabel);
        BitmapFont.DrawText(image, xText, (left + right - BitmapFont.MeasureWidth(xText)) / 2, height - 13, black);
        BitmapFont.DrawText(image, Ascii(yLabel), 4, top - BitmapFont.GlyphHeight - 4 < 16 ? 16 : top - BitmapFont.GlyphHeight - 4, black);

        // Lines.
        for (var k = 0; k < series.Count; k++)
        {
            var s = series[k];
            var color = ColorOf(k);
            (int X, int Y)? previous = null;
            for (var i = 0; i < s.X.Count; i++)
            {
                if (!double.IsFinite(s.X[i]) || !double.IsFinite(s.Y[i]))
                {
                    previous = null;
                    continue;
                }

                var p = (Px(s.X[i]), Py(s.Y[i]));
                if (previous is { } q) Line(image, q.X, q.Y, p.Item1, p.Item2, color, 2, s.Dashed);
                Dot(image, p.Item1, p.Item2, color);
                previous = p;
            }
        }

        // Legend.
        var ly = top;
        for (var k = 0; k < series.Count && ly + 10 < height; k++, ly += 12)
        {
            var lx = width - legendWidth;
            Line(image, lx, ly + 3, lx + 20, ly + 3, ColorOf(k), 2, series[k].Dashed);
            var name = Ascii(series[k].Name);
            var max = (legendWidth - 28) / BitmapFont.Advance;
            if (name.Length > max && max > 2) name = name[..(max - 2)] + "..";
            BitmapFont.DrawText(image, name, lx + 26, ly, black);
        }

        return image;
    }

    /// <summary>Replaces characters the bitmap font cannot draw (γ → g, ⁺ → +, × → x, others → ?).</summary>
    /// <param name="text">Text.</param>
    /// <returns>ASCII text.</returns>
    public static string Ascii(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var sb = new System.Text.StringBuilder(text.Length);
        foreach (var c in text)
        {
            sb.Append(c switch
            {
                'γ' => "gamma",
                'ε' => "eps",
                'α' => "a",
                'β' => "b",
                '⁺' => "+",
                '×' => "x",
                '²' => "2",
                '≥' => ">=",
                '≤' => "<=",
                '–' or '—' or '−' => "-",
                _ when BitmapFont.IsSupported(c) => c.ToString(),
                _ => "?",
            });
        }

        return sb.ToString();
    }

    private static string Tick(double v) => Math.Abs(v) >= 100 ? v.ToString("F0", CultureInfo.InvariantCulture) : v.ToString("0.##", CultureInfo.InvariantCulture);

    private static void Dot(Image<Rgb24> image, int x, int y, Rgb24 color)
    {
        for (var dy = -2; dy <= 2; dy++)
            for (var dx = -2; dx <= 2; dx++)
                if (dx * dx + dy * dy <= 4) Set(image, x + dx, y + dy, color);
    }

    private static void Line(Image<Rgb24> image, int xa, int ya, int xb, int yb, Rgb24 color, int thickness, bool dashed)
    {
        int dx = Math.Abs(xb - xa), dy = -Math.Abs(yb - ya), sx = xa < xb ? 1 : -1, sy = ya < yb ? 1 : -1, err = dx + dy, step = 0;
        while (true)
        {
            if (!dashed || (step / 6) % 2 == 0)
            {
                for (var t = 0; t < thickness; t++)
                {
                    Set(image, xa + (dy == 0 ? 0 : t), ya + (dy == 0 ? t : 0), color);
                }
            }

            if (xa == xb && ya == yb) break;
            var e2 = 2 * err;
            if (e2 >= dy) { err += dy; xa += sx; }
            if (e2 <= dx) { err += dx; ya += sy; }
            step++;
        }
    }

    private static void Set(Image<Rgb24> image, int x, int y, Rgb24 color)
    {
        if (x >= 0 && y >= 0 && x < image.Width && y < image.Height) image[x, y] = color;
    }
}
