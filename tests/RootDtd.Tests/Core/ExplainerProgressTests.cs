using FluentAssertions;
using RootDtd.Composites;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

public sealed class ExplainerProgressTests
{
    private sealed class Collect : IProgress<ExplanationProgress>
    {
        public List<ExplanationProgress> Reports { get; } = new();

        public void Report(ExplanationProgress value) => Reports.Add(value);
    }

    [Fact]
    public void Every_node_is_reported_once_in_order_and_the_last_report_is_complete()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        var net = nn.Sequential(("0", nn.Conv2d(3, 4, 3)), ("1", nn.ReLU()), ("2", nn.Conv2d(4, 4, 3)), ("3", nn.ReLU()), ("4", nn.Flatten()), ("5", nn.Linear(4 * 4 * 4, 3)));
        net.eval();
        var progress = new Collect();
        using var explainer = new Explainer(net, MethodCatalog.Parse("epsilon"), new ExplainerOptions { Progress = progress });
        using var e1 = explainer.Explain(rand(2, 3, 8, 8));
        var nodes = explainer.Graph.Nodes.Count - 1;
        progress.Reports.Should().HaveCount(nodes);
        progress.Reports.Select(r => r.NodesDone).Should().Equal(Enumerable.Range(1, nodes));
        progress.Reports.Should().OnlyContain(r => r.NodeCount == nodes && r.UnitCount == 3);
        progress.Reports.Select(r => r.UnitsDone).Should().BeInAscendingOrder();
        progress.Reports.Select(r => r.Fraction).Should().BeInAscendingOrder().And.OnlyContain(f => f >= 0 && f <= 1);
        progress.Reports[^1].Fraction.Should().Be(1);
        progress.Reports.Select(r => r.Fraction).Distinct().Should().HaveCountGreaterThan(2, "the fraction moves within one explanation");
        // the backward walk goes from the logits to the input: the dense layer comes first, the first conv last
        progress.Reports.First(r => r.UnitsDone == 1).Node.Should().Be("5");
        progress.Reports.Last().Node.Should().Be("0");

        using var e2 = explainer.Explain(rand(1, 3, 8, 8));
        progress.Reports.Should().HaveCount(2 * nodes, "every explanation reports");
    }
}
