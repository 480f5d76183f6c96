using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace RootDtd.Models;

/// <summary>
/// A torchvision-compatible VGG (<c>features</c>, optional <c>avgpool</c>, flatten, <c>classifier</c>) with configurable
/// layers, so that vgg11/13/16/19 (with or without BatchNorm) and small VGG-style models share module names and
/// state-dict keys with PyTorch.
/// </summary>
public sealed class Vgg : Module<Tensor, Tensor>
{
    private readonly Sequential features;
    private readonly AdaptiveAvgPool2d? avgpool;
    private readonly Sequential classifier;

    /// <summary>Creates a VGG.</summary>
    /// <param name="config">Channels per conv layer, with 0 for a 2×2 max-pool (torchvision's "M").</param>
    /// <param name="batchNorm">Insert BatchNorm2d after every conv.</param>
    /// <param name="hidden">Widths of the hidden dense layers of the classifier (torchvision: 4096, 4096).</param>
    /// <param name="numClasses">Number of output classes.</param>
    /// <param name="pooledSize">Side of the adaptive average pool before the classifier (torchvision: 7), or 0 for none.</param>
    /// <param name="flattenedFeatures">Input width of the classifier when <paramref name="pooledSize"/> is 0.</param>
    /// <param name="dropout">Dropout probability in the classifier (0 = no Dropout modules).</param>
    /// <param name="inputChannels">Input channels.</param>
    public Vgg(IReadOnlyList<int> config, bool batchNorm, IReadOnlyList<int> hidden, int numClasses, int pooledSize = 7,
        int flattenedFeatures = 0, double dropout = 0.5, int inputChannels = 3) : base("VGG")
    {
        var layers = new List<Module<Tensor, Tensor>>();
        long channels = inputChannels;
        foreach (var c in config)
        {
            if (c == 0) { layers.Add(MaxPool2d(2, 2)); continue; }
            layers.Add(Conv2d(channels, c, 3, padding: 1));
            if (batchNorm) layers.Add(BatchNorm2d(c));
            layers.Add(ReLU());
            channels = c;
        }
        features = Sequential(layers);
        long flat;
        if (pooledSize > 0)
        {
            avgpool = AdaptiveAvgPool2d(new long[] { pooledSize, pooledSize });
            flat = channels * pooledSize * pooledSize;
        }
        else
        {
            if (flattenedFeatures <= 0) throw new ArgumentException("Without the average pool the classifier's input width must be given.", nameof(flattenedFeatures));
            flat = flattenedFeatures;
        }
        var head = new List<Module<Tensor, Tensor>>();
        foreach (var h in hidden)
        {
            head.Add(Linear(flat, h));
            head.Add(ReLU());
            if (dropout > 0) head.Add(Dropout(dropout));
            flat = h;
        }
        head.Add(Linear(flat, numClasses));
        classifier = Sequential(head);
        RegisterComponents();
    }

    private static readonly int[] Cfg11 = { 64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0 };
    private static readonly int[] Cfg13 = { 64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0 };
    private static readonly int[] Cfg16 = { 64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0 };
    private static readonly int[] Cfg19 = { 64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0 };

    /// <summary>torchvision vgg11 / vgg11_bn.</summary>
    public static Vgg Vgg11(int numClasses = 1000, bool batchNorm = false) => new(Cfg11, batchNorm, new[] { 4096, 4096 }, numClasses);

    /// <summary>torchvision vgg13 / vgg13_bn.</summary>
    public static Vgg Vgg13(int numClasses = 1000, bool batchNorm = false) => new(Cfg13, batchNorm, new[] { 4096, 4096 }, numClasses);

    /// <summary>torchvision vgg16 / vgg16_bn.</summary>
    public static Vgg Vgg16(int numClasses = 1000, bool batchNorm = false) => new(Cfg16, batchNorm, new[] { 4096, 4096 }, numClasses);

    /// <summary>torchvision vgg19 / vgg19_bn.</summary>
    public static Vgg Vgg19(int numClasses = 1000, bool batchNorm = false) => new(Cfg19, batchNorm, new[] { 4096, 4096 }, numClasses);

    /// <inheritdoc />
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = features.call(input);
        if (avgpool is not null) x = avgpool.call(x);
        return classifier.call(x.flatten(1)).MoveToOuterDisposeScope();
    }
}
