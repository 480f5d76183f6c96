using FluentAssertions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Imaging.Tests;

public class HeatmapRendererTests
{
    private static Tensor RandomMap(int h, int w, int seed)
    {
        var random = new Random(seed);
        var values = new float[h * w];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() * 2 - 0.7);
        return tensor(values, new long[] { h, w });
    }

    [Fact]
    public void Min_max_normalisation_spans_zero_to_one()
    {
        using var scope = NewDisposeScope();
        var map = RandomMap(20, 30, 1);
        foreach (var mode in new[] { HeatmapMode.Raw, HeatmapMode.Absolute, HeatmapMode.Positive })
        {
            var intensity = HeatmapRenderer.ComputeIntensity(map, new HeatmapOptions { Mode = mode });
            intensity.shape.Should().Equal(20, 30);
            intensity.min().item<float>().Should().BeApproximately(0f, 1e-6f, mode.ToString());
            intensity.max().item<float>().Should().BeApproximately(1f, 1e-6f, mode.ToString());
        }
        var raw = HeatmapRenderer.ComputeIntensity(map, new HeatmapOptions { Mode = HeatmapMode.Raw });
        var expected = map.sub(map.min()).div(map.max().sub(map.min()));
        raw.allclose(expected, 1e-5, 1e-6).Should().BeTrue();
        var positive = HeatmapRenderer.ComputeIntensity(map, new HeatmapOptions { Mode = HeatmapMode.Positive });
        positive.masked_select(map.le(0)).abs().max().item<float>().Should().Be(0f, "negative relevance is hidden");
        var absolute = HeatmapRenderer.ComputeIntensity(map, new HeatmapOptions { Mode = HeatmapMode.Absolute });
        var abs = map.abs();
        absolute.allclose(abs.sub(abs.min()).div(abs.max().sub(abs.min())), 1e-5, 1e-6).Should().BeTrue();
    }

    [Fact]
    public void Mean_cropping_zeroes_exactly_the_pixels_not_above_the_mean()
    {
        using var scope = NewDisposeScope();
        var map = RandomMap(16, 16, 2);
        var plain = HeatmapRenderer.ComputeIntensity(map, new HeatmapOptions { Mode = HeatmapMode.Raw });
        var cropped = HeatmapRenderer.ComputeIntensity(map, HeatmapOptions.Paper);
        float mean = plain.mean().item<float>();
        var plainValues = plain.data<float>().ToArray();
        var croppedValues = cropped.data<float>().ToArray();
        int zeroed = 0;
        for (int i = 0; i < plainValues.Length; i++)
        {
            if (plainValues[i] > mean) croppedValues[i].Should().Be(plainValues[i]);
            else { croppedValues[i].Should().Be(0f); zeroed++; }
        }
        zeroed.Should().BeInRange(1, plainValues.Length - 1);
    }

    [Fact]
    public void Signed_mode_scales_by_max_abs_and_keeps_zero_white()
    {
        using var scope = NewDisposeScope();
        var map = tensor(new float[] { -2f, -1f, 0f, 1f, 2f, 0.5f }, new long[] { 2, 3 });
        var intensity = HeatmapRenderer.ComputeIntensity(map, HeatmapOptions.Signed);
        intensity.data<float>().ToArray().Should().Equal(-1f, -0.5f, 0f, 0.5f, 1f, 0.25f);

        using var image = HeatmapRenderer.Render(map, HeatmapOptions.Signed);
        image[2, 0].Should().Be(new Rgb24(255, 255, 255), "zero relevance is white");
        image[0, 0].Should().Be(new Rgb24(0, 0, 255), "most negative is blue");
        image[1, 1].Should().Be(new Rgb24(255, 0, 0), "most positive is red");
        var minusOne = image[1, 0];
        var plusOne = image[0, 1];
        plusOne.Should().Be(new Rgb24(minusOne.B, minusOne.G, minusOne.R), "±R are mirrored colours");
    }

    [Theory]
    [InlineData(0f)]
    [InlineData(3.5f)]
    [InlineData(-1f)]
    public void Constant_maps_render_as_zero_intensity(float value)
    {
        using var scope = NewDisposeScope();
        var map = full(8, 8, value);
        foreach (var options in new[] { HeatmapOptions.Default, HeatmapOptions.Paper, HeatmapOptions.Signed, new HeatmapOptions { Mode = HeatmapMode.Positive, ClipPercentile = 99 } })
        {
            var intensity = HeatmapRenderer.ComputeIntensity(map, options);
            intensity.isnan().any().item<bool>().Should().BeFalse();
            intensity.abs().max().item<float>().Should().Be(0f);
            using var image = HeatmapRenderer.Render(map, options);
            image[3, 3].Should().Be(options.ResolvedColorMap[options.Mode == HeatmapMode.Signed ? 128 : 0]);
        }
    }

    [Fact]
    public void Nan_or_infinity_is_an_argument_exception_naming_the_heatmap()
    {
        using var scope = NewDisposeScope();
        var nan = zeros(new long[] { 4, 4 });
        nan[1, 1] = tensor(float.NaN);
        var inf = zeros(new long[] { 4, 4 });
        inf[2, 2] = tensor(float.PositiveInfinity);
        ((Action)(() => HeatmapRenderer.Render(nan))).Should().Throw<ArgumentException>().Where(e => e.ParamName == "heatmap").WithMessage("*NaN*");
        ((Action)(() => HeatmapRenderer.ComputeIntensity(inf))).Should().Throw<ArgumentException>().Where(e => e.ParamName == "heatmap").WithMessage("*infinite*");
        ((Action)(() => HeatmapRenderer.ComputeIntensity(zeros(new long[] { 2, 2, 2, 2 })))).Should().Throw<ArgumentException>().Where(e => e.ParamName == "heatmap");
    }

    [Fact]
    public void Percentile_clipping_limits_outliers()
    {
        using var scope = NewDisposeScope();
        var values = Enumerable.Range(0, 100).Select(i => (float)i).ToArray();
        values[99] = 10_000f; // one huge outlier
        var map = tensor(values, new long[] { 10, 10 });
        var unclipped = HeatmapRenderer.ComputeIntensity(map, new HeatmapOptions { Mode = HeatmapMode.Positive });
        var clipped = HeatmapRenderer.ComputeIntensity(map, new HeatmapOptions { Mode = HeatmapMode.Positive, ClipPercentile = 98 });
        unclipped[5, 0].item<float>().Should().BeLessThan(0.01f, "the outlier squashes everything else");
        clipped[5, 0].item<float>().Should().BeApproximately(50f / 97.02f, 0.01f, "98th percentile of 0..98 plus the outlier is 97.02");
        clipped.max().item<float>().Should().Be(1f);
    }

    [Fact]
    public void Batches_are_normalised_per_map()
    {
        using var scope = NewDisposeScope();
        var batch = stack(new[] { RandomMap(6, 7, 3), RandomMap(6, 7, 4).mul(100) });
        var intensity = HeatmapRenderer.ComputeIntensity(batch);
        intensity.shape.Should().Equal(2, 6, 7);
        intensity[0].max().item<float>().Should().BeApproximately(1f, 1e-6f);
        intensity[1].max().item<float>().Should().BeApproximately(1f, 1e-6f);
        var images = HeatmapRenderer.RenderBatch(batch);
        images.Should().HaveCount(2);
        foreach (var image in images) { image.Width.Should().Be(7); image.Height.Should().Be(6); image.Dispose(); }
        ((Action)(() => HeatmapRenderer.Render(batch))).Should().Throw<ArgumentException>();
    }

    [Fact]
    public void Any_float_dtype_is_accepted()
    {
        using var scope = NewDisposeScope();
        var map = RandomMap(5, 5, 5);
        var reference = HeatmapRenderer.ComputeIntensity(map);
        HeatmapRenderer.ComputeIntensity(map.to(ScalarType.Float64)).allclose(reference, 1e-5, 1e-6).Should().BeTrue();
        HeatmapRenderer.ComputeIntensity(map.to(ScalarType.Float16)).allclose(reference, 1e-2, 1e-2).Should().BeTrue();
        ((Action)(() => HeatmapRenderer.ComputeIntensity(map.to(ScalarType.Int32)))).Should().Throw<ArgumentException>();
    }

    [Fact]
    public void Overlay_opacity_zero_returns_the_image_and_one_returns_the_heatmap()
    {
        using var scope = NewDisposeScope();
        using var image = TestImages.Noise(12, 9, seed: 6);
        var map = RandomMap(9, 12, 7);
        using var heat = HeatmapRenderer.Render(map);
        using var none = HeatmapRenderer.Overlay(image, map, new HeatmapOptions { OverlayOpacity = 0f, OverlayAlpha = OverlayAlphaMode.Constant });
        using var full = HeatmapRenderer.Overlay(image, map, new HeatmapOptions { OverlayOpacity = 1f, OverlayAlpha = OverlayAlphaMode.Constant });
        using var half = HeatmapRenderer.Overlay(image, map, new HeatmapOptions { OverlayOpacity = 0.5f, OverlayAlpha = OverlayAlphaMode.Constant });
        ImageTensorConversion.GetRgbBytes(none).Should().Equal(ImageTensorConversion.GetRgbBytes(image));
        ImageTensorConversion.GetRgbBytes(full).Should().Equal(ImageTensorConversion.GetRgbBytes(heat));
        var a = ImageTensorConversion.GetRgbBytes(image);
        var b = ImageTensorConversion.GetRgbBytes(heat);
        var h = ImageTensorConversion.GetRgbBytes(half);
        for (int i = 0; i < h.Length; i++) ((int)h[i]).Should().BeCloseTo((a[i] + b[i]) / 2, 1);
    }

    [Fact]
    public void Relevance_alpha_leaves_irrelevant_pixels_as_they_are_and_covers_the_most_relevant_with_the_opacity()
    {
        using var scope = NewDisposeScope();
        using var image = TestImages.Noise(4, 1, seed: 3);
        // |R| = 0, 1, 2, 4 → intensities 0, 0.25, 0.5, 1 (min-max of |R|)
        var map = tensor(new float[] { 0, -1, 2, 4 }, new long[] { 1, 4 });
        var options = new HeatmapOptions { OverlayOpacity = 0.8f };
        options.OverlayAlpha.Should().Be(OverlayAlphaMode.Relevance, "alpha following |R| is the default");
        using var heat = HeatmapRenderer.Render(map, options);
        using var overlay = HeatmapRenderer.Overlay(image, map, options);
        var a = ImageTensorConversion.GetRgbBytes(image);
        var b = ImageTensorConversion.GetRgbBytes(heat);
        var o = ImageTensorConversion.GetRgbBytes(overlay);
        var alpha = new[] { 0f, 0.2f, 0.4f, 0.8f };
        for (int p = 0; p < 4; p++)
            for (int c = 0; c < 3; c++)
                ((int)o[3 * p + c]).Should().BeCloseTo((int)MathF.Round((1 - alpha[p]) * a[3 * p + c] + alpha[p] * b[3 * p + c]), 1, $"pixel {p}");
        for (int c = 0; c < 3; c++) o[c].Should().Be(a[c], "a pixel without relevance shows the photo unchanged");
    }

    [Fact]
    public void Colour_bar_shows_the_value_scale_beside_the_map()
    {
        using var scope = NewDisposeScope();
        // 101 values 0..100 in one row: clipping at the 90th percentile puts exactly 90 at the top of the colour map
        var map = arange(101, dtype: ScalarType.Float32).reshape(1, 101);
        var options = new HeatmapOptions { ClipPercentile = 90, ColorBar = true };
        var scale = HeatmapRenderer.ComputeScale(map, options);
        scale.Low.Should().Be(0);
        scale.High.Should().Be(90);
        scale.Clipped.Should().BeTrue();
        ColorBar.Labels(scale).Should().Equal(">90", "45", "0");
        ColorBar.Labels(HeatmapRenderer.ComputeScale(map - 50, HeatmapOptions.Signed)).Should().Equal("50", "0", "-50");

        using var plain = HeatmapRenderer.Render(map, options with { ColorBar = false });
        using var withBar = HeatmapRenderer.Render(map, options);
        using var overlayImage = TestImages.Noise(101, 1, seed: 4);
        using var overlay = HeatmapRenderer.Overlay(overlayImage, map, options);
        withBar.Width.Should().BeGreaterThan(plain.Width);
        overlay.Width.Should().Be(withBar.Width);
        withBar.Height.Should().Be(16, "a bar needs 16 pixels, the canvas grows to it");
        // the map is copied unchanged to the left; the bar's top is the colour map's top colour, its bottom the lowest
        for (int x = 0; x < 101; x++) withBar[x, 0].Should().Be(plain[x, 0]);
        var barX = plain.Width + 3 + 5;
        withBar[barX, 3].Should().Be(ColorMap.Turbo.Map(1f));
        withBar[barX, 16 - 1 - 3].Should().Be(ColorMap.Turbo.Map(0f));
    }

    [Fact]
    public void Dark_band_fraction_counts_pixels_in_the_lowest_tenth()
    {
        using var scope = NewDisposeScope();
        // one outlier of 1000 among 99 values 1..99: min-max puts every ordinary pixel below 0.1
        var values = Enumerable.Range(1, 99).Select(v => (float)v).Append(1000f).ToArray();
        var map = tensor(values, new long[] { 10, 10 });
        HeatmapRenderer.DarkBandFraction(map).Should().BeApproximately(0.99, 1e-9);
        // clipped at the 95th percentile (≈ 95.05): values below 1 + 0.1·94.05 ≈ 10.4 are dark → 1..10
        HeatmapRenderer.DarkBandFraction(map, new HeatmapOptions { ClipPercentile = 95 }).Should().BeApproximately(0.10, 1e-9);
    }

    [Fact]
    public void Overlay_resizes_a_smaller_heatmap_to_the_image()
    {
        using var scope = NewDisposeScope();
        using var image = TestImages.Noise(32, 24, seed: 8);
        using var overlay = HeatmapRenderer.Overlay(image, RandomMap(6, 8, 9));
        overlay.Width.Should().Be(32);
        overlay.Height.Should().Be(24);
    }

    [Fact]
    public void Rendering_leaks_no_tensors()
    {
        using var map = RandomMap(10, 10, 10);
        using var image = TestImages.Noise(10, 10, seed: 11);
        HeatmapRenderer.Render(map).Dispose();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 5; i++)
        {
            HeatmapRenderer.Render(map, HeatmapOptions.Paper).Dispose();
            HeatmapRenderer.Overlay(image, map).Dispose();
            HeatmapRenderer.ComputeIntensity(map).Dispose();
        }
        DisposeScopeManager.Statistics.ThreadTotalLiveCount.Should().Be(before);
    }

    [Fact]
    public void Mean_cropping_with_signed_mode_is_rejected()
    {
        using var map = zeros(new long[] { 2, 2 });
        ((Action)(() => HeatmapRenderer.Render(map, new HeatmapOptions { Mode = HeatmapMode.Signed, MeanCropping = true })))
            .Should().Throw<ArgumentException>();
    }
}
