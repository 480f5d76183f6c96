using FluentAssertions;
using RootDtd.Models;
using TorchSharp;
using Xunit;

namespace RootDtd.Cli.Tests.Hostile;

/// <summary>The command line reports hostile or careless inputs clearly.</summary>
[Collection("cli")]
public sealed class CliHostileInputTests
{
    private readonly CliFixture _f;

    public CliHostileInputTests(CliFixture fixture) => _f = fixture;

    [Fact]
    public void Weights_with_NaN_are_loaded_with_a_warning_naming_the_keys()
    {
        var path = Path.Combine(_f.Root, "nan-weights.safetensors");
        using (var model = CliFixture.CreateTrainedLookingModel(CliFixture.Classes, seed: 3))
        {
            using (torch.no_grad()) model.state_dict()["fc.weight"][0, 0] = torch.tensor(float.NaN);
            ModelWeights.Save(model, path);
        }
        var r = CliFixture.Run("explain", "--arch", CliFixture.Arch, "--weights", path, "--classes", "5", "--size", "32", "--out", _f.NewOutputDir(), _f.PngA);
        r.Error.Should().Contain("NaN or infinite values in fc.weight");
    }

    [Fact]
    public void A_strip_image_is_refused_with_its_aspect_ratio()
    {
        var path = Path.Combine(_f.Root, "strip.png");
        File.WriteAllBytes(path, HostileCorpus.Png(16384, 1));
        var r = _f.Explain(_f.NewOutputDir(), path);
        r.ExitCode.Should().NotBe(0);
        r.Error.Should().Contain(path).And.Contain("aspect ratio of 16384:1");
    }
}
