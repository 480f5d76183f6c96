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
    /// again). The state is written after every batch whenever the run is sharded or resumable.
    /// </summary>
    public bool Resume { get; init; }
}

/// <summary>What <see cref="SyntheticBenchmark.Run"/> produced.</summary>
/// <param name="Result">The result of the shard (for an unsharded run: of the whole split).</param>
/// <param name="Files">The report files (null for a shard of several: <c>rootdtd merge</c> writes the report).</param>
/// <param name="StatePath">The state file (null for an unsharded run that was not asked to be resumable).</param>
/// <param name="State">The shard's state.</param>
public sealed record SyntheticBenchmarkOutput(BenchmarkResult Result, BenchmarkFiles? Files, string? StatePath, BenchmarkRunState State)
{
    /// <summary>Deconstructs into result and files (the files of a sharded run are null).</summary>
    public void Deconstruct(out BenchmarkResult result, out BenchmarkFiles? files)
    {
        result = Result;
        files = Files;
    }
}

/// <summary>Runs the benchmark on a trained synthetic model and a freshly generated, seeded test split, and writes the report.</summary>
public static class SyntheticBenchmark
{
    /// <summary>The state file of a shard in its output folder: <c>&lt;prefix&gt;.state.json</c> (whole split) or <c>&lt;prefix&gt;.shard-I-of-N.state.json</c>.</summary>
    /// <param name="directory">Output folder.</param>
    /// <param name="prefix">Report prefix.</param>
    /// <param name="shard">(index, count).</param>
    public static string StatePath(string directory, string prefix, (int Index, int Count) shard) =>
        Path.Combine(directory, shard.Count == 1 ? prefix + ".state.json" : string.Create(CultureInfo.InvariantCulture, $"{prefix}.shard-{shard.Index}-of-{shard.Count}.state.json"));

    /// <summary>
    /// Runs (one shard of) the benchmark. An unsharded run writes the report; a shard writes its state file, rewritten
    /// atomically after every batch, which <c>rootdtd merge</c> combines with the other shards' into the same report.
    /// </summary>
    /// <param name="settings">Settings.</param>
    /// <param name="log">Console-style log (progress lines, warnings, summaries), or <see langword="null"/>.</param>
    /// <param name="progress">Progress (moves within batches), or <see langword="null"/>.</param>
    /// <returns>The result, the report files (unsharded runs) and the state file.</returns>
    public static SyntheticBenchmarkOutput Run(SyntheticBenchmarkSettings settings, TextWriter? log = null, IProgress<BenchmarkProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var name = settings.WeightsPath is null ? SyntheticModels.NameOf(settings.Architecture) : Path.GetFileNameWithoutExtension(settings.WeightsPath);
        var prefix = settings.Prefix ?? name;
        var shard = BenchmarkShard.Of(settings.Shard.Index, settings.Shard.Count, settings.Samples, settings.Options.BatchSize);
        var writeState = settings.Shard.Count > 1 || settings.Resume;
        var statePath = writeState ? StatePath(settings.OutputDirectory, prefix, settings.Shard) : null;
        BenchmarkRunState? resume = null;
        if (settings.Resume && statePath is not null && File.Exists(statePath))
        {
            resume = BenchmarkRunState.FromJson(File.ReadAllText(statePath), statePath);
            log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"resuming from {statePath}"));
        }
        if (writeState) RootDtd.IO.AtomicFile.EnsureWritableFolder(settings.OutputDirectory);

        using var model = settings.WeightsPath is null
            ? SyntheticModels.Load(settings.Architecture, settings.ModelsDirectory)
            : SyntheticModels.LoadFile(settings.Architecture, settings.WeightsPath);
        var clock = Stopwatch.StartNew();
        var (cpuImages, cpuMasks, cpuLabels) = SyntheticModels.GenerateSplit(settings.DataSeed, shard.Length, start: shard.Start);
        var device = torch.device(settings.Device);
        if (device.type != DeviceType.CPU) model.to(device);
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
                Normalization = SyntheticModels.Normalization,
                DataDescription = string.Create(CultureInfo.InvariantCulture,
                    $"{SyntheticModels.DataDescription}; {SyntheticModels.ImageSize}×{SyntheticModels.ImageSize}; seed {settings.DataSeed}, images 0…{settings.Samples - 1} (a stream not used in training)"),
            };
            log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"generated {shard.Length} test images in {clock.Elapsed.TotalSeconds:F1} s"));
            var runner = new BenchmarkRunner(model, options, progress, log);
            Action<BenchmarkRunState>? checkpoint = statePath is null ? null : s => RootDtd.IO.AtomicFile.WriteAllText(statePath, s.ToJson());
            var state = runner.RunShard(images, masks, labels, shard, resume, checkpoint);
            if (settings.Shard.Count > 1)
            {
                // the shard's own numbers (the report of the whole split comes from rootdtd merge)
                var whole = new BenchmarkRunState
                {
                    Fingerprint = state.Fingerprint, Shard = BenchmarkShard.Whole(shard.Length), Settings = state.Settings, Height = state.Height, Width = state.Width,
                    CleanCorrect = state.CleanCorrect, Skipped = state.Skipped, Gallery = state.Gallery, References = state.References, Methods = state.Methods,
                    Ablations = state.Ablations, Seconds = state.Seconds, Complete = true,
                };
                return new SyntheticBenchmarkOutput(BenchmarkResult.FromStates(options, new[] { whole }), null, statePath, state);
            }
            var result = BenchmarkResult.FromStates(options, new[] { state });
            var files = BenchmarkReport.Write(result, settings.OutputDirectory, prefix);
            return new SyntheticBenchmarkOutput(result, files, statePath, state);
        }
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

    /// <summary>Console progress: one line per method stage (every ~10 % of its samples).</summary>
    /// <param name="log">Where to write.</param>
    /// <returns>The progress sink.</returns>
    public static IProgress<BenchmarkProgress> ConsoleProgress(TextWriter log)
    {
        ArgumentNullException.ThrowIfNull(log);
        return new LineProgress(log);
    }

    private sealed class LineProgress : IProgress<BenchmarkProgress>
    {
        private readonly TextWriter _log;
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private string _key = "";
        private int _lastDecile = -1;

        public LineProgress(TextWriter log) => _log = log;

        public void Report(BenchmarkProgress p)
        {
            var key = p.Method + "/" + p.Stage;
            if (key != _key)
            {
                _key = key;
                _lastDecile = -1;
            }

            var decile = p.SamplesTotal > 0 ? 10 * p.SamplesDone / p.SamplesTotal : 10;
            if (decile == _lastDecile || (decile % 5 != 0 && p.SamplesDone != p.SamplesTotal)) return;
            _lastDecile = decile;
            _log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  [{p.MethodIndex}/{p.MethodCount - 1}] {p.Method,-28} {p.Stage,-26} {p.SamplesDone,5}/{p.SamplesTotal} ({_clock.Elapsed.TotalSeconds:F0} s)"));
        }
    }
}
