using FluentAssertions;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Training;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests.Benchmark;

/// <summary>The data-randomisation column of the sanity checks: a model trained on permuted labels against the original.</summary>
public class LabelRandomisationTests
{
    private static TrainingOptions Tiny(int? labelSeed) => new()
    {
        Architecture = SyntheticArchitecture.ResNet, ImageSize = 32, TrainImages = 96, ValidationImages = 12, TestImages = 12,
        MaxEpochs = 2, BatchSize = 32, Seed = 5, DataSeed = 700, PermutedLabelSeed = labelSeed,
    };

    private static BenchmarkResult RunSanity(nn.Module<Tensor, Tensor> model, nn.Module<Tensor, Tensor>? randomLabelModel)
    {
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 98, count: 3);
        using (images)
        using (masks)
        using (labels)
        {
            var options = new BenchmarkOptions
            {
                ModelName = "tiny",
                Methods = new[] { BenchmarkMethod.Of("gradient"), BenchmarkMethod.Of("epsilon-plus-flat") },
                Protocols = BenchmarkProtocols.Sanity,
                BatchSize = 3,
                GallerySamples = 0,
                SanitySamples = 3,
                Sanity = new SanityCheckOptions { Groups = 2, Independent = false },
                RandomLabelModel = randomLabelModel,
                RandomLabelModelDescription = randomLabelModel is null ? null : "test twin",
            };
            return new BenchmarkRunner(model, options).Run(images, masks, labels);
        }
    }

    [Fact]
    public void ARandomLabelModelFillsTheLabelColumnsAndTheSameWeightsGiveSimilarityOne()
    {
        var truth = SyntheticTrainer.Train(Tiny(null));
        var noise = SyntheticTrainer.Train(Tiny(9));
        var dir = Directory.CreateTempSubdirectory("rootdtd-labels-").FullName;
        try
        {
            noise.Report.PermutedLabelSeed.Should().Be(9);
            noise.Report.Name.Should().Be(SyntheticModels.ResNetName + SyntheticModels.RandomLabelSuffix);
            truth.Report.PermutedLabelSeed.Should().BeNull();
            truth.Report.Name.Should().Be(SyntheticModels.ResNetName);
            noise.Report.TrainAccuracy.Should().Be(noise.Report.History[^1].TrainAccuracy);

            var spearman = BenchmarkReport.SanityColumns[5];
            var ssim = BenchmarkReport.SanityColumns[6];
            var against = BenchmarkReport.SanityTable(RunSanity(truth.Model, noise.Model));
            against.Rows.Should().HaveCount(2);
            foreach (var row in against.Rows)
            {
                row.Values[spearman].Should().BeInRange(-1, 0.99, $"{row.Method}: weights fitted to other labels give other maps");
                row.Values[ssim].Should().BeInRange(-1, 0.99, row.Method);
            }

            // the same weights, loaded as a separate model: every map is the same, similarity exactly 1
            var copy = Path.Combine(dir, "copy.safetensors");
            SyntheticModels.Save(truth.Model, copy);
            using var twin = SyntheticModels.LoadFile(SyntheticArchitecture.ResNet, copy);
            var same = RunSanity(truth.Model, twin);
            foreach (var row in BenchmarkReport.SanityTable(same).Rows)
            {
                row.Values[spearman].Should().BeApproximately(1, 1e-9, row.Method);
                row.Values[ssim].Should().BeApproximately(1, 1e-6, row.Method);
            }
            BenchmarkReport.ToMarkdown(same).Should().Contain("trained on randomly permuted training labels (test twin)").And.NotContain("no random-label model was given");

            var none = RunSanity(truth.Model, null);
            BenchmarkReport.SanityTable(none).Rows.Should().OnlyContain(r => !r.Values.ContainsKey(spearman) && !r.Values.ContainsKey(ssim));
        }
        finally
        {
            truth.Model.Dispose();
            noise.Model.Dispose();
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void AStateWithSanityResultsIsNotResumedWithAnotherRandomLabelModel()
    {
        torch.random.manual_seed(4);
        using var model = SyntheticModels.Create(SyntheticArchitecture.ResNet);
        model.eval();
        torch.random.manual_seed(5);
        using var other = SyntheticModels.Create(SyntheticArchitecture.ResNet);
        other.eval();
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 97, count: 2);
        using (images)
        using (masks)
        using (labels)
        {
            BenchmarkOptions Options(string? twin) => new()
            {
                ModelName = "tiny", Methods = new[] { BenchmarkMethod.Of("gradient") }, Protocols = BenchmarkProtocols.Sanity, BatchSize = 2, GallerySamples = 0,
                SanitySamples = 2, Sanity = new SanityCheckOptions { Groups = 1, Independent = false },
                RandomLabelModel = twin is null ? null : other, RandomLabelModelDescription = twin,
            };
            var shard = RootDtd.Evaluation.Sharding.BenchmarkShard.Whole(2);
            var state = new BenchmarkRunner(model, Options("twin A")).RunShard(images, masks, labels, shard);
            state.Methods.Single().Sanity!.LabelRandomisation.Should().NotBeNull();
            var same = () => new BenchmarkRunner(model, Options("twin A")).RunShard(images, masks, labels, shard, state);
            same.Should().NotThrow();
            foreach (var twin in new[] { "twin B", null })
            {
                var act = () => new BenchmarkRunner(model, Options(twin)).RunShard(images, masks, labels, shard, state);
                act.Should().Throw<ArgumentException>().WithMessage("*written by another run*", $"the state's sanity results used twin A, not {twin ?? "none"}");
            }
        }
    }

    [Fact]
    public void AMergedReportStatesTheRunsSanitySettingsAndItsRandomLabelModel()
    {
        torch.random.manual_seed(4);
        using var model = SyntheticModels.Create(SyntheticArchitecture.ResNet);
        model.eval();
        torch.random.manual_seed(5);
        using var other = SyntheticModels.Create(SyntheticArchitecture.ResNet);
        other.eval();
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 97, count: 3);
        using (images)
        using (masks)
        using (labels)
        {
            // not the defaults (16 samples, 6 groups, top 10 %), which is what a merge assumed before the state kept them
            BenchmarkOptions Options(nn.Module<Tensor, Tensor>? twin) => new()
            {
                ModelName = "tiny", Methods = new[] { BenchmarkMethod.Of("gradient") }, Protocols = BenchmarkProtocols.Sanity, BatchSize = 3, GallerySamples = 0,
                SanitySamples = 2, Sanity = new SanityCheckOptions { Groups = 1, Independent = false, TopFraction = 0.25 },
                RandomLabelModel = twin, RandomLabelModelDescription = twin is null ? null : "twin A",
            };
            var shard = RootDtd.Evaluation.Sharding.BenchmarkShard.Whole(3);
            string Merged(nn.Module<Tensor, Tensor>? twin)
            {
                var state = new BenchmarkRunner(model, Options(twin)).RunShard(images, masks, labels, shard);
                var stored = RootDtd.Evaluation.Sharding.BenchmarkRunState.FromJson(state.ToJson(), "test state");
                return BenchmarkReport.ToMarkdown(BenchmarkResult.FromStates(new[] { stored }));
            }

            var withTwin = Merged(other);
            withTwin.Should().Contain("Sanity checks (Adebayo et al. 2018) on 2 samples: similarity of |map| to the trained model's (Spearman, SSIM, top-25 % intersection); 1 groups of units, top-down");
            withTwin.Should().Contain("trained on randomly permuted training labels (twin A)").And.NotContain("no random-label model was given");
            Merged(null).Should().Contain("on 2 samples").And.Contain("no random-label model was given");
        }
    }

    [Fact]
    public void TheCommittedTwinIsFoundOnlyForTheCommittedWeightsAndWithTheSanityProtocol()
    {
        var dir = Directory.CreateTempSubdirectory("rootdtd-twin-").FullName;
        try
        {
            torch.random.manual_seed(2);
            using (var m = SyntheticModels.Create(SyntheticArchitecture.Vgg)) SyntheticModels.Save(m, Path.Combine(dir, SyntheticModels.VggName + ".safetensors"));
            var settings = new SyntheticBenchmarkSettings
            {
                Architecture = SyntheticArchitecture.Vgg, ModelsDirectory = dir, Options = new BenchmarkOptions { Protocols = BenchmarkProtocols.Sanity },
            };
            SyntheticBenchmark.RandomLabelWeights(settings).Should().BeNull("there is no twin yet");

            var twin = SyntheticModels.RandomLabelWeightsPath(SyntheticArchitecture.Vgg, dir);
            Path.GetFileName(twin).Should().Be("synthetic-vgg-random-labels.safetensors");
            File.Copy(Path.Combine(dir, SyntheticModels.VggName + ".safetensors"), twin);
            SyntheticBenchmark.RandomLabelWeights(settings).Should().Be(twin);
            SyntheticBenchmark.RandomLabelWeights(settings with { NoRandomLabelModel = true }).Should().BeNull();
            SyntheticBenchmark.RandomLabelWeights(settings with { Options = new BenchmarkOptions { Protocols = BenchmarkProtocols.Localization } }).Should().BeNull("no sanity checks run");
            SyntheticBenchmark.RandomLabelWeights(settings with { WeightsPath = twin }).Should().BeNull("other weights than the committed ones have no committed twin");
            SyntheticBenchmark.RandomLabelWeights(settings with { WeightsPath = twin, RandomLabelWeightsPath = twin }).Should().Be(twin);
            var missing = () => SyntheticBenchmark.RandomLabelWeights(settings with { RandomLabelWeightsPath = Path.Combine(dir, "nope.safetensors") });
            missing.Should().Throw<FileNotFoundException>().WithMessage("*nope.safetensors*");

            SyntheticModels.DescribeRandomLabelModel(twin).Should().Be("`synthetic-vgg-random-labels.safetensors`", "no sidecar");
            var report = new TrainingReport
            {
                Name = "synthetic-vgg-random-labels", Architecture = SyntheticArchitecture.Vgg, Constructor = "c", Classes = new[] { "a" }, ImageSize = 64,
                NormalizationMean = new[] { 0.5 }, NormalizationStd = new[] { 0.5 }, Data = "d", Seed = 1, DataSeeds = new[] { 1, 2, 3 }, SplitSizes = new[] { 1, 1, 1 },
                Optimizer = "o", Epochs = 30, ValidationAccuracy = 0.17, TestAccuracy = 0.165, Parameters = 1, Seconds = 1,
                History = Array.Empty<EpochReport>(), PermutedLabelSeed = 1, TrainAccuracy = 0.912,
            };
            report.Save(Path.ChangeExtension(twin, ".json"));
            SyntheticModels.DescribeRandomLabelModel(twin).Should().Be(
                "`synthetic-vgg-random-labels.safetensors`: training labels permuted with seed 1, 30 epochs, training accuracy 91.2 % on its training labels, test accuracy 16.5 % on true labels");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
