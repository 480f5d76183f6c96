using RootDtd.Models;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Cli.Tests;

/// <summary>Result of an in-process run.</summary>
public sealed record CliResult(int ExitCode, string Out, string Error)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout ---\n{Out}\n--- stderr ---\n{Error}";
}

/// <summary>
/// Shared files of the CLI tests: a tiny registered ResNet ("cli-tiny-resnet", 5 classes) whose weights are saved as
/// safetensors, a labels file, test-made PNG/JPEG images and a corrupt PNG.
/// </summary>
public sealed class CliFixture : IDisposable
{
    public const string Arch = "cli-tiny-resnet";
    public const int Classes = 5;
    public const int Size = 32;
    private static readonly object Gate = new();

    public CliFixture()
    {
        Root = Directory.CreateTempSubdirectory("rootdtd-cli-").FullName;
        RegisterArch();
        Weights = Path.Combine(Root, "tiny.safetensors");
        var model = CreateTrainedLookingModel(Classes, seed: 42);
        ModelWeights.Save(model, Weights);
        model.Dispose();

        Labels = Path.Combine(Root, "labels.txt");
        File.WriteAllLines(Labels, new[] { "apple", "banana", "cherry", "date", "elderberry", "" });

        ImageDir = Path.Combine(Root, "images");
        Directory.CreateDirectory(ImageDir);
        PngA = Path.Combine(ImageDir, "alpha.png");
        JpegB = Path.Combine(ImageDir, "beta.jpg");
        PngC = Path.Combine(ImageDir, "gamma.png");
        WriteImage(PngA, 48, 40, (x, y) => new Rgb24((byte)(x * 5), (byte)(y * 6), (byte)((x + y) % 256)), jpeg: false);
        WriteImage(JpegB, 40, 56, (x, y) => new Rgb24((byte)(255 - x * 4), (byte)((x * y) % 256), 90), jpeg: true);
        WriteImage(PngC, 36, 36, (x, y) => (x / 6 + y / 6) % 2 == 0 ? new Rgb24(250, 250, 250) : new Rgb24(10, 40, 200), jpeg: false);

        Corrupt = Path.Combine(Root, "broken.png");
        var bytes = File.ReadAllBytes(PngA);
        for (var i = 40; i < bytes.Length - 20; i += 3) bytes[i] ^= 0x5A;
        File.WriteAllBytes(Corrupt, bytes);
    }

    /// <summary>Registers <see cref="Arch"/> in the model zoo (once per process; also in a child process, see <see cref="Hostile.ChildProbe"/>).</summary>
    public static void RegisterArch()
    {
        lock (Gate)
        {
            if (!ModelZoo.Contains(Arch))
                ModelZoo.Register(Arch, "tiny test ResNet (widths 4-4-8-8, one block per stage)", c => new ResNet(new[] { 1, 1, 1, 1 }, new[] { 4, 4, 8, 8 }, false, c));
        }
    }

    public string Root { get; }
    public string Weights { get; }
    public string Labels { get; }
    public string ImageDir { get; }
    public string PngA { get; }
    public string JpegB { get; }
    public string PngC { get; }
    public string Corrupt { get; }

    /// <summary>The tiny model with random weights and BatchNorm statistics (so that every parameter matters).</summary>
    public static ResNet CreateTrainedLookingModel(int classes, long seed)
    {
        torch.manual_seed(seed);
        var model = (ResNet)ModelZoo.Create(Arch, classes);
        using var _ = torch.no_grad();
        foreach (var (name, buffer) in model.named_buffers())
        {
            if (name.EndsWith("running_mean", StringComparison.Ordinal)) buffer.copy_(torch.randn_like(buffer) * 0.1);
            if (name.EndsWith("running_var", StringComparison.Ordinal)) buffer.copy_(torch.rand_like(buffer) + 0.5);
        }
        return model;
    }

    /// <summary>A saved random <c>vit-test-patch4-16</c> (5 classes, 16 px), created on first use.</summary>
    public string VitWeights
    {
        get
        {
            var path = Path.Combine(Root, "vit-test.safetensors");
            lock (Gate)
            {
                if (File.Exists(path)) return path;
                torch.manual_seed(8);
                using var vit = ModelZoo.Create("vit-test-patch4-16", Classes);
                ModelWeights.Save(vit, path);
            }
            return path;
        }
    }

    /// <summary>explain with the small ViT (16 px); extra arguments appended.</summary>
    public CliResult ExplainVit(string outDir, params string[] extra) =>
        Run(new[] { "explain", "--arch", "vit-test-patch4-16", "--weights", VitWeights, "--classes", "5", "--size", "16", "--out", outDir }.Concat(extra).ToArray());

    public string NewOutputDir() => Path.Combine(Root, "out-" + Guid.NewGuid().ToString("N")[..8]);

    public static void WriteImage(string path, int width, int height, Func<int, int, Rgb24> pixel, bool jpeg)
    {
        using var image = new Image<Rgb24>(width, height);
        for (var y = 0; y < height; y++)
            for (var x = 0; x < width; x++)
                image[x, y] = pixel(x, y);
        if (jpeg) image.SaveAsJpeg(path, new JpegEncoder { Quality = 95 });
        else image.SaveAsPng(path);
    }

    public static CliResult Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var code = CliApp.Run(args, new CliEnvironment(output, error));
        return new CliResult(code, output.ToString(), error.ToString());
    }

    /// <summary>explain with the tiny model, weights and size; extra arguments appended.</summary>
    public CliResult Explain(string outDir, params string[] extra) =>
        Run(new[] { "explain", "--arch", Arch, "--weights", Weights, "--classes", "5", "--size", "32", "--out", outDir }.Concat(extra).ToArray());

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}

[CollectionDefinition("cli")]
public sealed class CliCollection : ICollectionFixture<CliFixture>
{
}
