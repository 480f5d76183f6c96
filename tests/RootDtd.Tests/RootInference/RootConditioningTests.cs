using FluentAssertions;
using RootDtd.Composites;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.RootInference;

/// <summary>The per-explanation conditioning report of root inference on hand-made units.</summary>
public sealed class RootConditioningTests
{
    /// <summary>fc0 (2→2) → ReLU → fc1 (2→2) → ReLU → out (2→1), float64; fc1 as given, the rest fixed and positive.</summary>
    private static Sequential Net(double[,] fc1Weight, double[] fc1Bias)
    {
        var net = nn.Sequential(("fc0", nn.Linear(2, 2, hasBias: false)), ("relu0", nn.ReLU()), ("fc1", nn.Linear(2, 2)), ("relu1", nn.ReLU()), ("out", nn.Linear(2, 1, hasBias: false)));
        net.to(float64).eval();
        using (torch.no_grad())
        {
            ((Linear)net[0]).weight!.copy_(torch.tensor(new double[,] { { 1, 0 }, { 0, 1 } }));
            ((Linear)net[2]).weight!.copy_(torch.tensor(fc1Weight));
            ((Linear)net[2]).bias!.copy_(torch.tensor(fc1Bias));
            ((Linear)net[4]).weight!.copy_(torch.tensor(new double[,] { { 1, 1 } }));
        }
        return net;
    }

    [Fact]
    public void AnUnresponsiveAndANearZeroFitUnitAreFlaggedAndAnOrdinaryOneIsNot()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.tensor(new double[,] { { 0.5, 0.8 }, { 1.0, 0.3 } });
        // fc1 output 1 is active through its bias only (weights −0.1): under the positive map its F(S) = W⁺S is 0, so its
        // relevance cannot be passed on; output 0 reads its inputs through 1e-7 weights and carries ≈ 1 of relevance
        // (bias 1): F(S) ≤ 1e-7·(x₀ + x₁) with S in [0, x], a ratio R/F(S) of about 10⁷
        using var ill = Net(new double[,] { { 1e-7, 1e-7 }, { -0.1, -0.1 } }, new[] { 1.0, 1.0 });
        using var ordinary = Net(new double[,] { { 1, 0.5 }, { 0.3, 1 } }, new[] { 0.0, 0.0 });
        var options = new ExplainerOptions { CollectDiagnostics = true };
        using var badExplainer = new Explainer(ill, MethodCatalog.Parse("root"), options);
        using var goodExplainer = new Explainer(ordinary, MethodCatalog.Parse("root"), options);
        using var bad = badExplainer.Explain(x, new long[] { 0, 0 });
        using var good = goodExplainer.Explain(x, new long[] { 0, 0 });

        bad.RootConditioning.Should().HaveCount(2);
        foreach (var c in bad.RootConditioning)
        {
            c.IllConditioned.Should().BeTrue();
            c.UnresponsiveUnit.Should().Be("fc1");
            // out's relevance splits over fc1's two outputs in proportion to their activations (the root fit of out
            // reproduces them): output 1 carries 1 − 0.1·(x₀ + x₁) of the ≈ 2 − 0.1·(x₀ + x₁) + 1e-7·(x₀ + x₁)
            var s = x[c.Sample].sum().item<double>();
            c.UnresponsiveFraction.Should().BeApproximately((1 - 0.1 * s) / (2 - 0.1 * s + 1e-7 * s), 1e-3);
            c.AmplifyingUnit.Should().Be("fc1");
            c.MaxAmplification.Should().BeGreaterThan(1e6);
        }
        // the lost relevance is what the conservation report misses
        for (var i = 0; i < 2; i++)
            (1 - bad.Conservation.InputSum[i] / bad.Conservation.StartRelevance[i]).Should().BeGreaterThan(bad.RootConditioning[i].UnresponsiveFraction * 0.9);

        good.RootConditioning.Should().HaveCount(2);
        foreach (var c in good.RootConditioning)
        {
            c.IllConditioned.Should().BeFalse($"sample {c.Sample}: {c}");
            c.UnresponsiveFraction.Should().Be(0);
            c.MaxAmplification.Should().BeInRange(0.5, 2, "a good fit passes each output's relevance at a ratio R/F(S) near 1");
            c.WorstRelativeResidual.Should().BeLessThan(0.1);
        }
    }

    [Fact]
    public void WithoutDiagnosticsOrRootUnitsThereIsNoReport()
    {
        using var scope = torch.NewDisposeScope();
        using var net = Net(new double[,] { { 1, 0.5 }, { 0.3, 1 } }, new[] { 0.0, 0.0 });
        var x = torch.tensor(new double[,] { { 0.5, 0.8 } });
        using var noDiagnostics = new Explainer(net, MethodCatalog.Parse("root:steps=2"));
        using var e = noDiagnostics.Explain(x);
        e.RootConditioning.Should().BeEmpty();
        using var epsilon = new Explainer(net, MethodCatalog.Parse("epsilon"), new ExplainerOptions { CollectDiagnostics = true });
        using var f = epsilon.Explain(x);
        f.RootConditioning.Should().BeEmpty();
    }
}
