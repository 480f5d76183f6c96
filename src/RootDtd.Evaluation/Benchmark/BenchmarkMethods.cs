using System.Globalization;
using RootDtd.Composites;

namespace RootDtd.Evaluation.Benchmark;

/// <summary>One method of a benchmark run: a display label and a <see cref="MethodCatalog"/> spec (<c>name[:key=value,…]</c>).</summary>
/// <param name="Label">Row label in the report.</param>
/// <param name="Spec">Catalog spec passed to <see cref="MethodCatalog.Parse"/>.</param>
public sealed record BenchmarkMethod(string Label, string Spec)
{
    /// <summary>A method whose label is its spec.</summary>
    /// <param name="spec">Catalog spec.</param>
    /// <returns>The method.</returns>
    public static BenchmarkMethod Of(string spec) => new(spec, spec);

    /// <summary>Builds the composite (throws <see cref="ArgumentException"/> when the catalog lacks the method or a parameter).</summary>
    /// <returns>The composite.</returns>
    public Composite CreateComposite() => MethodCatalog.Parse(Spec);
}

/// <summary>A method that could not be run, with the reason (reported in the console and in the report).</summary>
/// <param name="Label">Row label.</param>
/// <param name="Spec">Requested spec.</param>
/// <param name="Reason">Why it was skipped.</param>
public sealed record SkippedMethod(string Label, string Spec, string Reason);

/// <summary>
/// An ablation of the root rule: a change of one parameter of the catalog's <c>root</c> method. The parameter is
/// identified by candidate names (with the value to set under each name), so that the ablation follows the catalog.
/// </summary>
/// <param name="Label">Row label.</param>
/// <param name="Candidates">Accepted (parameter name, value) pairs, tried in order (names matched case-insensitively,
/// ignoring '-' and '_'); empty = the default root.</param>
public sealed record RootAblation(string Label, IReadOnlyList<(string Name, double Value)> Candidates)
{
    /// <summary>An ablation setting one parameter, known under one or more names, to one value.</summary>
    /// <param name="label">Row label.</param>
    /// <param name="value">Value.</param>
    /// <param name="names">Candidate parameter names.</param>
    /// <returns>The ablation.</returns>
    public static RootAblation Set(string label, double value, params string[] names) => new(label, names.Select(n => (n, value)).ToArray());
}

/// <summary>The method lists of the benchmark, the demo and the ablation study, and their resolution against the catalog.</summary>
public static class BenchmarkMethods
{
    /// <summary>Name of the root-inference method whose parameters the ablations change.</summary>
    public const string RootMethod = "root";

    /// <summary>The full run of issue 5: the four root-inference variants, the classic rules and composites, and Gradient×Input.</summary>
    public static IReadOnlyList<BenchmarkMethod> Full { get; } = new[]
    {
        "root", "root-upper-half", "root-published", "root-flat-input",
        "lrp0", "epsilon", "gamma", "zplus", "wsquare", "zbox", "epsilon-plus-flat", "epsilon-gamma-box", "combination", "gradient-x-input",
    }.Select(BenchmarkMethod.Of).ToArray();

    /// <summary>The demo: the root rule and the strongest classic baselines.</summary>
    public static IReadOnlyList<BenchmarkMethod> Demo { get; } = new[]
    {
        "root", "root-published", "epsilon-plus-flat", "epsilon-gamma-box", "gradient-x-input",
    }.Select(BenchmarkMethod.Of).ToArray();

    /// <summary>The ablations of the root rule (paper's ablation table): steps, γ, each constraint off, direct redistribution.</summary>
    public static IReadOnlyList<RootAblation> Ablations { get; } = new[]
    {
        new RootAblation("root (default)", Array.Empty<(string, double)>()),
        RootAblation.Set("steps = 0", 0, "steps"),
        RootAblation.Set("steps = 5", 5, "steps"),
        RootAblation.Set("steps = 20", 20, "steps"),
        RootAblation.Set("γ = 0.5", 0.5, "gamma"),
        RootAblation.Set("γ = 1", 1, "gamma"),
        RootAblation.Set("positive constraint off", 0, "positive", "positive-constraint"),
        RootAblation.Set("gradient constraint off", 0, "gradient", "gc", "gradient-constraint"),
        RootAblation.Set("domain box off", 0, "box", "domain", "domain-constraint"),
        new RootAblation("direct redistribution", new[] { ("normalized", 0.0), ("direct", 1.0) }),
    };

    /// <summary>Parses a comma-separated list of catalog specs (a spec's own parameters are separated by <c>;</c> or kept in one token: <c>epsilon:epsilon=0.1</c>).</summary>
    /// <param name="text">e.g. <c>root,epsilon:epsilon=0.1,gradient-x-input</c>; <c>full</c> or <c>demo</c> for the predefined lists.</param>
    /// <returns>The methods.</returns>
    public static IReadOnlyList<BenchmarkMethod> ParseList(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        var t = text.Trim();
        if (t.Equals("full", StringComparison.OrdinalIgnoreCase) || t.Equals("all", StringComparison.OrdinalIgnoreCase)) return Full;
        if (t.Equals("demo", StringComparison.OrdinalIgnoreCase)) return Demo;
        // Split on commas that start a new method: a token without '=' or containing ':' starts a method.
        var methods = new List<string>();
        foreach (var token in t.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (methods.Count > 0 && token.Contains('=') && !token.Contains(':')) methods[^1] += "," + token;
            else methods.Add(token);
        }

        return methods.Select(BenchmarkMethod.Of).ToArray();
    }

    /// <summary>Checks every method against the catalog; unknown ones are returned as skipped with the reason.</summary>
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
                _ = m.CreateComposite();
                ok.Add(m);
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
    /// Turns the ablations into catalog specs of the <c>root</c> method, using the parameter names the catalog actually
    /// has; ablations whose parameter the catalog does not offer (or a missing <c>root</c>) are skipped with the reason.
    /// </summary>
    /// <param name="ablations">Ablations (default <see cref="Ablations"/>).</param>
    /// <param name="skipped">Ablations that cannot be built.</param>
    /// <returns>Buildable ablation methods.</returns>
    public static IReadOnlyList<BenchmarkMethod> ResolveAblations(IEnumerable<RootAblation>? ablations, out IReadOnlyList<SkippedMethod> skipped)
    {
        ablations ??= Ablations;
        var ok = new List<BenchmarkMethod>();
        var bad = new List<SkippedMethod>();
        ExplanationMethod? root = MethodCatalog.All.FirstOrDefault(m => string.Equals(m.Name, RootMethod, StringComparison.OrdinalIgnoreCase));
        foreach (var a in ablations)
        {
            if (root is null)
            {
                bad.Add(new SkippedMethod(a.Label, RootMethod, $"the catalog has no '{RootMethod}' method yet"));
                continue;
            }

            if (a.Candidates.Count == 0)
            {
                ok.Add(new BenchmarkMethod(a.Label, RootMethod));
                continue;
            }

            var match = a.Candidates.Select(c => (Key: root.Parameters.Keys.FirstOrDefault(k => Normalize(k) == Normalize(c.Name)), c.Value)).FirstOrDefault(c => c.Key is not null);
            if (match.Key is null)
            {
                bad.Add(new SkippedMethod(a.Label, RootMethod,
                    $"'{RootMethod}' has no parameter named {string.Join(" / ", a.Candidates.Select(c => c.Name))} (its parameters: {(root.Parameters.Count == 0 ? "none" : string.Join(", ", root.Parameters.Keys))})"));
                continue;
            }

            var spec = $"{RootMethod}:{match.Key}={match.Value.ToString("R", CultureInfo.InvariantCulture)}";
            try
            {
                _ = MethodCatalog.Parse(spec);
                ok.Add(new BenchmarkMethod(a.Label, spec));
            }
            catch (ArgumentException e)
            {
                bad.Add(new SkippedMethod(a.Label, spec, e.Message));
            }
        }

        skipped = bad;
        return ok;
    }

    private static string Normalize(string s) => s.Replace("-", "", StringComparison.Ordinal).Replace("_", "", StringComparison.Ordinal).ToLowerInvariant();
}
