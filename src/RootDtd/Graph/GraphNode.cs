using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Graph;

/// <summary>What a node of the relevance graph computes; composites assign default rules by kind.</summary>
public enum NodeKind
{
    /// <summary>The network input.</summary>
    Input,

    /// <summary>A conv/linear layer (<see cref="LinearUnitNode"/>).</summary>
    LinearUnit,

    /// <summary>An element-wise activation (ReLU, LeakyReLU, GELU, …).</summary>
    Activation,

    /// <summary>Max pooling.</summary>
    MaxPool,

    /// <summary>Average pooling (fixed or adaptive).</summary>
    AvgPool,

    /// <summary>A shape-only or identity operation: flatten, reshape, dropout (eval), identity.</summary>
    Shape,

    /// <summary>An element-wise sum of several inputs (the residual addition of a ResNet block).</summary>
    Sum,

    /// <summary>A BatchNorm that could not be merged into a preceding conv/linear layer.</summary>
    BatchNorm,

    /// <summary>Any other single-output operation supplied by a custom adapter.</summary>
    Other,

    /// <summary>A learned parameter or constant fed into the graph (class token, position embedding); absorbs relevance.</summary>
    Parameter,

    /// <summary>Concatenation of several inputs along an axis (e.g. class token and patch tokens).</summary>
    Concat,

    /// <summary>A reshape/permute that moves elements without changing them: tokens from patches, split and merge of heads.</summary>
    Rearrange,

    /// <summary>Selection of part of the input (index/select/slice, e.g. the class token before the head).</summary>
    Select,

    /// <summary>Multiplication by a constant (the score scale d_head^(−1/2)).</summary>
    Scale,

    /// <summary>A softmax (attention probabilities).</summary>
    Softmax,

    /// <summary>A LayerNorm over the last axis.</summary>
    LayerNorm,

    /// <summary>A product of two activations: a matrix product (q·kᵀ, A·v) or an element-wise product.</summary>
    Product,
}

/// <summary>
/// One operation of the relevance graph. Nodes are stored in forward (topological) order; each reads the outputs
/// of its <see cref="Inputs"/> and produces one tensor.
/// </summary>
public abstract class GraphNode
{
    /// <summary>Creates a node.</summary>
    /// <param name="name">The module path (e.g. <c>layer1.0.conv1</c>) or, for functional operations, a path-like name.</param>
    /// <param name="kind">What the node computes.</param>
    /// <param name="inputs">Indices of the nodes whose outputs this node reads.</param>
    protected GraphNode(string name, NodeKind kind, IReadOnlyList<int> inputs)
    {
        Name = name;
        Kind = kind;
        Inputs = inputs;
    }

    /// <summary>Index of the node in the graph (forward order).</summary>
    public int Index { get; internal set; }

    /// <summary>Module path or a descriptive name for functional operations.</summary>
    public string Name { get; }

    /// <summary>What the node computes.</summary>
    public NodeKind Kind { get; }

    /// <summary>Indices of the input nodes.</summary>
    public IReadOnlyList<int> Inputs { get; internal set; }

    /// <summary>The module this node came from, if any (used for rule assignment by type and for error messages).</summary>
    public nn.Module? Module { get; init; }

    /// <summary>The module's type (or <c>null</c> for functional operations).</summary>
    public Type? ModuleType => Module?.GetType();

    /// <summary>True for operations whose output is never negative whatever the input (ReLU).</summary>
    public bool ClampsToNonNegative { get; init; }

    /// <summary>
    /// True when the output is known to be non-negative for every input: a ReLU output, possibly followed by
    /// pooling, flattening, dropout or identity. Set by the graph builder.
    /// </summary>
    public bool NonNegativeOutput { get; internal set; }

    /// <summary>Runs the operation. Must be differentiable with respect to <paramref name="inputs"/> (rules call it under autograd).</summary>
    public abstract Tensor Forward(IReadOnlyList<Tensor> inputs);

    /// <inheritdoc />
    public override string ToString() => $"{Name} ({Kind})";
}

/// <summary>The graph's input placeholder.</summary>
public sealed class InputNode : GraphNode
{
    /// <summary>Creates the input node.</summary>
    public InputNode() : base("input", NodeKind.Input, Array.Empty<int>()) { }

    /// <inheritdoc />
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs[0];
}

/// <summary>A conv/linear layer (with any BatchNorm merged in).</summary>
public sealed class LinearUnitNode : GraphNode, ILinearizedNode
{
    /// <summary>Creates a unit node.</summary>
    public LinearUnitNode(string name, LinearUnit unit, int input) : base(name, NodeKind.LinearUnit, new[] { input })
    {
        Unit = unit;
    }

    /// <summary>The layer and its effective parameters.</summary>
    public LinearUnit Unit { get; internal set; }

    /// <summary>Module paths of BatchNorm layers merged into this unit by a canonizer.</summary>
    public List<string> MergedModules { get; } = new();

    /// <summary>Position among the graph's linear units in forward order (0 = first).</summary>
    public int UnitIndex { get; internal set; }

    /// <summary>
    /// Names of equal, consecutive slices of the output features (the last axis of a dense unit, the channels of a
    /// convolution) that root-seeking rules solve as separate units, e.g. <c>q</c>, <c>k</c>, <c>v</c> for timm's packed
    /// qkv Linear (docs/transformers.md, D7). Empty (default): the layer is one unit. Rules that treat every output on its
    /// own (LRP, z⁺, gradients) give the same result either way.
    /// </summary>
    public IReadOnlyList<string> OutputParts { get; init; } = Array.Empty<string>();

    /// <summary>The names <see cref="OutputParts"/> of timm's qkv Linear.</summary>
    public static IReadOnlyList<string> QkvParts { get; } = new[] { "q", "k", "v" };

    /// <inheritdoc />
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => Unit.Forward(inputs[0]);

    /// <inheritdoc />
    public ILinearMap OperandMap(int input, IReadOnlyList<Tensor> recorded) => Unit;

    /// <inheritdoc />
    public int Degree(IReadOnlyList<bool> active) => 1;
}

/// <summary>A single-input node computed by a delegate (activations, pooling, reshapes, custom operations).</summary>
public sealed class OperationNode : GraphNode
{
    private readonly Func<Tensor, Tensor> _forward;

    /// <summary>Creates an operation node.</summary>
    public OperationNode(string name, NodeKind kind, int input, Func<Tensor, Tensor> forward) : base(name, kind, new[] { input })
    {
        _forward = forward;
    }

    /// <inheritdoc />
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => _forward(inputs[0]);

    /// <summary>
    /// The vector-Jacobian product of the operation, (output-shaped tensor g, the recorded input) → Jᵀg in the input's
    /// shape, when it is known in closed form (rearrangements: reshape, permute, select of a part); <c>null</c> (default):
    /// <see cref="Rules.GradientRule"/> takes it from autograd through <see cref="Forward"/>. It must equal autograd's
    /// result exactly (a rearrangement's transpose only copies values).
    /// </summary>
    public Func<Tensor, Tensor, Tensor>? VectorJacobianProduct { get; init; }
}

/// <summary>The element-wise sum of its inputs (a residual connection).</summary>
public sealed class SumNode : GraphNode, ILinearizedNode
{
    /// <summary>Creates a sum node.</summary>
    public SumNode(string name, IReadOnlyList<int> inputs) : base(name, NodeKind.Sum, inputs)
    {
        if (inputs.Count < 2) throw new ArgumentException("A sum needs at least two inputs.", nameof(inputs));
    }

    /// <inheritdoc />
    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var s = inputs[0] + inputs[1];
        for (var i = 2; i < inputs.Count; i++) s = s + inputs[i];
        return s;
    }

    /// <inheritdoc />
    public ILinearMap OperandMap(int input, IReadOnlyList<Tensor> recorded) => DelegateLinearMap.Identity;

    /// <inheritdoc />
    public int Degree(IReadOnlyList<bool> active) => 1;
}

/// <summary>A BatchNorm layer in evaluation mode that no canonizer merged (an affine map per channel).</summary>
public sealed class BatchNormNode : GraphNode
{
    /// <summary>Creates a BatchNorm node from per-channel scale and shift.</summary>
    public BatchNormNode(string name, int input, Tensor scale, Tensor shift) : base(name, NodeKind.BatchNorm, new[] { input })
    {
        Scale = scale;
        Shift = shift;
    }

    /// <summary>Per-channel multiplier γ/√(σ²+ε).</summary>
    public Tensor Scale { get; }

    /// <summary>Per-channel offset β − μ·γ/√(σ²+ε).</summary>
    public Tensor Shift { get; }

    /// <inheritdoc />
    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        var shape = new long[x.dim()];
        Array.Fill(shape, 1L);
        shape[1] = -1;
        return x * Scale.view(shape) + Shift.view(shape);
    }
}
