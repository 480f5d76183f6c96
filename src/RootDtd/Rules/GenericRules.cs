using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Rules;

/// <summary>Relevance passes unchanged (activations, dropout, identity; reshaped for flatten).</summary>
public sealed class PassRule : Rule
{
    /// <summary>The shared instance.</summary>
    public static PassRule Instance { get; } = new();

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        if (context.Inputs.Count != 1)
            throw new ExplanationException($"Pass cannot split relevance over the {context.Inputs.Count} inputs of '{context.Node.Name}'; use Norm.");
        return new[] { context.Relevance.reshape(context.Input.shape) };
    }

    /// <inheritdoc />
    public override string ToString() => "Pass";
}

/// <summary>
/// The z-rule with the layer's own forward: <c>R_in = x ⊙ ∂⟨f(x), R / stab(f(x))⟩/∂x</c>, applied to every input.
/// Used for average pooling, the residual sum (a proportional split) and, in the root composite, max pooling.
/// </summary>
public sealed class NormRule : Rule
{
    /// <summary>Creates the rule.</summary>
    public NormRule(Stabilizer? stabilizer = null) => Stabilizer = stabilizer ?? Stabilizer.Default;

    /// <summary>The stabiliser.</summary>
    public Stabilizer Stabilizer { get; }

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        Tensor[] leaves;
        Tensor z;
        using (torch.enable_grad())
        {
            leaves = context.Inputs.Select(t => t.detach().requires_grad_(true)).ToArray();
            z = context.Node.Forward(leaves);
        }
        // libtorch's autograd.grad terminates the process (instead of throwing) when z is not connected to the leaves
        if (!z.requires_grad)
            throw new ExplanationException(
                $"Norm cannot propagate relevance through '{context.Node.Name}' ({context.Node.Kind}): its forward is not differentiable " +
                "(the output does not depend on the input through autograd, e.g. a detach() or an integer operation). Give the node Pass or Gradient, or fix its adapter.");
        var ratio = Stabilizer.Divide(context.Relevance, z.detach());
        var grads = VectorJacobian.Grad(z, leaves, ratio);
        return leaves.Select((l, i) => l.detach() * grads[i]).ToArray();
    }

    /// <inheritdoc />
    public override string ToString() => $"Norm({Stabilizer})";
}

/// <summary>
/// The plain vector-Jacobian product <c>R_in = Jᵀ R</c> (no multiplication by the input). zennit's treatment of max
/// pooling (relevance goes to the arg-max), and the rule of the Gradient baselines.
/// </summary>
public sealed class GradientRule : Rule
{
    /// <summary>The shared instance.</summary>
    public static GradientRule Instance { get; } = new();

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        // a rearrangement with a closed-form transpose: the same values without a forward under autograd
        if (context.Node is Graph.OperationNode { VectorJacobianProduct: { } vjp } && context.Inputs.Count == 1)
            return new[] { vjp(context.Relevance, context.Input) };
        Tensor[] leaves;
        Tensor z;
        using (torch.enable_grad())
        {
            leaves = context.Inputs.Select(t => t.detach().requires_grad_(true)).ToArray();
            z = context.Node.Forward(leaves);
        }
        if (!z.requires_grad) return leaves.Select(l => torch.zeros_like(l)).ToArray();
        return VectorJacobian.Grad(z, leaves, context.Relevance);
    }

    /// <inheritdoc />
    public override string ToString() => "Gradient";
}

/// <summary>autograd.grad for nodes with several inputs, some of which the node's forward may not use.</summary>
internal static class VectorJacobian
{
    /// <summary>
    /// ∂⟨z, v⟩/∂leaf for every leaf; an input the forward ignores gets zeros. Without allow_unused libtorch raises an
    /// error for such an input, which TorchSharp's autograd.grad turns into a process abort instead of an exception.
    /// </summary>
    public static Tensor[] Grad(Tensor z, Tensor[] leaves, Tensor v)
    {
        var grads = torch.autograd.grad(new[] { z }, leaves, new[] { v }, allow_unused: true);
        var result = new Tensor[leaves.Length];
        for (var i = 0; i < leaves.Length; i++)
            result[i] = grads[i] is { IsInvalid: false } g ? g : torch.zeros_like(leaves[i]).detach();
        return result;
    }
}
