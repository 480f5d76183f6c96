using System.Collections;
using FluentAssertions;
using RootDtd.Models;
using TorchSharp;
using TorchSharp.PyBridge;
using Xunit;
using static TorchSharp.torch;
using static RootDtd.Tests.Models.TestTensors;

namespace RootDtd.Tests.Models;

public sealed class ModelWeightsTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "rootdtd-weights-" + Guid.NewGuid().ToString("N"));

    public ModelWeightsTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string PathOf(string name) => Path.Combine(_dir, name);

    /// <summary>A small torchvision-style ResNet with randomised BatchNorm statistics, so that buffers matter too.</summary>
    internal static ResNet TinyResNet(int classes = 5, long seed = 1)
    {
        torch.manual_seed(seed);
        var model = new ResNet(new[] { 1, 1, 1, 1 }, new[] { 4, 4, 8, 8 }, false, classes);
        RandomiseBatchNorm(model);
        return model;
    }

    internal static Vgg TinyVgg(int classes = 5, long seed = 1)
    {
        torch.manual_seed(seed);
        var model = new Vgg(new[] { 4, 0, 8, 0 }, true, new[] { 16 }, classes, pooledSize: 2);
        RandomiseBatchNorm(model);
        return model;
    }

    private static void RandomiseBatchNorm(nn.Module model)
    {
        using var _ = torch.no_grad();
        foreach (var (name, buffer) in model.named_buffers())
        {
            if (name.EndsWith("running_mean", StringComparison.Ordinal)) buffer.copy_(torch.randn_like(buffer) * 0.1);
            if (name.EndsWith("running_var", StringComparison.Ordinal)) buffer.copy_(torch.rand_like(buffer) + 0.5);
            if (name.EndsWith("num_batches_tracked", StringComparison.Ordinal)) buffer.fill_(7);
        }
        foreach (var (name, p) in model.named_parameters())
            if (name.Contains("bn", StringComparison.Ordinal) || name.StartsWith("features.1.", StringComparison.Ordinal)) p.copy_(torch.rand_like(p) + 0.5);
    }

    private static Tensor Output(nn.Module<Tensor, Tensor> model, Tensor x)
    {
        model.eval();
        using var _ = torch.no_grad();
        return model.call(x);
    }

    [Theory]
    [InlineData("w.safetensors")]
    [InlineData("w.pth")]
    [InlineData("w.pt")]
    public void SavedResNetLoadsIntoAFreshModelWithIdenticalOutputs(string file)
    {
        using var scope = torch.NewDisposeScope();
        var source = TinyResNet(seed: 1);
        var path = PathOf(file);
        ModelWeights.Save(source, path);
        var fresh = TinyResNet(seed: 2);
        var x = torch.randn(2, 3, 32, 32);
        TensorsEqual(Output(source, x), Output(fresh, x)).Should().BeFalse("the two models start from different weights");

        var result = ModelWeights.Load(fresh, path);

        result.Format.Should().Be(file.EndsWith(".safetensors") ? WeightsFormat.Safetensors : WeightsFormat.PyTorch);
        result.StrippedPrefix.Should().BeEmpty();
        result.LoadedKeys.Should().HaveCount(source.state_dict().Count);
        TensorsEqual(Output(source, x), Output(fresh, x)).Should().BeTrue();
        fresh.state_dict()["bn1.num_batches_tracked"].item<long>().Should().Be(7);
    }

    [Fact]
    public void StateDictWrittenByPyBridgeExtensionsLoadsIntoAVgg()
    {
        using var scope = torch.NewDisposeScope();
        var source = TinyVgg(seed: 3);
        source.save_safetensors(PathOf("vgg.safetensors"));
        source.save_py(PathOf("vgg.pth"));
        var x = torch.randn(1, 3, 16, 16);
        foreach (var file in new[] { "vgg.safetensors", "vgg.pth" })
        {
            var fresh = TinyVgg(seed: 4);
            ModelWeights.Load(fresh, PathOf(file));
            TensorsEqual(Output(source, x), Output(fresh, x)).Should().BeTrue(file);
        }
    }

    [Fact]
    public void ModulePrefixIsStrippedFromSafetensors()
    {
        using var scope = torch.NewDisposeScope();
        var source = TinyResNet(seed: 5);
        var dict = source.state_dict().ToDictionary(kv => "module." + kv.Key, kv => kv.Value);
        Safetensors.SaveStateDict(PathOf("dp.safetensors"), dict);
        var fresh = TinyResNet(seed: 6);

        var result = ModelWeights.Load(fresh, PathOf("dp.safetensors"));

        result.StrippedPrefix.Should().Be("module.");
        var x = torch.randn(1, 3, 32, 32);
        TensorsEqual(Output(source, x), Output(fresh, x)).Should().BeTrue();
    }

    [Fact]
    public void NestedModuleAndModelPrefixesAreStrippedFromPth()
    {
        using var scope = torch.NewDisposeScope();
        var source = TinyVgg(seed: 7);
        var table = new Hashtable();
        foreach (var (k, v) in source.state_dict()) table["module.model." + k] = v;
        PyTorchPickler.PickleStateDict(PathOf("wrapped.pth"), table);
        var fresh = TinyVgg(seed: 8);

        var result = ModelWeights.Load(fresh, PathOf("wrapped.pth"));

        result.StrippedPrefix.Should().Be("module.model.");
        var x = torch.randn(1, 3, 16, 16);
        TensorsEqual(Output(source, x), Output(fresh, x)).Should().BeTrue();
    }

    private Dictionary<string, Tensor> BrokenStateDict(ResNet source)
    {
        var dict = source.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
        dict.Remove("fc.bias");
        dict.Remove("layer1.0.bn1.running_var");
        dict["extra.weight"] = torch.ones(3);
        dict["fc.weight"] = torch.zeros(3, 8);
        return dict;
    }

    private static void ShouldListEverything(WeightsMismatchException e)
    {
        e.MissingKeys.Should().BeEquivalentTo("fc.bias", "layer1.0.bn1.running_var");
        e.UnexpectedKeys.Should().Equal("extra.weight");
        e.ShapeMismatches.Should().ContainSingle();
        e.ShapeMismatches[0].Key.Should().Be("fc.weight");
        e.ShapeMismatches[0].Expected.Should().Equal(5, 8);
        e.ShapeMismatches[0].Found.Should().Equal(3, 8);
        e.Message.Should().Contain("Missing keys").And.Contain("fc.bias").And.Contain("layer1.0.bn1.running_var")
            .And.Contain("Unexpected keys").And.Contain("extra.weight")
            .And.Contain("fc.weight: expected [5, 8] vs found [3, 8]");
        e.Message.Should().NotContain("not identical");
    }

    [Theory]
    [InlineData("broken.safetensors")]
    [InlineData("broken.pth")]
    public void MismatchListsMissingUnexpectedAndShapesAndLeavesTheModelUnchanged(string file)
    {
        using var scope = torch.NewDisposeScope();
        var dict = BrokenStateDict(TinyResNet(seed: 9));
        var path = PathOf(file);
        if (file.EndsWith(".safetensors")) Safetensors.SaveStateDict(path, dict);
        else
        {
            var table = new Hashtable();
            foreach (var (k, v) in dict) table[k] = v;
            PyTorchPickler.PickleStateDict(path, table);
        }
        var target = TinyResNet(seed: 10);
        var before = target.state_dict()["conv1.weight"].clone();

        var act = () => ModelWeights.Load(target, path);

        var e = act.Should().Throw<WeightsMismatchException>().Which;
        ShouldListEverything(e);
        e.FilePath.Should().Be(path);
        e.Message.Should().Contain(path);
        TensorsEqual(before, target.state_dict()["conv1.weight"]).Should().BeTrue("a failed strict load changes nothing");
    }

    [Fact]
    public void NonStrictLoadCopiesWhatFitsAndReportsTheRest()
    {
        using var scope = torch.NewDisposeScope();
        var source = TinyResNet(seed: 11);
        Safetensors.SaveStateDict(PathOf("partial.safetensors"), BrokenStateDict(source));
        var target = TinyResNet(seed: 12);

        var result = ModelWeights.Load(target, PathOf("partial.safetensors"), strict: false);

        result.MissingKeys.Should().BeEquivalentTo("fc.bias", "layer1.0.bn1.running_var");
        result.UnexpectedKeys.Should().Equal("extra.weight");
        result.ShapeMismatches.Select(s => s.Key).Should().Equal("fc.weight");
        TensorsEqual(source.state_dict()["conv1.weight"], target.state_dict()["conv1.weight"]).Should().BeTrue();
        TensorsEqual(source.state_dict()["fc.weight"], target.state_dict()["fc.weight"]).Should().BeFalse();
    }

    [Fact]
    public void MissingNumBatchesTrackedIsTolerated()
    {
        using var scope = torch.NewDisposeScope();
        var source = TinyVgg(seed: 13);
        var dict = source.state_dict().Where(kv => !kv.Key.EndsWith("num_batches_tracked")).ToDictionary(kv => kv.Key, kv => kv.Value);
        Safetensors.SaveStateDict(PathOf("old.safetensors"), dict);
        var fresh = TinyVgg(seed: 14);
        ModelWeights.Load(fresh, PathOf("old.safetensors"));
        var x = torch.randn(1, 3, 16, 16);
        TensorsEqual(Output(source, x), Output(fresh, x)).Should().BeTrue();
    }

    [Fact]
    public void ValuesAreConvertedToTheModelsDtype()
    {
        using var scope = torch.NewDisposeScope();
        var source = TinyVgg(seed: 15);
        var dict = source.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.is_floating_point() ? kv.Value.to(float64) : kv.Value);
        Safetensors.SaveStateDict(PathOf("f64.safetensors"), dict);
        var fresh = TinyVgg(seed: 16);
        ModelWeights.Load(fresh, PathOf("f64.safetensors"));
        fresh.state_dict()["features.0.weight"].dtype.Should().Be(float32);
        var x = torch.randn(1, 3, 16, 16);
        torch.allclose(Output(source, x), Output(fresh, x)).Should().BeTrue();
    }

    [Fact]
    public void UnreadableFilesNameTheFile()
    {
        var model = TinyVgg();
        var missing = PathOf("nope.safetensors");
        FluentActions.Invoking(() => ModelWeights.Load(model, missing)).Should().Throw<FileNotFoundException>().WithMessage($"*{missing}*");

        var garbage = PathOf("garbage.pth");
        File.WriteAllBytes(garbage, Enumerable.Range(0, 100).Select(i => (byte)(i * 7 + 3)).ToArray());
        FluentActions.Invoking(() => ModelWeights.Load(model, garbage)).Should().Throw<ModelWeightsException>()
            .Which.Message.Should().Contain(garbage).And.Contain("torch.save");

        var legacy = PathOf("legacy.pth");
        File.WriteAllBytes(legacy, new byte[] { 0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8 });
        FluentActions.Invoking(() => ModelWeights.Load(model, legacy)).Should().Throw<ModelWeightsException>().WithMessage("*legacy*");

        var empty = PathOf("empty.safetensors");
        File.WriteAllBytes(empty, Array.Empty<byte>());
        FluentActions.Invoking(() => ModelWeights.Load(model, empty)).Should().Throw<ModelWeightsException>().WithMessage("*empty*");

        var truncated = PathOf("truncated.safetensors");
        model.save_safetensors(truncated);
        var bytes = File.ReadAllBytes(truncated);
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        FluentActions.Invoking(() => ModelWeights.Load(model, truncated)).Should().Throw<ModelWeightsException>().WithMessage($"*{truncated}*");
    }
}
