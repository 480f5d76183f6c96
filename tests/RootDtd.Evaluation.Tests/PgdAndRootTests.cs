using FluentAssertions;
using RootDtd.Imaging;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Results;
using TorchSharp;
using Xunit;
using static RootDtd.Evaluation.Tests.Kit;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests;

public class PgdTests
{
    private const int B = 4, C = 3, H = 8, W = 8, K = 3, TopK = 5;
    private static readonly ImageNormalization Norm = ImageNormalization.ImageNet;

    /// <summary>Linear model with per-sample offsets so that the label's margin over the runner-up is <paramref name="margins"/>.</summary>
    private static (Func<Tensor, Tensor> Model, Tensor X0, Tensor Y, Tensor Weights) Setup(double[] margins)
    {
        var gen = new torch.Generator(42);
        var w = torch.randn(K, C * H * W, generator: gen) * 0.5;
        var x01 = torch.rand(B, C, H, W, generator: gen) * 0.8 + 0.1;
        var x0 = Norm.Normalize(x01);
        var y = L(0, 1, 2, 0);
        var raw = x0.reshape(B, -1).matmul(w.t());
        var onehot = torch.nn.functional.one_hot(y, K).to(ScalarType.Float32);
        var offsets = -raw + onehot * torch.tensor(margins.Select(m => (float)m).ToArray()).view(B, 1);
        Func<Tensor, Tensor> model = x => x.reshape(x.shape[0], -1).matmul(w.t()) + offsets.narrow(0, 0, x.shape[0]);
        return (model, x0, y, w);
    }

    private static Tensor FixedHeat() => torch.rand(B, H, W, generator: new torch.Generator(7));

    [Fact]
    public void PerturbationStaysInEpsilonBallValidBoxAndTopKPixels_AndSamplesStopAtFirstFlip()
    {
        var (model, x0, y, _) = Setup(new[] { 0.2, 0.5, 1.0, 1000.0 });
        using var heat = FixedHeat();
        var options = new PgdOptions { Normalization = Norm, TopK = TopK, RecomputeHeatmap = false };
        using var r = RelevanceGuidedPgd.Attack(model, (x, t) => heat.clone(), x0, y, options);

        r.InitiallyCorrect.data<bool>().ToArray().Should().Equal(true, true, true, true);
        var success = r.Success.data<bool>().ToArray();
        var iters = r.Iterations.data<long>().ToArray();
        success[3].Should().BeFalse("a margin of 1000 cannot be overcome within ε");
        success.Take(3).Should().Contain(true);
        for (int i = 0; i < B; i++)
        {
            if (success[i]) iters[i].Should().BeInRange(1, 20);
            else iters[i].Should().Be(0);
        }

        var diff = (r.Adversarial - x0).data<float>().ToArray();
        var adv = r.Adversarial.data<float>().ToArray();
        var hm = heat.data<float>().ToArray();
        for (int b = 0; b < B; b++)
        {
            var top = Enumerable.Range(0, H * W).OrderByDescending(p => hm[b * H * W + p]).Take(TopK).ToHashSet();
            for (int c = 0; c < C; c++)
            {
                double eps = 8.0 / 255 / Norm.Std[c];
                double lo = -Norm.Mean[c] / Norm.Std[c], hi = (1 - Norm.Mean[c]) / Norm.Std[c];
                for (int p = 0; p < H * W; p++)
                {
                    int idx = ((b * C) + c) * H * W + p;
                    Math.Abs(diff[idx]).Should().BeLessThanOrEqualTo((float)eps + 1e-5f);
                    adv[idx].Should().BeInRange((float)lo - 1e-5f, (float)hi + 1e-5f);
                    if (!top.Contains(p)) diff[idx].Should().Be(0, $"pixel {p} of sample {b} is not among the top-{TopK}");
                }
            }

            r.PerturbedPixels[b].sum().item<long>().Should().Be(TopK);
        }

        // Early stop: running only up to a successful sample's flip iteration gives the same adversarial.
        for (int i = 0; i < 3; i++)
        {
            if (!success[i]) continue;
            using var shorter = RelevanceGuidedPgd.Attack(model, (x, t) => heat.clone(), x0, y, options with { MaxIterations = (int)iters[i] });
            shorter.Adversarial[i].data<float>().ToArray().Should().Equal(r.Adversarial[i].data<float>().ToArray());
            shorter.Success[i].item<bool>().Should().BeTrue();
        }
    }

    [Fact]
    public void FirstStepIsTheSignOfTheCrossEntropyGradientTimesAlpha()
    {
        var (model, x0, y, w) = Setup(new[] { 1000.0, 1000.0, 1000.0, 1000.0 });
        using var heat = FixedHeat();
        using var r = RelevanceGuidedPgd.Attack(model, (x, t) => heat.clone(), x0, y, new PgdOptions { Normalization = Norm, TopK = TopK, MaxIterations = 1, StepSize = 1.0 / 255 });
        // Hand gradient of CE for a linear model: (softmax − onehot) · W.
        var p = model(x0).softmax(1) - torch.nn.functional.one_hot(y, K).to(ScalarType.Float32);
        var sign = p.matmul(w).view(B, C, H, W).sign();
        var std = Norm.StdTensor(ScalarType.Float32, torch.CPU);
        var ranks = heat.reshape(B, -1).argsort(1, descending: true).argsort(1).view(B, 1, H, W);
        var expected = x0 + (1.0 / 255) / std * sign * (ranks < TopK).to(ScalarType.Float32);
        r.Adversarial.allclose(expected, rtol: 0, atol: 1e-5).Should().BeTrue();
    }

    [Fact]
    public void InitiallyWrongSamplesAreNotAttacked_AndEvaluateAggregates()
    {
        var (model, x0, y, _) = Setup(new[] { 0.2, -1.0, 1000.0, 0.3 });
        using var heat = FixedHeat();
        var options = new PgdOptions { Normalization = Norm, TopK = TopK };
        using var r = RelevanceGuidedPgd.Attack(model, (x, t) => heat.narrow(0, 0, x.shape[0]).clone(), x0, y, options);
        r.InitiallyCorrect[1].item<bool>().Should().BeFalse();
        r.Adversarial[1].allclose(x0[1]).Should().BeTrue();
        r.Success[1].item<bool>().Should().BeFalse();
        var successes = r.Success.data<bool>().Count(s => s);
        var iterSum = r.Iterations.sum().item<long>();

        var agg = RelevanceGuidedPgd.Evaluate(model, (x, t) => heat.narrow(0, 0, x.shape[0]).clone(), new[] { new EvaluationBatch(x0.clone(), y.clone()) }, options, "toy");
        agg.Samples.Should().Be(4);
        agg.InitiallyCorrect.Should().Be(3);
        agg.Successes.Should().Be(successes);
        agg.SuccessRate.Should().BeApproximately(successes / 3.0, 1e-12);
        agg.PostAttackAccuracy.Should().BeApproximately((3.0 - successes) / 4, 1e-12);
        agg.MeanIterations.Should().BeApproximately((double)iterSum / successes, 1e-12);
        agg.ToTable().ToMarkdown().Should().Contain("| toy |");
    }

    [Fact]
    public void DefaultTopKScalesWithArea()
    {
        var o = new PgdOptions();
        o.ResolveTopK(224, 224).Should().Be(500);
        o.ResolveTopK(64, 64).Should().Be(41); // 500·4096/50176 = 40.8
        o.ResolveTopK(2, 2).Should().Be(1);
        FluentActions.Invoking(() => RelevanceGuidedPgd.Attack(x => x, (x, t) => x, torch.zeros(1, 3, 2, 2), L(0), new PgdOptions { Epsilon = -1 }))
            .Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Epsilon*");
    }
}

public class RootCheckTests
{
    [Fact]
    public void LinearRegionIsZeroForIdenticalPoints()
    {
        using var z = torch.randn(3, 4, 5, generator: new torch.Generator(1));
        var r = RootChecks.LinearRegion(t => torch.nn.functional.relu(t), z, z.clone());
        r.MeanSquaredDifference.Should().Equal(0, 0, 0);
        r.SameStateFraction.Should().Equal(1, 1, 1);
        r.IdenticalPatternRate.Should().Be(1);
    }

    [Fact]
    public void LinearRegionHandValues()
    {
        // ReLU: derivatives [1,0,1,0] vs [1,1,0,0] → MSD 0.5, same state 0.5.
        using var x = T(new float[] { 1, -1, 2, -3 }, 1, 4);
        using var n = T(new float[] { 1, 1, -2, -3 }, 1, 4);
        var r = RootChecks.LinearRegion(t => torch.nn.functional.relu(t), x, n);
        r.MeanSquaredDifference[0].Should().BeApproximately(0.5, 1e-12);
        r.SameStateFraction[0].Should().BeApproximately(0.5, 1e-12);
        r.IdenticalPattern[0].Should().BeFalse();
        // f(z) = z²: f′ = 2z → MSD = mean(4 (x − n)²) = 4 · (0 + 4 + 16 + 0) / 4 = 20.
        var sq = RootChecks.LinearRegion(t => t * t, x, n);
        sq.MeanSquaredDifference[0].Should().BeApproximately(20, 1e-9);
    }

    [Fact]
    public void LinearRegionRejectsNonElementwiseAndShapeMismatch()
    {
        using var x = torch.ones(2, 3);
        FluentActions.Invoking(() => RootChecks.LinearRegion(t => t.sum(1), x, x)).Should().Throw<InvalidOperationException>().WithMessage("*elementwise*");
        using var y = torch.ones(2, 4);
        FluentActions.Invoking(() => RootChecks.LinearRegion(t => t, x, y)).Should().Throw<ArgumentException>().WithMessage("*[2,3]*got [2,4]*").Which.ParamName.Should().Be("atRoot");
        FluentActions.Invoking(() => RootChecks.LinearRegion(t => torch.ones_like(t), x, x)).Should().Throw<InvalidOperationException>().WithMessage("*does not depend*");
    }

    [Fact]
    public void TargetScoresAtInputSignalAndRoot()
    {
        Func<Tensor, Tensor> model = x => { var s = x.reshape(x.shape[0], -1).sum(1, keepdim: true); return torch.cat(new[] { s, -s }, 1); };
        using var x = torch.ones(2, 1, 2, 2);
        using var s = torch.full(2, 1, 2, 2, 0.75f);
        using var n = x - s;
        var r = RootChecks.TargetScores(model, x, s, n, L(0, 1));
        r.LogitInput.Should().Equal(4, -4);
        r.LogitSignal.Should().Equal(3, -3);
        r.LogitRoot.Should().Equal(1, -1);
        r.ProbabilityRoot[0].Should().BeApproximately(1 / (1 + Math.Exp(-2)), 1e-9);
        r.ToValues()["f(N)"].Should().Be(0);
        r.ToTable("dtd").ToMarkdown().Should().Contain("f(N)");
    }
}

public class ResultTableTests
{
    [Fact]
    public void MarkdownCsvAndJson()
    {
        var t = new ResultTable("T", new[] { "a", "b" })
            .AddRow("m1", new Dictionary<string, double> { ["a"] = 0.5, ["b"] = 1 })
            .AddRow("m|2", new Dictionary<string, double> { ["a"] = double.NaN });
        t.ToMarkdown(2).Should().Be("**T**\n\n| method | a | b |\n|---|---:|---:|\n| m1 | 0.50 | 1.00 |\n| m\\|2 | – | – |\n");
        t.ToCsv().Should().Be("method,a,b\nm1,0.5,1\nm|2,,\n");
        t.ToJson().Should().Contain("\"method\": \"m1\"").And.Contain("\"a\": null");
        FluentActions.Invoking(() => t.AddRow("x", new Dictionary<string, double> { ["c"] = 1 })).Should().Throw<ArgumentException>().WithMessage("*c*");
    }
}

public class MemoryTests
{
    [Fact]
    public void MetricsDoNotLeakTensors()
    {
        torch.manual_seed(1);
        var net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 3));
        Func<Tensor, Tensor> model = x => net.call(x);
        HeatmapSource explain = (x, t) => x.abs().sum(1);
        using var x = torch.randn(5, 3, 6, 6, generator: new torch.Generator(2));
        using var y = L(0, 1, 2, 0, 1);
        using var m = (torch.rand(5, 6, 6, generator: new torch.Generator(3)) > 0.5).to(ScalarType.Int64);
        void RunAll()
        {
            PixelPerturbation.Evaluate(model, explain, EvaluationBatch.Split(x, y, null, 2));
            Localization.Evaluate(explain, EvaluationBatch.Split(x, y, m, 2));
            RelevanceGuidedPgd.Evaluate(model, explain, EvaluationBatch.Split(x, y, null, 2), new PgdOptions { TopK = 3, MaxIterations = 3 });
        }

        RunAll();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++) RunAll();
        DisposeScopeManager.Statistics.ThreadTotalLiveCount.Should().BeLessThanOrEqualTo(before);
    }
}
