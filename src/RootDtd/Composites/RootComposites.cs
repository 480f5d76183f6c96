using RootDtd.Graph;
using RootDtd.Rules;
using RootDtd.Rules.RootInference;

namespace RootDtd.Composites;

/// <summary>
/// Composites of the constrained root-inference rule (docs/root-inference.md). All of them treat the other layers as
/// the spec's default composite does: max/average/adaptive pooling and the residual sum get the z-rule with the spec's
/// stabiliser (<see cref="NormRule"/> with <see cref="Stabilizer.Spec"/>), activations, flatten and dropout pass the
/// relevance, and BatchNorm is merged by the explainer's default canonizer.
/// </summary>
public static class RootComposites
{
    /// <summary>
    /// The spec's default composite <c>root</c>: <see cref="RootInferenceRule"/> on every conv/linear unit, the first
    /// included. The ablations are options (<paramref name="options"/>: steps, γ, each constraint, redistribution).
    /// </summary>
    public static Composite Root(RootInferenceOptions? options = null) =>
        WithSpecLayers(new Composite("root")).ForAllUnits(new RootInferenceRule(options));

    /// <summary>
    /// Depth split: with the n units numbered in forward order (<see cref="UnitInfo.Index"/>; ResNet: stem conv, then each
    /// block's conv1, conv2, downsample, then fc), units with index &lt; ⌊n·(1 − <paramref name="fraction"/>)⌋ get
    /// <paramref name="lower"/> (default z⁺, <see cref="ZPlusRule"/>) and the others the root rule. fraction = ½ is
    /// <c>root-upper-half</c>; fraction = 1 is <see cref="Root"/>; fraction = 0 puts the lower rule everywhere.
    /// </summary>
    public static Composite RootUpper(double fraction = 0.5, RootInferenceOptions? options = null, Rule? lower = null, string? name = null)
    {
        if (!(fraction >= 0 && fraction <= 1)) throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "The root fraction must lie in [0, 1].");
        var lowerRule = lower ?? new ZPlusRule();
        return WithSpecLayers(new Composite(name ?? (fraction == 0.5 ? "root-upper-half" : FormattableString.Invariant($"root-upper-{fraction:g3}"))))
            .ForUnits(u => u.Index < LowerCount(u.Count, fraction), lowerRule)
            .ForAllUnits(new RootInferenceRule(options));
    }

    /// <summary>The number of units that get the lower rule in <see cref="RootUpper"/>: ⌊n·(1 − fraction)⌋.</summary>
    public static int LowerCount(int unitCount, double fraction) => (int)Math.Floor(unitCount * (1 - fraction) + 1e-9);

    /// <summary><c>root-flat-input</c>: the Flat rule on the first unit (the input layer), the root rule on every other unit.</summary>
    public static Composite RootFlatInput(RootInferenceOptions? options = null) =>
        WithSpecLayers(new Composite("root-flat-input")).ForFirstUnit(new FlatRule()).ForAllUnits(new RootInferenceRule(options));

    /// <summary>Root-inference options from catalog parameters (steps, gamma, positive, gradient, domain, normalized; booleans as 0/1).</summary>
    public static RootInferenceOptions OptionsFrom(IReadOnlyDictionary<string, double> p)
    {
        ArgumentNullException.ThrowIfNull(p);
        var steps = p.GetValueOrDefault("steps", 20);
        if (steps < 0 || steps != Math.Floor(steps) || steps > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(p), steps, "steps must be a whole number ≥ 0.");
        return new RootInferenceOptions
        {
            Steps = (int)steps,
            Gamma = p.GetValueOrDefault("gamma", 1),
            PositiveConstraint = Flag(p, "positive"),
            GradientConstraint = Flag(p, "gradient"),
            DomainConstraint = Flag(p, "domain"),
            Redistribution = Flag(p, "normalized") ? RootRedistribution.Normalized : RootRedistribution.Direct,
        };
    }

    /// <summary>The catalog parameters of the root rule with their defaults.</summary>
    public static Dictionary<string, double> DefaultParameters() => new()
    {
        ["steps"] = 20,
        ["gamma"] = 1,
        ["positive"] = 1,
        ["gradient"] = 1,
        ["domain"] = 1,
        ["normalized"] = 1,
    };

    private static bool Flag(IReadOnlyDictionary<string, double> p, string key)
    {
        var v = p.GetValueOrDefault(key, 1);
        return v switch
        {
            0 => false,
            1 => true,
            _ => throw new ArgumentOutOfRangeException(nameof(p), v, $"'{key}' is a switch: give 0 or 1."),
        };
    }

    private static Composite WithSpecLayers(Composite c) => c
        .ForKind(NodeKind.MaxPool, new NormRule(Stabilizer.Spec))
        .ForKind(NodeKind.AvgPool, new NormRule(Stabilizer.Spec))
        .ForKind(NodeKind.Sum, new NormRule(Stabilizer.Spec))
        .ForKind(NodeKind.Activation, PassRule.Instance)
        .ForKind(NodeKind.Shape, PassRule.Instance)
        .ForKind(NodeKind.BatchNorm, PassRule.Instance);
}
