using System.Diagnostics;
using System.Globalization;
using RootDtd.Evaluation.Metrics;
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
}

/// <summary>Runs the benchmark on a trained synthetic model and a freshly generated, seeded test split, and writes the report.</summary>
public static class SyntheticBenchmark
{
    /// <summary>Runs and writes the report.</summary>
    /// <param name="settings">Settings.</param>
    /// <param name="log">Console-style log (progress lines, warnings, summaries), or <see langword="null"/>.</param>
    /// <param name="progress">Per-batch progress, or <see langword="null"/>.</param>
    /// <returns>The result and the files written.</returns>
    public static (BenchmarkResult Result, BenchmarkFiles Files) Run(SyntheticBenchmarkSettings settings, TextWriter? log = null, IProgress<BenchmarkProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var name = settings.WeightsPath is null ? SyntheticModels.NameOf(settings.Architecture) : Path.GetFileNameWithoutExtension(settings.WeightsPath);
        using var model = settings.WeightsPath is null
            ? SyntheticModels.Load(settings.Architecture, settings.ModelsDirectory)
            : SyntheticModels.LoadFile(settings.Architecture, settings.WeightsPath);
        var clock = Stopwatch.StartNew();
        var (images, masks, labels) = SyntheticModels.GenerateSplit(settings.DataSeed, settings.Samples);
        using (images)
        using (masks)
        using (labels)
        {
            var options = settings.Options with
            {
                ModelName = name,
                Normalization = SyntheticModels.Normalization,
                DataDescription = string.Create(CultureInfo.InvariantCulture,
                    $"{SyntheticModels.DataDescription}; {SyntheticModels.ImageSize}×{SyntheticModels.ImageSize}; seed {settings.DataSeed}, images 0…{settings.Samples - 1} (a stream not used in training)"),
            };
            log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"generated {settings.Samples} test images in {clock.Elapsed.TotalSeconds:F1} s"));
            var runner = new BenchmarkRunner(model, options, progress, log);
            var result = runner.Run(images, masks, labels);
            var files = BenchmarkReport.Write(result, settings.OutputDirectory, settings.Prefix ?? name);
            return (result, files);
        }
    }

    /// <summary>Parses a comma-separated protocol list: perturbation, localisation (localization), pgd, root-checks, all.</summary>
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
                _ => throw new ArgumentException($"Unknown protocol '{token}': use perturbation, localisation, pgd, root-checks or all.", nameof(text)),
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
