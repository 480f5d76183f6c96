using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Rules;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

/// <summary>
/// Layer-wise conservation in float64 on bias-free networks. Why these rules conserve exactly there: each of them
/// writes the (modified) pre-activation as a sum of per-input contributions, z_j = Σ_i c_ij (LRP-0: x_i w_ij; z⁺ and
/// α1β0: x⁺_i w⁺_ij + x⁻_i w⁻_ij; w²: w²_ij; flat: 1), and hands input i the share c_ij / z_j of R_j, so
/// Σ_i R_i = Σ_j R_j · z_j / stab(z_j). Without biases no term of z_j is missing, and with a stabiliser of 1e-15 the
/// last factor is 1 to ~1e-15 — provided z_j ≠ 0 wherever R_j ≠ 0. LRP-0, w² and flat meet that on these nets; z⁺ and
/// α1β0 do not in general: an output whose active inputs all meet negative weights has z⁺_j = 0 and its relevance is
/// lost (a negative logit, or a conv2/downsample output that feeds the residual sum without a ReLU; hand-worked in
/// RuleHandComputedTests). The ResNet below (weights seed 7, input seed 12) has no such output; on 24 of 30 other
/// weight seeds of the same net z⁺ lost between 2e-5 and all of the relevance. The test pins its premise, not a law. Left out: ε &gt; 0 (absorbs relevance), α2β1 (conserves only the difference of its
/// groups), γ (drops outputs with z = 0).
/// LRP-0, z⁺ and α1β0 give nothing to inactive ReLUs (their contributions contain x_i = 0); w² and flat ignore the
/// input and do give relevance to inactive units, which the next Norm node (average pooling, residual sum:
/// x_i·R/z with x = 0) then drops. That is why w² and flat are tested where they are used in practice — on the first
/// layer, the rest LRP-0 — and conserve there exactly.
/// Residual networks conserve across every *cut* of the graph (a node that every path from input to output passes
/// through), not at nodes inside a residual branch, which carry the branch's share: there the test checks that the
/// branch is conserved internally and that branch plus shortcut give the whole.
/// </summary>
public class ConservationTests
{
    private static readonly Stabilizer Tiny = new(1e-15);

    public static IEnumerable<object[]> Rules() => new[]
    {
        new object[] { "lrp0" },
        new object[] { "zplus" },
        new object[] { "alpha1beta0" },
        new object[] { "wsquare-first" },
        new object[] { "flat-first" },
    };

    private static Composite Conserving(string name)
    {
        Rule lrp0 = new EpsilonRule(1e-15);
        var c = new Composite(name).ForKind(NodeKind.AvgPool, new NormRule(Tiny)).ForKind(NodeKind.Sum, new NormRule(Tiny));
        return name switch
        {
            "lrp0" => c.ForAllUnits(lrp0),
            "zplus" => c.ForAllUnits(new ZPlusRule(Tiny)),
            "alpha1beta0" => c.ForAllUnits(new AlphaBetaRule(1, 0, Tiny)),
            "wsquare-first" => c.ForFirstUnit(new WSquareRule(Tiny)).ForAllUnits(lrp0),
            "flat-first" => c.ForFirstUnit(new FlatRule(Tiny)).ForAllUnits(lrp0),
            _ => throw new ArgumentOutOfRangeException(nameof(name)),
        };
    }

    /// <summary>Nodes that no edge jumps over: every path from the input to the output passes through them.</summary>
    private static HashSet<string> Cuts(RelevanceGraph graph)
    {
        var cuts = new HashSet<string>();
        for (var i = 1; i < graph.Nodes.Count; i++)
            if (graph.Nodes.Skip(i + 1).All(k => k.Inputs.All(j => j >= i))) cuts.Add(graph.Nodes[i].Name);
        return cuts;
    }

    private static void Close(double actual, double expected, double logit, string what) =>
        Math.Abs(actual - expected).Should().BeLessThanOrEqualTo(1e-9 * Math.Abs(logit), $"{what}: {actual:R} vs {expected:R}");

    private static void AssertConservation(Explanation e, RelevanceGraph graph)
    {
        var start = e.Conservation.StartRelevance;
        start.Should().OnlyContain(v => Math.Abs(v) > 1e-6, "the explained logits must not vanish for the check to mean anything");
        var cuts = Cuts(graph);
        var sums = e.Conservation.Layers.ToDictionary(l => l.Layer, l => l.Sums);
        sums.Should().HaveCount(graph.Nodes.Count - 1);
        for (var s = 0; s < start.Length; s++)
        {
            start[s].Should().BeApproximately(e.Logits[s, e.Targets[s]].item<double>(), 1e-12);
            foreach (var (layer, values) in e.Conservation.Layers.Where(l => cuts.Contains(l.Layer)))
                Close(values[s], start[s], start[s], $"cut {layer}, sample {s}");
            Close(e.Conservation.InputSum[s], start[s], start[s], $"input, sample {s}");
            // residual blocks: conv1 → relu → conv2 is a chain (same Σ); branch + shortcut = the block's input relevance
            foreach (var block in graph.Nodes.Where(n => n.Kind == NodeKind.Sum).Select(n => n.Name[..^".sum".Length]))
            {
                var branch = sums[block + ".conv2"][s];
                Close(sums[block + ".conv1"][s], branch, start[s], $"{block}.conv1 vs conv2, sample {s}");
                Close(sums[block + ".relu"][s], branch, start[s], $"{block}.relu vs conv2, sample {s}");
                if (sums.TryGetValue(block + ".downsample.0", out var shortcut))
                    Close(shortcut[s] + branch, start[s], start[s], $"{block}: downsample + branch, sample {s}");
            }
        }
        e.Conservation.MaxRelativeError.Should().BeLessThan(1e-9);
    }

    [Theory]
    [MemberData(nameof(Rules))]
    public void BiasFreeSequentialCnnConservesAtEveryLayer(string name)
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.BiasFreeCnn();
        torch.manual_seed(11);
        var x = torch.randn(3, 3, 8, 8, float64);
        using var explainer = new Explainer(model, Conserving(name));
        Cuts(explainer.Graph).Should().HaveCount(explainer.Graph.Nodes.Count - 1, "a chain: every node is a cut");
        using var e = explainer.Explain(x, new long[] { 0, 1, 3 });
        AssertConservation(e, explainer.Graph);
    }

    [Theory]
    [MemberData(nameof(Rules))]
    public void BiasFreeResNetConservesAcrossEveryCutAndInsideEveryBranch(string name)
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.SmallResNet(biasFree: true);
        torch.manual_seed(12);
        var x = torch.randn(2, 3, 32, 32, float64);
        using var explainer = new Explainer(model, Conserving(name));
        // the merged BatchNorms really are bias-free (mean 0, β 0), so the premise holds
        foreach (var unit in explainer.Graph.Units)
            if (unit.Unit.Bias is { } b) b.abs().max().item<double>().Should().Be(0, unit.Name);
        explainer.Graph.Nodes.Count(n => n.Kind == NodeKind.Sum).Should().Be(4);
        Cuts(explainer.Graph).Should().Contain(new[] { "conv1", "maxpool", "layer1.0.relu_out", "layer4.0.sum", "fc" });
        using var e = explainer.Explain(x, new long[] { 2, 4 });
        AssertConservation(e, explainer.Graph);
    }

    [Fact]
    public void WSquareOnUpperLayersLosesTheRelevanceItGivesToInactiveUnits()
    {
        // the reason for "-first" above, demonstrated: w² everywhere leaks at the average pool
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.BiasFreeCnn();
        torch.manual_seed(11);
        using var explainer = new Explainer(model, new Composite("w2").ForAllUnits(new WSquareRule(Tiny)).ForKind(NodeKind.AvgPool, new NormRule(Tiny)));
        using var e = explainer.Explain(torch.randn(3, 3, 8, 8, float64), new long[] { 0, 1, 3 });
        var pool = e.Conservation.Layers.Single(l => l.Layer == "pool2").Sums;
        var relu = e.Conservation.Layers.Single(l => l.Layer == "relu2").Sums;
        pool.Zip(e.Conservation.StartRelevance).Should().OnlyContain(p => Math.Abs(p.First - p.Second) < 1e-9 * Math.Abs(p.Second));
        relu.Zip(pool).Should().Contain(p => Math.Abs(p.First - p.Second) > 1e-6 * Math.Abs(p.Second));
    }

    [Fact]
    public void BiasesAndEpsilonVisiblyBreakConservation()
    {
        // the control: the same check fails where the premise fails, so the tests above are not vacuous
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.CnnWithBatchNorm();
        torch.manual_seed(13);
        using var explainer = new Explainer(model, Composites.Composites.Epsilon(0.25));
        using var e = explainer.Explain(torch.randn(2, 3, 8, 8, float64));
        e.Conservation.MaxRelativeError.Should().BeGreaterThan(1e-6);
    }
}
