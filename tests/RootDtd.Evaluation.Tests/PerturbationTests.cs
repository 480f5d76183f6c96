using FluentAssertions;
using RootDtd.Imaging;
using RootDtd.Evaluation.Metrics;
using TorchSharp;
using Xunit;
using static RootDtd.Evaluation.Tests.Kit;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests;

public class PerturbationTests
{
    private static readonly PerturbationSchedule Quarters = new("quarters", new[] { 0, 0.25, 0.5, 0.75, 1.0 });

    // Class-1 logit = Σ w_p x_p with w = [4, 3, 2, 1] on a 1-channel 2×2 image; class-0 logit = 5.5.
    private static Tensor LinearModel(Tensor x)
    {
        using var w = T(new float[] { 4, 3, 2, 1 }, 1, 4);
        var s = (x.reshape(x.shape[0], 4) * w).sum(1, keepdim: true);
        return torch.cat(new[] { torch.full_like(s, 5.5), s }, 1);
    }

    [Fact]
    public void LinearToyModelCurvesAreTheHandComputedOnes()
    {
        using var x = torch.ones(1, 1, 2, 2);
        using var y = L(1);
        using var heat = T(new float[] { 4, 3, 2, 1 }, 1, 2, 2); // relevance = contribution
        using var acc = new PixelPerturbationAccumulator(new PixelPerturbationOptions { Schedules = new[] { Quarters } });
        acc.Add(LinearModel, x, y, heat);
        var curves = acc.Result("toy");
        // Positive: remaining Σ = 10, 6, 3, 1, 0 → correct while > 5.5.
        curves[0].Order.Should().Be(PerturbationOrder.MostRelevantFirst);
        curves[0].Accuracy.Should().Equal(1, 1, 0, 0, 0);
        curves[0].Auc.Should().BeApproximately(100 * (0.25 * 1 + 0.25 * 0.5), 1e-9);
        // Negative: remaining Σ = 10, 9, 7, 4, 0.
        curves[1].Accuracy.Should().Equal(1, 1, 1, 0, 0);
        curves[1].Auc.Should().BeApproximately(100 * (0.25 + 0.25 + 0.125), 1e-9);
        curves[1].NormalizedAuc.Should().BeApproximately(62.5, 1e-9);
        curves[0].MeanTrueClassProbability[0].Should().BeApproximately(1 / (1 + Math.Exp(5.5 - 10)), 1e-6);
    }

    [Fact]
    public void PixelsAreRemovedExactlyInRelevanceOrder_AllChannels_TiesByIndex()
    {
        var perm = new float[] { 5, 0, 8, 2, 7, 1, 4, 6, 3 };
        var seen = new List<float[]>();
        Tensor Recorder(Tensor x)
        {
            seen.Add(x.sum(1).reshape(-1).data<float>().ToArray()); // sum over the 2 channels
            return torch.zeros(x.shape[0], 2);
        }

        var ninths = new PerturbationSchedule("ninths", Enumerable.Range(0, 10).Select(i => i / 9.0).ToArray());
        using var x = torch.ones(1, 2, 3, 3);
        using var y = L(0);
        using (var acc = new PixelPerturbationAccumulator(new PixelPerturbationOptions { Schedules = new[] { ninths } }))
        {
            using var heat = T(perm, 1, 3, 3);
            acc.Add(Recorder, x, y, heat);
        }

        var byRelevanceDesc = Enumerable.Range(0, 9).OrderByDescending(i => perm[i]).ToArray();
        for (int k = 0; k <= 9; k++)
        {
            var removedPos = Enumerable.Range(0, 9).Where(p => seen[k][p] == 0).ToArray();
            removedPos.Should().BeEquivalentTo(byRelevanceDesc.Take(k), $"positive step {k}");
            Enumerable.Range(0, 9).All(p => seen[k][p] == 0 || seen[k][p] == 2).Should().BeTrue("both channels are replaced together");
            var removedNeg = Enumerable.Range(0, 9).Where(p => seen[10 + k][p] == 0).ToArray();
            removedNeg.Should().BeEquivalentTo(byRelevanceDesc.Reverse().Take(k), $"negative step {k}");
        }

        // Ties: a constant map removes pixels in index order for both orders.
        seen.Clear();
        using (var acc = new PixelPerturbationAccumulator(new PixelPerturbationOptions { Schedules = new[] { ninths } }))
        {
            using var flat = torch.zeros(1, 3, 3);
            acc.Add(Recorder, x, y, flat);
        }

        for (int k = 0; k <= 9; k++)
        {
            Enumerable.Range(0, 9).Where(p => seen[k][p] == 0).Should().Equal(Enumerable.Range(0, k));
            Enumerable.Range(0, 9).Where(p => seen[10 + k][p] == 0).Should().Equal(Enumerable.Range(0, k));
        }
    }

    [Fact]
    public void BlackBaselineUsesTheNormalisedValueOfPixelZero()
    {
        float[]? last = null;
        Tensor Recorder(Tensor x)
        {
            last = x.reshape(-1).data<float>().ToArray();
            return torch.zeros(x.shape[0], 2);
        }

        var norm = ImageNormalization.ImageNet;
        using var x = torch.full(1, 3, 1, 2, 9f);
        using var y = L(0);
        using var acc = new PixelPerturbationAccumulator(new PixelPerturbationOptions
        {
            Schedules = new[] { new PerturbationSchedule("half", new[] { 0, 0.5 }) },
            Orders = new[] { PerturbationOrder.MostRelevantFirst },
            Baseline = PerturbationBaseline.Black,
            Normalization = norm,
        });
        using var heat = T(new float[] { 0, 1 }, 1, 1, 2);
        acc.Add(Recorder, x, y, heat);
        // layout [c][w]: pixel 1 removed in every channel.
        for (int c = 0; c < 3; c++)
        {
            last![2 * c].Should().Be(9f);
            last[2 * c + 1].Should().BeApproximately((float)(-norm.Mean[c] / norm.Std[c]), 1e-6f);
        }
    }

    [Fact]
    public void BatchedResultsEqualPerSampleResults()
    {
        torch.manual_seed(3);
        var net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding: 1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 3));
        net.eval();
        Func<Tensor, Tensor> model = x => net.call(x);
        using var x = torch.randn(6, 3, 8, 8, generator: new torch.Generator(5));
        using var y = L(0, 1, 2, 0, 1, 2);
        HeatmapSource explain = (xx, t) => xx.abs().sum(1) * (t.to(ScalarType.Float32) + 1).view(-1, 1, 1);
        var all = PixelPerturbation.Evaluate(model, explain, EvaluationBatch.Split(x, y, null, 4), method: "m");
        var progress = new List<EvaluationProgress>();
        var one = PixelPerturbation.Evaluate(model, explain, EvaluationBatch.Split(x, y, null, 1), method: "m", progress: new SyncProgress<EvaluationProgress>(progress.Add));
        all.Should().HaveCount(4);
        for (int i = 0; i < all.Count; i++)
        {
            one[i].Accuracy.Should().Equal(all[i].Accuracy);
            one[i].MeanTrueClassProbability.Zip(all[i].MeanTrueClassProbability).Should().OnlyContain(p => Math.Abs(p.First - p.Second) < 1e-6);
        }

        progress.Select(p => p.SamplesDone).Should().Equal(1, 2, 3, 4, 5, 6);
        PerturbationCurve.ToCsv(all).Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().HaveCount(1 + 2 * (11 + 11));
        PerturbationCurve.ToJson(all).Should().Contain("\"auc\"");
        PerturbationCurve.ToTable(all).ToMarkdown().Should().Contain("positive AUC (coarse)");
    }

    [Fact]
    public void TrapezoidAucOfAKnownCurve()
    {
        PerturbationCurve.Trapezoid(new[] { 0, 0.1, 0.5, 0.9 }, new[] { 1, 0.8, 0.4, 0.0 })
            .Should().BeApproximately(0.1 * 0.9 + 0.4 * 0.6 + 0.4 * 0.2, 1e-12);
        var c = new PerturbationCurve("m", PerturbationOrder.MostRelevantFirst, "fine", new[] { 0, 0.05, 0.1 }, new[] { 1.0, 0.5, 0.5 }, new[] { 0.0, 0, 0 }, 1);
        c.Auc.Should().BeApproximately(100 * (0.05 * 0.75 + 0.05 * 0.5), 1e-9);
        c.NormalizedAuc.Should().BeApproximately(62.5, 1e-9);
    }

    [Fact]
    public void BadInputsAreRejectedWithClearMessages()
    {
        using var x = torch.ones(2, 1, 2, 2);
        using var y = L(1, 1);
        using var acc = new PixelPerturbationAccumulator();
        using var nan = torch.full(2, 2, 2, float.NaN);
        FluentActions.Invoking(() => acc.Add(LinearModel, x, y, nan)).Should().Throw<ArgumentException>().WithMessage("*NaN*");
        using var wrong = torch.zeros(2, 2, 3);
        FluentActions.Invoking(() => acc.Add(LinearModel, x, y, wrong)).Should().Throw<ArgumentException>().WithMessage("*[2,2,2]*got [2,2,3]*");
        using var badY = L(1);
        using var heat = torch.zeros(2, 2, 2);
        FluentActions.Invoking(() => acc.Add(LinearModel, x, badY, heat)).Should().Throw<ArgumentException>().WithMessage("*labels*[2]*");
        FluentActions.Invoking(() => new PixelPerturbationAccumulator(new PixelPerturbationOptions { Schedules = new[] { new PerturbationSchedule("bad", new[] { 0.5, 0.2 }) } }))
            .Should().Throw<ArgumentException>().WithMessage("*increasing*");
        FluentActions.Invoking(() => acc.Add(t => torch.zeros(3), x, y, heat)).Should().Throw<InvalidOperationException>().WithMessage("*logits [B,K]*");
    }
}

/// <summary>IProgress that reports synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
