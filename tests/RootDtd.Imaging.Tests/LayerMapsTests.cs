using FluentAssertions;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Imaging.Tests;

public class LayerMapsTests
{
    [Fact]
    public void Channel_sum_then_upsampling_gives_the_image_size()
    {
        using var scope = NewDisposeScope();
        var relevance = rand(new long[] { 64, 7, 7 });
        LayerMaps.SumChannels(relevance).allclose(relevance.sum(0L)).Should().BeTrue();
        var intensity = LayerMaps.ComputeIntensity(relevance, 224, 224);
        intensity.shape.Should().Equal(224, 224);
        intensity.min().item<float>().Should().BeGreaterThanOrEqualTo(0f);
        intensity.max().item<float>().Should().BeLessThanOrEqualTo(1f);
        using var image = LayerMaps.Render(relevance, 224, 200);
        image.Width.Should().Be(200);
        image.Height.Should().Be(224);
    }

    [Fact]
    public void Batched_layer_relevance_gives_one_map_per_sample()
    {
        using var scope = NewDisposeScope();
        var relevance = randn(new long[] { 3, 16, 14, 14 });
        LayerMaps.SumChannels(relevance).shape.Should().Equal(3, 14, 14);
        LayerMaps.ComputeIntensity(relevance, 56, 56, HeatmapOptions.Paper).shape.Should().Equal(3, 56, 56);
        var images = LayerMaps.RenderBatch(relevance, 56, 56, HeatmapOptions.Signed);
        images.Should().HaveCount(3);
        foreach (var image in images) { image.Width.Should().Be(56); image.Dispose(); }
    }

    [Fact]
    public void Upsampling_is_bilinear_and_preserves_the_normalised_layout()
    {
        using var scope = NewDisposeScope();
        // One hot channel-summed cell in the top-left corner of a 2x2 map.
        var relevance = zeros(new long[] { 4, 2, 2 });
        relevance[.., 0, 0] = tensor(1f);
        var intensity = LayerMaps.ComputeIntensity(relevance, 8, 8);
        intensity[0, 0].item<float>().Should().BeApproximately(1f, 1e-6f);
        intensity[7, 7].item<float>().Should().BeApproximately(0f, 1e-6f);
        var row = intensity[0].data<float>().ToArray();
        for (int x = 1; x < 8; x++) row[x].Should().BeLessThanOrEqualTo(row[x - 1], "bilinear values fall off monotonically");
        row[3].Should().BeInRange(0.01f, 0.99f);
    }

    [Fact]
    public void Mean_cropping_is_applied_after_upsampling()
    {
        using var scope = NewDisposeScope();
        var relevance = rand(new long[] { 8, 5, 5 });
        var plain = LayerMaps.ComputeIntensity(relevance, 20, 20, new HeatmapOptions { Mode = HeatmapMode.Raw });
        var cropped = LayerMaps.ComputeIntensity(relevance, 20, 20, HeatmapOptions.Paper);
        float mean = plain.mean().item<float>();
        cropped.masked_select(plain.le(mean)).abs().max().item<float>().Should().Be(0f);
        cropped.masked_select(plain.gt(mean)).allclose(plain.masked_select(plain.gt(mean))).Should().BeTrue();
    }

    [Fact]
    public void Wrong_rank_is_rejected()
    {
        using var scope = NewDisposeScope();
        ((Action)(() => LayerMaps.ComputeIntensity(rand(new long[] { 5, 5 }), 10, 10))).Should().Throw<ArgumentException>();
    }
}
