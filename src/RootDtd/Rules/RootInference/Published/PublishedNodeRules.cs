using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Rules.RootInference.Published;

/// <summary>
/// The published code's ReLU rule (<c>DTDOpt.backprop_relu</c>). The reference's models use in-place ReLUs, so the
/// activation it stores for a ReLU is the ReLU's <em>output</em> <c>a ≥ 0</c>; this rule reads the node's output likewise.
/// With <c>S</c> = <see cref="PublishedSolvers.ReluSignal"/>(a, R) (20 steps from all ones, learning rate 3, gradient
/// constraint), root <c>N = a − S</c> and signal <c>a − N</c>, the relevance is the Taylor expansion at the root up to
/// second order: <c>R_in = S ⊙ relu′(a) ⊙ safe(R / relu(a)) + S² ⊙ relu″(a) ⊙ safe(R / relu(a)) / 2</c>, where the
/// second-order term is 0 for a ReLU. So <c>R_in = S ⊙ R / (a + 1e-9)</c> where <c>a &gt; 0</c>, and 0 elsewhere.
/// The reference also runs the same computation on the negative part <c>min(a, 0)</c>; there <c>relu(·) ≡ 0</c> makes
/// <c>safe(R / 0) = 0</c>, so that part contributes exactly 0 for finite R and is not computed here.
/// Only ReLU nodes are accepted (the published CNN code handles no other activation).
/// </summary>
public sealed class PublishedReluRule : Rule
{
    /// <summary>Creates the rule (defaults: the reference's 20 steps, learning rate 3, tolerance 0.15, sharpness 10, base 0.1).</summary>
    public PublishedReluRule(int steps = 20, double learningRate = 3, double tolerance = 0.15, double sharpness = 10, double @base = 0.1)
    {
        if (steps < 0) throw new ArgumentOutOfRangeException(nameof(steps));
        Steps = steps;
        LearningRate = learningRate;
        Tolerance = tolerance;
        Sharpness = sharpness;
        Base = @base;
    }

    /// <summary>Solver steps.</summary>
    public int Steps { get; }

    /// <summary>Initial per-element step size.</summary>
    public double LearningRate { get; }

    /// <summary>Tolerance of the gradient constraint.</summary>
    public double Tolerance { get; }

    /// <summary>Sharpness of the gradient constraint.</summary>
    public double Sharpness { get; }

    /// <summary>Base of the gradient-constraint damping.</summary>
    public double Base { get; }

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Node.Kind != NodeKind.Activation || !context.Node.ClampsToNonNegative || context.Node.Module is not (null or TorchSharp.Modules.ReLU))
            throw new ExplanationException($"{this} handles ReLU only; '{context.Node.Name}' is another activation (the published CNN code supports no other).");
        using var scope = torch.NewDisposeScope();
        var a = context.Output.clamp_min(0);
        var r = context.Relevance;
        var s = PublishedSolvers.ReluSignal(a, r, Steps, LearningRate, Tolerance, Sharpness, Base);
        var root = a - s;
        var signal = a - root;
        var firstDerivative = a.gt(0).to(a.dtype);
        var rin = signal * (firstDerivative * PublishedSolvers.SafeDivide(r, F.relu(a)));
        return new[] { rin.reshape(context.Input.shape).MoveToOuterDisposeScope() };
    }

    /// <inheritdoc />
    public override string ToString() => $"PublishedRelu(steps={Steps}, lr={LearningRate:g3}, tol={Tolerance:g3})";
}

/// <summary>
/// The published code's max-pooling rule (<c>DTDOpt.backprop_max_pool</c>): <c>Z = maxpool(x) + 1e-9</c>,
/// <c>R_in = x ⊙ unpool(R / Z)</c>, where the unpooling writes each output's ratio to its arg-max as
/// <c>max_unpool2d</c> does (an indexed write into each flattened plane). With overlapping windows (ResNet's 3×3/2 pooling) an input that wins several windows receives
/// only one of their ratios (the last write), as in the reference; set <see cref="AccumulateOverlaps"/> to sum them
/// instead (then the rule conserves relevance up to the 1e-9 shift). Requires a <c>MaxPool2d</c> module.
/// </summary>
public sealed class PublishedMaxPoolRule : Rule
{
    /// <summary>Creates the rule.</summary>
    public PublishedMaxPoolRule(bool accumulateOverlaps = false) => AccumulateOverlaps = accumulateOverlaps;

    /// <summary>Sum the ratios of overlapping windows (a deviation from the reference, off by default).</summary>
    public bool AccumulateOverlaps { get; }

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Node.Module is not TorchSharp.Modules.MaxPool2d pool)
            throw new ExplanationException($"{this} needs a MaxPool2d module; '{context.Node.Name}' has {context.Node.ModuleType?.Name ?? "none"}.");
        using var scope = torch.NewDisposeScope();
        var x = context.Input;
        if (x.dim() != 4) throw new ExplanationException($"{this} expects [B, C, H, W] at '{context.Node.Name}'; got [{string.Join(", ", x.shape)}].");
        var kernel = pool.kernel_size;
        var stride = pool.stride ?? kernel;
        var padding = pool.padding ?? new long[] { 0, 0 };
        var dilation = pool.dilation ?? new long[] { 1, 1 };
        var (z, indices) = F.max_pool2d_with_indices(x, kernel, stride, padding, dilation, pool.ceil_mode);
        var ratio = context.Relevance.reshape(z.shape) / (z + PublishedSolvers.Epsilon);
        // max_unpool2d as an indexed write into each flattened plane (TorchSharp's max_unpool2d drops output_size);
        // scatter writes like max_unpool2d (a repeated index keeps one value), scatter_add sums the repeats.
        var shape = new[] { x.shape[0], x.shape[1], x.shape[2] * x.shape[3] };
        var flatIndex = indices.reshape(x.shape[0], x.shape[1], -1);
        var flatRatio = ratio.reshape(x.shape[0], x.shape[1], -1);
        var plane = torch.zeros(shape, dtype: x.dtype, device: x.device);
        var spread = (AccumulateOverlaps ? plane.scatter_add(2, flatIndex, flatRatio) : plane.scatter(2, flatIndex, flatRatio)).reshape(x.shape);
        return new[] { (x * spread).MoveToOuterDisposeScope() };
    }

    /// <inheritdoc />
    public override string ToString() => AccumulateOverlaps ? "PublishedMaxPool(accumulate)" : "PublishedMaxPool";
}

/// <summary>
/// The published code's average-pooling rule (<c>DTDOpt.backprop_adap_avg_pool</c>): each output's relevance is split
/// over its window in proportion to the inputs, <c>R_in = x ⊙ R / (Σ_window x + 1e-9)</c>; for global pooling this is
/// the reference exactly (which writes the window sum as mean·H², i.e. assumes square maps; here the true sum is used).
/// A pooling that leaves the shape unchanged (VGG's 7×7 adaptive pooling at 224 px) passes relevance unchanged, as the
/// reference skips it for VGG.
/// </summary>
public sealed class PublishedAvgPoolRule : Rule
{
    /// <summary>The shared instance.</summary>
    public static PublishedAvgPoolRule Instance { get; } = new();

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var x = context.Input;
        if (x.shape.SequenceEqual(context.Output.shape)) return new[] { context.Relevance.alias() };
        using var scope = torch.NewDisposeScope();
        Tensor leaf;
        Tensor z;
        using (torch.enable_grad())
        {
            leaf = x.detach().requires_grad_(true);
            z = context.Node.Forward(new[] { leaf });
        }
        if (!z.requires_grad) throw new ExplanationException($"{this}: the pooling at '{context.Node.Name}' does not depend on its input.");
        // window size n for non-overlapping pooling: Σ_window x = n·avg, so R / (Σ x + ε) = (R / n) / (avg + ε / n) · … ; the vjp adds the 1/n back.
        var n = (double)(x.shape[^1] * x.shape[^2]) / (z.shape[^1] * z.shape[^2]);
        var ratio = context.Relevance / (z.detach() + PublishedSolvers.Epsilon / n);
        var grad = torch.autograd.grad(new[] { z }, new[] { leaf }, new[] { ratio })[0];
        return new[] { (x * grad).MoveToOuterDisposeScope() };
    }

    /// <inheritdoc />
    public override string ToString() => "PublishedAvgPool";
}

/// <summary>
/// The published code's residual split (<c>DTDOpt.backprop_skip_connect</c>): for <c>y = a + b</c>,
/// <c>R_a = a ⊙ R / (a + b + 1e-9)</c> and <c>R_b = b ⊙ R / (a + b + 1e-9)</c> (the shift is +1e-9 whatever the sign).
/// </summary>
public sealed class PublishedSkipRule : Rule
{
    /// <summary>The shared instance.</summary>
    public static PublishedSkipRule Instance { get; } = new();

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        using var scope = torch.NewDisposeScope();
        var z = context.Inputs[0].clone();
        for (var i = 1; i < context.Inputs.Count; i++) z = z + context.Inputs[i];
        var ratio = context.Relevance / (z + PublishedSolvers.Epsilon);
        var result = context.Inputs.Select(a => (a * ratio).MoveToOuterDisposeScope()).ToArray();
        return result;
    }

    /// <inheritdoc />
    public override string ToString() => "PublishedSkip";
}

/// <summary>Graph queries used by the published preset.</summary>
public static class PublishedGraph
{
    /// <summary>
    /// True for an activation inside a residual block: the one right after the residual sum, and those on a branch
    /// between the block's input (a node read by several nodes) and the sum. The reference walks a ResNet block as
    /// "split at the sum, then conv2, conv1 (and the downsample)", so these ReLUs (and the block's BatchNorms) pass
    /// relevance unchanged; only ReLUs outside blocks (VGG, the ResNet stem) get <see cref="PublishedReluRule"/>.
    /// </summary>
    public static bool IsInsideResidualBlock(GraphNode node, RelevanceGraph graph)
    {
        ArgumentNullException.ThrowIfNull(node);
        ArgumentNullException.ThrowIfNull(graph);
        if (node.Kind != NodeKind.Activation) return false;
        if (node.Inputs.Count == 1 && graph.Nodes[node.Inputs[0]].Kind == NodeKind.Sum) return true;
        foreach (var sum in graph.Nodes.Where(n => n.Kind == NodeKind.Sum))
        {
            foreach (var start in sum.Inputs)
            {
                var j = start;
                while (j != 0 && graph.ConsumerCount(j) == 1 && graph.Nodes[j].Inputs.Count == 1)
                {
                    if (j == node.Index) return true;
                    j = graph.Nodes[j].Inputs[0];
                }
            }
        }
        return false;
    }
}
