using System.Globalization;
using System.Net;
using System.Text;
using TorchSharp;

namespace RootDtd.Display;

/// <summary>
/// How an <see cref="Explanation"/> displays in a .NET Interactive (Polyglot) notebook when it is the last expression
/// of a cell: a one-line <c>text/plain</c> summary, and HTML from the registered renderer (by default
/// <see cref="Imaging.ExplanationDisplay.ToHtml(Explanation)"/>: the input image, the overlay and the heatmap as inline
/// PNGs), or a text-only table (class, logit, conservation error, method) when the renderer fails. Loading this
/// assembly registers <see cref="ToHtml"/> and <see cref="ToSummary"/> with the core's <see cref="NotebookDisplay"/>
/// hook, which the formatter on <see cref="Explanation"/> asks (the core loads this assembly on the first display if
/// it can).
/// </summary>
public static class ExplanationFormatting
{
    private static readonly object Gate = new();
    private static Func<Explanation, string>? _htmlRenderer;

    /// <summary>
    /// Class names used by the notebook display, indexed by class (e.g. the 1000 ImageNet labels); <c>null</c> shows
    /// class indices only. Used by <c>RootDtd.Imaging</c>'s renderer too.
    /// </summary>
    public static IReadOnlyList<string>? ClassNames { get; set; }

    /// <summary>The HTML renderer in use, or <c>null</c> for the text-only table.</summary>
    public static Func<Explanation, string>? HtmlRenderer
    {
        get
        {
            lock (Gate) return _htmlRenderer;
        }
    }

    /// <summary>
    /// Replaces the HTML renderer (this assembly's module initializer registers <see cref="Imaging.ExplanationDisplay.ToHtml(Explanation)"/>).
    /// The renderer should not throw; if it does, the text-only table is shown with the error.
    /// </summary>
    /// <param name="renderer">The renderer, or <c>null</c> for the text-only table.</param>
    public static void RegisterHtmlRenderer(Func<Explanation, string>? renderer)
    {
        lock (Gate) _htmlRenderer = renderer;
    }

    /// <summary>The class name of <paramref name="classIndex"/> from <paramref name="classNames"/> (or <see cref="ClassNames"/>), or <c>null</c>.</summary>
    /// <param name="classIndex">The class index.</param>
    /// <param name="classNames">Names to use instead of <see cref="ClassNames"/>.</param>
    public static string? ClassName(long classIndex, IReadOnlyList<string>? classNames = null)
    {
        var names = classNames ?? ClassNames;
        return names is not null && classIndex >= 0 && classIndex < names.Count ? names[(int)classIndex] : null;
    }

    /// <summary>|Σ input relevance − start relevance| / |start relevance| of one sample.</summary>
    /// <param name="explanation">The explanation.</param>
    /// <param name="sample">The sample index.</param>
    public static double ConservationError(Explanation explanation, int sample)
    {
        ArgumentNullException.ThrowIfNull(explanation);
        return explanation.Conservation.RelativeError(sample);
    }

    /// <summary>The explained logit of every sample (<c>Logits[i, Targets[i]]</c>), copied to the CPU.</summary>
    /// <param name="explanation">The explanation (its tensors must not be disposed).</param>
    public static double[] TargetLogits(Explanation explanation)
    {
        ArgumentNullException.ThrowIfNull(explanation);
        using var scope = torch.NewDisposeScope();
        var logits = explanation.Logits.detach().cpu().to_type(torch.ScalarType.Float64);
        var result = new double[explanation.Targets.Length];
        for (int i = 0; i < result.Length; i++) result[i] = logits[i, explanation.Targets[i]].item<double>();
        return result;
    }

    /// <summary>
    /// The <c>text/plain</c> display: one line, e.g.
    /// <c>Explanation (epsilon-plus-flat) of 1 sample [1, 3, 224, 224]: #0 class 281 'tabby' logit 9.93, conservation error 2.1e-07</c>.
    /// For batches the first three samples are listed.
    /// </summary>
    /// <param name="explanation">The explanation.</param>
    public static string ToSummary(Explanation explanation)
    {
        ArgumentNullException.ThrowIfNull(explanation);
        var n = explanation.Targets.Length;
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"Explanation ({explanation.Method}) of {n} sample{(n == 1 ? "" : "s")}");
        try
        {
            sb.Append(CultureInfo.InvariantCulture, $" [{string.Join(", ", explanation.Input.shape)}]: ");
            var logits = TargetLogits(explanation);
            const int listed = 3;
            sb.Append(string.Join("; ", Enumerable.Range(0, Math.Min(n, listed)).Select(i =>
            {
                var name = ClassName(explanation.Targets[i]);
                return FormattableString.Invariant($"#{i} class {explanation.Targets[i]}{(name is null ? "" : $" '{name}'")} logit {logits[i]:g4}, conservation error {ConservationError(explanation, i):g2}");
            })));
            if (n > listed) sb.Append(CultureInfo.InvariantCulture, $"; … ({n - listed} more, max conservation error {explanation.Conservation.MaxRelativeError:g2})");
        }
        catch (Exception ex) when (ex is ObjectDisposedException or InvalidOperationException or ArgumentException)
        {
            sb.Append(CultureInfo.InvariantCulture, $": classes {string.Join(", ", explanation.Targets)} (tensors unavailable: {ex.Message})");
        }
        return sb.ToString();
    }

    /// <summary>
    /// The <c>text/html</c> display: the registered renderer's output (by default images, overlays and heatmaps), or a
    /// text-only table when no renderer is registered or it failed.
    /// </summary>
    /// <param name="explanation">The explanation.</param>
    public static string ToHtml(Explanation explanation)
    {
        ArgumentNullException.ThrowIfNull(explanation);
        var renderer = ResolveRenderer();
        string? error = null;
        if (renderer is not null)
        {
            try
            {
                return renderer(explanation);
            }
            catch (Exception ex)
            {
                error = ex.GetType().Name + ": " + ex.Message;
            }
        }
        return TextTable(explanation, error);
    }

    private static Func<Explanation, string>? ResolveRenderer()
    {
        lock (Gate) return _htmlRenderer;
    }

    private static string TextTable(Explanation e, string? error)
    {
        var sb = new StringBuilder();
        sb.Append("<div class=\"rootdtd-explanation\"><table><thead><tr><th>#</th><th>class</th><th>logit</th><th>conservation error</th></tr></thead><tbody>");
        double[]? logits = null;
        try
        {
            logits = TargetLogits(e);
        }
        catch (Exception ex) when (ex is ObjectDisposedException or InvalidOperationException or ArgumentException)
        {
            error ??= ex.Message;
        }
        const int maxRows = 8;
        for (int i = 0; i < Math.Min(e.Targets.Length, maxRows); i++)
        {
            var name = ClassName(e.Targets[i]);
            sb.Append(CultureInfo.InvariantCulture, $"<tr><td>{i}</td><td>{e.Targets[i]}{(name is null ? "" : " " + WebUtility.HtmlEncode(name))}</td>")
              .Append(CultureInfo.InvariantCulture, $"<td>{(logits is null ? "" : logits[i].ToString("g4", CultureInfo.InvariantCulture))}</td>")
              .Append(CultureInfo.InvariantCulture, $"<td>{ConservationError(e, i):g2}</td></tr>");
        }
        sb.Append("</tbody></table><div>method <code>").Append(WebUtility.HtmlEncode(e.Method)).Append("</code>");
        if (e.Targets.Length > maxRows) sb.Append(CultureInfo.InvariantCulture, $", first {maxRows} of {e.Targets.Length} samples");
        if (error is not null) sb.Append(" (images unavailable: ").Append(WebUtility.HtmlEncode(error)).Append(')');
        else sb.Append(" (no HTML renderer registered: ExplanationFormatting.RegisterHtmlRenderer)");
        sb.Append("</div></div>");
        return sb.ToString();
    }
}
