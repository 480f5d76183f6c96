using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Rules;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

/// <summary>The static analysis of a graph is made once per graph; explanations with it are bit-for-bit those of a fresh explainer.</summary>
public sealed class GraphAnalysisTests
{
    /// <summary>Flatten → Linear first: the pixel box reaches the first unit through a shape-only path (bounds carried along it).</summary>
    private static nn.Module<Tensor, Tensor> DenseFirst()
    {
        torch.manual_seed(31);
        var net = nn.Sequential(("flatten", nn.Flatten()), ("fc1", nn.Linear(3 * 4 * 4, 10)), ("relu", nn.ReLU()), ("fc2", nn.Linear(10, 3)));
        net.to(float64).eval();
        return net;
    }

    [Fact]
    public void DomainsAndPathsAreKnownBeforeAnyInput()
    {
        using var scope = torch.NewDisposeScope();
        using var graph = GraphBuilder.Build(TestNets.CnnWithBatchNorm());
        new Canonizers.BatchNormMerger().Apply(graph);
        var analysis = new GraphAnalysis(graph);
        var low = torch.full(new long[] { 1, 3, 8, 8 }, -1.0, float64);
        var high = torch.full(new long[] { 1, 3, 8, 8 }, 1.0, float64);
        InputDomain DomainOf(string name) => analysis.DomainOf(graph.Nodes[graph.ModuleOutputs[name]], low, high).Domain;
        DomainOf("conv1").Should().Be(InputDomain.PixelBox);
        DomainOf("conv2").Should().Be(InputDomain.Relu);   // after ReLU → max-pool
        DomainOf("fc1").Should().Be(InputDomain.Relu);     // after ReLU → avg-pool → flatten
        DomainOf("fc2").Should().Be(InputDomain.Relu);     // after ReLU → dropout
        analysis.DomainOf(graph.Nodes[graph.ModuleOutputs["conv1"]], null, null).Domain.Should().Be(InputDomain.Free, "no bounds, no box");
        analysis.DomainOf(graph.Nodes[graph.ModuleOutputs["relu1"]], low, high).Domain.Should().Be(InputDomain.Free, "only units have a domain");
        analysis.Dispose();
    }

    [Fact]
    public void TheAnalysisIsMadeOncePerGraphAndTheResultsAreThoseOfAFreshExplainer()
    {
        using var scope = torch.NewDisposeScope();
        var model = DenseFirst();
        var low = torch.tensor(-1.5, float64);
        var high = torch.tensor(2.0, float64);
        var options = new ExplainerOptions { InputLow = low, InputHigh = high };
        using var explainer = new Explainer(model, MethodCatalog.Parse("root"), options);
        var analysis = explainer.Analysis;
        analysis.Should().NotBeNull();
        var batches = new[] { torch.randn(new long[] { 2, 3, 4, 4 }, float64, generator: torch.manual_seed(32)), torch.randn(new long[] { 1, 3, 4, 4 }, float64, generator: torch.manual_seed(33)) };
        // alternate the shapes: the bounds kept for one shape must not leak into the other
        foreach (var x in new[] { batches[0], batches[1], batches[0], batches[1] })
        {
            using var e = explainer.Explain(x);
            using var fresh = new Explainer(model, MethodCatalog.Parse("root"), options);
            using var f = fresh.Explain(x);
            e.InputRelevance.eq(f.InputRelevance).all().item<bool>().Should().BeTrue("bit for bit");
            e.Conservation.InputSum.Should().Equal(f.Conservation.InputSum);
            explainer.Analysis.Should().BeSameAs(analysis, "one analysis per graph, not per Explain");
        }
        explainer.Refresh();
        explainer.Analysis.Should().NotBeSameAs(analysis, "a rebuilt graph is analysed again");
        foreach (var method in new[] { "zbox", "combination" })
        {
            using var a = new Explainer(model, MethodCatalog.Parse(method), options);
            using var e1 = a.Explain(batches[0]);
            using var e2 = a.Explain(batches[0]);
            e1.InputRelevance.eq(e2.InputRelevance).all().item<bool>().Should().BeTrue(method);
        }
    }
}
