using System.Globalization;

namespace RootDtd.Rules.RootInference;

/// <summary>How the relevance of a unit's outputs is sent to its inputs once the signal S is known (spec D6).</summary>
public enum RootRedistribution
{
    /// <summary>
    /// <c>R_in = S ⊙ ∇_S Σ_j q_j F_j(S)</c> with <c>q = R / F(S)</c> (spec stabiliser, exact zeros dropped): relevance is
    /// conserved exactly where <c>F(S) ≠ 0</c>. With 0 steps and the positive map this is z⁺ without the bias.
    /// </summary>
    Normalized,

    /// <summary>The paper's Eq. 8 read literally: <c>q = 1</c>, <c>R_in,i = Σ_j f_ji(S_i)</c>; conserves only as far as <c>F(S) ≈ R</c>.</summary>
    Direct,
}

/// <summary>What the root composites do at GELU activations (docs/transformers.md, D10).</summary>
public enum GeluTreatment
{
    /// <summary>Relevance passes unchanged (the spec's default for every activation).</summary>
    Pass,

    /// <summary>
    /// Second-order Taylor expansion at a root on the segment from the pre-activation towards 0, chosen with the gradient
    /// constraint (<see cref="TaylorActivationRule"/>).
    /// </summary>
    Taylor2,
}

/// <summary>
/// Options of the constrained root-inference rule (docs/root-inference.md). The defaults are the spec's:
/// 20 steps, γ = 1, positive map, gradient constraint, domain box, normalized redistribution.
/// </summary>
public sealed record RootInferenceOptions
{
    private readonly int _steps = 20;
    private readonly double _gamma = 1;
    private readonly double _epsilon = Stabilizer.Spec.Epsilon;

    /// <summary>The spec's defaults.</summary>
    public static RootInferenceOptions Default { get; } = new();

    /// <summary>Number of descent steps (≥ 0). 0 gives S = x (with the positive map and normalized redistribution: z⁺ without bias).</summary>
    public int Steps
    {
        get => _steps;
        init => _steps = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(Steps), value, "The number of steps must be ≥ 0.");
    }

    /// <summary>Initial step scale γ, relative to the exact line-search step (spec D5; γ ∈ (0, 2) is sensible, 1 is natural).</summary>
    public double Gamma
    {
        get => _gamma;
        init => _gamma = value > 0 && double.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(nameof(Gamma), value, "γ must be a finite number > 0.");
    }

    /// <summary>
    /// Spec D1: contributions are <c>f_ji(t) = max(0, w_ji·t)</c> (default). Off: the plain map <c>F(T) = W·T</c>
    /// (signed contributions; ill-conditioned with normalized redistribution).
    /// </summary>
    public bool PositiveConstraint { get; init; } = true;

    /// <summary>Spec D4: on ReLU-domain units the signal stays in <c>[0, x]</c> (the root in the linear piece of the ReLU). Off: <c>[0, ∞)</c>.</summary>
    public bool GradientConstraint { get; init; } = true;

    /// <summary>
    /// Spec D3: keep the signal in its domain box (ReLU domain: T ≥ 0; the network input: root within the input bounds).
    /// Off: no box at all on any unit (every unit is treated as the free domain; the gradient constraint then has no effect).
    /// </summary>
    public bool DomainConstraint { get; init; } = true;

    /// <summary>Spec D6: how relevance is redistributed (default <see cref="RootRedistribution.Normalized"/>).</summary>
    public RootRedistribution Redistribution { get; init; } = RootRedistribution.Normalized;

    /// <summary>
    /// The stabiliser ε of every ratio of the root composites (the unit's <c>R / F(S)</c> and the z-rule/proportional
    /// rules of the other layers): <c>R / (z ± ε)</c>, exact zeros dropped. Default the spec's 1e-9; 0 makes every ratio
    /// exact where its denominator is not 0 (conservation tests).
    /// </summary>
    public double Epsilon
    {
        get => _epsilon;
        init => _epsilon = value >= 0 && double.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(nameof(Epsilon), value, "ε must be a finite number ≥ 0.");
    }

    /// <summary>The stabiliser of <see cref="Epsilon"/> (<see cref="Stabilizer.Spec"/> by default).</summary>
    public Stabilizer Stabilizer => _epsilon == Stabilizer.Spec.Epsilon ? Stabilizer.Spec : new Stabilizer(_epsilon, DropZeros: true);

    /// <summary>
    /// What the root composites (<c>root</c>, <c>root-upper-half</c>, <c>root-flat-input</c>) do at GELU activations:
    /// pass the relevance (default) or <see cref="GeluTreatment.Taylor2"/>. Not used by the unit rule itself.
    /// </summary>
    public GeluTreatment Gelu { get; init; } = GeluTreatment.Pass;

    /// <summary>The spec name of <see cref="Gelu"/>: <c>pass</c> or <c>taylor2</c>.</summary>
    public string GeluName => Gelu == GeluTreatment.Taylor2 ? "taylor2" : "pass";

    /// <summary>Reads a spec name of <see cref="Gelu"/> (<c>pass</c>, <c>taylor2</c>; case-insensitive).</summary>
    /// <exception cref="ArgumentException">Another name.</exception>
    public static GeluTreatment ParseGelu(string name) => name?.Trim().ToLowerInvariant() switch
    {
        "pass" => GeluTreatment.Pass,
        "taylor2" => GeluTreatment.Taylor2,
        _ => throw new ArgumentException($"gelu must be 'pass' or 'taylor2'; got '{name}'.", nameof(name)),
    };

    /// <summary>A short description, e.g. <c>steps=20, γ=1, positive, gc, normalized</c>.</summary>
    public override string ToString() => string.Join(", ", new[]
    {
        "steps=" + Steps.ToString(CultureInfo.InvariantCulture),
        "γ=" + Gamma.ToString("g4", CultureInfo.InvariantCulture),
        PositiveConstraint ? "positive" : "plain",
        GradientConstraint ? "gc" : "no-gc",
        DomainConstraint ? null : "no-box",
        Redistribution == RootRedistribution.Normalized ? "normalized" : "direct",
        Epsilon == Stabilizer.Spec.Epsilon ? null : "ε=" + Epsilon.ToString("g3", CultureInfo.InvariantCulture),
        Gelu == GeluTreatment.Pass ? null : "gelu=" + GeluName,
    }.Where(s => s is not null));
}
