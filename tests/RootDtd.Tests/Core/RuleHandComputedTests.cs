using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Rules;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

/// <summary>
/// Every classic rule on tiny layers against values computed here with plain C# arithmetic from the rule's formula
/// (zennit conventions: stabiliser z + ε·sign(z) with sign(0) = +1, default ε = 1e-6).
/// </summary>
public class RuleHandComputedTests
{
    // dense 3 → 2: z = W x + b = [1, -4.75]: one positive and one negative output; x has a negative entry
    private static readonly double[,] W = { { 1.0, -2.0, 0.5 }, { -1.0, 0.5, 2.0 } };
    private static readonly double[] B = { 0.5, -1.0 };
    private static readonly double[] X = { 2.0, 0.5, -1.0 };
    private static readonly double[] R = { 0.7, -0.3 };
    private const double Eps = 1e-6;

    private static double Stab(double z, double eps = Eps) => z + eps * (z >= 0 ? 1 : -1);
    private static double Pos(double v) => Math.Max(v, 0);
    private static double Neg(double v) => Math.Min(v, 0);

    /// <summary>
    /// The generic "modified forward" formula for one group: z_j = Σ_i wIn(w_ji)·xIn(x_i) + bias_j, s_j = R_j/stab(z_j),
    /// R_i = Σ_j xIn(x_i)·wIn(w_ji)·s_j, summed over the group's terms.
    /// </summary>
    private static double[] Group(double[,] w, double[] b, double[] x, double[] r,
        (Func<double, double> X, Func<double, double> W, Func<double, double>? B)[] terms, Func<int, bool>? outputs = null, double eps = Eps)
    {
        int nOut = w.GetLength(0), nIn = w.GetLength(1);
        var result = new double[nIn];
        for (var j = 0; j < nOut; j++)
        {
            if (outputs is not null && !outputs(j)) continue;
            var z = 0.0;
            foreach (var t in terms)
            {
                for (var i = 0; i < nIn; i++) z += t.W(w[j, i]) * t.X(x[i]);
                if (t.B is not null) z += t.B(b[j]);
            }
            var s = r[j] / Stab(z, eps);
            foreach (var t in terms)
                for (var i = 0; i < nIn; i++) result[i] += t.X(x[i]) * t.W(w[j, i]) * s;
        }
        return result;
    }

    private static double[] Add(double[] a, double[] b, double sb = 1) => a.Select((v, i) => v + sb * b[i]).ToArray();

    private static double[] Dense(Rule rule, double[,] w, double[]? b, double[] x, double[] r, InputDomain domain = InputDomain.Free, Tensor? low = null, Tensor? high = null)
    {
        using var scope = torch.NewDisposeScope();
        var wt = torch.tensor(w.Cast<double>().ToArray(), new long[] { w.GetLength(0), w.GetLength(1) }, float64);
        var unit = LinearUnit.Dense(wt, b is null ? null : torch.tensor(b, float64));
        var node = new LinearUnitNode("dense", unit, 0);
        try
        {
            return TestNets.Propagate(rule, node, new[] { torch.tensor(x, float64).unsqueeze(0) }, torch.tensor(r, float64).unsqueeze(0), domain, low, high);
        }
        finally
        {
            unit.Dispose();
        }
    }

    private static void ShouldEqual(double[] actual, double[] expected, double tol = 1e-12)
    {
        actual.Should().HaveCount(expected.Length);
        var scale = Math.Max(expected.Max(Math.Abs), 1e-12);
        for (var i = 0; i < expected.Length; i++)
            Math.Abs(actual[i] - expected[i]).Should().BeLessThanOrEqualTo(tol * scale, $"element {i}: {actual[i]:R} vs {expected[i]:R}");
    }

    private static readonly Func<double, double> Id = v => v;

    [Fact]
    public void DenseForwardIsTheOneTheCasesAssume()
    {
        // z = [2 - 1 - 0.5 + 0.5, -2 + 0.25 - 2 - 1]
        var z = Enumerable.Range(0, 2).Select(j => Enumerable.Range(0, 3).Sum(i => W[j, i] * X[i]) + B[j]).ToArray();
        z.Should().Equal(1.0, -4.75);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(1e-6)]
    [InlineData(0.5)]
    public void EpsilonAndLrp0(double epsilon)
    {
        var expected = Group(W, B, X, R, new[] { (Id, Id, (Func<double, double>?)Id) }, eps: epsilon);
        // spelled out once for ε = 0.5: s = [0.7/1.5, -0.3/-5.25]
        if (epsilon == 0.5)
        {
            double s0 = 0.7 / 1.5, s1 = -0.3 / -5.25;
            ShouldEqual(expected, new[] { 2 * (1 * s0 - 1 * s1), 0.5 * (-2 * s0 + 0.5 * s1), -1 * (0.5 * s0 + 2 * s1) });
        }
        ShouldEqual(Dense(new EpsilonRule(epsilon), W, B, X, R), expected);
    }

    [Fact]
    public void Lrp0WithoutBiasConservesTheLayerRelevance()
    {
        var r = Dense(new EpsilonRule(0), W, new[] { 0.0, 0.0 }, X, R);
        r.Sum().Should().BeApproximately(R.Sum(), 1e-14);
    }

    [Theory]
    [InlineData(0.25)]
    [InlineData(1.0)]
    public void GammaTreatsPositiveAndNegativeOutputsSeparately(double gamma)
    {
        Func<double, double> up = v => v + gamma * Pos(v), down = v => v + gamma * Neg(v);
        // z > 0 (output 0): (W+γW⁺)x⁺ + (W+γW⁻)x⁻ + (b+γb⁺); z < 0 (output 1): (W+γW⁻)x⁺ + (W+γW⁺)x⁻ + (b+γb⁻)
        var positive = Group(W, B, X, R, new[] { ((Func<double, double>)Pos, up, (Func<double, double>?)up), (Neg, down, null) }, j => j == 0);
        var negative = Group(W, B, X, R, new[] { ((Func<double, double>)Pos, down, (Func<double, double>?)down), (Neg, up, null) }, j => j == 1);
        ShouldEqual(Dense(new GammaRule(gamma), W, B, X, R), Add(positive, negative));
    }

    [Theory]
    [InlineData(0.25)]
    [InlineData(1.0)]
    public void GammaOnTheReluDomainMatchesTheHandFormula(double gamma)
    {
        // x ≥ 0 and the ReLU domain: the rule's shortcut (z + γ·(W⁺x+b⁺), z + γ·(z − W⁺x − b⁺)) against the two groups
        // written out; output 0 has z = 3 > 0, output 1 has z = -2.75 < 0
        var x = new[] { 2.0, 0.5, 0.0 };
        var b = new[] { 2.0, -1.0 };
        Func<double, double> up = v => v + gamma * Pos(v), down = v => v + gamma * Neg(v);
        var positive = Group(W, b, x, R, new[] { ((Func<double, double>)Pos, up, (Func<double, double>?)up) }, j => j == 0);
        var negative = Group(W, b, x, R, new[] { ((Func<double, double>)Pos, down, (Func<double, double>?)down) }, j => j == 1);
        ShouldEqual(Dense(new GammaRule(gamma), W, b, x, R, InputDomain.Relu), Add(positive, negative));
        ShouldEqual(Dense(new GammaRule(gamma), W, b, x, R, InputDomain.Relu), Dense(new GammaRule(gamma), W, b, x, R));
    }

    [Fact]
    public void GammaPassesNothingThroughAnOutputThatIsExactlyZero()
    {
        // b = [-1, ...] makes z_0 = 0 exactly
        var b = new[] { -0.5, -1.0 };
        var expected = Group(W, b, X, R, new[] { ((Func<double, double>)Pos, (Func<double, double>)(v => v + 0.25 * Neg(v)), (Func<double, double>?)(v => v + 0.25 * Neg(v))), (Neg, v => v + 0.25 * Pos(v), null) }, j => j == 1);
        ShouldEqual(Dense(new GammaRule(0.25), W, b, X, R), expected);
    }

    [Fact]
    public void ZPlus()
    {
        // z = W⁺x⁺ + W⁻x⁻ + b⁺
        var expected = Group(W, B, X, R, new[] { ((Func<double, double>)Pos, (Func<double, double>)Pos, (Func<double, double>?)Pos), (Neg, Neg, null) });
        ShouldEqual(Dense(new ZPlusRule(), W, B, X, R), expected);
    }

    [Fact]
    public void ZPlusDropsTheRelevanceOfAnOutputWithoutPositiveContributions()
    {
        // x ≥ 0 (as after a ReLU) and every active input meets a negative weight: z = -3 < 0, z⁺ = 0 exactly, so the
        // stabiliser turns s_0 into R_0 / 1e-6 and every contribution x_i·w⁺_i·s_0 is 0 — output 0's relevance is lost.
        // This is why z⁺ conserves only where every output that receives relevance has z⁺ > 0 (see ConservationTests).
        var w = new[,] { { -1.0, -1.0, 2.0 }, { 1.0, 0.5, -1.0 } };
        var x = new[] { 1.0, 2.0, 0.0 };
        var r = new[] { -3.0, 2.0 };
        var result = Dense(new ZPlusRule(), w, null, x, r);
        // output 1: z⁺ = 1·1 + 0.5·2 = 2, inputs 0 and 1 get 1·2/stab(2) and 0.5·2·2/stab(2); output 0 contributes nothing
        var s1 = 2.0 / Stab(2.0);
        ShouldEqual(result, new[] { s1, s1, 0.0 });
        result.Sum().Should().BeApproximately(2.0, 1e-5, "R_0 = -3 is gone: the sum is R_1 alone, not R_0 + R_1 = -1");
    }

    [Fact]
    public void AlphaTwoBetaOne()
    {
        var activating = Group(W, B, X, R, new[] { ((Func<double, double>)Pos, (Func<double, double>)Pos, (Func<double, double>?)Pos), (Neg, Neg, null) });
        var inhibiting = Group(W, B, X, R, new[] { ((Func<double, double>)Pos, (Func<double, double>)Neg, (Func<double, double>?)Neg), (Neg, Pos, null) });
        ShouldEqual(Dense(new AlphaBetaRule(2, 1), W, B, X, R), Add(activating.Select(v => 2 * v).ToArray(), inhibiting, -1));
    }

    [Fact]
    public void WSquare()
    {
        // R_i = Σ_j w_ji² R_j / stab(Σ_i' w_ji'² + b_j²)
        var expected = new double[3];
        for (var j = 0; j < 2; j++)
        {
            var z = Enumerable.Range(0, 3).Sum(i => W[j, i] * W[j, i]) + B[j] * B[j];
            for (var i = 0; i < 3; i++) expected[i] += W[j, i] * W[j, i] * R[j] / Stab(z);
        }
        ShouldEqual(Dense(new WSquareRule(), W, B, X, R), expected);
    }

    /// <summary>
    /// w² is invariant under scaling one output unit's weights and bias, so extreme weights must give the relevance of
    /// ordinary ones. In float32, |w| ≈ 1e20 squared overflows (and 1e-20 squared underflows): the rule returned zero
    /// relevance before its squares were taken of per-unit scaled weights.
    /// </summary>
    [Theory]
    [InlineData(1e20)]
    [InlineData(3e18)]
    [InlineData(1e-20)]
    public void WSquareWithExtremeWeightsInFloat32(double magnitude)
    {
        var expected = new double[3];
        for (var j = 0; j < 2; j++)
        {
            var z = Enumerable.Range(0, 3).Sum(i => W[j, i] * W[j, i]) + B[j] * B[j];
            for (var i = 0; i < 3; i++) expected[i] += W[j, i] * W[j, i] * R[j] / z;
        }
        using var scope = torch.NewDisposeScope();
        // the second unit ordinary, the first extreme: the scale is per unit
        var wt = torch.tensor(W.Cast<double>().ToArray(), new long[] { 2, 3 }, float64) * torch.tensor(new[] { magnitude, 1.0 }, float64).unsqueeze(1);
        var bt = torch.tensor(B, float64) * torch.tensor(new[] { magnitude, 1.0 }, float64);
        using var unit = LinearUnit.Dense(wt.to(float32), bt.to(float32));
        var node = new LinearUnitNode("dense", unit, 0);
        var actual = TestNets.Propagate(new WSquareRule(), node, new[] { torch.tensor(X, float32).unsqueeze(0) }, torch.tensor(R, float32).unsqueeze(0), InputDomain.Free, null, null);
        actual.Should().OnlyContain(v => double.IsFinite(v));
        ShouldEqual(actual, expected, 1e-5);
    }

    [Fact]
    public void FlatSharesEquallyAndIgnoresTheBias()
    {
        var expected = Enumerable.Repeat(R.Sum(r => r / Stab(3)), 3).ToArray();
        ShouldEqual(Dense(new FlatRule(), W, B, X, R), expected);
    }

    [Fact]
    public void ZBox()
    {
        double[] l = { -1.0, -2.0, -1.5 }, h = { 2.5, 1.0, 0.5 };
        var expected = new double[3];
        for (var j = 0; j < 2; j++)
        {
            var z = B[j] - Pos(B[j]) - Neg(B[j]);
            for (var i = 0; i < 3; i++) z += W[j, i] * X[i] - Pos(W[j, i]) * l[i] - Neg(W[j, i]) * h[i];
            var s = R[j] / Stab(z);
            for (var i = 0; i < 3; i++) expected[i] += (X[i] * W[j, i] - l[i] * Pos(W[j, i]) - h[i] * Neg(W[j, i])) * s;
        }
        using var scope = torch.NewDisposeScope();
        var low = torch.tensor(l, float64).unsqueeze(0);
        var high = torch.tensor(h, float64).unsqueeze(0);
        ShouldEqual(Dense(new ZBoxRule(), W, B, X, R, InputDomain.PixelBox, low, high), expected);
        // the rule's own bounds (scalar) override the explainer's
        var scalar = new double[3];
        for (var j = 0; j < 2; j++)
        {
            var z = B[j] - Pos(B[j]) - Neg(B[j]);
            for (var i = 0; i < 3; i++) z += W[j, i] * X[i] - Pos(W[j, i]) * -3 - Neg(W[j, i]) * 3;
            for (var i = 0; i < 3; i++) scalar[i] += (X[i] * W[j, i] + 3 * Pos(W[j, i]) - 3 * Neg(W[j, i])) * R[j] / Stab(z);
        }
        ShouldEqual(Dense(new ZBoxRule(-3.0, 3.0), W, B, X, R, InputDomain.PixelBox, low, high), scalar);
    }

    [Fact]
    public void ZBoxWithoutBoundsExplainsWhatIsMissing()
    {
        var act = () => Dense(new ZBoxRule(), W, B, X, R);
        act.Should().Throw<ExplanationException>().WithMessage("*InputLow*");
    }

    // conv: 1 channel, 3×3 input, 2×2 kernel, stride 1, no padding → 2×2 output = a 4×9 dense matrix
    private static readonly double[,] Kernel = { { 1.0, -0.5 }, { 0.25, 2.0 } };
    private static readonly double[] ConvX = { 1, -2, 3, 0.5, 1.5, -1, 2, 0, 1 };
    private static readonly double[] ConvR = { 0.4, -0.2, 0.3, 0.1 };
    private const double ConvBias = -0.5;

    private static double[,] ConvAsMatrix()
    {
        var m = new double[4, 9];
        for (var p = 0; p < 2; p++)
            for (var q = 0; q < 2; q++)
                for (var a = 0; a < 2; a++)
                    for (var c = 0; c < 2; c++)
                        m[p * 2 + q, (p + a) * 3 + q + c] = Kernel[a, c];
        return m;
    }

    private static double[] Conv(Rule rule)
    {
        using var scope = torch.NewDisposeScope();
        var unit = LinearUnit.Convolution(torch.tensor(Kernel.Cast<double>().ToArray(), new long[] { 1, 1, 2, 2 }, float64),
            torch.tensor(new[] { ConvBias }, float64), new long[] { 1, 1 }, new long[] { 0, 0 }, new long[] { 1, 1 }, 1);
        var node = new LinearUnitNode("conv", unit, 0);
        try
        {
            return TestNets.Propagate(rule, node, new[] { torch.tensor(ConvX, new long[] { 1, 1, 3, 3 }, float64) },
                torch.tensor(ConvR, new long[] { 1, 1, 2, 2 }, float64));
        }
        finally
        {
            unit.Dispose();
        }
    }

    [Fact]
    public void ConvolutionZPlusAndEpsilon()
    {
        var m = ConvAsMatrix();
        var bias = Enumerable.Repeat(ConvBias, 4).ToArray();
        ShouldEqual(Conv(new ZPlusRule()), Group(m, bias, ConvX, ConvR, new[] { ((Func<double, double>)Pos, (Func<double, double>)Pos, (Func<double, double>?)Pos), (Neg, Neg, null) }));
        ShouldEqual(Conv(new EpsilonRule(0.1)), Group(m, bias, ConvX, ConvR, new[] { (Id, Id, (Func<double, double>?)Id) }, eps: 0.1));
        // the unfolding, checked on the top-left output: 1·1 − 0.5·(−2) + 0.25·0.5 + 2·1.5 = 5.125 (before the bias)
        Enumerable.Range(0, 9).Sum(i => m[0, i] * ConvX[i]).Should().Be(5.125);
    }

    [Fact]
    public void NormSplitsASumProportionally()
    {
        using var scope = torch.NewDisposeScope();
        double[] a = { 1.0, -2.0, 3.0 }, b = { 3.0, 1.0, -1.0 }, r = { 0.8, 0.5, -0.2 };
        var node = new SumNode("sum", new[] { 0, 0 });
        var inputs = new[] { torch.tensor(a, float64).unsqueeze(0), torch.tensor(b, float64).unsqueeze(0) };
        var rel = torch.tensor(r, float64).unsqueeze(0);
        var ra = TestNets.Propagate(new NormRule(new Stabilizer(0)), node, inputs, rel, which: 0);
        var rb = TestNets.Propagate(new NormRule(new Stabilizer(0)), node, inputs, rel, which: 1);
        ShouldEqual(ra, new[] { 1.0 / 4 * 0.8, -2.0 / -1 * 0.5, 3.0 / 2 * -0.2 });
        ShouldEqual(rb, new[] { 3.0 / 4 * 0.8, 1.0 / -1 * 0.5, -1.0 / 2 * -0.2 });
    }

    [Fact]
    public void NormOnAveragePoolingSharesByContribution()
    {
        using var scope = torch.NewDisposeScope();
        // 1×1×2×4 input, 2×2 average pool → 1×1×1×2
        double[] x = { 1, 2, 3, 4, 5, 6, -1, 1 };
        double[] r = { 0.6, -0.9 };
        var pool = nn.AvgPool2d(2);
        var node = new OperationNode("pool", NodeKind.AvgPool, 0, t => pool.forward(t));
        var got = TestNets.Propagate(new NormRule(), node, new[] { torch.tensor(x, new long[] { 1, 1, 2, 4 }, float64) }, torch.tensor(r, new long[] { 1, 1, 1, 2 }, float64));
        double z0 = (1 + 2 + 5 + 6) / 4.0, z1 = (3 + 4 - 1 + 1) / 4.0;
        double s0 = r[0] / Stab(z0) / 4, s1 = r[1] / Stab(z1) / 4;
        ShouldEqual(got, new[] { 1 * s0, 2 * s0, 3 * s1, 4 * s1, 5 * s0, 6 * s0, -1 * s1, 1 * s1 });
    }

    [Fact]
    public void MaxPoolGradientRoutesRelevanceToTheArgMax()
    {
        using var scope = torch.NewDisposeScope();
        double[] x = { 1, 7, 3, 4, 5, 6, -1, 9 };
        var pool = nn.MaxPool2d(2);
        var node = new OperationNode("pool", NodeKind.MaxPool, 0, t => pool.forward(t));
        var got = TestNets.Propagate(GradientRule.Instance, node, new[] { torch.tensor(x, new long[] { 1, 1, 2, 4 }, float64) },
            torch.tensor(new[] { 0.6, -0.9 }, new long[] { 1, 1, 1, 2 }, float64));
        // window 0 = {1, 7, 5, 6} → max 7 at index 1; window 1 = {3, 4, -1, 9} → max 9 at index 7
        ShouldEqual(got, new[] { 0, 0.6, 0, 0, 0, 0, 0, -0.9 });
    }

    [Fact]
    public void PassThroughFlattenRestoresTheInputLayout()
    {
        using var scope = torch.NewDisposeScope();
        var node = new OperationNode("flatten", NodeKind.Shape, 0, t => t.flatten(1));
        var x = torch.arange(8, float64).reshape(1, 2, 2, 2);
        var r = torch.tensor(new[] { 1.0, 2, 3, 4, 5, 6, 7, 8 }, float64).unsqueeze(0);
        Tensor output;
        using (torch.no_grad()) output = node.Forward(new[] { x });
        var result = PassRule.Instance.Propagate(new RuleContext(node, new[] { x }, output, r, InputDomain.Free, null, null, new ExplanationRecorder(false, false)))[0];
        result.shape.Should().Equal(1, 2, 2, 2);
        // element [0, c, h, w] of the input was element c·4 + h·2 + w of the flattened output
        result[0, 1, 0, 1].item<double>().Should().Be(6);
        result[0, 0, 1, 0].item<double>().Should().Be(3);
    }

    [Fact]
    public void ExplainerStartsFromTheTargetLogitAndAppliesTheRule()
    {
        using var scope = torch.NewDisposeScope();
        var lin = nn.Linear(3, 2);
        using (torch.no_grad())
        {
            lin.to(float64);
            lin.weight!.copy_(torch.tensor(W.Cast<double>().ToArray(), new long[] { 2, 3 }, float64));
            lin.bias!.copy_(torch.tensor(B, float64));
        }
        var model = nn.Sequential(("fc", lin));
        using var explainer = new Explainer(model, Composites.Composites.Uniform("eps", new EpsilonRule(0.5)));
        using var e = explainer.Explain(torch.tensor(X, float64).unsqueeze(0), new long[] { 1 });
        // start relevance = [0, z_1] = [0, -4.75]
        var expected = Group(W, B, X, new[] { 0.0, -4.75 }, new[] { (Id, Id, (Func<double, double>?)Id) }, eps: 0.5);
        ShouldEqual(e.InputRelevance.contiguous().data<double>().ToArray(), expected);
        e.Conservation.StartRelevance.Should().Equal(-4.75);
        e.Targets.Should().Equal(1);
    }
}
