using RootDtd.Canonizers;
using RootDtd.Graph;
using RootDtd.Rules;
using RootDtd.Rules.RootInference;

namespace RootDtd.Composites;

/// <summary>Options of <c>cp-lrp</c> and <c>attn-lrp</c>.</summary>
public sealed record TransformerLrpOptions
{
    /// <summary>The stabiliser ε of every rule (default 1e-6, the ViT golden's; 0 = LXT's efficient mode).</summary>
    public double Epsilon { get; init; } = TransformerComposites.DefaultEpsilon;
}

/// <summary>
/// The transformer methods (catalog names <c>cp-lrp</c>, <c>attn-lrp</c>, <c>chefer</c>, <c>rollout</c>,
/// <c>raw-attention</c>), defined as in the ViT golden's MANIFEST.md; docs/transformers.md gives every formula.
/// </summary>
public static class TransformerComposites
{
    /// <summary>The ε of cp-lrp and attn-lrp (the golden's, zennit's stabiliser).</summary>
    public const double DefaultEpsilon = 1e-6;

    /// <summary>
    /// Conservative propagation (Ali et al. 2022, AH+LN): ε-rule on every Linear and the patch conv, LayerNorm with
    /// σ held (ε-rule on the linearised map), attention probabilities held (A·v linear in v; q and k get nothing),
    /// GELU passes, proportional residual and position-embedding adds; start = the target logit.
    /// </summary>
    public static Composite ConservativePropagation(double epsilon = DefaultEpsilon) => Lrp("cp-lrp", epsilon, attention: false);

    /// <summary><see cref="ConservativePropagation(double)"/> from typed options.</summary>
    public static Composite ConservativePropagation(TransformerLrpOptions options) => ConservativePropagation((options ?? new()).Epsilon);

    /// <summary><see cref="AttnLrp(double)"/> from typed options.</summary>
    public static Composite AttnLrp(TransformerLrpOptions options) => AttnLrp((options ?? new()).Epsilon);

    /// <summary>
    /// AttnLRP (Achtibat et al. 2024): as <see cref="ConservativePropagation(double)"/> plus the softmax rule
    /// (<see cref="SoftmaxRule"/>) and the uniform ε-rule on both matrix products (each operand gets half).
    /// ε = 0 is LXT's efficient (Gradient×Input) mode.
    /// </summary>
    public static Composite AttnLrp(double epsilon = DefaultEpsilon) => Lrp("attn-lrp", epsilon, attention: true);

    private static Composite Lrp(string name, double epsilon, bool attention)
    {
        if (!(epsilon >= 0) || double.IsInfinity(epsilon)) throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "ε must be a finite number ≥ 0.");
        var stabilizer = new Stabilizer(epsilon);
        var c = new Composite(name) { StartRelevance = StartRelevance.TargetLogit }.ForAllUnits(new EpsilonRule(epsilon));
        foreach (var (kind, rule) in ConservativeKindRules(stabilizer, attention)) c.ForKind(kind, rule);
        return c;
    }

    /// <summary>
    /// The rule of every transformer node kind under conservative propagation (<paramref name="attention"/> false:
    /// softmax held, products with the attention held) or AttnLRP (softmax rule, uniform products).
    /// </summary>
    public static IReadOnlyDictionary<NodeKind, Rule> ConservativeKindRules(Stabilizer stabilizer, bool attention)
    {
        var proportional = new ProportionalRule(stabilizer);
        return new Dictionary<NodeKind, Rule>
        {
            [NodeKind.Activation] = PassRule.Instance,
            [NodeKind.Sum] = proportional,
            [NodeKind.LayerNorm] = proportional,
            [NodeKind.Scale] = PassRule.Instance,
            [NodeKind.Parameter] = StopRule.Instance,
            [NodeKind.Concat] = GradientRule.Instance,
            [NodeKind.Rearrange] = GradientRule.Instance,
            [NodeKind.Select] = GradientRule.Instance,
            [NodeKind.Softmax] = attention ? SoftmaxRule.Instance : StopRule.Instance,
            [NodeKind.Product] = new ProportionalRule(stabilizer, attention ? OperandSelection.All : OperandSelection.HoldAttention),
        };
    }

    /// <summary>The node kinds of transformer graphs that CNN graphs do not have.</summary>
    public static IReadOnlyList<NodeKind> TransformerKinds { get; } = new[]
    {
        NodeKind.Parameter, NodeKind.Concat, NodeKind.Rearrange, NodeKind.Select, NodeKind.Scale, NodeKind.Softmax, NodeKind.LayerNorm, NodeKind.Product,
    };

    /// <summary>
    /// The VisionTransformer bundle: the default rule of every transformer node kind per method variant. LRP methods
    /// and the published root code get conservative propagation (zennit's ε = 1e-6), root inference the same with the
    /// spec's stabiliser (spec D8), the gradient baselines the gradient. (Activations and sums are the CNN bundle's.)
    /// </summary>
    internal static ModelBundle CreateBundle()
    {
        BundleRules Rules(Func<IReadOnlyDictionary<NodeKind, Rule>> kinds) => new(
            TransformerKinds.ToDictionary(k => k, k => (Func<Rule>)(() => kinds()[k])), () => Array.Empty<ICanonizer>());
        var conservative = Rules(() => ConservativeKindRules(Stabilizer.Default, attention: false));
        return new ModelBundle("VisionTransformer", "timm-layout Vision Transformers (RootDtd.Models.VisionTransformer) and graphs built from the same operations",
            TransformerKinds,
            new Dictionary<BundleVariant, BundleRules>
            {
                [BundleVariant.Lrp] = conservative,
                [BundleVariant.Gradient] = Rules(() => TransformerKinds.ToDictionary(k => k, _ => (Rule)GradientRule.Instance)),
                [BundleVariant.RootInference] = Rules(() => ConservativeKindRules(Stabilizer.Spec, attention: false)),
                [BundleVariant.PublishedRootInference] = conservative,
            });
    }

    /// <summary>
    /// Chefer, Gur &amp; Wolf (2021) transformer attribution: their LRP (α1β0 without bias on every Linear and the
    /// patch conv, renormalised adds, <c>Clone</c> at the residual forks, identity through LayerNorm, GELU and softmax,
    /// halves at both matrix products, their <c>safe_divide</c>) from a one-hot start, then the gradient-weighted
    /// rollout of the attention relevances (<see cref="CheferTokenMap"/>).
    /// </summary>
    public static Composite Chefer() => CheferWith("chefer", CheferLinearRule.Instance);

    /// <summary>
    /// <c>chefer-root</c>, the paper's "I.ViT + ours" (docs/transformers.md, D9): <see cref="Chefer"/> exactly, except
    /// that every Linear's α1β0 relprop is replaced by constrained root inference (<see cref="RootInferenceRule"/> with
    /// <paramref name="options"/>, default the spec's: 20 steps, γ = 1, positive map, normalized; qkv solved as q, k
    /// and v). The patch convolution keeps α1β0 (it is a Conv2d, not a Linear, and lies below every attention map, so
    /// it cannot change the token map). Start relevance one-hot, as in <c>chefer</c>. With <c>steps = 0</c> the root
    /// rule is bias-free z⁺ on the signed input, which is α1β0 with the bias ignored: the map of <c>chefer</c>.
    /// </summary>
    public static Composite CheferRoot(RootInferenceOptions? options = null) => CheferWith("chefer-root", CheferLinearRule.Instance, new RootInferenceRule(options));

    private static Composite CheferWith(string name, Rule unitRule, Rule? denseRule = null)
    {
        var c = new Composite(name) { StartRelevance = StartRelevance.OneHot, TokenMap = new CheferTokenMap() }.ForAllUnits(unitRule);
        if (denseRule is not null) c.ForDense(denseRule);
        return c
            .ForKind(NodeKind.Activation, PassRule.Instance)
            .ForKind(NodeKind.Sum, CheferAddRule.Instance)
            .ForKind(NodeKind.LayerNorm, PassRule.Instance)
            .ForKind(NodeKind.Scale, PassRule.Instance)
            .ForKind(NodeKind.Softmax, PassRule.Instance)
            .ForKind(NodeKind.Parameter, StopRule.Instance)
            .ForKind(NodeKind.Concat, GradientRule.Instance)
            .ForKind(NodeKind.Rearrange, GradientRule.Instance)
            .ForKind(NodeKind.Select, new NormRule(Stabilizer.SafeDivide))
            .ForKind(NodeKind.Product, new ProportionalRule(Stabilizer.SafeDivide, OperandSelection.All, degreeInStabilizer: false))
            // their Clone: where a tensor feeds a residual sum and a branch (block input, the tensor between the two adds)
            .ForFanOut((node, graph) => graph.Consumers(node.Index).Count > 1 && graph.Consumers(node.Index).Any(c => graph.Nodes[c].Kind == NodeKind.Sum),
                CheferCloneRule.Instance);
    }

    /// <summary>Attention rollout (Abnar &amp; Zuidema 2020); no backward walk.</summary>
    public static Composite Rollout() => AttentionOnly("rollout", new RolloutTokenMap());

    /// <summary>The head mean of the last block's class-token attention; no backward walk.</summary>
    public static Composite RawAttention() => AttentionOnly("raw-attention", new RawAttentionTokenMap());

    private static Composite AttentionOnly(string name, TokenMapMethod map)
    {
        // no backward walk runs; every node is marked held so that the rule table says so
        var c = new Composite(name) { StartRelevance = StartRelevance.OneHot, TokenMap = map }.ForAllUnits(StopRule.Instance);
        foreach (var kind in Enum.GetValues<NodeKind>())
            if (kind is not (NodeKind.Input or NodeKind.LinearUnit)) c.ForKind(kind, StopRule.Instance);
        return c;
    }
}
