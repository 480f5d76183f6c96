using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RootDtd.Rules.RootInference;

/// <summary>An element-wise function σ with its first and second derivatives, for <see cref="TaylorActivationRule"/>.</summary>
/// <param name="Name">Name for descriptions (e.g. <c>GELU</c>).</param>
/// <param name="Value">σ(a).</param>
/// <param name="Derivative">σ'(a).</param>
/// <param name="SecondDerivative">σ''(a).</param>
public sealed record ElementwiseFunction(string Name, Func<Tensor, Tensor> Value, Func<Tensor, Tensor> Derivative, Func<Tensor, Tensor> SecondDerivative)
{
    private static readonly double InverseSqrt2 = 1 / Math.Sqrt(2);
    private static readonly double InverseSqrt2Pi = 1 / Math.Sqrt(2 * Math.PI);

    /// <summary>
    /// The exact GELU <c>σ(a) = a·Φ(a)</c> (Φ the standard normal CDF, φ its density): <c>σ' = Φ + a·φ</c>,
    /// <c>σ'' = φ·(2 − a²)</c>.
    /// </summary>
    public static ElementwiseFunction Gelu { get; } = new("GELU",
        a => nn.functional.gelu(a),
        a => Cdf(a) + a * Density(a),
        a => Density(a) * (2 - a * a));

    /// <summary>ReLU with torch's convention σ'(0) = 0; σ'' = 0.</summary>
    public static ElementwiseFunction Relu { get; } = new("ReLU",
        a => nn.functional.relu(a),
        a => a.gt(0).to(a.dtype),
        a => torch.zeros_like(a));

    private static Tensor Cdf(Tensor a) => (torch.erf(a * InverseSqrt2) + 1) * 0.5;

    private static Tensor Density(Tensor a) => torch.exp(a * a * -0.5) * InverseSqrt2Pi;

    /// <summary>The function of an activation module RootDtd knows (GELU with the exact form, ReLU), or <c>null</c>.</summary>
    public static ElementwiseFunction? Of(nn.Module? module) => module switch
    {
        GELU => Gelu,
        ReLU => Relu,
        _ => null,
    };
}

/// <summary>
/// Second-order Taylor expansion of an element-wise activation <c>y = σ(a)</c> at a root chosen with the gradient
/// constraint (docs/transformers.md, D10; option <c>gelu=taylor2</c> of the root composites). The root moves from
/// <c>a</c> towards σ's zero at 0 along <c>n(t) = (1 − t)·a</c>, <c>t ∈ {0, 1/32, …, 1}</c>; <c>t*</c> is the largest grid
/// value such that <c>|σ'(n(s)) − σ'(a)| ≤ τ</c> for every grid <c>s ≤ t</c> (τ = 0.15). With <c>n = n(t*)</c> and
/// <c>d = a − n</c>: <c>R_in = R · (σ'(n)·d + ½·σ''(n)·d²) / stab(σ(a) − σ(n))</c> (the spec stabiliser: where
/// <c>σ(a) = σ(n)</c> exactly the relevance is dropped), and <c>R_in = R</c> where <c>t* = 0</c>. For ReLU this is the
/// identity wherever <c>σ(a) ≠ 0</c>; for a quadratic σ it conserves exactly. Not conservative in general (the
/// remainder of the expansion is dropped).
/// </summary>
public sealed class TaylorActivationRule : Rule
{
    /// <summary>The grid size: t ∈ {0, 1/GridSteps, …, 1}.</summary>
    public const int GridSteps = 32;

    /// <summary>The default gradient-constraint tolerance τ (the authors' code).</summary>
    public const double DefaultTolerance = 0.15;

    /// <summary>Creates the rule.</summary>
    /// <param name="function">σ and its derivatives; <c>null</c>: taken from the node's module (GELU, ReLU).</param>
    /// <param name="tolerance">τ ≥ 0.</param>
    /// <param name="stabilizer">The stabiliser of the ratio (default the spec's, <see cref="Stabilizer.Spec"/>).</param>
    public TaylorActivationRule(ElementwiseFunction? function = null, double tolerance = DefaultTolerance, Stabilizer? stabilizer = null)
    {
        Stabilizer = stabilizer ?? Stabilizer.Spec;
        if (!(tolerance >= 0) || double.IsInfinity(tolerance)) throw new ArgumentOutOfRangeException(nameof(tolerance), tolerance, "τ must be a finite number ≥ 0.");
        Function = function;
        Tolerance = tolerance;
    }

    /// <summary>σ, or <c>null</c> when it is taken from the node's module.</summary>
    public ElementwiseFunction? Function { get; }

    /// <summary>The gradient-constraint tolerance τ.</summary>
    public double Tolerance { get; }

    /// <summary>The stabiliser of <c>σ(a) − σ(n)</c>.</summary>
    public Stabilizer Stabilizer { get; }

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var f = Function ?? ElementwiseFunction.Of(context.Node.Module)
            ?? throw new ExplanationException($"{this} at '{context.Node.Name}': the node's module ({context.Node.ModuleType?.Name ?? "none"}) is not an activation with known derivatives (GELU, ReLU); give the rule an ElementwiseFunction.");
        return new[] { Apply(f, context.Input, context.Relevance, Tolerance, Stabilizer) };
    }

    /// <summary>The rule on pre-activations <paramref name="a"/> with output relevance <paramref name="relevance"/> (same shape).</summary>
    public static Tensor Apply(ElementwiseFunction function, Tensor a, Tensor relevance, double tolerance = DefaultTolerance, Stabilizer? stabilizer = null)
    {
        stabilizer ??= Stabilizer.Spec;
        ArgumentNullException.ThrowIfNull(function);
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(relevance);
        if (!a.shape.SequenceEqual(relevance.shape))
            throw new ExplanationException($"Taylor rule: pre-activation [{string.Join(", ", a.shape)}] and relevance [{string.Join(", ", relevance.shape)}] differ in shape.");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var r = relevance.to(a.dtype);
        var slope = function.Derivative(a);
        // t* = the largest grid t with |σ'(n(s)) − σ'(a)| ≤ τ for every grid s ≤ t (t = 0 always qualifies)
        var tStar = torch.zeros_like(a);
        var ok = torch.ones_like(a, dtype: ScalarType.Bool);
        for (var k = 1; k <= GridSteps; k++)
        {
            using var step = torch.NewDisposeScope();
            var t = (double)k / GridSteps;
            var n = a * (1 - t);
            ok.logical_and_((function.Derivative(n) - slope).abs().le(tolerance));
            tStar.masked_fill_(ok, t);
        }
        var root = a * (1 - tStar);
        var d = a - root;
        var first = function.Derivative(root) * d;
        var second = function.SecondDerivative(root) * d * d * 0.5;
        var change = function.Value(a) - function.Value(root);
        var rIn = r * stabilizer.Divide(first + second, change);
        return torch.where(tStar.eq(0), r, rIn).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public override string ToString() => FormattableString.Invariant($"Taylor2({Function?.Name ?? "module"}, τ={Tolerance:g3}{(Stabilizer == Stabilizer.Spec ? "" : ", ε=" + Stabilizer.Epsilon.ToString("g3", System.Globalization.CultureInfo.InvariantCulture))})");
}
