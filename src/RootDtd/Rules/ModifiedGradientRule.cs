using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Rules;

/// <summary>Which tensor a rule term feeds into the layer in place of the recorded input.</summary>
public enum TermInput
{
    /// <summary>The input x.</summary>
    Input,

    /// <summary>x⁺ = max(x, 0).</summary>
    Positive,

    /// <summary>x⁻ = min(x, 0).</summary>
    Negative,

    /// <summary>A tensor of ones (w², flat).</summary>
    Ones,

    /// <summary>The lower input bound l (z^B).</summary>
    Low,

    /// <summary>The upper input bound h (z^B).</summary>
    High,
}

/// <summary>Which output neurons a group of terms explains.</summary>
public enum OutputMask
{
    /// <summary>All outputs.</summary>
    All,

    /// <summary>Outputs whose unmodified pre-activation is &gt; 0.</summary>
    PositiveOutput,

    /// <summary>Outputs whose unmodified pre-activation is &lt; 0.</summary>
    NegativeOutput,
}

/// <summary>A derived layer parameter: a cache key and how to compute it from the effective weight or bias.</summary>
/// <param name="Key">Cache key, unique per distinct transformation (e.g. <c>w+</c>, <c>w:gamma+0.25</c>).</param>
/// <param name="Apply">Computes the derived parameter.</param>
public sealed record ParameterTransform(string Key, Func<Tensor, Tensor> Apply)
{
    /// <summary>
    /// How the bias is transformed when the transform of the bias depends on the weight too (bias, weight → derived
    /// bias); <c>null</c> (default): <see cref="Apply"/> on the bias alone.
    /// </summary>
    public Func<Tensor, Tensor, Tensor>? ApplyToBias { get; init; }

    /// <summary>The derived bias of a layer with this bias and weight.</summary>
    /// <param name="bias">The layer's bias.</param>
    /// <param name="weight">The layer's weight (output units along dimension 0).</param>
    public Tensor Bias(Tensor bias, Tensor weight) => ApplyToBias is null ? Apply(bias) : ApplyToBias(bias, weight);

    /// <summary>The parameter as it is.</summary>
    public static ParameterTransform Identity { get; } = new("id", t => t);

    /// <summary>max(p, 0).</summary>
    public static ParameterTransform Positive { get; } = new("+", t => t.clamp(min: 0));

    /// <summary>min(p, 0).</summary>
    public static ParameterTransform Negative { get; } = new("-", t => t.clamp(max: 0));

    /// <summary>p².</summary>
    public static ParameterTransform Square { get; } = new("sq", t => t * t);

    /// <summary>All ones.</summary>
    public static ParameterTransform Ones { get; } = new("ones", t => torch.ones_like(t));

    /// <summary>
    /// (p·s)² with a power of two s per output unit (dimension 0 of the weight, the same for its bias) that brings the
    /// unit's largest |w| or |b| into [1, 2) where it lies outside [2⁻³², 2³²]; elsewhere s = 1 and this is
    /// <see cref="Square"/>. Rules whose ratio per output unit is invariant under scaling that unit's weights (w²) use
    /// it: |w| ≈ 1e20 squared overflows float32 (and 1e-20 underflows to 0), which made w² return zero relevance.
    /// </summary>
    public static ParameterTransform ScaledSquare { get; } = new("sq:scaled", w => SquareScaled(w, RowScale(w, null)))
    {
        ApplyToBias = (b, w) => SquareScaled(b, RowScale(w, b)),
    };

    private const double ScaleThreshold = 4294967296.0; // 2^32

    /// <summary>The power of two per output unit, shaped to broadcast against <paramref name="weight"/> (or, with a bias, [out]).</summary>
    private static Tensor RowScale(Tensor weight, Tensor? bias)
    {
        var rows = weight.shape[0];
        var largest = weight.detach().abs().reshape(rows, -1).amax(new long[] { 1 });
        if (bias is not null) largest = torch.maximum(largest, bias.detach().abs().to(largest.dtype));
        var outside = largest.gt(ScaleThreshold).logical_or_(largest.lt(1 / ScaleThreshold).logical_and_(largest.gt(0)));
        // s = 2^-floor(log2 max): exact (a power of two), computed in float64 so that the exponent itself is exact
        var exponent = largest.to(ScalarType.Float64).log2_().floor_();
        var scale = torch.where(outside, torch.pow(2.0, exponent.neg()), torch.ones_like(exponent)).to(weight.dtype);
        if (bias is not null) return scale;
        var shape = new long[weight.dim()];
        Array.Fill(shape, 1L);
        shape[0] = rows;
        return scale.view(shape);
    }

    private static Tensor SquareScaled(Tensor p, Tensor scale)
    {
        var scaled = p * scale;
        return scaled.mul_(scaled);
    }
}

/// <summary>
/// One modified forward of a layer: <c>z_k = sign · f(input_k; weight_k, bias_k)</c>. A <c>null</c> bias transform
/// drops the bias.
/// </summary>
/// <param name="Input">What replaces the input.</param>
/// <param name="Weight">How the weight is modified.</param>
/// <param name="Bias">How the bias is modified, or <c>null</c> to drop it.</param>
/// <param name="Sign">+1 or −1: the term's sign in the group's sum.</param>
public sealed record RuleTerm(TermInput Input, ParameterTransform Weight, ParameterTransform? Bias, double Sign = 1);

/// <summary>
/// A group of terms whose sum <c>z = Σ_k z_k</c> is the denominator of one relevance ratio:
/// <c>R_in += Scale · Σ_k input_k ⊙ ∂z/∂input_k · (mask ⊙ R / stab(z))</c>.
/// </summary>
/// <param name="Terms">The modified forwards.</param>
/// <param name="Mask">Which outputs the group explains.</param>
/// <param name="Scale">Weight of the group (α, −β, …).</param>
public sealed record RuleGroup(IReadOnlyList<RuleTerm> Terms, OutputMask Mask = OutputMask.All, double Scale = 1);

/// <summary>
/// The shared engine of the classic conv/linear rules (zennit's "modified forward + gradient, times the input"):
/// a rule is a declarative list of <see cref="RuleGroup"/>s. For each group the engine evaluates the modified forwards,
/// divides the output relevance by their stabilised sum, takes the vector-Jacobian product of each (linear) term —
/// the layer's transposed map, which is what autograd would compute, without building a graph — and multiplies by
/// the modified inputs. A term that is the layer's plain forward reuses the recorded output instead of recomputing it. Terms that read x⁻ are skipped where the input is known to be non-negative (ReLU domain).
/// </summary>
public abstract class ModifiedGradientRule : Rule
{
    /// <summary>Creates the rule with a stabiliser.</summary>
    protected ModifiedGradientRule(Stabilizer? stabilizer) => Stabilizer = stabilizer ?? Stabilizer.Default;

    /// <summary>The stabiliser of the relevance ratios.</summary>
    public Stabilizer Stabilizer { get; }

    /// <summary>The groups of terms that define the rule.</summary>
    protected abstract IReadOnlyList<RuleGroup> Groups { get; }

    /// <summary>Bounds used by <see cref="TermInput.Low"/>/<see cref="TermInput.High"/> terms; default: the explainer's input bounds.</summary>
    protected virtual (Tensor? Low, Tensor? High) Bounds(RuleContext context) => (context.Low, context.High);

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        var unit = context.Unit;
        var x = context.Input;
        var nonNegative = context.Domain == InputDomain.Relu;
        Tensor? result = null;
        foreach (var group in Groups)
        {
            // 1. the modified forwards z_k = sign·f(input_k; W_k, b_k) and their sum z
            var terms = new List<(Tensor Input, Tensor Weight, RuleTerm Term)>();
            Tensor? z = null;
            var zOwned = false; // whether z is a temporary of this method (safe to update in place)
            foreach (var term in group.Terms)
            {
                if (nonNegative && term.Input == TermInput.Negative) continue;
                var input = SelectInput(term.Input, x, context, nonNegative);
                var w = unit.GetParameter("w:" + term.Weight.Key, () => term.Weight.Apply(unit.Weight));
                terms.Add((input, w, term));
                var b = term.Bias is null || unit.Bias is null ? null : unit.GetParameter("b:" + term.Bias.Key, () => term.Bias.Bias(unit.Bias, unit.Weight));
                // a term that is the layer's own forward is the recorded output: no second evaluation
                var zk = IsPlainForward(term, unit) ? context.Output : unit.Forward(input, w, b);
                if (term.Sign != 1) zk = zk * term.Sign;
                if (z is null)
                {
                    z = zk;
                    zOwned = !ReferenceEquals(zk, context.Output);
                }
                else if (zOwned) z.add_(zk);
                else
                {
                    z = z + zk;
                    zOwned = true;
                }
            }
            if (z is null) continue;

            // 2. the relevance ratio s = mask ⊙ R / stab(z)
            var ratio = Stabilizer.Divide(context.Relevance, z);
            ratio = group.Mask switch
            {
                OutputMask.PositiveOutput => ratio.masked_fill_(context.Output.le(0), 0),
                OutputMask.NegativeOutput => ratio.masked_fill_(context.Output.ge(0), 0),
                _ => ratio,
            };

            // 3. R_in += scale · Σ_k input_k ⊙ sign_k·W_kᵀ s — the vector-Jacobian product of each linear term,
            //    computed with the layer's transposed map (what autograd would run, without recording a graph)
            foreach (var (input, w, term) in terms)
            {
                // the transposed map returns a fresh tensor: scale it in place
                var contribution = unit.Transpose(ratio, w, x.shape).mul_(input);
                var factor = term.Sign * group.Scale;
                if (factor != 1) contribution.mul_(factor);
                result = result is null ? contribution : result.add_(contribution);
            }
        }
        return new[] { result ?? torch.zeros_like(x) };
    }

    private static bool IsPlainForward(RuleTerm term, LinearUnit unit) =>
        term.Input == TermInput.Input && ReferenceEquals(term.Weight, ParameterTransform.Identity)
        && (ReferenceEquals(term.Bias, ParameterTransform.Identity) || (term.Bias is null && unit.Bias is null));

    private Tensor SelectInput(TermInput which, Tensor x, RuleContext context, bool nonNegative) => which switch
    {
        TermInput.Input => x,
        TermInput.Positive => nonNegative ? x : x.clamp(min: 0),
        TermInput.Negative => x.clamp(max: 0),
        TermInput.Ones => torch.ones_like(x),
        TermInput.Low => Bound(Bounds(context).Low, x, "low"),
        TermInput.High => Bound(Bounds(context).High, x, "high"),
        _ => throw new ArgumentOutOfRangeException(nameof(which)),
    };

    private Tensor Bound(Tensor? bound, Tensor x, string which)
    {
        if (bound is null)
            throw new ExplanationException($"{this} needs input bounds ({which}): pass ExplainerOptions.InputLow/InputHigh, or give the rule its own bounds.");
        return bound.expand(x.shape).to(x.dtype);
    }
}
