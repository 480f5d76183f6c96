using FluentAssertions;
using RootDtd.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using static RootDtd.Tests.Models.TestTensors;

namespace RootDtd.Tests.Models;

public sealed class ModelZooTests
{
    [Fact]
    public void ListsEveryTorchvisionArchitecture()
    {
        ModelZoo.Names.Should().Contain(new[]
        {
            "resnet18", "resnet34", "resnet50", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
        });
    }

    private static Dictionary<string, long[]> Shapes(nn.Module m) => m.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);

    [Theory]
    [InlineData("resnet18")]
    [InlineData("resnet50")]
    [InlineData("vgg11_bn")]
    public void KeysAndShapesEqualTorchVisions(string name)
    {
        using var scope = torch.NewDisposeScope();
        var ours = Shapes(ModelZoo.Create(name, 10));
        nn.Module reference = name switch
        {
            "resnet18" => torchvision.models.resnet18(num_classes: 10),
            "resnet50" => torchvision.models.resnet50(num_classes: 10),
            _ => torchvision.models.vgg11_bn(num_classes: 10),
        };
        var theirs = Shapes(reference);
        ours.Keys.Should().BeEquivalentTo(theirs.Keys);
        foreach (var (k, s) in theirs) ours[k].Should().Equal(s, k);
    }

    [Theory]
    [InlineData("ResNet34", 3, 21_286_211L)]
    [InlineData("vgg13", 1000, 133_047_848L)]
    [InlineData("vgg16_bn", 1000, 138_365_992L)]
    public void BuildsByNameWithTheClassCount(string name, int classes, long parameters)
    {
        using var scope = torch.NewDisposeScope();
        var model = ModelZoo.Create(name, classes);
        model.parameters().Sum(p => p.numel()).Should().Be(parameters);
        model.state_dict().Last(kv => kv.Key.EndsWith(".bias")).Value.shape.Should().Equal(classes);
    }

    [Fact]
    public void LoadsWeightsSavedFromAnotherInstanceByName()
    {
        using var scope = torch.NewDisposeScope();
        var dir = Directory.CreateTempSubdirectory("rootdtd-zoo-");
        try
        {
            torch.manual_seed(1);
            var source = ModelZoo.Create("resnet18", 4);
            var path = Path.Combine(dir.FullName, "r18.safetensors");
            ModelWeights.Save(source, path);
            var fresh = ModelZoo.Create("resnet18", 4);
            ModelWeights.Load(fresh, path);
            source.eval();
            fresh.eval();
            var x = torch.randn(1, 3, 64, 64);
            using var _ = torch.no_grad();
            TensorsEqual(source.call(x), fresh.call(x)).Should().BeTrue();

            var wrongClasses = ModelZoo.Create("resnet18", 5);
            FluentActions.Invoking(() => ModelWeights.Load(wrongClasses, path)).Should().Throw<WeightsMismatchException>()
                .Which.Message.Should().Contain("fc.weight: expected [5, 512] vs found [4, 512]").And.Contain("fc.bias: expected [5] vs found [4]");
        }
        finally
        {
            dir.Delete(true);
        }
    }

    [Fact]
    public void UnknownNamesListTheKnownOnes()
    {
        FluentActions.Invoking(() => ModelZoo.Create("resnet19")).Should().Throw<ArgumentException>()
            .WithMessage("*resnet19*resnet18*vgg19_bn*");
        FluentActions.Invoking(() => ModelZoo.Create("resnet18", 0)).Should().Throw<ArgumentOutOfRangeException>();
    }

    [Fact]
    public void CustomArchitecturesCanBeRegistered()
    {
        var name = "zoo-test-" + Guid.NewGuid().ToString("N")[..8];
        ModelZoo.Register(name, "a test model", c => new Vgg(new[] { 2, 0 }, false, Array.Empty<int>(), c, pooledSize: 1));
        ModelZoo.Contains(name.ToUpperInvariant()).Should().BeTrue();
        using var scope = torch.NewDisposeScope();
        ModelZoo.Create(name, 3).call(torch.randn(1, 3, 8, 8)).shape.Should().Equal(1, 3);
        FluentActions.Invoking(() => ModelZoo.Register(name, "again", c => new Vgg(new[] { 2, 0 }, false, Array.Empty<int>(), c, pooledSize: 1)))
            .Should().Throw<ArgumentException>();
    }
}
