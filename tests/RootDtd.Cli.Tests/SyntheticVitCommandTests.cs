using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Training;
using TorchSharp;
using TorchSharp.PyBridge;
using Xunit;

namespace RootDtd.Cli.Tests;

public class SyntheticVitCommandTests
{
    [Fact]
    public void TrainModelVitWritesAViTAndItsSidecar()
    {
        var dir = Directory.CreateTempSubdirectory("rootdtd-vit-train-").FullName;
        try
        {
            var weights = Path.Combine(dir, "vit.safetensors");
            var r = CliFixture.Run("train", "--model", "vit", "--out", weights, "--images", "64", "--size", "32", "--epochs", "1");
            r.ExitCode.Should().Be(0, r.ToString());
            r.Out.Should().Contain("synthetic-vit: test accuracy");
            var sidecar = System.Text.Json.JsonSerializer.Deserialize<TrainingReport>(File.ReadAllText(Path.ChangeExtension(weights, ".json")))!;
            sidecar.Architecture.Should().Be(SyntheticArchitecture.Vit);
            sidecar.Optimizer.Should().StartWith("AdamW(lr=0.0015, weight_decay=0.01), linear warm-up over 2 epochs").And.Contain("fresh images every epoch");
            sidecar.StopReason.Should().Be("ran all 1 epochs");
            using var loaded = SyntheticModels.Create(SyntheticArchitecture.Vit, imageSize: 32);
            var act = () => loaded.load_safetensors(weights);
            act.Should().NotThrow("the file holds exactly the ViT's state dict");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void TrainTakesThePeakLearningRateAndWarmUpFromTheCommandLine()
    {
        var dir = Directory.CreateTempSubdirectory("rootdtd-vit-lr-").FullName;
        try
        {
            var weights = Path.Combine(dir, "vit.safetensors");
            var r = CliFixture.Run("train", "--model", "vit", "--out", weights, "--images", "64", "--size", "32", "--epochs", "2", "--lr", "5e-4", "--warmup", "0");
            r.ExitCode.Should().Be(0, r.ToString());
            var sidecar = System.Text.Json.JsonSerializer.Deserialize<TrainingReport>(File.ReadAllText(Path.ChangeExtension(weights, ".json")))!;
            sidecar.Optimizer.Should().StartWith("AdamW(lr=0.0005, weight_decay=0.01), cosine annealing over 2 epochs, batch 32");
            // No warm-up: epoch 1 starts at the peak rate; epoch 2 at the cosine's midpoint, lr·(1 + cos(π/2))/2 = lr/2.
            sidecar.History.Select(h => h.LearningRate).Should().Equal(new[] { 5e-4, 2.5e-4 }, (a, b) => Math.Abs(a - b) < 1e-12);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("--lr", "0", "--lr must be a finite rate > 0, was 0")]
    [InlineData("--lr", "NaN", "--lr must be a finite rate > 0")]
    [InlineData("--warmup", "-1", "--warmup must be ≥ 0 epochs, was -1")]
    public void TrainRejectsABadLearningRateOrWarmUpBeforeTraining(string option, string value, string message)
    {
        var dir = Directory.CreateTempSubdirectory("rootdtd-vit-lr-bad-").FullName;
        try
        {
            var output = Path.Combine(dir, "x.safetensors");
            var r = CliFixture.Run("train", "--model", "vit", "--out", output, "--images", "64", "--size", "32", "--epochs", "1", option, value);
            r.ExitCode.Should().Be(2, r.ToString());
            (r.Error + r.Out).Should().Contain(message).And.NotContain("   at ");
            File.Exists(output).Should().BeFalse();
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void EvaluateOnTheSyntheticVitMeansTheViTMethodsAndAblations()
    {
        var dir = Directory.CreateTempSubdirectory("rootdtd-vit-eval-").FullName;
        try
        {
            torch.random.manual_seed(3);
            var weights = Path.Combine(dir, "untrained-vit.safetensors");
            using (var model = SyntheticModels.Create(SyntheticArchitecture.Vit)) SyntheticModels.Save(model, weights);
            var outDir = Path.Combine(dir, "out");
            var r = CliFixture.Run("evaluate", "--model", "synthetic-vit", "--weights", weights, "--methods", "demo", "--protocols", "localisation",
                "--ablations", "--ablation-samples", "1", "--samples", "2", "--batch", "2", "--gallery", "0", "--out", outDir);
            r.ExitCode.Should().Be(0, r.ToString());
            var md = File.ReadAllText(Path.Combine(outDir, "untrained-vit.md"));
            foreach (var m in BenchmarkMethods.VitDemo.Where(m => MethodCatalog.TryGet(m.Spec) is not null)) md.Should().Contain($"| {m.Label} |");
            md.Should().NotContain("| root-published |").And.NotContain("| epsilon-plus-flat |");
            md.Should().Contain("| root steps = 0 (`root:steps=0`) |", "the ViT ablations ran");
            md.Should().NotContain("γ = 0.5", "the CNN ablations did not");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
