using FluentAssertions;
using Xunit;

namespace RootDtd.Cli.Tests;

/// <summary><c>rootdtd demo</c> on the committed ViT, reduced to two images and two fast methods, and its usage errors.</summary>
public class DemoCommandTests
{
    [Fact]
    public void DemoOnTheCommittedVitWritesItsTablesGalleryAndReport()
    {
        var dir = Directory.CreateTempSubdirectory("rootdtd-demo-").FullName;
        try
        {
            var r = CliFixture.Run("demo", "--model", "synthetic-vit", "--samples", "2", "--gallery", "1", "--methods", "rollout,attn-lrp", "--out", dir);
            r.ExitCode.Should().Be(0, r.ToString());
            r.Out.Should().Contain("synthetic-vit: clean accuracy").And.Contain("on 2 images");
            foreach (var label in new[] { "rollout", "attn-lrp", "random (reference)" }) r.Out.Should().Contain($"| {label} |", "the chosen methods and the reference rows are in the tables");
            r.Out.Should().NotContain("| chefer |", "--methods replaced the demo list").And.NotContain("| epsilon-plus-flat |", "only the ViT ran");
            r.Error.Should().Contain("with synthetic-vit (rollout, attn-lrp)");
            r.Out.Should().MatchRegex(@"synthetic-vit done in \d+ s").And.MatchRegex(@"done in \d+ s");
            // a single --model writes demo.* (not demo-<model>.*)
            foreach (var file in new[] { "demo.md", "demo.json", "demo-gallery.png", "demo-perturbation.png" })
            {
                var path = Path.Combine(dir, file);
                File.Exists(path).Should().BeTrue(file);
                new FileInfo(path).Length.Should().BePositive(file);
                if (!file.EndsWith(".json", StringComparison.Ordinal)) r.Out.Should().Contain(Path.GetFullPath(path), "the report and figures are listed");
            }
            File.ReadAllText(Path.Combine(dir, "demo.md")).Should().Contain("| attn-lrp |");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("--model", "nope", "*Unknown architecture 'nope'*")]
    [InlineData("--model", " , ", "*at least one model*")]
    [InlineData("--samples", "0", "*--samples must be at least 1*")]
    [InlineData("--gallery", "-1", "*--gallery must be 0 or more*")]
    [InlineData("--methods", "rollout,nosuch", "*--methods*nosuch*")]
    public void DemoRefusesBadOptionsBeforeAnyWork(string option, string value, string message)
    {
        var dir = Path.Combine(Path.GetTempPath(), "rootdtd-demo-unused-" + Guid.NewGuid().ToString("N")[..8]);
        var r = CliFixture.Run("demo", option, value, "--out", dir);
        r.ExitCode.Should().Be(ExitCodes.Usage, r.ToString());
        r.Error.Should().Match(message);
        Directory.Exists(dir).Should().BeFalse("nothing ran");
    }
}
