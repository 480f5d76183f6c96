using System.Text.Json;
using FluentAssertions;
using RootDtd.Imaging;
using RootDtd.Models;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Cli.Tests;

/// <summary>
/// <c>rootdtd train --backbone resnet18-imagenet-cntk</c>: a linear probe and a prototype head on the frozen ImageNet
/// backbone, from tiny image folders made here; the written weights are a normal model file that <c>explain</c> takes.
/// </summary>
public sealed class HeadCommandTests : IDisposable
{
    private const string Backbone = CntkResNet18.ModelName;
    private readonly string _root = Directory.CreateTempSubdirectory("rootdtd-heads-").FullName;

    /// <summary>Warm discs on a light background, or cool stripes; varied by a seeded generator.</summary>
    private static void WriteSample(string path, bool warm, Random rng)
    {
        var cx = rng.Next(20, 44);
        var cy = rng.Next(20, 44);
        var r = rng.Next(10, 18);
        var phase = rng.Next(0, 8);
        CliFixture.WriteImage(path, 64, 64, (x, y) => warm
            ? ((x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r ? new Rgb24(230, (byte)(80 + phase * 10), 30) : new Rgb24(240, 235, 220))
            : ((x + phase) / 4 % 2 == 0 ? new Rgb24(20, 60, 200) : new Rgb24(180, 220, 250)), jpeg: false);
    }

    private string MakeFolder(string name, int perClass, int seed)
    {
        var rng = new Random(seed);
        var dir = Path.Combine(_root, name);
        foreach (var (cls, warm) in new[] { ("warm", true), ("cool", false) })
        {
            Directory.CreateDirectory(Path.Combine(dir, cls));
            for (var i = 0; i < perClass; i++) WriteSample(Path.Combine(dir, cls, $"{cls}{i}.png"), warm, rng);
        }
        return dir;
    }

    private static ImageLoader Loader() => new(new ImageLoadOptions { Normalization = ImageNormalization.CntkResNet18() });

    [Fact]
    public void Linear_probe_reports_a_held_out_accuracy_that_the_written_model_reproduces_and_explain_takes_it()
    {
        var data = MakeFolder("linear", perClass: 5, seed: 7);
        var weights = Path.Combine(_root, "probe", "probe.safetensors");
        var result = CliFixture.Run("train", "--backbone", Backbone, "--data", data, "--out", weights, "--holdout", "0.4");
        result.ExitCode.Should().Be(0, result.ToString());
        result.Out.Should().Contain("linear head on resnet18-imagenet-cntk: 2 classes, 6 fitting images").And.Contain("4 held out");

        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(_root, "probe", "probe.json")));
        var heldOut = report.RootElement.GetProperty("held_out").EnumerateArray().Select(e => e.GetString()!).ToList();
        heldOut.Should().HaveCount(4);
        var reported = report.RootElement.GetProperty("held_out_accuracy").GetDouble();
        File.ReadAllLines(Path.Combine(_root, "probe", "probe.labels.txt")).Should().Equal("cool", "warm");

        // The file is a normal state dict of the zoo model; its backbone is the pretrained one, unchanged.
        using var model = (ResNet)ModelZoo.Create(Backbone, 2);
        using var reference = CntkResNet18.Create(2);
        ModelWeights.Load(model, weights);
        model.eval();
        model.get_parameter("layer4.2.conv2.weight")!.eq(reference.get_parameter("layer4.2.conv2.weight")!).all().item<bool>().Should().BeTrue();
        using var batch = Loader().LoadBatch(heldOut);
        Tensor predicted;
        using (no_grad()) predicted = model.forward(batch).argmax(1);
        var labels = heldOut.Select(p => Path.GetFileName(Path.GetDirectoryName(p)) == "cool" ? 0L : 1L).ToArray();
        var accuracy = predicted.data<long>().ToArray().Zip(labels, (p, l) => p == l ? 1.0 : 0.0).Average();
        accuracy.Should().BeApproximately(reported, 1e-9);
        accuracy.Should().Be(1.0, "discs and stripes are easy for ImageNet features");

        var outDir = Path.Combine(_root, "explained");
        var explain = CliFixture.Run("explain", heldOut[0], "--arch", Backbone, "--weights", weights, "--labels", Path.Combine(_root, "probe", "probe.labels.txt"),
            "--method", "epsilon-plus-flat", "--out", outDir);
        explain.ExitCode.Should().Be(0, explain.ToString());
        Directory.GetFiles(outDir, "*.heatmap.png").Should().HaveCount(1);
    }

    [Fact]
    public void Prototype_head_rows_are_the_normalised_mean_features_and_each_loose_image_is_its_own_class()
    {
        var dir = Path.Combine(_root, "protos");
        Directory.CreateDirectory(Path.Combine(dir, "stripes"));
        var rng = new Random(3);
        WriteSample(Path.Combine(dir, "disc.png"), true, rng);
        WriteSample(Path.Combine(dir, "other.png"), false, rng);
        WriteSample(Path.Combine(dir, "stripes", "a.png"), false, rng);
        WriteSample(Path.Combine(dir, "stripes", "b.png"), false, rng);
        File.WriteAllText(Path.Combine(dir, "readme.txt"), "not an image");
        var weights = Path.Combine(_root, "protos.safetensors");
        var result = CliFixture.Run("train", "--backbone", Backbone, "--head", "prototypes:" + dir, "--out", weights);
        result.ExitCode.Should().Be(0, result.ToString());
        result.Out.Should().Contain("prototypes head on resnet18-imagenet-cntk: 3 classes");
        File.ReadAllLines(Path.Combine(_root, "protos.labels.txt")).Should().Equal("stripes", "disc", "other");

        using var model = (ResNet)ModelZoo.Create(Backbone, 3);
        ModelWeights.Load(model, weights);
        model.eval();
        var loader = Loader();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Tensor Features(params string[] files) => model.ForwardFeatures(loader.LoadBatch(files.Select(f => Path.Combine(dir, f))));
        var stripes = Features("stripes/a.png", "stripes/b.png").mean(new long[] { 0 });
        var expected = stack(new[] { stripes, Features("disc.png")[0], Features("other.png")[0] });
        expected = expected / expected.norm(1, keepdim: true);
        (model.Head.weight! - expected).abs().max().item<float>().Should().BeLessThan(1e-5f);
        model.Head.weight!.norm(1).sub(1).abs().max().item<float>().Should().BeLessThan(1e-5f);
        model.Head.bias!.abs().max().item<float>().Should().Be(0);
        model.forward(loader.LoadBatch(new[] { "disc.png", "other.png" }.Select(f => Path.Combine(dir, f)))).argmax(1).data<long>().ToArray().Should().Equal(1, 2);
    }

    [Fact]
    public void Bad_folders_and_heads_are_clear_errors()
    {
        var empty = Directory.CreateDirectory(Path.Combine(_root, "empty")).FullName;
        Directory.CreateDirectory(Path.Combine(empty, "cats"));
        var r = CliFixture.Run("train", "--backbone", Backbone, "--data", empty, "--out", Path.Combine(_root, "x.safetensors"));
        r.ExitCode.Should().Be(2, r.ToString());
        r.Error.Should().Contain("has no images").And.Contain("one subfolder per class");

        r = CliFixture.Run("train", "--backbone", Backbone, "--head", "centroids", "--out", Path.Combine(_root, "x.safetensors"));
        r.ExitCode.Should().Be(2);
        r.Error.Should().Contain("--head must be linear or prototypes:FOLDER");

        r = CliFixture.Run("train", "--backbone", "vgg11", "--data", MakeFolder("vggdata", 2, 1), "--out", Path.Combine(_root, "x.safetensors"));
        r.ExitCode.Should().Be(2);
        r.Error.Should().Contain("must be a ResNet zoo model");

        // A class folder with one image is fitted on and said so; nothing of it is held out.
        var data = MakeFolder("single", perClass: 3, seed: 2);
        foreach (var f in Directory.GetFiles(Path.Combine(data, "cool")).Skip(1)) File.Delete(f);
        r = CliFixture.Run("train", "--backbone", Backbone, "--data", data, "--out", Path.Combine(_root, "single.safetensors"), "--steps", "50");
        r.ExitCode.Should().Be(0, r.ToString());
        r.Error.Should().Contain("class 'cool' has one image: it is used for fitting only");
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
