using System.Runtime.CompilerServices;
using RootDtd.Display;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Imaging;

/// <summary>
/// Renders an <see cref="Explanation"/> for display: input image, overlay and heatmap per sample as PNGs
/// (<see cref="ExplanationView"/>). Loading this assembly also makes a bare <see cref="Explanation"/> display this
/// way in .NET Interactive notebooks (it registers with <see cref="ExplanationFormatting.RegisterHtmlRenderer"/> and the core's
/// <see cref="NotebookDisplay"/>, using <see cref="Defaults"/>).
/// </summary>
public static class ExplanationDisplay
{
    private static ExplanationDisplayOptions _defaults = ExplanationDisplayOptions.Default;

    /// <summary>Options used when no options are passed, including when a bare <see cref="Explanation"/> is displayed in a notebook.</summary>
    public static ExplanationDisplayOptions Defaults
    {
        get => Volatile.Read(ref _defaults);
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            value.Validate();
            Volatile.Write(ref _defaults, value);
        }
    }

    /// <summary>
    /// Renders <paramref name="explanation"/>. The input shown is <paramref name="image"/>'s display image (for a
    /// single-sample explanation of that image) or, without it, <see cref="Explanation.Input"/> denormalised with
    /// <see cref="ExplanationDisplayOptions.Normalization"/>.
    /// </summary>
    /// <param name="explanation">The explanation (its tensors must not be disposed yet).</param>
    /// <param name="image">The loaded image that was explained, used for the input and the overlay of every shown sample; optional.</param>
    /// <param name="classNames">Class names by index; optional.</param>
    /// <param name="options">Display options; <c>null</c> = <see cref="Defaults"/>.</param>
    public static ExplanationView ToView(this Explanation explanation, LoadedImage? image = null, IReadOnlyList<string>? classNames = null, ExplanationDisplayOptions? options = null) =>
        Create(explanation, image is null ? null : new[] { image.DisplayImage }, classNames, options);

    /// <summary>Renders <paramref name="explanation"/> with one display image per sample (e.g. from <see cref="ImageLoader.LoadDisplayImage"/>).</summary>
    /// <param name="explanation">The explanation (its tensors must not be disposed yet).</param>
    /// <param name="images">Display images, one per sample (a single image is used for every sample).</param>
    /// <param name="classNames">Class names by index; optional.</param>
    /// <param name="options">Display options; <c>null</c> = <see cref="Defaults"/>.</param>
    public static ExplanationView ToView(this Explanation explanation, IReadOnlyList<Image<Rgb24>> images, IReadOnlyList<string>? classNames = null, ExplanationDisplayOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(images);
        return Create(explanation, images, classNames, options);
    }

    /// <summary>The HTML of <see cref="ExplanationView.ToHtml"/> for <paramref name="explanation"/> with <see cref="Defaults"/>.</summary>
    /// <param name="explanation">The explanation.</param>
    public static string ToHtml(Explanation explanation) => Create(explanation, null, null, null).ToHtml();

    private static ExplanationView Create(Explanation explanation, IReadOnlyList<Image<Rgb24>>? images, IReadOnlyList<string>? classNames, ExplanationDisplayOptions? options)
    {
        ArgumentNullException.ThrowIfNull(explanation);
        options ??= Defaults;
        options.Validate();
        if (images is { Count: 0 }) images = null;
        var n = explanation.Targets.Length;
        if (images is not null && images.Count != 1 && images.Count != n)
            throw new ArgumentException($"Give one display image or one per sample ({n}); got {images.Count}.", nameof(images));
        classNames ??= options.ClassNames;
        var shown = Math.Min(n, options.MaxSamples);
        var logits = ExplanationFormatting.TargetLogits(explanation);
        // heatmap and overlay keep the image's size; the colour bar is a column of its own
        var heatmapOptions = (options.Heatmap ?? HeatmapDefaults.For(explanation.Method)) with { ColorBar = false };
        var showBar = (options.Heatmap ?? HeatmapDefaults.For(explanation.Method)).ColorBar;

        using var scope = NewDisposeScope();
        var heatmaps = explanation.Heatmap.dim() == 3 ? explanation.Heatmap.detach().cpu().to_type(ScalarType.Float32) : null;
        var input = explanation.Input.detach().cpu().to_type(ScalarType.Float32);
        var samples = new List<ExplanationSampleView>(shown);
        for (int i = 0; i < shown; i++)
        {
            byte[]? imagePng = null, overlayPng = null, heatmapPng = null, colorBarPng = null;
            int width = 0, height = 0;
            if (heatmaps is not null)
            {
                var map = heatmaps[i];
                using var heat = HeatmapRenderer.Render(map, heatmapOptions);
                heatmapPng = heat.ToPngBytes();
                (width, height) = (heat.Width, heat.Height);
                if (showBar && heat.Height >= 16)
                {
                    using var bar = ColorBar.Render(HeatmapRenderer.ComputeScale(map, heatmapOptions), heatmapOptions, heat.Height);
                    colorBarPng = bar.ToPngBytes();
                }
                var owned = images is null ? InputImage(input[i], options.Normalization) : null;
                try
                {
                    var picture = images is null ? owned : images[images.Count == 1 ? 0 : i];
                    if (picture is not null)
                    {
                        imagePng = picture.ToPngBytes();
                        using var overlay = HeatmapRenderer.Overlay(picture, map, heatmapOptions);
                        overlayPng = overlay.ToPngBytes();
                        (width, height) = (picture.Width, picture.Height);
                    }
                }
                finally
                {
                    owned?.Dispose();
                }
            }
            samples.Add(new ExplanationSampleView
            {
                Index = i,
                ClassIndex = explanation.Targets[i],
                ClassName = ExplanationFormatting.ClassName(explanation.Targets[i], classNames),
                Logit = logits[i],
                ConservationError = ExplanationFormatting.ConservationError(explanation, i),
                RelevanceSum = explanation.Conservation.InputSum[i],
                ImagePng = imagePng,
                OverlayPng = overlayPng,
                HeatmapPng = heatmapPng,
                ColorBarPng = colorBarPng,
                Width = width,
                Height = height,
            });
        }
        return new ExplanationView(explanation.Method, n, explanation.Conservation.MaxRelativeError, samples, options.MinDisplayWidth);
    }

    /// <summary>The input [C,H,W] as an RGB image: 3 channels denormalised, 1 channel as grey; other inputs have none.</summary>
    private static Image<Rgb24>? InputImage(Tensor x, ImageNormalization? normalization)
    {
        if (x.dim() != 3 || (x.shape[0] != 3 && x.shape[0] != 1)) return null;
        using var scope = NewDisposeScope();
        var inUnitRange = x.min().item<float>() >= 0f && x.max().item<float>() <= 1f;
        if (x.shape[0] == 1)
        {
            var grey = inUnitRange ? x : MinMax(x);
            return ImageTensorConversion.ToImage(grey.expand(3, -1, -1));
        }
        var norm = normalization ?? (inUnitRange ? ImageNormalization.Identity : ImageNormalization.ImageNet);
        return norm.ToImage(x);
    }

    private static Tensor MinMax(Tensor x)
    {
        var lo = x.min();
        var range = x.max() - lo;
        return range.item<float>() > 0 ? (x - lo) / range : zeros_like(x);
    }

    /// <summary>Makes a bare <see cref="Explanation"/> display with images once this assembly is loaded (unless a renderer is registered already).</summary>
#pragma warning disable CA2255 // A library module initializer is the point here: it registers the notebook renderer with the core library.
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void RegisterNotebookRenderer()
    {
        if (ExplanationFormatting.HtmlRenderer is null) ExplanationFormatting.RegisterHtmlRenderer(ToHtml);
        if (!NotebookDisplay.IsRegistered) NotebookDisplay.Register(ExplanationFormatting.ToHtml, ExplanationFormatting.ToSummary);
    }
}
