using RootDtd.Graph;

namespace RootDtd.Composites;

/// <summary>Families of explanation methods: methods of a family share how their maps look and whether they conserve relevance.</summary>
public enum MethodFamily
{
    /// <summary>Classic LRP/DTD rules and composites (LRP-0/ε/γ, z⁺, αβ, w², flat, z^B and their combinations).</summary>
    Lrp,

    /// <summary>Constrained root inference (<c>root</c>, <c>root-upper-half</c>, <c>root-flat-input</c>).</summary>
    RootInference,

    /// <summary>The authors' published root-inference code (<c>root-published</c>): R-seeded convolutions, not conservative.</summary>
    PublishedRootInference,

    /// <summary>Gradient baselines and other methods that start from 1 at the target instead of the logit.</summary>
    Gradient,

    /// <summary>Token maps of transformers (Chefer's attribution, attention rollout, raw attention): not relevance sums.</summary>
    TokenMap,
    /// <summary>Attribution procedures that are not one rule walk: Grad-CAM(++), SmoothGrad, Integrated Gradients, occlusion, AGF (+ root).</summary>
    Attribution,

    /// <summary>A method RootDtd does not know (registered by an application): no assumption is made.</summary>
    Other,
}

/// <summary>Whether Σ input relevance should equal the explained logit.</summary>
public enum ConservationExpectation
{
    /// <summary>
    /// Conserves by construction, up to float rounding and the stabiliser: root inference on CNNs (<c>root</c>,
    /// <c>root-upper-half</c>, <c>root-flat-input</c>). Relevance leaves only at a conv/linear unit that cannot respond
    /// (an output with relevance whose fitted F(S) is 0: with the gradient constraint a unit without positive weights on
    /// its active inputs; measured on random nets: up to all of it on 3 of 24 samples), never elsewhere.
    /// </summary>
    Conserves,

    /// <summary>
    /// Conserves only approximately: biases (BatchNorm merged into convolutions gives every layer one) and stabilisers ε
    /// absorb relevance — LRP-0/ε/γ, z⁺, αβ, z^B and the composites built from them; w² (its denominator holds the bias²)
    /// and flat, whose relevance sent to inactive units is dropped by the pooling layers' z-rule; root inference on a
    /// transformer (LayerNorm, attention and the class token/position embedding absorb, see
    /// <see cref="MethodTraits.On(RelevanceGraph)"/>); Integrated Gradients (its path sum). For a logit near 0 the
    /// relative error can be large without anything being wrong.
    /// </summary>
    Approximately,

    /// <summary>Not conservative by construction (gradients, the published root-inference code): the sum is not compared.</summary>
    NotExpected,
}

/// <summary>What RootDtd knows about a method: its <see cref="MethodFamily"/> and <see cref="ConservationExpectation"/>.</summary>
/// <param name="Family">The family.</param>
/// <param name="Conservation">Whether Σ input relevance should equal the explained logit.</param>
public sealed record MethodTraits(MethodFamily Family, ConservationExpectation Conservation)
{
    /// <summary>
    /// The conservation claim as a bound: the largest |Σ R_input + Σ R_absorbed − start| / max(|start|, Σ|R_input|) the
    /// method's definition allows (relative to the relevance involved, so that a start near 0 does not inflate it), where R_absorbed counts only what the nodes named by <see cref="MayAbsorbAt"/> absorbed (the
    /// conservation report's <see cref="ConservationReport.Absorbed"/>). <see cref="ConservationExpectation.Conserves"/>:
    /// 1e-6 (the stabiliser's shift R·1e-9/|F| on small fitted F); rule walks with
    /// <see cref="ConservationExpectation.Approximately"/>: 1e-9 (the books close to rounding once biases, ε and pooling
    /// are counted); Integrated Gradients: 0.1 (the completeness error of the path sum at its default steps, measured ≤
    /// 0.017 on 50 random nets); ∞ when conservation is not expected. Checked by the random-architecture fuzz tests.
    /// </summary>
    public double ConservationTolerance => Conservation switch
    {
        ConservationExpectation.Conserves => 1e-6,
        ConservationExpectation.Approximately when Family == MethodFamily.Attribution => 0.1,
        ConservationExpectation.Approximately => 1e-9,
        _ => double.PositiveInfinity,
    };

    /// <summary>
    /// Whether the method's definition lets relevance leave the walk at a node of this kind: conv/linear units for
    /// <see cref="ConservationExpectation.Conserves"/> (units that cannot respond); also pooling (the z-rule drops what
    /// reaches an inactive unit), parameters, LayerNorm, softmax and products for
    /// <see cref="ConservationExpectation.Approximately"/> rule walks (biases, ε, the class token); nowhere for attribution
    /// procedures (their report compares Σ attribution with the reference directly) and for methods that make no claim.
    /// </summary>
    /// <param name="kind">The node's kind.</param>
    public bool MayAbsorbAt(NodeKind kind) => Conservation switch
    {
        ConservationExpectation.Conserves => kind == NodeKind.LinearUnit,
        ConservationExpectation.Approximately when Family == MethodFamily.Attribution => false,
        ConservationExpectation.Approximately => kind is not (NodeKind.Input or NodeKind.Activation or NodeKind.Shape or NodeKind.Sum or NodeKind.BatchNorm),
        _ => false,
    };

    /// <summary>
    /// The traits of this method on a given relevance graph: a method that <see cref="ConservationExpectation.Conserves"/>
    /// on CNNs only approximately conserves on a transformer (LayerNorm, softmax/attention products and the class
    /// token/position embedding parameters absorb or create relevance: root measured 1…10 relative error on a small ViT).
    /// Other traits are returned unchanged.
    /// </summary>
    /// <param name="graph">The explainer's graph (<see cref="Explainer.Graph"/>).</param>
    public MethodTraits On(RelevanceGraph graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        if (Conservation != ConservationExpectation.Conserves) return this;
        return graph.Nodes.Any(n => n.Kind is NodeKind.LayerNorm or NodeKind.Softmax or NodeKind.Product or NodeKind.Parameter)
            ? this with { Conservation = ConservationExpectation.Approximately }
            : this;
    }

    /// <summary>
    /// Relative conservation error |Σ R_input − start| / |start| above which a method has "lost" conservation and a
    /// warning is due: 0.5 for <see cref="ConservationExpectation.Conserves"/> (its errors are normally 1e-6 … 1e-2);
    /// 1000 for <see cref="ConservationExpectation.Approximately"/> (absorbed bias relevance over a logit near 0 gives
    /// errors of 10 or more; a thousand times the logit means relevance exploded); <see cref="double.PositiveInfinity"/>
    /// when conservation is not expected.
    /// </summary>
    public double WarningThreshold => Conservation switch
    {
        ConservationExpectation.Conserves => 0.5,
        ConservationExpectation.Approximately => 1000,
        _ => double.PositiveInfinity,
    };

    /// <summary>True when a relative conservation error of <paramref name="relativeError"/> deserves a warning (also for NaN/∞).</summary>
    /// <param name="relativeError">|Σ R_input − start| / |start|.</param>
    public bool LostConservation(double relativeError) =>
        Conservation != ConservationExpectation.NotExpected && !(relativeError <= WarningThreshold);

    /// <summary>One phrase for reports: "conserves relevance", "conserves relevance approximately (biases and ε absorb some)", "not conservative by construction".</summary>
    public string ConservationText => Conservation switch
    {
        ConservationExpectation.Conserves => "conserves relevance (except at units that cannot respond)",
        ConservationExpectation.Approximately => "conserves relevance approximately (biases and ε absorb some)",
        _ => Family == MethodFamily.Gradient ? "not conservative (a gradient method)" : "not conservative by construction",
    };

    private static readonly HashSet<string> AttributionProcedures = new(StringComparer.OrdinalIgnoreCase)
    {
        "gradcam", "gradcam-plus-plus", "smoothgrad", "occlusion", "agf", "agf-root",
    };

    private static readonly HashSet<string> Approximate = new(StringComparer.OrdinalIgnoreCase)
    {
        "wsquare", "flat", "lrp0", "epsilon", "gamma", "zplus", "alpha-beta", "zbox", "epsilon-gamma-box", "epsilon-plus-flat", "epsilon-alpha2-beta1", "combination",
    };

    /// <summary>
    /// The traits of a method or composite name (a catalog name such as <c>epsilon-plus-flat</c>, or a composite name;
    /// a <c>name:key=value</c> spec is read up to the colon). Unknown names are <see cref="MethodFamily.Other"/> with
    /// <see cref="ConservationExpectation.NotExpected"/> (no warning is made up for them).
    /// </summary>
    /// <param name="name">Method or composite name.</param>
    public static MethodTraits Of(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var colon = name.IndexOf(':', StringComparison.Ordinal);
        var bare = (colon < 0 ? name : name[..colon]).Trim();
        if (string.Equals(bare, "root-published", StringComparison.OrdinalIgnoreCase))
            return new(MethodFamily.PublishedRootInference, ConservationExpectation.NotExpected);
        // root-gated falls back to z⁺ (its b⁺ absorbs relevance) where the fit is not kept (issue 14)
        if (string.Equals(bare, "root-gated", StringComparison.OrdinalIgnoreCase))
            return new(MethodFamily.RootInference, ConservationExpectation.Approximately);
        if (bare.StartsWith("root", StringComparison.OrdinalIgnoreCase))
            return new(MethodFamily.RootInference, ConservationExpectation.Conserves);
        if (bare.StartsWith("gradient", StringComparison.OrdinalIgnoreCase))
            return new(MethodFamily.Gradient, ConservationExpectation.NotExpected);
        if (string.Equals(bare, "cp-lrp", StringComparison.OrdinalIgnoreCase))
            return new(MethodFamily.Lrp, ConservationExpectation.Approximately);
        if (string.Equals(bare, "attn-lrp", StringComparison.OrdinalIgnoreCase))
            return new(MethodFamily.Lrp, ConservationExpectation.NotExpected);
        if (bare.ToLowerInvariant() is "chefer" or "chefer-root" or "rollout" or "raw-attention")
            return new(MethodFamily.TokenMap, ConservationExpectation.NotExpected);
        // Integrated Gradients is complete (Σ attribution = f(x) − f(baseline), its conservation report's reference) up to the path sum
        if (string.Equals(bare, "integrated-gradients", StringComparison.OrdinalIgnoreCase))
            return new(MethodFamily.Attribution, ConservationExpectation.Approximately);
        if (AttributionProcedures.Contains(bare)) return new(MethodFamily.Attribution, ConservationExpectation.NotExpected);
        if (Approximate.Contains(bare)) return new(MethodFamily.Lrp, ConservationExpectation.Approximately);
        return new(MethodFamily.Other, ConservationExpectation.NotExpected);
    }

    /// <summary>
    /// The traits of a composite: by its name (<see cref="Of(string)"/>); a composite that starts from 1 at the target
    /// (<see cref="StartRelevance.OneHot"/>) is a <see cref="MethodFamily.Gradient"/> method whatever its name.
    /// </summary>
    /// <param name="composite">The composite.</param>
    public static MethodTraits Of(Composite composite)
    {
        ArgumentNullException.ThrowIfNull(composite);
        if (composite.TokenMap is not null) return new(MethodFamily.TokenMap, ConservationExpectation.NotExpected);
        if (composite.Procedure is not null && Of(composite.Name) is { Family: not MethodFamily.Other } known) return known;
        if (composite.StartRelevance == StartRelevance.OneHot) return new(MethodFamily.Gradient, ConservationExpectation.NotExpected);
        return Of(composite.Name);
    }
}
