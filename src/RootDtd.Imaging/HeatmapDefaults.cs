using RootDtd.Composites;

namespace RootDtd.Imaging;

/// <summary>
/// The default rendering of each method family, chosen so that the default map of every method is legible. Without
/// clipping a few extreme pixels set the scale and most of the map falls into the colour map's darkest band: on the
/// photos of the repository's test set, min-max |R| puts 99 % of a <c>root</c> map there. Each family clips at the
/// percentile that brings its maps out of that band (measured per method in docs/imaging.md with
/// <c>tools/RootDtd.Legibility</c>). All defaults: |R| on Turbo, a colour bar with the value scale, overlays whose
/// opacity follows |R| up to <see cref="OverlayOpacity"/>. The CLI, the notebook display and the benchmark gallery use
/// these unless the caller passes options.
/// </summary>
public static class HeatmapDefaults
{
    /// <summary>Percentile clipping of the LRP family and of methods RootDtd does not know (2 % of the pixels saturate, as in Captum's default).</summary>
    public const double LrpClipPercentile = 98;

    /// <summary>
    /// Percentile clipping of <c>flat</c> and <c>wsquare</c>: their first-layer rule ignores the input, so relevance piles
    /// up on the receptive-field grid of the first convolution and the maps are more peaked than the rest of the family.
    /// </summary>
    public const double InputIndependentClipPercentile = 95;

    /// <summary>Percentile clipping of root inference and the published root-inference code (the most peaked maps).</summary>
    public const double RootClipPercentile = 95;

    /// <summary>Percentile clipping of gradient methods.</summary>
    public const double GradientClipPercentile = 98;

    /// <summary>Largest overlay opacity (of the most relevant pixels; the opacity follows |R|).</summary>
    public const float OverlayOpacity = 0.7f;

    /// <summary>The default options of a family.</summary>
    /// <param name="family">The method family.</param>
    public static HeatmapOptions For(MethodFamily family) => Base with
    {
        ClipPercentile = family switch
        {
            MethodFamily.RootInference or MethodFamily.PublishedRootInference => RootClipPercentile,
            MethodFamily.Gradient => GradientClipPercentile,
            _ => LrpClipPercentile,
        },
    };

    /// <summary>The default options of a method or composite name (its family, see <see cref="MethodTraits.Of(string)"/>).</summary>
    /// <param name="method">Method or composite name, e.g. <c>root</c> or <c>epsilon-plus-flat</c>; a <c>name:key=value</c> spec is read up to the colon.</param>
    public static HeatmapOptions For(string method)
    {
        ArgumentNullException.ThrowIfNull(method);
        var bare = method.Split(':', 2)[0].Trim();
        if (string.Equals(bare, "flat", StringComparison.OrdinalIgnoreCase) || string.Equals(bare, "wsquare", StringComparison.OrdinalIgnoreCase))
            return Base with { ClipPercentile = InputIndependentClipPercentile };
        return For(MethodTraits.Of(method).Family);
    }

    /// <summary>The default options of a composite (by its name; a composite that starts from 1 is a gradient method).</summary>
    /// <param name="composite">The composite.</param>
    public static HeatmapOptions For(Composite composite)
    {
        ArgumentNullException.ThrowIfNull(composite);
        return MethodTraits.Of(composite).Family == MethodFamily.Gradient ? For(MethodFamily.Gradient) : For(composite.Name);
    }

    private static HeatmapOptions Base { get; } = HeatmapOptions.Default with
    {
        ColorBar = true,
        OverlayAlpha = OverlayAlphaMode.Relevance,
        OverlayOpacity = OverlayOpacity,
    };
}
