using System.Text.Json;
using FluentAssertions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace RootDtd.Cli.Tests;

/// <summary><c>rootdtd evaluate --data FOLDER</c> on the tiny CLI model and a generated image folder with masks.</summary>
[Collection("cli")]
public sealed class EvaluateFolderTests
{
    private readonly CliFixture _fx;

    public EvaluateFolderTests(CliFixture fx) => _fx = fx;

    private static void WriteMask(string path, int size, int x0, int y0, int side)
    {
        using var mask = new Image<L8>(size, size);
        for (var y = 0; y < size; y++)
            for (var x = 0; x < size; x++)
                mask[x, y] = new L8((byte)(x >= x0 && x < x0 + side && y >= y0 && y < y0 + side ? 1 : 0));
        mask.SaveAsPng(path, new PngEncoder { ColorType = PngColorType.Grayscale, BitDepth = PngBitDepth.Bit8 });
    }

    /// <summary>Classes "0" and "3" (folder names are class indices), squares of a class colour, one mask per image.</summary>
    private (string Data, string Masks) MakeFolder(string name)
    {
        var root = Path.Combine(_fx.Root, name);
        var rng = new Random(9);
        foreach (var cls in new[] { "0", "3" })
        {
            Directory.CreateDirectory(Path.Combine(root, "data", cls));
            Directory.CreateDirectory(Path.Combine(root, "masks", cls));
            for (var i = 0; i < 3; i++)
            {
                int x0 = rng.Next(2, 14), y0 = rng.Next(2, 14), side = 14;
                var colour = cls == "0" ? new Rgb24(220, 40, 40) : new Rgb24(40, 60, 220);
                CliFixture.WriteImage(Path.Combine(root, "data", cls, $"img{cls}{i}.png"), 32, 32,
                    (x, y) => x >= x0 && x < x0 + side && y >= y0 && y < y0 + side ? colour : new Rgb24(128, 128, 128), jpeg: false);
                WriteMask(Path.Combine(root, "masks", cls, $"img{cls}{i}.png"), 32, x0, y0, side);
            }
        }
        return (Path.Combine(root, "data"), Path.Combine(root, "masks"));
    }

    private CliResult Evaluate(string data, string output, params string[] extra) => CliFixture.Run(new[]
    {
        "evaluate", "--data", data, "--arch", CliFixture.Arch, "--weights", _fx.Weights, "--classes", "5", "--size", "32",
        "--methods", "gradient", "--gallery", "0", "--batch", "4", "--out", output,
    }.Concat(extra).ToArray());

    [Fact]
    public void Any_model_on_an_image_folder_with_masks_reports_what_it_skipped()
    {
        var (data, masks) = MakeFolder("eval-masks");
        // One mask of the wrong size, one missing.
        WriteMask(Path.Combine(masks, "0", "img00.png"), 20, 1, 1, 5);
        File.Delete(Path.Combine(masks, "3", "img31.png"));
        var output = _fx.NewOutputDir();
        var r = Evaluate(data, output, "--masks", masks, "--protocols", "perturbation,localisation");
        r.ExitCode.Should().Be(0, r.ToString());
        r.Error.Should().Contain("img00.png").And.Contain("is 20×20, the image is 32×32");
        r.Error.Should().Contain("skipped").And.Contain("img31.png': no mask");
        r.Out.Should().Contain(": 4 images");
        var md = File.ReadAllText(Directory.GetFiles(output, "*.md").Single());
        md.Should().Contain("data note: skipped").And.Contain("a mask must have the image's size");
        using var json = JsonDocument.Parse(File.ReadAllText(Directory.GetFiles(output, "*.json").Single()));
        json.RootElement.ToString().Should().Contain("IoU", "localisation was measured with the masks");
    }

    [Fact]
    public void Localisation_without_masks_is_refused_and_perturbation_runs_without_them()
    {
        var (data, _) = MakeFolder("eval-nomasks");
        var r = Evaluate(data, _fx.NewOutputDir(), "--protocols", "localisation");
        r.ExitCode.Should().Be(2, r.ToString());
        r.Error.Should().Contain("Localisation needs masks");

        var output = _fx.NewOutputDir();
        r = Evaluate(data, output, "--protocols", "perturbation");
        r.ExitCode.Should().Be(0, r.ToString());
        r.Out.Should().Contain(": 6 images");
        File.ReadAllText(Directory.GetFiles(output, "*.md").Single()).Should().Contain("AUC+ coarse", "the perturbation table is there");
    }

    [Fact]
    public void Folders_without_images_and_one_image_classes_are_said_so()
    {
        var empty = Directory.CreateDirectory(Path.Combine(_fx.Root, "eval-empty", "cats")).Parent!.FullName;
        var r = Evaluate(empty, _fx.NewOutputDir(), "--protocols", "perturbation");
        r.ExitCode.Should().Be(2, r.ToString());
        r.Error.Should().Contain("has no images");

        var (data, _) = MakeFolder("eval-single");
        foreach (var f in Directory.GetFiles(Path.Combine(data, "3")).Skip(1)) File.Delete(f);
        r = Evaluate(data, _fx.NewOutputDir(), "--protocols", "perturbation");
        r.ExitCode.Should().Be(0, r.ToString());
        r.Error.Should().Contain("class '3' has one image");

        r = Evaluate(data, _fx.NewOutputDir(), "--protocols", "perturbation", "--labels", _fx.Labels);
        r.ExitCode.Should().Be(2);
        r.Error.Should().Contain("class folder '0' is not a class of --labels");
    }
}
