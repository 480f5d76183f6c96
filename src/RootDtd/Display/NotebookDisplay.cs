namespace RootDtd.Display;

/// <summary>
/// The core's only notebook code: the hook through which a display package tells .NET Interactive (Polyglot) notebooks
/// how an <see cref="Explanation"/> shows when it is the last expression of a cell. <see cref="Explanation"/> carries
/// the kernel's formatter-source convention attribute, whose formatters ask this hook; the formatting itself (a
/// one-line summary, the HTML with the input, overlay and heatmap as inline PNGs) lives in <c>RootDtd.Imaging</c>,
/// which registers it when it is loaded. If nothing is registered when an explanation is first displayed, the hook
/// loads <c>RootDtd.Imaging</c> once if it can be resolved (a notebook that has not touched an imaging type yet);
/// without it the kernel's own default display is used.
/// </summary>
public static class NotebookDisplay
{
    private static readonly object Gate = new();
    private static Func<Explanation, string>? _html;
    private static Func<Explanation, string>? _text;
    private static bool _triedImaging;

    /// <summary>
    /// Sets how explanations display: <paramref name="html"/> for <c>text/html</c>, <paramref name="text"/> for
    /// <c>text/plain</c> (<c>RootDtd.Imaging</c> calls this from its module initializer). <c>null</c> leaves that MIME
    /// type to the kernel's default display. The functions should not throw.
    /// </summary>
    /// <param name="html">The HTML of an explanation, or <c>null</c>.</param>
    /// <param name="text">The one-line text of an explanation, or <c>null</c>.</param>
    public static void Register(Func<Explanation, string>? html, Func<Explanation, string>? text)
    {
        lock (Gate)
        {
            _html = html;
            _text = text;
            _triedImaging = true;
        }
    }

    /// <summary>Whether a display is registered (for either MIME type).</summary>
    public static bool IsRegistered
    {
        get
        {
            lock (Gate) return _html is not null || _text is not null;
        }
    }

    /// <summary>The registered display, loading <c>RootDtd.Imaging</c> once when nothing is registered yet.</summary>
    internal static (Func<Explanation, string>? Html, Func<Explanation, string>? Text) Resolve()
    {
        lock (Gate)
        {
            if (_html is not null || _text is not null || _triedImaging) return (_html, _text);
            _triedImaging = true;
        }
        try
        {
            var imaging = AppDomain.CurrentDomain.GetAssemblies().FirstOrDefault(a => a.GetName().Name == "RootDtd.Imaging")
                ?? System.Reflection.Assembly.Load(new System.Reflection.AssemblyName("RootDtd.Imaging"));
            System.Runtime.CompilerServices.RuntimeHelpers.RunModuleConstructor(imaging.ManifestModule.ModuleHandle);
        }
        catch (Exception ex) when (ex is IOException or BadImageFormatException or TypeInitializationException)
        {
            // RootDtd.Imaging is not available: the kernel's default display it is.
        }
        lock (Gate) return (_html, _text);
    }
}

/// <summary>The formatter source that .NET Interactive finds through <see cref="TypeFormatterSourceAttribute"/> on <see cref="Explanation"/>: it asks <see cref="NotebookDisplay"/>.</summary>
internal sealed class ExplanationFormatterSource : DisplayFormatterSource<Explanation>
{
    /// <inheritdoc />
    protected override string? Html(Explanation value) => NotebookDisplay.Resolve().Html?.Invoke(value);

    /// <inheritdoc />
    protected override string? Text(Explanation value) => NotebookDisplay.Resolve().Text?.Invoke(value);
}
