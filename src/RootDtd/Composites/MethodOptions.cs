using RootDtd.Rules.RootInference;

namespace RootDtd.Composites;

/// <summary>The options of a method that takes no parameters.</summary>
public sealed record NoOptions
{
    /// <summary>The one instance.</summary>
    public static NoOptions Instance { get; } = new();
}

/// <summary>Options of <c>epsilon</c> (<see cref="Composites.Epsilon(EpsilonOptions?)"/>).</summary>
public sealed record EpsilonOptions
{
    /// <summary>The stabiliser ε of LRP-ε (default 0.25).</summary>
    public double Epsilon { get; init; } = 0.25;
}

/// <summary>Options of <c>gamma</c> (<see cref="Composites.Gamma(GammaOptions?)"/>).</summary>
public sealed record GammaOptions
{
    /// <summary>γ of LRP-γ (default 0.25, zennit's).</summary>
    public double Gamma { get; init; } = 0.25;
}

/// <summary>Options of <c>alpha-beta</c> (<see cref="Composites.AlphaBeta(AlphaBetaOptions?)"/>); α − β must be 1.</summary>
public sealed record AlphaBetaOptions
{
    /// <summary>Weight of the positive contributions (default 2).</summary>
    public double Alpha { get; init; } = 2;

    /// <summary>Weight of the negative contributions (default 1).</summary>
    public double Beta { get; init; } = 1;
}

/// <summary>Options of <c>epsilon-gamma-box</c> (<see cref="Composites.EpsilonGammaBox(EpsilonGammaBoxOptions?)"/>; zennit's defaults).</summary>
public sealed record EpsilonGammaBoxOptions
{
    /// <summary>ε on dense units (default 1e-6).</summary>
    public double Epsilon { get; init; } = Composites.ZennitEpsilon;

    /// <summary>γ on the convolutions after the first (default 0.25).</summary>
    public double Gamma { get; init; } = 0.25;
}

/// <summary>Options of <c>epsilon-plus-flat</c> (<see cref="Composites.EpsilonPlusFlat(EpsilonPlusFlatOptions?)"/>; zennit's default).</summary>
public sealed record EpsilonPlusFlatOptions
{
    /// <summary>ε on dense units (default 1e-6).</summary>
    public double Epsilon { get; init; } = Composites.ZennitEpsilon;
}

/// <summary>Options of <c>epsilon-alpha2-beta1</c> (<see cref="Composites.EpsilonAlpha2Beta1(EpsilonAlpha2Beta1Options?)"/>; zennit's default).</summary>
public sealed record EpsilonAlpha2Beta1Options
{
    /// <summary>ε on dense units (default 1e-6).</summary>
    public double Epsilon { get; init; } = Composites.ZennitEpsilon;
}

/// <summary>Options of <c>combination</c> (<see cref="Composites.Combination(CombinationOptions?)"/>; Montavon et al. 2019).</summary>
public sealed record CombinationOptions
{
    /// <summary>ε on the upper ⌊n/4⌋ convolutions (default 0.25).</summary>
    public double Epsilon { get; init; } = 0.25;

    /// <summary>γ on the lower convolutions (default 0.25).</summary>
    public double Gamma { get; init; } = 0.25;
}

/// <summary>Options of <c>root-upper-half</c> (<see cref="RootComposites.RootUpper(RootUpperOptions?, Rules.Rule?, string?)"/>).</summary>
public sealed record RootUpperOptions
{
    /// <summary>Fraction of the units (the upper ones) that get the root rule, in [0, 1] (default ½).</summary>
    public double Fraction { get; init; } = 0.5;

    /// <summary>Options of the root rule on those units (default the spec's).</summary>
    public RootInferenceOptions Root { get; init; } = RootInferenceOptions.Default;
}
