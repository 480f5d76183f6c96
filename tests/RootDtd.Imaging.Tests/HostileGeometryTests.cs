using FluentAssertions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using Xunit;

namespace RootDtd.Imaging.Tests;

/// <summary>
/// The loader computes only the pixels of the centre crop (so a long strip does not become gigabytes) and refuses
/// absurd aspect ratios; the pixels are the same as resizing the whole image and then cropping.
/// </summary>
public sealed class HostileGeometryTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(97, 61, 40, 32)]
    [InlineData(61, 97, 40, 32)]
    [InlineData(300, 200, 64, 56)]
    [InlineData(20, 30, 64, 64)] // upscaling
    public void Cropped_resize_equals_full_resize_then_crop(int width, int height, int resize, int crop)
    {
        using var source = TestImages.Noise(width, height, seed: width * 31 + height);
        var path = _dir.Write($"n{width}x{height}.png", TestImages.Png(source));
        var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = resize, CropSize = crop });
        using var loaded = loader.LoadDisplayImage(path);

        // Reference: the full resize (torchvision sizes), then the centre crop.
        int rw = width <= height ? resize : resize * width / height;
        int rh = width <= height ? resize * height / width : resize;
        int left = (int)Math.Round((rw - crop) / 2.0, MidpointRounding.ToEven);
        int top = (int)Math.Round((rh - crop) / 2.0, MidpointRounding.ToEven);
        using var reference = source.Clone(c => c
            .Resize(new ResizeOptions { Size = new Size(rw, rh), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Triangle })
            .Crop(new Rectangle(left, top, crop, crop)));

        loaded.Width.Should().Be(crop);
        loaded.Height.Should().Be(crop);
        int differing = 0, maxDifference = 0;
        for (int y = 0; y < crop; y++)
            for (int x = 0; x < crop; x++)
            {
                Rgb24 a = loaded[x, y], b = reference[x, y];
                int d = Math.Max(Math.Abs(a.R - b.R), Math.Max(Math.Abs(a.G - b.G), Math.Abs(a.B - b.B)));
                if (d > 0) differing++;
                maxDifference = Math.Max(maxDifference, d);
            }
        maxDifference.Should().Be(0, $"{differing} pixels differ");
    }

    [Fact]
    public void A_strip_is_refused_before_decoding_with_its_aspect_ratio()
    {
        using var strip = new Image<Rgb24>(4096, 2);
        var path = _dir.Write("strip.png", TestImages.Png(strip));
        var loader = new ImageLoader();
        var error = FluentActions.Invoking(() => loader.Load(path)).Should().Throw<ImageLoadException>().Which;
        error.Failure.Should().Be(ImageLoadFailure.TooLarge);
        error.Message.Should().Contain(path).And.Contain("4096x2").And.Contain("2048:1").And.Contain("MaxAspectRatio");
        FluentActions.Invoking(() => loader.OutputSize(4096, 2)).Should().Throw<ImageLoadException>().WithMessage("*aspect ratio*");
        // Within the limit, the same loader accepts it.
        new ImageLoader(ImageLoadOptions.ImageNet with { MaxAspectRatio = 4096 }).OutputSize(4096, 2).Should().Be((224, 224));
    }

    [Fact]
    public void An_output_larger_than_MaxPixels_is_refused()
    {
        // No crop: the resized image itself is the output; 64 × 64 upscaled to 8192 × 8192 = 67 M pixels.
        var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = 8192, CropSize = null });
        FluentActions.Invoking(() => loader.OutputSize(64, 64)).Should().Throw<ImageLoadException>()
            .Where(e => e.Failure == ImageLoadFailure.TooLarge).WithMessage("*8192x8192*MaxPixels*");
    }

    [Fact]
    public void MaxAspectRatio_is_validated()
    {
        FluentActions.Invoking(() => new ImageLoader(new ImageLoadOptions { MaxAspectRatio = 0.5 })).Should().Throw<ArgumentException>().WithMessage("*MaxAspectRatio*");
        FluentActions.Invoking(() => new ImageLoader(new ImageLoadOptions { MaxAspectRatio = double.NaN })).Should().Throw<ArgumentException>().WithMessage("*MaxAspectRatio*");
    }

    [Fact]
    public void Ancillary_png_chunks_are_dropped_before_decoding()
    {
        using var image = TestImages.Noise(12, 10, seed: 5);
        var plain = TestImages.Png(image);
        // Insert a tEXt chunk with garbage compression and an unknown ancillary chunk after IHDR (byte 33).
        var text = PngChunk("zTXt", "Comment\0\0"u8.ToArray().Concat(new byte[] { 1, 2, 3, 4, 5 }).ToArray());
        var unknown = PngChunk("abCd", new byte[100]);
        var dressed = plain[..33].Concat(text).Concat(unknown).Concat(plain[33..]).ToArray();
        var stripped = ImageFileFormat.StripAncillaryPngChunks(plain);
        ImageFileFormat.StripAncillaryPngChunks(dressed).Should().Equal(stripped);
        ImageFileFormat.StripAncillaryPngChunks(stripped).Should().BeSameAs(stripped, "nothing is left to drop");
        var loader = new ImageLoader(ImageLoadOptions.ResizeAndCrop(10));
        using var a = loader.LoadDisplayImage(_dir.Write("plain.png", plain));
        using var b = loader.LoadDisplayImage(_dir.Write("dressed.png", dressed));
        ImageTensorConversion.GetRgbBytes(a).Should().Equal(ImageTensorConversion.GetRgbBytes(b));
    }

    private static byte[] PngChunk(string type, byte[] body)
    {
        var typed = System.Text.Encoding.ASCII.GetBytes(type).Concat(body).ToArray();
        var result = new byte[12 + body.Length];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(result, (uint)body.Length);
        typed.CopyTo(result, 4);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(result.AsSpan(8 + body.Length), ImageFileFormat.Crc32(typed));
        return result;
    }
}
