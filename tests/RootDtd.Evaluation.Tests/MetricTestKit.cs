using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests;

internal static class Kit
{
    public static Tensor T(float[] values, params long[] shape) => torch.tensor(values, shape);

    public static Tensor L(params long[] values) => torch.tensor(values);
}
