using RootDtd.Graph;
using RootDtd.Rules;

namespace RootDtd.Composites;

/// <summary>
/// Ready-made composites. The classic ones follow zennit 1.0 (same layer assignment, ε = 1e-6, γ = 0.25,
/// stabiliser 1e-6) so that their results agree with zennit's; <see cref="Combination(CombinationOptions?)"/> follows Montavon et al. (2019).
/// </summary>
public static class Composites
{
    /// <summary>One rule on every conv/linear unit (zennit defaults elsewhere: <see cref="BundleVariant.Lrp"/>).</summary>
    public static Composite Uniform(string name, Rule rule) => new Composite(name).ForAllUnits(rule);

    /// <summary>zennit's ε for LRP-0 and for the dense layers of its composites: 1e-6.</summary>
    public const double ZennitEpsilon = 1e-6;

    /// <summary>LRP-0: ε-rule with ε = 1e-6 (zennit's LRP-0) on every unit.</summary>
    public static Composite Lrp0() => Uniform("lrp0", new EpsilonRule(ZennitEpsilon));

    /// <summary>LRP-ε on every unit (default ε: <see cref="EpsilonOptions.Epsilon"/>).</summary>
    public static Composite Epsilon(EpsilonOptions? options = null) => Uniform("epsilon", new EpsilonRule((options ?? new()).Epsilon));

    /// <summary>LRP-ε on every unit.</summary>
    public static Composite Epsilon(double epsilon) => Epsilon(new EpsilonOptions { Epsilon = epsilon });

    /// <summary>LRP-γ on every unit (default γ: <see cref="GammaOptions.Gamma"/>).</summary>
    public static Composite Gamma(GammaOptions? options = null) => Uniform("gamma", new GammaRule((options ?? new()).Gamma));

    /// <summary>LRP-γ on every unit.</summary>
    public static Composite Gamma(double gamma) => Gamma(new GammaOptions { Gamma = gamma });

    /// <summary>z⁺ on every unit.</summary>
    public static Composite ZPlus() => Uniform("zplus", new ZPlusRule());

    /// <summary>αβ on every unit (defaults: <see cref="AlphaBetaOptions"/>).</summary>
    public static Composite AlphaBeta(AlphaBetaOptions? options = null)
    {
        var o = options ?? new();
        return Uniform("alpha-beta", new AlphaBetaRule(o.Alpha, o.Beta));
    }

    /// <summary>αβ on every unit.</summary>
    public static Composite AlphaBeta(double alpha, double beta) => AlphaBeta(new AlphaBetaOptions { Alpha = alpha, Beta = beta });

    /// <summary>w² on every unit.</summary>
    public static Composite WSquare() => Uniform("wsquare", new WSquareRule());

    /// <summary>Flat on every unit.</summary>
    public static Composite Flat() => Uniform("flat", new FlatRule());

    /// <summary>z^B on the first unit (with the explainer's input bounds), LRP-0 (ε = 1e-6) on all others.</summary>
    public static Composite ZBox() => new Composite("zbox").ForFirstUnit(new ZBoxRule()).ForAllUnits(new EpsilonRule(ZennitEpsilon));

    /// <summary>zennit's EpsilonGammaBox: z^B on the first convolution, γ = 0.25 on the other convolutions, ε = 1e-6 on dense units.</summary>
    public static Composite EpsilonGammaBox(EpsilonGammaBoxOptions? options = null)
    {
        var o = options ?? new();
        return new Composite("epsilon-gamma-box").ForFirstUnit(new ZBoxRule(), convolutionOnly: true)
            .ForConvolutions(new GammaRule(o.Gamma)).ForDense(new EpsilonRule(o.Epsilon));
    }

    /// <summary>zennit's EpsilonGammaBox with the given ε (dense units) and γ (convolutions).</summary>
    public static Composite EpsilonGammaBox(double epsilon, double gamma) => EpsilonGammaBox(new EpsilonGammaBoxOptions { Epsilon = epsilon, Gamma = gamma });

    /// <summary>zennit's EpsilonPlusFlat: Flat on the first unit (conv or dense), z⁺ on convolutions, ε = 1e-6 on dense units.</summary>
    public static Composite EpsilonPlusFlat(EpsilonPlusFlatOptions? options = null) =>
        new Composite("epsilon-plus-flat").ForFirstUnit(new FlatRule()).ForConvolutions(new ZPlusRule()).ForDense(new EpsilonRule((options ?? new()).Epsilon));

    /// <summary>zennit's EpsilonPlusFlat with the given ε on dense units.</summary>
    public static Composite EpsilonPlusFlat(double epsilon) => EpsilonPlusFlat(new EpsilonPlusFlatOptions { Epsilon = epsilon });

    /// <summary>zennit's EpsilonAlpha2Beta1: α2β1 on convolutions, ε = 1e-6 on dense units.</summary>
    public static Composite EpsilonAlpha2Beta1(EpsilonAlpha2Beta1Options? options = null) =>
        new Composite("epsilon-alpha2-beta1").ForConvolutions(new AlphaBetaRule(2, 1)).ForDense(new EpsilonRule((options ?? new()).Epsilon));

    /// <summary>zennit's EpsilonAlpha2Beta1 with the given ε on dense units.</summary>
    public static Composite EpsilonAlpha2Beta1(double epsilon) => EpsilonAlpha2Beta1(new EpsilonAlpha2Beta1Options { Epsilon = epsilon });

    /// <summary>
    /// The guideline of Montavon et al. 2019 ("Layer-wise relevance propagation: an overview"; on VGG-16: LRP-0 on
    /// fc6–fc8, LRP-ε on conv5_1–conv5_3, LRP-γ on conv1_2–conv4_3, z^B on conv1_1). Exact assignment, for n
    /// convolution units in forward order: the first unit → z^B with the explainer's input bounds; the last ⌊n/4⌋
    /// convolutions → ε (<see cref="CombinationOptions.Epsilon"/>; VGG-16: ⌊13/4⌋ = 3 = conv5_x); the other convolutions → γ
    /// (<see cref="CombinationOptions.Gamma"/>); every other dense unit → LRP-0 (ε = 1e-6).
    /// </summary>
    public static Composite Combination(CombinationOptions? options = null)
    {
        var o = options ?? new();
        return new Composite("combination")
            .ForFirstUnit(new ZBoxRule())
            .ForDense(new EpsilonRule(ZennitEpsilon))
            .ForUnits(u => !u.IsDense && u.ConvolutionIndex >= u.ConvolutionCount - u.ConvolutionCount / 4, new EpsilonRule(o.Epsilon))
            .ForConvolutions(new GammaRule(o.Gamma));
    }

    /// <summary>The Montavon combination with the given ε (upper convolutions) and γ (lower convolutions).</summary>
    public static Composite Combination(double epsilon, double gamma) => Combination(new CombinationOptions { Epsilon = epsilon, Gamma = gamma });

    /// <summary>The gradient of the target logit with respect to the input (a baseline; not a relevance).</summary>
    /// <param name="start">Start from 1 at the target (the plain gradient, default) or from the target logit (the gradient scaled by the logit).</param>
    public static Composite Gradient(StartRelevance start = StartRelevance.OneHot) =>
        AllGradient(new Composite(start == StartRelevance.OneHot ? "gradient" : "gradient-logit-scaled") { StartRelevance = start, Variant = BundleVariant.Gradient });

    /// <summary>Gradient × Input: the input times the gradient of the target logit (a baseline).</summary>
    public static Composite GradientTimesInput() =>
        AllGradient(new Composite("gradient-x-input") { StartRelevance = StartRelevance.OneHot, MultiplyByInput = true, Variant = BundleVariant.Gradient });

    private static Composite AllGradient(Composite c) => c.ForAllUnits(GradientRule.Instance);
}
