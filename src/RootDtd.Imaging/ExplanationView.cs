using RootDtd.Display;
using System.Globalization;
using System.Net;
using System.Text;

namespace RootDtd.Imaging;

/// <summary>One sample of an <see cref="ExplanationView"/>: the explained class and the rendered images as PNG bytes.</summary>
public sealed class ExplanationSampleView
{
    /// <summary>Index of the sample in the explained batch.</summary>
    public required int Index { get; init; }

    /// <summary>The explained class.</summary>
    public required long ClassIndex { get; init; }

    /// <summary>The class name, when class names were given.</summary>
    public string? ClassName { get; init; }

    /// <summary>The explained logit.</summary>
    public required double Logit { get; init; }

    /// <summary>|Σ input relevance − explained logit| / |explained logit|.</summary>
    public required double ConservationError { get; init; }

    /// <summary>Σ input relevance.</summary>
    public required double RelevanceSum { get; init; }

    /// <summary>The input image (PNG), or <c>null</c> when the input is not an image.</summary>
    public byte[]? ImagePng { get; init; }

    /// <summary>The heatmap blended over the input (PNG), or <c>null</c> when the input is not an image.</summary>
    public byte[]? OverlayPng { get; init; }

    /// <summary>The heatmap (PNG), or <c>null</c> when the explanation has no [H,W] heatmap (e.g. [B,F] inputs).</summary>
    public byte[]? HeatmapPng { get; init; }

    /// <summary>The colour bar of the heatmap and overlay with its value scale (PNG), or <c>null</c> (no heatmap, colour bar off, or maps under 16 pixels high).</summary>
    public byte[]? ColorBarPng { get; init; }

    /// <summary>Width of the images in pixels (0 without images).</summary>
    public int Width { get; init; }

    /// <summary>Height of the images in pixels (0 without images).</summary>
    public int Height { get; init; }

    /// <summary>"281 (tabby)" or "281".</summary>
    public string ClassLabel => ClassName is null ? ClassIndex.ToString(CultureInfo.InvariantCulture) : FormattableString.Invariant($"{ClassIndex} ({ClassName})");
}

/// <summary>
/// A notebook-ready rendering of an <see cref="Explanation"/>: for each shown sample the input image, the overlay and
/// the heatmap as PNG bytes, with class, logit and conservation error. Independent of the explanation's tensors (it can
/// outlive a disposed explanation). In a .NET Interactive notebook it displays as an HTML table (see
/// <see cref="ToHtml"/>); elsewhere use the PNG bytes or <see cref="ToHtml"/> directly. Create it with
/// <see cref="ExplanationDisplay.ToView(Explanation, LoadedImage?, IReadOnlyList{string}?, ExplanationDisplayOptions?)"/>.
/// </summary>
[TypeFormatterSource(typeof(ExplanationViewFormatterSource), PreferredMimeTypes = new[] { "text/html", "text/plain" })]
public sealed class ExplanationView
{
    internal ExplanationView(string method, int sampleCount, double maxConservationError, IReadOnlyList<ExplanationSampleView> samples, int minDisplayWidth)
    {
        Method = method;
        SampleCount = sampleCount;
        MaxConservationError = maxConservationError;
        Samples = samples;
        MinDisplayWidth = minDisplayWidth;
    }

    /// <summary>The explanation method (composite name).</summary>
    public string Method { get; }

    /// <summary>Number of samples in the explained batch (may exceed <see cref="Samples"/>.Count).</summary>
    public int SampleCount { get; }

    /// <summary>The shown samples (the first <see cref="ExplanationDisplayOptions.MaxSamples"/>).</summary>
    public IReadOnlyList<ExplanationSampleView> Samples { get; }

    /// <summary>Largest conservation error over the whole batch.</summary>
    public double MaxConservationError { get; }

    /// <summary>Images narrower than this are scaled up in the HTML.</summary>
    public int MinDisplayWidth { get; }

    /// <summary>
    /// An HTML table, one row per shown sample: input, overlay and heatmap as <c>data:image/png;base64,…</c> images,
    /// class, logit and conservation error, with the method and the sample count below. Self-contained (no scripts,
    /// no external resources); text is HTML-encoded.
    /// </summary>
    public string ToHtml()
    {
        var hasImages = Samples.Any(s => s.ImagePng is not null);
        var hasHeatmaps = Samples.Any(s => s.HeatmapPng is not null);
        var hasBars = Samples.Any(s => s.ColorBarPng is not null);
        var sb = new StringBuilder();
        sb.Append("<div class=\"rootdtd-explanation\"><table><thead><tr><th>#</th>");
        if (hasImages) sb.Append("<th>input</th><th>overlay</th>");
        if (hasHeatmaps) sb.Append("<th>heatmap</th>");
        if (hasBars) sb.Append("<th>scale</th>");
        sb.Append("<th>class</th><th>logit</th><th>conservation error</th></tr></thead><tbody>");
        foreach (var s in Samples)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<tr><td>{s.Index}</td>");
            if (hasImages)
            {
                Cell(sb, s.ImagePng, s, "input");
                Cell(sb, s.OverlayPng, s, "overlay");
            }
            if (hasHeatmaps) Cell(sb, s.HeatmapPng, s, "heatmap");
            if (hasBars) BarCell(sb, s.ColorBarPng, s);
            sb.Append("<td>").Append(WebUtility.HtmlEncode(s.ClassLabel)).Append("</td>")
              .Append(CultureInfo.InvariantCulture, $"<td>{s.Logit:g4}</td><td>{s.ConservationError:g2}</td></tr>");
        }
        sb.Append("</tbody></table><div>method <code>").Append(WebUtility.HtmlEncode(Method)).Append("</code>");
        sb.Append(CultureInfo.InvariantCulture, $", {SampleCount} sample{(SampleCount == 1 ? "" : "s")}");
        if (SampleCount > Samples.Count)
            sb.Append(CultureInfo.InvariantCulture, $" (first {Samples.Count} shown, {SampleCount - Samples.Count} left out; ExplanationDisplayOptions.MaxSamples shows more)");
        sb.Append(CultureInfo.InvariantCulture, $", max conservation error {MaxConservationError:g2}</div></div>");
        return sb.ToString();
    }

    private void BarCell(StringBuilder sb, byte[]? png, ExplanationSampleView s)
    {
        sb.Append("<td>");
        if (png is not null)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<img alt=\"scale\" src=\"data:image/png;base64,{Convert.ToBase64String(png)}\"");
            if (MinDisplayWidth > 0 && s.Width > 0 && s.Width < MinDisplayWidth)
            {
                var h = (int)Math.Round((double)s.Height * MinDisplayWidth / s.Width);
                sb.Append(CultureInfo.InvariantCulture, $" style=\"height:{h}px\"");
            }
            sb.Append(" />");
        }
        sb.Append("</td>");
    }

    private void Cell(StringBuilder sb, byte[]? png, ExplanationSampleView s, string alt)
    {
        sb.Append("<td>");
        if (png is not null)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<img alt=\"{alt}\" src=\"data:image/png;base64,{Convert.ToBase64String(png)}\" width=\"{s.Width}\" height=\"{s.Height}\"");
            if (MinDisplayWidth > 0 && s.Width > 0 && s.Width < MinDisplayWidth)
            {
                var h = (int)Math.Round((double)s.Height * MinDisplayWidth / s.Width);
                sb.Append(CultureInfo.InvariantCulture, $" style=\"width:{MinDisplayWidth}px;height:{h}px;image-rendering:pixelated\"");
            }
            sb.Append(" />");
        }
        sb.Append("</td>");
    }

    /// <summary>One line: method, sample count, the first samples' classes, logits and conservation errors.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"Explanation ({Method}) of {SampleCount} sample{(SampleCount == 1 ? "" : "s")}: ");
        const int listed = 3;
        sb.Append(string.Join("; ", Samples.Take(listed).Select(s =>
            FormattableString.Invariant($"#{s.Index} class {s.ClassLabel} logit {s.Logit:g4}, conservation error {s.ConservationError:g2}"))));
        if (SampleCount > listed) sb.Append(CultureInfo.InvariantCulture, $"; … ({SampleCount - listed} more, max conservation error {MaxConservationError:g2})");
        return sb.ToString();
    }
}

/// <summary>The formatter source .NET Interactive finds through the attribute on <see cref="ExplanationView"/>.</summary>
internal sealed class ExplanationViewFormatterSource : DisplayFormatterSource<ExplanationView>
{
    protected override string Html(ExplanationView value) => value.ToHtml();

    protected override string Text(ExplanationView value) => value.ToString();
}
