namespace RootDtd.Evaluation.Results;

/// <summary>
/// A report metric as a function of per-image values: each image contributes a few terms (<see cref="Terms"/>), the
/// metric is <see cref="Combine"/> of the terms' sums over the images. A dataset-accumulated ratio (IoU fg = Σ
/// intersections / Σ unions) has the terms (intersection, union); a mean over the images where the value is defined
/// has the terms (value or 0, 1 or 0). So the metric of any subset or resample of images is computed by the report's
/// own definition.
/// </summary>
/// <param name="Name">The report's column label (e.g. <c>mIoU</c>, <c>AUC+ coarse ↓</c>).</param>
/// <param name="HigherIsBetter">Whether a higher value is better (AUC+ is the one where lower is better).</param>
/// <param name="Required">The per-image columns it needs.</param>
/// <param name="Terms">Per-image terms from the per-image values: [term][image].</param>
/// <param name="Combine">The metric from the terms' sums (NaN when undefined, e.g. a zero denominator).</param>
public sealed record PerImageMetric(string Name, bool HigherIsBetter, IReadOnlyList<string> Required, Func<PerImageValues, double[][]> Terms, Func<double[], double> Combine)
{
    /// <summary>The metric on the images <paramref name="indices"/> (with repetition), or on all images when null.</summary>
    /// <param name="terms">Its <see cref="Terms"/> of the method's values.</param>
    /// <param name="indices">Image indices, or null for every image once.</param>
    public double Evaluate(double[][] terms, IReadOnlyList<int>? indices = null)
    {
        ArgumentNullException.ThrowIfNull(terms);
        var sums = new double[terms.Length];
        for (var t = 0; t < terms.Length; t++)
        {
            var column = terms[t];
            double s = 0;
            if (indices is null) foreach (var v in column) s += v;
            else for (var j = 0; j < indices.Count; j++) s += column[indices[j]];
            sums[t] = s;
        }
        return Combine(sums);
    }
}

/// <summary>
/// The benchmark report's metrics as functions of the per-image values the benchmark keeps
/// (<see cref="Metrics.LocalizationAccumulator.PerImageColumns"/>, <see cref="Metrics.PixelPerturbationAccumulator.PerImageColumns"/>),
/// each by the report's definition (docs/evaluation.md): pixAcc, IoU fg, IoU bg and mIoU accumulated over the dataset
/// (ratios of summed pixel counts), the (img) and other columns as means over the images where they are defined, the
/// perturbation AUCs as the mean of the per-image AUCs (equal to the AUC of the mean accuracy curve: the trapezoid is linear).
/// </summary>
public static class PerImageMetrics
{
    private static double Ratio(double a, double b) => b > 0 ? a / b : double.NaN;

    private static PerImageMetric DatasetRatio(string name, string numerator, string denominator) =>
        new(name, true, new[] { numerator, denominator }, v => new[] { v[numerator].ToArray(), v[denominator].ToArray() }, s => Ratio(s[0], s[1]));

    /// <summary>A mean over the images where <paramref name="value"/> is defined (not NaN).</summary>
    private static PerImageMetric MeanOverImages(string name, bool higherIsBetter, IReadOnlyList<string> required, Func<PerImageValues, int, double> value) =>
        new(name, higherIsBetter, required, v =>
        {
            var x = new double[v.Samples];
            var defined = new double[v.Samples];
            for (var i = 0; i < v.Samples; i++)
            {
                var y = value(v, i);
                if (double.IsNaN(y)) continue;
                x[i] = y;
                defined[i] = 1;
            }
            return new[] { x, defined };
        }, s => Ratio(s[0], s[1]));

    private static PerImageMetric Column(string name, string column, bool higherIsBetter = true) =>
        MeanOverImages(name, higherIsBetter, new[] { column }, (v, i) => v[column][i]);

    private static double PerImageRatio(PerImageValues v, int i, string a, string b) => v[b][i] > 0 ? v[a][i] / v[b][i] : double.NaN;

    /// <summary>Every metric, by the report's column label, in the report's order (localisation, then perturbation).</summary>
    public static IReadOnlyList<PerImageMetric> All { get; } = new[]
    {
        DatasetRatio("pixAcc", "correct", "valid"),
        DatasetRatio("IoU fg", "fg_intersection", "fg_union"),
        DatasetRatio("IoU bg", "bg_intersection", "bg_union"),
        new PerImageMetric("mIoU", true, new[] { "fg_intersection", "fg_union", "bg_intersection", "bg_union" },
            v => new[] { v["fg_intersection"].ToArray(), v["fg_union"].ToArray(), v["bg_intersection"].ToArray(), v["bg_union"].ToArray() },
            s => (Ratio(s[0], s[1]) + Ratio(s[2], s[3])) / 2),
        MeanOverImages("pixAcc (img)", true, new[] { "correct", "valid" }, (v, i) => PerImageRatio(v, i, "correct", "valid")),
        MeanOverImages("mIoU (img)", true, new[] { "fg_intersection", "fg_union", "bg_intersection", "bg_union" },
            (v, i) => v["fg_union"][i] > 0 && v["bg_union"][i] > 0 ? (v["fg_intersection"][i] / v["fg_union"][i] + v["bg_intersection"][i] / v["bg_union"][i]) / 2 : double.NaN),
        Column("mAP", "ap"),
        Column("mass", "mass"),
        Column("pointing", "pointing"),
        MeanOverImages("paper PA", true, new[] { "fg_intersection", "foreground" }, (v, i) => PerImageRatio(v, i, "fg_intersection", "foreground")),
        MeanOverImages("paper IoU", true, new[] { "fg_intersection", "fg_union" }, (v, i) => v["fg_union"][i] > 0 ? 2 * v["fg_intersection"][i] / v["fg_union"][i] : double.NaN),
        Column("AUC+ coarse ↓", "auc_plus_coarse", higherIsBetter: false),
        Column("AUC− coarse ↑", "auc_minus_coarse"),
        Column("AUC+ fine ↓", "auc_plus_fine", higherIsBetter: false),
        Column("AUC− fine ↑", "auc_minus_fine"),
    };

    /// <summary>
    /// The metrics of the interval table of the benchmark report: those of issue 14's goal and of the pre-registered
    /// selection criterion (docs/research/root-variants.md): mIoU, IoU fg, mass, pointing, mAP, AUC+ and AUC− (coarse).
    /// </summary>
    public static IReadOnlyList<string> ReportMetrics { get; } = new[] { "mIoU", "IoU fg", "mass", "pointing", "mAP", "AUC+ coarse ↓", "AUC− coarse ↑" };

    /// <summary>The metric of a report column label (or its JSON id, e.g. <c>auc_plus_coarse</c>).</summary>
    /// <param name="name">Label or id.</param>
    /// <exception cref="ArgumentException">Unknown (the message lists the metrics).</exception>
    public static PerImageMetric Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var key = name.Trim();
        return All.FirstOrDefault(m => m.Name == key || ResultTable.ColumnId(m.Name) == ResultTable.ColumnId(key))
            ?? throw new ArgumentException($"Unknown metric '{name}'; the metrics are {string.Join(", ", All.Select(m => m.Name))}.", nameof(name));
    }
}
