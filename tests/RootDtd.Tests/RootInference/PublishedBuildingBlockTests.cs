using FluentAssertions;
using RootDtd.Rules.RootInference.Published;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Tests.RootInference;

/// <summary>SSIM, the hinge-embedding loss and the reference's safe division, against hand values and plain-loop oracles.</summary>
public class PublishedBuildingBlockTests
{
    // ---------- SSIM ----------

    /// <summary>The normalised 1-D Gaussian of the reference, in double.</summary>
    private static double[] Gaussian()
    {
        var g = new double[Ssim.WindowSize];
        for (var i = 0; i < g.Length; i++) g[i] = Math.Exp(-Math.Pow(i - Ssim.WindowSize / 2, 2) / (2 * Ssim.Sigma * Ssim.Sigma));
        var s = g.Sum();
        return g.Select(v => v / s).ToArray();
    }

    /// <summary>SSIM map of one channel by plain loops: Gaussian window, zero padding 5, C1/C2 constants.</summary>
    private static double[,] LoopSsim(double[,] a, double[,] b)
    {
        var g = Gaussian();
        int h = a.GetLength(0), w = a.GetLength(1), r = Ssim.WindowSize / 2;
        var map = new double[h, w];
        for (var i = 0; i < h; i++)
        for (var j = 0; j < w; j++)
        {
            double m1 = 0, m2 = 0, e11 = 0, e22 = 0, e12 = 0;
            for (var di = -r; di <= r; di++)
            for (var dj = -r; dj <= r; dj++)
            {
                int ii = i + di, jj = j + dj;
                if (ii < 0 || jj < 0 || ii >= h || jj >= w) continue; // zero padding
                var k = g[di + r] * g[dj + r];
                m1 += k * a[ii, jj];
                m2 += k * b[ii, jj];
                e11 += k * a[ii, jj] * a[ii, jj];
                e22 += k * b[ii, jj] * b[ii, jj];
                e12 += k * a[ii, jj] * b[ii, jj];
            }
            double s11 = e11 - m1 * m1, s22 = e22 - m2 * m2, s12 = e12 - m1 * m2;
            map[i, j] = (2 * m1 * m2 + Ssim.C1) * (2 * s12 + Ssim.C2) / ((m1 * m1 + m2 * m2 + Ssim.C1) * (s11 + s22 + Ssim.C2));
        }
        return map;
    }

    private static double[,] Plane(Tensor t, int b, int c)
    {
        var p = t[b, c].to(float64).cpu();
        var h = (int)p.shape[0];
        var w = (int)p.shape[1];
        var v = p.data<double>().ToArray();
        var r = new double[h, w];
        for (var i = 0; i < h; i++)
        for (var j = 0; j < w; j++) r[i, j] = v[i * w + j];
        return r;
    }

    [Fact]
    public void SsimOfIdenticalImagesIsOne()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(3);
        var x = torch.randn(2, 3, 9, 7, dtype: float64);
        Ssim.Map(x, x).sub(1).abs().max().item<double>().Should().BeLessThan(1e-12);
        Ssim.PerSample(x, x).sub(1).abs().max().item<double>().Should().BeLessThan(1e-12);
        Ssim.Mean(x, x).item<double>().Should().BeApproximately(1, 1e-12);
    }

    [Fact]
    public void SsimOfConstantImagesMatchesTheLuminanceFormulaAwayFromTheBorder()
    {
        using var scope = torch.NewDisposeScope();
        const double a = 0.3, b = 0.7;
        var map = Ssim.Map(torch.full(1, 1, 21, 21, a, dtype: float64), torch.full(1, 1, 21, 21, b, dtype: float64));
        var expected = (2 * a * b + Ssim.C1) / (a * a + b * b + Ssim.C1);
        // the window fits inside the image for rows/columns 5…15; the reference's window is normalised in float32
        map[0, 0, TensorIndex.Slice(5, 16), TensorIndex.Slice(5, 16)].sub(expected).abs().max().item<double>().Should().BeLessThan(1e-4);
        // at the border the zero padding darkens the means: not the formula any more
        Math.Abs(map[0, 0, 0, 0].item<double>() - expected).Should().BeGreaterThan(1e-3);
    }

    [Fact]
    public void SsimOfASinglePixelMatchesTheClosedForm()
    {
        using var scope = torch.NewDisposeScope();
        // 1×1 map: only the window's centre weight wc lies inside, so μ = wc·a, σ² = a²·wc·(1 − wc), σ₁₂ = ab·wc·(1 − wc).
        const double a = 2.0, b = -0.5;
        var wc = Math.Pow(Gaussian()[Ssim.WindowSize / 2], 2);
        var v = wc * (1 - wc);
        var expected = (2 * wc * wc * a * b + Ssim.C1) * (2 * a * b * v + Ssim.C2) / ((wc * wc * (a * a + b * b) + Ssim.C1) * (v * (a * a + b * b) + Ssim.C2));
        var got = Ssim.Mean(torch.full(1, 1, 1, 1, a, dtype: float64), torch.full(1, 1, 1, 1, b, dtype: float64)).item<double>();
        got.Should().BeApproximately(expected, 1e-6);
    }

    [Fact]
    public void SsimMatchesAPlainLoopOracleIncludingAnImageAgainstItsNegation()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(5);
        var x = torch.rand(2, 2, 7, 9, dtype: float64);
        var y = torch.rand(2, 2, 7, 9, dtype: float64) * 2 - 0.5;
        foreach (var (p, q) in new[] { (x, y), (x, -x) })
        {
            var map = Ssim.Map(p, q);
            for (var bi = 0; bi < 2; bi++)
            for (var c = 0; c < 2; c++)
            {
                var oracle = LoopSsim(Plane(p, bi, c), Plane(q, bi, c));
                var got = Plane(map, bi, c);
                for (var i = 0; i < 7; i++)
                for (var j = 0; j < 9; j++) got[i, j].Should().BeApproximately(oracle[i, j], 1e-5);
            }
        }
        // against its negation the map is (C1 − 2μ²)(C2 − 2σ²) / ((2μ² + C1)(2σ² + C2)): when μ² ≫ C1 and σ² ≫ C2 both
        // factors are ≈ −1 and the "similarity" is ≈ +1 — SSIM with fixed constants does not separate a signed map from its negation
        Ssim.Mean(x, -x).item<double>().Should().BeGreaterThan(0.9);
    }

    [Fact]
    public void SsimPerSampleIsTheMeanOfEachSample()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(9);
        var x = torch.randn(3, 2, 6, 6, dtype: float64);
        var y = torch.randn(3, 2, 6, 6, dtype: float64);
        var per = Ssim.PerSample(x, y);
        per.shape.Should().Equal(3);
        for (var i = 0; i < 3; i++)
            per[i].item<double>().Should().BeApproximately(Ssim.Mean(x[TensorIndex.Slice(i, i + 1)], y[TensorIndex.Slice(i, i + 1)]).item<double>(), 1e-14);
        Ssim.Mean(x, y).item<double>().Should().BeApproximately(per.mean().item<double>(), 1e-14);
    }

    [Fact]
    public void SsimRejectsMismatchedShapes()
    {
        using var scope = torch.NewDisposeScope();
        var act = () => Ssim.Map(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5));
        act.Should().Throw<ArgumentException>();
    }

    // ---------- hinge-embedding loss ----------

    [Fact]
    public void HingeLossMatchesHandValuesIncludingTargetsOtherThanPlusMinusOne()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.tensor(new[] { 0.5, 2, -1, 0.3, 1.5, 1 }, dtype: float64);
        var y = torch.tensor(new[] { 1, 1, -1, -1, 0.2, 3 }, dtype: float64);
        // y = 1: x;  y = −1: max(0, 1 − x);  other y: max(0, 1 − x) + x
        var expected = new[] { 0.5, 2, 2, 0.7, 1.5, 1 };
        HingeEmbeddingLoss.Elementwise(x, y).data<double>().ToArray().Should().Equal(expected, (p, q) => Math.Abs(p - q) < 1e-12);
        HingeEmbeddingLoss.Mean(x, y).item<double>().Should().BeApproximately(7.7 / 6, 1e-12);
        HingeEmbeddingLoss.PerSample(x.reshape(2, 3), y.reshape(2, 3)).data<double>().ToArray()
            .Should().Equal(new[] { 4.5 / 3, 3.2 / 3 }, (p, q) => Math.Abs(p - q) < 1e-12);
        HingeEmbeddingLoss.Mean(x, y, margin: 2).item<double>().Should().BeApproximately((0.5 + 2 + 3 + 1.7 + 2 + 2) / 6, 1e-12);
    }

    [Fact]
    public void HingeLossAgreesWithLibtorchInValueAndGradientAtTheBoundary()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.tensor(new[] { 0.5, 1, 1, 1, 1.5, -2, 1, 0 }, dtype: float64);
        var y = torch.tensor(new[] { 0.2, 0.2, 1, -1, -1, 3, 0, 0 }, dtype: float64);
        var leaf1 = x.clone().requires_grad_(true);
        var leaf2 = x.clone().requires_grad_(true);
        var mine = HingeEmbeddingLoss.Mean(leaf1, y);
        var theirs = F.hinge_embedding_loss(leaf2, y, margin: 1.0); // TorchSharp's default margin is 0, PyTorch's 1
        mine.item<double>().Should().BeApproximately(theirs.item<double>(), 1e-12);
        var g1 = torch.autograd.grad(new[] { mine }, new[] { leaf1 })[0].data<double>().ToArray();
        var g2 = torch.autograd.grad(new[] { theirs }, new[] { leaf2 })[0].data<double>().ToArray();
        g1.Should().Equal(g2);
        // at x = margin = 1 with a target other than ±1 the gradient is 0; x > 1 gives 1/N
        g1.Should().Equal(new[] { 0, 0, 1.0 / 8, -1.0 / 8, 0, 0, 0, 0 });
    }

    [Fact]
    public void HingeGradientForTargetsOtherThanPlusMinusOneIgnoresTheirMagnitude()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.tensor(new[] { 0.5, 1, 1.5, 3 }, dtype: float64);
        double[] Grad(double[] target)
        {
            var leaf = x.clone().requires_grad_(true);
            var loss = HingeEmbeddingLoss.Mean(leaf, torch.tensor(target, dtype: float64));
            return torch.autograd.grad(new[] { loss }, new[] { leaf })[0].data<double>().ToArray();
        }
        var expected = new[] { 0, 0, 0.25, 0.25 };
        Grad(new[] { 0.2, 7, -3, 100 }).Should().Equal(expected);
        Grad(new[] { 2.0, 70, -30, 1000 }).Should().Equal(expected);
        Grad(new[] { 0.0, 0, 0, 0 }).Should().Equal(expected);
    }

    // ---------- safe division and damping ----------

    [Fact]
    public void SafeDivideShiftsByPlusEpsilonAndZeroesZeroDenominators()
    {
        using var scope = torch.NewDisposeScope();
        var a = torch.tensor(new[] { 1.0, 1, 1, 1 }, dtype: float64);
        var b = torch.tensor(new[] { 2.0, -2, 0, -1e-9 }, dtype: float64);
        var q = PublishedSolvers.SafeDivide(a, b).data<double>().ToArray();
        q[0].Should().BeApproximately(1 / (2 + 1e-9), 1e-15);
        q[1].Should().BeApproximately(1 / (-2 + 1e-9), 1e-15); // not sign-aware: −2 + 1e-9
        q[2].Should().Be(0);
        q[3].Should().BeApproximately(1e9, 1e-3); // denominator became 0 → shifted once more
    }

    [Fact]
    public void GradientConstraintDampingIsOneWithinToleranceAndTinyWhenAReluFlips()
    {
        using var scope = torch.NewDisposeScope();
        var gx = torch.tensor(new[] { 1.0, 1, 0, 1, 0.5 }, dtype: float64);
        var gn = torch.tensor(new[] { 1.0, 0, 0, 0.9, 0.2 }, dtype: float64);
        var d = PublishedSolvers.GradientConstraintDamping(gx, gn).data<double>().ToArray();
        d[0].Should().Be(1);
        d[1].Should().BeApproximately(Math.Pow(0.1, 8.5), 1e-20);
        d[2].Should().Be(1);
        d[3].Should().Be(1); // |Δ| = 0.1 ≤ 0.15
        d[4].Should().BeApproximately(Math.Pow(0.1, 1.5), 1e-12);
    }
}
