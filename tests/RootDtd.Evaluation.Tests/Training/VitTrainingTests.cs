using FluentAssertions;
using RootDtd.Evaluation.Training;
using RootDtd.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests.Training;

public class VitTrainingTests
{
    [Fact]
    public void SyntheticVitHasTheDocumentedShapeAndConstructor()
    {
        torch.random.manual_seed(1);
        using var model = SyntheticModels.Create(SyntheticArchitecture.Vit);
        var vit = model.Should().BeOfType<VisionTransformer>().Subject;
        vit.Options.PatchSize.Should().Be(8);
        vit.Options.Tokens.Should().Be(65, "8×8 patches of 8 px on a 64² image plus the class token");
        vit.Options.EmbedDim.Should().Be(64);
        vit.Options.MlpHidden.Should().Be(128);
        vit.Options.Depth.Should().Be(4);
        vit.Options.NumHeads.Should().Be(4);
        vit.Options.NumClasses.Should().Be(SyntheticModels.ClassCount);
        // D = 64, hidden 128: patch conv D·(3·8·8)+D, cls + pos (1+65)·D, 4 blocks of (2 LN·2D + qkv D·3D+3D + proj D·D+D + fc1 D·128+128 + fc2 128·D+D), LN 2D, head D·6+6
        const long d = 64, hidden = 128;
        var block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d);
        var expected = (d * 192 + d) + 66 * d + 4 * block + 2 * d + (d * 6 + 6);
        vit.parameters().Sum(p => p.numel()).Should().Be(expected);
        SyntheticModels.ConstructorText(SyntheticArchitecture.Vit).Should()
            .Be("new VisionTransformer(new VisionTransformerOptions { ImageSize = 64, PatchSize = 8, EmbedDim = 64, Depth = 4, NumHeads = 4, MlpRatio = 2, NumClasses = 6 })");
        SyntheticModels.ParseArchitecture("vit").Should().Be(SyntheticArchitecture.Vit);
        SyntheticModels.ParseArchitecture("synthetic-vit").Should().Be(SyntheticArchitecture.Vit);
        SyntheticModels.NameOf(SyntheticArchitecture.Vit).Should().Be("synthetic-vit");
    }

    [Fact]
    public void WarmupRisesLinearlyPerStepThenTheCosineMatchesCosineAnnealing()
    {
        var o = new TrainingOptions { LearningRate = 1e-3, MaxEpochs = 10, WarmupEpochs = 2 };
        o.LearningRateAt(0, 0.5).Should().BeApproximately(0.25e-3, 1e-12);
        o.LearningRateAt(1, 1.0).Should().BeApproximately(1e-3, 1e-12);
        o.LearningRateAt(2, 0.3).Should().BeApproximately(1e-3, 1e-12, "the first epoch after the warm-up runs at the peak");
        o.LearningRateAt(6, 0.3).Should().BeApproximately(1e-3 * (1 + Math.Cos(Math.PI * 4 / 8)) / 2, 1e-12);
        var cnn = new TrainingOptions { LearningRate = 3e-3, MaxEpochs = 20 };
        // the committed CNNs' recorded schedule (CosineAnnealingLR over 20 epochs): epoch 2 ran at 0.002981532510892707
        cnn.LearningRateAt(1, 0.7).Should().BeApproximately(0.002981532510892707, 1e-15);
    }

    [Fact]
    public void RandomShiftMovesEveryImageByItsOwnOffsetWithEdgesRepeated()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.arange(2 * 1 * 5 * 5, ScalarType.Float32).view(2, 1, 5, 5);
        using var g = new torch.Generator(7);
        var y = SyntheticTrainer.RandomShift(x, 2, g);
        y.shape.Should().Equal(2, 1, 5, 5);
        for (var n = 0; n < 2; n++)
        {
            // find the offset that explains the output: y[i, j] = x[clamp(i+dy), clamp(j+dx)]
            var found = 0;
            for (var dy = -2; dy <= 2; dy++)
            for (var dx = -2; dx <= 2; dx++)
            {
                var ok = true;
                for (var i = 0; i < 5 && ok; i++)
                for (var j = 0; j < 5 && ok; j++)
                    ok = y[n, 0, i, j].item<float>() == x[n, 0, Math.Clamp(i + dy, 0, 4), Math.Clamp(j + dx, 0, 4)].item<float>();
                if (ok) found++;
            }

            found.Should().Be(1, "exactly one offset in [−2, 2]² reproduces image {0}", n);
        }

        SyntheticTrainer.RandomShift(x, 0).Equals(x).Should().BeTrue();
    }

    [Fact]
    public void TinyVitTrainsWithTheVitRecipeAndReportsIt()
    {
        var options = TrainingOptions.For(SyntheticArchitecture.Vit) with
        {
            ClassCount = 2,
            ImageSize = 32,
            TrainImages = 256,
            ValidationImages = 32,
            TestImages = 32,
            MaxEpochs = 4,
            WarmupEpochs = 1,
            ShiftPixels = 2,
            BatchSize = 32,
            Seed = 3,
            DataSeed = 500,
        };
        var result = SyntheticTrainer.Train(options);
        using var model = result.Model;
        model.Should().BeOfType<VisionTransformer>().Which.Options.Tokens.Should().Be(17, "4×4 patches of 8 px on 32² images plus the class token");
        model.training.Should().BeFalse();
        result.Report.History.Should().HaveCount(4);
        result.Report.History[^1].Loss.Should().BeLessThan(result.Report.History[0].Loss);
        result.Report.History[0].LearningRate.Should().BeApproximately(options.LearningRate / 8, 1e-12, "the first of 8 warm-up steps");
        result.Report.Optimizer.Should().Contain("AdamW").And.Contain("warm-up over 1 epochs").And.Contain("shifts ±2 px").And.Contain("clipped at 1");
        result.Report.Architecture.Should().Be(SyntheticArchitecture.Vit);
        result.Report.Name.Should().Be(SyntheticModels.VitName);
    }

    [Fact]
    public void FreshImagesChangeTheSecondEpochOnlyAndTheShapeAndInitOptionsApply()
    {
        var shape = new VisionTransformerOptions { ImageSize = 32, PatchSize = 8, EmbedDim = 16, Depth = 1, NumHeads = 2, MlpRatio = 2, NumClasses = 2 };
        var options = TrainingOptions.For(SyntheticArchitecture.Vit) with
        {
            ClassCount = 2, ImageSize = 32, TrainImages = 64, ValidationImages = 16, TestImages = 16, MaxEpochs = 2, WarmupEpochs = 0,
            BatchSize = 32, Seed = 4, DataSeed = 600, VitShape = shape, FreshImagesPerEpoch = false,
        };
        var same = SyntheticTrainer.Train(options);
        var fresh = SyntheticTrainer.Train(options with { FreshImagesPerEpoch = true });
        using (same.Model)
        using (fresh.Model)
        {
            same.Model.Should().BeOfType<VisionTransformer>().Which.Options.EmbedDim.Should().Be(16);
            same.Report.Constructor.Should().Contain("EmbedDim = 16, Depth = 1, NumHeads = 2");
            // epoch 1 trains on images 0…63 either way; epoch 2 on 64…127 (fresh) or 0…63 again
            fresh.Report.History[0].Loss.Should().Be(same.Report.History[0].Loss);
            fresh.Report.History[1].Loss.Should().NotBe(same.Report.History[1].Loss);
            fresh.Report.Optimizer.Should().Contain("fresh images every epoch");
            same.Report.Optimizer.Should().NotContain("fresh images");
        }

        var wrong = () => SyntheticTrainer.Train(options with { VitShape = shape with { NumClasses = 6 } });
        wrong.Should().Throw<ArgumentException>().WithMessage("*VitShape*6 classes*2 classes*");

        torch.random.manual_seed(2);
        using var vit = new VisionTransformer(shape);
        SyntheticTrainer.InitializeLikeTimm(vit);
        foreach (var (name, p) in vit.named_parameters())
        {
            if (name.Contains("patch_embed", StringComparison.Ordinal) || name is "cls_token" or "pos_embed") continue;
            if (name.EndsWith("bias", StringComparison.Ordinal)) p.abs().max().item<float>().Should().Be(0, name);
            else if (p.dim() == 1) p.eq(1).all().item<bool>().Should().BeTrue(name + " (LayerNorm scale)");
            else
            {
                p.abs().max().item<float>().Should().BeLessThanOrEqualTo(0.04f, name);
                p.std().item<float>().Should().BeInRange(0.012f, 0.022f, name + ": σ 0.02 truncated at ±2σ is σ ≈ 0.0176");
            }
        }
    }

    [Fact]
    public void SinCosPositionTableIsHandWorked()
    {
        using var t = SyntheticTrainer.SinCosPositionEmbedding(2, 8);
        t.shape.Should().Equal(5, 8);
        var v = t.data<float>().ToArray();
        v.Take(8).Should().OnlyContain(x => x == 0, "the class token's row");
        // patch 3 = (row 1, column 1): ω = 1, 10000^(−1/2) = 0.01 → [sin c ω_k, cos c ω_k, sin r ω_k, cos r ω_k]
        var expected = new[] { Math.Sin(1), Math.Sin(0.01), Math.Cos(1), Math.Cos(0.01), Math.Sin(1), Math.Sin(0.01), Math.Cos(1), Math.Cos(0.01) };
        v.Skip(4 * 8).Select(x => (double)x).Should().Equal(expected, (a, b) => Math.Abs(a - b) < 1e-6);
        // patch 1 = (row 0, column 1): the row half is sin 0 = 0, cos 0 = 1
        v.Skip(2 * 8 + 4).Take(4).Select(x => (double)x).Should().Equal(new[] { 0.0, 0.0, 1.0, 1.0 }, (a, b) => Math.Abs(a - b) < 1e-6);
        var bad = () => SyntheticTrainer.SinCosPositionEmbedding(2, 6);
        bad.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*multiple of 4*");
    }

    [Fact]
    public void PermutedLabelsKeepTheClassCountsAreSeededAndTrainTheModel()
    {
        using var scope = torch.NewDisposeScope();
        var labels = torch.arange(12, ScalarType.Int64) % 3;
        var a = SyntheticTrainer.PermuteLabels(labels, 5);
        var again = SyntheticTrainer.PermuteLabels(labels, 5);
        var other = SyntheticTrainer.PermuteLabels(labels, 6);
        a.data<long>().ToArray().OrderBy(v => v).Should().Equal(labels.data<long>().ToArray().OrderBy(v => v), "a permutation keeps every label");
        a.data<long>().ToArray().Should().Equal(again.data<long>().ToArray(), "seeded");
        a.data<long>().ToArray().Should().NotEqual(labels.data<long>().ToArray());
        a.data<long>().ToArray().Should().NotEqual(other.data<long>().ToArray());
        // by hand: the permutation of the same seed applied to 0…11 reorders the labels as it reorders the indices
        var order = SyntheticTrainer.PermuteLabels(torch.arange(12, ScalarType.Int64), 5).data<long>().ToArray();
        a.data<long>().ToArray().Should().Equal(order.Select(i => i % 3));

        var shape = new VisionTransformerOptions { ImageSize = 32, PatchSize = 8, EmbedDim = 16, Depth = 1, NumHeads = 2, MlpRatio = 2, NumClasses = 2 };
        var options = new TrainingOptions
        {
            Architecture = SyntheticArchitecture.Vit, VitShape = shape, ClassCount = 2, ImageSize = 32, TrainImages = 64, ValidationImages = 16,
            TestImages = 16, MaxEpochs = 1, BatchSize = 32, Seed = 4, DataSeed = 600,
        };
        var truth = SyntheticTrainer.Train(options);
        var noise = SyntheticTrainer.Train(options with { PermutedLabelSeed = 9 });
        using (truth.Model)
        using (noise.Model)
        {
            noise.Report.Optimizer.Should().Contain("TRAINING LABELS RANDOMLY PERMUTED (seed 9");
            truth.Report.Optimizer.Should().NotContain("PERMUTED");
            noise.Report.History[0].Loss.Should().NotBe(truth.Report.History[0].Loss, "the same images and seed with other labels");
        }

        var fresh = () => SyntheticTrainer.Train(options with { PermutedLabelSeed = 9, FreshImagesPerEpoch = true });
        fresh.Should().Throw<ArgumentException>().WithMessage("*PermutedLabelSeed*FreshImagesPerEpoch*");
    }
}
