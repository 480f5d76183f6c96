using FluentAssertions;
using RootDtd.Evaluation.Metrics;
using TorchSharp;
using Xunit;
using static RootDtd.Evaluation.Tests.Kit;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests;

public class LocalizationTests
{
    // Image 1 (worked by hand in docs/evaluation.md): gt = 2×2 block, two ignored pixels, one of them "hot".
    private static readonly long[] Mask1 =
    {
        0, 0, 0, 0,
        0, 1, 1, 0,
        0, 1, 1, 255,
        0, 0, 0, 255,
    };

    private static readonly float[] Heat1 =
    {
        0, 0, 0, 0,
        0, 4, 4, 0,
        0, 4, 0, 4,
        0, 0, 2, 0,
    };

    // Image 2: one object pixel in the corner, empty (all-zero) heatmap.
    private static readonly long[] Mask2 = Enumerable.Range(0, 16).Select(i => i == 15 ? 7L : 0L).ToArray();

    private static Tensor Masks(params long[][] m) => torch.tensor(m.SelectMany(v => v).ToArray(), new long[] { m.Length, 4, 4 });

    [Fact]
    public void HandComputedSingleImage()
    {
        using var h = T(Heat1, 1, 4, 4);
        using var m = Masks(Mask1);
        var r = Localization.Score(h, m);
        // norm = h/4, mean = 4.5/16, FG = {(1,1),(1,2),(2,1),(2,3),(3,2)}; valid = 14.
        r.PixelAccuracy.Should().BeApproximately(12.0 / 14, 1e-12);
        r.ForegroundIoU.Should().BeApproximately(3.0 / 5, 1e-12);
        r.BackgroundIoU.Should().BeApproximately(9.0 / 11, 1e-12);
        r.MeanIoU.Should().BeApproximately((3.0 / 5 + 9.0 / 11) / 2, 1e-12);
        r.PerImageMeanIoU.Should().BeApproximately(r.MeanIoU, 1e-12);
        r.MeanAveragePrecision.Should().BeApproximately(0.75 + 0.25 * 4 / 14, 1e-12);
        r.RelevanceMass.Should().BeApproximately(12.0 / 14, 1e-12);
        r.PointingGame.Should().Be(1);
        r.PaperPixelAccuracy.Should().BeApproximately(0.75, 1e-12);
        r.PaperIoU.Should().BeApproximately(1.2, 1e-12);
    }

    [Fact]
    public void MicroAccumulationAcrossImagesAndPerImageMeans()
    {
        using var h = torch.cat(new[] { T(Heat1, 1, 4, 4), torch.zeros(1, 4, 4) });
        using var m = Masks(Mask1, Mask2);
        var r = Localization.Score(h, m);
        r.Images.Should().Be(2);
        r.PixelAccuracy.Should().BeApproximately(27.0 / 30, 1e-12);
        r.ForegroundIoU.Should().BeApproximately(3.0 / 6, 1e-12);
        r.BackgroundIoU.Should().BeApproximately(24.0 / 27, 1e-12);
        r.PerImagePixelAccuracy.Should().BeApproximately((12.0 / 14 + 15.0 / 16) / 2, 1e-12);
        r.PerImageForegroundIoU.Should().BeApproximately(0.6 / 2, 1e-12);
        r.MeanAveragePrecision.Should().BeApproximately((0.75 + 1.0 / 14 + 1.0 / 16) / 2, 1e-12);
        r.RelevanceMass.Should().BeApproximately(12.0 / 14, 1e-12, "image 2 has no positive relevance and is skipped");
        r.PointingGame.Should().Be(0.5, "the empty map's arg-max is its first pixel, outside the corner object");
        r.PaperPixelAccuracy.Should().BeApproximately(0.75 / 2, 1e-12);
    }

    [Fact]
    public void BatchedEqualsPerSampleAccumulation()
    {
        using var maps = Localization.RandomMaps(3, new long[] { 6, 8, 8 }, torch.CPU);
        using var masks = (torch.rand(6, 8, 8, generator: new torch.Generator(1)) > 0.6).to(ScalarType.Int64);
        var all = Localization.Score(maps, masks);
        using var acc = new LocalizationAccumulator();
        for (int i = 0; i < 6; i++) acc.Add(maps[i].unsqueeze(0), masks[i].unsqueeze(0));
        var one = acc.Result("method");
        one.Should().BeEquivalentTo(all, o => o.Using<double>(c => c.Subject.Should().BeApproximately(c.Expectation, 1e-12)).WhenTypeIs<double>());
    }

    [Fact]
    public void AveragePrecisionMatchesScikitLearnExamples()
    {
        // scores [0.9, 0.8, 0.7, 0.6], labels [1, 0, 1, 0] → AP = 1·½ + ⅔·½.
        using var h = T(new float[] { 0.9f, 0.8f, 0.7f, 0.6f }, 1, 2, 2);
        using var m = torch.tensor(new long[] { 1, 0, 1, 0 }, new long[] { 1, 2, 2 });
        Localization.Score(h, m).MeanAveragePrecision.Should().BeApproximately(0.5 + 2.0 / 3 * 0.5, 1e-6);
        // Ties are one threshold: scores [0.5, 0.5, 0.2, 0.1], labels [1, 0, 1, 0] → ½·½ + ⅔·½.
        using var h2 = T(new float[] { 0.5f, 0.5f, 0.2f, 0.1f }, 1, 2, 2);
        Localization.Score(h2, m).MeanAveragePrecision.Should().BeApproximately(0.25 + 1.0 / 3, 1e-6);
    }

    [Fact]
    public void PointingGameUsesTheFirstArgMaxAmongValidPixels()
    {
        using var m = Masks(new long[] { 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 });
        var heat = new float[16];
        heat[0] = 9; // ignored pixel is not eligible
        heat[15] = 5;
        using var h = T(heat, 1, 4, 4);
        Localization.Score(h, m).PointingGame.Should().Be(1);
        heat[3] = 5; // tie: first index wins, outside the mask
        using var h2 = T(heat, 1, 4, 4);
        Localization.Score(h2, m).PointingGame.Should().Be(0);
    }

    [Fact]
    public void ReferenceRowsAreAddedAndEmptyMapHasNoForeground()
    {
        using var x = torch.zeros(2, 3, 4, 4);
        using var y = L(0, 1);
        var batch = new EvaluationBatch(x.clone(), y.clone(), Masks(Mask1, Mask1));
        var report = Localization.Evaluate((xx, t) => torch.cat(new[] { T(Heat1, 1, 4, 4), T(Heat1, 1, 4, 4) }), new[] { batch }, method: "toy");
        report.Method.Method.Should().Be("toy");
        report.Empty!.ForegroundIoU.Should().Be(0);
        report.Empty.PaperPixelAccuracy.Should().Be(0);
        report.Empty.BackgroundIoU.Should().BeApproximately(10.0 / 14, 1e-12);
        report.Random.Should().NotBeNull();
        report.Random!.MeanIoU.Should().BeInRange(0, 1);
        var md = report.ToTable().ToMarkdown();
        md.Should().Contain("| toy |").And.Contain("| random (reference) |").And.Contain("| empty (reference) |");
    }

    [Fact]
    public void RandomMapsAreSeededAndBatchIndependent()
    {
        using var a = Localization.RandomMaps(10, new long[] { 3, 5, 5 }, torch.CPU);
        using var b = Localization.RandomMaps(11, new long[] { 2, 5, 5 }, torch.CPU);
        a[1].data<float>().ToArray().Should().Equal(b[0].data<float>().ToArray());
        a[0].data<float>().ToArray().Should().NotEqual(b[0].data<float>().ToArray());
    }

    [Fact]
    public void NaNHeatmapsAndShapeMismatchesAreRejected()
    {
        using var m = Masks(Mask1);
        using var nan = T(Heat1, 1, 4, 4).index_put_(torch.tensor(float.NaN), 0, 1, 1);
        FluentActions.Invoking(() => Localization.Score(nan, m)).Should().Throw<ArgumentException>().WithMessage("*NaN*").Which.ParamName.Should().Be("heatmaps");
        using var wrong = torch.zeros(1, 4, 5);
        FluentActions.Invoking(() => Localization.Score(wrong, m)).Should().Throw<ArgumentException>().WithMessage("*[1,4,4]*got [1,4,5]*");
        using var fm = torch.zeros(1, 4, 4);
        FluentActions.Invoking(() => Localization.Score(fm, fm)).Should().Throw<ArgumentException>().WithMessage("*integer masks*");
    }
}
