using FluentAssertions;
using RootDtd.Cli.Commands;
using Xunit;

namespace RootDtd.Cli.Tests;

/// <summary><c>--verbose</c>: failures keep libtorch's native backtrace and add the .NET stack trace; without it users see the message only.</summary>
[Collection("cli")]
public sealed class VerboseTests
{
    private readonly CliFixture _f;

    public VerboseTests(CliFixture fixture) => _f = fixture;

    private CliResult ExplainWithWrongClasses(params string[] extra) => CliFixture.Run(new[]
    {
        "explain", _f.PngA, "--arch", CliFixture.Arch, "--weights", _f.Weights, "--classes", "7", "--size", "32", "--out", _f.NewOutputDir(),
    }.Concat(extra).ToArray());

    [Fact]
    public void A_failure_prints_the_stack_trace_only_under_verbose()
    {
        var plain = ExplainWithWrongClasses();
        plain.ExitCode.Should().Be(ExitCodes.Failure, plain.ToString());
        plain.Error.Should().Contain("do not fit the model");
        plain.Error.Should().NotContain("   at RootDtd.");

        var verbose = ExplainWithWrongClasses("--verbose");
        verbose.ExitCode.Should().Be(ExitCodes.Failure, verbose.ToString());
        verbose.Error.Should().Contain("do not fit the model");
        verbose.Error.Should().Contain("   at RootDtd.", "the .NET stack trace of the failure follows the message");
    }

    [Fact]
    public void Verbose_is_accepted_before_the_command_too()
    {
        var result = CliFixture.Run("--verbose", "methods");
        result.ExitCode.Should().Be(0, result.ToString());
        result.Out.Should().Contain("root");
    }

    [Fact]
    public void Verbose_keeps_the_native_backtrace()
    {
        const string message = "shape '[2, 3]' is invalid for input of size 5\nException raised from infer_size_impl at /pytorch/aten/src/ATen/InferSize.h:92 (most recent call first):\nframe #0: c10::Error::Error(...) + 0x92";
        int Fail() => throw new InvalidOperationException(message);

        var plainError = new StringWriter();
        CommandAction.Run(new CliEnvironment(new StringWriter(), plainError) { Verbose = false }, Fail).Should().Be(ExitCodes.Failure);
        plainError.ToString().Should().Contain("(native backtrace omitted; run with --verbose to see it)").And.NotContain("frame #0");

        var verboseError = new StringWriter();
        CommandAction.Run(new CliEnvironment(new StringWriter(), verboseError) { Verbose = true }, Fail).Should().Be(ExitCodes.Failure);
        verboseError.ToString().Should().Contain("frame #0: c10::Error::Error").And.Contain("Exception raised from infer_size_impl")
            .And.Contain("   at RootDtd.Cli.Tests.VerboseTests");
    }
}
