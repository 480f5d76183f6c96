using RootDtd.Graph;
using RootDtd.Rules;
using RootDtd.Rules.RootInference;

namespace RootDtd.Composites;

/// <summary>
/// Composites of the constrained root-inference rule (docs/root-inference.md). All of them treat the other layers as
/// the spec's default composite does: max/average/adaptive pooling and the residual sum get the z-rule with the spec's
/// stabiliser (<see cref="NormRule"/> with <see cref="Stabilizer.Spec"/>), activations, flatten and dropout pass the
/// relevance, and BatchNorm is merged — the <see cref="BundleVariant.RootInference"/> rules of the model bundles.
/// </summary>
public static class RootComposites
{
    /// <summary>
    /// The spec's default composite <c>root</c>: <see cref="RootInferenceRule"/> on every conv/linear unit, the first
    /// included. The ablations are options (<paramref name="options"/>: steps, γ, each constraint, redistribution).
    /// </summary>
    public static Composite Root(RootInferenceOptions? options = null) =>
        WithSpecLayers("root").ForAllUnits(new RootInferenceRule(options));

    /// <summary>
    /// Depth split: with the n units numbered in forward order (<see cref="UnitInfo.Index"/>; ResNet: stem conv, then each
    /// block's conv1, conv2, downsample, then fc), units with index &lt; ⌊n·(1 − fraction)⌋ get
    /// <paramref name="lower"/> (default z⁺, <see cref="ZPlusRule"/>) and the others the root rule. fraction = ½ (the
    /// default of <see cref="RootUpperOptions.Fraction"/>) is <c>root-upper-half</c>; fraction = 1 is <see cref="Root"/>;
    /// fraction = 0 puts the lower rule everywhere.
    /// </summary>
    public static Composite RootUpper(RootUpperOptions? options = null, Rule? lower = null, string? name = null)
    {
        var o = options ?? new();
        var fraction = o.Fraction;
        if (!(fraction >= 0 && fraction <= 1)) throw new ArgumentOutOfRangeException(nameof(options), fraction, "The root fraction must lie in [0, 1].");
        var lowerRule = lower ?? new ZPlusRule();
        var isHalf = fraction == new RootUpperOptions().Fraction;
        return WithSpecLayers(name ?? (isHalf ? "root-upper-half" : FormattableString.Invariant($"root-upper-{fraction:g3}")))
            .ForUnits(u => u.Index < LowerCount(u.Count, fraction), lowerRule)
            .ForAllUnits(new RootInferenceRule(o.Root));
    }

    /// <summary>Depth split with the given fraction of root units (see <see cref="RootUpper(RootUpperOptions?, Rule?, string?)"/>).</summary>
    public static Composite RootUpper(double fraction, RootInferenceOptions? options = null, Rule? lower = null, string? name = null) =>
        RootUpper(new RootUpperOptions { Fraction = fraction, Root = options ?? RootInferenceOptions.Default }, lower, name);

    /// <summary>The number of units that get the lower rule in <see cref="RootUpper(RootUpperOptions?, Rule?, string?)"/>: ⌊n·(1−fraction)⌋.</summary>
    public static int LowerCount(int unitCount, double fraction) => (int)Math.Floor(unitCount * (1 - fraction) + 1e-9);

    /// <summary><c>root-flat-input</c>: the Flat rule on the first unit (the input layer), the root rule on every other unit.</summary>
    public static Composite RootFlatInput(RootInferenceOptions? options = null) =>
        WithSpecLayers("root-flat-input").ForFirstUnit(new FlatRule()).ForAllUnits(new RootInferenceRule(options));

    /// <summary>
    /// The method-spec parameters of the root rule (the paper's ablations): <c>steps</c>, <c>gamma</c>, and the switches
    /// <c>positive</c>, <c>gradient</c>, <c>domain</c>, <c>normalized</c> (1 = the spec's choice). Their defaults are
    /// <see cref="RootInferenceOptions.Default"/>'s.
    /// </summary>
    public static IReadOnlyList<MethodParameter<RootInferenceOptions>> Parameters { get; } = new[]
    {
        MethodParameter<RootInferenceOptions>.Count("steps", "descent steps (0: S = x)", o => o.Steps, (o, v) => o with { Steps = v }),
        MethodParameter<RootInferenceOptions>.Number("gamma", "initial step scale γ > 0, relative to the line-search step", o => o.Gamma, (o, v) => o with { Gamma = v }),
        MethodParameter<RootInferenceOptions>.Switch("positive", "positive contributions max(0, w·t) (0: the plain map W·T)", o => o.PositiveConstraint, (o, v) => o with { PositiveConstraint = v }),
        MethodParameter<RootInferenceOptions>.Switch("gradient", "gradient constraint: the signal stays in [0, x] on ReLU inputs", o => o.GradientConstraint, (o, v) => o with { GradientConstraint = v }),
        MethodParameter<RootInferenceOptions>.Switch("domain", "domain box (ReLU domain T ≥ 0, input bounds at the input)", o => o.DomainConstraint, (o, v) => o with { DomainConstraint = v }),
        MethodParameter<RootInferenceOptions>.Switch("normalized", "normalized redistribution (0: the paper's Eq. 8 read literally)",
            o => o.Redistribution == RootRedistribution.Normalized, (o, v) => o with { Redistribution = v ? RootRedistribution.Normalized : RootRedistribution.Direct }),
    };

    private static Composite WithSpecLayers(string name) => new(name) { Variant = BundleVariant.RootInference };
}
