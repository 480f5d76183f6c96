namespace RootDtd.Imaging;

/// <summary>How signed relevance values become intensities.</summary>
public enum HeatmapMode
{
    /// <summary>The relevance as it is, min-max normalised (the most negative value maps to 0). Used by the paper's figures.</summary>
    Raw,

    /// <summary>|R|, min-max normalised.</summary>
    Absolute,

    /// <summary>max(R, 0), min-max normalised (negative evidence is hidden).</summary>
    Positive,

    /// <summary>R / max|R| in [-1, 1], shown with a diverging map so that 0 stays white.</summary>
    Signed,
}

/// <summary>How the heatmap's opacity in an overlay is chosen per pixel.</summary>
public enum OverlayAlphaMode
{
    /// <summary>
    /// Opacity <see cref="HeatmapOptions.OverlayOpacity"/> × |intensity|: pixels without relevance show the photo as it
    /// is, the most relevant ones are covered with the full opacity (Captum's alpha scaling).
    /// </summary>
    Relevance,

    /// <summary>The same opacity <see cref="HeatmapOptions.OverlayOpacity"/> everywhere (the whole photo is tinted).</summary>
    Constant,
}

/// <summary>Options of <see cref="HeatmapRenderer"/> and <see cref="LayerMaps"/>.</summary>
public sealed record HeatmapOptions
{
    /// <summary>How relevance becomes intensity. Default <see cref="HeatmapMode.Absolute"/>.</summary>
    public HeatmapMode Mode { get; init; } = HeatmapMode.Absolute;

    /// <summary>The colour map; <c>null</c> chooses <see cref="ColorMap.Turbo"/>, or <see cref="ColorMap.Diverging"/> for <see cref="HeatmapMode.Signed"/>.</summary>
    public ColorMap? ColorMap { get; init; }

    /// <summary>
    /// "Mean cropping" from the paper's figures: after min-max normalisation, every intensity not above the map's mean
    /// (≤ mean) is set to 0. Not available with <see cref="HeatmapMode.Signed"/>.
    /// </summary>
    public bool MeanCropping { get; init; }

    /// <summary>
    /// Optional percentile (0 &lt; p ≤ 100, e.g. 99.5) for outlier clipping before normalisation: values above the p-th
    /// percentile are clipped to it (for <see cref="HeatmapMode.Raw"/> values below the (100 − p)-th percentile too; for
    /// <see cref="HeatmapMode.Signed"/> the scale is the p-th percentile of |R|). <c>null</c> disables clipping.
    /// </summary>
    public double? ClipPercentile { get; init; }

    /// <summary>
    /// Opacity of the heatmap in overlays: 0 shows only the image, 1 only the heatmap. With
    /// <see cref="OverlayAlphaMode.Relevance"/> the largest opacity (of the most relevant pixels). Default 0.5.
    /// </summary>
    public float OverlayOpacity { get; init; } = 0.5f;

    /// <summary>Whether the overlay's opacity follows |relevance| (default) or is constant.</summary>
    public OverlayAlphaMode OverlayAlpha { get; init; } = OverlayAlphaMode.Relevance;

    /// <summary>
    /// Append a colour bar with the value scale (relevance at the bottom, middle and top of the colour map) to the
    /// right of rendered heatmaps and overlays. Default false here (images stay pixel-aligned with the input);
    /// <see cref="HeatmapDefaults"/> switches it on for the CLI, the notebook display and galleries.
    /// </summary>
    public bool ColorBar { get; init; }

    /// <summary>|R| with Turbo, min-max normalised (the default).</summary>
    public static HeatmapOptions Default { get; } = new();

    /// <summary>The paper's presentation: raw relevance, min-max, mean cropping, Turbo.</summary>
    public static HeatmapOptions Paper { get; } = new() { Mode = HeatmapMode.Raw, MeanCropping = true };

    /// <summary>Signed relevance on the blue–white–red diverging map, scaled by max|R|.</summary>
    public static HeatmapOptions Signed { get; } = new() { Mode = HeatmapMode.Signed };

    /// <summary>The colour map actually used (see <see cref="ColorMap"/>).</summary>
    public ColorMap ResolvedColorMap => ColorMap ?? (Mode == HeatmapMode.Signed ? Imaging.ColorMap.Diverging : Imaging.ColorMap.Turbo);

    /// <summary>Throws <see cref="ArgumentException"/> when the options are inconsistent.</summary>
    public void Validate()
    {
        if (!Enum.IsDefined(Mode)) throw new ArgumentException($"Unknown heatmap mode {Mode}.", nameof(Mode));
        if (MeanCropping && Mode == HeatmapMode.Signed)
            throw new ArgumentException("Mean cropping is defined for unsigned intensities; it cannot be combined with HeatmapMode.Signed.", nameof(MeanCropping));
        if (ClipPercentile is double p && !(p > 0 && p <= 100))
            throw new ArgumentException($"ClipPercentile must be in (0, 100], was {p}.", nameof(ClipPercentile));
        if (!Enum.IsDefined(OverlayAlpha)) throw new ArgumentException($"Unknown overlay alpha mode {OverlayAlpha}.", nameof(OverlayAlpha));
        if (!(OverlayOpacity >= 0 && OverlayOpacity <= 1))
            throw new ArgumentException($"OverlayOpacity must be in [0, 1], was {OverlayOpacity}.", nameof(OverlayOpacity));
    }
}
