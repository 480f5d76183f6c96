using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace RootDtd.Models;

/// <summary>An architecture known to <see cref="ModelZoo"/>.</summary>
/// <param name="Name">Name used by <see cref="ModelZoo.Create"/> and the CLI's <c>--arch</c> (e.g. <c>resnet18</c>, <c>vgg16_bn</c>).</param>
/// <param name="Description">One line describing the architecture.</param>
/// <param name="Factory">Builds a freshly initialised model with the given number of classes.</param>
public sealed record ModelArchitecture(string Name, string Description, Func<int, Module<Tensor, Tensor>> Factory);

/// <summary>
/// Builds classifiers by name: torchvision's resnet18/34/50 and vgg11/13/16/19 with and without BatchNorm
/// (<c>vgg16_bn</c>), using RootDtd's own <see cref="ResNet"/> and <see cref="Vgg"/>, whose module names and
/// state-dict keys are torchvision's — so a <c>state_dict</c> exported from PyTorch loads unchanged with
/// <see cref="ModelWeights.Load"/>. Applications can <see cref="Register"/> further architectures (names are
/// case-insensitive and unique).
/// </summary>
/// <example>
/// <code>
/// var model = ModelZoo.Create("vgg16_bn", numClasses: 1000);
/// ModelWeights.Load(model, "vgg16_bn.safetensors");
/// model.eval();
/// </code>
/// </example>
public static class ModelZoo
{
    private static readonly List<ModelArchitecture> _architectures = new();

    static ModelZoo()
    {
        Add("resnet18", "torchvision resnet18: BasicBlock 2-2-2-2, widths 64-128-256-512", c => ResNet.ResNet18(c));
        Add("resnet34", "torchvision resnet34: BasicBlock 3-4-6-3, widths 64-128-256-512", c => ResNet.ResNet34(c));
        Add("resnet50", "torchvision resnet50: Bottleneck 3-4-6-3, widths 64-128-256-512 (×4)", c => ResNet.ResNet50(c));
        Add(CntkResNet18.ModelName, "ImageNet-trained ResNet18 (BasicBlock 2-2-2-3) from the ML.NET NuGet package, pretrained backbone + untrained fc; RGB 0-255 minus a mean image, 224x224",
            c => CntkResNet18.Create(c));
        foreach (var (depth, factory) in new (int, Func<int, bool, Vgg>)[]
                 {
                     (11, (c, bn) => Vgg.Vgg11(c, bn)), (13, (c, bn) => Vgg.Vgg13(c, bn)),
                     (16, (c, bn) => Vgg.Vgg16(c, bn)), (19, (c, bn) => Vgg.Vgg19(c, bn)),
                 })
        {
            Add($"vgg{depth}", $"torchvision vgg{depth}: {depth - 3} conv layers, 3 dense layers, no BatchNorm", c => factory(c, false));
            Add($"vgg{depth}_bn", $"torchvision vgg{depth}_bn: {depth - 3} conv layers with BatchNorm, 3 dense layers", c => factory(c, true));
        }
        Add("vit-tiny-patch16-224", "timm vit_tiny_patch16_224: 224 px, patch 16, width 192, 12 blocks, 3 heads", c => VisionTransformer.TinyPatch16(c));
        Add("vit-small-patch16-224", "timm vit_small_patch16_224: 224 px, patch 16, width 384, 12 blocks, 6 heads", c => VisionTransformer.SmallPatch16(c));
        Add("vit-base-patch16-224", "timm vit_base_patch16_224: 224 px, patch 16, width 768, 12 blocks, 12 heads", c => VisionTransformer.BasePatch16(c));
        Add("vit-synthetic-patch8-64", "the synthetic benchmark's ViT (models/synthetic-vit.safetensors, 6 classes): 64 px, patch 8, width 64, 4 blocks, 4 heads, MLP 128", c =>
            new VisionTransformer(VisionTransformer.SyntheticPatch8Options(c)));
        Add("vit-test-patch8-32", "test ViT (the golden's shape): 32 px, patch 8, width 48, 3 blocks, 3 heads", c =>
            new VisionTransformer(new() { ImageSize = 32, PatchSize = 8, EmbedDim = 48, Depth = 3, NumHeads = 3, NumClasses = c }));
        Add("vit-test-patch4-16", "test ViT: 16 px, patch 4, width 16, 2 blocks, 2 heads", c =>
            new VisionTransformer(new() { ImageSize = 16, PatchSize = 4, EmbedDim = 16, Depth = 2, NumHeads = 2, NumClasses = c }));
    }

    /// <summary>Every registered architecture, in registration order (the built-in ones first).</summary>
    public static IReadOnlyList<ModelArchitecture> All
    {
        get
        {
            lock (_architectures) return _architectures.ToList();
        }
    }

    /// <summary>The names of every registered architecture.</summary>
    public static IReadOnlyList<string> Names => All.Select(a => a.Name).ToList();

    /// <summary>Registers an architecture under a new name.</summary>
    /// <param name="name">The name (case-insensitive, unique; no whitespace).</param>
    /// <param name="description">One line describing it.</param>
    /// <param name="factory">Builds a freshly initialised model for a number of classes.</param>
    /// <exception cref="ArgumentException">The name is empty, contains whitespace or is taken.</exception>
    public static void Register(string name, string description, Func<int, Module<Tensor, Tensor>> factory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(factory);
        if (name.Any(char.IsWhiteSpace)) throw new ArgumentException($"Architecture names cannot contain whitespace: '{name}'.", nameof(name));
        Add(name, description ?? string.Empty, factory);
    }

    /// <summary>True when an architecture of that name (case-insensitive) is registered.</summary>
    /// <param name="name">The name.</param>
    public static bool Contains(string name)
    {
        lock (_architectures) return _architectures.Any(a => string.Equals(a.Name, name, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>Finds an architecture by name (case-insensitive).</summary>
    /// <param name="name">The name, e.g. <c>resnet50</c>.</param>
    /// <exception cref="ArgumentException">No architecture has that name; the message lists the known names.</exception>
    public static ModelArchitecture Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        lock (_architectures)
        {
            return _architectures.FirstOrDefault(a => string.Equals(a.Name, name.Trim(), StringComparison.OrdinalIgnoreCase))
                ?? throw new ArgumentException($"Unknown architecture '{name}'. Known architectures: {string.Join(", ", _architectures.Select(a => a.Name))}.", nameof(name));
        }
    }

    /// <summary>Builds a freshly initialised model (training mode, CPU, float32) of the named architecture.</summary>
    /// <param name="name">The architecture, e.g. <c>resnet18</c> or <c>vgg16_bn</c>.</param>
    /// <param name="numClasses">Number of output classes (ImageNet: 1000).</param>
    /// <exception cref="ArgumentException">Unknown name (the message lists the known ones).</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="numClasses"/> is less than 1.</exception>
    public static Module<Tensor, Tensor> Create(string name, int numClasses = 1000)
    {
        if (numClasses < 1) throw new ArgumentOutOfRangeException(nameof(numClasses), numClasses, "At least one class is needed.");
        return Get(name).Factory(numClasses);
    }

    private static void Add(string name, string description, Func<int, Module<Tensor, Tensor>> factory)
    {
        lock (_architectures)
        {
            if (_architectures.Any(a => string.Equals(a.Name, name, StringComparison.OrdinalIgnoreCase)))
                throw new ArgumentException($"An architecture named '{name}' is already registered.", nameof(name));
            _architectures.Add(new ModelArchitecture(name, description, factory));
        }
    }
}
