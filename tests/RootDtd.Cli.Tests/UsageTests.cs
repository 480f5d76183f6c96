using System.Text.Json;
using FluentAssertions;
using RootDtd.Cli.Explain;
using RootDtd.Composites;
using RootDtd.Models;
using Xunit;

namespace RootDtd.Cli.Tests;

[Collection("cli")]
public sealed class UsageTests
{
    private readonly CliFixture _f;

    public UsageTests(CliFixture fixture) => _f = fixture;

    private CliResult Explain(params string[] extra) => _f.Explain(_f.NewOutputDir(), extra);

    [Fact]
    public void NoArgumentsShowsHelpAndExitsTwo()
    {
        var r = CliFixture.Run();
        r.ExitCode.Should().Be(2);
        r.Out.Should().Contain("explain").And.Contain("methods");
    }

    [Fact]
    public void HelpExitsZero()
    {
        var r = CliFixture.Run("explain", "--help");
        r.ExitCode.Should().Be(0);
        foreach (var option in new[] { "--arch", "--weights", "--method", "--target", "--out", "--layers", "--device", "--labels", "--classes", "--size", "--resize", "--batch", "--dtype" })
            r.Out.Should().Contain(option);
    }

    [Fact]
    public void UnknownCommandIsAUsageError()
    {
        var r = CliFixture.Run("explian");
        r.ExitCode.Should().Be(2);
        r.Error.Should().Contain("'explian' is not a rootdtd command").And.Contain("Did you mean 'explain'?")
            .And.NotContain("Required command was not provided");
    }

    [Fact]
    public void HelpNamesTheToolRootdtd()
    {
        foreach (var args in new[] { new[] { "--help" }, new[] { "explain", "--help" }, new[] { "evaluate", "--help" } })
        {
            var r = CliFixture.Run(args);
            r.ExitCode.Should().Be(0);
            r.Out.Should().Contain("rootdtd").And.NotContain("RootDtd.Cli");
        }
        CliFixture.Run().Out.Should().Contain("Usage:").And.NotContain("RootDtd.Cli");
    }

    [Fact]
    public void OptionErrorsNeverShowDotNetInternals()
    {
        var cases = new[]
        {
            new[] { _f.PngA, "--heatmap", "signed", "--mean-cropping" },
            new[] { _f.PngA, "--opacity", "-1" },
            new[] { _f.PngA, "--clip", "150" },
            new[] { _f.PngA, "--mean", "1,1,1", "--std", "0,1,1" },
        };
        foreach (var extra in cases)
        {
            var r = Explain(extra);
            r.ExitCode.Should().Be(2, string.Join(" ", extra) + "\n" + r);
            r.Error.Should().NotContain("(Parameter").And.NotContain("HeatmapMode.").And.NotContain("Exception").And.NotContain("MeanCropping");
        }
        Explain(_f.PngA, "--heatmap", "signed", "--mean-cropping").Error.Should().Contain("--mean-cropping").And.Contain("--heatmap signed");
    }

    [Fact]
    public void AMissingFolderIsReportedAsAFolder()
    {
        var missing = Path.Combine(_f.Root, "no-such-folder") + Path.DirectorySeparatorChar;
        var r = Explain(missing);
        r.ExitCode.Should().Be(2);
        r.Error.Should().Contain($"The folder '{missing}' does not exist");
        var r2 = Explain(Path.Combine(_f.Root, "photos"));
        r2.Error.Should().Contain("The folder").And.Contain("photos");
    }

    [Fact]
    public void MissingRequiredOptionsAreUsageErrors()
    {
        var r = CliFixture.Run("explain", _f.PngA);
        r.ExitCode.Should().Be(2);
        r.Error.Should().Contain("--arch").And.Contain("--out").And.Contain("rootdtd explain --help");
    }

    [Theory]
    [InlineData("--batch", "0", "--batch must be at least 1")]
    [InlineData("--target", "5", "has 5 classes")]
    [InlineData("--target", "kiwi", "--target")]
    [InlineData("--dtype", "float16", "--dtype must be float32 or float64")]
    [InlineData("--device", "tpu", "--device must be cpu, cuda or cuda:N")]
    [InlineData("--heatmap", "pink", "--heatmap must be")]
    [InlineData("--opacity", "1.5", "--opacity must be between 0 and 1")]
    [InlineData("--clip", "abc", "--clip must be a percentile")]
    [InlineData("--clip", "0", "--clip must be a percentile")]
    [InlineData("--overlay-alpha", "half", "--overlay-alpha must be relevance or constant")]
    [InlineData("--mean", "0.5,0.5", "three numbers")]
    [InlineData("--resize", "20", "--resize (20) must be at least --size (32)")]
    [InlineData("--batch", "abc", "abc")]
    [InlineData("--bogus", "1", "--bogus")]
    public void BadValuesAreUsageErrors(string option, string value, string message)
    {
        var r = Explain(_f.PngA, option, value);
        r.ExitCode.Should().Be(2, r.ToString());
        r.Error.Should().Contain(message);
    }

    [Fact]
    public void UnknownArchitectureListsTheKnownOnes()
    {
        var r = CliFixture.Run("explain", _f.PngA, "--arch", "resnet19", "--out", _f.NewOutputDir());
        r.ExitCode.Should().Be(2);
        r.Error.Should().Contain("resnet19").And.Contain("resnet18").And.Contain("vgg16_bn");
    }

    [Fact]
    public void MissingFilesAreUsageErrorsNamingTheFile()
    {
        var missingImage = Path.Combine(_f.Root, "missing.png");
        var r = Explain(missingImage);
        r.ExitCode.Should().Be(2);
        r.Error.Should().Contain(missingImage).And.Contain("does not exist");

        var missingWeights = Path.Combine(_f.Root, "missing.safetensors");
        var r2 = CliFixture.Run("explain", _f.PngA, "--arch", CliFixture.Arch, "--weights", missingWeights, "--out", _f.NewOutputDir());
        r2.ExitCode.Should().Be(2);
        r2.Error.Should().Contain(missingWeights);

        var r3 = Explain(_f.PngA, "--labels", Path.Combine(_f.Root, "missing.txt"));
        r3.ExitCode.Should().Be(2);
        r3.Error.Should().Contain("missing.txt");
    }

    [Fact]
    public void LabelsMustMatchTheClassCount()
    {
        var r = CliFixture.Run("explain", _f.PngA, "--arch", CliFixture.Arch, "--weights", _f.Weights, "--classes", "4", "--labels", _f.Labels, "--out", _f.NewOutputDir());
        r.ExitCode.Should().Be(2);
        r.Error.Should().Contain("5 names").And.Contain("4 classes");
    }

    [Fact]
    public void MethodsListsEveryCatalogEntryWithParameters()
    {
        var r = CliFixture.Run("methods");
        r.ExitCode.Should().Be(0);
        MethodCatalog.All.Should().NotBeEmpty();
        foreach (var m in MethodCatalog.All)
        {
            r.Out.Should().Contain(m.Name);
            r.Out.Should().Contain(m.Description);
            foreach (var p in m.Parameters)
                r.Out.Should().Contain(p.Name + "=" + (p.Kind == MethodParameterKind.Text && p.TextIn(m.DefaultOptions).Length == 0 ? "(automatic)" : p.TextIn(m.DefaultOptions)));
        }
    }

    [Fact]
    public void MethodsJsonParses()
    {
        var r = CliFixture.Run("methods", "--json");
        r.ExitCode.Should().Be(0);
        var list = JsonDocument.Parse(r.Out).RootElement.EnumerateArray().ToList();
        list.Select(e => e.GetProperty("name").GetString()).Should().Equal(MethodCatalog.All.Select(m => m.Name));
    }

    [Fact]
    public void ModelsListsTheArchitectures()
    {
        var r = CliFixture.Run("models");
        r.ExitCode.Should().Be(0);
        foreach (var name in new[] { "resnet18", "resnet34", "resnet50", "vgg11", "vgg19_bn" }) r.Out.Should().Contain(name);
        ModelZoo.Names.Should().Contain(CliFixture.Arch);
    }

    [Fact]
    public void ProgressBarFormatsAndAvoidsCarriageReturnsWhenRedirected()
    {
        var writer = new StringWriter();
        var bar = new ProgressBar(writer, 50, interactive: false, width: 10);
        bar.Format(12, TimeSpan.FromSeconds(37.2)).Should().Be("[##        ] 12/50 images, 3.1 s/img, ETA 1 min 58 s");
        bar.Format(12.5, TimeSpan.FromSeconds(25)).Should().Be("[##        ] 12.5/50 images, 2.0 s/img, ETA 1 min 15 s");
        bar.Report(0, TimeSpan.Zero);
        bar.Report(0.5, TimeSpan.FromSeconds(1));     // within an image, before LogInterval: not written when redirected
        bar.Report(0.7, TimeSpan.FromSeconds(12));    // after LogInterval: written
        bar.Report(50, TimeSpan.FromSeconds(10));
        bar.Finish();
        writer.ToString().Should().NotContain("\r").And.Contain("[##########] 50/50 images, 0.2 s/img").And.Contain("0.7/50").And.NotContain("0.5/50");
        ProgressBar.Duration(45).Should().Be("45 s");
        ProgressBar.Duration(7810).Should().Be("2 h 10 min");

        var terminal = new StringWriter();
        var live = new ProgressBar(terminal, 4, interactive: true, width: 4);
        live.Report(2, TimeSpan.FromSeconds(1));
        live.Finish();
        terminal.ToString().Should().StartWith("\r[##  ] 2/4 images").And.EndWith(Environment.NewLine);
    }
}
