using FluentAssertions;
using RootDtd.Evaluation.Results;
using Xunit;

namespace RootDtd.Evaluation.Tests.Statistics;

/// <summary>The percentile bootstrap over images and the paired differences, against independent truth.</summary>
public sealed class BootstrapTests
{
    private static PerImageValues Column(string name, IReadOnlyList<double> values) => PerImageValues.FromColumns(new[] { (name, values) });

    private static PerImageMetric Mass => PerImageMetrics.Get("mass");

    /// <summary>Normal(μ, σ) samples from an independent generator (Box–Muller on System.Random).</summary>
    private static double[] Normal(int n, int seed, double mu = 0, double sigma = 1)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => mu + sigma * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble())).ToArray();
    }

    [Fact]
    public void Identical_methods_differ_by_exactly_zero_with_a_zero_width_interval()
    {
        var v = Column("mass", Normal(200, 1, 0.5, 0.2));
        var d = new Bootstrap(200).PairedDifference(Mass, v, v);
        d.Estimate.Should().Be(0);
        d.Lower.Should().Be(0);
        d.Upper.Should().Be(0);
        d.ExcludesZero.Should().BeFalse();
    }

    [Fact]
    public void Constant_data_give_a_zero_width_interval_at_the_constant()
    {
        // 0.25 is dyadic: every resample sum is exact, so every resample mean is exactly 0.25
        var exact = new Bootstrap(300).Interval(Mass, Column("mass", Enumerable.Repeat(0.25, 300).ToArray()));
        (exact.Estimate, exact.Lower, exact.Upper).Should().Be((0.25, 0.25, 0.25));
        // 0.7 is not: the sums of 300 copies round, by at most ~300 ulp of the sum
        var rounded = new Bootstrap(300).Interval(Mass, Column("mass", Enumerable.Repeat(0.7, 300).ToArray()));
        rounded.Lower.Should().BeApproximately(0.7, 1e-13);
        rounded.Upper.Should().BeApproximately(0.7, 1e-13);
        (rounded.Upper - rounded.Lower).Should().BeLessThan(1e-13);
    }

    [Fact]
    public void Hand_worked_two_image_case_keeps_the_dataset_ratio_definition()
    {
        // IoU fg is Σ intersections / Σ unions: image A (1 of 2), image B (3 of 4). A resample is {A,A} (IoU 1/2, prob. 1/4),
        // {B,B} (3/4, prob. 1/4) or one of each (4/6, prob. 1/2): with 2000 resamples both tails hold far more than 2.5 %,
        // so the 95 % interval is [1/2, 3/4] and the estimate 4/6 (not the per-image mean 5/8).
        var v = PerImageValues.FromColumns(new (string, IReadOnlyList<double>)[] { ("fg_intersection", new double[] { 1, 3 }), ("fg_union", new double[] { 2, 4 }) });
        var bootstrap = new Bootstrap(2);
        var r = bootstrap.Interval(PerImageMetrics.Get("IoU fg"), v);
        r.Estimate.Should().Be(4.0 / 6);
        r.Lower.Should().Be(0.5);
        r.Upper.Should().Be(0.75);
        // the resample frequencies are those of a fair draw: P({A,A}) = 1/4 within 4.5 binomial SD (SD = 0.0097)
        var aa = bootstrap.Indices.Count(idx => idx.All(i => i == 0)) / 2000.0;
        aa.Should().BeApproximately(0.25, 0.044);
        // the quantile rule (type 7) on a hand-worked list: h = (5 − 1)·0.3 = 1.2 → 2 + 0.2·(4 − 2)
        Bootstrap.Quantile(new double[] { 1, 2, 4, 8, 16 }, 0.3).Should().BeApproximately(2.4, 1e-15);
        Bootstrap.Quantile(new double[] { 1, 2, 4, 8, 16 }, 0).Should().Be(1);
        Bootstrap.Quantile(new double[] { 1, 2, 4, 8, 16 }, 1).Should().Be(16);
    }

    [Fact]
    public void Normal_data_give_the_textbook_half_width_and_the_nominal_coverage()
    {
        // half-width ≈ 1.96 s/√n: the percentile interval's Monte-Carlo error with 2000 resamples is ≈ 2 % of the width
        // (SE of a 2.5 % quantile = √(p(1−p)/B)/φ(1.96) ≈ 0.06 bootstrap SD per end), so 10 % is > 4 SE
        var x = Normal(400, 7, 3, 2);
        var mean = x.Average();
        var s = Math.Sqrt(x.Sum(v => (v - mean) * (v - mean)) / (x.Length - 1));
        var r = new Bootstrap(400).Interval(Mass, Column("mass", x));
        r.Estimate.Should().BeApproximately(mean, 1e-12);
        ((r.Upper - r.Lower) / 2).Should().BeApproximately(1.96 * s / Math.Sqrt(400), 0.1 * 1.96 * s / Math.Sqrt(400));
        ((r.Upper + r.Lower) / 2).Should().BeApproximately(mean, 0.2 * s / Math.Sqrt(400), "the interval is centred on the mean (symmetric data)");

        // coverage: over 200 independent data sets of 60 normal values the interval holds the true mean ≈ 95 % of the time;
        // the percentile bootstrap under-covers slightly at this n (≈ 94 %), binomial SD 1.6 %: accept 0.88 … 0.99
        var covered = 0;
        for (var k = 0; k < 200; k++)
        {
            var interval = new Bootstrap(60, new BootstrapOptions { Resamples = 500, Seed = (ulong)k }).Interval(Mass, Column("mass", Normal(60, 1000 + k, 10, 1)));
            if (interval.Lower <= 10 && 10 <= interval.Upper) covered++;
        }
        (covered / 200.0).Should().BeInRange(0.88, 0.99);
    }

    [Fact]
    public void The_same_seed_gives_the_same_interval_and_another_seed_another()
    {
        var v = Column("mass", Normal(100, 3));
        var a = new Bootstrap(100, new BootstrapOptions { Seed = 42 }).Interval(Mass, v);
        var b = new Bootstrap(100, new BootstrapOptions { Seed = 42 }).Interval(Mass, v);
        var c = new Bootstrap(100, new BootstrapOptions { Seed = 43 }).Interval(Mass, v);
        b.Should().Be(a);
        c.Should().NotBe(a);
        new BootstrapOptions().Resamples.Should().Be(BootstrapOptions.DefaultResamples).And.Be(2000);
    }

    [Fact]
    public void The_paired_interval_is_narrower_than_the_unpaired_one_on_correlated_data()
    {
        // method B = method A + small noise: what the images share cancels in the paired difference
        var a = Normal(300, 11, 0.5, 0.2);
        var noise = Normal(300, 12, 0.01, 0.02);
        var b = a.Zip(noise, (x, e) => x + e).ToArray();
        var va = Column("mass", a);
        var vb = Column("mass", b);
        var paired = new Bootstrap(300).PairedDifference(Mass, vb, va);
        // unpaired: independent resamples for the two methods
        var ta = Mass.Terms(va);
        var tb = Mass.Terms(vb);
        var ia = new Bootstrap(300, new BootstrapOptions { Seed = 1 }).Indices;
        var ib = new Bootstrap(300, new BootstrapOptions { Seed = 2 }).Indices;
        var unpaired = Enumerable.Range(0, ia.Count).Select(k => Mass.Evaluate(tb, ib[k]) - Mass.Evaluate(ta, ia[k])).OrderBy(v => v).ToList();
        var unpairedWidth = Bootstrap.Quantile(unpaired, 0.975) - Bootstrap.Quantile(unpaired, 0.025);
        (paired.Upper - paired.Lower).Should().BeLessThan(unpairedWidth / 5, "σ(noise) = 0.02 against σ(values) = 0.2");
        paired.ExcludesZero.Should().BeTrue("a shift of 0.01 with noise SD 0.02 over 300 images is 8.7 standard errors");
        paired.Estimate.Should().BeApproximately(noise.Average(), 1e-12);
    }

    [Fact]
    public void Comparisons_refuse_unknown_methods_metrics_and_values_of_other_images()
    {
        var rows = new[] { new MethodPerImage("zplus", Column("mass", Normal(10, 1))), new MethodPerImage("root", Column("mass", Normal(10, 2))) };
        FluentActions.Invoking(() => BootstrapComparison.Compute(rows, new[] { "zplsu" })).Should().Throw<ArgumentException>()
            .WithMessage("Unknown method 'zplsu': the methods with per-image values are zplus, root*");
        FluentActions.Invoking(() => PerImageMetrics.Get("miou2")).Should().Throw<ArgumentException>().WithMessage("Unknown metric 'miou2'; the metrics are pixAcc, IoU fg*");
        var other = new[] { rows[0], new MethodPerImage("short", Column("mass", Normal(9, 2))) };
        FluentActions.Invoking(() => BootstrapComparison.Compute(other, Array.Empty<string>())).Should().Throw<ArgumentException>().WithMessage("*9 images*10*same images*");
        FluentActions.Invoking(() => new Bootstrap(10).Interval(PerImageMetrics.Get("mIoU"), rows[0].Values)).Should().Throw<ArgumentException>()
            .WithMessage("The metric 'mIoU' needs the per-image column(s) fg_intersection, fg_union, bg_intersection, bg_union*");
        var c = BootstrapComparison.Compute(rows, new[] { "zplus" });
        c.Metrics.Select(m => m.Name).Should().Equal("mass");
        c["zplus", "mass"].Differences[0].Should().BeNull();
        c["root", "mass"].Differences[0]!.Estimate.Should().BeApproximately(Normal(10, 2).Average() - Normal(10, 1).Average(), 1e-12);
        c.ToMarkdown().Should().Contain("| zplus | ").And.Contain("(reference)").And.Contain("Paired difference to `zplus`");
    }
}
