using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

/// <summary>
/// The backward pass on its own (a graph and a method, no model), and the Explainer as a facade over it: the same
/// explanation bit for bit, one pass per graph, the model-side checks in the facade only.
/// </summary>
public sealed class BackwardPassTests
{
    [Theory]
    [InlineData("epsilon-plus-flat")]
    [InlineData("root")]
    [InlineData("integrated-gradients:steps=4")]
    public void APassOverTheModelsGraphGivesTheExplainersExplanationBitForBit(string method)
    {
        using var scope = torch.NewDisposeScope();
        var model = TestNets.CnnWithBatchNorm();
        TestNets.RandomizeBatchNorm(model);
        var x = torch.randn(new long[] { 3, 3, 8, 8 }, float64, generator: torch.manual_seed(41));
        var options = new ExplainerOptions { InputLow = torch.tensor(-3.0, float64), InputHigh = torch.tensor(3.0, float64) };
        using var explainer = new Explainer(model, MethodCatalog.Parse(method), options);
        using var pass = new BackwardPass(GraphBuilder.Build(model), MethodCatalog.Parse(method), options);
        using var e = explainer.Explain(x, new long[] { 0, 1, 2 });
        using var p = pass.Run(x, new long[] { 0, 1, 2 });
        p.InputRelevance.eq(e.InputRelevance).all().item<bool>().Should().BeTrue("the explainer hands the explanation to an identical pass");
        p.Logits.eq(e.Logits).all().item<bool>().Should().BeTrue();
        p.Conservation.InputSum.Should().Equal(e.Conservation.InputSum);
        pass.RuleAssignment.Should().Equal(explainer.RuleAssignment);
        pass.Graph.Nodes.Select(n => n.Kind).Should().NotContain(NodeKind.BatchNorm, "the pass applies the method's canonizers (BatchNorm merged)");
    }

    [Fact]
    public void OnABiasFreeGraphGradientTimesInputSumsToTheLogitWithoutAnyModelCall()
    {
        using var scope = torch.NewDisposeScope();
        var model = TestNets.BiasFreeCnn();
        var x = torch.randn(new long[] { 2, 3, 8, 8 }, float64, generator: torch.manual_seed(42));
        using var pass = new BackwardPass(GraphBuilder.Build(model), MethodCatalog.Parse("gradient-x-input"));
        // the model's weights change after the graph was built: the pass explains its own graph (its copies), never the model
        using (torch.no_grad()) foreach (var prm in model.parameters()) prm.mul_(-2);
        using var e = pass.Run(x);
        var graphLogits = e.Logits.gather(1, torch.tensor(e.Targets).unsqueeze(1)).squeeze(1);
        for (var i = 0; i < 2; i++)
            e.Conservation.InputSum[i].Should().BeApproximately(graphLogits[i].item<double>(), 1e-10 * Math.Max(1, Math.Abs(graphLogits[i].item<double>())), "a bias-free ReLU network is positively homogeneous: Σ x ⊙ ∂f/∂x = f(x)");
        ((Tensor)((nn.Module<Tensor, Tensor>)model).forward(x)).eq(e.Logits).all().item<bool>().Should().BeFalse("the model itself now computes other logits");
    }

    [Fact]
    public void TheExplainerKeepsOnePassPerGraphAndRefreshMakesANewOne()
    {
        using var scope = torch.NewDisposeScope();
        var model = TestNets.CnnWithBatchNorm();
        using var explainer = new Explainer(model, MethodCatalog.Parse("epsilon-plus-flat"));
        var pass = explainer.Pass;
        var x = torch.randn(new long[] { 1, 3, 8, 8 }, float64, generator: torch.manual_seed(43));
        using (explainer.Explain(x)) { }
        using (explainer.Explain(x)) { }
        explainer.Pass.Should().BeSameAs(pass);
        explainer.Graph.Should().BeSameAs(pass.Graph);
        explainer.Refresh();
        explainer.Pass.Should().NotBeSameAs(pass);
    }

    [Fact]
    public void APassChecksTheInputAgainstItsGraphAndRefusesWhatItCannotExplain()
    {
        using var scope = torch.NewDisposeScope();
        var model = TestNets.CnnWithBatchNorm();
        using var pass = new BackwardPass(GraphBuilder.Build(model), MethodCatalog.Parse("epsilon-plus-flat"));
        var wrongChannels = torch.randn(new long[] { 1, 4, 8, 8 }, float64);
        pass.Invoking(p => p.Run(wrongChannels)).Should().Throw<ArgumentException>().WithMessage("*'conv1' expects input*");
        var nan = torch.full(new long[] { 1, 3, 8, 8 }, double.NaN, float64);
        pass.Invoking(p => p.Run(nan)).Should().Throw<ArgumentException>().WithMessage("*NaN or infinite*");
        pass.Invoking(p => p.Run(torch.zeros(new long[] { 0, 3, 8, 8 }, float64))).Should().Throw<ArgumentException>().WithMessage("*batch is empty*");

        // a token-map method needs attention: refused at construction, naming the method
        var graph = GraphBuilder.Build(model);
        var act = () => new BackwardPass(graph, MethodCatalog.Parse("rollout"));
        act.Should().Throw<ExplanationException>().WithMessage("*'rollout'*token map*");
    }

    [Fact]
    public void APassOverAVisionTransformerGraphGivesTheExplainersTokenMap()
    {
        using var scope = torch.NewDisposeScope();
        using var vit = (VisionTransformer)ModelZoo.Create("vit-test-patch8-32", 10);
        vit.to(float64).eval();
        var x = torch.randn(new long[] { 2, 3, 32, 32 }, float64, generator: torch.manual_seed(44));
        foreach (var method in new[] { "chefer", "attn-lrp" })
        {
            using var explainer = new Explainer(vit, MethodCatalog.Parse(method));
            using var pass = new BackwardPass(GraphBuilder.Build(vit), MethodCatalog.Parse(method));
            using var e = explainer.Explain(x);
            using var p = pass.Run(x);
            p.InputRelevance.eq(e.InputRelevance).all().item<bool>().Should().BeTrue(method);
            (p.TokenMap is null).Should().Be(e.TokenMap is null);
            if (e.TokenMap is not null) p.TokenMap!.eq(e.TokenMap).all().item<bool>().Should().BeTrue(method);
        }
    }
}
