using FluentAssertions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Imaging.Tests;

public sealed class ImageLoaderTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData("png")]
    [InlineData("bmp")]
    public void Normalise_then_denormalise_returns_the_original_bytes(string format)
    {
        using var source = TestImages.Noise(37, 23, seed: 1);
        var bytes = format == "png" ? TestImages.Png(source) : TestImages.Bmp(source);
        var path = _dir.Write("noise." + format, bytes);
        var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = null });

        using var loaded = loader.Load(path);
        loaded.Normalized.shape.Should().Equal(3, 23, 37);
        loaded.Normalized.dtype.Should().Be(ScalarType.Float32);

        var restored = loaded.Normalization.ToRgbBytes(loaded.Normalized);
        var original = ImageTensorConversion.GetRgbBytes(source);
        restored.Length.Should().Be(original.Length);
        for (int i = 0; i < original.Length; i++)
            Math.Abs(restored[i] - original[i]).Should().BeLessThanOrEqualTo(1, $"byte {i}");
    }

    [Fact]
    public void Normalized_values_use_the_imagenet_statistics()
    {
        using var source = new Image<Rgb24>(4, 4, new Rgb24(255, 0, 128));
        var path = _dir.Write("flat.png", TestImages.Png(source));
        using var loaded = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = null }).Load(path);
        loaded.Normalized[0, 0, 0].item<float>().Should().BeApproximately((1f - 0.485f) / 0.229f, 1e-5f);
        loaded.Normalized[1, 0, 0].item<float>().Should().BeApproximately((0f - 0.456f) / 0.224f, 1e-5f);
        loaded.Normalized[2, 0, 0].item<float>().Should().BeApproximately((128f / 255f - 0.406f) / 0.225f, 1e-5f);
    }

    [Fact]
    public void Custom_mean_and_std_are_applied_and_inverted()
    {
        var normalization = new ImageNormalization([0.5f, 0.25f, 0f], [0.5f, 2f, 1f]);
        using var source = TestImages.Noise(8, 8, seed: 2);
        using var scope = NewDisposeScope();
        var unit = ImageTensorConversion.ToUnitTensor(source);
        var normalized = normalization.Normalize(unit);
        normalized[0].allclose(unit[0].sub(0.5).div(0.5), 1e-5, 1e-6).Should().BeTrue();
        normalized[1].allclose(unit[1].sub(0.25).div(2), 1e-5, 1e-6).Should().BeTrue();
        normalization.Denormalize(normalized).allclose(unit, 1e-5, 1e-6).Should().BeTrue();
        normalization.Normalize(unit.unsqueeze(0)).shape.Should().Equal(1, 3, 8, 8);
    }

    [Fact]
    public void Centre_crop_without_resize_takes_the_torchvision_offsets()
    {
        using var source = TestImages.Coordinates(250, 200);
        var path = _dir.Write("coords.png", TestImages.Png(source));
        var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = 100, Normalization = ImageNormalization.Identity });
        using var image = loader.LoadDisplayImage(path);
        image.Width.Should().Be(100);
        image.Height.Should().Be(100);
        // left = round(75) = 75, top = round(50) = 50
        image[0, 0].Should().Be(new Rgb24(75, 50, 125));
        image[99, 99].Should().Be(new Rgb24(174, 149, 67)); // (174 + 149) mod 256
    }

    [Fact]
    public void Resize_shorter_side_then_centre_crop_keeps_the_geometry()
    {
        // 240x160, resize shorter side 80 → 120x80 (factor 1/2), crop 80 → left 20, top 0.
        using var source = TestImages.Coordinates(240, 160);
        var path = _dir.Write("coords.png", TestImages.Png(source));
        var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = 80, CropSize = 80 });
        loader.OutputSize(240, 160).Should().Be((80, 80));
        using var image = loader.LoadDisplayImage(path);
        image.Width.Should().Be(80);
        image.Height.Should().Be(80);
        for (int y = 2; y < 78; y += 5)
            for (int x = 2; x < 78; x += 5)
            {
                // Output pixel centre (x + 20 + 0.5) in the resized image maps to source coordinate 2(x + 20) + 0.5.
                image[x, y].R.Should().BeCloseTo((byte)Math.Round(2.0 * (x + 20) + 0.5), 2, $"R at ({x},{y})");
                image[x, y].G.Should().BeCloseTo((byte)Math.Round(2.0 * y + 0.5), 2, $"G at ({x},{y})");
            }
    }

    [Fact]
    public void Resize_256_crop_224_gives_224_square_for_any_aspect_ratio()
    {
        using var tall = TestImages.Gradient(300, 500);
        var path = _dir.Write("tall.jpg", TestImages.Jpeg(tall));
        var loader = new ImageLoader();
        loader.OutputSize(300, 500).Should().Be((224, 224));
        using var loaded = loader.Load(path);
        loaded.Normalized.shape.Should().Equal(3, 224, 224);
        loaded.Width.Should().Be(224);
        loaded.SourcePath.Should().Be(path);
    }

    [Fact]
    public void Resize_equal_to_crop_is_supported()
    {
        using var wide = TestImages.Gradient(400, 300);
        var path = _dir.Write("wide.png", TestImages.Png(wide));
        using var tensor = new ImageLoader(ImageLoadOptions.ResizeAndCrop(64)).LoadTensor(path);
        tensor.shape.Should().Equal(3, 64, 64);
    }

    [Fact]
    public void Batch_stacks_images_of_all_formats()
    {
        using var a = TestImages.Gradient(64, 48);
        using var b = TestImages.Noise(50, 70, seed: 3);
        var paths = new[]
        {
            _dir.Write("a.jpg", TestImages.Jpeg(a)),
            _dir.Write("b.png", TestImages.Png(b)),
            _dir.Write("c.bmp", TestImages.Bmp(a)),
        };
        using var batch = new ImageLoader(ImageLoadOptions.ResizeAndCrop(32)).LoadBatch(paths);
        batch.shape.Should().Equal(3, 3, 32, 32);
        batch.dtype.Should().Be(ScalarType.Float32);
    }

    [Fact]
    public void Batch_without_crop_refuses_different_sizes_naming_the_file()
    {
        using var a = TestImages.Gradient(64, 48);
        using var b = TestImages.Gradient(48, 64);
        var first = _dir.Write("a.png", TestImages.Png(a));
        var second = _dir.Write("b.png", TestImages.Png(b));
        var act = () => new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = null }).LoadBatch([first, second]);
        act.Should().Throw<ImageLoadException>().Where(e => e.FilePath == second && e.Failure == ImageLoadFailure.SizeMismatch);
    }

    [Fact]
    public void Unit_tensor_and_input_bounds_match_the_normalisation()
    {
        using var source = TestImages.Noise(16, 16, seed: 4);
        var path = _dir.Write("n.png", TestImages.Png(source));
        using var loaded = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = null }).Load(path);
        using var scope = NewDisposeScope();
        var unit = loaded.ToUnitTensor();
        unit.min().item<float>().Should().BeGreaterThanOrEqualTo(0f);
        unit.max().item<float>().Should().BeLessThanOrEqualTo(1f);
        loaded.Normalization.Normalize(unit).allclose(loaded.Normalized, 1e-5, 1e-5).Should().BeTrue();

        var low = loaded.LowerBound();
        var high = loaded.UpperBound();
        low.shape.Should().Equal(1, 3, 1, 1);
        low[0, 0, 0, 0].item<float>().Should().BeApproximately(-0.485f / 0.229f, 1e-6f);
        high[0, 2, 0, 0].item<float>().Should().BeApproximately((1 - 0.406f) / 0.225f, 1e-6f);
        var batch = loaded.ToBatch();
        batch.ge(low).all().item<bool>().Should().BeTrue();
        batch.le(high).all().item<bool>().Should().BeTrue();

        var like3 = loaded.Normalization.LowerBound(loaded.Normalized);
        like3.shape.Should().Equal(3, 1, 1);
        var like4 = loaded.Normalization.UpperBound(batch.to(ScalarType.Float64));
        like4.shape.Should().Equal(1, 3, 1, 1);
        like4.dtype.Should().Be(ScalarType.Float64);
    }

    [Fact]
    public void Loading_from_bytes_uses_the_source_name()
    {
        using var source = TestImages.Gradient(40, 40);
        using var loaded = new ImageLoader(ImageLoadOptions.ResizeAndCrop(20)).Load(TestImages.Png(source), "memory://x");
        loaded.SourcePath.Should().Be("memory://x");
        var act = () => new ImageLoader().Load([1, 2, 3], "memory://bad");
        act.Should().Throw<ImageLoadException>().Where(e => e.FilePath == "memory://bad" && e.Message.Contains("memory://bad"));
    }

    [Fact]
    public void Invalid_options_are_rejected()
    {
        ((Action)(() => new ImageLoader(new ImageLoadOptions { ResizeShorterSide = 100, CropSize = 200 }))).Should().Throw<ArgumentException>();
        ((Action)(() => new ImageLoader(new ImageLoadOptions { MaxPixels = 0 }))).Should().Throw<ArgumentException>();
        ((Action)(() => new ImageNormalization([0f, 0f], [1f, 1f, 1f]))).Should().Throw<ArgumentException>();
        ((Action)(() => new ImageNormalization([0f, 0f, 0f], [1f, 0f, 1f]))).Should().Throw<ArgumentException>();
    }

    [Fact]
    public void Half_normalization_maps_the_unit_range_to_minus_one_one_and_exposes_broadcastable_channel_tensors()
    {
        using var scope = torch.NewDisposeScope();
        var half = ImageNormalization.Half;
        half.Channels.Should().Be(3);
        var x = torch.tensor(new[] { 0f, 0.25f, 1f }).view(1, 3, 1, 1);
        half.Normalize(x).data<float>().ToArray().Should().Equal(-1f, -0.5f, 1f);
        half.LowerBound().data<float>().ToArray().Should().Equal(-1f, -1f, -1f);
        var mean = ImageNormalization.ImageNet.MeanTensor(ScalarType.Float64, torch.CPU);
        mean.shape.Should().Equal(1, 3, 1, 1);
        mean.dtype.Should().Be(ScalarType.Float64);
        mean.data<double>().ToArray().Should().Equal(0.485f, 0.456f, 0.406f);
        var std = ImageNormalization.ImageNet.StdTensor(ScalarType.Float32, torch.CPU);
        // (x − mean)/std through the tensors equals Normalize
        var y = torch.rand(2, 3, 4, 4);
        ((y - ImageNormalization.ImageNet.MeanTensor(ScalarType.Float32, torch.CPU)) / std).allclose(ImageNormalization.ImageNet.Normalize(y)).Should().BeTrue();
    }

    [Fact]
    public void Image_smaller_than_the_crop_is_refused()
    {
        using var small = TestImages.Gradient(50, 30);
        var path = _dir.Write("small.png", TestImages.Png(small));
        var act = () => new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = 40 }).Load(path);
        act.Should().Throw<ImageLoadException>().Where(e => e.Failure == ImageLoadFailure.TooSmall && e.FilePath == path);
    }

    [Fact]
    public void Loading_disposes_its_temporary_tensors()
    {
        using var source = TestImages.Gradient(64, 64);
        var path = _dir.Write("g.png", TestImages.Png(source));
        var loader = new ImageLoader(ImageLoadOptions.ResizeAndCrop(32));
        using (loader.Load(path)) { }
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 5; i++)
        {
            using (loader.Load(path)) { }
            loader.LoadTensor(path).Dispose();
            loader.LoadMaskSafe(_dir);
        }
        DisposeScopeManager.Statistics.ThreadTotalLiveCount.Should().Be(before);
    }
}

internal static class LoaderTestExtensions
{
    public static void LoadMaskSafe(this ImageLoader loader, TempDirectory dir)
    {
        var samples = new byte[64 * 64];
        var path = dir.Write("m.png", TestImages.RawPng(64, 64, 0, samples));
        loader.LoadMask(path).Dispose();
    }
}
