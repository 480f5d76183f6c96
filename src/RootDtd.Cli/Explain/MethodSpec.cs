using System.Globalization;
using RootDtd.Composites;

namespace RootDtd.Cli.Explain;

/// <summary>A parsed <c>--method</c> value: <c>name</c> or <c>name:key=value,key=value</c>, resolved against <see cref="MethodCatalog"/>.</summary>
/// <param name="Spec">The text as given.</param>
/// <param name="Method">The catalog entry.</param>
/// <param name="Parameters">Every parameter of the method with the value used (defaults merged with the overrides).</param>
/// <param name="Composite">The composite built with those values.</param>
public sealed record MethodSpec(string Spec, ExplanationMethod Method, IReadOnlyDictionary<string, double> Parameters, Composite Composite)
{
    /// <summary>Parses and resolves a method specification.</summary>
    /// <exception cref="UsageException">Unknown method (the message lists them), unknown parameter or unreadable value.</exception>
    public static MethodSpec Parse(string spec)
    {
        if (string.IsNullOrWhiteSpace(spec)) throw new UsageException("--method is empty. " + KnownMethods());
        spec = spec.Trim();
        var colon = spec.IndexOf(':');
        var name = (colon < 0 ? spec : spec[..colon]).Trim();
        var method = MethodCatalog.All.FirstOrDefault(m => string.Equals(m.Name, name, StringComparison.OrdinalIgnoreCase))
            ?? throw new UsageException($"Unknown method '{name}'. " + KnownMethods());
        var overrides = new Dictionary<string, double>(StringComparer.Ordinal);
        if (colon >= 0)
        {
            foreach (var part in spec[(colon + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                var kv = part.Split('=', 2, StringSplitOptions.TrimEntries);
                if (kv.Length != 2 || kv[0].Length == 0 || !double.TryParse(kv[1], NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
                    throw new UsageException($"Cannot read '{part}' in --method '{spec}': expected key=value with a number (e.g. {method.Name}{ExampleParameters(method)}).");
                var key = method.Parameters.Keys.FirstOrDefault(k => string.Equals(k, kv[0], StringComparison.OrdinalIgnoreCase))
                    ?? throw new UsageException($"Method '{method.Name}' has no parameter '{kv[0]}' (parameters: {(method.Parameters.Count == 0 ? "none" : string.Join(", ", method.Parameters.Keys))}).");
                overrides[key] = value;
            }
        }
        var values = new Dictionary<string, double>(method.Parameters, StringComparer.Ordinal);
        foreach (var (k, v) in overrides) values[k] = v;
        Composite composite;
        try
        {
            composite = method.Create(overrides);
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"Invalid parameters for method '{method.Name}': {e.Message}");
        }
        return new MethodSpec(spec, method, values, composite);
    }

    /// <summary>"Known methods: …. Run 'rootdtd methods' …".</summary>
    public static string KnownMethods() =>
        $"Known methods: {string.Join(", ", MethodCatalog.All.Select(m => m.Name))}. Run 'rootdtd methods' for descriptions and parameters.";

    private static string ExampleParameters(ExplanationMethod method) =>
        method.Parameters.Count == 0 ? string.Empty : ":" + string.Join(",", method.Parameters.Select(p => p.Key + "=" + p.Value.ToString("g", CultureInfo.InvariantCulture)));
}
