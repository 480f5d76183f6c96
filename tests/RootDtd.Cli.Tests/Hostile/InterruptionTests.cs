using FluentAssertions;
using RootDtd.Cli.Commands;
using Xunit;

namespace RootDtd.Cli.Tests.Hostile;

/// <summary>Ctrl-C, unwritable output folders and an output folder that holds the inputs.</summary>
[Collection("cli")]
public sealed class InterruptionTests
{
    private readonly CliFixture _f;

    public InterruptionTests(CliFixture fixture) => _f = fixture;

    /// <summary>A writer that signals the token when the command reports its first result line.</summary>
    private sealed class CancelOnFirstLine(CancellationTokenSource source) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            source.Cancel();
        }
    }

    private static CliResult Run(CancellationToken token, TextWriter? output, params string[] args)
    {
        output ??= new StringWriter();
        var error = new StringWriter();
        var code = CliApp.Run(args, new CliEnvironment(output, error) { Cancellation = token });
        return new CliResult(code, output.ToString()!, error.ToString());
    }

    private string[] ExplainArgs(string outDir, params string[] images) =>
        new[] { "explain", "--arch", CliFixture.Arch, "--weights", _f.Weights, "--classes", "5", "--size", "32", "--out", outDir, "--batch", "1" }.Concat(images).ToArray();

    [Fact]
    public void Ctrl_C_after_the_first_image_keeps_it_writes_nothing_else_and_exits_130()
    {
        var dir = _f.NewOutputDir();
        using var source = new CancellationTokenSource();
        var r = Run(source.Token, new CancelOnFirstLine(source), ExplainArgs(dir, _f.PngA, _f.JpegB, _f.PngC));
        r.ExitCode.Should().Be(ExitCodes.Interrupted, r.ToString());
        r.Error.Should().Contain("interrupted: 1 of 3 image(s) explained and written");
        Directory.GetFiles(dir).Select(Path.GetFileName).Should().BeEquivalentTo("alpha.heatmap.png", "alpha.overlay.png", "alpha.json");
    }

    [Fact]
    public void Ctrl_C_during_the_first_batch_writes_nothing()
    {
        var dir = _f.NewOutputDir();
        using var source = new CancellationTokenSource();
        source.Cancel();
        var r = Run(source.Token, null, ExplainArgs(dir, _f.PngA, _f.JpegB));
        r.ExitCode.Should().Be(ExitCodes.Interrupted, r.ToString());
        (Directory.Exists(dir) ? Directory.GetFiles(dir) : Array.Empty<string>()).Should().BeEmpty();
    }

    [Fact]
    public void An_output_folder_that_cannot_be_created_is_refused_before_any_work()
    {
        var file = Path.Combine(_f.Root, "not-a-folder");
        File.WriteAllText(file, "x");
        var r = _f.Explain(Path.Combine(file, "out"), _f.PngA);
        r.ExitCode.Should().Be(ExitCodes.Failure, r.ToString());
        r.Error.Should().Contain("--out").And.Contain("not writable").And.Contain("nothing was computed");
        r.Out.Should().NotContain("class ");
    }

    [Fact]
    public void Results_never_overwrite_an_input_image()
    {
        // A folder explained into itself twice: the first run's heatmaps are inputs of the second.
        var dir = Path.Combine(_f.Root, "self-" + Guid.NewGuid().ToString("N")[..6]);
        Directory.CreateDirectory(dir);
        File.Copy(_f.PngA, Path.Combine(dir, "alpha.png"));
        var first = _f.Explain(dir, dir);
        first.ExitCode.Should().Be(0, first.ToString());
        var heatmap = Path.Combine(dir, "alpha.heatmap.png");
        var before = File.ReadAllBytes(heatmap);
        var second = _f.Explain(dir, dir);
        second.ExitCode.Should().Be(ExitCodes.Usage, second.ToString());
        second.Error.Should().Contain("would overwrite the input image").And.Contain("alpha.heatmap.png");
        File.ReadAllBytes(heatmap).Should().Equal(before);
    }

    [Fact]
    public void Native_backtraces_are_cut_from_messages()
    {
        var message = "shape '[2, 3]' is invalid for input of size 5\nException raised from infer_size_impl at /pytorch/aten/src/ATen/InferSize.h:92 (most recent call first):\nframe #0: c10::Error::Error(...) + 0x92";
        CommandAction.WithoutNativeBacktrace(message).Should().Be("shape '[2, 3]' is invalid for input of size 5 (native backtrace omitted; run with --verbose to see it)");
        CommandAction.WithoutNativeBacktrace("plain").Should().Be("plain");
    }
}
