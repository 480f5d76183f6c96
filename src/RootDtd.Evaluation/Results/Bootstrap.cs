using System.Globalization;

namespace RootDtd.Evaluation.Results;

/// <summary>Options of <see cref="Bootstrap"/>.</summary>
public sealed record BootstrapOptions
{
    /// <summary>The default number of resamples (the one place it is set).</summary>
    public const int DefaultResamples = 2000;

    /// <summary>The default seed of the resampling.</summary>
    public const ulong DefaultSeed = 14;

    /// <summary>Resamples (each n images drawn with replacement). Default <see cref="DefaultResamples"/>.</summary>
    public int Resamples { get; init; } = DefaultResamples;

    /// <summary>Seed of the resampling (the same seed gives the same intervals on every machine). Default <see cref="DefaultSeed"/>.</summary>
    public ulong Seed { get; init; } = DefaultSeed;

    /// <summary>Coverage of the interval. Default 0.95.</summary>
    public double Confidence { get; init; } = 0.95;

    /// <summary>Checks the options.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A value out of range.</exception>
    public void Validate()
    {
        if (Resamples < 1) throw new ArgumentOutOfRangeException(nameof(Resamples), Resamples, "The bootstrap needs at least 1 resample.");
        if (!(Confidence > 0 && Confidence < 1)) throw new ArgumentOutOfRangeException(nameof(Confidence), Confidence, "The confidence is in (0, 1), e.g. 0.95.");
    }
}

/// <summary>A point estimate with its percentile-bootstrap interval.</summary>
/// <param name="Estimate">The statistic on the data itself.</param>
/// <param name="Lower">Lower end of the interval (the (1 − confidence)/2 quantile of the resampled statistics).</param>
/// <param name="Upper">Upper end (the (1 + confidence)/2 quantile).</param>
/// <param name="Resamples">Resamples whose statistic was defined (they give the quantiles).</param>
/// <param name="Undefined">Resamples whose statistic was undefined (NaN, e.g. no image with a defined value drawn); left out.</param>
public sealed record BootstrapInterval(double Estimate, double Lower, double Upper, int Resamples, int Undefined)
{
    /// <summary>Whether the interval lies entirely above or entirely below 0 (for a difference: the two methods are not tied).</summary>
    public bool ExcludesZero => Lower > 0 || Upper < 0;

    /// <summary><c>0.663 [0.650, 0.676]</c>.</summary>
    /// <param name="digits">Decimals.</param>
    /// <param name="signed">Write a + before positive values (for differences).</param>
    public string Format(int digits, bool signed = false)
    {
        string F(double v) => double.IsNaN(v) ? "–" : (signed && v > 0 ? "+" : "") + v.ToString("F" + digits.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture).Replace("-", "−", StringComparison.Ordinal);
        return $"{F(Estimate)} [{F(Lower)}, {F(Upper)}]";
    }
}

/// <summary>
/// The percentile bootstrap over images: <see cref="BootstrapOptions.Resamples"/> resamples of the n image indices drawn
/// uniformly with replacement from a seeded generator (SplitMix64, so the indices are the same on every machine and
/// .NET version); a statistic's interval is the pair of quantiles (linear interpolation between order statistics,
/// "type 7") of its values on the resamples. A paired difference evaluates both methods on the same resampled indices.
/// </summary>
public sealed class Bootstrap
{
    private readonly int[][] _indices;

    /// <summary>Draws the resamples of <paramref name="samples"/> images.</summary>
    /// <param name="samples">Images (n ≥ 1).</param>
    /// <param name="options">Options.</param>
    public Bootstrap(int samples, BootstrapOptions? options = null)
    {
        Options = options ?? new BootstrapOptions();
        Options.Validate();
        if (samples < 1) throw new ArgumentOutOfRangeException(nameof(samples), samples, "The bootstrap needs at least one image.");
        Samples = samples;
        var rng = new SplitMix64(Options.Seed);
        _indices = new int[Options.Resamples][];
        for (var b = 0; b < _indices.Length; b++)
        {
            var idx = new int[samples];
            for (var j = 0; j < samples; j++) idx[j] = rng.Below(samples);
            _indices[b] = idx;
        }
    }

    /// <summary>Options.</summary>
    public BootstrapOptions Options { get; }

    /// <summary>Images per resample.</summary>
    public int Samples { get; }

    /// <summary>The resampled index lists (each of <see cref="Samples"/> indices, with repetition).</summary>
    public IReadOnlyList<IReadOnlyList<int>> Indices => _indices;

    /// <summary>The interval of a statistic of the images.</summary>
    /// <param name="statistic">The statistic of a list of image indices (null = every image once: the estimate).</param>
    public BootstrapInterval Interval(Func<IReadOnlyList<int>?, double> statistic)
    {
        ArgumentNullException.ThrowIfNull(statistic);
        var estimate = statistic(null);
        var values = new List<double>(_indices.Length);
        var undefined = 0;
        foreach (var idx in _indices)
        {
            var v = statistic(idx);
            if (double.IsNaN(v)) undefined++;
            else values.Add(v);
        }
        if (values.Count == 0) return new BootstrapInterval(estimate, double.NaN, double.NaN, 0, undefined);
        values.Sort();
        var alpha = (1 - Options.Confidence) / 2;
        return new BootstrapInterval(estimate, Quantile(values, alpha), Quantile(values, 1 - alpha), values.Count, undefined);
    }

    /// <summary>The interval of a metric of one method's per-image values.</summary>
    /// <param name="metric">Metric.</param>
    /// <param name="values">The method's per-image values (of <see cref="Samples"/> images).</param>
    public BootstrapInterval Interval(PerImageMetric metric, PerImageValues values)
    {
        ArgumentNullException.ThrowIfNull(metric);
        var terms = TermsOf(metric, values);
        return Interval(idx => metric.Evaluate(terms, idx));
    }

    /// <summary>
    /// The paired difference metric(<paramref name="method"/>) − metric(<paramref name="reference"/>): both on the same
    /// images of every resample, so what the two methods share (the difficulty of the images drawn) cancels.
    /// </summary>
    /// <param name="metric">Metric.</param>
    /// <param name="method">The method's per-image values.</param>
    /// <param name="reference">The reference's per-image values, of the same images in the same order.</param>
    public BootstrapInterval PairedDifference(PerImageMetric metric, PerImageValues method, PerImageValues reference)
    {
        ArgumentNullException.ThrowIfNull(metric);
        var a = TermsOf(metric, method);
        var b = TermsOf(metric, reference);
        return Interval(idx => metric.Evaluate(a, idx) - metric.Evaluate(b, idx));
    }

    private double[][] TermsOf(PerImageMetric metric, PerImageValues values)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (values.Samples != Samples)
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"The bootstrap was drawn for {Samples} images; these values are of {values.Samples}."), nameof(values));
        var missing = metric.Required.Where(c => !values.Has(c)).ToList();
        if (missing.Count > 0)
            throw new ArgumentException($"The metric '{metric.Name}' needs the per-image column(s) {string.Join(", ", missing)}, which these values do not have (columns: {string.Join(", ", values.Columns)}).", nameof(values));
        return metric.Terms(values);
    }

    /// <summary>The p-quantile of sorted values by linear interpolation between order statistics (h = (m − 1)·p; R's and NumPy's default).</summary>
    /// <param name="sorted">Values in increasing order (at least one).</param>
    /// <param name="p">Probability in [0, 1].</param>
    public static double Quantile(IReadOnlyList<double> sorted, double p)
    {
        ArgumentNullException.ThrowIfNull(sorted);
        if (sorted.Count == 0) throw new ArgumentException("No values.", nameof(sorted));
        if (!(p >= 0 && p <= 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "A probability is in [0, 1].");
        var h = (sorted.Count - 1) * p;
        var lo = (int)Math.Floor(h);
        var hi = Math.Min(lo + 1, sorted.Count - 1);
        var frac = h - lo;
        return frac == 0 ? sorted[lo] : sorted[lo] + frac * (sorted[hi] - sorted[lo]);
    }

    /// <summary>SplitMix64 (Steele, Lea &amp; Flood 2014): a tiny, fully specified generator, identical everywhere.</summary>
    internal sealed class SplitMix64
    {
        private ulong _state;

        public SplitMix64(ulong seed) => _state = seed;

        public ulong Next()
        {
            var z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        /// <summary>Uniform in [0, n) without modulo bias (rejection of the incomplete last block).</summary>
        public int Below(int n)
        {
            var bound = (ulong)n;
            var limit = ulong.MaxValue - ulong.MaxValue % bound;
            ulong x;
            do x = Next(); while (x >= limit);
            return (int)(x % bound);
        }

        /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
        public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));
    }
}
