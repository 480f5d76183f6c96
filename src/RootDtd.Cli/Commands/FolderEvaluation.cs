using System.Globalization;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Data;
using RootDtd.Imaging;
using RootDtd.Models;

namespace RootDtd.Cli.Commands;

/// <summary>The arguments of <c>rootdtd evaluate --data FOLDER</c>.</summary>
internal sealed record FolderEvaluationSettings(string Data, string? Masks, string? Architecture, string? Weights, string? Labels, int? Classes, int Size,
    string Normalization, int? Samples, string Output, BenchmarkOptions Options, bool DefaultProtocols, RunPlacement Placement);

/// <summary>
/// <c>rootdtd evaluate --data FOLDER --arch NAME [--weights W] [--masks M] [--shard i/n] [--resume] [--device D]</c>: the
/// benchmark on any model and image folder, or on one shard of it (samples by index in the folder's evaluation order,
/// the same on every machine holding the folder); <c>rootdtd merge</c> combines the shards.
/// </summary>
internal static class FolderEvaluation
{
    public static int Run(CliEnvironment environment, FolderEvaluationSettings s)
    {
        if (s.Architecture is null) throw new UsageException("evaluate --data needs the model: --arch NAME (see 'rootdtd models') and usually --weights FILE.");
        if (!ModelZoo.Contains(s.Architecture)) throw new UsageException($"Unknown --arch '{s.Architecture}'. Known: {string.Join(", ", ModelZoo.Names)}.");
        if (s.Weights is not null && !File.Exists(s.Weights)) throw new UsageException($"Weights file '{s.Weights}' not found.");
        if (s.Samples is < 1) throw new UsageException("--samples must be at least 1.");
        if (s.Size < 8) throw new UsageException($"--size must be at least 8, was {s.Size}.");

        ImageFolder folder;
        try
        {
            folder = ImageFolder.Scan(s.Data);
        }
        catch (Exception e) when (e is ArgumentException or DirectoryNotFoundException)
        {
            throw new UsageException(e.Message);
        }
        if (s.Masks is not null && !Directory.Exists(s.Masks)) throw new UsageException($"The mask folder '{s.Masks}' does not exist.");

        CommandAction.RequireWritableFolder(s.Output);
        var labels = s.Labels is null ? null : ReadLabels(s.Labels);
        var classCount = s.Classes ?? labels?.Count ?? folder.ClassNames.Count;
        var notes = new List<string>();
        var classIndex = new List<int>();
        for (var c = 0; c < folder.ClassNames.Count; c++)
        {
            var name = folder.ClassNames[c];
            int index;
            if (labels is not null)
            {
                index = labels.IndexOf(name);
                if (index < 0) throw new UsageException($"The class folder '{name}' is not a class of --labels {s.Labels} (its names: {string.Join(", ", labels.Take(10))}{(labels.Count > 10 ? ", …" : string.Empty)}).");
            }
            else if (!int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out index))
            {
                index = c;
            }
            if (index >= classCount) throw new UsageException($"The class folder '{name}' maps to class {index}, but the model has {classCount} classes.");
            classIndex.Add(index);
        }
        if (labels is null && folder.ClassNames.Any(n => !int.TryParse(n, NumberStyles.None, CultureInfo.InvariantCulture, out _)))
            notes.Add("class folders are matched to the model's outputs in name order (give --labels to match them by name)");

        var isCntk = string.Equals(s.Architecture, CntkResNet18.ModelName, StringComparison.OrdinalIgnoreCase);
        if (isCntk && s.Size != CntkResNet18.InputSize) throw new UsageException($"{CntkResNet18.ModelName} takes {CntkResNet18.InputSize}x{CntkResNet18.InputSize} images; --size was {s.Size}.");
        var normalization = ImageNormalization.ForArchitecture(s.Architecture) ?? s.Normalization.Trim().ToLowerInvariant() switch
        {
            "imagenet" => ImageNormalization.ImageNet,
            "half" => ImageNormalization.Half,
            "identity" or "none" => ImageNormalization.Identity,
            var other => throw new UsageException($"--normalization must be imagenet, half or identity, was '{other}'."),
        };

        using var model = ModelZoo.Create(s.Architecture, classCount);
        if (s.Weights is null) environment.WriteWarning($"no --weights given: {s.Architecture} has {(isCntk ? "an untrained head" : "random weights")}, so the scores say nothing about a trained model.");
        else ModelWeights.Load(model, s.Weights);
        model.eval();

        var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = (int)Math.Round(s.Size * 256.0 / 224.0), CropSize = s.Size, Normalization = normalization });
        var options = s.Options;
        if (s.Masks is null && options.Protocols.HasFlag(BenchmarkProtocols.Localization))
        {
            if (!s.DefaultProtocols) throw new UsageException("Localisation needs masks: give --masks FOLDER (one mask PNG per image, or the VOC layout), or leave localisation out of --protocols.");
            options = options with { Protocols = options.Protocols & ~BenchmarkProtocols.Localization };
            notes.Add("no --masks: localisation was not measured");
        }
        FolderPlan plan;
        try
        {
            plan = FolderBenchmark.Plan(folder, classIndex, s.Masks, s.Samples);
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message);
        }
        foreach (var note in notes.Concat(plan.Notes)) environment.WriteWarning(note);
        var modelName = s.Weights is null ? s.Architecture : Path.GetFileNameWithoutExtension(s.Weights);
        options = options with
        {
            ModelName = modelName,
            Normalization = normalization,
            // no absolute paths: the shards of one evaluation may see the folder under other paths on other machines
            DataDescription = string.Create(CultureInfo.InvariantCulture,
                $"image folder '{FolderName(s.Data)}': {plan.Samples.Count} images of {folder.ClassNames.Count} classes (file list {plan.Digest}), resized to {loader.Options.ResizeShorterSide} and centre-cropped to {s.Size}×{s.Size}{(s.Masks is null ? string.Empty : $"; masks from '{FolderName(s.Masks)}'")}"),
            DataNotes = notes,
        };
        var settings = new FolderBenchmarkSettings
        {
            Options = options, OutputDirectory = s.Output, Prefix = modelName, Shard = s.Placement.Shard, Resume = s.Placement.Resume, Device = s.Placement.Device,
        };
        var progress = new BenchmarkConsoleProgress(environment);
        BenchmarkRunOutput outcome;
        try
        {
            outcome = FolderBenchmark.Run(model, plan, loader, settings, environment.Error, progress, environment.Cancellation);
        }
        catch (ArgumentException e)
        {
            throw new CliFailureException(e.Message);
        }
        catch (BenchmarkInterruptedException e)
        {
            progress.Finish();
            return EvaluateCommand.Interrupted(environment, e, s.Placement.Shard.Count > 1);
        }
        progress.Finish();
        var result = outcome.Result;
        foreach (var note in outcome.Result.Options.DataNotes.Skip(notes.Count + plan.Notes.Count)) environment.WriteWarning(note);
        environment.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{modelName}: {result.Samples} images{EvaluateCommand.ShardText(outcome, plan.Samples.Count)}, clean accuracy {result.CleanAccuracy:P1}, {result.Methods.Count} methods, {result.Options.DataNotes.Count} data notes, {outcome.State.Seconds:F0} s"));
        EvaluateCommand.WriteFiles(environment, outcome);
        return ExitCodes.Ok;
    }

    private static string FolderName(string path) => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(path)));

    private static List<string> ReadLabels(string path)
    {
        if (!File.Exists(path)) throw new UsageException($"Labels file '{path}' not found.");
        var lines = File.ReadAllLines(path).Select(l => l.Trim()).ToList();
        while (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        if (lines.Count == 0) throw new UsageException($"Labels file '{path}' is empty.");
        return lines;
    }
}
