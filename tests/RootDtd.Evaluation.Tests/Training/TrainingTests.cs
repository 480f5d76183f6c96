using FluentAssertions;
using RootDtd.Evaluation.Training;
using RootDtd.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests.Training;

public class TrainingTests
{
    [Fact]
    public void TrainerOnATinySetImprovesAccuracyAboveChance()
    {
        var options = new TrainingOptions
        {
            Architecture = SyntheticArchitecture.Vgg,
            ClassCount = 2,
            ImageSize = 32,
            TrainImages = 512,
            ValidationImages = 64,
            TestImages = 200,
            MaxEpochs = 8,
            BatchSize = 32,
            TargetAccuracy = 0.9,
            Seed = 3,
            DataSeed = 500,
        };
        var epochs = new List<EpochReport>();
        var result = SyntheticTrainer.Train(options, new SyncProgress<EpochReport>(epochs.Add));
        using var model = result.Model;
        epochs.Should().NotBeEmpty();
        epochs.Should().HaveCount(result.Report.Epochs);
        epochs[^1].Loss.Should().BeLessThan(epochs[0].Loss);
        epochs[^1].TrainAccuracy.Should().BeGreaterThan(0.75);
        result.Report.TestAccuracy.Should().BeGreaterThan(0.62, "two balanced classes give 50 % by chance (σ ≈ 3.5 % on 200 images)");
        result.Report.Classes.Should().Equal("striped-disc", "checkered-square");
        model.training.Should().BeFalse();
    }

    [Fact]
    public void SaveAndLoadRoundTripReproducesTheOutputs()
    {
        torch.random.manual_seed(5);
        using var model = SyntheticModels.Create(SyntheticArchitecture.Vgg);
        model.eval();
        var path = Path.Combine(Path.GetTempPath(), $"rootdtd-vgg-{Guid.NewGuid():N}.safetensors");
        try
        {
            SyntheticModels.Save(model, path);
            using var loaded = SyntheticModels.LoadFile(SyntheticArchitecture.Vgg, path);
            using var x = torch.randn(2, 3, 64, 64);
            using var a = model.forward(x);
            using var b = loaded.forward(x);
            (a - b).abs().max().item<float>().Should().BeLessThan(1e-6f);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData(SyntheticArchitecture.ResNet)]
    [InlineData(SyntheticArchitecture.Vgg)]
    public void CommittedWeightsReachNinetyPercentOnAFreshTestSet(SyntheticArchitecture architecture)
    {
        using var model = SyntheticModels.Load(architecture);
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 31337, count: 200);
        using (images)
        using (masks)
        using (labels)
        {
            SyntheticTrainer.Accuracy(model, images, labels).Should().BeGreaterThanOrEqualTo(0.9);
        }
    }

    [Theory]
    [InlineData(SyntheticArchitecture.ResNet)]
    [InlineData(SyntheticArchitecture.Vgg)]
    public void SidecarDescribesTheCommittedWeights(SyntheticArchitecture architecture)
    {
        var report = SyntheticModels.ReadSidecar(architecture);
        report.Should().NotBeNull();
        report!.Architecture.Should().Be(architecture);
        report.Constructor.Should().Be(SyntheticModels.ConstructorText(architecture));
        report.ImageSize.Should().Be(SyntheticModels.ImageSize);
        report.Classes.Should().HaveCount(SyntheticModels.ClassCount);
        report.NormalizationMean.Should().Equal(SyntheticModels.Normalization.Mean.Select(v => (double)v));
        report.TestAccuracy.Should().BeGreaterThanOrEqualTo(0.9);
    }

    [Fact]
    public void CommittedVitMatchesItsSidecarOnAFreshTestSetAndLoadsThroughTheZoo()
    {
        var report = SyntheticModels.ReadSidecar(SyntheticArchitecture.Vit);
        report.Should().NotBeNull("models/synthetic-vit.json is committed");
        report!.Architecture.Should().Be(SyntheticArchitecture.Vit);
        report.Constructor.Should().Be(SyntheticModels.ConstructorText(SyntheticArchitecture.Vit));
        report.ImageSize.Should().Be(SyntheticModels.ImageSize);
        report.DataSeeds.Should().Equal(1000, 1001, 1002);
        report.SplitSizes.Should().Equal(5000, 600, 1000);
        using var model = SyntheticModels.Load(SyntheticArchitecture.Vit);
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 31337, count: 200);
        using (images)
        using (masks)
        using (labels)
        {
            // the sidecar's test accuracy (1000 images, seed 1002) holds on a fresh stream: within 3σ of a binomial on 200 images
            var p = report.TestAccuracy;
            var sigma = Math.Sqrt(p * (1 - p) / 200);
            SyntheticTrainer.Accuracy(model, images, labels).Should().BeInRange(p - 3 * sigma, p + 3 * sigma);
            using var zoo = ModelZoo.Create("vit-synthetic-patch8-64", SyntheticModels.ClassCount);
            ModelWeights.Load(zoo, SyntheticModels.WeightsPath(SyntheticArchitecture.Vit));
            zoo.eval();
            using var x = images.narrow(0, 0, 8);
            using var a = model.forward(x);
            using var b = zoo.forward(x);
            (a - b).abs().max().item<float>().Should().Be(0f, "the zoo entry is the same network");
        }
    }

    [Fact]
    public void ArchitectureNamesParse()
    {
        SyntheticModels.ParseArchitecture("resnet").Should().Be(SyntheticArchitecture.ResNet);
        SyntheticModels.ParseArchitecture("synthetic-vgg").Should().Be(SyntheticArchitecture.Vgg);
        var act = () => SyntheticModels.ParseArchitecture("alexnet");
        act.Should().Throw<ArgumentException>();
    }

    private sealed class SyncProgress<T> : IProgress<T>
    {
        private readonly Action<T> _action;

        public SyncProgress(Action<T> action) => _action = action;

        public void Report(T value) => _action(value);
    }
}
