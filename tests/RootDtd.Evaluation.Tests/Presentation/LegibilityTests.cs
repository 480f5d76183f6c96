using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Evaluation.Training;
using RootDtd.Imaging;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests.Presentation;

/// <summary>
/// Every method's default map (<see cref="HeatmapDefaults"/>) is legible on real photos: the CC0 photos of
/// ROOTDTD_PHOTOS_DIR (default ../shared/photos next to the repository) through the committed trained synthetic ResNet
/// (64×64). The numbers of docs/imaging.md come from tools/RootDtd.Legibility on the same photos.
/// </summary>
public sealed class LegibilityTests
{
    /// <summary>Largest dark-band fraction a default map may have (the "legible" root map with clipping had 71 %).</summary>
    private const double MaxDarkFraction = 0.75;

    private static string PhotosDirectory
    {
        get
        {
            var env = Environment.GetEnvironmentVariable("ROOTDTD_PHOTOS_DIR");
            if (!string.IsNullOrWhiteSpace(env)) return Path.GetFullPath(env);
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "RootDtd.sln"))) dir = dir.Parent;
            return Path.GetFullPath(Path.Combine(dir?.FullName ?? ".", "..", "shared", "photos"));
        }
    }

    [Fact]
    public void Every_methods_default_map_is_out_of_the_dark_band_on_real_photos()
    {
        var photos = Directory.Exists(PhotosDirectory)
            ? Directory.EnumerateFiles(PhotosDirectory).Where(f => f.EndsWith(".png", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".jpg", StringComparison.OrdinalIgnoreCase)).Order().ToList()
            : new List<string>();
        photos.Should().NotBeEmpty($"the photos must be in {PhotosDirectory} (set ROOTDTD_PHOTOS_DIR)");

        using var scope = NewDisposeScope();
        using var model = SyntheticModels.Load(SyntheticArchitecture.ResNet);
        var loader = new ImageLoader(ImageLoadOptions.ResizeAndCrop(SyntheticModels.ImageSize) with { Normalization = SyntheticModels.Normalization });
        var images = photos.Select(loader.Load).ToList();
        try
        {
            var batch = stack(images.Select(i => i.Normalized).ToArray());
            var low = SyntheticModels.Normalization.LowerBound();
            var high = SyntheticModels.Normalization.UpperBound();
            var rootMinMax = 0.0;
            // token-map methods (chefer, rollout, raw-attention) need attention: they do not run on this CNN
            foreach (var method in MethodCatalog.All.Where(m => !m.Name.StartsWith("test-", StringComparison.Ordinal) && m.CreateDefault().TokenMap is null))
            {
                using var explainer = new Explainer(model, method.CreateDefault(), new ExplainerOptions { InputLow = low, InputHigh = high });
                using var e = explainer.Explain(batch);
                var options = HeatmapDefaults.For(method.Name);
                var dark = Enumerable.Range(0, photos.Count).Average(k => HeatmapRenderer.DarkBandFraction(e.Heatmap[k], options));
                dark.Should().BeLessThanOrEqualTo(MaxDarkFraction, $"{method.Name}'s default map ({options.ClipPercentile}th-percentile clipping) must be legible");
                if (method.Name == "root")
                    rootMinMax = Enumerable.Range(0, photos.Count).Average(k => HeatmapRenderer.DarkBandFraction(e.Heatmap[k], HeatmapOptions.Default));
            }
            rootMinMax.Should().BeGreaterThan(0.9, "min-max scaling is what made root maps illegible (the reason for the defaults)");
        }
        finally
        {
            foreach (var image in images) image.Dispose();
        }
    }

    [Fact]
    public void Defaults_follow_the_method_family()
    {
        HeatmapDefaults.For("root").ClipPercentile.Should().Be(HeatmapDefaults.RootClipPercentile);
        HeatmapDefaults.For("root:steps=5").ClipPercentile.Should().Be(HeatmapDefaults.RootClipPercentile);
        HeatmapDefaults.For("root-published").ClipPercentile.Should().Be(HeatmapDefaults.RootClipPercentile);
        HeatmapDefaults.For("epsilon-plus-flat").ClipPercentile.Should().Be(HeatmapDefaults.LrpClipPercentile);
        HeatmapDefaults.For("flat").ClipPercentile.Should().Be(HeatmapDefaults.InputIndependentClipPercentile);
        HeatmapDefaults.For(MethodCatalog.Parse("gradient")).ClipPercentile.Should().Be(HeatmapDefaults.GradientClipPercentile);
        foreach (var method in MethodCatalog.All)
        {
            var options = HeatmapDefaults.For(method.Name);
            options.ColorBar.Should().BeTrue();
            options.OverlayAlpha.Should().Be(OverlayAlphaMode.Relevance);
            options.Mode.Should().Be(HeatmapMode.Absolute);
        }
    }
}
