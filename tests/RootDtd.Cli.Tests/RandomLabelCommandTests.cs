using FluentAssertions;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Training;
using TorchSharp;
using Xunit;

namespace RootDtd.Cli.Tests;

/// <summary><c>train --permuted-labels SEED</c> and the random-label model of <c>evaluate</c>'s sanity checks.</summary>
public class RandomLabelCommandTests
{
    private static readonly string[] TinyTraining = { "--images", "64", "--size", "32", "--epochs", "1", "--seed", "3" };

    [Fact]
    public void TrainPermutedLabelsWritesARandomLabelModelWhoseSidecarSaysSo()
    {
        var dir = Directory.CreateTempSubdirectory("rootdtd-permuted-").FullName;
        try
        {
            var noise = Path.Combine(dir, "noise.safetensors");
            var r = CliFixture.Run(new[] { "train", "--model", "resnet", "--out", noise, "--permuted-labels", "7" }.Concat(TinyTraining).ToArray());
            r.ExitCode.Should().Be(0, r.ToString());
            r.Out.Should().Contain("synthetic-resnet-random-labels: test accuracy");

            var n = System.Text.Json.JsonSerializer.Deserialize<TrainingReport>(File.ReadAllText(Path.ChangeExtension(noise, ".json")))!;
            n.PermutedLabelSeed.Should().Be(7);
            n.Name.Should().Be("synthetic-resnet-random-labels");
            n.Optimizer.Should().Contain("TRAINING LABELS RANDOMLY PERMUTED (seed 7");
            SyntheticModels.DescribeRandomLabelModel(noise).Should().Contain("training labels permuted with seed 7, 1 epochs");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("resnet", "-1", "--permuted-labels must be a seed ≥ 0, was -1")]
    [InlineData("vit", "1", "--permuted-labels works with --model resnet or vgg")]
    [InlineData("resnet", "abc", "abc")]
    public void TrainRejectsABadPermutedLabelsValueBeforeTraining(string model, string value, string message)
    {
        var dir = Directory.CreateTempSubdirectory("rootdtd-permuted-bad-").FullName;
        try
        {
            var output = Path.Combine(dir, "x.safetensors");
            var r = CliFixture.Run(new[] { "train", "--model", model, "--out", output, "--permuted-labels", value }.Concat(TinyTraining).ToArray());
            r.ExitCode.Should().Be(2, r.ToString());
            (r.Error + r.Out).Should().Contain(message).And.Contain("--permuted-labels").And.NotContain("   at ");
            File.Exists(output).Should().BeFalse();
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void TrainRejectsPermutedLabelsForABackboneHead()
    {
        var r = CliFixture.Run("train", "--backbone", "resnet18-imagenet-cntk", "--data", "/nonexistent", "--out", Path.Combine(Path.GetTempPath(), "x.safetensors"), "--permuted-labels", "1");
        r.ExitCode.Should().Be(2, r.ToString());
        r.Error.Should().Contain("--permuted-labels").And.Contain("does not apply to --backbone");
    }

    [Fact]
    public void EvaluateFindsTheCommittedTwinAndTakesAnExplicitOneOrNone()
    {
        var dir = Directory.CreateTempSubdirectory("rootdtd-twin-eval-").FullName;
        try
        {
            var models = Path.Combine(dir, "models");
            Directory.CreateDirectory(models);
            var committed = Path.Combine(models, "synthetic-resnet.safetensors");
            torch.random.manual_seed(21);
            using (var m = SyntheticModels.Create(SyntheticArchitecture.ResNet)) SyntheticModels.Save(m, committed);
            torch.random.manual_seed(22);
            using (var m = SyntheticModels.Create(SyntheticArchitecture.ResNet)) SyntheticModels.Save(m, SyntheticModels.RandomLabelWeightsPath(SyntheticArchitecture.ResNet, models));
            string[] Args(string outDir, params string[] extra) => new[]
            {
                "evaluate", "--model", "synthetic-resnet", "--models-dir", models, "--methods", "gradient", "--protocols", "sanity", "--samples", "1",
                "--sanity-samples", "1", "--sanity-groups", "1", "--batch", "1", "--gallery", "0", "--out", outDir,
            }.Concat(extra).ToArray();
            double LabelSpearman(string outDir)
            {
                var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "synthetic-resnet.json")));
                var table = json.RootElement.GetProperty("tables").EnumerateArray().Single(x => x.GetProperty("title").GetString()!.StartsWith("Sanity checks", StringComparison.Ordinal));
                var row = table.GetProperty("rows").EnumerateArray().Single();
                var v = row.GetProperty("values").GetProperty(RootDtd.Evaluation.Results.ResultTable.ColumnId(BenchmarkReport.SanityColumns[5]));
                return v.ValueKind == System.Text.Json.JsonValueKind.Null ? double.NaN : v.GetDouble();
            }

            var found = Path.Combine(dir, "found");
            var r = CliFixture.Run(Args(found));
            r.ExitCode.Should().Be(0, r.ToString());
            File.ReadAllText(Path.Combine(found, "synthetic-resnet.md")).Should().Contain("trained on randomly permuted training labels (`synthetic-resnet-random-labels.safetensors`)");
            LabelSpearman(found).Should().BeLessThan(0.99, "another initialisation gives other gradients");

            var same = Path.Combine(dir, "same");
            r = CliFixture.Run(Args(same, "--random-label-weights", committed));
            r.ExitCode.Should().Be(0, r.ToString());
            LabelSpearman(same).Should().BeApproximately(1, 1e-9, "the same weights give the same maps");

            var none = Path.Combine(dir, "none");
            r = CliFixture.Run(Args(none, "--random-label-weights", "none"));
            r.ExitCode.Should().Be(0, r.ToString());
            LabelSpearman(none).Should().Be(double.NaN);
            File.ReadAllText(Path.Combine(none, "synthetic-resnet.md")).Should().Contain("no random-label model was given");

            r = CliFixture.Run(Args(Path.Combine(dir, "missing"), "--random-label-weights", Path.Combine(dir, "nope.safetensors")));
            r.ExitCode.Should().Be(2, r.ToString());
            r.Error.Should().Contain("--random-label-weights").And.Contain("nope.safetensors").And.Contain("does not exist");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
