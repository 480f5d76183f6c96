using RootDtd.Graph;
using RootDtd.Models;
using RootDtd.Rules;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

/// <summary>Small models and helpers shared by the core tests.</summary>
internal static class TestNets
{
    /// <summary>Conv-BN-ReLU-MaxPool-Conv-BN-ReLU-AvgPool-Flatten-Linear-ReLU-Dropout-Linear with random BN statistics.</summary>
    public static Sequential CnnWithBatchNorm(ScalarType dtype = ScalarType.Float64, long seed = 3)
    {
        torch.manual_seed(seed);
        var net = nn.Sequential(
            ("conv1", nn.Conv2d(3, 6, 3, padding: 1)), ("bn1", nn.BatchNorm2d(6)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(6, 8, 3, padding: 1)), ("bn2", nn.BatchNorm2d(8)), ("relu2", nn.ReLU()), ("pool2", nn.AdaptiveAvgPool2d(2)),
            ("flatten", nn.Flatten()), ("fc1", nn.Linear(32, 16)), ("relu3", nn.ReLU()), ("drop", nn.Dropout(0.5)), ("fc2", nn.Linear(16, 5)));
        RandomizeBatchNorm(net);
        net.to(dtype);
        net.eval();
        return net;
    }

    /// <summary>A bias-free CNN: conv/ReLU/max-pool/conv/ReLU/avg-pool/flatten/linear.</summary>
    public static Sequential BiasFreeCnn(long seed = 5)
    {
        torch.manual_seed(seed);
        var net = nn.Sequential(
            ("conv1", nn.Conv2d(3, 6, 3, padding: 1, bias: false)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(6, 8, 3, padding: 1, bias: false)), ("relu2", nn.ReLU()), ("pool2", nn.AvgPool2d(2)),
            ("flatten", nn.Flatten()), ("fc1", nn.Linear(32, 12, hasBias: false)), ("relu3", nn.ReLU()), ("fc2", nn.Linear(12, 4, hasBias: false)));
        net.to(float64);
        net.eval();
        return net;
    }

    /// <summary>A small RootDtd ResNet (one basic block per stage, narrow) with random BN statistics.</summary>
    public static global::RootDtd.Models.ResNet SmallResNet(ScalarType dtype = ScalarType.Float64, long seed = 7, bool biasFree = false)
    {
        torch.manual_seed(seed);
        var net = new global::RootDtd.Models.ResNet(new[] { 1, 1, 1, 1 }, new[] { 4, 6, 8, 8 }, false, 5);
        RandomizeBatchNorm(net, zeroShift: biasFree);
        if (biasFree)
        {
            using var _ = torch.no_grad();
            foreach (var (name, p) in net.named_parameters())
                if (name == "fc.bias") p.zero_();
        }
        net.to(dtype);
        net.eval();
        return net;
    }

    /// <summary>Gives every BatchNorm random affine parameters and running statistics (or, with <paramref name="zeroShift"/>, a pure positive scale: mean 0, bias 0).</summary>
    public static void RandomizeBatchNorm(nn.Module net, bool zeroShift = false)
    {
        using var _ = torch.no_grad();
        foreach (var (_, m) in net.named_modules())
        {
            if (m is not BatchNorm2d bn) continue;
            var c = bn.weight!.shape[0];
            bn.weight.copy_(torch.rand(c) + 0.5);
            bn.running_var!.copy_(torch.rand(c) + 0.5);
            if (zeroShift)
            {
                bn.bias!.zero_();
                bn.running_mean!.zero_();
            }
            else
            {
                bn.bias!.copy_(torch.randn(c) * 0.1);
                bn.running_mean!.copy_(torch.randn(c) * 0.1);
            }
        }
    }

    /// <summary>Largest |a − b| relative to max(|b|max, 1e-300).</summary>
    public static double RelativeDifference(Tensor a, Tensor b)
    {
        using var scope = torch.NewDisposeScope();
        var diff = (a.to(float64) - b.to(float64)).abs().max().item<double>();
        var scale = Math.Max(b.to(float64).abs().max().item<double>(), 1e-300);
        return diff / scale;
    }

    /// <summary>Runs <paramref name="rule"/> on a single graph node with the given recorded inputs and output relevance.</summary>
    public static double[] Propagate(Rule rule, GraphNode node, Tensor[] inputs, Tensor relevance, InputDomain domain = InputDomain.Free,
        Tensor? low = null, Tensor? high = null, int which = 0)
    {
        using var scope = torch.NewDisposeScope();
        Tensor output;
        using (torch.no_grad()) output = node.Forward(inputs);
        var context = new RuleContext(node, inputs, output, relevance, domain, low, high, new ExplanationRecorder(false, false));
        var result = rule.Propagate(context);
        return result[which].to(float64).contiguous().data<double>().ToArray();
    }

    /// <summary>
    /// A small timm-layout ViT in float64 (default 16² images, patch 4, width 16, 2 blocks, 2 heads, 5 classes), seeded:
    /// weights ~ N(0, 1/fan-in), LayerNorm scales 1 ± 0.2; biases, class token and position embedding 0.3·N(0, 1),
    /// or zero (class token 0.5·N(0, 1)) when <paramref name="biasFree"/>.
    /// </summary>
    public static VisionTransformer SmallVit(bool biasFree, long seed = 11, int imageSize = 16, int patch = 4, int embed = 16, int depth = 2, int heads = 2)
    {
        torch.manual_seed(seed);
        var vit = new VisionTransformer(new VisionTransformerOptions { ImageSize = imageSize, PatchSize = patch, EmbedDim = embed, Depth = depth, NumHeads = heads, NumClasses = 5 });
        using (torch.no_grad())
        {
            foreach (var (name, p) in vit.named_parameters())
            {
                if (name.EndsWith(".weight", StringComparison.Ordinal) && p.dim() == 1) p.copy_(1 + 0.2 * torch.randn_like(p));
                else if (name.EndsWith(".weight", StringComparison.Ordinal)) p.copy_(torch.randn_like(p) / Math.Sqrt(p.numel() / p.shape[0]));
                else p.copy_(biasFree ? torch.zeros_like(p) : 0.3 * torch.randn_like(p));
            }
            if (biasFree) vit.ClassToken.copy_(0.5 * torch.randn_like(vit.ClassToken));
        }
        vit.to(float64);
        vit.eval();
        return vit;
    }
}
