namespace RootDtd.Display;

/// <summary>
/// .NET Interactive's zero-dependency formatter convention: the notebook kernel's <c>Formatter</c> looks for an
/// attribute whose type is <em>named</em> <c>TypeFormatterSourceAttribute</c> (in any namespace), creates
/// <see cref="FormatterSourceType"/>, calls its <c>CreateTypeFormatters()</c> and uses each returned object's
/// <c>MimeType</c>, <c>Type</c> and <c>bool Format(object, TextWriter)</c>. No package reference is needed.
/// </summary>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Struct, AllowMultiple = true, Inherited = true)]
internal sealed class TypeFormatterSourceAttribute : Attribute
{
    /// <summary>Creates the attribute.</summary>
    /// <param name="formatterSourceType">A class with a public parameterless constructor and <c>CreateTypeFormatters()</c>.</param>
    public TypeFormatterSourceAttribute(Type formatterSourceType) => FormatterSourceType = formatterSourceType;

    /// <summary>The formatter source.</summary>
    public Type FormatterSourceType { get; }

    /// <summary>MIME types the kernel should prefer for the attributed type (first = default display).</summary>
    public string[]? PreferredMimeTypes { get; set; }
}
