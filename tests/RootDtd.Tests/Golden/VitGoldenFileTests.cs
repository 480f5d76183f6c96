using FluentAssertions;
using TorchSharp;
using TorchSharp.PyBridge;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace RootDtd.Tests.Golden;

/// <summary>The ViT golden comparison itself: a missing file fails, altered values fail, another folder in the same layout passes.</summary>
public class VitGoldenFileTests
{
    private readonly ITestOutputHelper _output;

    public VitGoldenFileTests(ITestOutputHelper output) => _output = output;

    [Fact]
    public void AMissingFileFails()
    {
        var dir = Directory.CreateTempSubdirectory("rootdtd-vit-missing");
        try
        {
            var act = () => VitGolden.Verify(Path.Combine(dir.FullName, "vit", "vit.safetensors"), float64);
            act.Should().Throw<FileNotFoundException>().WithMessage("*vit.safetensors*");
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void AlteredExpectedValuesFail()
    {
        var altered = new[] { "attr64.attn_lrp", "map64.chefer", "rel64.cp_lrp_eps0.blocks.1", "logits64", "cam64.chefer.blocks.2" };
        var dir = Directory.CreateTempSubdirectory("rootdtd-vit-altered");
        try
        {
            var tensors = VitGolden.Load(VitGolden.DefaultPath);
            using (torch.no_grad())
            {
                foreach (var key in altered)
                {
                    // one element moved by 1e-9 of the tensor's scale: far below any visible change, far above 1e-12
                    var t = tensors[key];
                    var flat = t.view(-1);
                    var at = flat.abs().argmax().item<long>();
                    flat[at] = flat[at] + 1e-9 * t.abs().max().item<double>();
                }
            }
            var path = Path.Combine(dir.FullName, "vit.safetensors");
            Safetensors.SaveStateDict(path, tensors);
            var (passed, lines) = VitGolden.Verify(path, float64);
            passed.Should().BeFalse();
            lines.Where(l => l.StartsWith("FAIL", StringComparison.Ordinal)).Select(l => l[5..l.IndexOf(':')]).Should().BeEquivalentTo(altered);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    /// <summary>
    /// Another folder of cases in the same layout: the samples of the file in another order (input, targets and every
    /// per-sample reference permuted). Passes unchanged, so nothing depends on the public file's samples or targets.
    /// </summary>
    [Fact]
    public void AnotherCaseFolderInTheSameLayoutPasses()
    {
        var dir = Directory.CreateTempSubdirectory("rootdtd-vit-other");
        try
        {
            var tensors = VitGolden.Load(VitGolden.DefaultPath);
            var batch = tensors["input"].shape[0];
            var order = torch.tensor(Enumerable.Range(0, (int)batch).Reverse().Select(i => (long)i).ToArray());
            var permuted = tensors.ToDictionary(kv => kv.Key, kv => kv.Key.StartsWith("model.", StringComparison.Ordinal) ? kv.Value : kv.Value.index_select(0, order).contiguous());
            File.Copy(Path.Combine(Path.GetDirectoryName(VitGolden.DefaultPath)!, "MANIFEST.md"), Path.Combine(dir.FullName, "MANIFEST.md"));
            var path = Path.Combine(dir.FullName, "vit.safetensors");
            Safetensors.SaveStateDict(path, permuted);
            var (passed, lines) = VitGolden.Verify(path, float64);
            foreach (var l in lines) _output.WriteLine(l);
            passed.Should().BeTrue(string.Join("\n", lines.Where(l => l.StartsWith("FAIL", StringComparison.Ordinal))));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
