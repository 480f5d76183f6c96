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

/// <summary>
/// A formatter source for a type that knows its own HTML and one-line text: yields a <c>text/html</c> and a
/// <c>text/plain</c> formatter for <typeparamref name="T"/>.
/// </summary>
/// <typeparam name="T">The displayed type.</typeparam>
internal abstract class DisplayFormatterSource<T>
{
    /// <summary>Called by the kernel: one formatter per MIME type.</summary>
    public IEnumerable<object> CreateTypeFormatters()
    {
        yield return new MimeFormatter("text/html", Html);
        yield return new MimeFormatter("text/plain", Text);
    }

    /// <summary>The HTML of a value, or <c>null</c> to leave it to the kernel's default display.</summary>
    protected abstract string? Html(T value);

    /// <summary>The one-line text of a value, or <c>null</c> to leave it to the kernel's default display.</summary>
    protected abstract string? Text(T value);

    /// <summary>One formatter as the kernel expects it: <c>MimeType</c>, <c>Type</c>, <c>Format(object, TextWriter)</c>.</summary>
    public sealed class MimeFormatter
    {
        private readonly Func<T, string?> _format;

        internal MimeFormatter(string mimeType, Func<T, string?> format)
        {
            MimeType = mimeType;
            _format = format;
        }

        /// <summary>The MIME type.</summary>
        public string MimeType { get; }

        /// <summary>The formatted type.</summary>
        public Type Type => typeof(T);

        /// <summary>Writes the display of <paramref name="instance"/>; false when it is not a <typeparamref name="T"/> or there is no display for this MIME type.</summary>
        public bool Format(object instance, TextWriter writer)
        {
            if (instance is not T value || _format(value) is not { } formatted) return false;
            writer.Write(formatted);
            return true;
        }
    }
}
