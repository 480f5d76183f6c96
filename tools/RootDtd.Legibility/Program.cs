using System.Globalization;
using RootDtd;
using RootDtd.Composites;
using RootDtd.Evaluation.Training;
using RootDtd.Imaging;
using RootDtd.Models;
using RootDtd.Native;
using TorchSharp;
using static TorchSharp.torch;

// How legible each method's heatmap is with a given rendering: the fraction of pixels in the darkest tenth of the
// colour map (Turbo's dark-blue band; for signed maps the white band around 0), per method, averaged over the photos.
//   dotnet run -c Release --project tools/RootDtd.Legibility -- PHOTO_DIR [--model synthetic-resnet|resnet18] [--methods a,b]
// synthetic-resnet: the committed trained model (64×64 inputs); resnet18: random weights (seed 0), 224×224.

TorchSharpNative.EnsureLoadable();
if (args.Length < 1) { Console.Error.WriteLine("usage: PHOTO_DIR [--model synthetic-resnet|resnet18] [--methods a,b]"); return 2; }
var photoDir = args[0];
string modelName = "synthetic-resnet";
string? methodList = null;
for (var i = 1; i < args.Length - 1; i++)
{
    if (args[i] == "--model") modelName = args[++i];
    else if (args[i] == "--methods") methodList = args[++i];
}
torch.manual_seed(0);
nn.Module<Tensor, Tensor> model;
ImageLoadOptions load;
if (modelName == "synthetic-resnet")
{
    model = SyntheticModels.Load(SyntheticArchitecture.ResNet);
    load = ImageLoadOptions.ResizeAndCrop(SyntheticModels.ImageSize) with { Normalization = SyntheticModels.Normalization };
}
else
{
    model = ModelZoo.Create(modelName, 1000);
    load = ImageLoadOptions.ImageNet;
}
model.eval();
var photos = Directory.EnumerateFiles(photoDir).Where(f => f.EndsWith(".png", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".jpg", StringComparison.OrdinalIgnoreCase)).Order().ToList();
var loader = new ImageLoader(load);
var images = photos.Select(loader.Load).ToList();
using var batch = torch.stack(images.Select(i => i.Normalized).ToArray());
using var low = load.Normalization.LowerBound();
using var high = load.Normalization.UpperBound();
var methods = methodList is null ? MethodCatalog.All.Select(m => m.Name).ToList() : methodList.Split(',').ToList();
var renderings = new (string Name, Func<string, HeatmapOptions> Options)[]
{
    ("min-max |R|", _ => HeatmapOptions.Default with { ClipPercentile = null }),
    ("paper", _ => HeatmapOptions.Paper),
    ("clip 99.5", _ => HeatmapOptions.Default with { ClipPercentile = 99.5 }),
    ("clip 99", _ => HeatmapOptions.Default with { ClipPercentile = 99 }),
    ("clip 98", _ => HeatmapOptions.Default with { ClipPercentile = 98 }),
    ("clip 95", _ => HeatmapOptions.Default with { ClipPercentile = 95 }),
    ("method default", m => HeatmapDefaults.For(m)),
};
Console.WriteLine($"model {modelName}, {photos.Count} photos ({string.Join(", ", photos.Select(Path.GetFileName))}); dark fraction = pixels with intensity < {HeatmapRenderer.DarkBandLimit:0.0#} (mean over photos)");
Console.WriteLine();
Console.WriteLine("| method | zero pixels | " + string.Join(" | ", renderings.Select(r => r.Name)) + " |");
Console.WriteLine("|---|---:|" + string.Concat(renderings.Select(_ => "---:|")));
foreach (var name in methods)
{
    using var scope = torch.NewDisposeScope();
    using var explainer = new Explainer(model, MethodCatalog.Parse(name), new ExplainerOptions { InputLow = low, InputHigh = high });
    using var e = explainer.Explain(batch);
    var cells = renderings.Select(r => Enumerable.Range(0, photos.Count).Average(k => HeatmapRenderer.DarkBandFraction(e.Heatmap[k], r.Options(name))));
    var zero = Enumerable.Range(0, photos.Count).Average(k =>
    {
        var map = e.Heatmap[k].abs();
        return (map <= 1e-6 * map.max()).to(ScalarType.Float32).mean().item<float>();
    });
    Console.WriteLine($"| {name} | {100 * zero:0} % | " + string.Join(" | ", cells.Select(c => (100 * c).ToString("0", CultureInfo.InvariantCulture) + " %")) + " |");
}
foreach (var i in images) i.Dispose();
return 0;
