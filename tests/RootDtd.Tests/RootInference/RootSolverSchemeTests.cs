using FluentAssertions;
using RootDtd.Graph;
using RootDtd.Rules;
using RootDtd.Rules.RootInference;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.RootInference;

/// <summary>
/// The solver's cheaper evaluation schemes in the free domain (ΔF from the linearity of F on the current sign mask plus
/// the flips; the Gram form for dense layers at least twice as wide as their input) against the reference scheme that
/// evaluates ΔF and F(T') as stacked layer evaluations: the same iteration in exact arithmetic, so in float64 the same
/// accepted steps and the same relevance to rounding.
/// </summary>
public class RootSolverSchemeTests
{
    /// <summary>A dense layer on [B, N, in] tokens (as every ViT Linear), free-domain input, relevance of mixed sign.</summary>
    private static (LinearUnit Unit, Tensor X, Tensor R) DenseProblem(int inputs, int outputs, int seed, bool signedRelevance)
    {
        torch.manual_seed(seed);
        var w = torch.randn(outputs, inputs, float64) / Math.Sqrt(inputs);
        var b = torch.randn(outputs, float64) * 0.1;
        var unit = LinearUnit.Dense(w, b);
        var x = torch.randn(3, 5, inputs, float64);
        var z = unit.Forward(x);
        var r = z * torch.rand(z.shape, float64) * 0.7;
        if (signedRelevance) r = r * torch.randn(z.shape, float64).sign();
        return (unit, x, r);
    }

    public static IEnumerable<object[]> Shapes() => new[]
    {
        new object[] { 6, 16, 1.0, false }, // Gram form (16 ≥ 2·6), as fc1
        new object[] { 6, 16, 1.8, true },
        new object[] { 8, 8, 1.0, false }, // linear change, as q, k, v and proj
        new object[] { 8, 8, 1.8, true },
        new object[] { 16, 6, 1.0, true }, // linear change, as fc2
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void DenseSchemesAgreeWithTheReference(int inputs, int outputs, double gamma, bool signedRelevance)
    {
        using var scope = torch.NewDisposeScope();
        var (unit, x, r) = DenseProblem(inputs, outputs, seed: inputs * 31 + outputs, signedRelevance);
        using var _ = unit;
        var options = new RootInferenceOptions { Steps = 25, Gamma = gamma };
        var fast = RootInferenceSolver.Solve(unit, x, r, InputDomain.Free, null, null, options, true, SolverPath.Fastest);
        var reference = RootInferenceSolver.Solve(unit, x, r, InputDomain.Free, null, null, options, true, SolverPath.Reference);
        AssertSame(fast, reference);
        // the problem exercises the flips: some sample rejected a step (only a sign flip can make a step fail here)
        (reference.AcceptedSteps.lt(25).any().item<bool>() || gamma < 1.5).Should().BeTrue();
    }

    [Fact]
    public void FreeConvolutionSchemeAgreesWithTheReference()
    {
        using var scope = torch.NewDisposeScope();
        var (unit, x, r, _, _) = RootInferenceSolverTests.RandomConvProblem(InputDomain.Free, seed: 17);
        using var _ = unit;
        foreach (var gamma in new[] { 1.0, 1.8 })
        {
            var options = new RootInferenceOptions { Steps = 25, Gamma = gamma };
            AssertSame(RootInferenceSolver.Solve(unit, x, r, InputDomain.Free, null, null, options, true, SolverPath.Fastest),
                RootInferenceSolver.Solve(unit, x, r, InputDomain.Free, null, null, options, true, SolverPath.Reference));
        }
    }

    public static IEnumerable<object[]> SingleSampleProblems() => new[]
    {
        new object[] { "dense 6→16 (Gram)", 1.0 },
        new object[] { "dense 6→16 (Gram)", 1.8 },
        new object[] { "dense 8→8", 1.0 },
        new object[] { "dense 16→6", 1.0 },
        new object[] { "dense 16→6", 1.8 },
        new object[] { "conv Free", 1.0 },
        new object[] { "conv Relu", 4.0 }, // on the ReLU domain F is linear: here γ = 1.8 and 3 never failed a step
        new object[] { "conv PixelBox", 1.8 },
    };

    /// <summary>
    /// One sample at a time, so that every rejected step is a step no sample of the batch accepts: the CPU's scheme
    /// keeps that step's direction for the next one and skips F at the rejected candidate (the reference and the GPU's
    /// scheme recompute both).
    /// Same accepted steps, same relevance; the problems reject steps and accept again after a rejection, so the kept
    /// direction is used with the halved scale.
    /// </summary>
    [Theory]
    [MemberData(nameof(SingleSampleProblems))]
    public void AStepNoSampleAcceptsKeepsItsDirection(string problem, double gamma)
    {
        using var scope = torch.NewDisposeScope();
        LinearUnit unit;
        Tensor x, r;
        Tensor? low = null, high = null;
        var domain = InputDomain.Free;
        if (problem.StartsWith("dense", StringComparison.Ordinal))
        {
            var sizes = problem.Split(' ')[1].Split('→');
            var (inputs, outputs) = (int.Parse(sizes[0], System.Globalization.CultureInfo.InvariantCulture), int.Parse(sizes[1], System.Globalization.CultureInfo.InvariantCulture));
            (unit, x, r) = DenseProblem(inputs, outputs, seed: inputs * 7 + outputs, signedRelevance: true);
        }
        else
        {
            domain = Enum.Parse<InputDomain>(problem.Split(' ')[1]);
            (unit, x, r, low, high) = RootInferenceSolverTests.RandomConvProblem(domain, seed: 29);
        }
        using var _ = unit;
        const int steps = 30;
        var options = new RootInferenceOptions { Steps = steps, Gamma = gamma };
        var reusedThenAccepted = 0;
        for (var b = 0; b < x.shape[0]; b++)
        {
            var xs = x[b..(b + 1)];
            var rs = r[b..(b + 1)];
            var ls = low is null ? null : low[b..(b + 1)];
            var hs = high is null ? null : high[b..(b + 1)];
            var fast = RootInferenceSolver.Solve(unit, xs, rs, domain, ls, hs, options, true, SolverPath.Fastest);
            var reference = RootInferenceSolver.Solve(unit, xs, rs, domain, ls, hs, options, true, SolverPath.Reference);
            AssertSame(fast, reference);
            // the GPU's scheme (no host read per step, every step in full) computes the same iteration
            AssertSame(RootInferenceSolver.Solve(unit, xs, rs, domain, ls, hs, options, true, SolverPath.FastestWithoutHostReads), fast);
            var trace = reference.LossTrace!.reshape(-1).data<double>().ToArray();
            for (var k = 1; k + 1 < trace.Length; k++)
                if (trace[k] == trace[k - 1] && trace[k + 1] < trace[k]) reusedThenAccepted++;
        }
        reusedThenAccepted.Should().BePositive("some step after a rejected one is accepted, which uses the kept direction");
    }

    [Theory]
    [InlineData(6, 16)]
    [InlineData(8, 8)]
    public void LossTraceIsMonotoneAndEndsAtTheSignalsLoss(int inputs, int outputs)
    {
        using var scope = torch.NewDisposeScope();
        var (unit, x, r) = DenseProblem(inputs, outputs, seed: 3, signedRelevance: true);
        using var _ = unit;
        var result = RootInferenceSolver.Solve(unit, x, r, InputDomain.Free, options: new RootInferenceOptions { Steps = 30, Gamma = 1.8 }, traceLoss: true);
        var trace = result.LossTrace!;
        (trace[1..] - trace[..^1]).max().item<double>().Should().BeLessThanOrEqualTo(0);
        (trace[-1] - result.FinalLoss).abs().max().item<double>().Should().Be(0);
        var s = result.Signal;
        var fs = unit.Forward(s.clamp(min: 0), unit.Weight.clamp(min: 0), null) + unit.Forward(s.clamp(max: 0), unit.Weight.clamp(max: 0), null);
        var loss = (fs - r).pow(2).reshape(x.shape[0], -1).sum(1);
        (loss - result.FinalLoss).abs().max().item<double>().Should().BeLessThan(1e-9 * (1 + result.FinalLoss.max().item<double>()));
        (result.FinalLoss < result.InitialLoss).all().item<bool>().Should().BeTrue();
        (result.Contribution - fs).abs().max().item<double>().Should().BeLessThan(1e-12 * fs.abs().max().item<double>());
    }

    [Theory]
    [InlineData(6, 16)]
    [InlineData(8, 8)]
    public void InFloat32TheSchemesAreAsCloseToFloat64AsTheReference(int inputs, int outputs)
    {
        // the new schemes must not add float32 error: F at the candidate is still evaluated afresh, and the Gram form's
        // gradient has the same rounding scale (ε·|J|ᵀF) as the output-space one
        using var scope = torch.NewDisposeScope();
        var (unit, x, r) = DenseProblem(inputs, outputs, seed: 23, signedRelevance: false);
        using var _ = unit;
        using var unit32 = LinearUnit.Dense(unit.Weight.to(float32), unit.Bias!.to(float32));
        var options = new RootInferenceOptions { Steps = 20 };
        var exact = RootInferenceSolver.Solve(unit, x, r, InputDomain.Free, null, null, options, false, SolverPath.Reference).InputRelevance;
        var fast = RootInferenceSolver.Solve(unit32, x.to(float32), r.to(float32), InputDomain.Free, null, null, options, false, SolverPath.Fastest).InputRelevance;
        var reference = RootInferenceSolver.Solve(unit32, x.to(float32), r.to(float32), InputDomain.Free, null, null, options, false, SolverPath.Reference).InputRelevance;
        var fastError = Relative(fast.to(float64), exact);
        var referenceError = Relative(reference.to(float64), exact);
        fastError.Should().BeLessThan(10 * referenceError + 1e-6, $"reference scheme's float32 error {referenceError:e2}");
    }

    private static void AssertSame(RootInferenceResult fast, RootInferenceResult reference)
    {
        (fast.AcceptedSteps - reference.AcceptedSteps).abs().max().item<double>().Should().Be(0);
        Relative(fast.InputRelevance, reference.InputRelevance).Should().BeLessThan(1e-10);
        Relative(fast.Signal, reference.Signal).Should().BeLessThan(1e-10);
        Relative(fast.FinalLoss, reference.FinalLoss).Should().BeLessThan(1e-9);
        (fast.InitialLoss - reference.InitialLoss).abs().max().item<double>().Should().BeLessThan(1e-12 * reference.InitialLoss.abs().max().item<double>());
    }

    private static double Relative(Tensor a, Tensor b) => ((a - b).abs().max() / b.abs().max()).item<double>();
}
