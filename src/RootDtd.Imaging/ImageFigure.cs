using RootDtd.Display;
using System.Globalization;
using System.Net;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace RootDtd.Imaging;

/// <summary>
/// A rendered image (heatmap, overlay, grid) as PNG bytes with an optional caption, for notebooks: in .NET Interactive it
/// displays inline as the image (<c>text/html</c> <c>&lt;figure&gt;</c> with a data URI). Create it with
/// <see cref="ImageFigureExtensions.ToFigure"/>, e.g. <c>HeatmapRenderer.Render(e.Heatmap[0]).ToFigure("heatmap")</c>.
/// </summary>
[TypeFormatterSource(typeof(ImageFigureFormatterSource), PreferredMimeTypes = new[] { "text/html", "text/plain" })]
public sealed class ImageFigure
{
    /// <summary>Creates a figure from PNG bytes.</summary>
    /// <param name="png">The PNG file contents.</param>
    /// <param name="width">Width in pixels.</param>
    /// <param name="height">Height in pixels.</param>
    /// <param name="caption">Optional caption.</param>
    public ImageFigure(byte[] png, int width, int height, string? caption = null)
    {
        ArgumentNullException.ThrowIfNull(png);
        Png = png;
        Width = width;
        Height = height;
        Caption = caption;
    }

    /// <summary>The PNG file contents.</summary>
    public byte[] Png { get; }

    /// <summary>Width in pixels.</summary>
    public int Width { get; }

    /// <summary>Height in pixels.</summary>
    public int Height { get; }

    /// <summary>The caption, or <c>null</c>.</summary>
    public string? Caption { get; }

    /// <summary><c>&lt;figure&gt;&lt;img src="data:image/png;base64,…"&gt;&lt;figcaption&gt;…&lt;/figcaption&gt;&lt;/figure&gt;</c>.</summary>
    public string ToHtml() =>
        FormattableString.Invariant($"<figure class=\"rootdtd-figure\"><img src=\"data:image/png;base64,{Convert.ToBase64String(Png)}\" width=\"{Width}\" height=\"{Height}\" />")
        + (Caption is null ? "" : "<figcaption>" + WebUtility.HtmlEncode(Caption) + "</figcaption>") + "</figure>";

    /// <summary>"caption (W×H PNG, n bytes)".</summary>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{(Caption is null ? "" : Caption + " ")}({Width}x{Height} PNG, {Png.Length} bytes)");
}

/// <summary>Creates <see cref="ImageFigure"/>s.</summary>
public static class ImageFigureExtensions
{
    /// <summary>Encodes <paramref name="image"/> as PNG into a notebook figure (the image itself is not kept).</summary>
    /// <param name="image">The image.</param>
    /// <param name="caption">Optional caption.</param>
    public static ImageFigure ToFigure(this Image<Rgb24> image, string? caption = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        return new ImageFigure(image.ToPngBytes(), image.Width, image.Height, caption);
    }
}

/// <summary>The formatter source .NET Interactive finds through the attribute on <see cref="ImageFigure"/>.</summary>
internal sealed class ImageFigureFormatterSource : DisplayFormatterSource<ImageFigure>
{
    protected override string Html(ImageFigure value) => value.ToHtml();

    protected override string Text(ImageFigure value) => value.ToString();
}
