using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Rules.RootInference.Published;

/// <summary>
/// PyTorch's hinge-embedding loss with ATen's exact element formula
/// <c>ℓ(x, y) = [y ≠ 1]·max(0, margin − x) + [y ≠ −1]·x</c>, built from differentiable tensor operations so that its
/// gradient (including the boundary <c>x = margin</c>, where the clamp passes the gradient) is the one autograd gives
/// PyTorch's own <c>hinge_embedding_loss</c>.
/// </summary>
/// <remarks>
/// The loss is only meaningful for targets ±1. For any other target value both terms are active:
/// <c>ℓ = max(0, margin − x) + x</c>, whose derivative is <c>1</c> where <c>x &gt; margin</c> and <c>0</c> where
/// <c>x ≤ margin</c>: it does not depend on the target's value at all. The published root-inference code uses it with
/// relevance values as targets, so its "relevance supervision" ignores the magnitude of the relevance.
/// Note that TorchSharp's <c>torch.nn.functional.hinge_embedding_loss</c> defaults to margin 0, PyTorch's to 1.
/// </remarks>
public static class HingeEmbeddingLoss
{
    /// <summary>PyTorch's default margin.</summary>
    public const double DefaultMargin = 1.0;

    /// <summary>The unreduced loss, one value per element (same shape as <paramref name="input"/>).</summary>
    /// <param name="input">The predictions x.</param>
    /// <param name="target">The targets y (same shape).</param>
    /// <param name="margin">The margin (PyTorch default 1).</param>
    public static Tensor Elementwise(Tensor input, Tensor target, double margin = DefaultMargin)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(target);
        if (!input.shape.SequenceEqual(target.shape))
            throw new ArgumentException($"Input [{string.Join(", ", input.shape)}] and target [{string.Join(", ", target.shape)}] must have the same shape.", nameof(target));
        using var scope = torch.NewDisposeScope();
        var zero = torch.zeros_like(input);
        var marginPart = torch.where(target.ne(1), input.neg().add(margin).clamp_min(0), zero);
        var selfPart = torch.where(target.ne(-1), input, zero);
        return (marginPart + selfPart).MoveToOuterDisposeScope();
    }

    /// <summary>Mean over all elements of each sample (dimension 0 is the batch): shape [B]. With B = 1 this is PyTorch's <c>reduction='mean'</c>.</summary>
    public static Tensor PerSample(Tensor input, Tensor target, double margin = DefaultMargin)
    {
        using var scope = torch.NewDisposeScope();
        var l = Elementwise(input, target, margin);
        return l.reshape(l.shape[0], -1).mean(new long[] { 1 }).MoveToOuterDisposeScope();
    }

    /// <summary>Mean over every element (PyTorch's <c>reduction='mean'</c>), a scalar.</summary>
    public static Tensor Mean(Tensor input, Tensor target, double margin = DefaultMargin)
    {
        using var scope = torch.NewDisposeScope();
        return Elementwise(input, target, margin).mean().MoveToOuterDisposeScope();
    }
}
