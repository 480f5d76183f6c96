using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;
using TI = RootDtd.Rules.TermInput;
using PT = RootDtd.Rules.ParameterTransform;

namespace RootDtd.Rules;

/// <summary>
/// LRP-ε: <c>R_i = x_i Σ_j w_ij R_j / stab_ε(z_j)</c> with <c>z = Wx + b</c>. ε → 0 gives LRP-0. The stabiliser
/// shifts every denominator by ε away from zero (zennit semantics).
/// </summary>
public sealed class EpsilonRule : ModifiedGradientRule
{
    /// <summary>Creates the rule; ε = 1e-6 is zennit's LRP-0.</summary>
    public EpsilonRule(double epsilon = 1e-6) : base(new Stabilizer(epsilon))
    {
        if (!(epsilon >= 0) || double.IsInfinity(epsilon)) throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "ε must be a finite number ≥ 0.");
        Epsilon = epsilon;
        Groups = new[] { new RuleGroup(new[] { new RuleTerm(TI.Input, PT.Identity, PT.Identity) }) };
    }

    /// <summary>The ε added to denominators.</summary>
    public double Epsilon { get; }

    /// <inheritdoc />
    protected override IReadOnlyList<RuleGroup> Groups { get; }

    /// <inheritdoc />
    public override string ToString() => $"Epsilon({Epsilon.ToString("g3", CultureInfo.InvariantCulture)})";
}

/// <summary>
/// z⁺ (zennit's generalised form, α=1 β=0 with negative inputs allowed):
/// <c>z = W⁺x⁺ + W⁻x⁻ + b⁺</c>, <c>R_i = x⁺_i Σ_j w⁺_ij R_j/z_j + x⁻_i Σ_j w⁻_ij R_j/z_j</c>.
/// </summary>
public sealed class ZPlusRule : ModifiedGradientRule
{
    /// <summary>Creates the rule.</summary>
    public ZPlusRule(Stabilizer? stabilizer = null) : base(stabilizer)
    {
        Groups = new[] { new RuleGroup(new[] { new RuleTerm(TI.Positive, PT.Positive, PT.Positive), new RuleTerm(TI.Negative, PT.Negative, null) }) };
    }

    /// <inheritdoc />
    protected override IReadOnlyList<RuleGroup> Groups { get; }

    /// <inheritdoc />
    public override string ToString() => "ZPlus";
}

/// <summary>
/// αβ-rule: <c>R = α·(z⁺-share) − β·(z⁻-share)</c> with the activating pairs (x⁺W⁺, x⁻W⁻, b⁺) and the inhibiting
/// pairs (x⁺W⁻, x⁻W⁺, b⁻); requires α − β = 1 and α, β ≥ 0.
/// </summary>
public sealed class AlphaBetaRule : ModifiedGradientRule
{
    /// <summary>Creates the rule.</summary>
    public AlphaBetaRule(double alpha = 2, double beta = 1, Stabilizer? stabilizer = null) : base(stabilizer)
    {
        if (!(alpha >= 0) || !(beta >= 0) || double.IsInfinity(alpha) || !(Math.Abs(alpha - beta - 1) <= 1e-12))
            throw new ArgumentException($"AlphaBeta needs α, β ≥ 0 and α − β = 1; got α={alpha}, β={beta}.");
        Alpha = alpha;
        Beta = beta;
        Groups = new[]
        {
            new RuleGroup(new[] { new RuleTerm(TI.Positive, PT.Positive, PT.Positive), new RuleTerm(TI.Negative, PT.Negative, null) }, Scale: alpha),
            new RuleGroup(new[] { new RuleTerm(TI.Positive, PT.Negative, PT.Negative), new RuleTerm(TI.Negative, PT.Positive, null) }, Scale: -beta),
        };
    }

    /// <summary>α.</summary>
    public double Alpha { get; }

    /// <summary>β.</summary>
    public double Beta { get; }

    /// <inheritdoc />
    protected override IReadOnlyList<RuleGroup> Groups { get; }

    /// <inheritdoc />
    public override string ToString() => FormattableString.Invariant($"AlphaBeta({Alpha:g3}, {Beta:g3})");
}

/// <summary>
/// LRP-γ in zennit 1.0's generalised form: outputs with z &gt; 0 are explained by
/// <c>(W+γW⁺)x⁺ + (W+γW⁻)x⁻ + (b+γb⁺)</c>, outputs with z &lt; 0 by <c>(W+γW⁻)x⁺ + (W+γW⁺)x⁻ + (b+γb⁻)</c>;
/// outputs with z = 0 pass nothing.
/// </summary>
public sealed class GammaRule : ModifiedGradientRule
{
    /// <summary>Creates the rule.</summary>
    public GammaRule(double gamma = 0.25, Stabilizer? stabilizer = null) : base(stabilizer)
    {
        if (!(gamma >= 0) || double.IsInfinity(gamma)) throw new ArgumentOutOfRangeException(nameof(gamma), gamma, "γ must be a finite number ≥ 0.");
        Gamma = gamma;
        var key = gamma.ToString("R", CultureInfo.InvariantCulture);
        _up = new PT("gamma+" + key, t => t + gamma * t.clamp(min: 0));
        _down = new PT("gamma-" + key, t => t + gamma * t.clamp(max: 0));
        Groups = new[]
        {
            new RuleGroup(new[] { new RuleTerm(TI.Positive, _up, _up), new RuleTerm(TI.Negative, _down, null) }, OutputMask.PositiveOutput),
            new RuleGroup(new[] { new RuleTerm(TI.Positive, _down, _down), new RuleTerm(TI.Negative, _up, null) }, OutputMask.NegativeOutput),
        };
    }

    private readonly PT _up;
    private readonly PT _down;

    /// <summary>γ.</summary>
    public double Gamma { get; }

    /// <inheritdoc />
    protected override IReadOnlyList<RuleGroup> Groups { get; }

    /// <summary>
    /// On the ReLU domain (x ≥ 0) both denominators follow from the recorded output z = Wx + b and ONE extra
    /// evaluation p = W⁺x + b⁺: (W+γW⁺)x + b+γb⁺ = z + γp and (W+γW⁻)x + b+γb⁻ = (1+γ)z − γp — one layer evaluation
    /// instead of two. Neither sum cancels on the outputs it explains (z &gt; 0 with p ≥ 0; z &lt; 0 with −γp ≤ 0), so the
    /// rounding stays that of the direct form. Elsewhere the declarative groups run.
    /// </summary>
    public override Tensor[] Propagate(RuleContext context)
    {
        if (context.Domain != InputDomain.Relu) return base.Propagate(context);
        var unit = context.Unit;
        var x = context.Input;
        var z = context.Output;
        var p = unit.Forward(x, unit.GetParameter("w:" + PT.Positive.Key, () => PT.Positive.Apply(unit.Weight)),
            unit.Bias is null ? null : unit.GetParameter("b:" + PT.Positive.Key, () => PT.Positive.Apply(unit.Bias)));
        // in place on fresh temporaries: on large activations allocation costs more than the arithmetic
        var up = (p * Gamma).add_(z);                 // z + γp
        var down = (z * (1 + Gamma)).add_(p, -Gamma); // z + γ(z − p)
        var sUp = Stabilizer.Divide(context.Relevance, up).masked_fill_(z.le(0), 0);
        var sDown = Stabilizer.Divide(context.Relevance, down).masked_fill_(z.ge(0), 0);
        var wUp = unit.GetParameter("w:" + _up.Key, () => _up.Apply(unit.Weight));
        var wDown = unit.GetParameter("w:" + _down.Key, () => _down.Apply(unit.Weight));
        return new[] { unit.Transpose(sUp, wUp, x.shape).add_(unit.Transpose(sDown, wDown, x.shape)).mul_(x) };
    }

    /// <inheritdoc />
    public override string ToString() => FormattableString.Invariant($"Gamma({Gamma:g3})");
}

/// <summary>w²-rule: <c>R_i = Σ_j w²_ij R_j / (Σ_i' w²_i'j + b²_j)</c> (the input is replaced by ones, the bias squared).</summary>
public sealed class WSquareRule : ModifiedGradientRule
{
    /// <summary>Creates the rule.</summary>
    public WSquareRule(Stabilizer? stabilizer = null) : base(stabilizer)
    {
        // per output unit the ratio w²/Σw² does not change when that unit's weights are scaled: the squares are taken
        // of weights scaled per unit where |w| is extreme (no float32 overflow at |w| ≈ 1e20), see ScaledSquare
        Groups = new[] { new RuleGroup(new[] { new RuleTerm(TI.Ones, PT.ScaledSquare, PT.ScaledSquare) }) };
    }

    /// <inheritdoc />
    protected override IReadOnlyList<RuleGroup> Groups { get; }

    /// <inheritdoc />
    public override string ToString() => "WSquare";
}

/// <summary>Flat rule: every input feeding an output gets an equal share (w² with all weights 1 and no bias).</summary>
public sealed class FlatRule : ModifiedGradientRule
{
    /// <summary>Creates the rule.</summary>
    public FlatRule(Stabilizer? stabilizer = null) : base(stabilizer)
    {
        Groups = new[] { new RuleGroup(new[] { new RuleTerm(TI.Ones, PT.Ones, null) }) };
    }

    /// <inheritdoc />
    protected override IReadOnlyList<RuleGroup> Groups { get; }

    /// <inheritdoc />
    public override string ToString() => "Flat";
}

/// <summary>
/// z^B-rule for bounded inputs x ∈ [l, h]: <c>z = Wx + b − (W⁺l + b⁺) − (W⁻h + b⁻)</c>,
/// <c>R_i = x_i Σ_j w_ij s_j − l_i Σ_j w⁺_ij s_j − h_i Σ_j w⁻_ij s_j</c> with <c>s = R / z</c>.
/// Uses the explainer's input bounds unless the rule is given its own.
/// </summary>
public sealed class ZBoxRule : ModifiedGradientRule
{
    private readonly Tensor? _low;
    private readonly Tensor? _high;

    /// <summary>Creates the rule; without arguments it uses <c>ExplainerOptions.InputLow/InputHigh</c>.</summary>
    public ZBoxRule(Tensor? low = null, Tensor? high = null, Stabilizer? stabilizer = null) : base(stabilizer)
    {
        if ((low is null) != (high is null)) throw new ArgumentException("Give both bounds or neither.");
        if (low is not null && high is not null)
        {
            using var scope = torch.NewDisposeScope();
            foreach (var (name, bound) in new[] { ("low", low), ("high", high) })
            {
                if (torch.isnan(bound).any().item<bool>()) throw new ArgumentException($"z^B's {name} bound contains NaN.", name);
                if (torch.isinf(bound).any().item<bool>()) throw new ArgumentException($"z^B's {name} bound contains ±∞; the box must be finite (use the valid pixel range).", name);
            }
        }
        _low = low?.detach().clone().DetachFromDisposeScope();
        _high = high?.detach().clone().DetachFromDisposeScope();
        Groups = new[]
        {
            new RuleGroup(new[]
            {
                new RuleTerm(TI.Input, PT.Identity, PT.Identity),
                new RuleTerm(TI.Low, PT.Positive, PT.Positive, -1),
                new RuleTerm(TI.High, PT.Negative, PT.Negative, -1),
            }),
        };
    }

    /// <summary>Creates the rule with scalar bounds.</summary>
    public ZBoxRule(double low, double high, Stabilizer? stabilizer = null) : this(torch.tensor(low, float64), torch.tensor(high, float64), stabilizer)
    {
        if (!(low < high)) throw new ArgumentException($"z^B needs low < high; got [{low}, {high}].");
    }

    /// <inheritdoc />
    protected override IReadOnlyList<RuleGroup> Groups { get; }

    /// <inheritdoc />
    protected override (Tensor? Low, Tensor? High) Bounds(RuleContext context) =>
        _low is null ? (context.Low, context.High) : (_low.to(context.Input.device), _high!.to(context.Input.device));

    /// <inheritdoc />
    public override string ToString() => "ZBox";
}
