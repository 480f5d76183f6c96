using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace RootDtd.Models;

/// <summary>
/// A residual block with PyTorch/torchvision module names (<c>conv1, bn1, relu, conv2, bn2[, conv3, bn3], downsample</c>),
/// so that torchvision state dicts load unchanged. <see cref="Bottleneck"/> selects the 1×1–3×3–1×1 form.
/// </summary>
public sealed class ResidualBlock : Module<Tensor, Tensor>
{
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly Conv2d conv2;
    private readonly BatchNorm2d bn2;
    private readonly Conv2d? conv3;
    private readonly BatchNorm2d? bn3;
    private readonly ReLU relu;
    private readonly Sequential? downsample;

    /// <summary>Creates a block.</summary>
    /// <param name="inPlanes">Input channels.</param>
    /// <param name="planes">Base width of the block (output channels = planes × expansion).</param>
    /// <param name="stride">Stride of the spatial convolution.</param>
    /// <param name="bottleneck">True for the Bottleneck form (expansion 4), false for BasicBlock (expansion 1).</param>
    public ResidualBlock(long inPlanes, long planes, long stride, bool bottleneck) : base(bottleneck ? "Bottleneck" : "BasicBlock")
    {
        Bottleneck = bottleneck;
        var outPlanes = planes * (bottleneck ? 4 : 1);
        if (bottleneck)
        {
            conv1 = Conv2d(inPlanes, planes, 1, bias: false);
            bn1 = BatchNorm2d(planes);
            conv2 = Conv2d(planes, planes, 3, stride: stride, padding: 1, bias: false);
            bn2 = BatchNorm2d(planes);
            conv3 = Conv2d(planes, outPlanes, 1, bias: false);
            bn3 = BatchNorm2d(outPlanes);
        }
        else
        {
            conv1 = Conv2d(inPlanes, planes, 3, stride: stride, padding: 1, bias: false);
            bn1 = BatchNorm2d(planes);
            conv2 = Conv2d(planes, planes, 3, padding: 1, bias: false);
            bn2 = BatchNorm2d(planes);
        }
        relu = ReLU();
        if (stride != 1 || inPlanes != outPlanes)
            downsample = Sequential(Conv2d(inPlanes, outPlanes, 1, stride: stride, bias: false), BatchNorm2d(outPlanes));
        RegisterComponents();
    }

    /// <summary>True for the Bottleneck form.</summary>
    public bool Bottleneck { get; }

    /// <inheritdoc />
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var h = relu.call(bn1.call(conv1.call(input)));
        h = bn2.call(conv2.call(h));
        if (conv3 is not null && bn3 is not null) h = bn3.call(conv3.call(relu.call(h)));
        var identity = downsample is null ? input : downsample.call(input);
        return relu.call(h + identity).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A torchvision-compatible ResNet with configurable stage widths, so that small models (tests, the synthetic
/// benchmark) and the standard resnet18/34/50 share one implementation and one set of module names
/// (<c>conv1, bn1, relu, maxpool, layer1…layer4, avgpool, flatten, fc</c>).
/// </summary>
public sealed class ResNet : Module<Tensor, Tensor>
{
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly ReLU relu;
    private readonly MaxPool2d maxpool;
    private readonly Sequential layer1;
    private readonly Sequential layer2;
    private readonly Sequential layer3;
    private readonly Sequential layer4;
    private readonly AdaptiveAvgPool2d avgpool;
    private readonly Flatten flatten;
    private readonly Linear fc;

    /// <summary>Creates a ResNet.</summary>
    /// <param name="blocks">Blocks per stage (resnet18: 2,2,2,2; resnet34/50: 3,4,6,3).</param>
    /// <param name="widths">Base width per stage (torchvision: 64,128,256,512).</param>
    /// <param name="bottleneck">Bottleneck blocks (resnet50) instead of basic blocks.</param>
    /// <param name="numClasses">Number of output classes.</param>
    /// <param name="inputChannels">Input channels (3 for RGB).</param>
    public ResNet(IReadOnlyList<int> blocks, IReadOnlyList<int> widths, bool bottleneck, int numClasses, int inputChannels = 3) : base("ResNet")
    {
        if (blocks.Count != 4 || widths.Count != 4) throw new ArgumentException("A ResNet has four stages: give four block counts and four widths.");
        if (numClasses < 1) throw new ArgumentOutOfRangeException(nameof(numClasses), "At least one class is needed.");
        var expansion = bottleneck ? 4 : 1;
        conv1 = Conv2d(inputChannels, widths[0], 7, stride: 2, padding: 3, bias: false);
        bn1 = BatchNorm2d(widths[0]);
        relu = ReLU();
        maxpool = MaxPool2d(3, stride: 2, padding: 1);
        long inPlanes = widths[0];
        Sequential Stage(int width, int count, int stride)
        {
            var list = new List<(string, Module<Tensor, Tensor>)>();
            for (var i = 0; i < count; i++)
            {
                list.Add((i.ToString(System.Globalization.CultureInfo.InvariantCulture), new ResidualBlock(inPlanes, width, i == 0 ? stride : 1, bottleneck)));
                inPlanes = width * expansion;
            }
            return Sequential(list);
        }
        layer1 = Stage(widths[0], blocks[0], 1);
        layer2 = Stage(widths[1], blocks[1], 2);
        layer3 = Stage(widths[2], blocks[2], 2);
        layer4 = Stage(widths[3], blocks[3], 2);
        avgpool = AdaptiveAvgPool2d(new long[] { 1, 1 });
        flatten = Flatten();
        fc = Linear(widths[3] * expansion, numClasses);
        RegisterComponents();
        foreach (var (_, m) in named_modules())
        {
            if (m is Conv2d c) init.kaiming_normal_(c.weight, mode: init.FanInOut.FanOut, nonlinearity: init.NonlinearityType.ReLU);
        }
    }

    /// <summary>torchvision resnet18 (BasicBlock 2-2-2-2, widths 64-128-256-512).</summary>
    public static ResNet ResNet18(int numClasses = 1000) => new(new[] { 2, 2, 2, 2 }, new[] { 64, 128, 256, 512 }, false, numClasses);

    /// <summary>torchvision resnet34 (BasicBlock 3-4-6-3).</summary>
    public static ResNet ResNet34(int numClasses = 1000) => new(new[] { 3, 4, 6, 3 }, new[] { 64, 128, 256, 512 }, false, numClasses);

    /// <summary>torchvision resnet50 (Bottleneck 3-4-6-3).</summary>
    public static ResNet ResNet50(int numClasses = 1000) => new(new[] { 3, 4, 6, 3 }, new[] { 64, 128, 256, 512 }, true, numClasses);

    /// <summary>The input features of <c>fc</c> (also called <c>fc</c>'s in-features).</summary>
    public long FeatureCount => fc.in_features;

    /// <summary>The classifier head (the last linear layer).</summary>
    public Linear Head => fc;

    /// <inheritdoc />
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        return fc.call(ForwardFeatures(input)).MoveToOuterDisposeScope();
    }

    /// <summary>The pooled features [B, <see cref="FeatureCount"/>] that <c>fc</c> reads (the forward pass without the head).</summary>
    /// <param name="input">Images [B, C, H, W].</param>
    public Tensor ForwardFeatures(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = maxpool.call(relu.call(bn1.call(conv1.call(input))));
        x = layer4.call(layer3.call(layer2.call(layer1.call(x))));
        return flatten.call(avgpool.call(x)).MoveToOuterDisposeScope();
    }
}
