using RootDtd.Composites;
using RootDtd.Rules.RootInference;

namespace RootDtd.Evaluation.Benchmark;

/// <summary>One method of a benchmark run: a display label and a <see cref="MethodCatalog"/> spec (<c>name[:key=value,…]</c>).</summary>
/// <param name="Label">Row label in the report.</param>
/// <param name="Spec">Catalog spec, read by <see cref="MethodSpec.Parse"/> (unless <see cref="Method"/> is set).</param>
public sealed record BenchmarkMethod(string Label, string Spec)
{
    /// <summary>The resolved method with its typed options, when known (set by <see cref="Of(string, MethodSpec)"/> and <see cref="BenchmarkMethods.Resolve"/>).</summary>
    public MethodSpec? Method { get; init; }

    /// <summary>A method whose label is its spec.</summary>
    /// <param name="spec">Catalog spec.</param>
    /// <returns>The method.</returns>
    public static BenchmarkMethod Of(string spec) => new(spec, spec);

    /// <summary>A method from a resolved spec (typed options; nothing is re-parsed).</summary>
    /// <param name="label">Row label.</param>
    /// <param name="method">The method and its options.</param>
    /// <returns>The method.</returns>
    public static BenchmarkMethod Of(string label, MethodSpec method) =>
        new(label, (method ?? throw new ArgumentNullException(nameof(method))).Text) { Method = method };

    /// <summary>Builds the composite (throws <see cref="MethodSpecException"/> when the catalog lacks the method or a parameter).</summary>
    /// <returns>The composite.</returns>
    public Composite CreateComposite() => (Method ?? MethodSpec.Parse(Spec)).CreateComposite();
}

/// <summary>A method that could not be run, with the reason (reported in the console and in the report).</summary>
/// <param name="Label">Row label.</param>
/// <param name="Spec">Requested spec.</param>
/// <param name="Reason">Why it was skipped.</param>
public sealed record SkippedMethod(string Label, string Spec, string Reason);

/// <summary>
/// An ablation of the root rule: a change of the typed options of a catalog method over <see cref="RootInferenceOptions"/>
/// (<see cref="Method"/>, default <c>root</c>), or — when <see cref="Spec"/> is set — a catalog spec read by
/// <see cref="MethodSpec.Parse"/> (for parameters that only some catalogs have; an unknown one skips the row with the reason).
/// </summary>
/// <param name="Label">Row label.</param>
/// <param name="Change">Turns the method's default options into the ablation's (ignored when <see cref="Spec"/> is set).</param>
public sealed record RootAblation(string Label, Func<RootInferenceOptions, RootInferenceOptions> Change)
{
    /// <summary>The catalog method whose options <see cref="Change"/> changes. Default <c>root</c>.</summary>
    public string Method { get; init; } = BenchmarkMethods.RootMethod;

    /// <summary>A catalog spec (<c>root:gelu=taylor2</c>) used instead of <see cref="Change"/>, or <see langword="null"/>.</summary>
    public string? Spec { get; init; }

    /// <summary>An ablation given as a catalog spec.</summary>
    /// <param name="label">Row label.</param>
    /// <param name="spec">Catalog spec, e.g. <c>chefer-root:steps=5</c>.</param>
    /// <returns>The ablation.</returns>
    public static RootAblation OfSpec(string label, string spec)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(spec);
        var name = spec.Split(':', 2)[0].Trim();
        return new RootAblation(label, o => o) { Method = name, Spec = spec };
    }
}

/// <summary>The method lists of the benchmark, the demo and the ablation study, and their resolution against the catalog.</summary>
public static class BenchmarkMethods
{
    /// <summary>Name of the root-inference method whose parameters the ablations change.</summary>
    public const string RootMethod = "root";

    /// <summary>The full run: the four root-inference variants, the classic rules and composites, Gradient×Input, and the attribution baselines (Grad-CAM(++), SmoothGrad, IG, occlusion, AGF, AGF+root).</summary>
    public static IReadOnlyList<BenchmarkMethod> Full { get; } = new[]
    {
        "root", "root-upper-half", "root-published", "root-flat-input",
        "lrp0", "epsilon", "gamma", "zplus", "wsquare", "zbox", "epsilon-plus-flat", "epsilon-gamma-box", "combination", "gradient-x-input",
        "gradcam", "gradcam-plus-plus", "smoothgrad", "integrated-gradients", "occlusion", "agf", "agf-root",
    }.Select(BenchmarkMethod.Of).ToArray();

    /// <summary>Name of the root-inference variant of Chefer's transformer attribution (D9 of docs/transformers.md).</summary>
    public const string CheferRootMethod = "chefer-root";

    /// <summary>
    /// The full run on a ViT: the token maps (rollout, raw attention, Chefer, chefer-root), the transformer LRP rules
    /// (cp-lrp, attn-lrp), root inference in the transformer (<c>root</c>, D8), Gradient×Input, Grad-CAM (on the last
    /// block's <c>norm1</c> patch tokens, docs/attribution-baselines.md) and the model-agnostic attribution baselines
    /// SmoothGrad, Integrated Gradients and occlusion (AGF is defined for CNNs only).
    /// </summary>
    public static IReadOnlyList<BenchmarkMethod> Vit { get; } = new[]
    {
        "rollout", "raw-attention", "chefer", CheferRootMethod, "cp-lrp", "attn-lrp", "root", "gradient-x-input", "gradcam",
        "smoothgrad", "integrated-gradients", "occlusion",
    }.Select(BenchmarkMethod.Of).ToArray();

    /// <summary>
    /// The demo on a ViT: the paper's Table 3 pair (Chefer, chefer-root), attention rollout and AttnLRP. Not the whole-ViT
    /// <c>root</c>: on the trained ViT its relevance explodes (docs/benchmark.md), and it is the slowest.
    /// </summary>
    public static IReadOnlyList<BenchmarkMethod> VitDemo { get; } = new[]
    {
        "chefer", CheferRootMethod, "rollout", "attn-lrp",
    }.Select(BenchmarkMethod.Of).ToArray();

    /// <summary>The ablations on a ViT: <c>root</c> steps 0/5/20, positive constraint off, GELU by second-order Taylor (D10); <c>chefer-root</c> steps 0/5/20.</summary>
    public static IReadOnlyList<RootAblation> VitAblations { get; } = new[]
    {
        RootAblation.OfSpec("root (default)", "root"),
        RootAblation.OfSpec("root steps = 0", "root:steps=0"),
        RootAblation.OfSpec("root steps = 5", "root:steps=5"),
        RootAblation.OfSpec("root steps = 20", "root:steps=20"),
        RootAblation.OfSpec("root positive constraint off", "root:positive=0"),
        RootAblation.OfSpec("root gelu = taylor2", "root:gelu=taylor2"),
        RootAblation.OfSpec("chefer-root (default)", CheferRootMethod),
        RootAblation.OfSpec("chefer-root steps = 0", CheferRootMethod + ":steps=0"),
        RootAblation.OfSpec("chefer-root steps = 5", CheferRootMethod + ":steps=5"),
        RootAblation.OfSpec("chefer-root steps = 20", CheferRootMethod + ":steps=20"),
    };

    /// <summary>The method list that <c>full</c> means for a model: <see cref="Vit"/> for a transformer, else <see cref="Full"/>.</summary>
    /// <param name="transformer">Whether the model is a Vision Transformer.</param>
    /// <returns>The list.</returns>
    public static IReadOnlyList<BenchmarkMethod> FullFor(bool transformer) => transformer ? Vit : Full;

    /// <summary>The ablations for a model: <see cref="VitAblations"/> for a transformer, else <see cref="Ablations"/>.</summary>
    /// <param name="transformer">Whether the model is a Vision Transformer.</param>
    /// <returns>The ablations.</returns>
    public static IReadOnlyList<RootAblation> AblationsFor(bool transformer) => transformer ? VitAblations : Ablations;

    /// <summary>The demo: the root rule and the strongest classic baselines.</summary>
    public static IReadOnlyList<BenchmarkMethod> Demo { get; } = new[]
    {
        "root", "root-published", "epsilon-plus-flat", "epsilon-gamma-box", "gradient-x-input",
    }.Select(BenchmarkMethod.Of).ToArray();

    /// <summary>The ablations of the root rule (paper's ablation table): steps, γ, each constraint off, direct redistribution.</summary>
    public static IReadOnlyList<RootAblation> Ablations { get; } = new RootAblation[]
    {
        new("root (default)", o => o),
        new("steps = 0", o => o with { Steps = 0 }),
        new("steps = 5", o => o with { Steps = 5 }),
        new("steps = 20", o => o with { Steps = 20 }),
        new("γ = 0.5", o => o with { Gamma = 0.5 }),
        new("γ = 1", o => o with { Gamma = 1 }),
        new("positive constraint off", o => o with { PositiveConstraint = false }),
        new("gradient constraint off", o => o with { GradientConstraint = false }),
        new("domain box off", o => o with { DomainConstraint = false }),
        new("direct redistribution", o => o with { Redistribution = RootRedistribution.Direct }),
    };

    /// <summary>Parses a comma-separated list of catalog specs (a spec's own parameters are separated by <c>;</c> or kept in one token: <c>epsilon:epsilon=0.1</c>).</summary>
    /// <param name="text">e.g. <c>root,epsilon:epsilon=0.1,gradient-x-input</c>; <c>full</c> or <c>demo</c> for the predefined lists.</param>
    /// <param name="transformer">Whether the model is a Vision Transformer (<c>full</c> and <c>demo</c> then mean <see cref="Vit"/> and <see cref="VitDemo"/>).</param>
    /// <returns>The methods.</returns>
    public static IReadOnlyList<BenchmarkMethod> ParseList(string text, bool transformer = false)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        var t = text.Trim();
        if (t.Equals("full", StringComparison.OrdinalIgnoreCase) || t.Equals("all", StringComparison.OrdinalIgnoreCase)) return FullFor(transformer);
        if (t.Equals("demo", StringComparison.OrdinalIgnoreCase)) return transformer ? VitDemo : Demo;
        // Split on commas that start a new method: a token without '=' or containing ':' starts a method.
        var methods = new List<string>();
        foreach (var token in t.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (methods.Count > 0 && token.Contains('=') && !token.Contains(':')) methods[^1] += "," + token;
            else methods.Add(token);
        }

        return methods.Select(BenchmarkMethod.Of).ToArray();
    }

    /// <summary>Resolves every method against the catalog (<see cref="BenchmarkMethod.Method"/> set); unknown ones are returned as skipped with the reason.</summary>
    /// <param name="methods">Requested methods.</param>
    /// <param name="skipped">Methods that cannot be built.</param>
    /// <returns>The methods that can be built.</returns>
    public static IReadOnlyList<BenchmarkMethod> Resolve(IEnumerable<BenchmarkMethod> methods, out IReadOnlyList<SkippedMethod> skipped)
    {
        ArgumentNullException.ThrowIfNull(methods);
        var ok = new List<BenchmarkMethod>();
        var bad = new List<SkippedMethod>();
        foreach (var m in methods)
        {
            try
            {
                ok.Add(m with { Method = m.Method ?? MethodSpec.Parse(m.Spec) });
            }
            catch (ArgumentException e)
            {
                bad.Add(new SkippedMethod(m.Label, m.Spec, e.Message));
            }
        }

        skipped = bad;
        return ok;
    }

    /// <summary>
    /// Turns the ablations into typed specs of the catalog's <c>root</c> method (<see cref="MethodSpec.Of{TOptions}"/>;
    /// nothing is parsed). Ablations whose options the method rejects, or a catalog without a <c>root</c> method over
    /// <see cref="RootInferenceOptions"/>, are skipped with the reason.
    /// </summary>
    /// <param name="ablations">Ablations (default <see cref="Ablations"/>).</param>
    /// <param name="skipped">Ablations that cannot be built.</param>
    /// <returns>Buildable ablation methods.</returns>
    public static IReadOnlyList<BenchmarkMethod> ResolveAblations(IEnumerable<RootAblation>? ablations, out IReadOnlyList<SkippedMethod> skipped)
    {
        ablations ??= Ablations;
        var ok = new List<BenchmarkMethod>();
        var bad = new List<SkippedMethod>();
        foreach (var a in ablations)
        {
            if (a.Spec is { } spec)
            {
                try
                {
                    ok.Add(BenchmarkMethod.Of(a.Label, MethodSpec.Parse(spec)));
                }
                catch (ArgumentException e)
                {
                    bad.Add(new SkippedMethod(a.Label, spec, e.Message));
                }
                continue;
            }

            if (MethodCatalog.TryGet(a.Method) is not ExplanationMethod<RootInferenceOptions> root)
            {
                bad.Add(new SkippedMethod(a.Label, a.Method, $"the catalog has no '{a.Method}' method with root-inference options"));
                continue;
            }

            try
            {
                ok.Add(BenchmarkMethod.Of(a.Label, MethodSpec.Of(root, a.Change(root.Default))));
            }
            catch (ArgumentException e)
            {
                bad.Add(new SkippedMethod(a.Label, a.Method, e.Message));
            }
        }

        skipped = bad;
        return ok;
    }
}
