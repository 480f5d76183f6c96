using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;
using TI = RootDtd.Rules.TermInput;
using PT = RootDtd.Rules.ParameterTransform;

namespace RootDtd.Rules;

/// <summary>Which inputs of a multi-input node receive relevance under <see cref="ProportionalRule"/>.</summary>
public enum OperandSelection
{
    /// <summary>Every input shares the relevance (the uniform rule: each operand of a bilinear product gets its half).</summary>
    All,

    /// <summary>
    /// Inputs produced by a softmax (attention probabilities) are held constant and receive nothing; the others share
    /// (conservative propagation: <c>O = A·v</c> with A fixed is linear in v).
    /// </summary>
    HoldAttention,
}

/// <summary>
/// The multi-input rule engine, "vjp × input ÷ degree": for a node that is linear in each input with the others held
/// (<see cref="ILinearizedNode"/>), <c>R_k = x_k ⊙ A_kᵀ (R / stab(d·z))</c> for every active input k, where z is the
/// recorded output (bias included), <c>A_k</c> the node's linear map of input k and d its degree in the active inputs
/// (2 for a product of two activations, 1 otherwise), so that Σ_k R_k = Σ R for ε = 0 — a bilinear node never doubles
/// relevance. With <c>degreeInStabilizer: false</c> the division by d comes after the stabilised ratio
/// (<c>x_k ⊙ A_kᵀ (R / stab(z)) / d</c>, Chefer et al.'s matmul rule). On a sum it is the proportional split, on a
/// LayerNorm with σ held the LN-ε rule, on a linear unit the ε-rule.
/// </summary>
public sealed class ProportionalRule : Rule
{
    /// <summary>Creates the rule.</summary>
    /// <param name="stabilizer">The stabiliser of the ratio (default zennit's ε = 1e-6).</param>
    /// <param name="operands">Which inputs receive relevance.</param>
    /// <param name="degreeInStabilizer">Divide by stab(d·z) (true, LXT/AttnLRP) or by d·stab(z) (false, Chefer).</param>
    public ProportionalRule(Stabilizer? stabilizer = null, OperandSelection operands = OperandSelection.All, bool degreeInStabilizer = true)
    {
        Stabilizer = stabilizer ?? Stabilizer.Default;
        Operands = operands;
        DegreeInStabilizer = degreeInStabilizer;
    }

    /// <summary>The stabiliser.</summary>
    public Stabilizer Stabilizer { get; }

    /// <summary>Which inputs receive relevance.</summary>
    public OperandSelection Operands { get; }

    /// <summary>Whether the degree multiplies z inside the stabiliser.</summary>
    public bool DegreeInStabilizer { get; }

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        if (context.Node is not ILinearizedNode node)
            throw new ExplanationException($"{this} was assigned to '{context.Node.Name}' ({context.Node.Kind}), which is not linear in its inputs (not an ILinearizedNode).");
        var n = context.Inputs.Count;
        var active = new bool[n];
        for (var k = 0; k < n; k++)
            active[k] = Operands == OperandSelection.All || k >= context.InputKinds.Count || context.InputKinds[k] != NodeKind.Softmax;
        var result = new Tensor[n];
        if (!active.Any(a => a))
        {
            for (var k = 0; k < n; k++) result[k] = torch.zeros_like(context.Inputs[k]);
            return result;
        }
        var degree = node.Degree(active);
        var z = context.Output;
        Tensor ratio;
        if (degree == 1) ratio = Stabilizer.Divide(context.Relevance, z);
        else if (DegreeInStabilizer) ratio = Stabilizer.Divide(context.Relevance, z * degree);
        else ratio = Stabilizer.Divide(context.Relevance, z).div_(degree);
        for (var k = 0; k < n; k++)
        {
            var x = context.Inputs[k];
            result[k] = active[k] ? node.OperandMap(k, context.Inputs).Transpose(ratio, x.shape) * x : torch.zeros_like(x);
        }
        return result;
    }

    /// <inheritdoc />
    public override string ToString() =>
        $"Proportional({Stabilizer}{(Operands == OperandSelection.HoldAttention ? ", attention held" : "")}{(DegreeInStabilizer ? "" : ", ÷degree after")})";
}

/// <summary>
/// AttnLRP's softmax rule (Achtibat et al. 2024, Prop. 3.1: deep Taylor at the input with the bias absorbing):
/// <c>R(S) = S ⊙ (R(A) − A ⊙ Σ_j R(A)_j)</c> along the softmax axis, with S the softmax input and A its output.
/// Not conservative by design.
/// </summary>
public sealed class SoftmaxRule : Rule
{
    /// <summary>The shared instance.</summary>
    public static SoftmaxRule Instance { get; } = new();

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        var dim = context.Node is SoftmaxNode s ? s.Dimension : -1;
        var r = context.Relevance;
        var a = context.Output;
        return new[] { context.Input * (r - a * r.sum(dim, keepdim: true)) };
    }

    /// <inheritdoc />
    public override string ToString() => "Softmax(AttnLRP)";
}

/// <summary>
/// Held constant: no input receives relevance (the relevance of the node's output is absorbed there). Used for
/// parameters (class token, position embedding) and, in conservative propagation, for the attention softmax.
/// </summary>
public sealed class StopRule : Rule
{
    /// <summary>The shared instance.</summary>
    public static StopRule Instance { get; } = new();

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context) => context.Inputs.Select(t => torch.zeros_like(t)).ToArray();

    /// <inheritdoc />
    public override string ToString() => "Stop";
}

/// <summary>
/// Chefer et al.'s Linear/conv rule (their <c>relprop</c> with α = 1, β = 0): the bias ignored,
/// <c>s = R / sd(x⁺W⁺ᵀ + x⁻W⁻ᵀ)</c>, <c>R(x) = x⁺ ⊙ W⁺ᵀs + x⁻ ⊙ W⁻ᵀs</c> with their <c>safe_divide</c>.
/// </summary>
public sealed class CheferLinearRule : ModifiedGradientRule
{
    /// <summary>The shared instance.</summary>
    public static CheferLinearRule Instance { get; } = new();

    /// <summary>Creates the rule (stabiliser <see cref="Stabilizer.SafeDivide"/>).</summary>
    public CheferLinearRule() : base(Stabilizer.SafeDivide)
    {
        Groups = new[] { new RuleGroup(new[] { new RuleTerm(TI.Positive, PT.Positive, null), new RuleTerm(TI.Negative, PT.Negative, null) }) };
    }

    /// <inheritdoc />
    protected override IReadOnlyList<RuleGroup> Groups { get; }

    /// <summary>
    /// The same rule with three products instead of four: with W⁺ = (W + |W|)/2, W⁻ = (W − |W|)/2 and likewise for x,
    /// <c>x⁺W⁺ + x⁻W⁻ = (xW + |x||W|)/2</c>, where xW is the recorded output less the bias, and
    /// <c>x⁺ ⊙ W⁺ᵀs + x⁻ ⊙ W⁻ᵀs = x ⊙ (W/2)ᵀs + |x| ⊙ (|W|/2)ᵀs</c>. On a dense unit the second product of the
    /// denominator accumulates into the halved xW (one GEMM with β = α = ½) and both transposed products are one
    /// product with the stacked, halved weight <c>[W | |W|]/2</c> (halving is exact in binary floating point). On a
    /// non-negative input (ReLU domain) the generic engine's two products are cheaper and are used.
    /// </summary>
    public override Tensor[] Propagate(RuleContext context)
    {
        if (context.Domain == InputDomain.Relu) return base.Propagate(context);
        var unit = context.Unit;
        var x = context.Input;
        var xAbs = x.abs();
        var weightAbs = unit.GetParameter("w:abs", () => unit.Weight.abs());
        var output = context.Output;
        var dense = unit.Kind == LinearUnitKind.Dense && x.dim() >= 2 && output.is_contiguous();
        Tensor z;
        if (dense)
        {
            // z = ½(xW) + ½(|x||W|ᵀ): xW is a fresh copy of the recorded output less the bias, the product adds into it
            z = unit.Bias is null ? output.clone() : output - unit.Bias;
            z.view(-1, unit.OutputFeatures).addmm_(xAbs.reshape(-1, unit.InputFeatures), weightAbs.t(), beta: 0.5f, alpha: 0.5f);
        }
        else
        {
            var xw = unit.Bias is null ? output : output - BiasView(unit);
            z = unit.Forward(xAbs, weightAbs, null).add_(xw).mul_(0.5);
        }
        // Chefer's safe_divide, R / (z + 1e-9) and 0 where z = 0, with z (a temporary of this rule) shifted in place
        var zero = z.eq(0);
        var ratio = context.Relevance.div(z.add_(Stabilizer.Epsilon)).masked_fill_(zero, 0);
        if (dense)
        {
            var inputs = unit.InputFeatures;
            var halves = unit.GetParameter("w:chefer-halves", () => torch.cat(new[] { unit.Weight, weightAbs }, 1).mul_(0.5));
            var both = ratio.matmul(halves);
            return new[] { both.narrow(-1, 0, inputs).mul(x).addcmul_(both.narrow(-1, inputs, inputs), xAbs, 1) };
        }
        var result = unit.Transpose(ratio, unit.Weight, x.shape).mul_(x);
        result.add_(unit.Transpose(ratio, weightAbs, x.shape).mul_(xAbs));
        return new[] { result.mul_(0.5) };
    }

    /// <summary>The bias shaped to broadcast over the unit's output (last axis for dense units, the channel axis for convolutions).</summary>
    private static Tensor BiasView(LinearUnit unit)
    {
        var bias = unit.Bias!;
        if (!unit.IsConvolution) return bias;
        var shape = new long[unit.SpatialAxes + 2];
        Array.Fill(shape, 1L);
        shape[1] = -1;
        return bias.view(shape);
    }

    /// <inheritdoc />
    public override string ToString() => "CheferAlpha1Beta0";
}

/// <summary>
/// Chefer et al.'s residual addition (their <c>Add.relprop</c>), per sample: <c>s = sd(R, a + f)</c>,
/// <c>r_a = a ⊙ s</c>, <c>r_f = f ⊙ s</c>; with the sums S_a, S_f, S_r over one sample,
/// <c>R(a) = r_a ⊙ sd(sd(|S_a|, |S_a| + |S_f|)·S_r, S_a)</c> and likewise for f: the shares are renormalised so that
/// they sum to the incoming relevance in proportion to their absolute sizes.
/// </summary>
public sealed class CheferAddRule : Rule
{
    /// <summary>The shared instance.</summary>
    public static CheferAddRule Instance { get; } = new();

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        if (context.Inputs.Count != 2)
            throw new ExplanationException($"{this} needs a sum of two inputs; '{context.Node.Name}' has {context.Inputs.Count}.");
        var sd = Stabilizer.SafeDivide;
        var a = context.Inputs[0];
        var f = context.Inputs[1];
        var s = sd.Divide(context.Relevance, context.Output);
        var ra = a * s;
        var rf = f * s;
        var dims = Enumerable.Range(1, (int)a.dim() - 1).Select(d => (long)d).ToArray();
        Tensor Sum(Tensor t) => dims.Length == 0 ? t : t.sum(dims, keepdim: true);
        var sa = Sum(ra);
        var sf = Sum(rf);
        var sr = Sum(context.Relevance);
        var total = sa.abs() + sf.abs();
        return new[]
        {
            ra * sd.Divide(sd.Divide(sa.abs(), total) * sr, sa),
            rf * sd.Divide(sd.Divide(sf.abs(), total) * sr, sf),
        };
    }

    /// <inheritdoc />
    public override string ToString() => "CheferAdd";
}

/// <summary>
/// How the relevances that several consumers send to one node are combined. The default is their sum; a
/// method may replace it (Chefer et al.'s <c>Clone.relprop</c>: <c>x ⊙ Σ_b sd(R_b, x)</c>).
/// </summary>
public abstract class FanOutRule
{
    /// <summary>Combines the branch relevances <paramref name="branches"/> arriving at the output <paramref name="output"/> of <paramref name="node"/>.</summary>
    public abstract Tensor Combine(GraphNode node, Tensor output, IReadOnlyList<Tensor> branches);

    /// <inheritdoc />
    public abstract override string ToString();
}

/// <summary>Chefer et al.'s <c>Clone.relprop</c>: <c>R(x) = x ⊙ Σ_b sd(R_b, x)</c>.</summary>
public sealed class CheferCloneRule : FanOutRule
{
    /// <summary>The shared instance.</summary>
    public static CheferCloneRule Instance { get; } = new();

    /// <inheritdoc />
    public override Tensor Combine(GraphNode node, Tensor output, IReadOnlyList<Tensor> branches)
    {
        Tensor? s = null;
        foreach (var r in branches)
        {
            var q = Stabilizer.SafeDivide.Divide(r, output);
            s = s is null ? q : s.add_(q);
        }
        return output * s!;
    }

    /// <inheritdoc />
    public override string ToString() => "CheferClone";
}
