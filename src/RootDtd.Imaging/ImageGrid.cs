using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using static TorchSharp.torch;

namespace RootDtd.Imaging;

/// <summary>
/// Lays out images in a grid of equal cells, each with an optional title drawn with <see cref="BitmapFont"/>.
/// Cells are as large as the largest image; smaller images are centred. The grid does not own the images
/// added to it: keep them alive until <see cref="Render"/> has run.
/// </summary>
public sealed class ImageGrid
{
    private readonly List<(Image<Rgb24>? Image, string? Title)> _cells = new();

    /// <summary>Creates an empty grid.</summary>
    /// <param name="columns">Number of columns (≥ 1).</param>
    public ImageGrid(int columns)
    {
        if (columns < 1) throw new ArgumentOutOfRangeException(nameof(columns), columns, "A grid needs at least one column.");
        Columns = columns;
    }

    /// <summary>Number of columns.</summary>
    public int Columns { get; }

    /// <summary>Number of rows needed for the cells added so far.</summary>
    public int Rows => (_cells.Count + Columns - 1) / Columns;

    /// <summary>Number of cells added (including empty ones).</summary>
    public int Count => _cells.Count;

    /// <summary>Space in pixels around and between cells. Default 6.</summary>
    public int Padding { get; init; } = 6;

    /// <summary>Integer scale of the 5×7 title font. Default 2 (14-pixel-high letters).</summary>
    public int TitleScale { get; init; } = 2;

    /// <summary>Background colour. Default white.</summary>
    public Rgb24 Background { get; init; } = new(255, 255, 255);

    /// <summary>Title colour. Default black.</summary>
    public Rgb24 TitleColor { get; init; } = new(0, 0, 0);

    /// <summary>Appends a cell (filled row by row).</summary>
    /// <param name="image">The image (not copied; not disposed by the grid).</param>
    /// <param name="title">Optional title drawn above the image; drawn smaller, then cut, when wider than the cell.</param>
    public ImageGrid Add(Image<Rgb24> image, string? title = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        _cells.Add((image, title));
        return this;
    }

    /// <summary>Appends an empty cell.</summary>
    /// <param name="title">Optional title.</param>
    public ImageGrid AddEmpty(string? title = null)
    {
        _cells.Add((null, title));
        return this;
    }

    /// <summary>
    /// Height in pixels of the title band above each image (0 when no cell has a title): one line of the title font,
    /// or more when a title has to wrap to fit its cell (see <see cref="Render"/>).
    /// </summary>
    public int TitleHeight => TitleBandHeight(CellWidth);

    private int CellWidth => Math.Max(1, _cells.Count == 0 ? 1 : _cells.Max(c => c.Image?.Width ?? 0));

    private int TitleBandHeight(int cellWidth)
    {
        if (!_cells.Any(c => !string.IsNullOrEmpty(c.Title))) return 0;
        int lines = _cells.Where(c => !string.IsNullOrEmpty(c.Title)).Max(c => LayoutTitle(c.Title!, cellWidth).Lines.Count);
        return BitmapFont.GlyphHeight * TitleScale + (lines - 1) * LineHeight(1) + Padding;
    }

    private static int LineHeight(int scale) => (BitmapFont.GlyphHeight + 2) * scale;

    /// <summary>Composes the grid into a new image.</summary>
    public Image<Rgb24> Render()
    {
        if (_cells.Count == 0) throw new InvalidOperationException("The grid is empty.");
        if (Padding < 0) throw new InvalidOperationException($"Padding must not be negative, was {Padding}.");
        if (TitleScale < 1) throw new InvalidOperationException($"TitleScale must be at least 1, was {TitleScale}.");
        int cellWidth = CellWidth;
        int imageHeight = Math.Max(1, _cells.Max(c => c.Image?.Height ?? 0));
        int titleHeight = TitleBandHeight(cellWidth);
        int cellHeight = titleHeight + imageHeight;
        int width = Columns * cellWidth + (Columns + 1) * Padding;
        int height = Rows * cellHeight + (Rows + 1) * Padding;

        var canvas = new Image<Rgb24>(width, height, Background);
        try
        {
            for (int i = 0; i < _cells.Count; i++)
            {
                var (image, title) = _cells[i];
                int left = Padding + (i % Columns) * (cellWidth + Padding);
                int top = Padding + (i / Columns) * (cellHeight + Padding);
                if (!string.IsNullOrEmpty(title))
                {
                    // Titles too wide for the cell are drawn at scale 1 and wrapped at '-', ' ', '_', '.', '/'
                    // (or, for a word longer than the cell, anywhere); nothing is cut.
                    var (scale, lines) = LayoutTitle(title, cellWidth);
                    int textTop = top + (lines.Count == 1 ? (TitleScale - scale) * BitmapFont.GlyphHeight / 2 : 0);
                    foreach (var line in lines)
                    {
                        int textWidth = BitmapFont.MeasureWidth(line, scale);
                        BitmapFont.DrawText(canvas, line, left + Math.Max(0, (cellWidth - textWidth) / 2), textTop, TitleColor, scale);
                        textTop += LineHeight(scale);
                    }
                }
                if (image is not null)
                {
                    var location = new Point(left + (cellWidth - image.Width) / 2, top + titleHeight + (imageHeight - image.Height) / 2);
                    canvas.Mutate(context => context.DrawImage(image, location, 1f));
                }
            }
            return canvas;
        }
        catch
        {
            canvas.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A comparison figure: the first column shows the input image; every further column shows one method's heatmap
    /// (top row, titled with the method name) and its overlay on the input (bottom row).
    /// </summary>
    /// <param name="image">The input image (the size heatmaps are resized to for overlays).</param>
    /// <param name="heatmaps">Method name and [H,W] heatmap pairs, in column order.</param>
    /// <param name="options">Rendering options; <c>null</c> means <see cref="HeatmapOptions.Default"/>.</param>
    /// <param name="inputTitle">Title of the input column.</param>
    public static Image<Rgb24> Compare(Image<Rgb24> image, IEnumerable<KeyValuePair<string, Tensor>> heatmaps,
        HeatmapOptions? options = null, string inputTitle = "Input")
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(heatmaps);
        var methods = heatmaps.ToList();
        if (methods.Count == 0) throw new ArgumentException("At least one heatmap is required.", nameof(heatmaps));
        var rendered = new List<Image<Rgb24>>();
        try
        {
            var maps = new List<Image<Rgb24>>();
            var overlays = new List<Image<Rgb24>>();
            foreach (var (name, heatmap) in methods)
            {
                using var scope = NewDisposeScope();
                var map = heatmap.dim() == 3 && heatmap.shape[0] == 1 ? heatmap.squeeze(0) : heatmap;
                if (map.dim() != 2)
                    throw new ArgumentException($"Heatmap '{name}' must be [H,W], got shape [{string.Join(",", heatmap.shape)}].", nameof(heatmaps));
                var resized = map.shape[0] == image.Height && map.shape[1] == image.Width
                    ? map
                    : LayerMaps.Upsample(map.detach().to(ScalarType.Float32).cpu(), image.Height, image.Width);
                var colored = HeatmapRenderer.Render(resized, options);
                rendered.Add(colored);
                maps.Add(colored);
                var overlay = HeatmapRenderer.Overlay(image, resized, options);
                rendered.Add(overlay);
                overlays.Add(overlay);
            }
            var grid = new ImageGrid(methods.Count + 1);
            grid.Add(image, inputTitle);
            for (int m = 0; m < methods.Count; m++) grid.Add(maps[m], methods[m].Key);
            grid.AddEmpty();
            for (int m = 0; m < methods.Count; m++) grid.Add(overlays[m], methods[m].Key + " overlay");
            return grid.Render();
        }
        finally
        {
            foreach (var r in rendered) r.Dispose();
        }
    }

    /// <summary>The scale and the lines a title is drawn with in a cell of the given width.</summary>
    private (int Scale, IReadOnlyList<string> Lines) LayoutTitle(string title, int cellWidth)
    {
        if (BitmapFont.MeasureWidth(title, TitleScale) <= cellWidth) return (TitleScale, new[] { title });
        int maxChars = Math.Max(1, (cellWidth + 1) / BitmapFont.Advance);
        return (1, WrapTitle(title, maxChars));
    }

    /// <summary>Splits a title into lines of at most <paramref name="maxChars"/> characters, after '-', '_', '.', '/' or at a space where possible; no character is dropped.</summary>
    /// <param name="title">The title.</param>
    /// <param name="maxChars">Characters per line (at least 1).</param>
    public static IReadOnlyList<string> WrapTitle(string title, int maxChars)
    {
        ArgumentNullException.ThrowIfNull(title);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxChars, 1);
        var lines = new List<string>();
        var rest = title;
        while (rest.Length > maxChars)
        {
            int cut = -1;
            for (int i = Math.Min(maxChars, rest.Length) - 1; i > 0; i--)
            {
                if (rest[i] is '-' or '_' or '.' or '/') { cut = i + 1; break; }
                if (rest[i] == ' ') { cut = i; break; }
            }
            if (cut <= 0) cut = maxChars;
            lines.Add(rest[..cut].TrimEnd());
            rest = rest[cut..].TrimStart();
        }
        if (rest.Length > 0 || lines.Count == 0) lines.Add(rest);
        return lines;
    }
}
