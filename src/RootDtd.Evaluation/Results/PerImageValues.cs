using System.Globalization;

namespace RootDtd.Evaluation.Results;

/// <summary>
/// Per-image values of one method: named columns of one value per image, in sample order (NaN where a value is
/// undefined for that image). What a benchmark keeps so that a resample of images (<see cref="Bootstrap"/>) can
/// recompute every report metric by the report's own definition (<see cref="PerImageMetrics"/>).
/// </summary>
public sealed class PerImageValues
{
    private readonly double[][] _columns;
    private readonly Dictionary<string, int> _index;

    private PerImageValues(IReadOnlyList<string> names, double[][] columns, int samples)
    {
        Columns = names.ToArray();
        _columns = columns;
        Samples = samples;
        _index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < Columns.Count; i++)
            if (!_index.TryAdd(Columns[i], i)) throw new ArgumentException($"The per-image column '{Columns[i]}' appears twice.", nameof(names));
    }

    /// <summary>Column names.</summary>
    public IReadOnlyList<string> Columns { get; }

    /// <summary>Images.</summary>
    public int Samples { get; }

    /// <summary>The values of one column (one per image, in sample order).</summary>
    /// <param name="column">Column name.</param>
    /// <exception cref="KeyNotFoundException">No such column (the message lists the columns there are).</exception>
    public IReadOnlyList<double> this[string column] => _index.TryGetValue(column, out var i)
        ? _columns[i]
        : throw new KeyNotFoundException($"There is no per-image column '{column}'; the columns are {string.Join(", ", Columns)}.");

    /// <summary>Whether the column exists.</summary>
    /// <param name="column">Column name.</param>
    public bool Has(string column) => _index.ContainsKey(column);

    /// <summary>From row-major values: <paramref name="columns"/>.Count values per image.</summary>
    /// <param name="columns">Column names.</param>
    /// <param name="samples">Images.</param>
    /// <param name="rowMajor">samples × columns values.</param>
    public static PerImageValues FromRows(IReadOnlyList<string> columns, int samples, IReadOnlyList<double> rowMajor)
    {
        ArgumentNullException.ThrowIfNull(columns);
        ArgumentNullException.ThrowIfNull(rowMajor);
        if (samples < 0) throw new ArgumentOutOfRangeException(nameof(samples), samples, "Must be ≥ 0.");
        if (rowMajor.Count != (long)samples * columns.Count)
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"{samples} images × {columns.Count} columns need {samples * columns.Count} values, got {rowMajor.Count}."), nameof(rowMajor));
        var k = columns.Count;
        var data = new double[k][];
        for (var c = 0; c < k; c++)
        {
            data[c] = new double[samples];
            for (var i = 0; i < samples; i++) data[c][i] = rowMajor[i * k + c];
        }
        return new PerImageValues(columns, data, samples);
    }

    /// <summary>From columns of equal length.</summary>
    /// <param name="columns">Column name → values.</param>
    public static PerImageValues FromColumns(IReadOnlyList<(string Name, IReadOnlyList<double> Values)> columns)
    {
        ArgumentNullException.ThrowIfNull(columns);
        if (columns.Count == 0) throw new ArgumentException("At least one column is required.", nameof(columns));
        var n = columns[0].Values.Count;
        foreach (var (name, values) in columns)
            if (values.Count != n)
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"The per-image column '{name}' has {values.Count} values; '{columns[0].Name}' has {n}."), nameof(columns));
        return new PerImageValues(columns.Select(c => c.Name).ToArray(), columns.Select(c => c.Values.ToArray()).ToArray(), n);
    }

    /// <summary>This table's columns followed by <paramref name="other"/>'s (the same images).</summary>
    /// <param name="other">Columns of the same images.</param>
    public PerImageValues Join(PerImageValues other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.Samples != Samples)
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"Cannot join per-image values of {Samples} and {other.Samples} images."), nameof(other));
        return new PerImageValues(Columns.Concat(other.Columns).ToArray(), _columns.Concat(other._columns).ToArray(), Samples);
    }
}
