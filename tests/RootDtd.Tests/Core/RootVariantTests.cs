using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Rules;
using RootDtd.Rules.RootInference;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

/// <summary>The issue-14 root variants (root-gated, root-shape, root-channel): hand-worked values on the spec's worked unit, batch = singles, conservation.</summary>
public sealed class RootVariantTests
{
    // the spec's worked unit: W = [[1, −1], [2, 1]], x = [1, 2] on the ReLU domain; W⁺ = [[1, 0], [2, 1]], F(x) = [1, 4]
    private static readonly double[,] W = { { 1, -1 }, { 2, 1 } };

    private static double[] Dense(Rule rule, double[] x, double[] r, double[]? bias = null, InputDomain domain = InputDomain.Relu)
    {
        using var scope = torch.NewDisposeScope();
        var unit = LinearUnit.Dense(torch.tensor(W.Cast<double>().ToArray(), new long[] { 2, 2 }, float64), bias is null ? null : torch.tensor(bias, float64));
        var node = new LinearUnitNode("dense", unit, 0);
        try
        {
            return TestNets.Propagate(rule, node, new[] { torch.tensor(x, float64).view(-1, 2) }, torch.tensor(r, float64).view(-1, 2), domain);
        }
        finally
        {
            unit.Dispose();
        }
    }

    private static RootInferenceOptions Steps(int steps) => RootInferenceOptions.Default with { Steps = steps };

    [Fact]
    public void Channel_OneStep_HandWorked()
    {
        // F(m⊙x) = [m₁, 2m₁ + 2m₂]; at m = 1: d = F − R = [1, 1]; h = x ⊙ W⁺ᵀd = [1·3, 2·1] = [3, 2];
        // J·h = W⁺(h⊙x) = W⁺[3, 4] = [3, 10]; α = 13/109; m' = [70/109, 83/109] (inside [0, 1]);
        // S = [70/109, 166/109], F(S) = [70/109, 306/109]; R_in = S ⊙ W⁺ᵀ[0, 3/F₂] = [420/306, 498/306]
        var rin = Dense(new ChannelRootRule(Steps(1), shape: false), new[] { 1.0, 2 }, new[] { 0.0, 3 });
        rin[0].Should().BeApproximately(420.0 / 306, 1e-9);
        rin[1].Should().BeApproximately(498.0 / 306, 1e-9);
        (rin[0] + rin[1]).Should().BeApproximately(3, 1e-8, "normalized: Σ R_in = Σ R (to the stabiliser's 1e-9/F₂)");

        using var unit = LinearUnit.Dense(torch.tensor(W.Cast<double>().ToArray(), new long[] { 2, 2 }, float64), null);
        using var x = torch.tensor(new[] { 1.0, 2 }, float64).view(1, 2);
        using var r = torch.tensor(new[] { 0.0, 3 }, float64).view(1, 2);
        var result = ChannelRootSolver.Solve(unit, x, r, InputDomain.Relu, Steps(1), shape: false);
        result.Mask.data<double>().ToArray().Should().BeEquivalentTo(new[] { 70.0 / 109, 83.0 / 109 }, o => o.Using<double>(c => c.Subject.Should().BeApproximately(c.Expectation, 1e-12)).WhenTypeIs<double>());
        result.InitialLoss.item<double>().Should().BeApproximately(2, 1e-12);
        var f2 = 306.0 / 109;
        result.FinalLoss.item<double>().Should().BeApproximately(Math.Pow(70.0 / 109, 2) + Math.Pow(f2 - 3, 2), 1e-12);
        result.AcceptedSteps.item<double>().Should().Be(1);
    }

    [Fact]
    public void Channel_ShapeFit_AtTheCornerStaysAtX_WhichIsZPlusWithoutBias()
    {
        // c = ΣF(x)/ΣR = 5/3, target [0, 5]: d = [1, −1], h = x ⊙ W⁺ᵀd = [−1, −2] pushes m above 1: clipped, S = x;
        // R_in = x ⊙ W⁺ᵀ[0, 3/4] = [1.5, 1.5]
        var rin = Dense(new ChannelRootRule(Steps(5)), new[] { 1.0, 2 }, new[] { 0.0, 3 });
        rin[0].Should().BeApproximately(1.5, 1e-9);
        rin[1].Should().BeApproximately(1.5, 1e-9);
        var steps0 = Dense(new RootInferenceRule(Steps(0)), new[] { 1.0, 2 }, new[] { 0.0, 3 });
        rin.Should().BeEquivalentTo(steps0, o => o.Using<double>(c => c.Subject.Should().BeApproximately(c.Expectation, 1e-12)).WhenTypeIs<double>());
    }

    [Fact]
    public void Shape_OneStep_HandWorked_WhereTheSpecZeroesAnInput()
    {
        // R = [1, 1], c = 5/2, target [2.5, 2.5]: d = [−1.5, 1.5], h = W⁺ᵀd = [1.5, 1.5], J·h = [1.5, 4.5], α = 4.5/22.5 = 0.2;
        // S = [0.7, 1.7], F(S) = [0.7, 3.1]; R_in = S ⊙ W⁺ᵀ[1/0.7, 1/3.1] = [1 + 1.4/3.1, 1.7/3.1] (sums to 2)
        var shape = Dense(new ShapeFitRootRule(Steps(1)), new[] { 1.0, 2 }, new[] { 1.0, 1 });
        shape[0].Should().BeApproximately(1 + 1.4 / 3.1, 1e-8);
        shape[1].Should().BeApproximately(1.7 / 3.1, 1e-8);
        // the spec's step on R itself: d = [0, 3], h = [6, 3], α = 45/261: S₁ = 1 − 270/261 < 0 → 0; F₁(S) = 0 drops R₁
        var spec = Dense(new RootInferenceRule(Steps(1)), new[] { 1.0, 2 }, new[] { 1.0, 1 });
        spec[0].Should().Be(0, "the spec's fit clips x₁ to 0 and it gets no relevance");
        spec[1].Should().BeApproximately(1, 1e-8);
    }

    [Fact]
    public void Gated_KeepsRootWhereTheFitExplainsR_ZPlusElsewhere_PerSample()
    {
        // two samples: [1, 2] with R = [0, 3] and [3, 0.5] with R = [2.5, 0]; bias [0, −1] only z⁺ sees
        double[] x = { 1, 2, 3, 0.5 }, r = { 0, 3, 2.5, 0 }, b = { 0, -1 };
        var root = Dense(new RootInferenceRule(Steps(1)), x, r, b);
        var zplus = Dense(new ZPlusRule(), x, r, b);
        // the residuals of the two samples alone
        double Residual(int s)
        {
            using var unit = LinearUnit.Dense(torch.tensor(W.Cast<double>().ToArray(), new long[] { 2, 2 }, float64), null);
            using var xs = torch.tensor(x.Skip(2 * s).Take(2).ToArray(), float64).view(1, 2);
            using var rs = torch.tensor(r.Skip(2 * s).Take(2).ToArray(), float64).view(1, 2);
            var result = RootInferenceSolver.Solve(unit, xs, rs, InputDomain.Relu, options: Steps(1));
            return ((result.Contribution - rs).norm().item<double>()) / rs.norm().item<double>();
        }
        double r0 = Residual(0), r1 = Residual(1);
        r0.Should().NotBeApproximately(r1, 1e-3);
        Dense(new FitGatedRootRule(Steps(1), double.PositiveInfinity), x, r, b).Should().Equal(root);
        Dense(new FitGatedRootRule(Steps(1), 0), x, r, b).Should().Equal(zplus);
        var tau = (r0 + r1) / 2;
        var mixed = Dense(new FitGatedRootRule(Steps(1), tau), x, r, b);
        var (kept, other) = r0 < r1 ? (0, 1) : (1, 0);
        mixed.Skip(2 * kept).Take(2).Should().Equal(root.Skip(2 * kept).Take(2));
        mixed.Skip(2 * other).Take(2).Should().Equal(zplus.Skip(2 * other).Take(2));
        var act = () => new FitGatedRootRule(tau: -1);
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*tau*");
    }

    [Fact]
    public void ZeroRelevance_GivesZero_PerSample_AndForTheWholeBatch()
    {
        // sample 0 carries R = [0, 3], sample 1 none: sample 1's input relevance is exactly 0 and sample 0's is what it
        // gets alone; an all-zero batch gives zeros without fitting
        double[] x = { 1, 2, 3, 0.5 }, r = { 0, 3, 0, 0 };
        foreach (var rule in new Rule[] { new FitGatedRootRule(Steps(1), 0.5), new ShapeFitRootRule(Steps(1)), new ChannelRootRule(Steps(1)) })
        {
            var both = Dense(rule, x, r);
            both.Skip(2).Should().Equal(new[] { 0.0, 0.0 }, rule.ToString());
            both.Take(2).Should().Equal(Dense(rule, x.Take(2).ToArray(), r.Take(2).ToArray()), rule.ToString());
            both.Take(2).Sum().Should().BeGreaterThan(0, rule.ToString());
            Dense(rule, x, new double[4]).Should().Equal(new double[4], rule.ToString());
        }
    }

    [Fact]
    public void Channel_OnInputBoundsWithoutZero_IsRefusedWithTheNode()
    {
        using var scope = torch.NewDisposeScope();
        using var unit = LinearUnit.Dense(torch.tensor(W.Cast<double>().ToArray(), new long[] { 2, 2 }, float64), null);
        var node = new LinearUnitNode("stem", unit, 0);
        var x = torch.tensor(new[] { 1.0, 2 }, float64).view(1, 2);
        var r = torch.tensor(new[] { 0.0, 3 }, float64).view(1, 2);
        var act = () => TestNets.Propagate(new ChannelRootRule(Steps(1)), node, new[] { x }, r, InputDomain.PixelBox,
            torch.full(new long[] { 1, 2 }, 0.5, float64), torch.full(new long[] { 1, 2 }, 3.0, float64));
        act.Should().Throw<ExplanationException>().WithMessage("*root-channel on 'stem'*contain 0*");
        TestNets.Propagate(new ChannelRootRule(Steps(1)), node, new[] { x }, r, InputDomain.PixelBox,
            torch.full(new long[] { 1, 2 }, -1.0, float64), torch.full(new long[] { 1, 2 }, 3.0, float64)).Sum().Should().BeApproximately(3, 1e-8);
    }

    public static IEnumerable<object[]> Variants() => new[] { "root-gated:tau=3,steps=3", "root-shape:steps=3", "root-channel:steps=3", "root-channel:shape=0,steps=3" }.Select(m => new object[] { m });

    [Theory]
    [MemberData(nameof(Variants))]
    public void Batch_EqualsEachSampleAlone_Float64(string method)
    {
        using var scope = torch.NewDisposeScope();
        using var net = TestNets.SmallResNet();
        torch.manual_seed(21);
        var x = torch.randn(3, 3, 16, 16, float64).clamp(-2, 2);
        var options = new ExplainerOptions { InputLow = torch.full(new long[] { 3 }, -2.0, float64), InputHigh = torch.full(new long[] { 3 }, 2.0, float64) };
        using var explainer = new Explainer(net, MethodCatalog.Parse(method), options);
        using var batch = explainer.Explain(x);
        torch.isfinite(batch.InputRelevance).all().item<bool>().Should().BeTrue();
        for (var i = 0; i < 3; i++)
        {
            using var single = explainer.Explain(x[i..(i + 1)], new[] { batch.Targets[i] });
            TestNets.RelativeDifference(batch.InputRelevance[i], single.InputRelevance[0]).Should().BeLessThan(1e-9, $"{method} sample {i}");
        }
    }

    // exact ratios (epsilon=0): the spec stabiliser's shift R·1e-9/|F| is visible where a fit to R's total makes F tiny
    [Theory]
    [InlineData("root-shape:epsilon=0")]
    [InlineData("root-channel:epsilon=0")]
    [InlineData("root-channel:shape=0,epsilon=0")]
    public void NormalizedVariants_Conserve_OnABiasFreeNet(string method)
    {
        using var scope = torch.NewDisposeScope();
        using var net = TestNets.BiasFreeCnn();
        torch.manual_seed(4);
        var x = torch.rand(2, 3, 8, 8, float64);
        using var explainer = new Explainer(net, MethodCatalog.Parse(method), new ExplainerOptions { InputLow = torch.zeros(3, float64), InputHigh = torch.ones(3, float64) });
        using var e = explainer.Explain(x);
        var sums = e.InputRelevance.reshape(2, -1).sum(new long[] { 1 }).data<double>().ToArray();
        for (var i = 0; i < 2; i++)
        {
            var logit = e.Logits[i, e.Targets[i]].item<double>();
            sums[i].Should().BeApproximately(logit, 1e-9 * Math.Abs(logit), $"{method} sample {i}");
        }
    }

    [Fact]
    public void Variants_RunOnAVit_PartsAndAll()
    {
        using var scope = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: false);
        torch.manual_seed(8);
        var x = torch.randn(1, 3, 16, 16, float64);
        foreach (var method in new[] { "root-gated:steps=2", "root-shape:steps=2", "root-channel:steps=2" })
        {
            using var explainer = new Explainer(vit, MethodCatalog.Parse(method));
            using var e = explainer.Explain(x);
            torch.isfinite(e.InputRelevance).all().item<bool>().Should().BeTrue(method);
            e.InputRelevance.abs().sum().item<double>().Should().BeGreaterThan(0, method);
        }
    }

    [Fact]
    public void Traits_AndCatalogParameters()
    {
        MethodTraits.Of("root-gated").Should().Be(new MethodTraits(MethodFamily.RootInference, ConservationExpectation.Approximately));
        MethodTraits.Of("root-shape").Conservation.Should().Be(ConservationExpectation.Conserves);
        MethodTraits.Of("root-channel").Conservation.Should().Be(ConservationExpectation.Conserves);
        MethodCatalog.Get("root-channel").Parameters.Select(p => p.Name).Should().Contain("shape").And.NotContain("gradient");
        MethodCatalog.Get("root-gated").Parameters.Select(p => p.Name).Should().Contain(new[] { "tau", "steps" });
        var bad = () => MethodCatalog.Parse("root-gated:tau=-1");
        bad.Should().Throw<Exception>();
    }
}
