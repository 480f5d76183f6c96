using RootDtd.Attribution;
using RootDtd.Rules.RootInference;
using RootDtd.Rules.RootInference.Published;

namespace RootDtd.Composites;

/// <summary>
/// A named explanation method: a composite factory over a typed options record, with the record's fields exposed as
/// spec parameters (<c>name:key=value,…</c>, see <see cref="MethodSpec"/>). The defaults are those of the options
/// record's default instance, so each is written once, in the record.
/// </summary>
public abstract class ExplanationMethod
{
    private protected ExplanationMethod(string name, string description)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (name.Any(c => c is ',' or '=' or ':' || char.IsWhiteSpace(c)))
            throw new ArgumentException($"A method name cannot contain ',', '=', ':' or spaces; got '{name}'.", nameof(name));
        Name = name;
        Description = description ?? string.Empty;
    }

    /// <summary>Name used by the CLI and reports (e.g. <c>epsilon-plus-flat</c>).</summary>
    public string Name { get; }

    /// <summary>One line: which rule goes where.</summary>
    public string Description { get; }

    /// <summary>The parameters, in declaration order.</summary>
    public abstract IReadOnlyList<MethodParameter> Parameters { get; }

    /// <summary>The type of the options record (e.g. <see cref="EpsilonOptions"/>, <see cref="RootInferenceOptions"/>).</summary>
    public abstract Type OptionsType { get; }

    /// <summary>The options record with every default.</summary>
    public abstract object DefaultOptions { get; }

    /// <summary>Every parameter with its default value (from <see cref="DefaultOptions"/>), in declaration order.</summary>
    public IReadOnlyDictionary<string, double> Defaults => ValuesOf(DefaultOptions);

    /// <summary>Every numeric parameter (not <see cref="MethodParameterKind.Text"/>) with its value in <paramref name="options"/>, in declaration order.</summary>
    public IReadOnlyDictionary<string, double> ValuesOf(object options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var values = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var p in Parameters.Where(p => p.Kind != MethodParameterKind.Text)) values[p.Name] = p.ValueIn(options);
        return values;
    }

    /// <summary>The parameter called <paramref name="key"/> (case-insensitive), or <c>null</c>.</summary>
    public MethodParameter? FindParameter(string key) =>
        Parameters.FirstOrDefault(p => string.Equals(p.Name, key?.Trim(), StringComparison.OrdinalIgnoreCase));

    /// <summary>Where the backward walk starts (from the default composite).</summary>
    public StartRelevance StartRelevance => CreateDefault().StartRelevance;

    /// <summary>The canonizers the method runs with (from the default composite).</summary>
    public IReadOnlyList<RootDtd.Canonizers.ICanonizer> Canonizers => CreateDefault().Canonizers;

    /// <summary>Builds the composite with default parameters.</summary>
    public Composite CreateDefault() => CreateFrom(DefaultOptions);

    /// <summary>Builds the composite, overriding some parameters; unknown names and bad values throw a <see cref="MethodSpecException"/>.</summary>
    public Composite Create(IReadOnlyDictionary<string, double>? overrides) => MethodSpec.Of(this, overrides).CreateComposite();

    /// <summary>Builds the composite from an options object of <see cref="OptionsType"/>.</summary>
    public abstract Composite CreateFrom(object options);

    /// <summary>"name (parameters: a (a number), b (a switch (0 or 1)))" — for error messages.</summary>
    public string DescribeParameters() => Parameters.Count == 0
        ? $"'{Name}' takes no parameters"
        : $"parameters of '{Name}': {string.Join(", ", Parameters.Select(p => $"{p.Name} ({p.ExpectedValue}, default {(p.TextIn(DefaultOptions) is { Length: > 0 } t ? t : "automatic")})"))}";

    /// <inheritdoc />
    public override string ToString() => Name;
}

/// <summary>A method whose options are the record <typeparamref name="TOptions"/>.</summary>
/// <typeparam name="TOptions">The options record; its default instance holds the defaults.</typeparam>
public sealed class ExplanationMethod<TOptions> : ExplanationMethod where TOptions : class
{
    private readonly Func<TOptions, Composite> _factory;
    private readonly MethodParameter<TOptions>[] _parameters;

    /// <summary>Creates a method.</summary>
    /// <param name="name">Unique name.</param>
    /// <param name="description">One line: which rule goes where.</param>
    /// <param name="defaults">The options record with every default.</param>
    /// <param name="parameters">The record's fields that a spec may set (names unique, case-insensitive).</param>
    /// <param name="factory">Builds the composite from options.</param>
    public ExplanationMethod(string name, string description, TOptions defaults, IEnumerable<MethodParameter<TOptions>> parameters, Func<TOptions, Composite> factory)
        : base(name, description)
    {
        Default = defaults ?? throw new ArgumentNullException(nameof(defaults));
        _factory = factory ?? throw new ArgumentNullException(nameof(factory));
        _parameters = (parameters ?? throw new ArgumentNullException(nameof(parameters))).ToArray();
        var duplicate = _parameters.GroupBy(p => p.Name, StringComparer.OrdinalIgnoreCase).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new ArgumentException($"Method '{name}' declares parameter '{duplicate.Key}' twice.", nameof(parameters));
    }

    /// <summary>The options record with every default.</summary>
    public TOptions Default { get; }

    /// <inheritdoc />
    public override IReadOnlyList<MethodParameter> Parameters => _parameters;

    /// <summary>The typed parameters.</summary>
    public IReadOnlyList<MethodParameter<TOptions>> TypedParameters => _parameters;

    /// <inheritdoc />
    public override Type OptionsType => typeof(TOptions);

    /// <inheritdoc />
    public override object DefaultOptions => Default;

    /// <summary>Builds the composite from typed options.</summary>
    public Composite Create(TOptions options) => _factory(options ?? throw new ArgumentNullException(nameof(options)));

    /// <inheritdoc />
    public override Composite CreateFrom(object options) => Create(options as TOptions
        ?? throw new ArgumentException($"Method '{Name}' takes {typeof(TOptions).Name} options; got {options?.GetType().Name ?? "null"}.", nameof(options)));
}

/// <summary>
/// Options of a method registered with plain numeric parameters (<see cref="MethodCatalog.Add(string, string, Dictionary{string, double}, Func{IReadOnlyDictionary{string, double}, Composite})"/>):
/// a name → value map with value equality.
/// </summary>
public sealed class NumberOptions : IEquatable<NumberOptions>
{
    private readonly Dictionary<string, double> _values;

    /// <summary>Creates options from values.</summary>
    public NumberOptions(IReadOnlyDictionary<string, double> values) => _values = new Dictionary<string, double>(values ?? throw new ArgumentNullException(nameof(values)), StringComparer.Ordinal);

    /// <summary>The values by parameter name.</summary>
    public IReadOnlyDictionary<string, double> Values => _values;

    /// <summary>A copy with one value changed.</summary>
    public NumberOptions With(string name, double value) => new(new Dictionary<string, double>(_values) { [name] = value });

    /// <inheritdoc />
    public bool Equals(NumberOptions? other) => other is not null && _values.Count == other._values.Count
        && _values.All(kv => other._values.TryGetValue(kv.Key, out var v) && v.Equals(kv.Value));

    /// <inheritdoc />
    public override bool Equals(object? obj) => Equals(obj as NumberOptions);

    /// <inheritdoc />
    public override int GetHashCode() => _values.OrderBy(kv => kv.Key, StringComparer.Ordinal).Aggregate(0, (h, kv) => HashCode.Combine(h, kv.Key, kv.Value));
}

/// <summary>
/// Every explanation method RootDtd ships, by name: the classic rules and composites, the gradient baselines and the
/// root-inference composites. The CLI (<c>rootdtd methods</c>), the benchmark and the evaluation use this list; a
/// method spec (<c>name:key=value,…</c>) is read by <see cref="MethodSpec.Parse"/>.
/// </summary>
public static class MethodCatalog
{
    private static readonly List<ExplanationMethod> _methods = new();

    static MethodCatalog()
    {
        Add<NoOptions>("lrp0", "LRP-0 (ε = 1e-6) on every conv/linear layer", _ => Composites.Lrp0());
        Add("epsilon", "LRP-ε on every conv/linear layer", Composites.Epsilon,
            MethodParameter<EpsilonOptions>.Number("epsilon", "the stabiliser ε ≥ 0", o => o.Epsilon, (o, v) => o with { Epsilon = v }));
        Add("gamma", "LRP-γ (zennit's generalised form) on every conv/linear layer", Composites.Gamma,
            MethodParameter<GammaOptions>.Number("gamma", "γ ≥ 0: weight of the positive contributions", o => o.Gamma, (o, v) => o with { Gamma = v }));
        Add<NoOptions>("zplus", "z⁺ on every conv/linear layer", _ => Composites.ZPlus());
        Add("alpha-beta", "αβ on every conv/linear layer (α − β = 1)", Composites.AlphaBeta,
            MethodParameter<AlphaBetaOptions>.Number("alpha", "α ≥ 1: weight of the positive contributions", o => o.Alpha, (o, v) => o with { Alpha = v }),
            MethodParameter<AlphaBetaOptions>.Number("beta", "β = α − 1: weight of the negative contributions", o => o.Beta, (o, v) => o with { Beta = v }));
        Add<NoOptions>("wsquare", "w² on every conv/linear layer", _ => Composites.WSquare());
        Add<NoOptions>("flat", "Flat on every conv/linear layer", _ => Composites.Flat());
        Add<NoOptions>("zbox", "z^B on the first layer (input bounds), LRP-0 elsewhere", _ => Composites.ZBox());
        Add("epsilon-gamma-box", "z^B on the first conv, γ on other convs, ε on dense layers (zennit)", Composites.EpsilonGammaBox,
            MethodParameter<EpsilonGammaBoxOptions>.Number("epsilon", "ε ≥ 0 on dense layers", o => o.Epsilon, (o, v) => o with { Epsilon = v }),
            MethodParameter<EpsilonGammaBoxOptions>.Number("gamma", "γ ≥ 0 on the convolutions after the first", o => o.Gamma, (o, v) => o with { Gamma = v }));
        Add("epsilon-plus-flat", "Flat on the first layer, z⁺ on convs, ε on dense layers (zennit)", Composites.EpsilonPlusFlat,
            MethodParameter<EpsilonPlusFlatOptions>.Number("epsilon", "ε ≥ 0 on dense layers", o => o.Epsilon, (o, v) => o with { Epsilon = v }));
        Add("epsilon-alpha2-beta1", "α2β1 on convs, ε on dense layers (zennit)", Composites.EpsilonAlpha2Beta1,
            MethodParameter<EpsilonAlpha2Beta1Options>.Number("epsilon", "ε ≥ 0 on dense layers", o => o.Epsilon, (o, v) => o with { Epsilon = v }));
        Add("combination", "Montavon et al. 2019: z^B first, γ lower convs, ε upper ⌊n/4⌋ convs, LRP-0 dense", Composites.Combination,
            MethodParameter<CombinationOptions>.Number("epsilon", "ε ≥ 0 on the upper ⌊n/4⌋ convolutions", o => o.Epsilon, (o, v) => o with { Epsilon = v }),
            MethodParameter<CombinationOptions>.Number("gamma", "γ ≥ 0 on the lower convolutions", o => o.Gamma, (o, v) => o with { Gamma = v }));
        Add<NoOptions>("gradient", "the gradient of the target logit (baseline)", _ => Composites.Gradient());
        Add<NoOptions>("gradient-x-input", "input × gradient of the target logit (baseline)", _ => Composites.GradientTimesInput());
        Add("root", "constrained root inference on every conv/linear layer (spec default composite; ablations as parameters)",
            o => RootComposites.Root(o), RootComposites.Parameters.ToArray());
        Add("root-upper-half", "root inference on the upper units (index ≥ ⌊n·(1−fraction)⌋), z⁺ below",
            o => RootComposites.RootUpper(o, name: "root-upper-half"),
            RootComposites.Parameters.Select(p => p.Within<RootUpperOptions>(o => o.Root, (o, r) => o with { Root = r }))
                .Append(MethodParameter<RootUpperOptions>.Number("fraction", "fraction of the units (the upper ones) with the root rule, in [0, 1]", o => o.Fraction, (o, v) => o with { Fraction = v }))
                .ToArray());
        Add("root-flat-input", "Flat on the input layer, root inference on every other conv/linear layer",
            o => RootComposites.RootFlatInput(o), RootComposites.Parameters.ToArray());
        AddRootVariants();
        AddAttributionMethods();
        Add<NoOptions>(PublishedRootPreset.Name, "the published root-inference code (XAI-RootInference DTDOpt): SSIM/hinge solvers, R-seeded convs, |logit| start, BatchNorm not merged",
            _ => PublishedRootPreset.Composite());
        Add("cp-lrp", "ViT: conservative propagation (Ali et al. 2022): softmax and LayerNorm σ held, ε on Linear/conv", TransformerComposites.ConservativePropagation,
            MethodParameter<TransformerLrpOptions>.Number("epsilon", "the stabiliser ε ≥ 0 of every rule (0: LXT's efficient mode)", o => o.Epsilon, (o, v) => o with { Epsilon = v }));
        Add("attn-lrp", "ViT: AttnLRP (Achtibat et al. 2024): cp-lrp plus the softmax rule and the uniform rule on both matmuls", TransformerComposites.AttnLrp,
            MethodParameter<TransformerLrpOptions>.Number("epsilon", "the stabiliser ε ≥ 0 of every rule (0: LXT's efficient mode)", o => o.Epsilon, (o, v) => o with { Epsilon = v }));
        Add<NoOptions>("chefer", "ViT: Chefer et al. 2021 transformer attribution (LRP α1β0 × attention gradient, rolled out); token map", _ => TransformerComposites.Chefer());
        Add("chefer-root", "ViT: chefer with constrained root inference on every Linear (qkv as q, k, v) instead of α1β0 (the paper's I.ViT + root); token map",
            o => TransformerComposites.CheferRoot(o), RootComposites.UnitParameters.ToArray());
        Add<NoOptions>("rollout", "ViT: attention rollout (Abnar & Zuidema 2020); token map", _ => TransformerComposites.Rollout());
        Add<NoOptions>("raw-attention", "ViT: last block's class-token attention, head mean; token map", _ => TransformerComposites.RawAttention());
    }

    /// <summary>The root-inference variants of issue 14 (docs/research/root-variants.md).</summary>
    private static void AddRootVariants()
    {
        Add("root-gated", "root inference where its fit explains R (relative residual ≤ tau), z⁺ elsewhere; per unit and sample (issue 14)",
            RootVariantComposites.RootGated,
            RootComposites.Parameters.Select(p => p.Within<RootGatedOptions>(o => o.Root, (o, r) => o with { Root = r }))
                .Append(MethodParameter<RootGatedOptions>.Number("tau", "largest relative residual ‖F(S) − R‖/‖R‖ that keeps the root redistribution (≥ 0; 1 = that of S = 0)", o => o.Tau, (o, v) => o with { Tau = v }))
                .ToArray());
        Add("root-shape", "root inference fitted to the shape of R (target rescaled per sample to ΣF(x)), normalized redistribution (issue 14)",
            o => RootVariantComposites.RootShape(o), RootComposites.Parameters.ToArray());
        Add("root-channel", "root inference with a multiplicative signal S = m⊙x, one m in [0, 1] per input channel, fitted to the shape of R (issue 14)",
            RootVariantComposites.RootChannel,
            RootVariantComposites.ChannelParameters.Select(p => p.Within<RootChannelOptions>(o => o.Root, (o, r) => o with { Root = r }))
                .Append(MethodParameter<RootChannelOptions>.Switch("shape", "fit the shape c·R with c = ΣF(x)/|ΣR| (0: R itself, the spec's total)", o => o.Shape, (o, v) => o with { Shape = v }))
                .ToArray());
    }

    private static void AddAttributionMethods()
    {
        var layer = MethodParameter<GradCamOptions>.Text("layer", "module path of the target layer (default: layer4, else the last conv's ReLU; on a ViT blocks.{L-1}.norm1)", o => o.Layer, (o, v) => o with { Layer = v });
        Add("gradcam", "Grad-CAM: ReLU(Σ_k mean(∂y/∂A_k)·A_k) at a layer, upsampled to the input", o => AttributionComposites.GradCam(o.Layer), layer);
        Add("gradcam-plus-plus", "Grad-CAM++ channel weights (Chattopadhyay et al. 2018) at a layer, upsampled to the input", o => AttributionComposites.GradCamPlusPlus(o.Layer), layer);
        Add("smoothgrad", "SmoothGrad: the mean of a base method over n noisy copies, σ = noise·(max − min) per sample",
            o => AttributionComposites.SmoothGrad(string.Equals(o.Base, "gradient", StringComparison.OrdinalIgnoreCase) ? null : MethodSpec.Default(o.Base).CreateComposite(), o.Samples, o.Noise, o.Seed),
            MethodParameter<SmoothGradOptions>.Count("n", "noisy samples ≥ 1", o => o.Samples, (o, v) => o with { Samples = v }),
            MethodParameter<SmoothGradOptions>.Number("noise", "σ as a fraction of each sample's value range, ≥ 0", o => o.Noise, (o, v) => o with { Noise = v }),
            MethodParameter<SmoothGradOptions>.Count("seed", "seed of the noise", o => o.Seed, (o, v) => o with { Seed = v }),
            MethodParameter<SmoothGradOptions>.Text("base", "catalog name of the smoothed method (its defaults)", o => o.Base, (o, v) => o with { Base = v }));
        Add("integrated-gradients", "Integrated Gradients (midpoint rule, m steps) from the zero or a blurred (σ = blur px) baseline",
            o => AttributionComposites.IntegratedGradients(o.Steps, o.BaselineKind, o.Blur),
            MethodParameter<IntegratedGradientsOptions>.Count("steps", "steps m ≥ 1", o => o.Steps, (o, v) => o with { Steps = v }),
            MethodParameter<IntegratedGradientsOptions>.Text("baseline", "zero or blurred", o => o.Baseline, (o, v) => o with { Baseline = v }),
            MethodParameter<IntegratedGradientsOptions>.Number("blur", "σ of the blurred baseline in pixels, > 0", o => o.Blur, (o, v) => o with { Blur = v }));
        Add<NoOptions>("agf", "AGF (Gur et al. 2021): attribution-guided factorization, relevance and gradient streams (authors' rules; BatchNorm not merged)",
            _ => AttributionComposites.Agf());
        Add("agf-root", "AGF with constrained root inference in its DTD part (C of every conv/dense unit below the output); root options as parameters",
            o => AttributionComposites.Agf(o), RootComposites.UnitParameters.ToArray());
        Add("occlusion", "Occlusion: drop of the target logit when a window is filled, averaged over the windows covering a pixel",
            o => AttributionComposites.Occlusion(o.Window, o.Stride == 0 ? null : o.Stride, o.Fill),
            MethodParameter<OcclusionOptions>.Count("window", "window side in pixels ≥ 1", o => o.Window, (o, v) => o with { Window = v }),
            MethodParameter<OcclusionOptions>.Count("stride", "stride in pixels (0 = the window)", o => o.Stride, (o, v) => o with { Stride = v }),
            MethodParameter<OcclusionOptions>.Number("fill", "fill value in the model's input space", o => o.Fill, (o, v) => o with { Fill = v }));
    }

    /// <summary>All methods in registration order.</summary>
    public static IReadOnlyList<ExplanationMethod> All
    {
        get
        {
            lock (_methods) return _methods.ToList();
        }
    }

    /// <summary>Registers a method (names are unique, case-insensitive).</summary>
    public static void Add(ExplanationMethod method)
    {
        ArgumentNullException.ThrowIfNull(method);
        lock (_methods)
        {
            if (_methods.Any(m => string.Equals(m.Name, method.Name, StringComparison.OrdinalIgnoreCase)))
                throw new ArgumentException($"A method named '{method.Name}' is already registered.", nameof(method));
            _methods.Add(method);
        }
    }

    /// <summary>Registers a method over the options record <typeparamref name="TOptions"/> (defaults: <c>new TOptions()</c>).</summary>
    /// <param name="name">Unique name.</param>
    /// <param name="description">One line: which rule goes where.</param>
    /// <param name="create">Builds the composite from options.</param>
    /// <param name="parameters">The record's fields that a spec may set.</param>
    public static ExplanationMethod<TOptions> Add<TOptions>(string name, string description, Func<TOptions, Composite> create, params MethodParameter<TOptions>[] parameters)
        where TOptions : class, new()
    {
        var method = new ExplanationMethod<TOptions>(name, description, new TOptions(), parameters, create);
        Add(method);
        return method;
    }

    /// <summary>
    /// Registers a method whose parameters are plain numbers (options: <see cref="NumberOptions"/>). Prefer a typed
    /// options record with <see cref="Add{TOptions}"/>: it gives counts and switches their own checks.
    /// </summary>
    /// <param name="name">Unique name.</param>
    /// <param name="description">One line: which rule goes where.</param>
    /// <param name="parameters">Parameter names with their defaults.</param>
    /// <param name="create">Builds the composite from every parameter's value.</param>
    public static void Add(string name, string description, Dictionary<string, double> parameters, Func<IReadOnlyDictionary<string, double>, Composite> create)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(create);
        var typed = parameters.Keys.Select(k => MethodParameter<NumberOptions>.Number(k, string.Empty, o => o.Values[k], (o, v) => o.With(k, v)));
        Add(new ExplanationMethod<NumberOptions>(name, description, new NumberOptions(parameters), typed, o => create(o.Values)));
    }

    /// <summary>Finds a method by name (case-insensitive); throws a <see cref="MethodSpecException"/> with the list of names when unknown.</summary>
    public static ExplanationMethod Get(string name) => TryGet(name)
        ?? throw new MethodSpecException($"Unknown method '{name}'. Known methods: {string.Join(", ", All.Select(m => m.Name))}.");

    /// <summary>Finds a method by name (case-insensitive), or <c>null</c>.</summary>
    public static ExplanationMethod? TryGet(string? name)
    {
        if (name is null) return null;
        name = name.Trim();
        lock (_methods) return _methods.FirstOrDefault(m => string.Equals(m.Name, name, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>Parses <c>name</c> or <c>name:key=value,key=value</c> (e.g. <c>epsilon:epsilon=0.1</c>) into a composite (see <see cref="MethodSpec.Parse"/>).</summary>
    public static Composite Parse(string spec) => MethodSpec.Parse(spec).CreateComposite();
}
