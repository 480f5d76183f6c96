using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Graph;

/// <summary>
/// A node that is linear in each of its inputs when the other inputs (and any non-linear factor, such as
/// LayerNorm's σ) are held at their recorded values. The multi-input rule engine
/// (<see cref="Rules.ProportionalRule"/>) propagates relevance through it as "vjp × input ÷ degree".
/// </summary>
public interface ILinearizedNode
{
    /// <summary>The linear map of input <paramref name="input"/> with everything else held at <paramref name="recorded"/>.</summary>
    ILinearMap OperandMap(int input, IReadOnlyList<Tensor> recorded);

    /// <summary>
    /// The degree of homogeneity of the node's output in the inputs marked <paramref name="active"/> (the others held):
    /// Σ_k x_k ⊙ ∂z/∂x_k = degree · z (2 for a product of two activations, 1 for linear maps and sums).
    /// </summary>
    int Degree(IReadOnlyList<bool> active);
}

/// <summary>A linear map given by two delegates (its forward without offset and its transpose).</summary>
public sealed class DelegateLinearMap : ILinearMap
{
    private readonly Func<Tensor, Tensor> _apply;
    private readonly Func<Tensor, long[], Tensor> _transpose;

    /// <summary>Creates the map.</summary>
    public DelegateLinearMap(Func<Tensor, Tensor> apply, Func<Tensor, long[], Tensor> transpose)
    {
        _apply = apply ?? throw new ArgumentNullException(nameof(apply));
        _transpose = transpose ?? throw new ArgumentNullException(nameof(transpose));
    }

    /// <summary>The identity map.</summary>
    public static DelegateLinearMap Identity { get; } = new(x => x, (g, _) => g);

    /// <inheritdoc />
    public Tensor Apply(Tensor input) => _apply(input);

    /// <inheritdoc />
    public Tensor Transpose(Tensor outputGradient, long[] inputShape) => _transpose(outputGradient, inputShape);
}

/// <summary>Where the tokens of a transformer graph come from: prefix (class) tokens, then a patch grid.</summary>
/// <param name="PrefixTokens">Tokens before the patches (1: the class token).</param>
/// <param name="GridHeight">Patch rows.</param>
/// <param name="GridWidth">Patch columns (patch token = prefix + row·width + column).</param>
public sealed record TokenLayout(int PrefixTokens, int GridHeight, int GridWidth);

/// <summary>
/// A parameter or constant fed into the graph (class token, position embedding), expanded over the batch. Its only
/// input is the graph input, used for the batch size; it never sends relevance there: relevance arriving at a
/// parameter is absorbed and appears in the conservation report under the node's name.
/// </summary>
public sealed class ParameterNode : GraphNode, IDisposable
{
    /// <summary>Creates the node from a value of shape [1, …] (copied).</summary>
    public ParameterNode(string name, Tensor value, int batchReference = 0) : base(name, NodeKind.Parameter, new[] { batchReference })
    {
        if (value.dim() < 1 || value.shape[0] != 1)
            throw new ArgumentException($"Parameter node '{name}' needs a value of shape [1, …]; got [{string.Join(", ", value.shape)}].", nameof(value));
        using var _ = torch.no_grad();
        Value = value.detach().clone().DetachFromDisposeScope();
    }

    /// <summary>The value [1, …].</summary>
    public Tensor Value { get; }

    /// <inheritdoc />
    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var shape = (long[])Value.shape.Clone();
        shape[0] = inputs[0].shape[0];
        return Value.expand(shape);
    }

    /// <inheritdoc />
    public void Dispose() => Value.Dispose();
}

/// <summary>Concatenation of the inputs along <see cref="Dimension"/>.</summary>
public sealed class ConcatNode : GraphNode
{
    /// <summary>Creates the node.</summary>
    public ConcatNode(string name, IReadOnlyList<int> inputs, long dimension) : base(name, NodeKind.Concat, inputs)
    {
        Dimension = dimension;
    }

    /// <summary>The axis.</summary>
    public long Dimension { get; }

    /// <inheritdoc />
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => torch.cat(inputs.ToArray(), Dimension);
}

/// <summary>Multiplication by a constant factor.</summary>
public sealed class ScaleNode : GraphNode, ILinearizedNode
{
    /// <summary>Creates the node.</summary>
    public ScaleNode(string name, int input, double factor) : base(name, NodeKind.Scale, new[] { input })
    {
        Factor = factor;
    }

    /// <summary>The factor.</summary>
    public double Factor { get; }

    /// <inheritdoc />
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs[0] * Factor;

    /// <inheritdoc />
    public ILinearMap OperandMap(int input, IReadOnlyList<Tensor> recorded) => new DelegateLinearMap(x => x * Factor, (g, _) => g * Factor);

    /// <inheritdoc />
    public int Degree(IReadOnlyList<bool> active) => 1;
}

/// <summary>A softmax along <see cref="Dimension"/> (attention probabilities over keys: the last axis).</summary>
public sealed class SoftmaxNode : GraphNode
{
    /// <summary>Creates the node.</summary>
    public SoftmaxNode(string name, int input, long dimension = -1) : base(name, NodeKind.Softmax, new[] { input })
    {
        Dimension = dimension;
    }

    /// <summary>The axis.</summary>
    public long Dimension { get; }

    /// <inheritdoc />
    public override Tensor Forward(IReadOnlyList<Tensor> inputs) => F.softmax(inputs[0], Dimension);
}

/// <summary>
/// LayerNorm over the last axis: <c>y = w ⊙ (x − mean x)/σ + b</c> with <c>σ = √(var x + ε)</c> (biased variance).
/// Linearised with σ held at its recorded value (the centering stays part of the map).
/// </summary>
public sealed class LayerNormNode : GraphNode, ILinearizedNode, IDisposable
{
    /// <summary>Creates the node (parameters copied).</summary>
    public LayerNormNode(string name, int input, Tensor? weight, Tensor? bias, double epsilon) : base(name, NodeKind.LayerNorm, new[] { input })
    {
        using var _ = torch.no_grad();
        Weight = weight?.detach().clone().DetachFromDisposeScope();
        Bias = bias?.detach().clone().DetachFromDisposeScope();
        Epsilon = epsilon;
        Width = weight?.shape[0] ?? bias?.shape[0] ?? -1;
    }

    /// <summary>The affine weight w, or <c>null</c>.</summary>
    public Tensor? Weight { get; }

    /// <summary>The affine bias b, or <c>null</c>.</summary>
    public Tensor? Bias { get; }

    /// <summary>ε inside the square root.</summary>
    public double Epsilon { get; }

    /// <summary>The normalised width (−1 when the layer has no affine parameters).</summary>
    public long Width { get; }

    /// <inheritdoc />
    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var x = inputs[0];
        if (Width > 0 && (x.dim() < 1 || x.shape[^1] != Width))
            throw new ExplanationException($"LayerNorm '{Name}' normalises {Width} features; its input has shape [{string.Join(", ", x.shape)}].");
        return F.layer_norm(x, new[] { x.shape[^1] }, Weight, Bias, Epsilon);
    }

    /// <summary>σ = √(var x + ε) per position, with a trailing axis of size 1.</summary>
    public Tensor Sigma(Tensor x) => (x.var(-1, unbiased: false, keepdim: true) + Epsilon).sqrt();

    /// <inheritdoc />
    public ILinearMap OperandMap(int input, IReadOnlyList<Tensor> recorded)
    {
        var sigma = Sigma(recorded[0]);
        return new DelegateLinearMap(
            x =>
            {
                var y = (x - x.mean(new long[] { -1 }, keepdim: true)) / sigma;
                return Weight is null ? y : y * Weight;
            },
            (g, _) =>
            {
                var u = Weight is null ? g / sigma : g * Weight / sigma;
                return u - u.mean(new long[] { -1 }, keepdim: true);
            });
    }

    /// <inheritdoc />
    public int Degree(IReadOnlyList<bool> active) => 1;

    /// <inheritdoc />
    public void Dispose()
    {
        Weight?.Dispose();
        Bias?.Dispose();
    }
}

/// <summary>How a <see cref="ProductNode"/> multiplies its two inputs.</summary>
public enum ProductKind
{
    /// <summary><c>a · b</c> (batched matrix product, e.g. A·v).</summary>
    MatMul,

    /// <summary><c>a · bᵀ</c> over the last two axes (e.g. q·kᵀ).</summary>
    MatMulTransposed,

    /// <summary><c>a ⊙ b</c> (same shapes).</summary>
    Elementwise,
}

/// <summary>A product of two activations. Bilinear: linear in each operand with the other held.</summary>
public sealed class ProductNode : GraphNode, ILinearizedNode
{
    /// <summary>Creates the node.</summary>
    public ProductNode(string name, int left, int right, ProductKind product) : base(name, NodeKind.Product, new[] { left, right })
    {
        Product = product;
    }

    /// <summary>Which product.</summary>
    public ProductKind Product { get; }

    /// <inheritdoc />
    public override Tensor Forward(IReadOnlyList<Tensor> inputs)
    {
        var a = inputs[0];
        var b = inputs[1];
        switch (Product)
        {
            case ProductKind.Elementwise:
                if (!a.shape.SequenceEqual(b.shape))
                    throw new ExplanationException($"Product '{Name}' multiplies tensors of different shapes [{string.Join(", ", a.shape)}] and [{string.Join(", ", b.shape)}]; the graph describes equal shapes only.");
                return a * b;
            default:
                // libtorch's matmul terminates the process on a shape error instead of throwing: check first.
                var inner = Product == ProductKind.MatMul ? b.shape[^2] : b.shape[^1];
                if (a.dim() < 2 || b.dim() < 2 || a.shape[^1] != inner || a.dim() != b.dim())
                    throw new ExplanationException($"Product '{Name}' cannot multiply [{string.Join(", ", a.shape)}] by [{string.Join(", ", b.shape)}]{(Product == ProductKind.MatMulTransposed ? "ᵀ" : "")}.");
                return Product == ProductKind.MatMul ? a.matmul(b) : a.matmul(b.transpose(-2, -1));
        }
    }

    /// <inheritdoc />
    public ILinearMap OperandMap(int input, IReadOnlyList<Tensor> recorded)
    {
        var other = recorded[1 - input];
        return (Product, input) switch
        {
            (ProductKind.Elementwise, _) => new DelegateLinearMap(x => x * other, (g, _) => g * other),
            (ProductKind.MatMul, 0) => new DelegateLinearMap(x => x.matmul(other), (g, _) => g.matmul(other.transpose(-2, -1))),
            (ProductKind.MatMul, _) => new DelegateLinearMap(x => other.matmul(x), (g, _) => other.transpose(-2, -1).matmul(g)),
            (ProductKind.MatMulTransposed, 0) => new DelegateLinearMap(x => x.matmul(other.transpose(-2, -1)), (g, _) => g.matmul(other)),
            _ => new DelegateLinearMap(x => other.matmul(x.transpose(-2, -1)), (g, _) => g.transpose(-2, -1).matmul(other)),
        };
    }

    /// <inheritdoc />
    public int Degree(IReadOnlyList<bool> active) => active.Count(a => a);
}
