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
        WithSpecLayers("root", options).ForAllUnits(new RootInferenceRule(options));

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
        return WithSpecLayers(name ?? (isHalf ? "root-upper-half" : FormattableString.Invariant($"root-upper-{fraction:g3}")), o.Root)
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
        WithSpecLayers("root-flat-input", options).ForFirstUnit(new FlatRule()).ForAllUnits(new RootInferenceRule(options));

    /// <summary>The <c>gelu</c> parameter (<see cref="RootInferenceOptions.Gelu"/>: <c>pass</c> or <c>taylor2</c>) of the root composites.</summary>
    public static MethodParameter<RootInferenceOptions> GeluParameter { get; } =
        MethodParameter<RootInferenceOptions>.Text("gelu", "at GELU activations: pass (relevance unchanged) or taylor2 (second-order Taylor at a gradient-constrained root, D10)",
            o => o.GeluName, (o, v) => o with { Gelu = RootInferenceOptions.ParseGelu(v) });

    /// <summary>
    /// The method-spec parameters of the root rule (the paper's ablations): <c>steps</c>, <c>gamma</c>, and the switches
    /// <c>positive</c>, <c>gradient</c>, <c>domain</c>, <c>normalized</c> (1 = the spec's choice), and the name-valued
    /// <c>gelu</c> (<c>pass</c> or <c>taylor2</c>, what the composite does at GELU activations). Their defaults are
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
        MethodParameter<RootInferenceOptions>.Number("epsilon", "stabiliser ε ≥ 0 of every ratio R/(z ± ε) (spec 1e-9; 0: exact ratios)", o => o.Epsilon, (o, v) => o with { Epsilon = v }),
        GeluParameter,
    };

    /// <summary>
    /// The root parameters of the unit rule only (<see cref="Parameters"/> without <c>gelu</c>), for methods that use the
    /// rule inside another procedure (chefer-root, agf-root).
    /// </summary>
    public static IReadOnlyList<MethodParameter<RootInferenceOptions>> UnitParameters => Parameters.Where(p => p.Name != GeluParameter.Name).ToList();

    /// <summary>
    /// The spec's layers (the bundles' <see cref="BundleVariant.RootInference"/> rules) and, with
    /// <see cref="GeluTreatment.Taylor2"/>, <see cref="TaylorActivationRule"/> on every GELU activation.
    /// </summary>
    internal static Composite WithSpecLayers(string name, RootInferenceOptions? options)
    {
        var o = options ?? RootInferenceOptions.Default;
        var c = new Composite(name) { Variant = BundleVariant.RootInference };
        if (o.Gelu == GeluTreatment.Taylor2)
            c.ForNodes((node, _) => node.Kind == NodeKind.Activation && node.Module is TorchSharp.Modules.GELU, new TaylorActivationRule(ElementwiseFunction.Gelu, stabilizer: o.Stabilizer));
        if (o.Stabilizer != Stabilizer.Spec)
        {
            // the bundles' root rules with another ε: the z-rule at pooling and sums, the transformer kinds' proportional rules
            var norm = new NormRule(o.Stabilizer);
            c.ForKind(NodeKind.Sum, norm).ForKind(NodeKind.MaxPool, norm).ForKind(NodeKind.AvgPool, norm);
            foreach (var (kind, rule) in TransformerComposites.ConservativeKindRules(o.Stabilizer, attention: false))
                if (kind is not NodeKind.Sum) c.ForKind(kind, rule);
        }
        return c;
    }
}
