using FluentAssertions;
using RootDtd.Attribution;
using RootDtd.Composites;
using RootDtd.Evaluation.Metrics;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests;

/// <summary>The similarity measures and the randomisation tests of Adebayo et al. (2018) on hand-checkable cases.</summary>
public class SanityCheckTests
{
    [Fact]
    public void SpearmanIsOneForTheSameOrderMinusOneForTheReverseAndUsesAverageRanksForTies()
    {
        MapSimilarityMeasures.Spearman(new double[] { 1, 5, 2, 9 }, new double[] { 10, 50, 20, 90 }).Should().BeApproximately(1, 1e-15);
        MapSimilarityMeasures.Spearman(new double[] { 1, 2, 3, 4 }, new double[] { 4, 3, 2, 1 }).Should().BeApproximately(-1, 1e-15);
        MapSimilarityMeasures.Ranks(new double[] { 3, 1, 3, 2 }).Should().Equal(3.5, 1, 3.5, 2);
        // ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): Σd·d = 4.5, Σa² = 4.5, Σb² = 5
        MapSimilarityMeasures.Spearman(new double[] { 1, 2, 2, 3 }, new double[] { 1, 2, 3, 4 }).Should().BeApproximately(4.5 / Math.Sqrt(4.5 * 5), 1e-15);
        MapSimilarityMeasures.Spearman(new double[] { 0, 0, 0 }, new double[] { 0, 0, 0 }).Should().Be(1);
        MapSimilarityMeasures.Spearman(new double[] { 0, 0, 0 }, new double[] { 1, 2, 3 }).Should().Be(0);
    }

    [Fact]
    public void TopKIntersectionCountsTheSharedLargestPixels()
    {
        MapSimilarityMeasures.TopKIntersection(new double[] { 9, 8, 1, 0 }, new double[] { 7, 0, 6, 1 }, 2).Should().Be(0.5);
        MapSimilarityMeasures.TopKIntersection(new double[] { 9, 8, 1, 0 }, new double[] { 0, 1, 6, 7 }, 2).Should().Be(0);
        MapSimilarityMeasures.TopKIntersection(new double[] { 9, 8, 1, 0 }, new double[] { 9, 8, 1, 0 }, 3).Should().Be(1);
    }

    [Fact]
    public void IdenticalMapsAndSignFlippedMapsAreFullySimilar()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(1);
        var a = torch.randn(3, 12, 12);
        foreach (var b in new[] { a.clone(), -a, 4 * a })
            MapSimilarityMeasures.Compare(a, b).Should().OnlyContain(s => Math.Abs(s.Spearman - 1) < 1e-12 && Math.Abs(s.Ssim - 1) < 1e-6 && s.TopK == 1);
        var unrelated = MapSimilarityMeasures.Mean(MapSimilarityMeasures.Compare(a, torch.randn(3, 12, 12)));
        unrelated.Spearman.Should().BeInRange(-0.3, 0.3);
        unrelated.Ssim.Should().BeLessThan(0.5);
    }

    [Fact]
    public void GroupsAreContiguousAndNearlyEqual()
    {
        var g = SanityChecks.Groups(new[] { "a", "b", "c", "d", "e", "f", "g" }, 3);
        g.Select(x => string.Concat(x)).Should().Equal("abc", "de", "fg");
        SanityChecks.Groups(new[] { "a", "b" }, 5).Should().HaveCount(2);
    }

    private sealed class InputItself : AttributionProcedure
    {
        public override AttributionResult Attribute(AttributionContext context) => new(context.Input.clone());
    }

    private static nn.Module<Tensor, Tensor> Net()
    {
        torch.manual_seed(3);
        var net = nn.Sequential(("conv1", nn.Conv2d(3, 6, 3, padding: 1)), ("relu1", nn.ReLU()), ("conv2", nn.Conv2d(6, 6, 3, padding: 1)), ("relu2", nn.ReLU()),
            ("pool", nn.AdaptiveAvgPool2d(2)), ("flatten", nn.Flatten()), ("fc", nn.Linear(24, 4)));
        net.eval();
        return net;
    }

    [Fact]
    public void AMapThatIgnoresTheModelIsFullySimilarAtEveryStepAndFlagged()
    {
        using var scope = torch.NewDisposeScope();
        using var model = (nn.Module)Net();
        torch.manual_seed(4);
        var x = torch.randn(4, 3, 10, 10);
        var y = torch.tensor(new long[] { 0, 1, 2, 3 });
        var composite = Composites.Composites.Gradient().WithProcedure("input-itself", new InputItself());
        var r = SanityChecks.Run((nn.Module<Tensor, Tensor>)model, "input-itself", () => composite, new ExplainerOptions(), x, y, new SanityCheckOptions { Groups = 3 });
        r.Steps.Should().HaveCount(6);
        r.Steps.Where(s => s.Mode == RandomisationMode.Cascading).Select(s => s.Label).Should().Equal("fc", "conv2", "conv1");
        r.Steps.Should().OnlyContain(s => Math.Abs(s.Similarity.Spearman - 1) < 1e-12 && s.Similarity.TopK == 1);
        r.IsInsensitive().Should().BeTrue();
        SanityChecks.InsensitivityNote(new[] { r }).Should().Contain("input-itself (1.00)");
    }

    [Fact]
    public void TheGradientChangesUnderRandomisationAndTheModelIsRestoredExactly()
    {
        using var scope = torch.NewDisposeScope();
        var model = Net();
        var before = ((nn.Module)model).parameters().Select(p => p.detach().clone()).ToList();
        torch.manual_seed(5);
        var x = torch.randn(4, 3, 10, 10);
        var y = torch.tensor(new long[] { 0, 1, 2, 3 });
        var r = SanityChecks.Run(model, "gradient", () => MethodCatalog.Parse("gradient"), new ExplainerOptions(), x, y, new SanityCheckOptions { Groups = 3, Independent = false });
        r.Steps.Should().HaveCount(3);
        r.FullRandomisation!.Units.Should().Equal("fc", "conv2", "conv1");
        r.FullRandomisation.Similarity.Spearman.Should().BeLessThan(0.5);
        r.IsInsensitive().Should().BeFalse();
        var after = ((nn.Module)model).parameters().ToList();
        for (var i = 0; i < before.Count; i++) (after[i] - before[i]).abs().max().item<float>().Should().Be(0);
        // a random-label model identical to the model gives similarity 1
        var same = SanityChecks.Run(model, "gradient", () => MethodCatalog.Parse("gradient"), new ExplainerOptions(), x, y,
            new SanityCheckOptions { Groups = 1, Independent = false }, randomLabelModel: model);
        same.LabelRandomisation!.Similarity.Spearman.Should().BeApproximately(1, 1e-12);
        ((IDisposable)model).Dispose();
    }
}
