using FluentAssertions;
using RootDtd.Graph;
using RootDtd.Rules;
using RootDtd.Rules.RootInference;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.RootInference;

/// <summary>The solver and the rule on single units: the spec's worked example, z⁺ at 0 steps, monotone loss, conservation, boxes.</summary>
public class RootInferenceSolverTests
{
    private static double[] Values(Tensor t) => t.to(float64).cpu().data<double>().ToArray();

    [Fact]
    public void WorkedExampleOfTheSpec()
    {
        using var scope = torch.NewDisposeScope();
        using var unit = LinearUnit.Dense(torch.tensor(new double[] { 1, -1, 2, 1 }, new long[] { 2, 2 }, float64), null);
        var x = torch.tensor(new double[] { 1, 2 }, new long[] { 1, 2 }, float64);
        var r = torch.tensor(new double[] { 0, 3 }, new long[] { 1, 2 }, float64);
        var result = RootInferenceSolver.Solve(unit, x, r, InputDomain.Relu, options: new RootInferenceOptions { Steps = 1 }, traceLoss: true);

        Values(result.Signal).Should().Equal(new[] { 0.4828, 1.8276 }, (a, b) => Math.Abs(a - b) < 5e-5);
        Values(result.Root).Should().Equal(new[] { 1 - 0.4828, 2 - 1.8276 }, (a, b) => Math.Abs(a - b) < 5e-5);
        Values(result.LossTrace!).Should().Equal(new[] { 2, 0.2759 }, (a, b) => Math.Abs(a - b) < 5e-5);
        Values(result.InitialLoss).Should().Equal(new[] { 2.0 }, (a, b) => Math.Abs(a - b) < 1e-12);
        Values(result.FinalLoss).Should().Equal(new[] { 0.2759 }, (a, b) => Math.Abs(a - b) < 5e-5);
        Values(result.AcceptedSteps).Should().Equal(1.0);
        // F(S) = [14/29, 81/29] = [0.48276, 2.79310]; the spec prints 2.7932 (= 2·0.4828 + 1.8276 from the rounded signal)
        Values(result.Contribution).Should().Equal(new[] { 14.0 / 29, 81.0 / 29 }, (a, b) => Math.Abs(a - b) < 1e-14);
        Values(result.Contribution).Should().Equal(new[] { 0.4828, 2.7932 }, (a, b) => Math.Abs(a - b) < 1.5e-4);
        var rIn = Values(result.InputRelevance);
        rIn.Should().Equal(new[] { 1.0370, 1.9630 }, (a, b) => Math.Abs(a - b) < 5e-5);
        // sums to 3 up to the stabiliser: 3·F/(F + 1e-9) = 3 − 1.07e-9
        rIn.Sum().Should().BeApproximately(3 * (81.0 / 29) / (81.0 / 29 + 1e-9), 1e-12);
        // exact values: α = 40/464, T' = x − α·[6, 2]
        var alpha = 40.0 / 464;
        Values(result.Signal).Should().Equal(new[] { 1 - 6 * alpha, 2 - 2 * alpha }, (a, b) => Math.Abs(a - b) < 1e-14);
    }

    [Theory]
    [InlineData(InputDomain.Free)]
    [InlineData(InputDomain.Relu)]
    [InlineData(InputDomain.PixelBox)]
    public void ZeroStepsIsZPlusWithoutBias(InputDomain domain)
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(3);
        var w = torch.randn(6, 4, 3, 3, float64);
        var b = torch.randn(6, float64);
        using var withBias = LinearUnit.Convolution(w, b, new long[] { 2, 2 }, new long[] { 1, 1 }, new long[] { 1, 1 }, 1);
        using var noBias = LinearUnit.Convolution(w, null, new long[] { 2, 2 }, new long[] { 1, 1 }, new long[] { 1, 1 }, 1);
        var x = torch.randn(3, 4, 9, 9, float64);
        if (domain == InputDomain.Relu) x = x.clamp(min: 0);
        var (low, high) = domain == InputDomain.PixelBox ? (x.min() - 1, x.max() + 1) : ((Tensor?)null, (Tensor?)null);
        var r = torch.randn(3, 6, 5, 5, float64);

        var root = Propagate(new RootInferenceRule(new RootInferenceOptions { Steps = 0 }), withBias, x, r, domain, low?.expand(x.shape), high?.expand(x.shape));
        var zplus = Propagate(new ZPlusRule(Stabilizer.Spec), noBias, x, r, domain, null, null);
        (root - zplus).abs().max().item<double>().Should().BeLessThan(1e-12 * zplus.abs().max().item<double>());

        // and by hand: z = W⁺x⁺ + W⁻x⁻, R_in = x⁺·W⁺ᵀ(R/z) + x⁻·W⁻ᵀ(R/z)
        var wp = w.clamp(min: 0);
        var wn = w.clamp(max: 0);
        var xp = x.clamp(min: 0);
        var xn = x.clamp(max: 0);
        var z = noBias.Forward(xp, wp, null) + noBias.Forward(xn, wn, null);
        var s = r / (z + (z.ge(0).to(float64) * 2 - 1) * 1e-9);
        var byHand = xp * noBias.Transpose(s, wp, x.shape) + xn * noBias.Transpose(s, wn, x.shape);
        (root - byHand).abs().max().item<double>().Should().BeLessThan(1e-12 * byHand.abs().max().item<double>());
    }

    public static IEnumerable<object[]> Problems() =>
        from domain in new[] { InputDomain.Relu, InputDomain.PixelBox, InputDomain.Free }
        from positive in new[] { true, false }
        from gc in new[] { true, false }
        from gamma in new[] { 1.0, 1.9, 6.0 }
        select new object[] { domain, positive, gc, gamma };

    [Theory]
    [MemberData(nameof(Problems))]
    public void LossNeverIncreasesPerStepAndSample(InputDomain domain, bool positive, bool gc, double gamma)
    {
        using var scope = torch.NewDisposeScope();
        var (unit, x, r, low, high) = RandomConvProblem(domain, seed: 11);
        using var _ = unit;
        var options = new RootInferenceOptions { Steps = 25, Gamma = gamma, PositiveConstraint = positive, GradientConstraint = gc };
        var result = RootInferenceSolver.Solve(unit, x, r, domain, low, high, options, traceLoss: true);
        var trace = result.LossTrace!;
        trace.shape.Should().Equal(26, x.shape[0]);
        var increase = (trace[1..] - trace[..^1]).max().item<double>();
        increase.Should().BeLessThanOrEqualTo(0);
        (trace[-1] - result.FinalLoss).abs().max().item<double>().Should().Be(0);
        (trace[0] - result.InitialLoss).abs().max().item<double>().Should().Be(0);
        // the loss actually moves (the problem is not trivially at a fixed point)
        (result.FinalLoss < result.InitialLoss).any().item<bool>().Should().BeTrue();
        var accepted = Values(result.AcceptedSteps);
        accepted.Should().OnlyContain(a => a >= 0 && a <= 25);
        // the reported final loss is the loss of the returned signal
        var fs = domain == InputDomain.Relu && positive
            ? unit.Forward(result.Signal, unit.Weight.clamp(min: 0), null)
            : positive
                ? unit.Forward(result.Signal.clamp(min: 0), unit.Weight.clamp(min: 0), null) + unit.Forward(result.Signal.clamp(max: 0), unit.Weight.clamp(max: 0), null)
                : unit.Forward(result.Signal, unit.Weight, null);
        var loss = (fs - r).pow(2).reshape(x.shape[0], -1).sum(1);
        (loss - result.FinalLoss).abs().max().item<double>().Should().BeLessThan(1e-9 * (1 + result.FinalLoss.max().item<double>()));
    }

    [Theory]
    [InlineData(InputDomain.Relu, true)]
    [InlineData(InputDomain.PixelBox, true)]
    [InlineData(InputDomain.Free, true)]
    [InlineData(InputDomain.Relu, false)]
    [InlineData(InputDomain.Free, false)]
    public void NormalizedRedistributionConservesWhereFIsNonZero(InputDomain domain, bool positive)
    {
        using var scope = torch.NewDisposeScope();
        var (unit, x, r, low, high) = RandomConvProblem(domain, seed: 5);
        using var _ = unit;
        var result = RootInferenceSolver.Solve(unit, x, r, domain, low, high, new RootInferenceOptions { PositiveConstraint = positive });
        var batch = x.shape[0];
        var f = result.Contribution;
        var nonZero = f.ne(0).to(float64);
        var inSum = result.InputRelevance.reshape(batch, -1).sum(1);
        var scale = r.abs().reshape(batch, -1).sum(1);
        // exact identity: Σ_i R_in,i = Σ_j q_j F_j(S) with q = R / (F + 1e-9·sign F), q = 0 where F = 0
        var q = r / (f + (f.ge(0).to(float64) * 2 - 1) * 1e-9) * nonZero;
        ((inSum - (q * f).reshape(batch, -1).sum(1)).abs() / scale).max().item<double>().Should().BeLessThan(1e-12);
        // conservation Σ R_in = Σ_{j: F_j ≠ 0} R_j, up to 1e-9 and the stabiliser's own shift R_j·1e-9/(|F_j| + 1e-9)
        var outSum = (r * nonZero).reshape(batch, -1).sum(1);
        var shift = (r.abs() * 1e-9 / (f.abs() + 1e-9) * nonZero).reshape(batch, -1).sum(1);
        ((inSum - outSum).abs() - shift - scale * 1e-9).max().item<double>().Should().BeLessThanOrEqualTo(0);
        // some outputs are exactly 0 under the positive map on the ReLU domain (dead inputs), and their relevance is dropped
    }

    [Fact]
    public void GradientConstraintKeepsTheSignalInZeroToX()
    {
        using var scope = torch.NewDisposeScope();
        var (unit, x, r, _, _) = RandomConvProblem(InputDomain.Relu, seed: 8);
        using var __ = unit;
        var on = RootInferenceSolver.Solve(unit, x, r, InputDomain.Relu, options: new RootInferenceOptions { Steps = 30 });
        on.Signal.min().item<double>().Should().BeGreaterThanOrEqualTo(0);
        (on.Signal - x).max().item<double>().Should().BeLessThanOrEqualTo(0);
        on.Root.min().item<double>().Should().BeGreaterThanOrEqualTo(0);
        var off = RootInferenceSolver.Solve(unit, x, r, InputDomain.Relu, options: new RootInferenceOptions { Steps = 30, GradientConstraint = false });
        off.Signal.min().item<double>().Should().BeGreaterThanOrEqualTo(0);
        (off.Signal - x).max().item<double>().Should().BeGreaterThan(0, "without the gradient constraint the signal may exceed x");
    }

    [Fact]
    public void PixelBoxKeepsTheRootWithinTheInputBounds()
    {
        using var scope = torch.NewDisposeScope();
        var (unit, x, r, low, high) = RandomConvProblem(InputDomain.PixelBox, seed: 9);
        using var _ = unit;
        var result = RootInferenceSolver.Solve(unit, x, r, InputDomain.PixelBox, low, high, new RootInferenceOptions { Steps = 30 });
        (result.Root - low!).min().item<double>().Should().BeGreaterThanOrEqualTo(-1e-15);
        (result.Root - high!).max().item<double>().Should().BeLessThanOrEqualTo(1e-15);
        var free = RootInferenceSolver.Solve(unit, x, r, InputDomain.PixelBox, low, high, new RootInferenceOptions { Steps = 30, DomainConstraint = false });
        ((free.Root - high!).max().item<double>() > 0 || (free.Root - low!).min().item<double>() < 0).Should().BeTrue("without the box the root leaves the bounds");
    }

    [Fact]
    public void BatchIsSolvedAsIndependentSamples()
    {
        using var scope = torch.NewDisposeScope();
        foreach (var domain in new[] { InputDomain.Relu, InputDomain.PixelBox, InputDomain.Free })
        {
            var (unit, x, r, low, high) = RandomConvProblem(domain, seed: 21);
            using var _ = unit;
            var options = new RootInferenceOptions { Steps = 15, Gamma = 1.8 };
            var all = RootInferenceSolver.Solve(unit, x, r, domain, low, high, options);
            for (var i = 0; i < x.shape[0]; i++)
            {
                var one = RootInferenceSolver.Solve(unit, x[i..(i + 1)], r[i..(i + 1)], domain, low?[i..(i + 1)], high?[i..(i + 1)], options);
                var expected = all.InputRelevance[i..(i + 1)];
                ((one.InputRelevance - expected).abs().max() / expected.abs().max()).item<double>().Should().BeLessThan(1e-10);
                (one.AcceptedSteps - all.AcceptedSteps[i]).abs().item<double>().Should().Be(0);
            }
        }
    }

    [Fact]
    public void DirectRedistributionSumsTheSignalContributions()
    {
        using var scope = torch.NewDisposeScope();
        var (unit, x, r, _, _) = RandomConvProblem(InputDomain.Relu, seed: 4);
        using var _ = unit;
        var result = RootInferenceSolver.Solve(unit, x, r, InputDomain.Relu, options: new RootInferenceOptions { Redistribution = RootRedistribution.Direct });
        // Σ_i R_i = Σ_i Σ_j f_ji(S_i) = Σ_j F_j(S)
        var batch = x.shape[0];
        (result.InputRelevance.reshape(batch, -1).sum(1) - result.Contribution.reshape(batch, -1).sum(1)).abs().max().item<double>()
            .Should().BeLessThan(1e-9 * result.Contribution.abs().sum().item<double>());
    }

    [Fact]
    public void Float32RunsAndStaysCloseToFloat64()
    {
        using var scope = torch.NewDisposeScope();
        var (unit, x, r, _, _) = RandomConvProblem(InputDomain.Relu, seed: 2);
        using var _ = unit;
        using var unit32 = unit.WithParameters(unit.Weight.to(float32), unit.Bias?.to(float32));
        var options = new RootInferenceOptions { Steps = 5 };
        var r64 = RootInferenceSolver.Solve(unit, x, r, InputDomain.Relu, options: options);
        var r32 = RootInferenceSolver.Solve(unit32, x.to(float32), r.to(float32), InputDomain.Relu, options: options);
        r32.InputRelevance.dtype.Should().Be(float32);
        ((r32.InputRelevance.to(float64) - r64.InputRelevance).abs().max() / r64.InputRelevance.abs().max()).item<double>().Should().BeLessThan(1e-3);
    }

    internal static Tensor Propagate(Rule rule, LinearUnit unit, Tensor x, Tensor r, InputDomain domain, Tensor? low, Tensor? high,
        bool diagnostics = false, bool roots = false, ExplanationRecorder? recorder = null)
    {
        var node = new LinearUnitNode("unit", unit, 0);
        var output = unit.Forward(x);
        var context = new RuleContext(node, new[] { x }, output, r, domain, low, high, recorder ?? new ExplanationRecorder(diagnostics, roots));
        return rule.Propagate(context)[0];
    }

    /// <summary>A conv unit (stride 1 and 2 mixed via padding), an input in the domain, and relevance of mixed sign.</summary>
    internal static (LinearUnit Unit, Tensor X, Tensor R, Tensor? Low, Tensor? High) RandomConvProblem(InputDomain domain, int seed)
    {
        torch.manual_seed(seed);
        var w = torch.randn(5, 3, 3, 3, float64) * 0.5;
        var b = torch.randn(5, float64);
        var unit = LinearUnit.Convolution(w, b, new long[] { 1, 1 }, new long[] { 1, 1 }, new long[] { 1, 1 }, 1);
        var x = torch.randn(4, 3, 7, 7, float64);
        Tensor? low = null, high = null;
        if (domain == InputDomain.Relu) x = x.clamp(min: 0);
        if (domain == InputDomain.PixelBox)
        {
            low = torch.full(x.shape, -1.5, float64);
            high = torch.full(x.shape, 1.5, float64);
            x = x.clamp(-1.5, 1.5);
        }
        var z = unit.Forward(x);
        var r = z * torch.rand(z.shape, float64) * 0.7;
        return (unit, x, r, low, high);
    }
}
