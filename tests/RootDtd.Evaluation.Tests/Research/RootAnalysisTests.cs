using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Evaluation.Research;
using RootDtd.Rules;
using RootDtd.Rules.RootInference;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests.Research;

public class DistributionStatisticsTests
{
    [Fact]
    public void Gini_HandWorkedValues_IgnoresSigns()
    {
        DistributionStatistics.Gini(new double[] { 1, 1, 1, 1 }).Should().Be(0);
        DistributionStatistics.Gini(new double[] { 0, 0, 0, 4 }).Should().BeApproximately(0.75, 1e-15, "one value carries all: (n − 1)/n");
        // sorted 1,2,3,4: Σ(2i − n − 1)·y = −3 − 2 + 3 + 12 = 10, n·Σy = 40
        DistributionStatistics.Gini(new double[] { 3, 1, 4, 2 }).Should().BeApproximately(0.25, 1e-15);
        DistributionStatistics.Gini(new double[] { -3, 1, -4, 2 }).Should().BeApproximately(0.25, 1e-15);
        DistributionStatistics.Gini(new double[] { 0, 0 }).Should().Be(0);
        DistributionStatistics.Gini(Array.Empty<double>()).Should().Be(0);
    }

    [Fact]
    public void ZeroFraction_CountsExactZerosOnly()
    {
        DistributionStatistics.ZeroFraction(new double[] { 0, 1e-300, 0, -2 }).Should().Be(0.5);
        DistributionStatistics.ZeroFraction(Array.Empty<double>()).Should().Be(0);
    }

    [Fact]
    public void Ranks_TiesShareTheirAverageRank()
    {
        DistributionStatistics.AverageRanks(new double[] { 10, 20, 20, 5 }).Should().Equal(2, 3.5, 3.5, 1);
    }

    [Fact]
    public void Spearman_HandWorkedWithTies_AndMonotoneInvariance()
    {
        // ranks a = 1, 2.5, 2.5, 4; b = 1, 3, 2, 4: Σ da·db = 4.5, Σ da² = 4.5, Σ db² = 5
        DistributionStatistics.Spearman(new double[] { 1, 2, 2, 3 }, new double[] { 1, 3, 2, 4 }).Should().BeApproximately(4.5 / Math.Sqrt(22.5), 1e-14);
        var a = new double[] { 0.3, -1, 7, 2, 5 };
        DistributionStatistics.Spearman(a, a.Select(v => Math.Exp(v)).ToArray()).Should().BeApproximately(1, 1e-14);
        DistributionStatistics.Spearman(a, a.Select(v => -v * v * v).ToArray()).Should().BeApproximately(-1, 1e-14);
        double.IsNaN(DistributionStatistics.Spearman(a, new double[] { 1, 1, 1, 1, 1 })).Should().BeTrue("a constant side has no ranks to correlate");
        var act = () => DistributionStatistics.Spearman(a, new double[] { 1 });
        act.Should().Throw<ArgumentException>().WithMessage("*5 and 1*");
    }

    [Fact]
    public void Cosine_HandWorked()
    {
        DistributionStatistics.Cosine(new double[] { 1, 0 }, new double[] { 1, 1 }).Should().BeApproximately(1 / Math.Sqrt(2), 1e-15);
        double.IsNaN(DistributionStatistics.Cosine(new double[] { 0, 0 }, new double[] { 1, 1 })).Should().BeTrue();
    }

    [Fact]
    public void SplitLoss_TotalPlusDistributionIsTheLoss()
    {
        // d = F − R = (2, 0): L = 4, d̄ = 1, total = 2·1² = 2, distribution = 1 + 1 = 2
        var split = DistributionStatistics.SplitLoss(new double[] { 3, 1 }, new double[] { 1, 1 });
        split.Loss.Should().Be(4);
        split.Total.Should().Be(2);
        split.Distribution.Should().Be(2);
        split.TotalShare.Should().Be(0.5);
        // a pure shift is all total, a zero-mean residual all distribution
        DistributionStatistics.SplitLoss(new double[] { 2, 3, 4 }, new double[] { 1, 2, 3 }).TotalShare.Should().BeApproximately(1, 1e-15);
        DistributionStatistics.SplitLoss(new double[] { 2, 0 }, new double[] { 1, 1 }).TotalShare.Should().Be(0);
        var random = new Random(3);
        var f = Enumerable.Range(0, 50).Select(_ => random.NextDouble() * 10).ToArray();
        var r = Enumerable.Range(0, 50).Select(_ => random.NextDouble()).ToArray();
        var s = DistributionStatistics.SplitLoss(f, r);
        (s.Total + s.Distribution).Should().BeApproximately(s.Loss, 1e-10 * s.Loss);
        s.Total.Should().BeApproximately(Math.Pow(f.Sum() - r.Sum(), 2) / 50, 1e-10 * s.Loss);
    }
}

public class RootFitProbeTests
{
    /// <summary>
    /// The spec's worked check as a network: ReLU → Linear(W = [[1, −1], [2, 1]], b = [0, −1]) on x = [1, 2], explained
    /// class 1, so the unit reads a ReLU output (ReLU domain) and R = onehot·logits = [0, 3].
    /// </summary>
    private static nn.Module<Tensor, Tensor> WorkedNet()
    {
        var linear = nn.Linear(2, 2, dtype: float64);
        using (torch.no_grad())
        {
            linear.weight!.copy_(torch.tensor(new double[] { 1, -1, 2, 1 }, float64).view(2, 2));
            linear.bias!.copy_(torch.tensor(new double[] { 0, -1 }, float64));
        }
        var net = nn.Sequential(nn.ReLU(), linear);
        net.eval();
        return net;
    }

    [Fact]
    public void WorkedCheck_RecordsTheHandWorkedFit_AndPropagatesAsRoot()
    {
        using var net = WorkedNet();
        using var x = torch.tensor(new double[] { 1, 2 }, float64).view(1, 2);
        var probe = new RootFitProbe(RootInferenceOptions.Default with { Steps = 1 }, new[] { 0, 1 });
        using var explainer = new Explainer(net, probe.CreateComposite());
        using var explanation = explainer.Explain(x, new long[] { 1 });

        probe.Incoming.Incoming["1"][0].Should().Equal(0, 3);
        probe.Records.Should().HaveCount(2);
        var at0 = probe.Records.Single(r => r.Steps == 0);
        var at1 = probe.Records.Single(r => r.Steps == 1);
        at0.Domain.Should().Be("Relu");
        // S = x: F(x) = [1, 4], residual [1, 1]: L = 2, all of it the total (mean residual 1 over 2 outputs)
        at0.FinalLoss.Should().BeApproximately(2, 1e-12);
        at0.InitialLoss.Should().BeApproximately(2, 1e-12);
        at0.TotalShare.Should().BeApproximately(1, 1e-12);
        at0.ContributionSum.Should().BeApproximately(5, 1e-12);
        at0.RelevanceSum.Should().BeApproximately(3, 1e-12);
        at0.FaceFraction.Should().Be(1, "S = x sits on the upper face everywhere");
        at0.AcceptedSteps.Should().Be(0);
        // one step: S = [0.4828, 1.8276] (α = 40/464), F(S) = [0.4828, 2.7931], L = 0.2759
        var alpha = 40.0 / 464;
        double s1 = 1 - alpha * 6, s2 = 2 - alpha * 2;
        double f1 = s1, f2 = 2 * s1 + s2;
        var loss = f1 * f1 + (f2 - 3) * (f2 - 3);
        at1.FinalLoss.Should().BeApproximately(loss, 1e-12);
        at1.InitialLoss.Should().BeApproximately(2, 1e-12);
        at1.ContributionSum.Should().BeApproximately(f1 + f2, 1e-12);
        at1.TotalShare.Should().BeApproximately(Math.Pow(f1 + f2 - 3, 2) / 2 / loss, 1e-10);
        at1.InitialTotalShare.Should().BeApproximately(1, 1e-12);
        at1.RelativeResidual.Should().BeApproximately(Math.Sqrt(loss / 9), 1e-12);
        at1.FaceFraction.Should().Be(0, "the step stays inside [0, x]");
        at1.SignalZeroFraction.Should().Be(0);
        at1.NewZeroFraction.Should().Be(0);
        at1.AcceptedSteps.Should().Be(1);
        at1.SignalInputSpearman.Should().Be(1, "s₁ < s₂ as x₁ < x₂");
        at1.SignalGini.Should().BeApproximately(DistributionStatistics.Gini(new[] { s1, s2 }), 1e-12);

        // the probe propagates exactly as root with its options: R_in = [1.0370, 1.9630] (to the spec stabiliser's
        // relative shift 1e-9/F₂ ≈ 4e-10)
        var rin = explanation.InputRelevance.data<double>().ToArray();
        rin[0].Should().BeApproximately(2 * s1 * 3 / f2, 1e-9);
        rin[1].Should().BeApproximately(s2 * 3 / f2, 1e-9);
        using var plain = new Explainer(net, RootComposites.Root(RootInferenceOptions.Default with { Steps = 1 }));
        using var reference = plain.Explain(x, new long[] { 1 });
        rin.Should().Equal(reference.InputRelevance.data<double>().ToArray());
    }

    [Fact]
    public void Recorder_KeepsTheIncomingRelevance_AndLeavesThePropagationUnchanged()
    {
        using var net = WorkedNet();
        using var x = torch.tensor(new double[] { 1, 2, 3, 0.5 }, float64).view(2, 2);
        var recorder = new RelevanceRecorder(new ZPlusRule());
        using var recorded = new Explainer(net, Composites.Composites.Uniform("zplus", recorder.Rule));
        using var plain = new Explainer(net, Composites.Composites.ZPlus());
        using var a = recorded.Explain(x, new long[] { 1, 0 });
        using var b = plain.Explain(x, new long[] { 1, 0 });
        a.InputRelevance.data<double>().ToArray().Should().Equal(b.InputRelevance.data<double>().ToArray());
        // logits: sample 0 [−1, 3] → class 1; sample 1 [2.5, 5.5] → class 0
        recorder.Incoming["1"][0].Should().Equal(0, 3);
        recorder.Incoming["1"][1][0].Should().BeApproximately(2.5, 1e-12);
        recorder.Incoming["1"][1][1].Should().Be(0);
        recorder.Clear();
        recorder.Incoming.Should().BeEmpty();
    }

    [Fact]
    public void Probe_RefusesNegativeSteps_AndNonSpecLayers()
    {
        var act = () => new RootFitProbe(probeSteps: new[] { -1 });
        act.Should().Throw<ArgumentOutOfRangeException>();
        var gelu = () => new RootFitProbe(RootInferenceOptions.Default with { Gelu = GeluTreatment.Taylor2 }).CreateComposite();
        gelu.Should().Throw<NotSupportedException>().WithMessage("*gelu=pass*");
    }
}
