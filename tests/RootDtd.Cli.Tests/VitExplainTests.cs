using FluentAssertions;
using SixLabors.ImageSharp;
using Xunit;

namespace RootDtd.Cli.Tests;

/// <summary><c>explain --arch vit-…</c>: pixel methods and token maps on a small ViT, and a size the position embedding does not fit.</summary>
[Collection("cli")]
public sealed class VitExplainTests
{
    private readonly CliFixture _f;

    public VitExplainTests(CliFixture fixture) => _f = fixture;

    [Theory]
    [InlineData("attn-lrp")]
    [InlineData("chefer")]
    [InlineData("rollout")]
    [InlineData("root")]
    [InlineData("chefer-root")]
    [InlineData("root:steps=5,gelu=taylor2")]
    public void ExplainsAVitAndWritesImageSizedMaps(string method)
    {
        var dir = _f.NewOutputDir();
        var r = _f.ExplainVit(dir, _f.PngA, "--method", method, "--no-colorbar");
        r.ExitCode.Should().Be(0, r.ToString());
        var info = Image.Identify(Path.Combine(dir, "alpha.heatmap.png"), out _);
        (info.Width, info.Height).Should().Be((16, 16));
        File.ReadAllText(Path.Combine(dir, "alpha.json")).Should().Contain(method.Split(':')[0]);
    }

    [Fact]
    public void RootOnAVitIsReportedAsApproximatelyConservingWithoutALostConservationWarning()
    {
        // on a transformer LayerNorm, attention and the class token/position embedding absorb relevance (root: relative
        // error 1…10 on a small ViT); the CNN claim "conserves" and its 0.5 warning threshold do not apply there
        var dir = _f.NewOutputDir();
        var r = _f.ExplainVit(dir, _f.PngA, "--method", "root:steps=5", "--no-colorbar");
        r.ExitCode.Should().Be(0, r.ToString());
        using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "alpha.json")));
        var conservation = json.RootElement.GetProperty("conservation");
        conservation.GetProperty("expected").GetString().Should().Be("approximately");
        conservation.GetProperty("lost").GetBoolean().Should().BeFalse(r.ToString());
        r.ToString().Should().NotContain("The map may be dominated").And.Contain("conserves relevance approximately");
    }

    [Fact]
    public void AnImageSizeThePositionEmbeddingDoesNotFitIsAClearError()
    {
        var r = CliFixture.Run("explain", _f.PngA, "--arch", "vit-test-patch4-16", "--weights", _f.VitWeights, "--classes", "5", "--size", "20",
            "--method", "cp-lrp", "--out", _f.NewOutputDir());
        r.ExitCode.Should().NotBe(0);
        r.ToString().Should().Contain("pos_embed").And.NotContain("   at ");
    }

    [Theory]
    [InlineData("chefer")]
    [InlineData("rollout")]
    [InlineData("raw-attention")]
    public void TokenMapMethodsOnACnnAreAClearError(string method)
    {
        var r = _f.Explain(_f.NewOutputDir(), _f.PngC, "--method", method, "--quiet");
        r.ExitCode.Should().NotBe(0);
        r.ToString().Should().Contain("token map").And.Contain(method).And.NotContain("   at ");
    }
}
