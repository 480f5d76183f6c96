namespace RootDtd.Evaluation.Research;

/// <summary>
/// How a loss <c>Σ_j (F_j − R_j)²</c> splits into the part that a wrong <em>total</em> explains and the part that a wrong
/// <em>distribution</em> explains: with the mean residual <c>d̄ = (ΣF − ΣR)/n</c> over the n outputs,
/// <c>L = n·d̄² + Σ_j (d_j − d̄)²</c>.
/// </summary>
/// <param name="Loss">The loss <c>Σ (F − R)²</c>.</param>
/// <param name="Total">The total part <c>n·d̄² = (ΣF − ΣR)²/n</c>.</param>
/// <param name="Distribution">The distribution part <c>Σ (d − d̄)²</c>.</param>
public readonly record struct LossSplit(double Loss, double Total, double Distribution)
{
    /// <summary>Total / Loss in [0, 1] (0 when the loss is 0).</summary>
    public double TotalShare => Loss > 0 ? Total / Loss : 0;
}

/// <summary>
/// Statistics of one sample's values used by the root-inference analysis (docs/research/root-inference-analysis.md):
/// sparsity (exact zeros, Gini), rank and cosine agreement of two relevance vectors, and the split of a squared-error loss
/// into total and distribution. Plain double arrays, no tensors.
/// </summary>
public static class DistributionStatistics
{
    /// <summary>Fraction of values that are exactly 0 (0 for an empty array).</summary>
    /// <param name="values">Values.</param>
    /// <returns>The fraction in [0, 1].</returns>
    public static double ZeroFraction(ReadOnlySpan<double> values)
    {
        if (values.Length == 0) return 0;
        var zeros = 0;
        foreach (var v in values)
            if (v == 0) zeros++;
        return (double)zeros / values.Length;
    }

    /// <summary>
    /// Gini coefficient of the magnitudes |v|: with y the magnitudes sorted ascending (1-based i),
    /// <c>G = Σ_i (2i − n − 1)·y_i / (n·Σ y)</c>. 0 when all magnitudes are equal, (n − 1)/n when one value carries all of
    /// it; 0 for an all-zero or empty array.
    /// </summary>
    /// <param name="values">Values (the sign is ignored).</param>
    /// <returns>The coefficient in [0, 1).</returns>
    public static double Gini(ReadOnlySpan<double> values)
    {
        var n = values.Length;
        if (n == 0) return 0;
        var y = new double[n];
        for (var i = 0; i < n; i++) y[i] = Math.Abs(values[i]);
        Array.Sort(y);
        double sum = 0, weighted = 0;
        for (var i = 0; i < n; i++)
        {
            sum += y[i];
            weighted += (2.0 * (i + 1) - n - 1) * y[i];
        }
        return sum > 0 ? weighted / (n * sum) : 0;
    }

    /// <summary>Ranks 1…n of the values, ties sharing their average rank (the ranks Spearman's coefficient uses).</summary>
    /// <param name="values">Values (finite).</param>
    /// <returns>The ranks, in the values' order.</returns>
    public static double[] AverageRanks(ReadOnlySpan<double> values)
    {
        var n = values.Length;
        var order = new int[n];
        for (var i = 0; i < n; i++) order[i] = i;
        var keys = values.ToArray();
        Array.Sort(keys, order);
        var ranks = new double[n];
        for (var start = 0; start < n;)
        {
            var end = start;
            while (end + 1 < n && keys[end + 1] == keys[start]) end++;
            var rank = (start + end) / 2.0 + 1;
            for (var k = start; k <= end; k++) ranks[order[k]] = rank;
            start = end + 1;
        }
        return ranks;
    }

    /// <summary>Spearman's rank correlation (Pearson's coefficient of the average ranks); NaN when either side is constant.</summary>
    /// <param name="a">First values.</param>
    /// <param name="b">Second values, same length.</param>
    /// <returns>The coefficient in [−1, 1], or NaN.</returns>
    public static double Spearman(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"Spearman: the two arrays have {a.Length} and {b.Length} values.", nameof(b));
        return Pearson(AverageRanks(a), AverageRanks(b));
    }

    /// <summary>Pearson's correlation; NaN when either side is constant or the arrays are empty.</summary>
    /// <param name="a">First values.</param>
    /// <param name="b">Second values, same length.</param>
    /// <returns>The coefficient, or NaN.</returns>
    public static double Pearson(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"Pearson: the two arrays have {a.Length} and {b.Length} values.", nameof(b));
        var n = a.Length;
        if (n == 0) return double.NaN;
        double ma = 0, mb = 0;
        for (var i = 0; i < n; i++)
        {
            ma += a[i];
            mb += b[i];
        }
        ma /= n;
        mb /= n;
        double sab = 0, saa = 0, sbb = 0;
        for (var i = 0; i < n; i++)
        {
            double da = a[i] - ma, db = b[i] - mb;
            sab += da * db;
            saa += da * da;
            sbb += db * db;
        }
        return saa > 0 && sbb > 0 ? sab / Math.Sqrt(saa * sbb) : double.NaN;
    }

    /// <summary>Cosine of the angle between two vectors; NaN when either is zero.</summary>
    /// <param name="a">First vector.</param>
    /// <param name="b">Second vector, same length.</param>
    /// <returns>The cosine in [−1, 1], or NaN.</returns>
    public static double Cosine(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"Cosine: the two arrays have {a.Length} and {b.Length} values.", nameof(b));
        double ab = 0, aa = 0, bb = 0;
        for (var i = 0; i < a.Length; i++)
        {
            ab += a[i] * b[i];
            aa += a[i] * a[i];
            bb += b[i] * b[i];
        }
        return aa > 0 && bb > 0 ? ab / Math.Sqrt(aa * bb) : double.NaN;
    }

    /// <summary>Splits <c>Σ (fitted − target)²</c> into its total and distribution parts (see <see cref="LossSplit"/>).</summary>
    /// <param name="fitted">The fitted values F.</param>
    /// <param name="target">The target R, same length.</param>
    /// <returns>The split.</returns>
    public static LossSplit SplitLoss(ReadOnlySpan<double> fitted, ReadOnlySpan<double> target)
    {
        if (fitted.Length != target.Length) throw new ArgumentException($"SplitLoss: {fitted.Length} fitted values but {target.Length} targets.", nameof(target));
        var n = fitted.Length;
        if (n == 0) return default;
        double loss = 0, sum = 0;
        for (var i = 0; i < n; i++)
        {
            var d = fitted[i] - target[i];
            loss += d * d;
            sum += d;
        }
        var mean = sum / n;
        double distribution = 0;
        for (var i = 0; i < n; i++)
        {
            var e = fitted[i] - target[i] - mean;
            distribution += e * e;
        }
        return new LossSplit(loss, n * mean * mean, distribution);
    }
}
