// Makes docs/gallery.md's figure: the four committed photos explained through a prototype head on the ImageNet
// ResNet18 of ML.NET's NuGet package (resnet18-imagenet-cntk), one column per method, rendered as the paper's Figure 1
// (raw relevance, mean cropping, Turbo).
//   dotnet run -c Release --project tools/RootDtd.Gallery -- [--images samples/images] [--out docs/gallery]
// Also writes the synthetic benchmark data as an image folder with masks (for docs/benchmark/imagenet-backbone.md):
//   dotnet run -c Release --project tools/RootDtd.Gallery -- synthetic-folder --out DIR [--size 224] [--train 120] [--test 60]
using System.Diagnostics;
using System.Globalization;
using RootDtd;
using RootDtd.Composites;
using RootDtd.Evaluation.Data;
using RootDtd.Evaluation.Training;
using RootDtd.Imaging;
using RootDtd.Models;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

if (args.Length > 0 && args[0] == "synthetic-folder") return SyntheticFolder.Write(args[1..]);

var imagesDir = "samples/images";
var outDir = "docs/gallery";
for (var i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--images": imagesDir = args[++i]; break;
        case "--out": outDir = args[++i]; break;
        default: Console.Error.WriteLine($"unknown argument '{args[i]}' (use --images DIR, --out DIR)"); return 2;
    }
}

string[] methods = { "root", "root-upper-half", "root-published", "zplus", "epsilon-plus-flat", "epsilon-gamma-box", "gradient-x-input" };
var inv = CultureInfo.InvariantCulture;
var folder = ImageFolder.Scan(imagesDir, looseImagesAreClasses: true);
var normalization = ImageNormalization.CntkResNet18();
var loader = new ImageLoader(new ImageLoadOptions { Normalization = normalization });
using var model = CntkResNet18.Create(folder.ClassNames.Count);
var head = BackboneHeads.BuildPrototypes(model, loader, folder, CntkResNet18.ModelName);
model.eval();
Console.WriteLine(head);
Directory.CreateDirectory(outDir);

var loaded = folder.Items.Select(item => loader.Load(item.Path)).ToList();
using var batch = stack(loaded.Select(l => l.Normalized).ToList());
var targets = folder.Items.Select(item => (long)item.Label).ToArray();
using var low = normalization.LowerBound();
using var high = normalization.UpperBound();
var heatmaps = new Dictionary<string, Tensor>();
var lines = new List<string>();
using (no_grad())
{
    using var logits = model.forward(batch);
    var predicted = logits.argmax(1).data<long>().ToArray();
    for (var i = 0; i < predicted.Length; i++)
        lines.Add(string.Create(inv, $"{folder.ClassNames[(int)targets[i]]}: predicted {folder.ClassNames[(int)predicted[i]]}, logits {string.Join(" ", logits[i].data<float>().ToArray().Select(v => v.ToString("F1", inv)))}"));
}
foreach (var method in methods)
{
    var watch = Stopwatch.StartNew();
    using var explainer = new Explainer(model, MethodCatalog.Parse(method), new ExplainerOptions { InputLow = low, InputHigh = high });
    using var e = explainer.Explain(batch, targets);
    heatmaps[method] = e.Heatmap.detach().clone();
    var h = e.Heatmap.reshape(e.Heatmap.shape[0], -1);
    var positive = h.clamp_min(0).sum(1) / h.abs().sum(1).clamp_min(1e-30);
    lines.Add(string.Create(inv,
        $"{method}: {watch.Elapsed.TotalSeconds:F1} s for {targets.Length} images; conservation error {e.Conservation.MaxRelativeError:G3}; positive share {string.Join(" ", positive.data<float>().ToArray().Select(v => v.ToString("F2", inv)))}"));
    Console.WriteLine(lines[^1]);
}

// One row per photo: the photo, then each method's heatmap (paper style: raw relevance, mean cropping, Turbo).
var grid = new ImageGrid(methods.Length + 1) { TitleScale = 1, Padding = 4 };
var keep = new List<Image<Rgb24>>();
for (var i = 0; i < loaded.Count; i++)
{
    grid.Add(loaded[i].DisplayImage, i == 0 ? "photo" : null);
    foreach (var method in methods)
    {
        var image = HeatmapRenderer.Render(heatmaps[method][i], HeatmapOptions.Paper);
        keep.Add(image);
        grid.Add(image, i == 0 ? method : null);
    }
}
using (var figure = grid.Render()) figure.SaveAsPng(Path.Combine(outDir, "gallery.png"));
File.WriteAllLines(Path.Combine(outDir, "gallery.txt"), new[] { head.ToString() }.Concat(lines));
Console.WriteLine($"wrote {Path.Combine(outDir, "gallery.png")}");
foreach (var image in keep) image.Dispose();
foreach (var l in loaded) l.Dispose();
foreach (var t in heatmaps.Values) t.Dispose();
return 0;

/// <summary>The synthetic shapes as image folders: DIR/train/CLASS/*.png, DIR/test/CLASS/*.png and DIR/masks/CLASS/*.png (0 background, label+1 object).</summary>
internal static class SyntheticFolder
{
    public static int Write(string[] args)
    {
        string? outDir = null;
        int size = 224, train = 120, test = 60, trainSeed = 1000, testSeed = 4242;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--out": outDir = args[++i]; break;
                case "--size": size = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--train": train = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--test": test = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                default: Console.Error.WriteLine($"unknown argument '{args[i]}' (use --out DIR, --size N, --train N, --test N)"); return 2;
            }
        }
        if (outDir is null) { Console.Error.WriteLine("synthetic-folder needs --out DIR"); return 2; }
        var generator = new RootDtd.Evaluation.Synthetic.SyntheticDatasetGenerator(SyntheticModels.DataOptions(size));
        var names = RootDtd.Evaluation.Synthetic.SyntheticDatasetGenerator.AllClasses.Select(c => c.Name).ToList();
        foreach (var (split, seed, count) in new[] { ("train", trainSeed, train), ("test", testSeed, test) })
        {
            foreach (var image in generator.GenerateMany(seed, count))
            {
                var name = names[image.Label];
                var stem = string.Create(CultureInfo.InvariantCulture, $"{split}{image.Index:D4}");
                Directory.CreateDirectory(Path.Combine(outDir, split, name));
                using (var rgb = Image.LoadPixelData<Rgb24>(image.Pixels, image.Width, image.Height)) rgb.SaveAsPng(Path.Combine(outDir, split, name, stem + ".png"));
                if (split != "test") continue;
                Directory.CreateDirectory(Path.Combine(outDir, "masks", name));
                using var mask = Image.LoadPixelData<L8>(image.Mask, image.Width, image.Height);
                mask.SaveAsPng(Path.Combine(outDir, "masks", name, stem + ".png"), new SixLabors.ImageSharp.Formats.Png.PngEncoder
                {
                    ColorType = SixLabors.ImageSharp.Formats.Png.PngColorType.Grayscale, BitDepth = SixLabors.ImageSharp.Formats.Png.PngBitDepth.Bit8,
                });
            }
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"wrote {train} training and {test} test images ({size}×{size}, masks for the test images) to {outDir}"));
        return 0;
    }
}
