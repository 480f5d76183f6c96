using static TorchSharp.torch;

namespace RootDtd.Tests.Models;

internal static class TestTensors
{
    /// <summary>Same shape and bit-identical values.</summary>
    public static bool TensorsEqual(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();
}
