using System.Globalization;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Sharding;

namespace RootDtd.Evaluation.Benchmark;

/// <summary>Linear-region statistics of one unit (paper Table 6): ReLU derivative of the unit's output at x vs at its root N.</summary>
/// <param name="Unit">Unit (graph node) name.</param>
/// <param name="Samples">Samples.</param>
/// <param name="MeanSquaredDifference">Mean over samples of the mean squared derivative difference.</param>
/// <param name="SameStateFraction">Mean over samples of the fraction of outputs with the same on/off state.</param>
/// <param name="IdenticalPatternRate">Fraction of samples whose on/off pattern is identical.</param>
public sealed record UnitLinearRegion(string Unit, int Samples, double MeanSquaredDifference, double SameStateFraction, double IdenticalPatternRate);

/// <summary>Everything measured for one method.</summary>
public sealed class MethodResult
{
    /// <summary>Creates an empty result.</summary>
    /// <param name="method">The method.</param>
    /// <param name="isAblation">True for a row of the ablation table.</param>
    public MethodResult(BenchmarkMethod method, bool isAblation)
    {
        Method = method;
        IsAblation = isAblation;
    }

    /// <summary>The method.</summary>
    public BenchmarkMethod Method { get; }

    /// <summary>Row label.</summary>
    public string Label => Method.Label;

    /// <summary>True for a row of the ablation table.</summary>
    public bool IsAblation { get; }

    /// <summary>Perturbation curves (empty if not run).</summary>
    public IReadOnlyList<PerturbationCurve> Curves { get; internal set; } = Array.Empty<PerturbationCurve>();

    /// <summary>Localisation result, if run.</summary>
    public LocalizationResult? Localization { get; internal set; }

    /// <summary>PGD result, if run.</summary>
    public PgdResult? Pgd { get; internal set; }

    /// <summary>Target scores at x, S and N of the input-layer root, if the method infers one.</summary>
    public RootScoreResult? RootScores { get; internal set; }

    /// <summary>Name of the input-layer unit whose root was checked.</summary>
    public string? RootUnit { get; internal set; }

    /// <summary>Linear-region statistics per root-inference unit.</summary>
    public IReadOnlyList<UnitLinearRegion> LinearRegions { get; internal set; } = Array.Empty<UnitLinearRegion>();

    /// <summary>Mean over samples of the conservation error |Σ input relevance − logit| / |logit|.</summary>
    public double ConservationError { get; internal set; } = double.NaN;

    /// <summary>Explanation time per image in milliseconds (explanation only, not the metrics).</summary>
    public double MillisecondsPerImage { get; internal set; } = double.NaN;

    /// <summary>Wall-clock seconds of the whole method (all protocols).</summary>
    public double Seconds { get; internal set; }

    /// <summary>Error message if the method failed during the run (its metrics are then missing).</summary>
    public string? Error { get; internal set; }

    /// <summary>Sanity checks (model-parameter and label randomisation), when run.</summary>
    public SanityCheckResult? Sanity { get; internal set; }

    /// <summary>Gallery heatmaps [G,H,W] as float arrays (row-major), if collected.</summary>
    public float[][]? GalleryHeatmaps { get; internal set; }

    /// <summary>
    /// Per-image values of the localisation and perturbation protocols, in sample order
    /// (<see cref="LocalizationAccumulator.PerImageColumns"/> then <see cref="PixelPerturbationAccumulator.PerImageColumns"/>),
    /// from which <see cref="Results.PerImageMetrics"/> recomputes every metric of a resample of images; null when neither
    /// protocol ran, the method failed, or a resumed state predates them.
    /// </summary>
    public Results.PerImageValues? PerImage { get; internal set; }

    /// <summary>
    /// The result of one method from the states of its shards (or of one run): sums are merged exactly, so the metrics
    /// do not depend on how the samples were split; measured times are summed.
    /// </summary>
    /// <param name="options">Options of the run.</param>
    /// <param name="states">The method's state in every shard, in shard order.</param>
    internal static MethodResult FromStates(BenchmarkOptions options, IReadOnlyList<MethodState> states)
    {
        var first = states[0];
        var result = new MethodResult(new BenchmarkMethod(first.Label, first.Spec), first.IsAblation);
        result.Error = states.Select(s => s.Error).FirstOrDefault(e => e is not null);
        result.Seconds = states.Sum(s => s.Seconds);
        var explained = states.Sum(s => s.Explained);
        result.MillisecondsPerImage = explained > 0 ? states.Sum(s => s.ExplainMilliseconds) / explained : double.NaN;
        var conservation = states.Aggregate(ExactSum.Zero, (a, s) => a + s.Conservation);
        result.ConservationError = explained > 0 ? conservation.ToDouble() / explained : double.NaN;
        result.GalleryHeatmaps = states.Select(s => s.Gallery).FirstOrDefault(g => g is not null);
        Results.PerImageValues? localizationValues = null, perturbationValues = null;
        if (states.Any(s => s.Perturbation is { Samples: > 0 }))
        {
            using var p = new PixelPerturbationAccumulator(BenchmarkRunner.PerturbationOptionsOf(options));
            foreach (var s in states) if (s.Perturbation is { } ps) p.Merge(ps);
            result.Curves = p.Result(result.Label);
            perturbationValues = p.PerImageValues;
        }
        if (states.Any(s => s.Localization is { Images: > 0 }))
        {
            using var l = new LocalizationAccumulator();
            foreach (var s in states) if (s.Localization is { } ls) l.Merge(ls);
            result.Localization = l.Result(result.Label);
            localizationValues = l.PerImageValues;
        }
        if (result.Error is null)
            result.PerImage = (localizationValues, perturbationValues) switch
            {
                ({ } l, { } p) when l.Samples == p.Samples => l.Join(p),
                ({ } l, null) when result.Curves.Count == 0 => l,
                (null, { } p) when result.Localization is null => p,
                _ => null, // one protocol's values are missing (a resumed older state): none rather than half
            };
        if (states.Any(s => s.Pgd is not null))
        {
            var pgd = states.Where(s => s.Pgd is not null).Select(s => s.Pgd!).ToList();
            int samples = pgd.Sum(c => c.Samples), correct = pgd.Sum(c => c.InitiallyCorrect), successes = pgd.Sum(c => c.Successes);
            var iterations = pgd.Sum(c => c.IterationSum);
            if (samples > 0) result.Pgd = new PgdResult(result.Label, samples, correct, successes, successes > 0 ? (double)iterations / successes : double.NaN);
        }
        result.Sanity = states.Select(s => s.Sanity).FirstOrDefault(r => r is not null);
        var scores = states.SelectMany(s => s.RootScores).ToList();
        if (scores.Count > 0)
        {
            result.RootUnit = states.Select(s => s.RootUnit).FirstOrDefault(u => u is not null);
            double[] Column(int c) => scores.Select(v => v[c]).ToArray();
            result.RootScores = new RootScoreResult(Column(0), Column(1), Column(2), Column(3), Column(4), Column(5));
        }
        var units = new List<string>();
        foreach (var r in states.SelectMany(s => s.Regions)) if (!units.Contains(r.Unit)) units.Add(r.Unit);
        result.LinearRegions = units.Select(u =>
        {
            var parts = states.SelectMany(s => s.Regions).Where(r => r.Unit == u).ToList();
            var n = parts.Sum(r => r.Samples);
            var msd = parts.Aggregate(ExactSum.Zero, (a, r) => a + r.MeanSquaredDifference).ToDouble();
            var same = parts.Aggregate(ExactSum.Zero, (a, r) => a + r.SameState).ToDouble();
            return new UnitLinearRegion(u, n, msd / n, same / n, (double)parts.Sum(r => r.Identical) / n);
        }).ToArray();
        return result;
    }

    /// <summary>Value of a perturbation curve's AUC.</summary>
    /// <param name="order">Order.</param>
    /// <param name="schedule">Schedule name.</param>
    /// <returns>AUC or NaN.</returns>
    public double Auc(PerturbationOrder order, string schedule) =>
        Curves.FirstOrDefault(c => c.Order == order && c.Schedule == schedule)?.Auc ?? double.NaN;
}

/// <summary>The outcome of a benchmark run.</summary>
public sealed class BenchmarkResult
{
    internal BenchmarkResult(BenchmarkOptions options) => Options = options;

    /// <summary>Options of the run.</summary>
    public BenchmarkOptions Options { get; }

    /// <summary>Number of test samples.</summary>
    public int Samples { get; internal set; }

    /// <summary>Samples used by PGD.</summary>
    public int PgdSamples { get; internal set; }

    /// <summary>Samples used by the ablations.</summary>
    public int AblationSampleCount { get; internal set; }

    /// <summary>Clean top-1 accuracy of the model on the samples.</summary>
    public double CleanAccuracy { get; internal set; }

    /// <summary>Image height.</summary>
    public int Height { get; internal set; }

    /// <summary>Image width.</summary>
    public int Width { get; internal set; }

    /// <summary>Main methods, in order.</summary>
    public List<MethodResult> Methods { get; } = new();

    /// <summary>Ablations of the root rule, in order.</summary>
    public List<MethodResult> Ablations { get; } = new();

    /// <summary>Reference rows (random map, empty map).</summary>
    public List<MethodResult> References { get; } = new();

    /// <summary>Methods and ablations that could not be run (with reasons).</summary>
    public List<SkippedMethod> Skipped { get; } = new();

    /// <summary>Wall-clock seconds of the run.</summary>
    public double Seconds { get; internal set; }

    /// <summary>Gallery: images [G] as [0,1] RGB arrays (3·H·W, CHW), masks (H·W), labels.</summary>
    public List<(float[] Image, byte[] Mask, int Label)> Gallery { get; } = new();

    /// <summary>
    /// The result of a run from the states of its shards (<c>rootdtd merge</c>) or of one run: the same numbers and
    /// the same order whichever way the samples were split, because every sum is exact (<see cref="ExactSum"/>) and
    /// the shards are whole batches. Measured times (ms/img, seconds) are summed over the shards.
    /// </summary>
    /// <param name="options">Options of the run (the same in every shard).</param>
    /// <param name="states">One state per shard, complete, covering the samples without gaps or overlaps.</param>
    /// <exception cref="ArgumentException">The states do not belong together or do not cover the dataset.</exception>
    public static BenchmarkResult FromStates(BenchmarkOptions options, IReadOnlyList<BenchmarkRunState> states)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(states);
        return FromStatesCore(options, states);
    }

    /// <summary>
    /// <see cref="FromStates(BenchmarkOptions, IReadOnlyList{BenchmarkRunState})"/> with the options stored in the
    /// states (<c>rootdtd merge</c>).
    /// </summary>
    /// <param name="states">One state per shard.</param>
    public static BenchmarkResult FromStates(IReadOnlyList<BenchmarkRunState> states)
    {
        ArgumentNullException.ThrowIfNull(states);
        if (states.Count == 0) throw new ArgumentException("No shard states were given.", nameof(states));
        return FromStatesCore(states[0].Settings.ToOptions(), states);
    }

    private static BenchmarkResult FromStatesCore(BenchmarkOptions options, IReadOnlyList<BenchmarkRunState> states)
    {
        if (states.Count == 0) throw new ArgumentException("No shard states were given.", nameof(states));
        var ordered = states.OrderBy(s => s.Shard.Start).ThenBy(s => s.Shard.Index).ToList();
        var total = ordered[0].Shard.Total;
        var next = 0;
        foreach (var s in ordered)
        {
            if (s.Fingerprint != ordered[0].Fingerprint)
                throw new ArgumentException($"Shard {s.Shard.Index}/{s.Shard.Count} was run with other settings ({s.Fingerprint}) than shard {ordered[0].Shard.Index}/{ordered[0].Shard.Count} ({ordered[0].Fingerprint}).", nameof(states));
            if (!ordered[0].Settings.SameNormalization(s.Settings))
                throw new ArgumentException($"Shard {s.Shard.Index}/{s.Shard.Count} was run with the normalisation {s.Settings.NormalizationForMessages()}, shard {ordered[0].Shard.Index}/{ordered[0].Shard.Count} with {ordered[0].Settings.NormalizationForMessages()}.", nameof(states));
            if (!s.Complete) throw new ArgumentException($"Shard {s.Shard.Index}/{s.Shard.Count} is not finished (run it again with --resume).", nameof(states));
            if (s.Shard.Start != next)
                throw new ArgumentException(s.Shard.Start > next
                    ? string.Create(CultureInfo.InvariantCulture, $"Samples {next} … {s.Shard.Start - 1} are in no shard: a shard is missing.")
                    : string.Create(CultureInfo.InvariantCulture, $"Shard {s.Shard.Index}/{s.Shard.Count} overlaps another one (it starts at {s.Shard.Start}, before {next})."), nameof(states));
            next = s.Shard.Start + s.Shard.Length;
        }
        if (next != total) throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"Samples {next} … {total - 1} are in no shard: a shard is missing."), nameof(states));

        var withData = ordered.Where(s => s.Shard.Length > 0).ToList();
        var result = new BenchmarkResult(options)
        {
            Samples = total,
            Height = withData.Select(s => s.Height).FirstOrDefault(),
            Width = withData.Select(s => s.Width).FirstOrDefault(),
            PgdSamples = (int)Math.Min(total, options.PgdSamples ?? total),
            AblationSampleCount = ordered[0].Ablations.Count > 0 ? (int)Math.Min(total, options.AblationSamples ?? total) : 0,
            CleanAccuracy = total > 0 ? (double)ordered.Sum(s => s.CleanCorrect) / total : double.NaN,
            Seconds = ordered.Sum(s => s.Seconds),
        };
        result.Skipped.AddRange(ordered[0].Skipped);
        foreach (var g in ordered.SelectMany(s => s.Gallery)) result.Gallery.Add((g.Image, g.Mask, g.Label));
        List<MethodResult> Rows(Func<BenchmarkRunState, List<MethodState>> select) =>
            select(ordered[0]).Select((m, k) => MethodResult.FromStates(options, ordered.Select(s => select(s)[k]).ToList())).ToList();
        result.References.AddRange(Rows(s => s.References));
        result.Methods.AddRange(Rows(s => s.Methods));
        result.Ablations.AddRange(Rows(s => s.Ablations));
        return result;
    }
}
