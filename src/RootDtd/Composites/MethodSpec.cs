namespace RootDtd.Composites;

/// <summary>A method spec that cannot be read: unknown method, unknown parameter, or a value of the wrong kind. The message says what is valid.</summary>
public sealed class MethodSpecException : ArgumentException
{
    /// <summary>Creates the exception.</summary>
    public MethodSpecException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>
/// A method of <see cref="MethodCatalog"/> with its typed options: what <c>name</c> or <c>name:key=value,…</c> means.
/// <see cref="Parse"/> is the one reader of that syntax (the CLI, the benchmark and the tools use it); <see cref="Text"/>
/// writes it back (canonical: the method's name and the parameters that differ from their defaults, in declaration
/// order), and <c>Parse(spec.Text)</c> gives an equal spec.
/// </summary>
/// <example>
/// <code>
/// var spec = MethodSpec.Parse("root:steps=5,normalized=0");
/// var options = spec.OptionsAs&lt;RootInferenceOptions&gt;();     // Steps = 5, Redistribution = Direct
/// using var explainer = new Explainer(model, spec.CreateComposite());
/// </code>
/// </example>
public sealed class MethodSpec : IEquatable<MethodSpec>
{
    private MethodSpec(ExplanationMethod method, object options)
    {
        Method = method;
        Options = options;
        Values = method.ValuesOf(options);
        TextValues = method.Parameters.Where(p => p.Kind == MethodParameterKind.Text).ToDictionary(p => p.Name, p => p.TextIn(options), StringComparer.Ordinal);
        var changed = method.Parameters.Where(p => p.TextIn(options) != p.TextIn(method.DefaultOptions)).ToList();
        Text = changed.Count == 0 ? method.Name : method.Name + ":" + string.Join(",", changed.Select(p => p.Name + "=" + p.TextIn(options)));
    }

    /// <summary>The catalog entry.</summary>
    public ExplanationMethod Method { get; }

    /// <summary>The typed options record (of <see cref="ExplanationMethod.OptionsType"/>).</summary>
    public object Options { get; }

    /// <summary>Every parameter of the method with the value used (defaults merged with the given ones), in declaration order.</summary>
    public IReadOnlyDictionary<string, double> Values { get; }

    /// <summary>Every name-valued parameter (<see cref="MethodParameterKind.Text"/>) with the value used; not in <see cref="Values"/>.</summary>
    public IReadOnlyDictionary<string, string> TextValues { get; }

    /// <summary>The canonical spec text, e.g. <c>root:steps=5,normalized=0</c>.</summary>
    public string Text { get; }

    /// <summary>The options as <typeparamref name="TOptions"/>.</summary>
    /// <exception cref="InvalidOperationException">The method's options are of another type.</exception>
    public TOptions OptionsAs<TOptions>() where TOptions : class => Options as TOptions
        ?? throw new InvalidOperationException($"Method '{Method.Name}' has {Method.OptionsType.Name} options, not {typeof(TOptions).Name}.");

    /// <summary>Builds a fresh composite.</summary>
    public Composite CreateComposite() => Method.CreateFrom(Options);

    /// <summary>A method with its default options.</summary>
    /// <exception cref="MethodSpecException">Unknown method.</exception>
    public static MethodSpec Default(string name) => Of(MethodCatalog.Get(name), MethodCatalog.Get(name).DefaultOptions);

    /// <summary>A method with typed options (checked: the composite must build).</summary>
    /// <exception cref="MethodSpecException">The options are rejected by the method's rules.</exception>
    public static MethodSpec Of<TOptions>(ExplanationMethod<TOptions> method, TOptions options) where TOptions : class => Of((ExplanationMethod)method, options);

    /// <summary>A method with options of its <see cref="ExplanationMethod.OptionsType"/> (checked: the composite must build).</summary>
    /// <exception cref="MethodSpecException">Wrong options type, or options rejected by the method's rules.</exception>
    public static MethodSpec Of(ExplanationMethod method, object options)
    {
        ArgumentNullException.ThrowIfNull(method);
        ArgumentNullException.ThrowIfNull(options);
        if (!method.OptionsType.IsInstanceOfType(options))
            throw new MethodSpecException($"Method '{method.Name}' takes {method.OptionsType.Name} options; got {options.GetType().Name}.");
        var spec = new MethodSpec(method, options);
        try
        {
            _ = spec.CreateComposite();
        }
        catch (ArgumentException e) when (e is not MethodSpecException)
        {
            throw new MethodSpecException($"Invalid parameters for method '{method.Name}' ({spec.Text}): {MessageOf(e)}", e);
        }
        return spec;
    }

    /// <summary>A method with some parameters changed from their defaults (names case-insensitive).</summary>
    /// <exception cref="MethodSpecException">Unknown parameter (the message lists the valid ones) or a value of the wrong kind.</exception>
    public static MethodSpec Of(ExplanationMethod method, IReadOnlyDictionary<string, double>? overrides)
    {
        ArgumentNullException.ThrowIfNull(method);
        var options = method.DefaultOptions;
        foreach (var (key, value) in overrides ?? new Dictionary<string, double>())
        {
            var p = Parameter(method, key);
            if (!p.Accepts(value))
                throw new MethodSpecException($"'{p.Name}' of method '{method.Name}' must be {p.ExpectedValue}; got {value}.");
            options = Set(method, p, options, value);
        }
        return Of(method, options);
    }

    /// <summary>
    /// Reads <c>name</c> or <c>name:key=value,key=value</c>: method names and keys case-insensitive, numbers in invariant
    /// culture, switches as 0/1 (or true/false, on/off), whitespace around parts ignored.
    /// </summary>
    /// <exception cref="MethodSpecException">
    /// An empty spec or unknown method (the message lists the methods), an unknown parameter (lists the method's
    /// parameters with their kinds), a part that is not <c>key=value</c>, a key given twice, or a value of the wrong kind
    /// (says what is expected).
    /// </exception>
    public static MethodSpec Parse(string text)
    {
        if (string.IsNullOrWhiteSpace(text))
            throw new MethodSpecException($"The method spec is empty. Known methods: {KnownMethods()}.");
        text = text.Trim();
        var colon = text.IndexOf(':');
        var name = (colon < 0 ? text : text[..colon]).Trim();
        var method = MethodCatalog.TryGet(name)
            ?? throw new MethodSpecException($"Unknown method '{name}'. Known methods: {KnownMethods()}.");
        var options = method.DefaultOptions;
        if (colon >= 0)
        {
            var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
            foreach (var part in text[(colon + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                var kv = part.Split('=', 2, StringSplitOptions.TrimEntries);
                if (kv.Length != 2 || kv[0].Length == 0)
                    throw new MethodSpecException($"Cannot read '{part}' in '{text}': expected key=value ({method.DescribeParameters()}).");
                var p = Parameter(method, kv[0]);
                if (!seen.Add(p.Name)) throw new MethodSpecException($"'{p.Name}' is given twice in '{text}'.");
                if (p.Kind == MethodParameterKind.Text)
                {
                    try
                    {
                        options = p.WithText(options, kv[1]);
                    }
                    catch (ArgumentException e)
                    {
                        throw new MethodSpecException($"Cannot read '{part}' in '{text}': {MessageOf(e)}", e);
                    }
                    continue;
                }
                if (!p.TryRead(kv[1], out var value))
                    throw new MethodSpecException($"Cannot read '{part}' in '{text}': '{p.Name}' must be {p.ExpectedValue} (default {p.TextIn(method.DefaultOptions)}).");
                options = Set(method, p, options, value);
            }
        }
        return Of(method, options);
    }

    /// <summary>The names of every catalog method, comma-separated.</summary>
    public static string KnownMethods() => string.Join(", ", MethodCatalog.All.Select(m => m.Name));

    /// <inheritdoc />
    public bool Equals(MethodSpec? other) => other is not null && ReferenceEquals(Method, other.Method) && Options.Equals(other.Options);

    /// <inheritdoc />
    public override bool Equals(object? obj) => Equals(obj as MethodSpec);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Method.Name, Options);

    /// <summary>The canonical text (<see cref="Text"/>).</summary>
    public override string ToString() => Text;

    private static MethodParameter Parameter(ExplanationMethod method, string key) => method.FindParameter(key)
        ?? throw new MethodSpecException(method.Parameters.Count == 0
            ? $"Method '{method.Name}' has no parameter '{key.Trim()}': it takes no parameters."
            : $"Method '{method.Name}' has no parameter '{key.Trim()}'. Valid parameters: {string.Join(", ", method.Parameters.Select(p => $"{p.Name} ({p.ExpectedValue}, default {DefaultText(p, method)})"))}.");

    private static string DefaultText(MethodParameter p, ExplanationMethod method) => p.TextIn(method.DefaultOptions) is { Length: > 0 } t ? t : "automatic";

    private static object Set(ExplanationMethod method, MethodParameter p, object options, double value)
    {
        try
        {
            return p.With(options, value);
        }
        catch (Exception e) when (e is ArgumentException or OverflowException)
        {
            throw new MethodSpecException($"Invalid value {p.Format(value)} for '{p.Name}' of method '{method.Name}': {MessageOf(e)}", e);
        }
    }

    /// <summary>The message without .NET's "(Parameter 'x')" and "Actual value was" suffixes.</summary>
    private static string MessageOf(Exception e)
    {
        var m = e.Message;
        var cut = m.IndexOf(" (Parameter '", StringComparison.Ordinal);
        if (cut < 0) cut = m.IndexOf(Environment.NewLine + "Actual value was", StringComparison.Ordinal);
        return cut < 0 ? m : m[..cut];
    }
}
