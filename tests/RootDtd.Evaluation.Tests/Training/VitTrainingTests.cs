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
}
