using RootDtd.Canonizers;
using RootDtd.Graph;
using RootDtd.Rules;

namespace RootDtd.Composites;

/// <summary>What the backward walk starts from.</summary>
public enum StartRelevance
{
    /// <summary><c>onehot(target) ⊙ logits</c>: the explained logit (LRP/DTD convention).</summary>
    TargetLogit,

    /// <summary><c>onehot(target)</c>: 1 at the target (plain gradients).</summary>
    OneHot,

    /// <summary><c>onehot(target) ⊙ |logits|</c>: the magnitude of the explained logit (the published root-inference code).</summary>
    AbsoluteTargetLogit,
}

/// <summary>A unit as composites see it when they assign rules.</summary>
/// <param name="Node">The unit's graph node (name, module, merged BatchNorms).</param>
/// <param name="Index">Position among the graph's units in forward order (0 = first).</param>
/// <param name="Count">Number of units in the graph.</param>
/// <param name="IsDense">True for dense (Linear) units, false for convolutions.</param>
/// <param name="ConvolutionIndex">Position among the convolution units (−1 for dense units).</param>
/// <param name="ConvolutionCount">Number of convolution units in the graph.</param>
public sealed record UnitInfo(LinearUnitNode Node, int Index, int Count, bool IsDense, int ConvolutionIndex, int ConvolutionCount)
{
    /// <summary>The module path, e.g. <c>layer2.0.conv1</c>.</summary>
    public string Name => Node.Name;
}

/// <summary>
/// Which layer gets which rule. Conv/linear units are matched, in this order of precedence, by module path
/// (<see cref="ForName"/>), as the first unit (<see cref="ForFirstUnit"/>), by a predicate on the unit
/// (<see cref="ForUnits"/>, <see cref="ForConvolutions"/>, <see cref="ForDense"/>), by module type (<see cref="ForType{TModule}"/>), and finally by <see cref="ForAllUnits"/>.
/// Other nodes get, in this order, the rule of their module path (<see cref="ForName"/>), of a node predicate
/// (<see cref="ForNodes"/>), of their kind (<see cref="ForKind"/>), and otherwise the default of their kind for the
/// composite's <see cref="Variant"/> from the model bundles (<see cref="ModelBundles"/>; for <see cref="BundleVariant.Lrp"/>
/// zennit's: activations, reshapes and unmerged BatchNorm pass relevance, average pooling and residual sums use
/// <see cref="NormRule"/>, max pooling passes the gradient). A kind without any rule is an error, never a silent default.
/// </summary>
public sealed class Composite
{
    private readonly Dictionary<string, Rule> _byName = new(StringComparer.Ordinal);
    private readonly List<(Func<UnitInfo, bool> Match, Rule Rule)> _byPredicate = new();
    private readonly List<(Type Type, Rule Rule)> _byType = new();
    private readonly List<(Func<GraphNode, RelevanceGraph, bool> Match, Rule Rule)> _byNode = new();
    private readonly Dictionary<NodeKind, Rule> _byKind = new();
    private readonly Dictionary<NodeKind, Rule?> _fromBundles = new();
    private IReadOnlyList<ICanonizer>? _canonizers;
    private readonly List<(Func<GraphNode, RelevanceGraph, bool> Match, FanOutRule Rule)> _fanOut = new();
    private Rule? _first;
    private bool _firstConvolutionOnly;
    private Rule? _all;

    /// <summary>Creates an empty composite (every conv/linear unit must then be matched by a mapping).</summary>
    public Composite(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        Name = name;
    }

    /// <summary>Name used in reports and the CLI.</summary>
    public string Name { get; }

    /// <summary>What the backward walk starts from (default: the target logit).</summary>
    public StartRelevance StartRelevance { get; init; } = StartRelevance.TargetLogit;

    /// <summary>Multiply the relevance arriving at the input by the input (Gradient×Input).</summary>
    public bool MultiplyByInput { get; init; }

    /// <summary>
    /// The kind of method (default <see cref="BundleVariant.Lrp"/>): picks the default rule of every non-unit node kind
    /// and the default canonizers from the model bundles.
    /// </summary>
    public BundleVariant Variant { get; init; } = BundleVariant.Lrp;

    /// <summary>
    /// The canonizers the method runs with (default: the bundles' for <see cref="Variant"/> — BatchNorm merging, none
    /// for <see cref="BundleVariant.PublishedRootInference"/>). <see cref="ExplainerOptions.Canonizers"/>, when set, replaces them.
    /// </summary>
    public IReadOnlyList<ICanonizer> Canonizers
    {
        get => _canonizers ?? ModelBundles.Canonizers(Variant);
        init => _canonizers = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>
    /// The rule nodes of <paramref name="kind"/> get when no name or node predicate matches: the one set by
    /// <see cref="ForKind"/>, else the bundles' default for <see cref="Variant"/>, else <c>null</c> (resolution then fails).
    /// </summary>
    public Rule? KindRule(NodeKind kind)
    {
        if (_byKind.TryGetValue(kind, out var rule)) return rule;
        if (!_fromBundles.TryGetValue(kind, out var fromBundle)) _fromBundles[kind] = fromBundle = ModelBundles.KindRule(Variant, kind);
        return fromBundle;
    }

    /// <summary>
    /// A method whose result is a token map (rollout, raw attention, Chefer's transformer attribution), or <c>null</c>
    /// for pixel-relevance methods. The explainer upsamples the map bilinearly onto the image.
    /// </summary>
    public TokenMapMethod? TokenMap { get; init; }

    /// <summary>
    /// Combines the relevances that several consumers send to a node for which <paramref name="match"/> holds
    /// (default everywhere: their sum).
    /// </summary>
    public Composite ForFanOut(Func<GraphNode, RelevanceGraph, bool> match, FanOutRule rule)
    {
        _fanOut.Add((match ?? throw new ArgumentNullException(nameof(match)), rule ?? throw new ArgumentNullException(nameof(rule))));
        return this;
    }

    /// <summary>The fan-out rule of every node (index = node index; <c>null</c> = sum the branches).</summary>
    public FanOutRule?[] ResolveFanOut(RelevanceGraph graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        return graph.Nodes.Select(n => _fanOut.FirstOrDefault(f => f.Match(n, graph)).Rule).ToArray();
    }

    /// <summary>
    /// An attribution procedure that replaces the single backward walk (Grad-CAM, SmoothGrad, Integrated Gradients,
    /// occlusion); <see langword="null"/> for plain rule composites. The procedure may call the walk with this
    /// composite's rules (<see cref="Attribution.AttributionContext.Walk"/>), e.g. SmoothGrad over any composite.
    /// </summary>
    public Attribution.AttributionProcedure? Procedure { get; init; }

    /// <summary>
    /// A copy of this composite (same rule assignment, start relevance, input multiplication, variant and canonizers) named
    /// <paramref name="name"/> whose explanations are computed by <paramref name="procedure"/>.
    /// </summary>
    public Composite WithProcedure(string name, Attribution.AttributionProcedure procedure)
    {
        ArgumentNullException.ThrowIfNull(procedure);
        var copy = new Composite(name) { StartRelevance = StartRelevance, MultiplyByInput = MultiplyByInput, Variant = Variant, Canonizers = Canonizers, Procedure = procedure };
        foreach (var (k, v) in _byName) copy._byName[k] = v;
        copy._byPredicate.AddRange(_byPredicate);
        copy._byType.AddRange(_byType);
        copy._byNode.AddRange(_byNode);
        foreach (var (k, v) in _byKind) copy._byKind[k] = v;
        copy._first = _first;
        copy._firstConvolutionOnly = _firstConvolutionOnly;
        copy._all = _all;
        return copy;
    }

    /// <summary>Assigns <paramref name="rule"/> to the module at <paramref name="path"/> (highest precedence).</summary>
    public Composite ForName(string path, Rule rule)
    {
        _byName[path] = rule ?? throw new ArgumentNullException(nameof(rule));
        return this;
    }

    /// <summary>Assigns <paramref name="rule"/> to every unit for which <paramref name="match"/> is true.</summary>
    public Composite ForUnits(Func<UnitInfo, bool> match, Rule rule)
    {
        _byPredicate.Add((match ?? throw new ArgumentNullException(nameof(match)), rule ?? throw new ArgumentNullException(nameof(rule))));
        return this;
    }

    /// <summary>Assigns <paramref name="rule"/> to every convolution unit.</summary>
    public Composite ForConvolutions(Rule rule) => ForUnits(u => !u.IsDense, rule);

    /// <summary>Assigns <paramref name="rule"/> to every dense (Linear) unit.</summary>
    public Composite ForDense(Rule rule) => ForUnits(u => u.IsDense, rule);

    /// <summary>Assigns <paramref name="rule"/> to the first unit in forward order (optionally only if it is a convolution, as zennit's EpsilonGammaBox).</summary>
    public Composite ForFirstUnit(Rule rule, bool convolutionOnly = false)
    {
        _first = rule ?? throw new ArgumentNullException(nameof(rule));
        _firstConvolutionOnly = convolutionOnly;
        return this;
    }

    /// <summary>Assigns <paramref name="rule"/> to units whose module is a <typeparamref name="TModule"/> (e.g. <c>TorchSharp.Modules.Conv2d</c>).</summary>
    public Composite ForType<TModule>(Rule rule)
    {
        _byType.Add((typeof(TModule), rule ?? throw new ArgumentNullException(nameof(rule))));
        return this;
    }

    /// <summary>Assigns <paramref name="rule"/> to every unit not matched otherwise.</summary>
    public Composite ForAllUnits(Rule rule)
    {
        _all = rule ?? throw new ArgumentNullException(nameof(rule));
        return this;
    }

    /// <summary>Sets the rule of every node of a kind (not <see cref="NodeKind.LinearUnit"/>).</summary>
    public Composite ForKind(NodeKind kind, Rule rule)
    {
        if (kind is NodeKind.LinearUnit or NodeKind.Input) throw new ArgumentException("Units are assigned by name, type or position; the input has no rule.", nameof(kind));
        _byKind[kind] = rule ?? throw new ArgumentNullException(nameof(rule));
        return this;
    }

    /// <summary>
    /// Assigns <paramref name="rule"/> to every node that is not a conv/linear unit and for which
    /// <paramref name="match"/> (the node and its graph) is true; checked after <see cref="ForName"/> and before <see cref="ForKind"/>.
    /// </summary>
    public Composite ForNodes(Func<GraphNode, RelevanceGraph, bool> match, Rule rule)
    {
        _byNode.Add((match ?? throw new ArgumentNullException(nameof(match)), rule ?? throw new ArgumentNullException(nameof(rule))));
        return this;
    }

    /// <summary>Resolves the rule of every node of <paramref name="graph"/> (index = node index; the input gets <c>null</c>).</summary>
    public Rule?[] Resolve(RelevanceGraph graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var rules = new Rule?[graph.Nodes.Count];
        var count = graph.Units.Count;
        var convolutions = graph.Units.Where(u => u.Unit.IsConvolution).ToList();
        var firstConv = convolutions.FirstOrDefault();
        foreach (var node in graph.Nodes)
        {
            if (node.Kind == NodeKind.Input) continue;
            if (_byName.TryGetValue(node.Name, out var named))
            {
                rules[node.Index] = named;
                continue;
            }
            if (node is LinearUnitNode unit)
            {
                var info = new UnitInfo(unit, unit.UnitIndex, count, unit.Unit.Kind == LinearUnitKind.Dense, convolutions.IndexOf(unit), convolutions.Count);
                var rule = _first is not null && (_firstConvolutionOnly ? ReferenceEquals(unit, firstConv) : unit.UnitIndex == 0) ? _first : null;
                rule ??= _byPredicate.FirstOrDefault(p => p.Match(info)).Rule;
                rule ??= _byType.FirstOrDefault(t => node.ModuleType is { } mt && t.Type.IsAssignableFrom(mt)).Rule;
                rule ??= _all;
                rules[node.Index] = rule ?? throw new ExplanationException(
                    $"Composite '{Name}' assigns no rule to unit '{node.Name}' ({unit.Unit}). Add ForAllUnits(...) or a mapping for it.");
                continue;
            }
            if (_byNode.FirstOrDefault(p => p.Match(node, graph)).Rule is { } byNode)
            {
                rules[node.Index] = byNode;
                continue;
            }
            rules[node.Index] = KindRule(node.Kind)
                ?? throw new ExplanationException($"Composite '{Name}' has no rule for '{node.Name}' ({node.Kind}): no model bundle defines one for the variant '{Variant}'; " +
                    $"add ForKind(NodeKind.{node.Kind}, ...) or ForName(\"{node.Name}\", ...), or a rule for the kind to a ModelBundle.");
        }
        return rules;
    }

    /// <inheritdoc />
    public override string ToString() => Name;
}
