using System.Globalization;

namespace RootDtd.Composites;

/// <summary>What values a method parameter takes.</summary>
public enum MethodParameterKind
{
    /// <summary>A finite real number (e.g. <c>epsilon=0.25</c>); further limits are checked by the rule it feeds.</summary>
    Number,

    /// <summary>A whole number ≥ 0 (e.g. <c>steps=20</c>).</summary>
    Count,

    /// <summary>On or off: <c>1</c>/<c>0</c> (also <c>true</c>/<c>false</c>, <c>on</c>/<c>off</c>).</summary>
    Switch,

    /// <summary>A name (e.g. a module path <c>layer=layer3</c> or a method <c>base=epsilon-plus-flat</c>); no commas, colons or spaces.</summary>
    Text,
}

/// <summary>
/// One parameter of an <see cref="ExplanationMethod"/>: its name in a method spec (<c>name:key=value,…</c>), the kind of
/// value it takes, and how it reads and sets a field of the method's typed options record. Its default is the value of
/// that field in the options record's default instance (written once, in the record).
/// </summary>
public abstract class MethodParameter
{
    private protected MethodParameter(string name, MethodParameterKind kind, string description)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (name.Any(c => c is ',' or '=' or ':' || char.IsWhiteSpace(c)))
            throw new ArgumentException($"A parameter name cannot contain ',', '=', ':' or spaces; got '{name}'.", nameof(name));
        Name = name;
        Kind = kind;
        Description = description ?? string.Empty;
    }

    /// <summary>The key in a method spec (matched case-insensitively).</summary>
    public string Name { get; }

    /// <summary>The kind of value.</summary>
    public MethodParameterKind Kind { get; }

    /// <summary>One line: what the parameter changes.</summary>
    public string Description { get; }

    /// <summary>What a valid value looks like, for error messages: "a number", "a whole number ≥ 0", "a switch (0 or 1)".</summary>
    public string ExpectedValue => Kind switch
    {
        MethodParameterKind.Count => "a whole number ≥ 0",
        MethodParameterKind.Switch => "a switch (0 or 1)",
        MethodParameterKind.Text => "a name",
        _ => "a number",
    };

    /// <summary>The value in <paramref name="options"/> as a spec writes it (numbers via <see cref="Format"/>; names as they are).</summary>
    public virtual string TextIn(object options) => Format(ValueIn(options));

    /// <summary>Returns a copy of <paramref name="options"/> with this text parameter set (only for <see cref="MethodParameterKind.Text"/>).</summary>
    internal virtual object WithText(object options, string text) =>
        throw new InvalidOperationException($"Parameter '{Name}' takes {ExpectedValue}, not a name.");

    /// <summary>Reads the parameter's value from an options object of the method (switches as 0/1).</summary>
    public abstract double ValueIn(object options);

    /// <summary>Returns a copy of <paramref name="options"/> with this parameter set to <paramref name="value"/> (already checked by <see cref="TryRead"/>).</summary>
    internal abstract object With(object options, double value);

    /// <summary>Reads a value written in a spec: invariant-culture numbers; switches also accept true/false and on/off.</summary>
    /// <returns>False when the text is not <see cref="ExpectedValue"/>.</returns>
    public bool TryRead(string text, out double value)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = text.Trim();
        value = 0;
        if (Kind == MethodParameterKind.Switch)
        {
            switch (text.ToLowerInvariant())
            {
                case "1" or "true" or "on":
                    value = 1;
                    return true;
                case "0" or "false" or "off":
                    value = 0;
                    return true;
                default:
                    return false;
            }
        }
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out value) || !double.IsFinite(value)) return false;
        return Kind != MethodParameterKind.Count || IsCount(value);
    }

    /// <summary>True when <paramref name="value"/> is valid for the parameter's kind.</summary>
    public bool Accepts(double value) => Kind switch
    {
        MethodParameterKind.Text => false,
        MethodParameterKind.Switch => value is 0 or 1,
        MethodParameterKind.Count => IsCount(value),
        _ => double.IsFinite(value),
    };

    /// <summary>The value as a spec writes it: switches and counts as integers, numbers in the shortest round-trip form.</summary>
    public string Format(double value) => Kind == MethodParameterKind.Number
        ? value.ToString("R", CultureInfo.InvariantCulture)
        : ((long)value).ToString(CultureInfo.InvariantCulture);

    /// <summary>"epsilon (a number)" — for parameter lists in error messages.</summary>
    public override string ToString() => $"{Name} ({ExpectedValue})";

    private static bool IsCount(double value) => value >= 0 && value == Math.Floor(value) && value <= int.MaxValue;
}

/// <summary>A parameter bound to a field of the options record <typeparamref name="TOptions"/>.</summary>
/// <typeparam name="TOptions">The method's options record.</typeparam>
public sealed class MethodParameter<TOptions> : MethodParameter where TOptions : class
{
    private readonly Func<TOptions, double> _get;
    private readonly Func<TOptions, double, TOptions> _set;
    private readonly Func<TOptions, string>? _getText;
    private readonly Func<TOptions, string, TOptions>? _setText;

    private MethodParameter(string name, MethodParameterKind kind, string description, Func<TOptions, double> get, Func<TOptions, double, TOptions> set)
        : base(name, kind, description)
    {
        _get = get ?? throw new ArgumentNullException(nameof(get));
        _set = set ?? throw new ArgumentNullException(nameof(set));
    }

    private MethodParameter(string name, string description, Func<TOptions, string> get, Func<TOptions, string, TOptions> set)
        : base(name, MethodParameterKind.Text, description)
    {
        _getText = get ?? throw new ArgumentNullException(nameof(get));
        _setText = set ?? throw new ArgumentNullException(nameof(set));
        _get = _ => double.NaN;
        _set = (_, _) => throw new InvalidOperationException($"Parameter '{name}' takes a name, not a number.");
    }

    /// <summary>A parameter whose value is a name (no commas, colons, equals signs or spaces; empty = the method's automatic choice).</summary>
    /// <param name="name">Key in a spec.</param>
    /// <param name="description">What it changes.</param>
    /// <param name="get">Reads the field.</param>
    /// <param name="set">Copies the record with the field set.</param>
    public static MethodParameter<TOptions> Text(string name, string description, Func<TOptions, string> get, Func<TOptions, string, TOptions> set) =>
        new(name, description, get, set);

    /// <inheritdoc />
    public override string TextIn(object options) => _getText is null ? base.TextIn(options) : _getText(Cast(options));

    internal override object WithText(object options, string text)
    {
        if (_setText is null) return base.WithText(options, text);
        ArgumentNullException.ThrowIfNull(text);
        text = text.Trim();
        if (text.Any(c => c is ',' or '=' or ':' || char.IsWhiteSpace(c)))
            throw new ArgumentException($"'{Name}' must be a name without ',', '=', ':' or spaces; got '{text}'.");
        return _setText(Cast(options), text);
    }

    /// <summary>A real-valued parameter.</summary>
    /// <param name="name">Key in a spec.</param>
    /// <param name="description">What it changes.</param>
    /// <param name="get">Reads the field.</param>
    /// <param name="set">Copies the record with the field set (typically <c>(o, v) =&gt; o with { Field = v }</c>).</param>
    public static MethodParameter<TOptions> Number(string name, string description, Func<TOptions, double> get, Func<TOptions, double, TOptions> set) =>
        new(name, MethodParameterKind.Number, description, get, set);

    /// <summary>A whole-number parameter (≥ 0).</summary>
    /// <inheritdoc cref="Number" />
    public static MethodParameter<TOptions> Count(string name, string description, Func<TOptions, int> get, Func<TOptions, int, TOptions> set)
    {
        ArgumentNullException.ThrowIfNull(get);
        ArgumentNullException.ThrowIfNull(set);
        return new(name, MethodParameterKind.Count, description, o => get(o), (o, v) => set(o, checked((int)v)));
    }

    /// <summary>An on/off parameter (0/1 in a spec).</summary>
    /// <inheritdoc cref="Number" />
    public static MethodParameter<TOptions> Switch(string name, string description, Func<TOptions, bool> get, Func<TOptions, bool, TOptions> set)
    {
        ArgumentNullException.ThrowIfNull(get);
        ArgumentNullException.ThrowIfNull(set);
        return new(name, MethodParameterKind.Switch, description, o => get(o) ? 1 : 0, (o, v) => set(o, v != 0));
    }

    /// <summary>The same parameter on an options record that contains a <typeparamref name="TOptions"/> (e.g. the root options inside <see cref="RootUpperOptions"/>).</summary>
    /// <typeparam name="TOuter">The containing record.</typeparam>
    /// <param name="get">Reads the contained record.</param>
    /// <param name="set">Copies the containing record with the contained one replaced.</param>
    public MethodParameter<TOuter> Within<TOuter>(Func<TOuter, TOptions> get, Func<TOuter, TOptions, TOuter> set) where TOuter : class
    {
        ArgumentNullException.ThrowIfNull(get);
        ArgumentNullException.ThrowIfNull(set);
        if (Kind == MethodParameterKind.Text && _getText is { } getText && _setText is { } setText)
            return MethodParameter<TOuter>.Text(Name, Description, o => getText(get(o)), (o, v) => set(o, setText(get(o), v)));
        return MethodParameter<TOuter>.Create(Name, Kind, Description, o => _get(get(o)), (o, v) => set(o, _set(get(o), v)));
    }

    /// <summary>The value in a typed options record.</summary>
    public double ValueIn(TOptions options) => _get(options ?? throw new ArgumentNullException(nameof(options)));

    /// <inheritdoc />
    public override double ValueIn(object options) => ValueIn(Cast(options));

    internal override object With(object options, double value) => _set(Cast(options), value);

    private static MethodParameter<TOptions> Create(string name, MethodParameterKind kind, string description, Func<TOptions, double> get, Func<TOptions, double, TOptions> set) =>
        new(name, kind, description, get, set);

    private TOptions Cast(object options) => options as TOptions
        ?? throw new ArgumentException($"Parameter '{Name}' reads {typeof(TOptions).Name}; got {options?.GetType().Name ?? "null"}.", nameof(options));
}
