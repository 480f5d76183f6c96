using FluentAssertions;
using TorchSharp;
using TorchSharp.PyBridge;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace RootDtd.Tests.Golden;

/// <summary>Every key of ROOTDTD_GOLDEN_DIR/vit/vit.safetensors (logits, attention, gradients, every method's relevances and maps).</summary>
public class VitGoldenTests
{
    private readonly ITestOutputHelper _output;

    public VitGoldenTests(ITestOutputHelper output) => _output = output;

    private void Check(string path, ScalarType dtype)
    {
        var (passed, lines) = VitGolden.Verify(path, dtype);
        foreach (var l in lines) _output.WriteLine(l);
        passed.Should().BeTrue(string.Join("\n", lines.Where(l => l.StartsWith("FAIL", StringComparison.Ordinal))));
    }

    [Fact]
    public void Float64KeysMatchTo1e12() => Check(VitGolden.DefaultPath, float64);

    [Fact]
    public void Float32KeysMatchWithinTheManifestSpread() => Check(VitGolden.DefaultPath, float32);
}
