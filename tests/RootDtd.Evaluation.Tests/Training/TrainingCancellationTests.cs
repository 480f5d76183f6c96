using FluentAssertions;
using RootDtd.Evaluation.Training;
using TorchSharp.PyBridge;
using Xunit;

namespace RootDtd.Evaluation.Tests.Training;

/// <summary>Cancelling a training: it stops after the step in progress, never writes the output name, and says where it stopped.</summary>
public sealed class TrainingCancellationTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "rootdtd-train-cancel-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static TrainingOptions Tiny() => new()
    {
        Architecture = SyntheticArchitecture.Vgg,
        ClassCount = 2,
        ImageSize = 16,
        TrainImages = 64,
        ValidationImages = 16,
        TestImages = 16,
        MaxEpochs = 3,
        BatchSize = 16,
        TargetAccuracy = 2, // never reached: only the interruption stops it
        Seed = 3,
        DataSeed = 500,
    };

    [Fact]
    public void A_cancelled_training_stops_after_the_current_step_and_hands_back_the_model_and_where_it_stopped()
    {
        using var source = new CancellationTokenSource();
        var epochs = new List<EpochReport>();
        var act = () => SyntheticTrainer.Train(Tiny(), new SyncProgress<EpochReport>(e =>
        {
            epochs.Add(e);
            source.Cancel(); // after the first epoch: the second stops before its first step
        }), null, source.Token);
        var e = act.Should().Throw<TrainingInterruptedException>().Which;
        using var model = e.Result!.Model;
        epochs.Should().HaveCount(1);
        e.Report.Epochs.Should().Be(1);
        e.Report.History.Should().HaveCount(1);
        e.Report.StopReason.Should().Be("interrupted during epoch 2 after 0 of 4 steps (1 complete epochs): the weights are those after that step");
        e.Report.TestAccuracy.Should().BeInRange(0, 1);
        model.training.Should().BeFalse();
    }

    [Fact]
    public void An_interrupted_train_and_save_writes_the_weights_under_the_interrupted_name_and_leaves_the_output_alone()
    {
        Directory.CreateDirectory(_dir);
        var output = Path.Combine(_dir, "net.safetensors");
        File.WriteAllText(output, "earlier weights");
        using var source = new CancellationTokenSource();
        source.Cancel();
        // pre-cancelled (Cancel, not CancelAfter(0), which goes through a timer and can fire after training has begun):
        // not even a model is made, nothing is written
        FluentActions.Invoking(() => SyntheticTrainer.TrainAndSave(Tiny(), output, null, source.Token))
            .Should().Throw<OperationCanceledException>().Which.Should().NotBeOfType<TrainingInterruptedException>();
        Directory.GetFiles(_dir).Select(Path.GetFileName).Should().Equal("net.safetensors");

        using var mid = new CancellationTokenSource();
        var log = new CancelOnLine(mid, "epoch   1:");
        var e = FluentActions.Invoking(() => SyntheticTrainer.TrainAndSave(Tiny(), output, log, mid.Token)).Should().Throw<TrainingInterruptedException>().Which;
        e.WeightsPath.Should().Be(Path.Combine(_dir, "net.interrupted.safetensors"));
        File.ReadAllText(output).Should().Be("earlier weights");
        Directory.GetFiles(_dir).Select(Path.GetFileName).Should().BeEquivalentTo("net.safetensors", "net.interrupted.safetensors", "net.interrupted.json");
        File.ReadAllText(Path.Combine(_dir, "net.interrupted.json")).Should().Contain("interrupted during epoch 2");
        using var reloaded = SyntheticModels.Create(SyntheticArchitecture.Vgg, 2, 16);
        FluentActions.Invoking(() => reloaded.load_safetensors(e.WeightsPath!)).Should().NotThrow("the interrupted weights are a complete file");
    }

    /// <summary>A log that cancels when a line starting with <paramref name="prefix"/> is written.</summary>
    private sealed class CancelOnLine(CancellationTokenSource source, string prefix) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value is not null && value.StartsWith(prefix, StringComparison.Ordinal)) source.Cancel();
        }
    }
}
