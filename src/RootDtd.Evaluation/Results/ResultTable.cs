using System.Globalization;
using System.Text;
using System.Text.Json;

namespace RootDtd.Evaluation.Results;

/// <summary>One row of a <see cref="ResultTable"/>: a method and its metric values.</summary>
/// <param name="Method">Method name (for example "DTD root" or "random (reference)").</param>
/// <param name="Values">Metric name → value; missing or NaN values are rendered as "–".</param>
public sealed record ResultRow(string Method, IReadOnlyDictionary<string, double> Values);

/// <summary>A method × metric table with Markdown, CSV and JSON rendering.</summary>
public sealed class ResultTable
{
    private readonly List<ResultRow> _rows = new();
    private readonly List<string> _columns;

    /// <summary>Creates an empty table.</summary>
    /// <param name="title">Title (Markdown caption).</param>
    /// <param name="columns">Metric names in display order.</param>
    public ResultTable(string title, IEnumerable<string> columns)
    {
        ArgumentNullException.ThrowIfNull(title);
        ArgumentNullException.ThrowIfNull(columns);
        Title = title;
        _columns = columns.ToList();
        if (_columns.Count == 0) throw new ArgumentException("At least one column is required.", nameof(columns));
    }

    /// <summary>Title.</summary>
    public string Title { get; }

    /// <summary>Metric names.</summary>
    public IReadOnlyList<string> Columns => _columns;

    /// <summary>Rows in insertion order.</summary>
    public IReadOnlyList<ResultRow> Rows => _rows;

    /// <summary>Appends a row; unknown metric names are rejected.</summary>
    /// <param name="method">Method name.</param>
    /// <param name="values">Metric values.</param>
    /// <returns>This table.</returns>
    public ResultTable AddRow(string method, IReadOnlyDictionary<string, double> values)
    {
        ArgumentException.ThrowIfNullOrEmpty(method);
        ArgumentNullException.ThrowIfNull(values);
        var unknown = values.Keys.Where(k => !_columns.Contains(k)).ToArray();
        if (unknown.Length > 0) throw new ArgumentException($"Unknown metric(s) {string.Join(", ", unknown)}; columns are {string.Join(", ", _columns)}.", nameof(values));
        _rows.Add(new ResultRow(method, new Dictionary<string, double>(values)));
        return this;
    }

    /// <summary>Appends all rows of another table with the same columns.</summary>
    /// <param name="other">Table to append.</param>
    /// <returns>This table.</returns>
    public ResultTable Append(ResultTable other)
    {
        ArgumentNullException.ThrowIfNull(other);
        foreach (var r in other.Rows) AddRow(r.Method, r.Values);
        return this;
    }

    /// <summary>Renders a GitHub-flavoured Markdown table.</summary>
    /// <param name="digits">Decimals per value.</param>
    /// <returns>Markdown text (title line, header, separator, one line per row).</returns>
    public string ToMarkdown(int digits = 3)
    {
        var sb = new StringBuilder();
        if (Title.Length > 0) sb.Append("**").Append(Title).Append("**\n\n");
        sb.Append("| method | ").Append(string.Join(" | ", _columns)).Append(" |\n");
        sb.Append("|---|").Append(string.Concat(_columns.Select(_ => "---:|"))).Append('\n');
        foreach (var r in _rows)
        {
            sb.Append("| ").Append(r.Method.Replace("|", "\\|")).Append(" | ");
            sb.Append(string.Join(" | ", _columns.Select(c => Format(r.Values.TryGetValue(c, out var v) ? v : double.NaN, digits))));
            sb.Append(" |\n");
        }

        return sb.ToString();
    }

    /// <summary>Renders CSV (invariant culture; header <c>method,&lt;columns&gt;</c>; NaN as empty).</summary>
    /// <returns>CSV text.</returns>
    public string ToCsv()
    {
        var sb = new StringBuilder();
        sb.Append("method,").Append(string.Join(",", _columns.Select(Csv.Escape))).Append('\n');
        foreach (var r in _rows)
        {
            sb.Append(Csv.Escape(r.Method));
            foreach (var c in _columns)
            {
                sb.Append(',');
                if (r.Values.TryGetValue(c, out var v) && !double.IsNaN(v)) sb.Append(v.ToString("R", CultureInfo.InvariantCulture));
            }

            sb.Append('\n');
        }

        return sb.ToString();
    }

    /// <summary>
    /// Renders JSON: <c>{"title":…,"columns":[{"id":"auc_plus_coarse","label":"AUC+ coarse ↓"},…],"rows":[{"method":…,"values":{"auc_plus_coarse":…}}]}</c>
    /// (NaN as null). Values are keyed by stable identifiers (<see cref="ColumnId"/>), not by the display labels.
    /// </summary>
    public string ToJson()
    {
        var obj = new
        {
            title = Title,
            columns = _columns.Select(c => new { id = ColumnId(c), label = c }),
            rows = _rows.Select(r => new
            {
                method = r.Method,
                values = _columns.ToDictionary(ColumnId, c => r.Values.TryGetValue(c, out var v) && double.IsFinite(v) ? (double?)v : null),
            }),
        };
        return JsonSerializer.Serialize(obj, new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>
    /// The stable JSON identifier of a column label: lower case, <c>+</c> → <c>plus</c>, <c>−</c>/<c>-</c> → <c>minus</c>,
    /// arrows and primes dropped, other runs of non-alphanumerics → <c>_</c>; e.g. "AUC+ coarse ↓" → <c>auc_plus_coarse</c>,
    /// "pixAcc (img)" → <c>pixacc_img</c>, "ms/img" → <c>ms_img</c>.
    /// </summary>
    /// <param name="label">The display label.</param>
    public static string ColumnId(string label)
    {
        ArgumentNullException.ThrowIfNull(label);
        var sb = new StringBuilder();
        void Word(string w)
        {
            if (sb.Length > 0 && sb[^1] != '_') sb.Append('_');
            sb.Append(w);
        }
        foreach (var ch in label)
        {
            if (ch == '+') Word("plus");
            else if (ch is '−' or '-') Word("minus");
            else if (ch is '↓' or '↑' or '′') continue;
            else if (char.IsAsciiLetterOrDigit(ch)) sb.Append(char.ToLowerInvariant(ch));
            else if (sb.Length > 0 && sb[^1] != '_') sb.Append('_');
        }
        var id = sb.ToString().Trim('_');
        return id.Length == 0 ? "value" : id;
    }

    /// <inheritdoc />
    public override string ToString() => ToMarkdown();

    private static string Format(double v, int digits) => double.IsNaN(v) ? "–" : v.ToString("F" + digits, CultureInfo.InvariantCulture);
}

internal static class Csv
{
    public static string Escape(string s) => s.IndexOfAny(new[] { ',', '"', '\n', '\r' }) >= 0 ? "\"" + s.Replace("\"", "\"\"") + "\"" : s;
}
