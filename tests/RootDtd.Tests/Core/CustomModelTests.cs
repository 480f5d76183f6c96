using System.Runtime.CompilerServices;
using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Graph;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

// snippet: residual-block
/// <summary>relu(conv2(relu(conv1(x))) + x): the addition and the last ReLU are functional.</summary>
public sealed class ResidualAddBlock : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d conv1;
    private readonly Conv2d conv2;
    private readonly ReLU relu = nn.ReLU();

    public ResidualAddBlock(int channels) : base(nameof(ResidualAddBlock))
    {
        conv1 = nn.Conv2d(channels, channels, 3, padding: 1);
        conv2 = nn.Conv2d(channels, channels, 3, padding: 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => nn.functional.relu(conv2.call(relu.call(conv1.call(x))) + x);
}
// /snippet

/// <summary>Custom modules: chains recognised by a probe forward, errors that say what to register, the documented adapter.</summary>
public sealed class CustomModelTests
{
    /// <summary>conv → relu (→ conv → relu, the same ReLU module called twice), called through <c>call()</c>.</summary>
    private sealed class ChainBlock : nn.Module<Tensor, Tensor>
    {
        public ChainBlock(int inC, int outC, bool twice) : base(nameof(ChainBlock))
        {
            conv = nn.Conv2d(inC, outC, 3, padding: 1);
            conv2 = twice ? nn.Conv2d(outC, outC, 3, padding: 1) : null;
            RegisterComponents();
        }

        public readonly Conv2d conv;
        public readonly Conv2d? conv2;
        public readonly ReLU relu = nn.ReLU();

        public override Tensor forward(Tensor x)
        {
            var h = relu.call(conv.call(x));
            return conv2 is null ? h : relu.call(conv2.call(h));
        }
    }

    /// <summary>The same residual block as <see cref="ResidualAddBlock"/>, but with no adapter registered anywhere.</summary>
    private sealed class UnregisteredResidualBlock : nn.Module<Tensor, Tensor>
    {
        private readonly Conv2d conv1;
        private readonly Conv2d conv2;

        public UnregisteredResidualBlock(int channels) : base(nameof(UnregisteredResidualBlock))
        {
            conv1 = nn.Conv2d(channels, channels, 3, padding: 1);
            conv2 = nn.Conv2d(channels, channels, 3, padding: 1);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => nn.functional.relu(conv2.call(nn.functional.relu(conv1.call(x))) + x);
    }

    /// <summary>Calls its child with <c>forward()</c>, which no hook sees.</summary>
    private sealed class ForwardCallingBlock : nn.Module<Tensor, Tensor>
    {
        private readonly Conv2d conv;

        public ForwardCallingBlock() : base(nameof(ForwardCallingBlock))
        {
            conv = nn.Conv2d(3, 4, 3, padding: 1);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => conv.forward(x);
    }

    /// <summary>A chain with an in-place ReLU between its calls: the probe sees a chain, the forward check sees the difference.</summary>
    private sealed class InPlaceBlock : nn.Module<Tensor, Tensor>
    {
        private readonly Conv2d conv1;
        private readonly Conv2d conv2;

        public InPlaceBlock() : base(nameof(InPlaceBlock))
        {
            conv1 = nn.Conv2d(3, 4, 3, padding: 1);
            conv2 = nn.Conv2d(4, 4, 3, padding: 1);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            var h = conv1.call(x);
            h.relu_();
            return conv2.call(h);
        }
    }

    /// <summary>A leaf module of its own (no children, no adapter).</summary>
    private sealed class Squash : nn.Module<Tensor, Tensor>
    {
        public Squash() : base(nameof(Squash)) { }

        public override Tensor forward(Tensor x) => x.tanh();
    }

    private static Sequential Head(nn.Module<Tensor, Tensor> block, long features) => nn.Sequential(
        ("block", block), ("pool", nn.MaxPool2d(2)), ("flatten", nn.Flatten()), ("fc", nn.Linear(features, 3)));

    private static Tensor Images(long seed) => torch.randn(new long[] { 2, 3, 8, 8 }, float64, generator: torch.manual_seed(seed));

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AChainOfKnownModulesNeedsNoAdapterAndExplainsAsTheEquivalentSequential(bool twice)
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(21);
        var block = new ChainBlock(3, 4, twice);
        var model = Head(block, 4 * 4 * 4);
        model.to(float64).eval();
        // the same modules, written as a Sequential the built-in adapters know
        var inner = twice
            ? nn.Sequential(("conv", block.conv), ("relu", block.relu), ("conv2", block.conv2!), ("relu2", nn.ReLU()))
            : nn.Sequential(("conv", block.conv), ("relu", block.relu));
        var reference = nn.Sequential(("block", inner), ("pool", (nn.Module<Tensor, Tensor>)model[1]), ("flatten", (nn.Module<Tensor, Tensor>)model[2]), ("fc", (nn.Module<Tensor, Tensor>)model[3]));
        var x = Images(22);
        foreach (var method in new[] { "epsilon-plus-flat", "gradient", "root" })
        {
            using var explainer = new Explainer(model, MethodCatalog.Parse(method));
            FluentActions.Invoking(() => explainer.Graph).Should().Throw<InvalidOperationException>().WithMessage("*probe forward*first Explain*ProbeInput*");
            using var expected = new Explainer(reference, MethodCatalog.Parse(method));
            using var e = explainer.Explain(x);
            using var r = expected.Explain(x);
            TestNets.RelativeDifference(e.InputRelevance, r.InputRelevance).Should().BeLessThan(1e-12, method);
            explainer.Graph.Nodes.Select(n => n.Name).Should().Equal(twice
                ? new[] { "input", "block.conv", "block.relu", "block.conv2", "block.relu#2", "pool", "flatten", "fc" }
                : new[] { "input", "block.conv", "block.relu", "pool", "flatten", "fc" });
            explainer.Graph.ModuleOutputs["block"].Should().Be(twice ? 4 : 2);
        }

        // with a probe input the graph exists from the constructor on
        using var eager = new Explainer(model, MethodCatalog.Parse("epsilon"), new ExplainerOptions { ProbeInput = x });
        eager.RuleAssignment.Select(a => a.Node).Should().Contain("block.conv");
    }

    [Fact]
    public void AModuleThatIsNotAChainSaysExactlyWhatToRegister()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(23);
        var model = Head(new UnregisteredResidualBlock(3), 3 * 4 * 4);
        model.to(float64).eval();
        using var explainer = new Explainer(model, MethodCatalog.Parse("epsilon"));
        var e = FluentActions.Invoking(() => explainer.Explain(Images(24))).Should().Throw<NotSupportedException>().Which;
        e.Message.Should().Contain("Module 'block' of type").And.Contain(nameof(UnregisteredResidualBlock))
            .And.Contain("not a chain of known modules: 'block.conv2' does not read the output of 'block.conv1' (an operation between them")
            .And.Contain($"ModuleAdapters.Default.Register<{nameof(UnregisteredResidualBlock)}>((b, path, m, x) =>")
            .And.Contain("b.AddSum").And.Contain("docs/custom-models.md");
        e.Message.Should().NotContain("ModuleAdapters.Register<");
        // the same at construction when a probe input is given
        FluentActions.Invoking(() => new Explainer(model, MethodCatalog.Parse("epsilon"), new ExplainerOptions { ProbeInput = Images(24) }))
            .Should().Throw<NotSupportedException>().WithMessage("*'block'*not a chain*");
    }

    [Fact]
    public void ChildrenCalledWithForwardAndLeafModulesAreNamed()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(25);
        var forwardCalling = Head(new ForwardCallingBlock(), 4 * 4 * 4);
        forwardCalling.to(float64).eval();
        using var a = new Explainer(forwardCalling, MethodCatalog.Parse("epsilon"));
        FluentActions.Invoking(() => a.Explain(Images(26))).Should().Throw<NotSupportedException>()
            .WithMessage("*'block'*called no module through Module.call()*Register<ForwardCallingBlock>*");

        var leaf = nn.Sequential(("conv", nn.Conv2d(3, 4, 3)), ("squash", new Squash()), ("flatten", nn.Flatten()), ("fc", nn.Linear(4 * 6 * 6, 2)));
        leaf.to(float64).eval();
        FluentActions.Invoking(() => new Explainer(leaf, MethodCatalog.Parse("epsilon"))).Should().Throw<NotSupportedException>()
            .WithMessage("*'squash'*has no adapter and no child modules*ModuleAdapters.Default.Register<Squash>*");
    }

    [Fact]
    public void AnOperationTheProbeCannotSeeIsCaughtByTheForwardCheck()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(27);
        var model = Head(new InPlaceBlock(), 4 * 4 * 4);
        model.to(float64).eval();
        using var explainer = new Explainer(model, MethodCatalog.Parse("epsilon"));
        FluentActions.Invoking(() => explainer.Explain(Images(28))).Should().Throw<ExplanationException>()
            .WithMessage("*does not reproduce the model's output*ModuleAdapters.Default.Register<T>*");
    }

    [Fact]
    public void TheDocumentedResidualAdapterExplainsTheBlock()
    {
        DocumentSnippet("residual-block").Should().Equal(SourceSnippet("residual-block"), "docs/custom-models.md shows the block this test compiles");
        DocumentSnippet("residual-adapter").Should().Equal(SourceSnippet("residual-adapter"), "docs/custom-models.md shows the adapter this test runs");

        // snippet: residual-adapter
        ModuleAdapters.Default.Register<ResidualAddBlock>((b, path, m, x) =>
        {
            var h = b.AddChildren(path, m, x, "conv1", "relu", "conv2");
            var sum = b.AddSum(GraphBuilder.Join(path, "sum"), h, x);
            return b.AddRelu(GraphBuilder.Join(path, "relu_out"), sum);
        });
        // /snippet

        using var scope = torch.NewDisposeScope();
        torch.manual_seed(29);
        var model = nn.Sequential(("stem", nn.Conv2d(3, 4, 3, padding: 1)), ("block", new ResidualAddBlock(4)),
            ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(4, 3)));
        model.to(float64).eval();
        var x = Images(30);
        using var explainer = new Explainer(model, MethodCatalog.Parse("gradient"));
        explainer.Graph.Nodes.Select(n => n.Name).Should().Contain(new[] { "block.conv1", "block.relu", "block.conv2", "block.sum", "block.relu_out" });
        using var e = explainer.Explain(x, new long[] { 1, 2 });   // the forward check runs and passes

        // independent truth: autograd's gradient of the explained logits through the model itself
        var input = x.clone().requires_grad_(true);
        var logits = model.call(input);
        var picked = logits.gather(1, torch.tensor(new long[] { 1, 2 }).view(-1, 1)).sum();
        var grad = torch.autograd.grad(new[] { picked }, new[] { input })[0];
        TestNets.RelativeDifference(e.InputRelevance, grad).Should().BeLessThan(1e-12);

        // and an LRP method conserves the logit through the residual sum (bias terms absorb the rest, so only finiteness and the check)
        using var lrp = new Explainer(model, MethodCatalog.Parse("epsilon"));
        using var le = lrp.Explain(x);
        le.InputRelevance.isfinite().all().item<bool>().Should().BeTrue();
    }

    private static List<string> DocumentSnippet(string name)
    {
        var doc = Path.Combine(RepositoryRoot(), "docs", "custom-models.md");
        File.Exists(doc).Should().BeTrue(doc);
        var lines = File.ReadAllLines(doc);
        var start = Array.FindIndex(lines, l => l.Trim() == $"<!-- snippet: {name} -->");
        var end = Array.FindIndex(lines, start + 1, l => l.Trim() == "<!-- /snippet -->");
        start.Should().BeGreaterThanOrEqualTo(0, $"the doc marks the snippet '{name}'");
        return Normalize(lines[(start + 1)..end].Where(l => !l.TrimStart().StartsWith("```", StringComparison.Ordinal)));
    }

    private static List<string> SourceSnippet(string name, [CallerFilePath] string source = "")
    {
        var lines = File.ReadAllLines(source);
        var start = Array.FindIndex(lines, l => l.Trim() == $"// snippet: {name}");
        var end = Array.FindIndex(lines, start + 1, l => l.Trim() == "// /snippet");
        start.Should().BeGreaterThanOrEqualTo(0, $"the test marks the snippet '{name}'");
        return Normalize(lines[(start + 1)..end]);
    }

    private static List<string> Normalize(IEnumerable<string> lines) => lines.Select(l => l.Trim()).Where(l => l.Length > 0).ToList();

    private static string RepositoryRoot([CallerFilePath] string source = "")
    {
        var dir = Path.GetDirectoryName(source);
        while (dir is not null && !File.Exists(Path.Combine(dir, "RootDtd.sln"))) dir = Path.GetDirectoryName(dir);
        return dir ?? throw new InvalidOperationException($"No RootDtd.sln above {source}.");
    }
}
