namespace RootDtd.Imaging;

/// <summary>Options of <see cref="ExplanationDisplay"/>: how an explanation is shown in a notebook.</summary>
public sealed record ExplanationDisplayOptions
{
    /// <summary>
    /// Heatmap and overlay rendering. <c>null</c> (default): the explained method's defaults from
    /// <see cref="HeatmapDefaults.For(string)"/> (|R| on Turbo clipped at the family's percentile, a colour bar with the
    /// value scale, overlay opacity following |R|). <see cref="HeatmapOptions.Paper"/> gives the paper's presentation.
    /// </summary>
    public HeatmapOptions? Heatmap { get; init; }

    /// <summary>
    /// Normalisation of <see cref="Explanation.Input"/>, used to show the input when no display image is given.
    /// <c>null</c> (default) guesses: inputs within [0,1] are shown as they are, others are denormalised with
    /// <see cref="ImageNormalization.ImageNet"/>.
    /// </summary>
    public ImageNormalization? Normalization { get; init; }

    /// <summary>At most this many samples of a batch are shown (default 8).</summary>
    public int MaxSamples { get; init; } = 8;

    /// <summary>Class names by index; <c>null</c> uses <see cref="RootDtd.Display.ExplanationFormatting.ClassNames"/>.</summary>
    public IReadOnlyList<string>? ClassNames { get; init; }

    /// <summary>Images narrower than this are scaled up in the HTML (pixelated) so that small inputs stay visible; 0 = never.</summary>
    public int MinDisplayWidth { get; init; } = 128;

    /// <summary>The defaults.</summary>
    public static ExplanationDisplayOptions Default { get; } = new();

    internal void Validate()
    {
        Heatmap?.Validate();
        if (MaxSamples < 1) throw new ArgumentOutOfRangeException(nameof(MaxSamples), MaxSamples, "At least one sample must be shown.");
        if (MinDisplayWidth < 0) throw new ArgumentOutOfRangeException(nameof(MinDisplayWidth), MinDisplayWidth, "Must be 0 or more.");
    }
}
