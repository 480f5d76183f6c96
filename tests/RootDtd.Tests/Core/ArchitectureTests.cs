using FluentAssertions;
using RootDtd.Graph;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;
using C = RootDtd.Composites.Composites;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Tests.Core;

/// <summary>Custom architectures through registered adapters; torchvision models; state-dict compatibility of RootDtd's models.</summary>
public class ArchitectureTests
{
    private readonly ITestOutputHelper _output;

    public ArchitectureTests(ITestOutputHelper output) => _output = output;

    /// <summary>relu(a(x)) + relu(b(x)) with two convolution branches.</summary>
    private sealed class TwoBranch : nn.Module<Tensor, Tensor>
    {
        private readonly Conv2d a;
        private readonly Conv2d b;

        public TwoBranch(long channels) : base("TwoBranch")
        {
            a = nn.Conv2d(channels, channels, 3, padding: 1, bias: false);
            b = nn.Conv2d(channels, channels, 1, bias: false);
            RegisterComponents();
        }

        public override Tensor forward(Tensor input) => F.relu(a.forward(input)) + F.relu(b.forward(input));
    }

    private static ModuleAdapters TwoBranchAdapters() => ModuleAdapters.CreateBuiltIn().Register<TwoBranch>((builder, path, m, x) =>
    {
        var left = builder.AddRelu(GraphBuilder.Join(path, "relu_a"), builder.AddChildren(path, m, x, "a"));
        var right = builder.AddRelu(GraphBuilder.Join(path, "relu_b"), builder.AddChildren(path, m, x, "b"));
        return builder.AddSum(GraphBuilder.Join(path, "sum"), left, right);
    });

    private static Sequential TwoBranchModel()
    {
        torch.manual_seed(41);
        var model = nn.Sequential(("conv", nn.Conv2d(3, 4, 3, padding: 1, bias: false)), ("relu", nn.ReLU()), ("block", new TwoBranch(4)),
            ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(4, 3, hasBias: false)));
        model.to(float64).eval();
        return model;
    }

    [Fact]
    public void ACustomTwoBranchBlockIsExplainedThroughItsRegisteredAdapter()
    {
        using var scope = torch.NewDisposeScope();
        using var model = TwoBranchModel();
        // without its adapter: a two-branch block is no chain, so the probe forward of the first Explain says what to register
        using var withoutAdapter = new Explainer(model, C.EpsilonPlusFlat());
        var unsupported = () => withoutAdapter.Explain(torch.randn(1, 3, 6, 6, float64));
        unsupported.Should().Throw<NotSupportedException>().WithMessage("*'block'*TwoBranch*not a chain*ModuleAdapters.Default.Register<TwoBranch>*");

        using var explainer = new Explainer(model, C.EpsilonPlusFlat(), new ExplainerOptions { Adapters = TwoBranchAdapters(), RecordLayers = new[] { "block.a", "block.b", "block" } });
        explainer.Graph.ModuleOutputs.Keys.Should().Contain(new[] { "block", "block.a", "block.b" });
        torch.manual_seed(42);
        var x = torch.randn(2, 3, 6, 6, float64);
        using var e = explainer.Explain(x);
        Tensor expected;
        using (torch.no_grad()) expected = model.call(x);
        TestNets.RelativeDifference(e.Logits, expected).Should().BeLessThan(1e-12);
        // bias-free, z⁺/flat/ε=1e-6: conservation up to the stabiliser; the two branches share the block's relevance
        e.Conservation.MaxRelativeError.Should().BeLessThan(1e-4);
        var branches = (e.LayerRelevance["block.a"].sum() + e.LayerRelevance["block.b"].sum()).item<double>();
        branches.Should().BeApproximately(e.LayerRelevance["block"].sum().item<double>(), 1e-4 * Math.Abs(branches));
        // the global registry is untouched by the custom registry
        ModuleAdapters.Default.Find(new TwoBranch(1)).Should().BeNull();
    }

    [Fact]
    public void TorchVisionResNet18IsExplainedAndReproduced()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(43);
        using var model = torchvision.models.resnet18(num_classes: 10);
        ZeroDenseBiases(model);
        model.eval();
        ExplainAndCheck(model, "resnet18");
    }

    [Fact]
    public void TorchVisionVgg11IsExplainedAndReproduced()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(44);
        using var model = torchvision.models.vgg11(num_classes: 10);
        ZeroDenseBiases(model);
        model.eval();
        ExplainAndCheck(model, "vgg11");
    }

    /// <summary>
    /// torchvision initialises BatchNorm with β = 0 and μ = 0 and convolutions without bias (resnet) or with zero bias
    /// (vgg), so with the dense biases zeroed the only relevance that leaves the network is the stabiliser's.
    /// </summary>
    private static void ZeroDenseBiases(nn.Module model)
    {
        using var _ = torch.no_grad();
        foreach (var (name, p) in model.named_parameters())
            if (name.EndsWith(".bias", StringComparison.Ordinal)) p.zero_();
    }

    private void ExplainAndCheck(nn.Module<Tensor, Tensor> model, string name)
    {
        var x = torch.randn(2, 3, 64, 64);
        using var explainer = new Explainer(model, C.EpsilonPlusFlat());
        using var e = explainer.Explain(x);
        Tensor expected;
        using (torch.no_grad()) expected = model.call(x);
        var diff = TestNets.RelativeDifference(e.Logits, expected);
        _output.WriteLine($"{name}: graph vs model logits {diff:e2}, conservation error {e.Conservation.MaxRelativeError:e2}, {explainer.Graph.Nodes.Count} nodes");
        diff.Should().BeLessThan(1e-5);
        e.InputRelevance.shape.Should().Equal(x.shape);
        e.Heatmap.shape.Should().Equal(2, 64, 64);
        torch.isfinite(e.InputRelevance).all().item<bool>().Should().BeTrue();
        e.Conservation.MaxRelativeError.Should().BeLessThan(1e-2, "float32 and ε = 1e-6 only");
    }

    [Fact]
    public void RootDtdModelsHaveTorchVisionStateDictKeys()
    {
        using var scope = torch.NewDisposeScope();
        using (var mine = global::RootDtd.Models.ResNet.ResNet18())
        using (var theirs = torchvision.models.resnet18())
            AssertSameKeys(mine, theirs, 122);
        using (var mine = global::RootDtd.Models.Vgg.Vgg11())
        using (var theirs = torchvision.models.vgg11())
            AssertSameKeys(mine, theirs, 22);
    }

    private static void AssertSameKeys(nn.Module mine, nn.Module theirs, int count)
    {
        var a = mine.state_dict().Select(kv => (kv.Key, string.Join("x", kv.Value.shape))).ToList();
        var b = theirs.state_dict().Select(kv => (kv.Key, string.Join("x", kv.Value.shape))).ToList();
        a.Should().HaveCount(count);
        a.Should().Equal(b);
    }
}
