using FluentAssertions;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using RootDtd.Models;
using RootDtd.Models.Onnx;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace RootDtd.Imaging.Tests;

/// <summary>
/// The ImageNet ResNet18 of ML.NET's NuGet package, read in C#, against onnxruntime running the package's own two ONNX
/// files (preprocessing + network) on the committed photos. The package is brought into the NuGet cache by the
/// project's PackageDownload. Each test converts into its own temporary cache folder.
/// </summary>
public sealed class CntkResNet18Tests : IDisposable
{
    private readonly TempDirectory _dir = new();

    private CntkResNet18Options Options(ChannelOrder order = ChannelOrder.Rgb) => new() { CacheDirectory = _dir.Path, ChannelOrder = order };

    private static string Package => CntkResNet18.LocatePackage(new CntkResNet18Options { RestoreIfMissing = false });

    private static IReadOnlyList<string> Photos()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var images = Path.Combine(dir.FullName, "samples", "images");
            if (File.Exists(Path.Combine(dir.FullName, "RootDtd.sln")))
                return Directory.GetFiles(images).Where(f => f.EndsWith(".png", StringComparison.Ordinal) || f.EndsWith(".jpg", StringComparison.Ordinal)).Order().ToList();
        }
        throw new InvalidOperationException("RootDtd.sln not found above " + AppContext.BaseDirectory);
    }

    /// <summary>onnxruntime: RGB 0–255 [1,3,224,224] → ResNetPreprocess.onnx → ResNet18.onnx → [512].</summary>
    private static float[] OnnxRuntimeFeatures(InferenceSession prep, InferenceSession net, Tensor rgbUnit)
    {
        var pixels = rgbUnit.mul(255).to(ScalarType.Float32).contiguous().data<float>().ToArray();
        using var pre = prep.Run(new[] { NamedOnnxValue.CreateFromTensor(prep.InputMetadata.Keys.Single(), new DenseTensor<float>(pixels, new[] { 1, 3, 224, 224 })) });
        var preprocessed = pre.Single().AsTensor<float>().ToArray();
        using var output = net.Run(new[] { NamedOnnxValue.CreateFromTensor(net.InputMetadata.Keys.Single(), new DenseTensor<float>(preprocessed, new[] { 1, 3, 224, 224 })) });
        var features = output.Single().AsTensor<float>();
        features.Dimensions.ToArray().Should().Equal(1, 512, 1, 1);
        return features.ToArray();
    }

    [Theory]
    [InlineData(ChannelOrder.Rgb)]
    [InlineData(ChannelOrder.Bgr)]
    public void Features_equal_onnxruntime_on_the_photos(ChannelOrder order)
    {
        using var prep = new InferenceSession(Path.Combine(Package, CntkResNet18.PreprocessPathInPackage));
        using var net = new InferenceSession(Path.Combine(Package, CntkResNet18.ModelPathInPackage));
        var model = CntkResNet18.Create(numClasses: 3, Options(order));
        model.eval();
        var normalization = ImageNormalization.CntkResNet18(order, Options(order));
        var loader = new ImageLoader(new ImageLoadOptions { Normalization = normalization });
        var photos = Photos();
        photos.Should().HaveCount(4);
        foreach (var photo in photos)
        {
            using var scope = NewDisposeScope();
            using var image = loader.Load(photo);
            var expected = OnnxRuntimeFeatures(prep, net, image.ToUnitTensor());
            float[] actual;
            using (no_grad()) actual = model.ForwardFeatures(image.ToBatch()).data<float>().ToArray();
            var scale = expected.Max(Math.Abs);
            var error = expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max() / scale;
            error.Should().BeLessThan(1e-5f, $"{Path.GetFileName(photo)}: max |Δ| / max |f| against onnxruntime");
            scale.Should().BeGreaterThan(0.1f, "the features of a photo are not all zero");
        }
    }

    [Fact]
    public void The_converted_network_has_the_packages_structure_and_statistics()
    {
        var file = OnnxModelFile.Read(Path.Combine(Package, CntkResNet18.ModelPathInPackage));
        var import = OnnxResNetImporter.Import(file);
        try
        {
            import.Blocks.Should().Equal(2, 2, 2, 3);
            import.Widths.Should().Equal(64, 128, 256, 512);
            // Every initializer of the file is mapped: 15,908,800 values with the BatchNorm statistics, 11,648 of them running statistics.
            import.StateDict.Count.Should().Be(file.Initializers.Count);
            import.StateDict.Values.Sum(t => t.numel()).Should().Be(15_908_800).And.Be(file.Initializers.Values.Sum(i => i.ElementCount));
            import.ParameterCount.Should().Be(15_908_800 - 11_648);
            import.BatchNormEpsilon.Should().BeApproximately(1e-5, 1e-12);
        }
        finally
        {
            foreach (var t in import.StateDict.Values) t.Dispose();
        }

        using var bgr = CntkResNet18.MeanImage(Options(ChannelOrder.Bgr));
        bgr.shape.Should().Equal(3, 224, 224);
        var means = bgr.mean(new long[] { 1, 2 }).data<float>().ToArray();
        means[0].Should().BeApproximately(103.06f, 0.01f);
        means[1].Should().BeApproximately(115.90f, 0.01f);
        means[2].Should().BeApproximately(123.15f, 0.01f);
        using var rgb = CntkResNet18.MeanImage(Options(ChannelOrder.Rgb));
        Same(rgb, bgr.flip(0)).Should().BeTrue();
    }

    [Fact]
    public void Conversion_is_cached_and_a_damaged_cache_is_converted_again()
    {
        var cache = CntkResNet18.CacheFile(Options());
        File.Exists(cache).Should().BeFalse();
        var (first, firstMean) = CntkResNet18.LoadConverted(Options());
        File.Exists(cache).Should().BeTrue();
        var written = File.GetLastWriteTimeUtc(cache);
        var (second, secondMean) = CntkResNet18.LoadConverted(Options());
        File.GetLastWriteTimeUtc(cache).Should().Be(written, "the second call reads the cache");
        second.Keys.Should().BeEquivalentTo(first.Keys);
        foreach (var (k, t) in first) Same(second[k], t).Should().BeTrue(k);
        Same(secondMean, firstMean).Should().BeTrue();

        File.WriteAllText(cache, "not a safetensors file");
        var (third, _) = CntkResNet18.LoadConverted(Options());
        Same(third["layer4.2.conv2.weight"], first["layer4.2.conv2.weight"]).Should().BeTrue();
        new FileInfo(cache).Length.Should().BeGreaterThan(60_000_000);
    }

    [Fact]
    public void Normalization_subtracts_the_mean_image_and_its_bounds_follow()
    {
        var n = ImageNormalization.CntkResNet18(ChannelOrder.Bgr, Options(ChannelOrder.Bgr));
        using var mean = CntkResNet18.MeanImage(Options(ChannelOrder.Bgr));
        using var x = torch.rand(2, 3, 224, 224, generator: new Generator(3));
        using var y = n.Normalize(x);
        // BGR: channel 0 of the model's input is the blue channel (2) of the RGB image.
        using var expected = x.flip(1).mul(255).sub(mean);
        (y - expected).abs().max().item<float>().Should().BeLessThan(1e-3f);
        (n.Denormalize(y) - x).abs().max().item<float>().Should().BeLessThan(1e-5f);
        using var low = n.LowerBound(y);
        using var high = n.UpperBound(y);
        low.shape.Should().Equal(1, 3, 224, 224);
        (low + mean).abs().max().item<float>().Should().BeLessThan(1e-3f);
        (high - (255 - mean)).abs().max().item<float>().Should().BeLessThan(1e-3f);
        y.ge(low).logical_and(y.le(high)).all().item<bool>().Should().BeTrue();

        var act = () => n.Normalize(torch.rand(3, 200, 200));
        act.Should().Throw<ArgumentException>().WithMessage("*224x224 mean image*200x200*");
    }

    [Fact]
    public void A_missing_package_without_a_reachable_feed_is_a_clear_error()
    {
        var packages = Directory.CreateDirectory(Path.Combine(_dir.Path, "packages")).FullName;
        var feed = Directory.CreateDirectory(Path.Combine(_dir.Path, "empty-feed")).FullName;
        var config = _dir.Write("NuGet.Config", System.Text.Encoding.UTF8.GetBytes($"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <clear />
                <add key="empty" value="{feed}" />
              </packageSources>
            </configuration>
            """));
        var noRestore = () => CntkResNet18.Create(2, new CntkResNet18Options { PackagesDirectory = packages, CacheDirectory = _dir.Path, RestoreIfMissing = false });
        noRestore.Should().Throw<ModelWeightsException>()
            .WithMessage($"*{CntkResNet18.PackageId} {CntkResNet18.PackageVersion} is not in the NuGet cache*PackageDownload*");
        var restore = () => CntkResNet18.Create(2, new CntkResNet18Options { PackagesDirectory = packages, CacheDirectory = _dir.Path, NuGetConfigFile = config });
        restore.Should().Throw<ModelWeightsException>().WithMessage("*could not fetch it from the configured feeds*PackageDownload*dotnet restore said*");
    }

    [Fact]
    public void Corrupt_onnx_files_are_clear_errors()
    {
        var source = Path.Combine(Package, CntkResNet18.ModelPathInPackage);
        var bytes = new byte[1 << 20];
        using (var s = File.OpenRead(source)) s.ReadExactly(bytes);
        var truncated = _dir.Write("truncated.onnx", bytes);
        var read = () => OnnxModelFile.Read(truncated);
        read.Should().Throw<OnnxFormatException>().WithMessage("*truncated.onnx*not a readable ONNX file*");
        var text = _dir.Write("text.onnx", System.Text.Encoding.UTF8.GetBytes("this is not an onnx model"));
        ((Action)(() => OnnxModelFile.Read(text))).Should().Throw<OnnxFormatException>().WithMessage("*text.onnx*");
        var empty = _dir.Write("empty.onnx", Array.Empty<byte>());
        ((Action)(() => OnnxModelFile.Read(empty))).Should().Throw<OnnxFormatException>().WithMessage("*empty.onnx*empty*");
        // The preprocessing model is a valid ONNX file, but not a ResNet.
        var prep = Path.Combine(Package, CntkResNet18.PreprocessPathInPackage);
        ((Action)(() => CntkResNet18.Convert(prep, prep))).Should().Throw<OnnxFormatException>().WithMessage("*is not the expected ONNX graph*BasicBlock ResNet*");
    }

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    public void Dispose() => _dir.Dispose();
}
