using System.Globalization;
using System.Text;

namespace RootDtd.Evaluation.Results;

/// <summary>One method's per-image values under its row label.</summary>
/// <param name="Method">Row label.</param>
/// <param name="Values">Per-image values.</param>
public sealed record MethodPerImage(string Method, PerImageValues Values);

/// <summary>One method and metric: the value's interval and the paired difference to each reference (null: the method is that reference).</summary>
/// <param name="Value">Mean/metric with its interval.</param>
/// <param name="Differences">Per reference, metric(method) − metric(reference) with its paired interval; null on the reference's own row.</param>
public sealed record ComparisonCell(BootstrapInterval Value, IReadOnlyList<BootstrapInterval?> Differences);

/// <summary>
/// Bootstrap intervals of every method and metric and paired differences to reference methods (e.g. z⁺ and the best
/// baseline): one set of resampled image indices for everything, so every difference is paired and every number
/// reproducible from the seed.
/// </summary>
public sealed class BootstrapComparison
{
    private BootstrapComparison(IReadOnlyList<string> methods, IReadOnlyList<string> references, IReadOnlyList<PerImageMetric> metrics, ComparisonCell[][] cells, int samples, BootstrapOptions options)
    {
        Methods = methods;
        References = references;
        Metrics = metrics;
        Cells = cells;
        Samples = samples;
        Options = options;
    }

    /// <summary>Row labels.</summary>
    public IReadOnlyList<string> Methods { get; }

    /// <summary>Reference methods of the differences.</summary>
    public IReadOnlyList<string> References { get; }

    /// <summary>Metrics (columns).</summary>
    public IReadOnlyList<PerImageMetric> Metrics { get; }

    /// <summary>[method][metric].</summary>
    public IReadOnlyList<IReadOnlyList<ComparisonCell>> Cells { get; }

    /// <summary>Images.</summary>
    public int Samples { get; }

    /// <summary>Bootstrap options used.</summary>
    public BootstrapOptions Options { get; }

    /// <summary>The cell of a method and metric.</summary>
    /// <param name="method">Row label.</param>
    /// <param name="metric">Metric name.</param>
    public ComparisonCell this[string method, string metric]
    {
        get
        {
            var i = IndexOf(Methods, method);
            var m = Metrics.ToList().FindIndex(x => x.Name == PerImageMetrics.Get(metric).Name);
            if (m < 0) throw new ArgumentException($"The comparison has no metric '{metric}'; it has {string.Join(", ", Metrics.Select(x => x.Name))}.", nameof(metric));
            return Cells[i][m];
        }
    }

    /// <summary>Computes the intervals and paired differences.</summary>
    /// <param name="methods">The methods (all of the same images, in the same order).</param>
    /// <param name="references">Methods to take paired differences to (each must be one of <paramref name="methods"/>).</param>
    /// <param name="metrics">Metric names (default <see cref="PerImageMetrics.ReportMetrics"/>); metrics whose per-image columns the values lack are left out.</param>
    /// <param name="options">Bootstrap options.</param>
    /// <exception cref="ArgumentException">No methods, an unknown reference or metric, values of other images.</exception>
    public static BootstrapComparison Compute(IReadOnlyList<MethodPerImage> methods, IReadOnlyList<string> references, IReadOnlyList<string>? metrics = null, BootstrapOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(methods);
        ArgumentNullException.ThrowIfNull(references);
        options ??= new BootstrapOptions();
        options.Validate();
        if (methods.Count == 0) throw new ArgumentException("No method has per-image values to compare.", nameof(methods));
        var names = methods.Select(m => m.Method).ToList();
        var refIndex = references.Select(r => IndexOf(names, r)).ToList();
        var n = methods[0].Values.Samples;
        foreach (var m in methods)
            if (m.Values.Samples != n)
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"'{m.Method}' has per-image values of {m.Values.Samples} images, '{methods[0].Method}' of {n}: paired intervals need the same images."), nameof(methods));
        var requested = (metrics ?? PerImageMetrics.ReportMetrics).Select(PerImageMetrics.Get).ToList();
        var chosen = requested.Where(x => methods.All(m => x.Required.All(m.Values.Has))).ToList();
        if (chosen.Count == 0)
            throw new ArgumentException($"None of the metrics {string.Join(", ", requested.Select(x => x.Name))} can be computed from the per-image values (columns: {string.Join(", ", methods[0].Values.Columns)}).", nameof(metrics));
        var bootstrap = new Bootstrap(n, options);
        var cells = new ComparisonCell[methods.Count][];
        for (var i = 0; i < methods.Count; i++)
        {
            cells[i] = new ComparisonCell[chosen.Count];
            for (var k = 0; k < chosen.Count; k++)
            {
                var value = bootstrap.Interval(chosen[k], methods[i].Values);
                var diffs = refIndex.Select(r => r == i ? null : bootstrap.PairedDifference(chosen[k], methods[i].Values, methods[r].Values)).ToArray();
                cells[i][k] = new ComparisonCell(value, diffs);
            }
        }
        return new BootstrapComparison(names, references.Select(r => names[IndexOf(names, r)]).ToArray(), chosen, cells, n, options);
    }

    /// <summary>Decimals a metric is shown with (AUCs ×100: 1, fractions: 3).</summary>
    /// <param name="metric">Metric.</param>
    public static int Digits(PerImageMetric metric) => metric.Name.StartsWith("AUC", StringComparison.Ordinal) ? 1 : 3;

    /// <summary>
    /// The Markdown section "95 % bootstrap intervals and paired differences": one table of every method's values with
    /// intervals, then one table per reference of the paired differences.
    /// </summary>
    /// <param name="heading">Markdown heading prefix (e.g. <c>##</c>), or empty for a bold title.</param>
    public string ToMarkdown(string heading = "")
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        var pct = (Options.Confidence * 100).ToString("0.#", inv);
        var title = $"{pct} % bootstrap intervals and paired differences";
        sb.Append(heading.Length > 0 ? $"{heading} {title}\n\n" : $"**{title}**\n\n");
        sb.Append(string.Create(inv, $"Percentile bootstrap over the {Samples} images: {Options.Resamples} resamples of {Samples} images drawn with replacement (seed {Options.Seed}); "))
          .Append("each metric is recomputed on every resample by the report's own definition (dataset-accumulated IoU/mIoU from the resampled images' pixel counts, the other columns as means over images). ")
          .Append("A paired difference evaluates both methods on the same resampled images; its interval containing 0 means a tie at this sample size. ")
          .Append("For AUC+ lower is better, so a better method has a negative difference there; `*` marks a difference whose interval excludes 0.\n\n");
        sb.Append("| method | ").Append(string.Join(" | ", Metrics.Select(m => m.Name))).Append(" |\n");
        sb.Append("|---|").Append(string.Concat(Metrics.Select(_ => "---:|"))).Append('\n');
        for (var i = 0; i < Methods.Count; i++)
            sb.Append("| ").Append(Methods[i].Replace("|", "\\|", StringComparison.Ordinal)).Append(" | ")
              .Append(string.Join(" | ", Metrics.Select((m, k) => Cells[i][k].Value.Format(Digits(m))))).Append(" |\n");
        for (var r = 0; r < References.Count; r++)
        {
            sb.Append("\nPaired difference to `").Append(References[r]).Append("` (method − ").Append(References[r]).Append("):\n\n");
            sb.Append("| method | ").Append(string.Join(" | ", Metrics.Select(m => "Δ " + m.Name))).Append(" |\n");
            sb.Append("|---|").Append(string.Concat(Metrics.Select(_ => "---:|"))).Append('\n');
            for (var i = 0; i < Methods.Count; i++)
            {
                sb.Append("| ").Append(Methods[i].Replace("|", "\\|", StringComparison.Ordinal)).Append(" | ");
                sb.Append(string.Join(" | ", Metrics.Select((m, k) => Cells[i][k].Differences[r] is { } d ? d.Format(Digits(m), signed: true) + (d.ExcludesZero ? " *" : "") : "(reference)")));
                sb.Append(" |\n");
            }
        }
        return sb.Append('\n').ToString();
    }

    private static int IndexOf(IReadOnlyList<string> names, string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        for (var i = 0; i < names.Count; i++) if (names[i] == name) return i;
        throw new ArgumentException($"Unknown method '{name}': the methods with per-image values are {string.Join(", ", names)}.", nameof(name));
    }
}
