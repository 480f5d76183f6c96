using FluentAssertions;
using RootDtd.Graph;
using RootDtd.Rules;
using RootDtd.Rules.RootInference.Published;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Tests.RootInference;

/// <summary>The published solvers and rules on layers small enough to check by hand.</summary>
public class PublishedRuleTests
{
    private static RuleContext Context(GraphNode node, Tensor input, Tensor output, Tensor relevance, bool recordRoots = false) =>
        new(node, new[] { input }, output, relevance, InputDomain.Free, null, null, new ExplanationRecorder(false, recordRoots));

    private static double[] Values(Tensor t) => t.detach().to(float64).cpu().data<double>().ToArray();

    private static void ShouldBe(Tensor actual, double[] expected, double tolerance)
    {
        var v = Values(actual);
        v.Length.Should().Be(expected.Length);
        for (var i = 0; i < v.Length; i++) v[i].Should().BeApproximately(expected[i], tolerance, $"element {i}");
    }

    // ---------- dense ----------

    private static (LinearUnitNode Node, LinearUnit Unit) Dense2x2()
    {
        var unit = LinearUnit.Dense(torch.tensor(new[,] { { 1.0, -2 }, { 0.5, 3 } }, dtype: float64), torch.tensor(new[] { 10.0, -10 }, dtype: float64));
        return (new LinearUnitNode("fc", unit, 0), unit);
    }

    [Fact]
    public void DenseRuleOnPositiveInputsTakesOneClampedHingeStepAndDoesNotConserve()
    {
        using var scope = torch.NewDisposeScope();
        var (node, unit) = Dense2x2();
        using var _ = unit;
        var x = torch.tensor(new[,] { { 1.0, 2 } }, dtype: float64);
        var r = torch.tensor(new[,] { { 0.5, 2 } }, dtype: float64);
        // W⁺ = [[1,0],[0.5,3]]; z₁ = W⁺x = [1, 6.5]; x⁻ = 0 so R₁ = R.
        // hinge targets 0.5 and 2 are not ±1: dℓ/dy = [y > 1]/2 = [0, 0.5] (y = 1 sits on the boundary);
        // ∇_S = W⁺ᵀ[0, 0.5] = [0.25, 1.5], clamped from above at 1 → [0.25, 1]; S = x − ∇ = [0.75, 1].
        // R_in = S ⊙ (R/z)·W⁺ = [0.75·(0.5 + (2/6.5)·0.5), 1·(2/6.5)·3]; the bias is ignored.
        var rin = new PublishedDenseRootRule().Propagate(Context(node, x, unit.Forward(x), r))[0];
        var expected = new[] { 0.75 * (0.5 + 2 / 6.5 * 0.5), 2 / 6.5 * 3 };
        ShouldBe(rin, expected, 1e-8);
        rin.sum().item<double>().Should().NotBeApproximately(2.5, 0.5); // Σ R = 2.5, Σ R_in ≈ 1.41
    }

    [Fact]
    public void DenseRuleSplitsByMagnitudeAndRunsFiveStepsOnTheNegativeBranch()
    {
        using var scope = torch.NewDisposeScope();
        var (node, unit) = Dense2x2();
        using var _ = unit;
        var x = torch.tensor(new[,] { { 1.0, -2 } }, dtype: float64);
        var r = torch.tensor(new[,] { { 1.0, 2 } }, dtype: float64);
        // x⁺ = [1,0], x⁻ = [0,−2]; z₁ = W⁺x⁺ = [1, 0.5], z₂ = W⁻x⁻ = [4, 0]; shares R₁ = [0.2, 2], R₂ = [0.8, 0].
        // positive branch: y = [1, 0.5], no y > 1 → S₁ = x⁺ = [1, 0]; R_in₁ = S₁ ⊙ [0.2, 4]·W⁺ = [2.2, 0].
        // negative branch: y = W⁻S = [−2·S₂, 0]; from S = [0,−2]: y₁ = 4 > 1 → ∇ = W⁻ᵀ[0.5, 0] = [0, −1] → S = [0, −1];
        //   y₁ = 2 → S = [0, 0]; then y₁ = 0 and the gradient vanishes: S₂ = [0, 0] → R_in₂ = 0.
        var rin = new PublishedDenseRootRule().Propagate(Context(node, x, unit.Forward(x), r))[0];
        ShouldBe(rin, new[] { 2.2, 0 }, 1e-8);
        // with one step on the negative branch S₂ = [0, −1]: R_in₂ = S₂ ⊙ (0.8/4)·W⁻ = [0, −1·0.2·(−2)] = [0, 0.4]
        var oneStep = new PublishedDenseRootRule(negativeSteps: 1).Propagate(Context(node, x, unit.Forward(x), r))[0];
        ShouldBe(oneStep, new[] { 2.2, 0.4 }, 1e-8);
    }

    [Fact]
    public void HingeSignalIgnoresTheRelevanceMagnitude()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(2);
        var w = torch.randn(4, 3, dtype: float64);
        var x = torch.rand(2, 3, dtype: float64) * 3;
        var r = torch.rand(2, 4, dtype: float64) + 2; // in [2, 3): never ±1
        var a = PublishedSolvers.HingeSignal(x, r, t => F.linear(t, w), steps: 3);
        var b = PublishedSolvers.HingeSignal(x, r * 10, t => F.linear(t, w), steps: 3);
        Values(a).Should().Equal(Values(b));
        Values(PublishedSolvers.HingeSignal(x, r, t => F.linear(t, w), steps: 0)).Should().Equal(Values(x));
    }

    // ---------- convolution ----------

    private static (LinearUnitNode Node, LinearUnit Unit) Conv3x3()
    {
        var w = torch.tensor(new[] { 0.5, -1, 0.25, 1, 2, -0.5, 0, 0.75, 1.5 }, dtype: float64).reshape(1, 1, 3, 3);
        var unit = LinearUnit.Convolution(w, torch.tensor(new[] { 3.0 }, dtype: float64), new long[] { 1, 1 }, new long[] { 1, 1 }, new long[] { 1, 1 }, 1);
        return (new LinearUnitNode("conv", unit, 0), unit);
    }

    /// <summary>convᵀ(R, W⁺) by loops for a 1-channel 3×3 kernel with padding 1, stride 1.</summary>
    private static double[] TransposeByLoops(double[] r, double[] wp, int h, int w)
    {
        var g = new double[h * w];
        for (var i = 0; i < h; i++)
        for (var j = 0; j < w; j++)
        for (var di = -1; di <= 1; di++)
        for (var dj = -1; dj <= 1; dj++)
        {
            int ii = i + di, jj = j + dj; // the input pixel (ii, jj) feeds output (i, j) with weight w[di+1, dj+1]
            if (ii < 0 || jj < 0 || ii >= h || jj >= w) continue;
            g[ii * w + jj] += r[i * w + j] * wp[(di + 1) * 3 + dj + 1];
        }
        return g;
    }

    [Fact]
    public void ConvRuleWithoutStepsIsTheInputTimesTheTransposedConvolutionOfRNotRz()
    {
        using var scope = torch.NewDisposeScope();
        var (node, unit) = Conv3x3();
        using var _ = unit;
        torch.manual_seed(4);
        var x = torch.rand(1, 1, 4, 4, dtype: float64);
        var r = torch.rand(1, 1, 4, 4, dtype: float64);
        var wp = new[] { 0.5, 0, 0.25, 1, 2, 0, 0, 0.75, 1.5 };
        var rin = new PublishedConvRootRule(steps: 0).Propagate(Context(node, x, unit.Forward(x), r))[0];
        var vjp = TransposeByLoops(Values(r), wp, 4, 4);
        ShouldBe(rin, Values(x).Select((v, i) => v * vjp[i]).ToArray(), 1e-12);
        // not conservative: Σ R_in = Σ_j R_j·z_j with z = conv(x, W⁺), not Σ R
        var z = F.conv2d(x, torch.tensor(wp, dtype: float64).reshape(1, 1, 3, 3), padding: new long[] { 1, 1 });
        rin.sum().item<double>().Should().BeApproximately((r * z).sum().item<double>(), 1e-10);
        Math.Abs(rin.sum().item<double>() - r.sum().item<double>()).Should().BeGreaterThan(0.5);
    }

    [Fact]
    public void SsimSignalDescendsTheSimilarityWithUnitStepsMatchingFiniteDifferences()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(6);
        var w = torch.tensor(new[] { 0.5, 0, 0.25, 1, 2, 0, 0, 0.75, 1.5 }, dtype: float64).reshape(1, 1, 3, 3);
        Tensor Layer(Tensor t) => F.conv2d(t, w, padding: new long[] { 1, 1 });
        var x = torch.rand(1, 1, 4, 4, dtype: float64);
        var r = torch.rand(1, 1, 4, 4, dtype: float64);
        double Similarity(Tensor s) => Ssim.Mean(Layer(s), r).item<double>();

        // one step: S = x − 1·∇SSIM(conv(x), R), with the gradient by central differences
        var fd = new double[16];
        var xv = Values(x);
        const double h = 1e-6;
        for (var i = 0; i < 16; i++)
        {
            var p = (double[])xv.Clone();
            var m = (double[])xv.Clone();
            p[i] += h;
            m[i] -= h;
            fd[i] = (Similarity(torch.tensor(p, dtype: float64).reshape(1, 1, 4, 4)) - Similarity(torch.tensor(m, dtype: float64).reshape(1, 1, 4, 4))) / (2 * h);
        }
        var one = PublishedSolvers.SsimSignal(x, r, Layer, steps: 1);
        ShouldBe(one, xv.Select((v, i) => v - fd[i]).ToArray(), 1e-7);
        var twice = PublishedSolvers.SsimSignal(x, r, Layer, steps: 1, learningRate: 2);
        ShouldBe(twice, xv.Select((v, i) => v - 2 * fd[i]).ToArray(), 1e-7);

        // five steps keep descending: the layer output looks less and less like R
        var five = PublishedSolvers.SsimSignal(x, r, Layer, steps: 5);
        Similarity(one).Should().BeLessThan(Similarity(x));
        Similarity(five).Should().BeLessThan(Similarity(one));
    }

    [Fact]
    public void ConvRuleRunsFiveStepsByDefault()
    {
        using var scope = torch.NewDisposeScope();
        var (node, unit) = Conv3x3();
        using var _ = unit;
        torch.manual_seed(8);
        var x = torch.rand(1, 1, 4, 4, dtype: float64);
        var r = torch.rand(1, 1, 4, 4, dtype: float64);
        var wp = torch.tensor(new[] { 0.5, 0, 0.25, 1, 2, 0, 0, 0.75, 1.5 }, dtype: float64).reshape(1, 1, 3, 3);
        var s = PublishedSolvers.SsimSignal(x, r, t => F.conv2d(t, wp, padding: new long[] { 1, 1 }), steps: 5);
        var expected = s * F.conv_transpose2d(r, wp, padding: new long[] { 1, 1 });
        var rule = new PublishedConvRootRule();
        rule.Steps.Should().Be(5);
        ShouldBe(rule.Propagate(Context(node, x, unit.Forward(x), r, recordRoots: true))[0], Values(expected), 1e-12);
    }

    [Fact]
    public void FirstConvolutionStartsFromOnesWhateverTheInput()
    {
        using var scope = torch.NewDisposeScope();
        var (node, unit) = Conv3x3();
        using var _ = unit;
        torch.manual_seed(10);
        var r = torch.rand(1, 1, 4, 4, dtype: float64);
        var x1 = torch.rand(1, 1, 4, 4, dtype: float64);
        var x2 = torch.randn(1, 1, 4, 4, dtype: float64) * 5;
        var rule = new PublishedConvRootRule(startFromOnes: true);
        var a = rule.Propagate(Context(node, x1, unit.Forward(x1), r))[0];
        var b = rule.Propagate(Context(node, x2, unit.Forward(x2), r))[0];
        Values(a).Should().Equal(Values(b));
        // with no steps the signal is the ones tensor: R_in = convᵀ(R, W⁺)
        var flat = new PublishedConvRootRule(startFromOnes: true, steps: 0).Propagate(Context(node, x1, unit.Forward(x1), r))[0];
        ShouldBe(flat, TransposeByLoops(Values(r), new[] { 0.5, 0, 0.25, 1, 2, 0, 0, 0.75, 1.5 }, 4, 4), 1e-12);
        var ones = torch.ones(1, 1, 4, 4, dtype: float64);
        var s = PublishedSolvers.SsimSignal(ones, r, t => unit.Forward(t, unit.Weight.clamp_min(0), null), 5);
        ShouldBe(a, Values(s * F.conv_transpose2d(r, unit.Weight.clamp_min(0), padding: new long[] { 1, 1 })), 1e-12);
    }

    // ---------- ReLU ----------

    private static GraphNode ReluNode() => new OperationNode("relu", NodeKind.Activation, 0, t => F.relu(t)) { ClampsToNonNegative = true };

    [Fact]
    public void ReluRuleDividesByTheActivationWhenNoTargetIsExactlyOne()
    {
        using var scope = torch.NewDisposeScope();
        var pre = torch.tensor(new[,] { { 2.0, 0.5, -1, 3, 0 } }, dtype: float64);
        var a = F.relu(pre);
        var r = torch.tensor(new[,] { { 0.4, -2, 5, 0.3, 7 } }, dtype: float64);
        // S starts at 1 where relu(S) = 1 = margin: the hinge gradient is 0 for targets ≠ ±1, so S stays 1 and
        // R_in = 1·relu′(a)·R/(a + 1e-9)
        var rin = new PublishedReluRule().Propagate(Context(ReluNode(), pre, a, r))[0];
        ShouldBe(rin, new[] { 0.4 / 2, -2 / 0.5, 0, 0.3 / 3, 0 }, 1e-8);
    }

    [Fact]
    public void ReluSolverMovesOnlyWhereTheGradientConstraintAllowsIt()
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.tensor(new[,] { { 2.0, 0.5 } }, dtype: float64);
        var r = torch.tensor(new[,] { { 1.0, 1 } }, dtype: float64);
        // targets 1: dℓ/dS = relu′(S)/N = 1/2. Element 0: relu′(2 − 1) = relu′(2) → no damping, S = 1 − 3·0.5 = −0.5,
        // then relu′(−0.5) = 0 stops it. Element 1: relu′(0.5 − 1) = 0 ≠ relu′(0.5) = 1 → lr ·= 0.1^8.5 every step.
        var s = PublishedSolvers.ReluSignal(a, r, steps: 20);
        var v = Values(s);
        v[0].Should().BeApproximately(-0.5, 1e-12);
        var d = Math.Pow(0.1, 8.5);
        var moved = 0.0;
        var lr = 3.0;
        for (var k = 0; k < 20; k++)
        {
            lr *= d;
            moved += lr * 0.5;
        }
        v[1].Should().BeApproximately(1 - moved, 1e-15);
        (1 - v[1]).Should().BeGreaterThan(0);
        var rin = new PublishedReluRule().Propagate(Context(ReluNode(), a, a, r))[0];
        ShouldBe(rin, new[] { -0.5 / 2, v[1] / 0.5 }, 1e-8);
    }

    [Fact]
    public void ReluRuleRejectsOtherActivations()
    {
        using var scope = torch.NewDisposeScope();
        var gelu = new OperationNode("gelu", NodeKind.Activation, 0, t => F.gelu(t));
        var x = torch.ones(1, 3);
        var act = () => new PublishedReluRule().Propagate(Context(gelu, x, F.gelu(x), x));
        act.Should().Throw<ExplanationException>();
    }

    // ---------- pooling and the residual split ----------

    [Fact]
    public void MaxPoolRuleSendsEachRatioToTheWinner()
    {
        using var scope = torch.NewDisposeScope();
        var pool = nn.MaxPool2d(2, 2);
        var node = new OperationNode("pool", NodeKind.MaxPool, 0, t => pool.forward(t)) { Module = pool };
        var x = torch.tensor(new[] { 1.0, 2, 0, 1, 4, 3, 1, 5, 0, 0, 2, 2, 1, 0, 1, 3 }, dtype: float64).reshape(1, 1, 4, 4);
        var r = torch.tensor(new[] { 1.0, 2, 3, 4 }, dtype: float64).reshape(1, 1, 2, 2);
        var rin = new PublishedMaxPoolRule().Propagate(Context(node, x, pool.forward(x), r))[0];
        var e = new double[16];
        e[4] = 4 * 1 / (4 + 1e-9);
        e[7] = 5 * 2 / (5 + 1e-9);
        e[12] = 1 * 3 / (1 + 1e-9);
        e[15] = 3 * 4 / (3 + 1e-9);
        ShouldBe(rin, e, 1e-12);
    }

    [Fact]
    public void MaxPoolRuleOverwritesOverlappingWinnersLikeMaxUnpool()
    {
        using var scope = torch.NewDisposeScope();
        var pool = nn.MaxPool2d(new long[] { 1, 2 }, new long[] { 1, 1 });
        var node = new OperationNode("pool", NodeKind.MaxPool, 0, t => pool.forward(t)) { Module = pool };
        var x = torch.tensor(new[] { 1.0, 3, 2 }, dtype: float64).reshape(1, 1, 1, 3);
        var r = torch.tensor(new[] { 10.0, 1 }, dtype: float64).reshape(1, 1, 1, 2);
        // both windows pick the 3: max_unpool2d writes, so only one window's ratio arrives (the reference loses the other)
        var rin = Values(new PublishedMaxPoolRule().Propagate(Context(node, x, pool.forward(x), r))[0]);
        rin[0].Should().Be(0);
        rin[2].Should().Be(0);
        new[] { 10.0, 1.0 }.Should().Contain(v => Math.Abs(v - rin[1]) < 1e-6);
        var acc = new PublishedMaxPoolRule(accumulateOverlaps: true).Propagate(Context(node, x, pool.forward(x), r))[0];
        ShouldBe(acc, new[] { 0, 11.0, 0 }, 1e-6);
    }

    [Fact]
    public void GlobalAveragePoolSplitsProportionallyAndIdentityPoolingPasses()
    {
        using var scope = torch.NewDisposeScope();
        var gap = nn.AdaptiveAvgPool2d(1);
        var node = new OperationNode("avgpool", NodeKind.AvgPool, 0, t => gap.forward(t)) { Module = gap };
        var x = torch.tensor(new[] { 1.0, 2, 3, 4 }, dtype: float64).reshape(1, 1, 2, 2);
        var r = torch.tensor(new[] { 5.0 }, dtype: float64).reshape(1, 1, 1, 1);
        var rin = PublishedAvgPoolRule.Instance.Propagate(Context(node, x, gap.forward(x), r))[0];
        ShouldBe(rin, new[] { 1, 2, 3, 4 }.Select(v => v * 5 / (10 + 1e-9)).ToArray(), 1e-12);

        var same = nn.AdaptiveAvgPool2d(2);
        var idNode = new OperationNode("avgpool", NodeKind.AvgPool, 0, t => same.forward(t)) { Module = same };
        var r2 = torch.tensor(new[] { 1.0, -2, 3, 0.5 }, dtype: float64).reshape(1, 1, 2, 2);
        Values(PublishedAvgPoolRule.Instance.Propagate(Context(idNode, x, same.forward(x), r2))[0]).Should().Equal(Values(r2));
    }

    [Fact]
    public void SkipSplitIsProportionalWithAPlusEpsilonShift()
    {
        using var scope = torch.NewDisposeScope();
        var node = new SumNode("sum", new[] { 0, 0 });
        var a = torch.tensor(new[,] { { 1.0, -2 } }, dtype: float64);
        var b = torch.tensor(new[,] { { 3.0, 1 } }, dtype: float64);
        var r = torch.tensor(new[,] { { 4.0, 1 } }, dtype: float64);
        var ctx = new RuleContext(node, new[] { a, b }, a + b, r, InputDomain.Free, null, null, new ExplanationRecorder(false, false));
        var res = PublishedSkipRule.Instance.Propagate(ctx);
        ShouldBe(res[0], new[] { 4 / (4 + 1e-9), -2 / (-1 + 1e-9) }, 1e-12);
        ShouldBe(res[1], new[] { 12 / (4 + 1e-9), 1 / (-1 + 1e-9) }, 1e-12);
    }
}
