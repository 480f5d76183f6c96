using RootDtd.Canonizers;
using RootDtd.Graph;
using RootDtd.Rules;
using RootDtd.Rules.RootInference.Published;

namespace RootDtd.Composites;

/// <summary>
/// The kind of method a composite belongs to, which picks, in every <see cref="ModelBundle"/>, the default rule of each
/// node kind that is not a conv/linear unit (pooling, activations, sums, …) and the canonizers. A method names its
/// variant (<see cref="Composite.Variant"/>); new families of methods create their own (<c>new BundleVariant("attn-lrp")</c>).
/// </summary>
/// <param name="Name">The variant's name (compared ordinally).</param>
public sealed record BundleVariant(string Name)
{
    /// <summary>The LRP/DTD rules with zennit's defaults (ε, γ, z⁺, αβ, …, their composites).</summary>
    public static BundleVariant Lrp { get; } = new("lrp");

    /// <summary>The gradient baselines: every node passes the gradient.</summary>
    public static BundleVariant Gradient { get; } = new("gradient");

    /// <summary>The constrained root-inference composites (the spec's default layers).</summary>
    public static BundleVariant RootInference { get; } = new("root");

    /// <summary>The published root-inference code (<c>root-published</c>).</summary>
    public static BundleVariant PublishedRootInference { get; } = new("root-published");

    /// <inheritdoc />
    public override string ToString() => Name;
}

/// <summary>What a bundle gives the methods of one <see cref="BundleVariant"/>: a rule per node kind and the canonizers.</summary>
/// <param name="KindRules">The rule of every node kind (a factory: one rule per composite, shared by its nodes).</param>
/// <param name="Canonizers">Creates the canonizers the variant runs with.</param>
public sealed record BundleRules(IReadOnlyDictionary<NodeKind, Func<Rule>> KindRules, Func<IReadOnlyList<ICanonizer>> Canonizers);

/// <summary>
/// Model support for one family of architectures, as LXT keeps one patch map per model family: the node kinds its
/// graphs contain, and, for every method variant, the default rule of each of those kinds and the canonizers. Module
/// adapters of the family are registered with <see cref="ModuleAdapters"/> (<see cref="RegisterAdapters"/>).
/// A node kind that no bundle gives a rule for a method's variant is an error at rule resolution, never a silent default.
/// </summary>
public sealed class ModelBundle
{
    /// <summary>Creates a bundle.</summary>
    /// <param name="family">Family name, e.g. <c>CNN</c>.</param>
    /// <param name="description">One line: which models.</param>
    /// <param name="nodeKinds">The node kinds (besides the input and conv/linear units) that the family's graphs contain.</param>
    /// <param name="variants">The rules per method variant; each must give a rule for every kind of <paramref name="nodeKinds"/>.</param>
    /// <param name="registerAdapters">Registers the family's module adapters (null: they are built into <see cref="ModuleAdapters.CreateBuiltIn"/>).</param>
    public ModelBundle(string family, string description, IEnumerable<NodeKind> nodeKinds, IReadOnlyDictionary<BundleVariant, BundleRules> variants,
        Action<ModuleAdapters>? registerAdapters = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(family);
        ArgumentNullException.ThrowIfNull(nodeKinds);
        ArgumentNullException.ThrowIfNull(variants);
        Family = family;
        Description = description ?? string.Empty;
        NodeKinds = nodeKinds.Distinct().ToArray();
        if (NodeKinds.Any(k => k is NodeKind.Input or NodeKind.LinearUnit))
            throw new ArgumentException("The input and conv/linear units are not assigned by kind; leave them out of nodeKinds.", nameof(nodeKinds));
        Variants = new Dictionary<BundleVariant, BundleRules>(variants);
        foreach (var (variant, rules) in Variants)
        {
            var missing = NodeKinds.Where(k => !rules.KindRules.ContainsKey(k)).ToList();
            if (missing.Count > 0)
                throw new ArgumentException($"Bundle '{family}', variant '{variant}': no rule for {string.Join(", ", missing)}.", nameof(variants));
        }
        RegisterAdapters = registerAdapters;
    }

    /// <summary>The family's name.</summary>
    public string Family { get; }

    /// <summary>One line: which models.</summary>
    public string Description { get; }

    /// <summary>The node kinds its graphs contain (besides the input and the conv/linear units).</summary>
    public IReadOnlyList<NodeKind> NodeKinds { get; }

    /// <summary>Rules and canonizers per method variant.</summary>
    public IReadOnlyDictionary<BundleVariant, BundleRules> Variants { get; }

    /// <summary>Registers the family's module adapters, or <c>null</c> when they are built into <see cref="ModuleAdapters.CreateBuiltIn"/>.</summary>
    public Action<ModuleAdapters>? RegisterAdapters { get; }

    /// <inheritdoc />
    public override string ToString() => Family;
}

/// <summary>
/// The model bundles RootDtd knows: the one place where the default rule of every non-unit node kind lives, per method
/// variant. <see cref="Composite"/> asks <see cref="KindRule"/> for every node its mappings do not cover.
/// To support a new family, build a <see cref="ModelBundle"/> (its node kinds, a <see cref="BundleRules"/> for every
/// variant its methods use) and <see cref="Register"/> it; the catalog test then checks that every kind has a rule in
/// every catalog method (docs/architecture.md, "Model bundles").
/// </summary>
public static class ModelBundles
{
    private static readonly List<ModelBundle> _bundles = new() { CreateCnn(), TransformerComposites.CreateBundle() };

    /// <summary>Sequential CNNs, ResNet and VGG: conv/linear units, activations, max/average pooling, flatten/dropout/identity, residual sums, BatchNorm.</summary>
    public static ModelBundle Cnn => All[0];

    /// <summary>Vision Transformers: parameters, concatenation, rearranges and selections, scaling, softmax, LayerNorm, products (activations and sums as the CNN bundle).</summary>
    public static ModelBundle VisionTransformer => All[1];

    /// <summary>Every registered bundle, in registration order.</summary>
    public static IReadOnlyList<ModelBundle> All
    {
        get
        {
            lock (_bundles) return _bundles.ToList();
        }
    }

    /// <summary>Registers a bundle (family names unique). A kind it shares with an earlier bundle keeps the earlier bundle's rule.</summary>
    public static void Register(ModelBundle bundle)
    {
        ArgumentNullException.ThrowIfNull(bundle);
        lock (_bundles)
        {
            if (_bundles.Any(b => string.Equals(b.Family, bundle.Family, StringComparison.OrdinalIgnoreCase)))
                throw new ArgumentException($"A bundle for the family '{bundle.Family}' is already registered.", nameof(bundle));
            _bundles.Add(bundle);
        }
    }

    /// <summary>A new rule for nodes of <paramref name="kind"/> in methods of <paramref name="variant"/> (the first bundle that defines one), or <c>null</c>.</summary>
    public static Rule? KindRule(BundleVariant variant, NodeKind kind)
    {
        ArgumentNullException.ThrowIfNull(variant);
        foreach (var b in All)
            if (b.Variants.TryGetValue(variant, out var rules) && rules.KindRules.TryGetValue(kind, out var create))
                return create();
        return null;
    }

    /// <summary>The canonizers of <paramref name="variant"/>: those of every bundle that has the variant, once per canonizer name.</summary>
    public static IReadOnlyList<ICanonizer> Canonizers(BundleVariant variant)
    {
        ArgumentNullException.ThrowIfNull(variant);
        var list = new List<ICanonizer>();
        foreach (var b in All)
            if (b.Variants.TryGetValue(variant, out var rules))
                foreach (var c in rules.Canonizers())
                    if (!list.Any(x => x.Name == c.Name)) list.Add(c);
        return list;
    }

    private static ModelBundle CreateCnn()
    {
        IReadOnlyList<ICanonizer> MergeBatchNorm() => new ICanonizer[] { new BatchNormMerger() };
        var kinds = new[] { NodeKind.Activation, NodeKind.MaxPool, NodeKind.AvgPool, NodeKind.Shape, NodeKind.Sum, NodeKind.BatchNorm };
        // zennit's defaults: activations, reshapes and unmerged BatchNorm pass, average pooling and residual sums use the
        // z-rule (NormRule), max pooling passes the gradient (winner takes all)
        var lrp = new BundleRules(new Dictionary<NodeKind, Func<Rule>>
        {
            [NodeKind.Activation] = () => PassRule.Instance,
            [NodeKind.Shape] = () => PassRule.Instance,
            [NodeKind.BatchNorm] = () => PassRule.Instance,
            [NodeKind.AvgPool] = () => new NormRule(),
            [NodeKind.Sum] = () => new NormRule(),
            [NodeKind.MaxPool] = () => GradientRule.Instance,
        }, MergeBatchNorm);
        // the gradient baselines: every kind, custom operations (Other) included, passes the gradient
        var gradient = new BundleRules(kinds.Append(NodeKind.Other).ToDictionary(k => k, _ => (Func<Rule>)(() => GradientRule.Instance)), MergeBatchNorm);
        // the root-inference spec's default composite: pooling and residual sums get the z-rule with the spec's stabiliser
        var root = new BundleRules(new Dictionary<NodeKind, Func<Rule>>
        {
            [NodeKind.MaxPool] = () => new NormRule(Stabilizer.Spec),
            [NodeKind.AvgPool] = () => new NormRule(Stabilizer.Spec),
            [NodeKind.Sum] = () => new NormRule(Stabilizer.Spec),
            [NodeKind.Activation] = () => PassRule.Instance,
            [NodeKind.Shape] = () => PassRule.Instance,
            [NodeKind.BatchNorm] = () => PassRule.Instance,
        }, MergeBatchNorm);
        // the published code (docs/root-inference-published.md): its own ReLU, pooling and skip rules; BatchNorm is never merged
        var published = new BundleRules(new Dictionary<NodeKind, Func<Rule>>
        {
            [NodeKind.Activation] = () => new PublishedReluRule(),
            [NodeKind.MaxPool] = () => new PublishedMaxPoolRule(),
            [NodeKind.AvgPool] = () => PublishedAvgPoolRule.Instance,
            [NodeKind.Sum] = () => PublishedSkipRule.Instance,
            [NodeKind.Shape] = () => PassRule.Instance,
            [NodeKind.BatchNorm] = () => PassRule.Instance,
        }, () => Array.Empty<ICanonizer>());
        return new ModelBundle("CNN", "Sequential CNNs, torchvision-layout ResNet and VGG (RootDtd.Models), custom nets of the same layers", kinds,
            new Dictionary<BundleVariant, BundleRules>
            {
                [BundleVariant.Lrp] = lrp,
                [BundleVariant.Gradient] = gradient,
                [BundleVariant.RootInference] = root,
                [BundleVariant.PublishedRootInference] = published,
            });
    }
}
