using System.Globalization;
using RootDtd.Composites;

namespace RootDtd.Composites;

/// <summary>A named explanation method: a composite factory with documented parameters.</summary>
/// <param name="Name">Name used by the CLI and reports (e.g. <c>epsilon-plus-flat</c>).</param>
/// <param name="Description">One line: which rule goes where.</param>
/// <param name="Parameters">Parameter names with their defaults (e.g. <c>epsilon=0.25</c>).</param>
/// <param name="Factory">Builds the composite from parameter values (missing ones take their defaults).</param>
public sealed record ExplanationMethod(string Name, string Description, IReadOnlyDictionary<string, double> Parameters,
    Func<IReadOnlyDictionary<string, double>, Composite> Factory)
{
    /// <summary>Builds the composite with default parameters.</summary>
    public Composite CreateDefault() => Factory(Parameters);

    /// <summary>Builds the composite, overriding some parameters; unknown names are rejected.</summary>
    public Composite Create(IReadOnlyDictionary<string, double>? overrides)
    {
        var values = new Dictionary<string, double>(Parameters);
        foreach (var (k, v) in overrides ?? new Dictionary<string, double>())
        {
            if (!values.ContainsKey(k))
                throw new ArgumentException($"Method '{Name}' has no parameter '{k}' (parameters: {(Parameters.Count == 0 ? "none" : string.Join(", ", Parameters.Keys))}).");
            values[k] = v;
        }
        return Factory(values);
    }
}

/// <summary>
/// Every explanation method RootDtd ships, by name: the classic rules and composites, the gradient baselines and the
/// root-inference composites. The CLI (<c>rootdtd methods</c>), the benchmark and the evaluation use this list.
/// </summary>
public static class MethodCatalog
{
    private static readonly List<ExplanationMethod> _methods = new();

    static MethodCatalog()
    {
        Add("lrp0", "LRP-0 (ε = 1e-6) on every conv/linear layer", new(), _ => Composites.Lrp0());
        Add("epsilon", "LRP-ε on every conv/linear layer", new() { ["epsilon"] = 0.25 }, p => Composites.Epsilon(p["epsilon"]));
        Add("gamma", "LRP-γ (zennit's generalised form) on every conv/linear layer", new() { ["gamma"] = 0.25 }, p => Composites.Gamma(p["gamma"]));
        Add("zplus", "z⁺ on every conv/linear layer", new(), _ => Composites.ZPlus());
        Add("alpha-beta", "αβ on every conv/linear layer (α − β = 1)", new() { ["alpha"] = 2, ["beta"] = 1 }, p => Composites.AlphaBeta(p["alpha"], p["beta"]));
        Add("wsquare", "w² on every conv/linear layer", new(), _ => Composites.WSquare());
        Add("flat", "Flat on every conv/linear layer", new(), _ => Composites.Flat());
        Add("zbox", "z^B on the first layer (input bounds), LRP-0 elsewhere", new(), _ => Composites.ZBox());
        Add("epsilon-gamma-box", "z^B on the first conv, γ on other convs, ε on dense layers (zennit)", new() { ["epsilon"] = 1e-6, ["gamma"] = 0.25 },
            p => Composites.EpsilonGammaBox(p["epsilon"], p["gamma"]));
        Add("epsilon-plus-flat", "Flat on the first layer, z⁺ on convs, ε on dense layers (zennit)", new() { ["epsilon"] = 1e-6 }, p => Composites.EpsilonPlusFlat(p["epsilon"]));
        Add("epsilon-alpha2-beta1", "α2β1 on convs, ε on dense layers (zennit)", new() { ["epsilon"] = 1e-6 }, p => Composites.EpsilonAlpha2Beta1(p["epsilon"]));
        Add("combination", "Montavon et al. 2019: z^B first, γ lower convs, ε upper ⌊n/4⌋ convs, LRP-0 dense", new() { ["epsilon"] = 0.25, ["gamma"] = 0.25 },
            p => Composites.Combination(p["epsilon"], p["gamma"]));
        Add("gradient", "the gradient of the target logit (baseline)", new(), _ => Composites.Gradient());
        Add("gradient-x-input", "input × gradient of the target logit (baseline)", new(), _ => Composites.GradientTimesInput());
        Add("root", "constrained root inference on every conv/linear layer (spec default composite; ablations as parameters)",
            RootComposites.DefaultParameters(), p => RootComposites.Root(RootComposites.OptionsFrom(p)));
        Add("root-upper-half", "root inference on the upper units (index ≥ ⌊n·(1−fraction)⌋), z⁺ below",
            new(RootComposites.DefaultParameters()) { ["fraction"] = 0.5 }, p => RootComposites.RootUpper(p["fraction"], RootComposites.OptionsFrom(p), name: "root-upper-half"));
        Add("root-flat-input", "Flat on the input layer, root inference on every other conv/linear layer",
            RootComposites.DefaultParameters(), p => RootComposites.RootFlatInput(RootComposites.OptionsFrom(p)));
        Add("root-published", "the published root-inference code (XAI-RootInference DTDOpt): SSIM/hinge solvers, R-seeded convs, |logit| start", new(), _ => RootDtd.Rules.RootInference.Published.PublishedRootPreset.Composite());
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
    public static void Add(string name, string description, Dictionary<string, double> parameters, Func<IReadOnlyDictionary<string, double>, Composite> create)
    {
        lock (_methods)
        {
            if (_methods.Any(m => string.Equals(m.Name, name, StringComparison.OrdinalIgnoreCase)))
                throw new ArgumentException($"A method named '{name}' is already registered.", nameof(name));
            _methods.Add(new ExplanationMethod(name, description, parameters, create));
        }
    }

    /// <summary>Finds a method by name (case-insensitive); throws with the list of names when unknown.</summary>
    public static ExplanationMethod Get(string name)
    {
        lock (_methods)
        {
            return _methods.FirstOrDefault(m => string.Equals(m.Name, name, StringComparison.OrdinalIgnoreCase))
                ?? throw new ArgumentException($"Unknown method '{name}'. Known methods: {string.Join(", ", _methods.Select(m => m.Name))}.", nameof(name));
        }
    }

    /// <summary>Parses <c>name</c> or <c>name:key=value,key=value</c> (e.g. <c>epsilon:epsilon=0.1</c>) into a composite.</summary>
    public static Composite Parse(string spec)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(spec);
        var colon = spec.IndexOf(':');
        var method = Get(colon < 0 ? spec : spec[..colon]);
        var overrides = new Dictionary<string, double>();
        if (colon >= 0)
        {
            foreach (var part in spec[(colon + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries))
            {
                var kv = part.Split('=', 2);
                if (kv.Length != 2 || !double.TryParse(kv[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var v))
                    throw new ArgumentException($"Cannot read '{part}' in '{spec}': expected key=value with a number.", nameof(spec));
                overrides[kv[0].Trim()] = v;
            }
        }
        return method.Create(overrides);
    }
}
