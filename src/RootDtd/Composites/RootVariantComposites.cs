using RootDtd.Rules;
using RootDtd.Rules.RootInference;

namespace RootDtd.Composites;

/// <summary>Options of <c>root-gated</c> (<see cref="RootVariantComposites.RootGated(RootGatedOptions?)"/>).</summary>
public sealed record RootGatedOptions
{
    /// <summary>Largest relative residual ‖F(S) − R‖/‖R‖ at which a unit keeps the root redistribution for a sample (default 1: the residual of S = 0).</summary>
    public double Tau { get; init; } = 1;

    /// <summary>Options of the root fit (default the spec's).</summary>
    public RootInferenceOptions Root { get; init; } = RootInferenceOptions.Default;
}

/// <summary>Options of <c>root-channel</c> (<see cref="RootVariantComposites.RootChannel(RootChannelOptions?)"/>).</summary>
public sealed record RootChannelOptions
{
    /// <summary>Fit the shape c·R, c = ΣF(x)/|ΣR| (default true), or R itself.</summary>
    public bool Shape { get; init; } = true;

    /// <summary>Options of the fit (steps, γ, positive, normalized, ε, gelu; default the spec's).</summary>
    public RootInferenceOptions Root { get; init; } = RootInferenceOptions.Default;
}

/// <summary>
/// The root-inference variants of issue 14 (pre-registered in docs/research/root-variants.md, documented in
/// docs/root-inference.md "Variants (issue 14)"). Each uses the spec's layer rules of <c>root</c> (pooling, sums, start
/// relevance) and changes only the rule on the conv/linear units. The spec's <c>root</c> stays the faithful default.
/// </summary>
public static class RootVariantComposites
{
    /// <summary><c>root-gated</c>: <see cref="FitGatedRootRule"/> (root where its fit's relative residual ≤ τ, z⁺ elsewhere) on every unit.</summary>
    public static Composite RootGated(RootGatedOptions? options = null)
    {
        var o = options ?? new();
        return RootComposites.WithSpecLayers("root-gated", o.Root).ForAllUnits(new FitGatedRootRule(o.Root, o.Tau));
    }

    /// <summary><c>root-shape</c>: <see cref="ShapeFitRootRule"/> (the fit's target rescaled to the total of F(x)) on every unit.</summary>
    public static Composite RootShape(RootInferenceOptions? options = null) =>
        RootComposites.WithSpecLayers("root-shape", options).ForAllUnits(new ShapeFitRootRule(options));

    /// <summary><c>root-channel</c>: <see cref="ChannelRootRule"/> (S = m ⊙ x, one m ∈ [0, 1] per input channel) on every unit.</summary>
    public static Composite RootChannel(RootChannelOptions? options = null)
    {
        var o = options ?? new();
        return RootComposites.WithSpecLayers("root-channel", o.Root).ForAllUnits(new ChannelRootRule(o.Root, o.Shape));
    }

    /// <summary>The root parameters that <c>root-channel</c> reads (every <see cref="RootComposites.Parameters"/> but <c>gradient</c> and <c>domain</c>: m ∈ [0, 1] is the gradient constraint).</summary>
    public static IReadOnlyList<MethodParameter<RootInferenceOptions>> ChannelParameters =>
        RootComposites.Parameters.Where(p => p.Name is not ("gradient" or "domain")).ToList();
}
