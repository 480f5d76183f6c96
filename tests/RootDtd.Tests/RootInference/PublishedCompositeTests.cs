using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Rules.RootInference.Published;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using ResNetModel = global::RootDtd.Models.ResNet;

namespace RootDtd.Tests.RootInference;

/// <summary>The <c>root-published</c> composite end to end on a small Sequential CNN and a small ResNet.</summary>
public class PublishedCompositeTests
{
    // Everything random comes from a local generator: xunit runs test classes in parallel and the global generator
    // is shared, so weights and inputs drawn from it would differ from run to run.
    private static nn.Module<Tensor, Tensor> SmallCnn()
    {
        var net = nn.Sequential(
            ("conv1", nn.Conv2d(3, 4, 3, padding: 1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(4, 6, 3, padding: 1)), ("bn2", nn.BatchNorm2d(6)), ("relu2", nn.ReLU()), ("gap", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten()), ("fc1", nn.Linear(6, 16)), ("relu3", nn.ReLU()), ("drop", nn.Dropout(0.5)), ("fc2", nn.Linear(16, 3)));
        net.to(float64);
        Initialize(net, 11);
        net.eval();
        return net;
    }

    private static ResNetModel SmallResNet()
    {
        var net = new ResNetModel(new[] { 1, 1, 1, 1 }, new[] { 4, 8, 8, 8 }, false, 3);
        net.to(float64);
        Initialize(net, 12);
        net.eval();
        return net;
    }

    private static void Initialize(nn.Module net, ulong seed)
    {
        var g = new torch.Generator(seed);
        using var _ = torch.no_grad();
        Tensor Normal(Tensor like, double scale) => torch.randn(like.shape, dtype: like.dtype, generator: g) * scale;
        Tensor Uniform(Tensor like, double low, double high) => torch.rand(like.shape, dtype: like.dtype, generator: g) * (high - low) + low;
        foreach (var m in net.modules())
        {
            switch (m)
            {
                case TorchSharp.Modules.Conv2d c:
                    c.weight!.copy_(Normal(c.weight, 1 / Math.Sqrt(c.weight.shape[1] * c.weight.shape[2] * c.weight.shape[3])));
                    c.bias?.copy_(Normal(c.bias, 0.1));
                    break;
                case TorchSharp.Modules.Linear l:
                    l.weight!.copy_(Normal(l.weight, 1 / Math.Sqrt(l.weight.shape[1])));
                    l.bias?.copy_(Normal(l.bias, 0.1));
                    break;
                case TorchSharp.Modules.BatchNorm2d bn:
                    bn.running_mean!.copy_(Normal(bn.running_mean, 0.1));
                    bn.running_var!.copy_(Uniform(bn.running_var, 0.5, 1.5));
                    bn.weight!.copy_(Uniform(bn.weight, 0.5, 1.5));
                    bn.bias!.copy_(Normal(bn.bias, 0.1));
                    break;
            }
        }
    }

    private static Tensor Input(ulong seed, ScalarType dtype, params long[] shape) => torch.randn(shape, dtype: dtype, generator: new torch.Generator(seed));

    private static void ShouldBeFiniteWithTheInputShape(Explanation e, Tensor x)
    {
        e.InputRelevance.shape.Should().Equal(x.shape);
        torch.isfinite(e.InputRelevance).all().item<bool>().Should().BeTrue();
        e.InputRelevance.abs().sum().to(float64).item<double>().Should().BeGreaterThan(0);
    }

    private static void BatchEqualsPerSample(nn.Module<Tensor, Tensor> model, Tensor x)
    {
        var (composite, options) = PublishedRootPreset.Create();
        using var explainer = new Explainer(model, composite, options);
        var targets = new long[] { 2, 0 };
        using var batch = explainer.Explain(x, targets);
        ShouldBeFiniteWithTheInputShape(batch, x);
        for (var i = 0; i < 2; i++)
        {
            using var single = explainer.Explain(x[TensorIndex.Slice(i, i + 1)], new[] { targets[i] });
            var diff = (single.InputRelevance[0] - batch.InputRelevance[i]).abs().max().item<double>();
            var scale = Math.Max(1e-30, batch.InputRelevance[i].abs().max().item<double>());
            (diff / scale).Should().BeLessThan(1e-8, $"sample {i}");
        }
    }

    [Fact]
    public void RunsEndToEndOnASequentialCnnAndBatchEqualsPerSample()
    {
        using var scope = torch.NewDisposeScope();
        var model = SmallCnn();
        BatchEqualsPerSample(model, Input(13, float64, 2, 3, 8, 8));
    }

    [Fact]
    public void RunsEndToEndOnASmallResNetAndBatchEqualsPerSample()
    {
        using var scope = torch.NewDisposeScope();
        var model = SmallResNet();
        BatchEqualsPerSample(model, Input(14, float64, 2, 3, 32, 32));
    }

    [Fact]
    public void StartsFromTheAbsoluteTargetLogit()
    {
        using var scope = torch.NewDisposeScope();
        var model = SmallCnn();
        var x = Input(15, float64, 2, 3, 8, 8);
        var logits = model.forward(x);
        // the target with the smallest logit of each sample (usually negative)
        var targets = logits.argmin(1).data<long>().ToArray();
        var (composite, options) = PublishedRootPreset.Create();
        using var explainer = new Explainer(model, composite, options);
        using var e = explainer.Explain(x, targets);
        for (var i = 0; i < 2; i++)
            e.Conservation.StartRelevance[i].Should().BeApproximately(Math.Abs(logits[i, targets[i]].item<double>()), 1e-12);
    }

    [Fact]
    public void AssignsThePublishedRulesAndPassesReluInsideResidualBlocks()
    {
        using var scope = torch.NewDisposeScope();
        var model = SmallResNet();
        var (composite, options) = PublishedRootPreset.Create();
        using var explainer = new Explainer(model, composite, options);
        var rules = explainer.RuleAssignment.ToDictionary(t => t.Node, t => t.Rule);
        rules["conv1"].Should().StartWith("PublishedConvRoot(ones");
        rules["layer1.0.conv1"].Should().StartWith("PublishedConvRoot(steps=5");
        rules["layer2.0.downsample.0"].Should().StartWith("PublishedConvRoot(steps=5");
        rules["fc"].Should().StartWith("PublishedDenseRoot(steps=1/5");
        rules["bn1"].Should().Be("Pass");
        rules["relu"].Should().StartWith("PublishedRelu");
        rules["maxpool"].Should().Be("PublishedMaxPool");
        rules["avgpool"].Should().Be("PublishedAvgPool");
        rules["layer1.0.sum"].Should().Be("PublishedSkip");
        rules["layer1.0.relu"].Should().Be("Pass");
        rules["layer1.0.relu_out"].Should().Be("Pass");
        rules.Where(kv => kv.Value.StartsWith("PublishedRelu", StringComparison.Ordinal)).Select(kv => kv.Key).Should().Equal("relu");
    }

    [Fact]
    public void CatalogEntryRunsUnmergedAndGivesTheSameRelevanceWithBatchNormMerging()
    {
        using var scope = torch.NewDisposeScope();
        var model = SmallResNet();
        var x = Input(16, float64, 1, 3, 32, 32);
        var method = MethodCatalog.Get(PublishedRootPreset.Name);
        method.Canonizers.Should().BeEmpty("the method carries its canonizers: the reference never folds BatchNorm");
        method.StartRelevance.Should().Be(StartRelevance.AbsoluteTargetLogit);
        using var merged = new Explainer(model, method.CreateDefault(), new ExplainerOptions { Canonizers = new[] { new RootDtd.Canonizers.BatchNormMerger() } });
        using var unmerged = new Explainer(model, method.CreateDefault());
        merged.Graph.Nodes.Any(n => n.Kind == NodeKind.BatchNorm).Should().BeFalse();
        unmerged.Graph.Nodes.Any(n => n.Kind == NodeKind.BatchNorm).Should().BeTrue();
        using var a = merged.Explain(x, new long[] { 1 });
        using var b = unmerged.Explain(x, new long[] { 1 });
        var scale = b.InputRelevance.abs().max().item<double>();
        ((a.InputRelevance - b.InputRelevance).abs().max().item<double>() / scale).Should().BeLessThan(1e-8);
    }

    [Fact]
    public void RecordsSignalsAndRootsOnRequest()
    {
        using var scope = torch.NewDisposeScope();
        var model = SmallCnn();
        var x = Input(17, float64, 1, 3, 8, 8);
        using var explainer = new Explainer(model, PublishedRootPreset.Composite(),
            new ExplainerOptions { Canonizers = Array.Empty<RootDtd.Canonizers.ICanonizer>(), RecordRoots = true, CollectDiagnostics = true });
        using var e = explainer.Explain(x, new long[] { 0 });
        e.Tensors.Keys.Should().Contain(new[] { "conv1/signal", "conv1/root", "conv2/root", "fc1/root", "fc2/signal" });
        // first convolution: the root is inferred on the all-ones input
        (e.Tensors["conv1/signal"] + e.Tensors["conv1/root"]).sub(1).abs().max().item<double>().Should().BeLessThan(1e-12);
        e.Diagnostics.Select(d => d.Unit).Should().Contain(new[] { "conv1", "conv2", "fc1", "fc2" });
    }

    [Fact]
    public void FloatAndDeviceAgnosticSmokeInFloat32()
    {
        using var scope = torch.NewDisposeScope();
        var model = SmallResNet();
        model.to(float32);
        var x = Input(18, float32, 2, 3, 32, 32);
        var (composite, options) = PublishedRootPreset.Create();
        using var explainer = new Explainer(model, composite, options);
        using var e = explainer.Explain(x);
        ShouldBeFiniteWithTheInputShape(e, x);
    }
}
