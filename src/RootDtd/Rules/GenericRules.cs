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
        var grads = torch.autograd.grad(new[] { z }, leaves, new[] { ratio });
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
        Tensor[] leaves;
        Tensor z;
        using (torch.enable_grad())
        {
            leaves = context.Inputs.Select(t => t.detach().requires_grad_(true)).ToArray();
            z = context.Node.Forward(leaves);
        }
        if (!z.requires_grad) return leaves.Select(l => torch.zeros_like(l)).ToArray();
        return torch.autograd.grad(new[] { z }, leaves, new[] { context.Relevance }).ToArray();
    }

    /// <inheritdoc />
    public override string ToString() => "Gradient";
}
