using FluentAssertions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Imaging.Tests;

public sealed class MaskTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A VOC-like mask: label blocks 0, 1, 15 with a 255 "ignore" border between them.</summary>
    private static byte[] VocLikeLabels(int width, int height)
    {
        var labels = new byte[width * height];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                byte label = x < width / 3 ? (byte)0 : x < 2 * width / 3 ? (byte)1 : (byte)15;
                if (Math.Abs(x - width / 3) <= 1 || Math.Abs(x - 2 * width / 3) <= 1 || y % 17 == 0) label = 255;
                labels[y * width + x] = label;
            }
        return labels;
    }

    /// <summary>A 256-colour palette with distinct colours (like VOC's bit-interleaved palette).</summary>
    private static byte[] DistinctPalette()
    {
        var palette = new byte[256 * 3];
        for (int i = 0; i < 256; i++)
        {
            int r = 0, g = 0, b = 0, c = i;
            for (int j = 0; j < 8; j++)
            {
                r |= ((c >> 0) & 1) << (7 - j);
                g |= ((c >> 1) & 1) << (7 - j);
                b |= ((c >> 2) & 1) << (7 - j);
                c >>= 3;
            }
            palette[3 * i] = (byte)r;
            palette[3 * i + 1] = (byte)g;
            palette[3 * i + 2] = (byte)b;
        }
        return palette;
    }

    [Theory]
    [InlineData(3)] // palette
    [InlineData(0)] // greyscale
    public void Mask_with_resize_and_crop_keeps_only_original_label_values(byte colorType)
    {
        const int width = 150, height = 100;
        var labels = VocLikeLabels(width, height);
        var path = _dir.Write("mask.png", TestImages.RawPng(width, height, colorType, labels, colorType == 3 ? DistinctPalette() : null));
        var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = 64, CropSize = 56 });

        using var mask = loader.LoadMask(path);
        mask.shape.Should().Equal(56, 56);
        mask.dtype.Should().Be(ScalarType.Int64);
        var values = mask.data<long>().ToArray().Distinct().OrderBy(v => v).ToArray();
        values.Should().BeSubsetOf(new long[] { 0, 1, 15, 255 });
        values.Should().Contain(new long[] { 1, 255 });
    }

    [Fact]
    public void Mask_without_resize_equals_the_cropped_label_array()
    {
        const int width = 40, height = 30;
        var labels = VocLikeLabels(width, height);
        var path = _dir.Write("mask.png", TestImages.RawPng(width, height, 3, labels, DistinctPalette()));
        var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = 20 });
        using var mask = loader.LoadMask(path, ScalarType.Byte);
        mask.dtype.Should().Be(ScalarType.Byte);
        var data = mask.data<byte>().ToArray();
        const int left = 10, top = 5; // round((40-20)/2), round((30-20)/2)
        for (int y = 0; y < 20; y++)
            for (int x = 0; x < 20; x++)
                data[y * 20 + x].Should().Be(labels[(y + top) * width + x + left]);
    }

    [Fact]
    public void Mask_follows_the_image_geometry()
    {
        // Same file decoded as image and as mask must have the same output size.
        const int width = 123, height = 77;
        var labels = VocLikeLabels(width, height);
        var path = _dir.Write("mask.png", TestImages.RawPng(width, height, 0, labels));
        var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = 50, CropSize = null });
        using var image = loader.LoadDisplayImage(path);
        using var mask = loader.LoadMask(path);
        mask.shape.Should().Equal(image.Height, image.Width);
        loader.OutputSize(width, height).Should().Be((79, 50)); // 50 * 123 / 77 = 79.87 → 79
    }

    [Fact]
    public void Rgb_mask_and_non_png_mask_are_refused()
    {
        using var rgb = TestImages.Gradient(20, 20);
        var png = _dir.Write("rgb.png", TestImages.Png(rgb));
        var jpg = _dir.Write("rgb.jpg", TestImages.Jpeg(rgb));
        var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = null });
        ((Action)(() => loader.LoadMask(png))).Should().Throw<ImageLoadException>()
            .Where(e => e.Failure == ImageLoadFailure.UnsupportedFormat && e.FilePath == png);
        ((Action)(() => loader.LoadMask(jpg))).Should().Throw<ImageLoadException>()
            .Where(e => e.Failure == ImageLoadFailure.UnsupportedFormat && e.FilePath == jpg);
        ((Action)(() => loader.LoadMask(png, ScalarType.Float32))).Should().Throw<ArgumentException>();
    }
}
