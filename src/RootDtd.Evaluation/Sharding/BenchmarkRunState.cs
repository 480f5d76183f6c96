using System.Text.Json;
using System.Text.Json.Serialization;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Metrics;

namespace RootDtd.Evaluation.Sharding;

/// <summary>
/// A slice of a benchmark's samples: shard <see cref="Index"/> of <see cref="Count"/> covers the samples
/// [<see cref="Start"/>, <see cref="Start"/> + <see cref="Length"/>) of <see cref="Total"/>. Slices are made of whole
/// batches (<see cref="Of"/>), so every batch of a shard is a batch of the unsharded run and the merged sums are the
/// unsharded run's, bit for bit.
/// </summary>
/// <param name="Index">0-based shard index.</param>
/// <param name="Count">Number of shards.</param>
/// <param name="Start">Index of the first sample (in the whole dataset).</param>
/// <param name="Length">Samples of this shard (may be 0 when there are more shards than batches).</param>
/// <param name="Total">Samples of the whole dataset.</param>
public sealed record BenchmarkShard(int Index, int Count, int Start, int Length, int Total)
{
    /// <summary>The whole dataset as one shard.</summary>
    /// <param name="total">Samples.</param>
    public static BenchmarkShard Whole(int total) => new(0, 1, 0, total, total);

    /// <summary>
    /// Shard <paramref name="index"/> of <paramref name="count"/>: the dataset's batches of <paramref name="batchSize"/>
    /// samples (the last one may be shorter) are split into <paramref name="count"/> contiguous runs of whole batches
    /// (batch b goes to shard ⌊b · count / batches⌋) — deterministic, the same on every machine.
    /// </summary>
    /// <param name="index">0-based shard index.</param>
    /// <param name="count">Number of shards (≥ 1).</param>
    /// <param name="total">Samples of the dataset.</param>
    /// <param name="batchSize">Samples per batch of the run.</param>
    public static BenchmarkShard Of(int index, int count, int total, int batchSize)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), count, "At least one shard.");
        if (index < 0 || index >= count) throw new ArgumentOutOfRangeException(nameof(index), index, $"A shard index is 0 … {count - 1}.");
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Must be ≥ 1.");
        var batches = (total + batchSize - 1) / batchSize;
        var first = (int)((long)index * batches / count);
        var end = (int)((long)(index + 1) * batches / count);
        var start = Math.Min(total, first * batchSize);
        var stop = Math.Min(total, end * batchSize);
        return new BenchmarkShard(index, count, start, stop - start, total);
    }

    /// <summary>Parses <c>i/n</c> (0-based i, e.g. <c>0/4</c> … <c>3/4</c>).</summary>
    /// <param name="text">The text.</param>
    /// <returns>(index, count).</returns>
    public static (int Index, int Count) Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split('/');
        if (parts.Length != 2 || !int.TryParse(parts[0].Trim(), out var i) || !int.TryParse(parts[1].Trim(), out var n) || n < 1 || i < 0 || i >= n)
            throw new ArgumentException($"A shard is i/n with 0 ≤ i < n (e.g. 0/4 … 3/4), was '{text}'.", nameof(text));
        return (i, n);
    }
}

/// <summary>Everything measured for one method on one shard, as sums that merge exactly (see <see cref="ExactSum"/>).</summary>
public sealed class MethodState
{
    /// <summary>Row label.</summary>
    public required string Label { get; init; }

    /// <summary>Catalog spec.</summary>
    public required string Spec { get; init; }

    /// <summary>True for an ablation row.</summary>
    public bool IsAblation { get; init; }

    /// <summary>Global start indices of the batches whose explanation, perturbation, localisation and root checks are done.</summary>
    public List<int> BatchesDone { get; init; } = new();

    /// <summary>Samples explained.</summary>
    public int Explained { get; set; }

    /// <summary>Perturbation sums, if run.</summary>
    public PerturbationState? Perturbation { get; set; }

    /// <summary>Localisation sums, if run.</summary>
    public LocalizationState? Localization { get; set; }

    /// <summary>PGD counts, once PGD of this shard is done.</summary>
    public PgdCounts? Pgd { get; set; }

    /// <summary>
    /// Sanity-check result, computed only by an unsharded run (a shard never computes it: the randomised-model maps are
    /// not reproducible bit for bit across processes, so shards could not be merged into one table). It is written to
    /// the state file once complete, so a resumed run keeps it instead of computing it again; a state written before
    /// this field existed reads as <see langword="null"/> and the resumed run computes it once.
    /// </summary>
    public SanityCheckResult? Sanity { get; set; }

    /// <summary>The sanity settings <see cref="Sanity"/> was computed with (sample count, groups, independent, top fraction,
    /// seed); a resume with other settings computes the checks again. <see langword="null"/> in a state written before it existed.</summary>
    public string? SanitySettings { get; set; }

    /// <summary>Name of the input-layer unit whose root was checked.</summary>
    public string? RootUnit { get; set; }

    /// <summary>Per-sample target scores at x, S and N (logit input, signal, root; probability input, signal, root), in sample order.</summary>
    public List<double[]> RootScores { get; init; } = new();

    /// <summary>Linear-region sums per unit, in first-seen order.</summary>
    public List<RegionSums> Regions { get; init; } = new();

    /// <summary>Σ conservation error over the explained samples.</summary>
    public ExactSum Conservation { get; set; }

    /// <summary>Σ explanation time in milliseconds (measured; not reproducible).</summary>
    public double ExplainMilliseconds { get; set; }

    /// <summary>Wall-clock seconds (measured).</summary>
    public double Seconds { get; set; }

    /// <summary>Error message if the method failed.</summary>
    public string? Error { get; set; }

    /// <summary>Gallery heatmaps (only in the shard holding the first samples).</summary>
    public float[][]? Gallery { get; set; }

    /// <summary>True when every protocol of this method is done on the shard.</summary>
    public bool Complete { get; set; }
}

/// <summary>PGD counts of a shard.</summary>
/// <param name="Samples">Samples attacked.</param>
/// <param name="InitiallyCorrect">Samples classified correctly before the attack.</param>
/// <param name="Successes">Successful attacks.</param>
/// <param name="IterationSum">Σ iterations of the successful attacks.</param>
public sealed record PgdCounts(int Samples, int InitiallyCorrect, int Successes, long IterationSum);

/// <summary>Linear-region sums of one unit.</summary>
/// <param name="Unit">Unit name.</param>
/// <param name="Samples">Samples.</param>
/// <param name="MeanSquaredDifference">Σ per-sample mean squared derivative difference.</param>
/// <param name="SameState">Σ per-sample same-state fraction.</param>
/// <param name="Identical">Samples with an identical on/off pattern.</param>
public sealed record RegionSums(string Unit, int Samples, ExactSum MeanSquaredDifference, ExactSum SameState, int Identical);

/// <summary>One gallery sample: [0,1] RGB image (CHW), mask and label.</summary>
/// <param name="Image">Pixels.</param>
/// <param name="Mask">Mask.</param>
/// <param name="Label">Label.</param>
public sealed record GallerySample(float[] Image, byte[] Mask, int Label);

/// <summary>
/// The state of a benchmark run on one shard: what <c>rootdtd evaluate --shard i/n</c> writes
/// (<c>&lt;prefix&gt;.state.json</c>, rewritten atomically after every batch so that <c>--resume</c> continues from the
/// last completed batch) and what <c>rootdtd merge</c> combines into the report one run writes.
/// </summary>
public sealed class BenchmarkRunState
{
    /// <summary>Format version of the file.</summary>
    public int Format { get; init; } = 1;

    /// <summary>What must agree between shards to merge them (model, data, methods, protocols, batch size …).</summary>
    public required string Fingerprint { get; init; }

    /// <summary>The slice.</summary>
    public required BenchmarkShard Shard { get; init; }

    /// <summary>
    /// The run's options, as far as the report needs them (so that <c>rootdtd merge</c> needs nothing else); a resumed
    /// run writes its own (the fingerprint holds the rest equal; the sanity settings may differ, and then its sanity
    /// results are computed again).
    /// </summary>
    public required BenchmarkSettings Settings { get; set; }

    /// <summary>Image height.</summary>
    public int Height { get; set; }

    /// <summary>Image width.</summary>
    public int Width { get; set; }

    /// <summary>Correctly classified samples of the shard (clean accuracy).</summary>
    public int CleanCorrect { get; set; }

    /// <summary>Methods and ablations that could not be run.</summary>
    public List<SkippedMethod> Skipped { get; init; } = new();

    /// <summary>Gallery samples (only in the shard holding the first samples).</summary>
    public List<GallerySample> Gallery { get; init; } = new();

    /// <summary>Reference rows (random, empty).</summary>
    public List<MethodState> References { get; init; } = new();

    /// <summary>Main methods.</summary>
    public List<MethodState> Methods { get; init; } = new();

    /// <summary>Ablations.</summary>
    public List<MethodState> Ablations { get; init; } = new();

    /// <summary>Wall-clock seconds (measured).</summary>
    public double Seconds { get; set; }

    /// <summary>True when the shard is finished.</summary>
    public bool Complete { get; set; }

    /// <summary>
    /// What this state holds, in words: which rows are complete and how many batches of the others are done (e.g.
    /// <c>complete: references, lrp-epsilon; partial: root (2 of 4 batches)</c>).
    /// </summary>
    public string DescribeProgress()
    {
        var batches = Shard.Length == 0 ? 0 : (Shard.Length + Settings.BatchSize - 1) / Settings.BatchSize;
        var complete = new List<string>();
        var partial = new List<string>();
        var references = References.Count > 0 && References.All(r => r.Complete);
        if (references) complete.Add("references");
        else if (References.FirstOrDefault() is { BatchesDone.Count: > 0 } r) partial.Add($"references ({r.BatchesDone.Count} of {batches} batches)");
        foreach (var m in Methods.Concat(Ablations))
        {
            if (m.Complete) complete.Add(m.Label);
            // ablations may run on the first samples only: their batch count is not the shard's
            else if (m.BatchesDone.Count > 0) partial.Add(m.IsAblation ? $"{m.Label} ({m.BatchesDone.Count} batches)" : $"{m.Label} ({m.BatchesDone.Count} of {batches} batches)");
        }
        if (complete.Count == 0 && partial.Count == 0) return "no batch was complete";
        var parts = new List<string>();
        if (complete.Count > 0) parts.Add("complete: " + string.Join(", ", complete));
        if (partial.Count > 0) parts.Add("partial: " + string.Join(", ", partial));
        return string.Join("; ", parts);
    }

    /// <summary>Serializer settings (indented; exact sums as integer strings; enums by name).</summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        WriteIndented = false,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new ExactSumConverter(), new JsonStringEnumConverter() },
    };

    /// <summary>The state as JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Reads a state written by <see cref="ToJson"/>.</summary>
    /// <param name="json">The text.</param>
    /// <param name="source">Where it came from (for messages).</param>
    /// <exception cref="InvalidDataException">Not a benchmark state.</exception>
    public static BenchmarkRunState FromJson(string json, string source)
    {
        try
        {
            return JsonSerializer.Deserialize<BenchmarkRunState>(json, JsonOptions) ?? throw new InvalidDataException($"'{source}' is empty.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{source}' is not a benchmark state file ({e.Message}).", e);
        }
    }

    private sealed class ExactSumConverter : JsonConverter<ExactSum>
    {
        public override ExactSum Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => ExactSum.Parse(reader.GetString() ?? "0");

        public override void Write(Utf8JsonWriter writer, ExactSum value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToString());
    }
}

/// <summary>The options of a benchmark run that its report depends on, in a form that survives JSON.</summary>
public sealed record BenchmarkSettings
{
    /// <summary>Model name.</summary>
    public required string ModelName { get; init; }

    /// <summary>Data description.</summary>
    public required string DataDescription { get; init; }

    /// <summary>Data notes of the report.</summary>
    public IReadOnlyList<string> DataNotes { get; init; } = Array.Empty<string>();

    /// <summary>Normalisation mean.</summary>
    public required IReadOnlyList<float> Mean { get; init; }

    /// <summary>Normalisation standard deviation.</summary>
    public required IReadOnlyList<float> Std { get; init; }

    /// <summary>Protocols.</summary>
    public required BenchmarkProtocols Protocols { get; init; }

    /// <summary>Samples per batch.</summary>
    public required int BatchSize { get; init; }

    /// <summary>PGD samples.</summary>
    public int? PgdSamples { get; init; }

    /// <summary>Ablation samples.</summary>
    public int? AblationSamples { get; init; }

    /// <summary>Gallery samples.</summary>
    public int GallerySamples { get; init; }

    /// <summary>Seed of the random reference maps.</summary>
    public int RandomSeed { get; init; }

    /// <summary>Main methods.</summary>
    public required IReadOnlyList<BenchmarkMethod> Methods { get; init; }

    /// <summary>Perturbation orders.</summary>
    public required IReadOnlyList<PerturbationOrder> Orders { get; init; }

    /// <summary>Perturbation schedules.</summary>
    public required IReadOnlyList<PerturbationSchedule> Schedules { get; init; }

    /// <summary>Perturbation baseline.</summary>
    public PerturbationBaseline Baseline { get; init; }

    /// <summary>Custom baseline values.</summary>
    public IReadOnlyList<double>? CustomBaseline { get; init; }

    /// <summary>PGD ε (in [0,1] pixel units).</summary>
    public double PgdEpsilon { get; init; }

    /// <summary>PGD step size.</summary>
    public double? PgdStepSize { get; init; }

    /// <summary>PGD iterations.</summary>
    public int PgdMaxIterations { get; init; }

    /// <summary>PGD top-k.</summary>
    public int? PgdTopK { get; init; }

    /// <summary>Whether PGD recomputes the heatmap at every step.</summary>
    public bool PgdRecomputeHeatmap { get; init; }

    /// <summary>Samples of the sanity checks (absent in states written before it was stored: the default then).</summary>
    public int? SanitySamples { get; init; }

    /// <summary>Options of the sanity checks (absent in states written before they were stored: the defaults then).</summary>
    public SanityCheckOptions? Sanity { get; init; }

    /// <summary>What the random-label model of the sanity checks was (<see cref="BenchmarkOptions.RandomLabelModelDescription"/>), when one was given.</summary>
    public string? RandomLabelModelDescription { get; init; }

    /// <summary>
    /// The report's description of the normalisation (a mean image is described by its size, channel order and channel
    /// means, which <see cref="Mean"/> and <see cref="Std"/> alone cannot say); absent in states written before it was
    /// stored: the report then describes <see cref="Mean"/> and <see cref="Std"/>.
    /// </summary>
    public string? NormalizationDescription { get; init; }

    /// <summary>
    /// Whether batches made with <paramref name="other"/> can be combined with these as far as the normalisation goes:
    /// the same per-channel mean and std and, where both states keep it, the same description (which tells a mean image
    /// and its channel order apart). The run fingerprint does not cover the normalisation, and states written before
    /// this check existed carry the same fingerprints, so it is checked on its own.
    /// </summary>
    /// <param name="other">Settings of another state (a shard, or this run's own settings on resume).</param>
    public bool SameNormalization(BenchmarkSettings other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return Mean.SequenceEqual(other.Mean) && Std.SequenceEqual(other.Std)
            && (NormalizationDescription is null || other.NormalizationDescription is null || NormalizationDescription == other.NormalizationDescription);
    }

    /// <summary>The normalisation as the report describes it (<see cref="NormalizationDescription"/>, else from <see cref="Mean"/> and <see cref="Std"/>), quoted, for messages.</summary>
    public string NormalizationForMessages() => "'" + (NormalizationDescription ?? BenchmarkReport.DescribeNormalization(new ImageNormalization(Mean, Std))) + "'";

    /// <summary>The settings of <paramref name="options"/>.</summary>
    /// <param name="options">Options.</param>
    public static BenchmarkSettings Of(BenchmarkOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new BenchmarkSettings
        {
            ModelName = options.ModelName,
            DataDescription = options.DataDescription,
            DataNotes = options.DataNotes.ToArray(),
            Mean = options.Normalization.Mean.ToArray(),
            Std = options.Normalization.Std.ToArray(),
            Protocols = options.Protocols,
            BatchSize = options.BatchSize,
            PgdSamples = options.PgdSamples,
            AblationSamples = options.AblationSamples,
            GallerySamples = options.GallerySamples,
            RandomSeed = options.RandomSeed,
            Methods = options.Methods.ToArray(),
            Orders = options.Perturbation.Orders.ToArray(),
            Schedules = options.Perturbation.Schedules.ToArray(),
            Baseline = options.Perturbation.Baseline,
            CustomBaseline = options.Perturbation.CustomBaseline?.ToArray(),
            PgdEpsilon = options.Pgd.Epsilon,
            PgdStepSize = options.Pgd.StepSize,
            PgdMaxIterations = options.Pgd.MaxIterations,
            PgdTopK = options.Pgd.TopK,
            PgdRecomputeHeatmap = options.Pgd.RecomputeHeatmap,
            SanitySamples = options.SanitySamples,
            Sanity = options.Sanity,
            RandomLabelModelDescription = options.RandomLabelModel is null ? null : options.RandomLabelModelDescription,
            NormalizationDescription = options.NormalizationDescription ?? BenchmarkReport.DescribeNormalization(options.Normalization),
        };
    }

    /// <summary>Options that render the same report (the ablation definitions are not needed for that).</summary>
    public BenchmarkOptions ToOptions() => new()
    {
        ModelName = ModelName,
        DataDescription = DataDescription,
        DataNotes = DataNotes,
        Normalization = new ImageNormalization(Mean, Std),
        Protocols = Protocols,
        BatchSize = BatchSize,
        PgdSamples = PgdSamples,
        AblationSamples = AblationSamples,
        GallerySamples = GallerySamples,
        RandomSeed = RandomSeed,
        Methods = Methods,
        Perturbation = new PixelPerturbationOptions { Orders = Orders, Schedules = Schedules, Baseline = Baseline, CustomBaseline = CustomBaseline },
        Pgd = new PgdOptions { Epsilon = PgdEpsilon, StepSize = PgdStepSize, MaxIterations = PgdMaxIterations, TopK = PgdTopK, RecomputeHeatmap = PgdRecomputeHeatmap },
        SanitySamples = SanitySamples ?? new BenchmarkOptions().SanitySamples,
        Sanity = Sanity ?? new SanityCheckOptions(),
        RandomLabelModelDescription = RandomLabelModelDescription,
        NormalizationDescription = NormalizationDescription,
    };
}
