using System.Diagnostics;
using System.Runtime.InteropServices;
using FluentAssertions;
using RootDtd.Evaluation.Sharding;
using RootDtd.TestKit;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace RootDtd.Cli.Tests.Hostile;

/// <summary>Ctrl-C and unwritable output folders for <c>rootdtd evaluate</c> and <c>rootdtd train</c>.</summary>
[Collection("cli")]
public sealed class EvaluateInterruptionTests
{
    private const int Sigint = 2;
    private readonly CliFixture _f;

    public EvaluateInterruptionTests(CliFixture fixture) => _f = fixture;

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    /// <summary>Eight 32×32 images in classes "0" and "3" (no masks).</summary>
    private string MakeFolder()
    {
        var root = Path.Combine(_f.Root, "interrupt-data");
        if (Directory.Exists(root)) return root;
        var rng = new Random(5);
        foreach (var cls in new[] { "0", "3" })
        {
            Directory.CreateDirectory(Path.Combine(root, cls));
            for (var i = 0; i < 4; i++)
            {
                int x0 = rng.Next(2, 14), y0 = rng.Next(2, 14);
                var colour = cls == "0" ? new Rgb24(220, 40, 40) : new Rgb24(40, 60, 220);
                CliFixture.WriteImage(Path.Combine(root, cls, $"img{cls}{i}.png"), 32, 32,
                    (x, y) => x >= x0 && x < x0 + 14 && y >= y0 && y < y0 + 14 ? colour : new Rgb24(128, 128, 128), jpeg: false);
            }
        }
        return root;
    }

    private string[] EvaluateArgs(string data, string output) => new[]
    {
        "evaluate", "--data", data, "--arch", CliFixture.Arch, "--weights", _f.Weights, "--classes", "5", "--size", "32", "--out", output,
        "--methods", "epsilon", "--protocols", "perturbation", "--gallery", "0", "--batch", "1",
    };

    private static CliResult Run(CancellationToken token, TextWriter error, params string[] args)
    {
        var output = new StringWriter();
        var code = CliApp.Run(args, new CliEnvironment(output, error) { Cancellation = token });
        return new CliResult(code, output.ToString(), error.ToString()!);
    }

    [Fact]
    public async Task Ctrl_C_on_evaluate_in_a_child_process_exits_130_writes_no_report_and_the_same_command_with_resume_gives_the_uninterrupted_report()
    {
        var data = MakeFolder();
        var reference = _f.NewOutputDir();
        var uninterrupted = CliFixture.Run(EvaluateArgs(data, reference));
        uninterrupted.ExitCode.Should().Be(0, uninterrupted.ToString());
        File.Exists(Path.Combine(reference, "tiny.state.json")).Should().BeFalse("a plain run keeps its state only while it runs");
        var expected = ReportJson.WithoutTimes(File.ReadAllText(Path.Combine(reference, "tiny.json")));

        var dir = _f.NewOutputDir();
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "tiny.md"), "an earlier run's report");
        var statePath = Path.Combine(dir, "tiny.state.json");
        var start = ChildProbe.StartInfo(new[] { "cli" }.Concat(EvaluateArgs(data, dir)).ToArray());
        start.Environment[ChildProbe.HoldAfterFileVariable] = statePath; // the run pauses its output at the first write after a saved batch until it is interrupted
        using var child = Process.Start(start)!;
        var stdout = child.StandardOutput.ReadToEndAsync();
        var stderr = child.StandardError.ReadToEndAsync();
        try
        {
            // Ctrl-C once the first batch is saved (the run has 8 reference and 8 method batches)
            var clock = Stopwatch.StartNew();
            while (!File.Exists(statePath) && !child.HasExited && clock.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(10);
            child.HasExited.Should().BeFalse("the run must still be going when it is interrupted");
            Kill(child.Id, Sigint).Should().Be(0);
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await child.WaitForExitAsync(wait.Token); // the first Ctrl-C ends the run after the current batch
        }
        finally
        {
            if (!child.HasExited) child.Kill(entireProcessTree: true);
        }
        var error = await stderr;
        child.ExitCode.Should().Be(ExitCodes.Interrupted, $"{await stdout}\n{error}");
        error.Should().Contain("interrupted: finishing the current batch")
            .And.Contain("interrupted: no report was written")
            .And.Contain("removed the previous report (tiny.md)")
            .And.Contain("run the same command again with --resume");
        File.Exists(Path.Combine(dir, "tiny.md")).Should().BeFalse("the earlier report must not look like this run's");
        File.Exists(Path.Combine(dir, "tiny.json")).Should().BeFalse("an interrupted run writes no report");
        Directory.GetFiles(dir, "*.partial").Should().BeEmpty();
        var state = BenchmarkRunState.FromJson(File.ReadAllText(statePath), statePath);
        state.Complete.Should().BeFalse();
        error.Should().Contain(state.DescribeProgress(), "the message says what was kept");

        var resumed = CliFixture.Run(EvaluateArgs(data, dir).Append("--resume").ToArray());
        resumed.ExitCode.Should().Be(0, resumed.ToString());
        resumed.Error.Should().Contain("resuming from");
        ReportJson.WithoutTimes(File.ReadAllText(Path.Combine(dir, "tiny.json"))).Should().Be(expected);
    }

    [Fact]
    public void An_unwritable_out_is_refused_before_evaluate_or_train_runs_anything()
    {
        var file = Path.Combine(_f.Root, "a-file-not-a-folder");
        File.WriteAllText(file, "x");
        var blocked = Path.Combine(file, "out");
        foreach (var args in new[]
                 {
                     new[] { "evaluate", "--samples", "2", "--methods", "epsilon", "--protocols", "perturbation", "--out", blocked },
                     new[] { "evaluate", "--data", MakeFolder(), "--arch", CliFixture.Arch, "--weights", _f.Weights, "--classes", "5", "--size", "32", "--out", blocked },
                     new[] { "train", "--model", "vgg", "--images", "64", "--size", "16", "--epochs", "1", "--out", Path.Combine(blocked, "w.safetensors") },
                 })
        {
            var r = CliFixture.Run(args);
            r.ExitCode.Should().Be(ExitCodes.Failure, r.ToString());
            r.Error.Should().Contain("--out").And.Contain("not writable").And.Contain(blocked).And.Contain("nothing was computed");
            r.Error.Should().NotContain("generat").And.NotContain("epoch").And.NotContain("[0/", "no data was made and no model ran");
        }
    }

    [Fact]
    public void Ctrl_C_during_train_exits_130_leaves_out_alone_and_writes_the_weights_so_far_under_the_interrupted_name()
    {
        var dir = _f.NewOutputDir();
        Directory.CreateDirectory(dir);
        var output = Path.Combine(dir, "net.safetensors");
        using var source = new CancellationTokenSource();
        var error = new CancelOnLine(source, "epoch   1:");
        var r = Run(source.Token, error, "train", "--model", "vgg", "--images", "64", "--size", "16", "--epochs", "3", "--target", "2", "--out", output);
        r.ExitCode.Should().Be(ExitCodes.Interrupted, r.ToString());
        r.Error.Should().Contain("interrupted: interrupted during epoch 2 after 0 of 1 steps (1 complete epochs)")
            .And.Contain("was not written").And.Contain("--init " + Path.Combine(dir, "net.interrupted.safetensors"));
        Directory.GetFiles(dir).Select(Path.GetFileName).Should().BeEquivalentTo("net.interrupted.safetensors", "net.interrupted.json");

        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        var before = Run(cancelled.Token, new StringWriter(), "train", "--model", "vgg", "--images", "64", "--size", "16", "--epochs", "1", "--out", Path.Combine(dir, "other.safetensors"));
        before.ExitCode.Should().Be(ExitCodes.Interrupted, before.ToString());
        before.Error.Should().Contain("nothing was written");
        File.Exists(Path.Combine(dir, "other.safetensors")).Should().BeFalse();
    }

    [Fact]
    public void Ctrl_C_before_demo_starts_exits_130_and_writes_nothing_and_an_unwritable_out_is_refused()
    {
        var dir = _f.NewOutputDir();
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        var r = Run(cancelled.Token, new StringWriter(), "demo", "--samples", "1", "--gallery", "0", "--model", "synthetic-resnet", "--methods", "epsilon", "--out", dir);
        r.ExitCode.Should().Be(ExitCodes.Interrupted, r.ToString());
        r.Error.Should().Contain("nothing was written");
        (Directory.Exists(dir) ? Directory.GetFiles(dir) : Array.Empty<string>()).Should().BeEmpty();

        var file = Path.Combine(_f.Root, "demo-not-a-folder");
        File.WriteAllText(file, "x");
        var blocked = CliFixture.Run("demo", "--samples", "1", "--model", "synthetic-resnet", "--methods", "epsilon", "--out", Path.Combine(file, "out"));
        blocked.ExitCode.Should().Be(ExitCodes.Failure, blocked.ToString());
        blocked.Error.Should().Contain("--out").And.Contain("not writable").And.Contain("nothing was computed").And.NotContain("demo: explaining");
    }

    /// <summary>A writer that cancels when a line starting with <paramref name="prefix"/> is written.</summary>
    private sealed class CancelOnLine(CancellationTokenSource source, string prefix) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value is not null && value.StartsWith(prefix, StringComparison.Ordinal)) source.Cancel();
        }
    }
}
