using System.Globalization;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace RootDtd.Imaging;

/// <summary>
/// The value scale of a rendered heatmap: the relevance at the bottom (<see cref="Low"/>) and at the top
/// (<see cref="High"/>) of the colour map. For <see cref="HeatmapMode.Absolute"/> the values are |R|, for
/// <see cref="HeatmapMode.Positive"/> max(R, 0), otherwise R; <see cref="HeatmapMode.Signed"/> is symmetric around 0.
/// </summary>
/// <param name="Low">Relevance shown with the lowest colour.</param>
/// <param name="High">Relevance shown with the highest colour.</param>
/// <param name="Mode">How relevance became intensity.</param>
/// <param name="Clipped">True when values beyond the ends were clipped to them (percentile clipping).</param>
public readonly record struct HeatmapScale(double Low, double High, HeatmapMode Mode, bool Clipped)
{
    /// <summary>What the numbers mean, for a caption: "|R|", "max(R,0)" or "R".</summary>
    public string Quantity => Mode switch
    {
        HeatmapMode.Absolute => "|R|",
        HeatmapMode.Positive => "max(R,0)",
        _ => "R",
    };
}

/// <summary>Draws colour bars: the colour map from bottom to top with the relevance at the bottom, middle and top.</summary>
public static class ColorBar
{
    private const int BarWidth = 10;
    private const int Gap = 3;

    /// <summary>
    /// A colour bar of the given height: the colour map of <paramref name="options"/> (bottom = low, top = high) with
    /// three labels (low, middle, high; a leading <c>&gt;</c>/<c>&lt;</c> marks a clipped end).
    /// </summary>
    /// <param name="scale">The value scale (from <see cref="HeatmapRenderer.ComputeScale"/>).</param>
    /// <param name="options">Rendering options (the colour map and mode).</param>
    /// <param name="height">Height in pixels (at least 16).</param>
    public static Image<Rgb24> Render(HeatmapScale scale, HeatmapOptions options, int height)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (height < 16) throw new ArgumentOutOfRangeException(nameof(height), height, "A colour bar needs at least 16 pixels.");
        var labels = Labels(scale);
        int textWidth = labels.Max(l => BitmapFont.MeasureWidth(l, 1));
        int width = Gap + BarWidth + Gap + textWidth + Gap;
        var image = new Image<Rgb24>(width, height, new Rgb24(255, 255, 255));
        var map = options.ResolvedColorMap;
        int top = BitmapFont.GlyphHeight / 2, bottom = height - 1 - BitmapFont.GlyphHeight / 2;
        for (int y = top; y <= bottom; y++)
        {
            float t = bottom == top ? 0f : (float)(bottom - y) / (bottom - top);
            var colour = map.Map(t);
            for (int x = Gap; x < Gap + BarWidth; x++) image[x, y] = colour;
        }
        var black = new Rgb24(0, 0, 0);
        int textLeft = Gap + BarWidth + Gap;
        BitmapFont.DrawText(image, labels[0], textLeft, top - BitmapFont.GlyphHeight / 2, black);
        BitmapFont.DrawText(image, labels[1], textLeft, (top + bottom) / 2 - BitmapFont.GlyphHeight / 2, black);
        BitmapFont.DrawText(image, labels[2], textLeft, bottom - BitmapFont.GlyphHeight / 2, black);
        return image;
    }

    /// <summary>A new image: <paramref name="image"/> with a colour bar of its height on the right.</summary>
    /// <param name="image">The heatmap or overlay.</param>
    /// <param name="scale">Its value scale.</param>
    /// <param name="options">Its rendering options.</param>
    /// <param name="disposeImage">Dispose <paramref name="image"/> after copying it.</param>
    public static Image<Rgb24> AppendTo(Image<Rgb24> image, HeatmapScale scale, HeatmapOptions options, bool disposeImage = false)
    {
        ArgumentNullException.ThrowIfNull(image);
        try
        {
            using var bar = Render(scale, options, Math.Max(16, image.Height));
            var canvas = new Image<Rgb24>(image.Width + bar.Width, Math.Max(image.Height, bar.Height), new Rgb24(255, 255, 255));
            canvas.Mutate(c => c.DrawImage(image, new Point(0, 0), 1f).DrawImage(bar, new Point(image.Width, 0), 1f));
            return canvas;
        }
        finally
        {
            if (disposeImage) image.Dispose();
        }
    }

    /// <summary>The top, middle and bottom labels of a colour bar (3 significant digits; <c>&gt;</c>/<c>&lt;</c> marks a clipped end).</summary>
    /// <param name="scale">The value scale.</param>
    public static IReadOnlyList<string> Labels(HeatmapScale scale)
    {
        var inv = CultureInfo.InvariantCulture;
        string F(double v) => v == 0 ? "0" : v.ToString("g3", inv);
        var high = (scale.Clipped ? ">" : "") + F(scale.High);
        var low = (scale.Clipped && (scale.Mode == HeatmapMode.Signed || scale.Mode == HeatmapMode.Raw) ? "<" : "") + F(scale.Low);
        return new[] { high, F((scale.Low + scale.High) / 2), low };
    }
}
