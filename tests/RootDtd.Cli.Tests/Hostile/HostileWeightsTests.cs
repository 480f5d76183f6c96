using FluentAssertions;
using RootDtd.Models;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static RootDtd.Cli.Tests.Hostile.WeightsFileBuilder;

namespace RootDtd.Cli.Tests.Hostile;

/// <summary>
/// Weights files are untrusted: declared sizes are checked against the model and the archive before anything is
/// allocated, nothing from a pickle is executed, and inconsistent safetensors indexes are refused. The memory-bound
/// cases run in a child process (<see cref="ChildProbe"/>) that measures its peak resident memory.
/// </summary>
public sealed class HostileWeightsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rootdtd-hostile-weights-").FullName;
    private readonly ITestOutputHelper _output;

    public HostileWeightsTests(ITestOutputHelper output) => _output = output;

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private string Write(string name, byte[] bytes)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static readonly PtTensor Weight = new("fc.weight", new long[] { 5, 8 }, new long[] { 8, 1 }, 0, "0", 40, 0.5f);
    private static readonly PtTensor Bias = new("fc.bias", new long[] { 5 }, new long[] { 1 }, 0, "1", 5, -1f);

    private ModelWeightsException LoadFails(string path)
    {
        using var model = ChildProbe.TinyModel();
        var before = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var error = FluentActions.Invoking(() => ModelWeights.Load(model, path)).Should().Throw<ModelWeightsException>().Which;
        error.Message.Should().Contain(path);
        foreach (var (key, value) in model.state_dict()) value.allclose(before[key], 0, 0).Should().BeTrue($"{key} must be unchanged");
        _output.WriteLine(error.Message);
        return error;
    }

    [Fact]
    public void A_torch_save_layout_loads_with_views_and_shared_storages()
    {
        // fc.bias is a view of the weight's storage (elements 35..39), as tied weights are saved.
        var sharedBias = Bias with { StorageKey = "0", StorageElements = 40, Offset = 35, Fill = 0.5f };
        var path = Write("valid.pt", TorchZip(new[] { Weight with { Stride = new long[] { 1, 5 } }, sharedBias }));
        using var model = ChildProbe.TinyModel();
        var result = ModelWeights.Load(model, path);
        result.LoadedKeys.Should().BeEquivalentTo("fc.weight", "fc.bias");
        result.NonFiniteKeys.Should().BeEmpty();
        var state = model.state_dict();
        state["fc.weight"].eq(0.5f).all().item<bool>().Should().BeTrue();
        state["fc.bias"].eq(0.5f).all().item<bool>().Should().BeTrue();
    }

    [Fact]
    public void A_pickle_that_asks_for_any_other_python_object_is_refused_by_name()
    {
        var pickle = new PickleWriter().Proto(2).Global("os", "system").Unicode("echo owned").Op(0x85).Op('R').Op('.').ToArray();
        var error = LoadFails(Write("rce.pt", TorchZip(new[] { Weight }, pickle)));
        error.Message.Should().Contain("'os.system'").And.Contain("nothing from the file is executed");
    }

    [Fact]
    public void A_length_prefix_larger_than_the_pickle_is_refused_before_allocating()
    {
        var pickle = new PickleWriter().Proto(2).Op('B').Raw(new byte[] { 0xFF, 0xFF, 0xFF, 0x7F }).Raw("tiny"u8).Op('.').ToArray();
        LoadFails(Write("binbytes.pt", TorchZip(new[] { Weight }, pickle))).Message
            .Should().Contain("declares a 2147483647-byte BINBYTES").And.Contain("only 5 bytes follow");
    }

    [Fact]
    public void Views_and_storages_are_checked_against_the_archive()
    {
        LoadFails(Write("beyond.pt", TorchZip(new[] { Weight with { Offset = 10 }, Bias }))).Message
            .Should().Contain("reaches element 49 of storage '0', which has 40");
        var lying = StateDictPickle(new[] { Weight with { StorageElements = 400 }, Bias });
        LoadFails(Write("short-entry.pt", TorchZip(new[] { Weight, Bias }, lying))).Message
            .Should().Contain("declares 400 elements of FloatStorage (1600 bytes) but its archive entry has 160 bytes");
        LoadFails(Write("twice.pt", TorchZip(new[] { Weight, Bias, Bias with { StorageKey = "2" } }))).Message
            .Should().Contain("the key 'fc.bias' appears twice");
    }

    [Fact]
    public void A_small_view_of_a_huge_storage_is_refused_before_reading()
    {
        // fc.weight has the model's shape, but its storage declares 10 M elements (a 40 MB read for 160 bytes).
        var path = Write("view-bomb.pt", TorchZip(new[] { Weight with { StorageElements = 10_000_000 }, Bias }));
        LoadFails(path).Message.Should().Contain("the model's tensors need 180 bytes, but the storages they are read from declare 40000020 bytes")
            .And.Contain("'fc.weight' [5, 8] is a view of 'archive/data/0'");
    }

    [Fact]
    public void Safetensors_indexes_are_checked_completely()
    {
        var w = new StEntry("fc.weight", "F32", new long[] { 5, 8 }, 0, 160);
        var b = new StEntry("fc.bias", "F32", new long[] { 5 }, 160, 180);
        using (var model = ChildProbe.TinyModel())
        {
            var loaded = ModelWeights.Load(model, Write("ok.safetensors", Safetensors(new[] { w, b }, 180)));
            loaded.LoadedKeys.Should().HaveCount(2);
            model.state_dict()["fc.bias"][4].item<float>().Should().Be(45); // element 44 of the data section = 1 + 44
        }
        LoadFails(Write("dup.safetensors", Safetensors(new[] { w, b, b with { Begin = 160, End = 180 } }, 180))).Message
            .Should().Contain("the key 'fc.bias' appears twice");
        LoadFails(Write("overlap.safetensors", Safetensors(new[] { w, b with { Begin = 140, End = 160 } }, 180))).Message
            .Should().Contain("'fc.weight' (0..160) and 'fc.bias' (140..160) overlap");
        LoadFails(Write("range.safetensors", Safetensors(new[] { w with { End = 120 }, b }, 180))).Message
            .Should().Contain("has shape [5, 8] of F32 (160 bytes) but a byte range of 120 bytes");
        LoadFails(Write("huge.safetensors", Safetensors(new[] { w with { Shape = new long[] { 100_000, 100_000 } }, b }, 180))).Message
            .Should().Contain("[100000, 100000]");
        LoadFails(Write("dtype.safetensors", Safetensors(new[] { w with { DType = "F8_E4M3" }, b }, 180))).Message
            .Should().Contain("unsupported dtype \"F8_E4M3\"");
        var bytes = Safetensors(new[] { w, b }, 180);
        LoadFails(Write("cut.safetensors", bytes[..40])).Message
            .Should().Contain("the header length field says").And.Contain("the file is truncated or not safetensors");
        LoadFails(Write("cut-data.safetensors", bytes[..^10])).Message
            .Should().Contain("'fc.bias' needs data bytes 160..180, but the data section has only 170 bytes");
    }

    [Fact]
    public void A_zip_without_a_pickle_says_so()
    {
        using var file = new MemoryStream();
        using (var zip = new System.IO.Compression.ZipArchive(file, System.IO.Compression.ZipArchiveMode.Create, leaveOpen: true))
            using (var s = zip.CreateEntry("archive/notes.txt").Open()) s.Write("hello"u8);
        LoadFails(Write("no-pickle.pt", file.ToArray())).Message.Should().Contain("the archive has no data.pkl (not a torch.save file)")
            .And.NotContain("Sequence contains");
    }

    [Fact]
    public void Non_finite_weights_are_reported()
    {
        var path = Write("nan.pt", TorchZip(new[] { Weight with { Fill = float.NaN }, Bias with { Fill = float.PositiveInfinity } }));
        using var model = ChildProbe.TinyModel();
        ModelWeights.Load(model, path).NonFiniteKeys.Should().BeEquivalentTo("fc.weight", "fc.bias");
    }

    /// <summary>name → (content, expected error fragment or null when the file must load).</summary>
    private static readonly Dictionary<string, (Func<byte[]> Make, string? Refusal)> Corpus = new()
    {
        ["valid.pt"] = (() => TorchZip(new[] { Weight, Bias }), null),
        // 100 M float32 elements (400 MB) deflated to about 400 KB, declared as fc.weight of shape [100000000].
        ["zip-bomb.pt"] = (() => TorchZip(new[] { Weight with { Shape = new long[] { 100_000_000 }, Stride = new long[] { 1 }, StorageElements = 100_000_000 }, Bias }),
            "fc.weight: expected [5, 8] vs found [100000000]"),
        ["view-bomb.pt"] = (() => TorchZip(new[] { Weight with { StorageElements = 100_000_000 }, Bias }), "storages they are read from declare 400000020 bytes"),
        ["binbytes-2GB.pt"] = (() => TorchZip(new[] { Weight },
            new PickleWriter().Proto(2).Op('B').Raw(new byte[] { 0xFF, 0xFF, 0xFF, 0x7F }).Raw(new byte[4000]).Op('.').ToArray()), "2147483647-byte BINBYTES"),
        ["huge-shape.safetensors"] = (() => Safetensors(new[] { new StEntry("fc.weight", "F32", new long[] { 100_000, 100_000 }, 0, 40_000_000_000) }, 16),
            "the data section has only 16 bytes"),
    };

    public static IEnumerable<object[]> CorpusNames => Corpus.Keys.Select(k => new object[] { k });

    [Theory]
    [MemberData(nameof(CorpusNames))]
    public void Hostile_weights_are_refused_or_loaded_within_budget(string name)
    {
        var (make, refusal) = Corpus[name];
        var path = Write(name, make());
        var outcome = ChildProbe.Run(TimeSpan.FromSeconds(120), "probe", "weights", path);
        _output.WriteLine($"{name} ({new FileInfo(path).Length} bytes): loaded={outcome.Loaded}, peak {outcome.PeakBytes / 1048576.0:F0} MB " +
                          $"(baseline {outcome.BaselineBytes / 1048576.0:F0} MB), {outcome.Seconds:F2} s {outcome.Error}");
        if (refusal is null) outcome.Loaded.Should().BeTrue(outcome.Error);
        else
        {
            outcome.Loaded.Should().BeFalse($"{name} must be refused");
            outcome.Error.Should().Match("*Weights*Exception: *").And.Contain(path).And.Contain(refusal);
        }
        outcome.PeakBytes.Should().BeLessThan(HostileFileTests.PeakBudgetBytes);
        outcome.Seconds.Should().BeLessThan(HostileFileTests.SecondsBudget);
    }
}
