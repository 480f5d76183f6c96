using FluentAssertions;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Imaging.Tests;

public class ColorMapTests
{
    // Entries of Google's published 256-entry Turbo table (sRGB floats × 255, rounded).
    [Theory]
    [InlineData(0, 48, 18, 59)]
    [InlineData(64, 40, 188, 235)]
    [InlineData(128, 164, 252, 60)]
    [InlineData(192, 251, 126, 33)]
    [InlineData(255, 122, 4, 3)]
    public void Turbo_matches_published_entries(int index, int r, int g, int b)
    {
        var c = ColorMap.Turbo[index];
        ((int)c.R).Should().BeCloseTo(r, 1);
        ((int)c.G).Should().BeCloseTo(g, 1);
        ((int)c.B).Should().BeCloseTo(b, 1);
    }

    [Fact]
    public void Turbo_midpoint_is_greenish_and_ends_are_dark()
    {
        var mid = ColorMap.Turbo.Map(0.5f);
        mid.G.Should().BeGreaterThan(mid.B).And.BeGreaterThan(200);
        ColorMap.Turbo.Map(0f).Should().Be(ColorMap.Turbo[0]);
        ColorMap.Turbo.Map(1f).Should().Be(ColorMap.Turbo[255]);
        ColorMap.Turbo.Map(float.NaN).Should().Be(ColorMap.Turbo[0]);
        ColorMap.Turbo.Map(7f).Should().Be(ColorMap.Turbo[255]);
    }

    [Fact]
    public void Turbo_is_smooth()
    {
        for (int i = 1; i < ColorMap.Size; i++)
        {
            var a = ColorMap.Turbo[i - 1];
            var b = ColorMap.Turbo[i];
            Math.Abs(a.R - b.R).Should().BeLessThanOrEqualTo(6);
            Math.Abs(a.G - b.G).Should().BeLessThanOrEqualTo(6);
            Math.Abs(a.B - b.B).Should().BeLessThanOrEqualTo(8);
        }
    }

    [Fact]
    public void Diverging_is_white_at_the_centre_and_symmetric()
    {
        var white = new Rgb24(255, 255, 255);
        ColorMap.Diverging[127].Should().Be(white);
        ColorMap.Diverging[128].Should().Be(white);
        ColorMap.Diverging[0].Should().Be(new Rgb24(0, 0, 255));
        ColorMap.Diverging[255].Should().Be(new Rgb24(255, 0, 0));
        for (int i = 0; i < ColorMap.Size; i++)
        {
            var c = ColorMap.Diverging[i];
            var mirror = ColorMap.Diverging[255 - i];
            mirror.Should().Be(new Rgb24(c.B, c.G, c.R), $"entry {i} mirrors entry {255 - i}");
        }
    }

    [Fact]
    public void Grey_is_the_identity_ramp()
    {
        for (int i = 0; i < ColorMap.Size; i++) ColorMap.Grey[i].Should().Be(new Rgb24((byte)i, (byte)i, (byte)i));
    }

    [Fact]
    public void Apply_maps_a_tensor_through_the_lut()
    {
        using var intensity = tensor(new float[] { 0f, 0.5f, 1f, 0.25f }, new long[] { 2, 2 }, dtype: ScalarType.Float64);
        using var image = ColorMap.Grey.Apply(intensity);
        image.Width.Should().Be(2);
        image.Height.Should().Be(2);
        image[0, 0].R.Should().Be(0);
        image[1, 0].R.Should().Be(128);
        image[0, 1].R.Should().Be(255);
        image[1, 1].R.Should().Be(64);
    }

    [Fact]
    public void A_custom_map_needs_256_entries()
    {
        ((Action)(() => new ColorMap("x", new Rgb24[10]))).Should().Throw<ArgumentException>();
        new ColorMap("black", new Rgb24[256]).Name.Should().Be("black");
    }
}
