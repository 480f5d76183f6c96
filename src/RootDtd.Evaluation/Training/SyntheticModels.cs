using System.Globalization;
using System.Text.Json;
using RootDtd.Evaluation.Synthetic;
using RootDtd.Models;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Training;

/// <summary>Architecture family of a synthetic-benchmark model.</summary>
public enum SyntheticArchitecture
{
    /// <summary>A small torchvision-style ResNet (BasicBlock 1-1-1-1, widths 16-32-64-64, BatchNorm).</summary>
    ResNet,

    /// <summary>A small VGG-style network with BatchNorm (convs 16-M-32-M-64-M-64-M, global average pool, hidden 64).</summary>
    Vgg,

    /// <summary>
    /// A small Vision Transformer in timm's layout (<see cref="VisionTransformer"/>): patch 8 on the 64² images (8×8
    /// patches + class token = 65 tokens), width 64, 4 blocks, 4 heads (head width 16), MLP ratio 2 (hidden 128), LayerNorm, exact GELU.
    /// </summary>
    Vit,
}

/// <summary>
/// The trained classifiers of the synthetic benchmark: the exact constructors, the data settings they were trained with,
/// and loading of the committed weights in <c>models/</c>.
/// </summary>
public static class SyntheticModels
{
    /// <summary>Name of the committed ResNet weights (without extension).</summary>
    public const string ResNetName = "synthetic-resnet";

    /// <summary>Name of the committed VGG weights (without extension).</summary>
    public const string VggName = "synthetic-vgg";

    /// <summary>Name of the committed ViT weights (without extension).</summary>
    public const string VitName = "synthetic-vit";

    /// <summary>Every committed synthetic model, in report order.</summary>
    public static IReadOnlyList<SyntheticArchitecture> Architectures { get; } = new[] { SyntheticArchitecture.ResNet, SyntheticArchitecture.Vgg, SyntheticArchitecture.Vit };

    /// <summary>The shape of the synthetic ViT (<see cref="SyntheticArchitecture.Vit"/>, <see cref="VisionTransformer.SyntheticPatch8Options"/>) for <paramref name="numClasses"/> classes.</summary>
    /// <param name="numClasses">Number of classes.</param>
    /// <param name="imageSize">Image side (a multiple of the patch size 8).</param>
    /// <returns>The options.</returns>
    public static VisionTransformerOptions VitOptions(int numClasses = ClassCount, int imageSize = ImageSize) => VisionTransformer.SyntheticPatch8Options(numClasses, imageSize);

    /// <summary>Environment variable that overrides the search for the <c>models/</c> folder.</summary>
    public const string ModelsDirectoryVariable = "ROOTDTD_MODELS_DIR";

    /// <summary>Image side the committed models were trained on.</summary>
    public const int ImageSize = 64;

    /// <summary>Number of classes of the committed models (all six synthetic classes).</summary>
    public const int ClassCount = 6;

    /// <summary>Normalisation of the committed models: mean = std = 0.5 per channel ([0,1] maps to [−1,1]).</summary>
    public static ImageNormalization Normalization => ImageNormalization.Half;

    /// <summary>
    /// The data-generator options of the committed models at <paramref name="size"/>: 6 classes, gradient background
    /// (no clutter blobs/lines), 0–1 distractor of diameter 0.15–0.3 (the labelled object: 0.4–0.7), noise 16. With the
    /// generator's default (cluttered, 1–3 distractors as large as the object) the small CPU-trained nets stayed below
    /// 50 % validation accuracy after 5 epochs; this setting keeps exact masks and a distractor in half of the images.
    /// </summary>
    /// <param name="size">Image side in pixels.</param>
    /// <param name="classCount">Number of classes.</param>
    /// <returns>The options.</returns>
    public static SyntheticOptions DataOptions(int size = ImageSize, int classCount = ClassCount) => new()
    {
        Width = size,
        Height = size,
        ClassCount = classCount,
        Background = BackgroundStyle.Gradient,
        MinDistractors = 0,
        MaxDistractors = 1,
        MinDistractorScale = 0.15,
        MaxDistractorScale = 0.3,
    };

    /// <summary>One-line description of <see cref="DataOptions"/> for reports.</summary>
    public const string DataDescription = "SyntheticDatasetGenerator with SyntheticModels.DataOptions(): 6 classes, gradient background, 0–1 distractor (diameter 0.15–0.3 of the side), object diameter 0.4–0.7, noise 16";

    /// <summary>Creates an untrained network of the given architecture (parameters initialised from the current torch seed).</summary>
    /// <param name="architecture">Architecture.</param>
    /// <param name="numClasses">Number of classes.</param>
    /// <returns>The network (train mode).</returns>
    /// <param name="imageSize">Image side; only the ViT depends on it (its position embedding).</param>
    public static nn.Module<Tensor, Tensor> Create(SyntheticArchitecture architecture, int numClasses = ClassCount, int imageSize = ImageSize) => architecture switch
    {
        SyntheticArchitecture.Vit => new VisionTransformer(VitOptions(numClasses, imageSize)),
        SyntheticArchitecture.ResNet => new ResNet(new[] { 1, 1, 1, 1 }, new[] { 16, 32, 64, 64 }, false, numClasses),
        SyntheticArchitecture.Vgg => new Vgg(new[] { 16, 0, 32, 0, 64, 0, 64, 0 }, batchNorm: true, hidden: new[] { 64 }, numClasses, pooledSize: 1, dropout: 0),
        _ => throw new ArgumentOutOfRangeException(nameof(architecture), architecture, "Unknown architecture."),
    };

    /// <summary>The C# constructor call of <see cref="Create"/>, as documented in the weights' sidecar.</summary>
    /// <param name="architecture">Architecture.</param>
    /// <param name="numClasses">Number of classes.</param>
    /// <returns>Source text.</returns>
    public static string ConstructorText(SyntheticArchitecture architecture, int numClasses = ClassCount) => architecture switch
    {
        SyntheticArchitecture.ResNet => $"new ResNet(new[] {{ 1, 1, 1, 1 }}, new[] {{ 16, 32, 64, 64 }}, bottleneck: false, numClasses: {numClasses})",
        SyntheticArchitecture.Vit => VitConstructorText(VitOptions(numClasses)),
        _ => $"new Vgg(new[] {{ 16, 0, 32, 0, 64, 0, 64, 0 }}, batchNorm: true, hidden: new[] {{ 64 }}, numClasses: {numClasses}, pooledSize: 1, dropout: 0)",
    };

    /// <summary>The C# constructor call of a ViT of shape <paramref name="o"/>, as documented in the weights' sidecar.</summary>
    /// <param name="o">Shape.</param>
    /// <returns>Source text.</returns>
    public static string VitConstructorText(VisionTransformerOptions o) => string.Create(CultureInfo.InvariantCulture,
        $"new VisionTransformer(new VisionTransformerOptions {{ ImageSize = {o.ImageSize}, PatchSize = {o.PatchSize}, EmbedDim = {o.EmbedDim}, Depth = {o.Depth}, NumHeads = {o.NumHeads}, MlpRatio = {o.MlpRatio}, NumClasses = {o.NumClasses} }})");

    /// <summary>Parses <c>resnet</c> / <c>vgg</c> / <c>vit</c> (or a model name such as <c>synthetic-resnet</c>).</summary>
    /// <param name="text">Text.</param>
    /// <returns>The architecture.</returns>
    public static SyntheticArchitecture ParseArchitecture(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        var t = text.Trim().ToLowerInvariant();
        if (t is "resnet" or ResNetName) return SyntheticArchitecture.ResNet;
        if (t is "vgg" or VggName) return SyntheticArchitecture.Vgg;
        if (t is "vit" or VitName) return SyntheticArchitecture.Vit;
        throw new ArgumentException($"Unknown architecture '{text}': use resnet, vgg or vit (or {ResNetName}, {VggName}, {VitName}).", nameof(text));
    }

    /// <summary>The committed model name of an architecture.</summary>
    /// <param name="architecture">Architecture.</param>
    /// <returns><see cref="ResNetName"/>, <see cref="VggName"/> or <see cref="VitName"/>.</returns>
    public static string NameOf(SyntheticArchitecture architecture) => architecture switch
    {
        SyntheticArchitecture.ResNet => ResNetName,
        SyntheticArchitecture.Vgg => VggName,
        SyntheticArchitecture.Vit => VitName,
        _ => throw new ArgumentOutOfRangeException(nameof(architecture), architecture, "Unknown architecture."),
    };

    /// <summary>
    /// Suffix of the name (and file stem) of a model trained on randomly permuted labels, e.g.
    /// <c>synthetic-resnet-random-labels.safetensors</c>: the data-randomisation model of the sanity checks.
    /// </summary>
    public const string RandomLabelSuffix = "-random-labels";

    /// <summary>
    /// Finds the repository's <c>models/</c> folder: <see cref="ModelsDirectoryVariable"/> if set, else the first
    /// <c>models</c> folder containing a <c>synthetic-*.safetensors</c> file found walking up from the current directory
    /// and from the application's base directory.
    /// </summary>
    /// <returns>The folder.</returns>
    /// <exception cref="DirectoryNotFoundException">No such folder was found.</exception>
    public static string FindModelsDirectory()
    {
        var env = Environment.GetEnvironmentVariable(ModelsDirectoryVariable);
        if (!string.IsNullOrWhiteSpace(env))
        {
            if (!Directory.Exists(env)) throw new DirectoryNotFoundException($"{ModelsDirectoryVariable} points to '{env}', which does not exist.");
            return Path.GetFullPath(env);
        }

        foreach (var candidate in CandidateFolders())
            if (Directory.EnumerateFiles(candidate, "synthetic-*.safetensors").Any()) return candidate;

        throw new DirectoryNotFoundException(
            $"Could not find the models/ folder with the committed synthetic-*.safetensors weights above '{Directory.GetCurrentDirectory()}' or '{AppContext.BaseDirectory}'. Set {ModelsDirectoryVariable} or pass the folder explicitly.");
    }

    /// <summary>
    /// Path of the committed weights of <paramref name="architecture"/>. Without <paramref name="modelsDirectory"/> (and
    /// without <see cref="ModelsDirectoryVariable"/>) the search of <see cref="FindModelsDirectory"/> takes the first
    /// <c>models/</c> folder that holds this model's file, so that an older folder with only some of the models (e.g.
    /// beside an older build of the tool) does not hide a newer one.
    /// </summary>
    /// <param name="architecture">Architecture.</param>
    /// <param name="modelsDirectory">The <c>models/</c> folder, or <see langword="null"/> to search for it.</param>
    /// <returns>The <c>.safetensors</c> path.</returns>
    public static string WeightsPath(SyntheticArchitecture architecture, string? modelsDirectory = null)
    {
        var file = NameOf(architecture) + ".safetensors";
        if (modelsDirectory is not null || !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(ModelsDirectoryVariable)))
            return Path.Combine(modelsDirectory ?? FindModelsDirectory(), file);
        foreach (var candidate in CandidateFolders())
            if (File.Exists(Path.Combine(candidate, file))) return Path.Combine(candidate, file);
        return Path.Combine(FindModelsDirectory(), file); // a folder without this model: the caller reports the missing file
    }

    /// <summary>
    /// Path of the random-label twin of the committed weights of <paramref name="architecture"/>:
    /// <c>&lt;name&gt;-random-labels.safetensors</c> in the folder of <see cref="WeightsPath"/> (the model of the same
    /// architecture trained on permuted labels, for the sanity checks' data randomisation). The file may not exist.
    /// </summary>
    /// <param name="architecture">Architecture.</param>
    /// <param name="modelsDirectory">The <c>models/</c> folder, or <see langword="null"/> to search for it.</param>
    /// <returns>The <c>.safetensors</c> path.</returns>
    public static string RandomLabelWeightsPath(SyntheticArchitecture architecture, string? modelsDirectory = null) =>
        Path.Combine(Path.GetDirectoryName(WeightsPath(architecture, modelsDirectory))!, NameOf(architecture) + RandomLabelSuffix + ".safetensors");

    /// <summary>
    /// One line on a random-label model for reports: its file name and, from its JSON sidecar when present, the label
    /// seed, epochs, training accuracy (on the permuted labels) and test accuracy (on the true labels).
    /// </summary>
    /// <param name="weightsPath">The <c>.safetensors</c> file.</param>
    /// <returns>Text.</returns>
    public static string DescribeRandomLabelModel(string weightsPath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(weightsPath);
        var text = $"`{Path.GetFileName(weightsPath)}`";
        var sidecar = Path.ChangeExtension(weightsPath, ".json");
        if (!File.Exists(sidecar)) return text;
        TrainingReport? report;
        try
        {
            report = JsonSerializer.Deserialize<TrainingReport>(File.ReadAllText(sidecar));
        }
        catch (JsonException)
        {
            return text + " (its sidecar could not be read)";
        }
        if (report is null) return text;
        var train = report.TrainAccuracy ?? (report.History.Count > 0 ? report.History[^1].TrainAccuracy : double.NaN);
        return text + string.Create(CultureInfo.InvariantCulture,
            $": {(report.PermutedLabelSeed is { } seed ? $"training labels permuted with seed {seed}" : "NOT marked as trained on permuted labels in its sidecar")}, {report.Epochs} epochs, training accuracy {train:P1} on its training labels, test accuracy {report.TestAccuracy:P1} on true labels");
    }

    /// <summary>Every existing <c>models/</c> folder walking up from the current directory, then from the application's base directory.</summary>
    private static IEnumerable<string> CandidateFolders()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "models");
                if (Directory.Exists(candidate)) yield return candidate;
            }
        }
    }

    /// <summary>Builds the architecture and loads the committed weights (eval mode, CPU, float32).</summary>
    /// <param name="architecture">Architecture.</param>
    /// <param name="modelsDirectory">The <c>models/</c> folder, or <see langword="null"/> to search for it.</param>
    /// <returns>The trained model.</returns>
    public static nn.Module<Tensor, Tensor> Load(SyntheticArchitecture architecture, string? modelsDirectory = null) =>
        LoadFile(architecture, WeightsPath(architecture, modelsDirectory));

    /// <summary>Builds the architecture and loads weights from a <c>.safetensors</c> file (eval mode).</summary>
    /// <param name="architecture">Architecture.</param>
    /// <param name="path">Weights file (written by <see cref="Save"/> or PyTorch's safetensors with the same keys).</param>
    /// <param name="numClasses">Number of classes.</param>
    /// <returns>The model.</returns>
    public static nn.Module<Tensor, Tensor> LoadFile(SyntheticArchitecture architecture, string path, int numClasses = ClassCount)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Weights file '{path}' not found.", path);
        var model = Create(architecture, numClasses);
        model.load_safetensors(path);
        model.eval();
        return model;
    }

    /// <summary>Saves a model's state dict (parameters and BatchNorm buffers) as safetensors, through <see cref="RootDtd.IO.AtomicFile"/> (complete or absent, never truncated).</summary>
    /// <param name="model">Model.</param>
    /// <param name="path">Output file (its folder is created).</param>
    public static void Save(nn.Module model, string path)
    {
        ArgumentNullException.ThrowIfNull(model);
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        RootDtd.IO.AtomicFile.Write(path, stream => model.save_safetensors(stream, leaveOpen: true));
    }

    /// <summary>Explainer options with the valid pixel box [0,1] in the models' normalised space (needed by z^B and root inference).</summary>
    /// <param name="recordRoots">Keep the signal/root tensors of root-inference units.</param>
    /// <returns>Options; the caller owns the bound tensors.</returns>
    public static ExplainerOptions CreateExplainerOptions(bool recordRoots = false) => new()
    {
        InputLow = Bounds(0),
        InputHigh = Bounds(1),
        RecordRoots = recordRoots,
    };

    /// <summary>Per-channel normalised value of pixel value <paramref name="pixel"/>, shape [C].</summary>
    /// <param name="pixel">Pixel value in [0,1].</param>
    /// <param name="normalization">Normalisation (default <see cref="Normalization"/>).</param>
    /// <returns>A new tensor.</returns>
    public static Tensor Bounds(double pixel, ImageNormalization? normalization = null)
    {
        var n = normalization ?? Normalization;
        return torch.tensor(n.Mean.Select((m, c) => (float)((pixel - m) / n.Std[c])).ToArray());
    }

    /// <summary>Reads the JSON sidecar (<c>&lt;name&gt;.json</c>) of committed weights, if present.</summary>
    /// <param name="architecture">Architecture.</param>
    /// <param name="modelsDirectory">The <c>models/</c> folder, or <see langword="null"/> to search for it.</param>
    /// <returns>The sidecar, or <see langword="null"/>.</returns>
    public static TrainingReport? ReadSidecar(SyntheticArchitecture architecture, string? modelsDirectory = null)
    {
        var path = Path.ChangeExtension(WeightsPath(architecture, modelsDirectory), ".json");
        return File.Exists(path) ? JsonSerializer.Deserialize<TrainingReport>(File.ReadAllText(path)) : null;
    }

    /// <summary>Generates a normalised, seeded split of the synthetic data with masks (CPU).</summary>
    /// <param name="seed">Stream seed.</param>
    /// <param name="count">Number of images.</param>
    /// <param name="size">Image side.</param>
    /// <param name="start">First index of the stream.</param>
    /// <returns>Normalised images [N,3,H,W], masks int64 [N,H,W] (0 background, label+1 object) and labels int64 [N].</returns>
    public static (Tensor Images, Tensor Masks, Tensor Labels) GenerateSplit(int seed, int count, int size = ImageSize, int start = 0)
    {
        var generator = new SyntheticDatasetGenerator(DataOptions(size));
        var images = generator.GenerateMany(seed, count, start);
        var (x, m, y) = SyntheticDatasetGenerator.ToTensors(images);
        using (x)
        {
            return (Normalization.Normalize(x), m, y);
        }
    }
}
