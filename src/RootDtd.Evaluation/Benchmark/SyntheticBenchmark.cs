using System.Diagnostics;
using System.Globalization;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Sharding;
using RootDtd.Evaluation.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Benchmark;

/// <summary>Settings of <see cref="SyntheticBenchmark.Run"/>.</summary>
public sealed record SyntheticBenchmarkSettings
{
    /// <summary>Architecture of the committed model (used when <see cref="WeightsPath"/> is null or to build the network for it).</summary>
    public SyntheticArchitecture Architecture { get; init; } = SyntheticArchitecture.ResNet;

    /// <summary>Explicit weights file, or <see langword="null"/> for the committed weights.</summary>
    public string? WeightsPath { get; init; }

    /// <summary>The <c>models/</c> folder, or <see langword="null"/> to search for it.</summary>
    public string? ModelsDirectory { get; init; }

    /// <summary>Test samples. Default 500.</summary>
    public int Samples { get; init; } = 500;

    /// <summary>Generator seed of the benchmark split (distinct from the training/validation/test streams). Default 4242.</summary>
    public int DataSeed { get; init; } = 4242;

    /// <summary>Benchmark options (the model name, data description and normalisation are filled in).</summary>
    public BenchmarkOptions Options { get; init; } = new();

    /// <summary>Output folder of the report.</summary>
    public string OutputDirectory { get; init; } = "benchmark-output";

    /// <summary>File-name prefix of the report (default: the model name).</summary>
    public string? Prefix { get; init; }

    /// <summary>Device of the model and the data (<c>cpu</c>, <c>cuda</c>, <c>cuda:K</c>); the caller checks that it exists. Default CPU.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>This run's shard: index (0-based) and count; (0, 1) = the whole split (see <see cref="BenchmarkShard.Of"/>).</summary>
    public (int Index, int Count) Shard { get; init; } = (0, 1);

    /// <summary>
    /// Continue an interrupted run from the state file in <see cref="OutputDirectory"/> (finished batches are not run
    /// again). Every run writes its state after every batch; an unsharded run without <c>Resume</c> removes it once the
    /// report is written, so only an interrupted run leaves it.
    /// </summary>
    public bool Resume { get; init; }

    /// <summary>
    /// Weights of the same architecture trained on randomly permuted labels for the sanity checks' data randomisation,
    /// or <see langword="null"/> for the default: with the committed weights (<see cref="WeightsPath"/> null) the committed
    /// random-label twin (<see cref="SyntheticModels.RandomLabelWeightsPath"/>) when it exists, else none. Only loaded when the
    /// sanity protocol runs. See <see cref="NoRandomLabelModel"/>.
    /// </summary>
    public string? RandomLabelWeightsPath { get; init; }

    /// <summary>Run no data-randomisation test, even when a committed random-label model exists. Default false.</summary>
    public bool NoRandomLabelModel { get; init; }
}

/// <summary>Runs the benchmark on a trained synthetic model and a freshly generated, seeded test split, and writes the report.</summary>
public static class SyntheticBenchmark
{
    /// <summary>
    /// Runs (one shard of) the benchmark. An unsharded run writes the report; a shard writes its state file, rewritten
    /// atomically after every batch, which <c>rootdtd merge</c> combines with the other shards' into the same report.
    /// </summary>
    /// <param name="settings">Settings.</param>
    /// <param name="log">Console-style log (progress lines, warnings, summaries), or <see langword="null"/>.</param>
    /// <param name="progress">Progress (moves within batches), or <see langword="null"/>.</param>
    /// <param name="cancellationToken">
    /// Checked before every batch of the benchmark (see <see cref="ShardedBenchmark.Run"/>): an interrupted run writes
    /// no report, removes the previous one and keeps its completed batches in the state file (continue with
    /// <see cref="SyntheticBenchmarkSettings.Resume"/>).
    /// </param>
    /// <returns>The result, the report files (unsharded runs) and the state file.</returns>
    /// <exception cref="BenchmarkInterruptedException">Cancelled during the benchmark (the state file holds the completed batches).</exception>
    /// <exception cref="OperationCanceledException">Cancelled before the benchmark started (nothing was written).</exception>
    public static BenchmarkRunOutput Run(SyntheticBenchmarkSettings settings, TextWriter? log = null, IProgress<BenchmarkProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var name = settings.WeightsPath is null ? SyntheticModels.NameOf(settings.Architecture) : Path.GetFileNameWithoutExtension(settings.WeightsPath);
        var prefix = settings.Prefix ?? name;
        var shard = BenchmarkShard.Of(settings.Shard.Index, settings.Shard.Count, settings.Samples, settings.Options.BatchSize);
        var (statePath, resume) = ShardedBenchmark.OpenState(settings.OutputDirectory, prefix, settings.Shard, settings.Resume, log);
        cancellationToken.ThrowIfCancellationRequested();

        using var model = settings.WeightsPath is null
            ? SyntheticModels.Load(settings.Architecture, settings.ModelsDirectory)
            : SyntheticModels.LoadFile(settings.Architecture, settings.WeightsPath);
        var randomLabelPath = RandomLabelWeights(settings);
        using var randomLabelModel = randomLabelPath is null ? null : SyntheticModels.LoadFile(settings.Architecture, randomLabelPath);
        if (randomLabelPath is not null) log?.WriteLine($"label randomisation: {randomLabelPath}");
        var clock = Stopwatch.StartNew();
        var (cpuImages, cpuMasks, cpuLabels) = SyntheticModels.GenerateSplit(settings.DataSeed, shard.Length, start: shard.Start);
        var device = torch.device(settings.Device);
        if (device.type != DeviceType.CPU)
        {
            model.to(device);
            randomLabelModel?.to(device);
        }
        using var images = device.type == DeviceType.CPU ? cpuImages : cpuImages.to(device);
        using var masks = device.type == DeviceType.CPU ? cpuMasks : cpuMasks.to(device);
        using var labels = device.type == DeviceType.CPU ? cpuLabels : cpuLabels.to(device);
        using (cpuImages)
        using (cpuMasks)
        using (cpuLabels)
        {
            var options = settings.Options with
            {
                ModelName = name,
                RandomLabelModel = randomLabelModel ?? settings.Options.RandomLabelModel,
                RandomLabelModelDescription = randomLabelPath is null ? settings.Options.RandomLabelModelDescription : SyntheticModels.DescribeRandomLabelModel(randomLabelPath),
                Normalization = SyntheticModels.Normalization,
                DataDescription = string.Create(CultureInfo.InvariantCulture,
                    $"{SyntheticModels.DataDescription}; {SyntheticModels.ImageSize}×{SyntheticModels.ImageSize}; seed {settings.DataSeed}, images 0…{settings.Samples - 1} (a stream not used in training)"),
            };
            log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"generated {shard.Length} test images in {clock.Elapsed.TotalSeconds:F1} s"));
            var runner = new BenchmarkRunner(model, options, progress, log);
            return ShardedBenchmark.Run(runner, options, images, masks, labels, shard, statePath, resume, settings.OutputDirectory, prefix, log,
                removeStateWhenComplete: settings.Shard.Count == 1 && !settings.Resume, cancellationToken);
        }
    }

    /// <summary>
    /// The random-label weights a run uses (see <see cref="SyntheticBenchmarkSettings.RandomLabelWeightsPath"/>): none
    /// without the sanity protocol or with <see cref="SyntheticBenchmarkSettings.NoRandomLabelModel"/>; the given file
    /// (which must exist); else, for the committed weights, the committed twin if it exists.
    /// </summary>
    /// <param name="settings">Settings.</param>
    /// <returns>The path, or <see langword="null"/>.</returns>
    /// <exception cref="FileNotFoundException">The given file does not exist.</exception>
    public static string? RandomLabelWeights(SyntheticBenchmarkSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        if (settings.NoRandomLabelModel || !settings.Options.Protocols.HasFlag(BenchmarkProtocols.Sanity)) return null;
        if (settings.RandomLabelWeightsPath is { } given)
            return File.Exists(given) ? given : throw new FileNotFoundException($"The random-label weights '{given}' do not exist.", given);
        if (settings.WeightsPath is not null) return null;
        var twin = SyntheticModels.RandomLabelWeightsPath(settings.Architecture, settings.ModelsDirectory);
        return File.Exists(twin) ? twin : null;
    }

    /// <summary>Parses a comma-separated protocol list: perturbation, localisation (localization), pgd, root-checks, sanity, all.</summary>
    /// <param name="text">Text.</param>
    /// <returns>The protocols.</returns>
    public static BenchmarkProtocols ParseProtocols(string text)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        var p = BenchmarkProtocols.None;
        foreach (var token in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            p |= token.ToLowerInvariant() switch
            {
                "all" => BenchmarkProtocols.All,
                "perturbation" or "perturb" => BenchmarkProtocols.Perturbation,
                "localisation" or "localization" or "loc" => BenchmarkProtocols.Localization,
                "pgd" => BenchmarkProtocols.Pgd,
                "root-checks" or "rootchecks" or "roots" or "fn" => BenchmarkProtocols.RootChecks,
                "sanity" or "sanity-checks" or "randomisation" or "randomization" => BenchmarkProtocols.Sanity,
                _ => throw new ArgumentException($"Unknown protocol '{token}': use perturbation, localisation, pgd, root-checks, sanity or all.", nameof(text)),
            };
        }

        return p;
    }
}
