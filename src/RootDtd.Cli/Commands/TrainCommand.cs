using System.CommandLine;
using System.Globalization;
using RootDtd.Evaluation.Data;
using RootDtd.Evaluation.Training;
using RootDtd.Imaging;
using RootDtd.Models;
using TorchSharp;

namespace RootDtd.Cli.Commands;

/// <summary>
/// <c>rootdtd train --model resnet|vgg|vit --out models/NAME.safetensors [--images N] [--size 64] [--seed S] [--epochs E] [--lr R] [--warmup E] [--init W]</c>:
/// trains a synthetic-benchmark classifier on the CPU and writes the weights plus a JSON sidecar; with
/// <c>--permuted-labels SEED</c> on randomly permuted training labels (the sanity checks' data-randomisation model).
/// <c>rootdtd train --backbone resnet18-imagenet-cntk --data FOLDER --out W.safetensors</c> trains a linear head on the
/// frozen backbone (held-out split, accuracy); <c>--head prototypes:FOLDER</c> builds a prototype head instead. Both
/// write the full model's weights, a labels file and a JSON report.
/// </summary>
public sealed class TrainCommand : ICliCommand
{
    /// <inheritdoc />
    public Command Build(CliEnvironment environment)
    {
        var arch = new Option<string?>("--arch", "-a", "--model") { Description = "resnet, vgg or vit (the synthetic benchmark's nets; synthetic-resnet, synthetic-vgg, synthetic-vit also work).", HelpName = "resnet|vgg|vit" };
        var backbone = new Option<string?>("--backbone") { Description = $"A ResNet zoo model whose backbone is kept frozen, e.g. {CntkResNet18.ModelName}; with --data or --head.", HelpName = "name" };
        var data = new Option<string?>("--data") { Description = "Image folder for a linear head: one subfolder per class.", HelpName = "dir" };
        var head = new Option<string?>("--head") { Description = "linear (default, needs --data) or prototypes:FOLDER (class subfolders, or images each a class of its own).", HelpName = "linear|prototypes:dir" };
        var holdout = new Option<double>("--holdout") { Description = "Fraction of each class held out for the linear head's accuracy.", DefaultValueFactory = _ => new LinearProbeOptions().HoldoutFraction, HelpName = "fraction" };
        var steps = new Option<int>("--steps") { Description = "Full-batch optimiser steps of the linear head.", DefaultValueFactory = _ => new LinearProbeOptions().Steps, HelpName = "N" };
        var output = new Option<string>("--out", "-o") { Description = "Output .safetensors file (the sidecar .json is written next to it).", Required = true, HelpName = "file" };
        var images = new Option<int>("--images") { Description = "Training images.", DefaultValueFactory = _ => 6000, HelpName = "N" };
        var size = new Option<int>("--size") { Description = "Image side in pixels.", DefaultValueFactory = _ => SyntheticModels.ImageSize, HelpName = "pixels" };
        var seed = new Option<int>("--seed") { Description = "Torch seed (initialisation, shuffling, flips).", DefaultValueFactory = _ => 1, HelpName = "S" };
        var dataSeed = new Option<int>("--data-seed") { Description = "Generator seed of the training stream (validation +1, test +2).", DefaultValueFactory = _ => 1000, HelpName = "S" };
        var epochs = new Option<int>("--epochs") { Description = "Maximum epochs.", DefaultValueFactory = _ => 30, HelpName = "E" };
        var target = new Option<double>("--target") { Description = "Stop when the validation accuracy reaches this value.", DefaultValueFactory = _ => 0.95, HelpName = "accuracy" };
        var timeLimit = new Option<double?>("--time-limit") { Description = "Start no new epoch after this many seconds of training (the sidecar records the stop).", HelpName = "seconds" };
        var init = new Option<string?>("--init") { Description = "Start from these weights (same architecture) instead of a random initialisation: a second stage with its own schedule; its sidecar is kept in the new one.", HelpName = "file" };
        var permutedLabels = new Option<int?>("--permuted-labels")
        {
            Description = "Train on randomly permuted training labels, shuffled once with this seed (the data-randomisation model of the sanity checks, Adebayo et al. 2018; validation and test labels stay true). ResNet and VGG only.",
            HelpName = "seed",
        };
        var learningRate = new Option<double?>("--lr") { Description = "Peak learning rate (default: the architecture's recipe, 3e-3 for the CNNs, 1.5e-3 for the ViT).", HelpName = "rate" };
        var warmup = new Option<int?>("--warmup") { Description = "Linear warm-up epochs before the cosine schedule (default: the recipe's, 0 for the CNNs, 2 for the ViT).", HelpName = "E" };
        var threads = new Option<int>("--threads") { Description = "CPU threads of libtorch (0 = libtorch's default).", DefaultValueFactory = _ => 0, HelpName = "N" };
        var command = new Command("train", "Train a small ResNet, VGG or ViT on the seeded synthetic benchmark (CPU) and save safetensors weights plus a JSON sidecar.")
        {
            arch, backbone, data, head, holdout, steps, output, images, size, seed, dataSeed, epochs, target, timeLimit, init, learningRate, warmup, permutedLabels, threads,
        };
        command.SetAction(parse => CommandAction.Run(environment, () =>
        {
            if (parse.GetValue(threads) is > 0 and var t) torch.set_num_threads(t);
            if (parse.GetValue(backbone) is { } backboneName)
            {
                if (parse.GetValue(arch) is not null) throw new UsageException("Give --arch (a synthetic net) or --backbone (a head on a frozen backbone), not both.");
                if (parse.GetValue(permutedLabels) is not null) throw new UsageException("--permuted-labels trains a synthetic net (--model resnet|vgg) on permuted labels; it does not apply to --backbone heads.");
                return TrainHead(environment, backboneName, parse.GetValue(data), parse.GetValue(head), parse.GetValue(output)!,
                    new LinearProbeOptions { HoldoutFraction = parse.GetValue(holdout), Steps = parse.GetValue(steps), Seed = parse.GetValue(seed) });
            }
            if (parse.GetValue(data) is not null || parse.GetValue(head) is not null) throw new UsageException("--data and --head need --backbone.");
            var labelSeed = parse.GetValue(permutedLabels);
            if (labelSeed is < 0) throw new UsageException($"--permuted-labels must be a seed ≥ 0, was {labelSeed}.");
            SyntheticArchitecture architecture;
            try
            {
                architecture = SyntheticModels.ParseArchitecture(parse.GetValue(arch) ?? throw new UsageException("Give --model resnet|vgg|vit (a synthetic net) or --backbone NAME --data FOLDER (a head on a frozen backbone)."));
            }
            catch (ArgumentException e)
            {
                throw new UsageException(e.Message);
            }

            if (labelSeed is not null && architecture == SyntheticArchitecture.Vit)
                throw new UsageException("--permuted-labels works with --model resnet or vgg: the ViT recipe trains on fresh images every epoch, and a net can memorise permuted labels only of images it sees again.");
            var recipe = TrainingOptions.For(architecture);
            if (parse.GetValue(learningRate) is { } rate && !(rate > 0 && double.IsFinite(rate))) throw new UsageException($"--lr must be a finite rate > 0, was {rate.ToString(CultureInfo.InvariantCulture)}.");
            if (parse.GetValue(warmup) is < 0) throw new UsageException($"--warmup must be ≥ 0 epochs, was {parse.GetValue(warmup)}.");
            var options = recipe with
            {
                LearningRate = parse.GetValue(learningRate) ?? recipe.LearningRate,
                WarmupEpochs = parse.GetValue(warmup) ?? recipe.WarmupEpochs,
                PermutedLabelSeed = labelSeed,
                TrainImages = parse.GetValue(images),
                ImageSize = parse.GetValue(size),
                Seed = parse.GetValue(seed),
                DataSeed = parse.GetValue(dataSeed),
                MaxEpochs = parse.GetValue(epochs),
                TargetAccuracy = parse.GetValue(target),
                TimeLimitSeconds = parse.GetValue(timeLimit),
                InitialWeights = parse.GetValue(init),
            };
            RequireWritableOutput(parse.GetValue(output)!);
            TrainingReport report;
            try
            {
                report = SyntheticTrainer.TrainAndSave(options, parse.GetValue(output)!, environment.Error, environment.Cancellation);
            }
            catch (Exception e) when (e is ArgumentOutOfRangeException or FileNotFoundException)
            {
                throw new UsageException(e.Message);
            }
            catch (TrainingInterruptedException e) when (e.WeightsPath is not null)
            {
                environment.WriteError($"interrupted: {e.Report.StopReason}. --out {Path.GetFullPath(parse.GetValue(output)!)} was not written; " +
                    string.Create(CultureInfo.InvariantCulture, $"the weights so far (test accuracy {e.Report.TestAccuracy:P1}) are in {e.WeightsPath} with its sidecar {Path.ChangeExtension(e.WeightsPath, ".json")}."));
                environment.Error.WriteLine($"To continue from them, run the same command again with --init {e.WeightsPath} (a new stage with its own schedule).");
                return ExitCodes.Interrupted;
            }

            environment.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{report.Name}: test accuracy {report.TestAccuracy:P2} after {report.Epochs} epochs ({report.Seconds:F0} s) -> {Path.GetFullPath(parse.GetValue(output)!)}"));
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>Refuses a --out file whose folder cannot be created or written, before any training (exit 1).</summary>
    private static void RequireWritableOutput(string output)
    {
        var folder = Path.GetDirectoryName(Path.GetFullPath(output));
        if (folder is not null) CommandAction.RequireWritableFolder(folder);
    }

    private static int TrainHead(CliEnvironment environment, string backboneName, string? dataDir, string? headSpec, string output, LinearProbeOptions options)
    {
        var spec = (headSpec ?? "linear").Trim();
        string? prototypes = null;
        if (spec.StartsWith("prototypes:", StringComparison.OrdinalIgnoreCase)) prototypes = spec["prototypes:".Length..];
        else if (!string.Equals(spec, "linear", StringComparison.OrdinalIgnoreCase)) throw new UsageException($"--head must be linear or prototypes:FOLDER, was '{spec}'.");
        if (prototypes is { Length: 0 }) throw new UsageException("--head prototypes:FOLDER needs a folder.");
        if (prototypes is null && dataDir is null) throw new UsageException("A linear head needs --data FOLDER (one subfolder per class).");
        if (prototypes is not null && dataDir is not null) throw new UsageException("--head prototypes:FOLDER takes its images from FOLDER; leave out --data.");
        if (!ModelZoo.Contains(backboneName)) throw new UsageException($"Unknown --backbone '{backboneName}'. Known: {string.Join(", ", ModelZoo.Names)}.");
        RequireWritableOutput(output);

        ImageFolder folder;
        try
        {
            folder = ImageFolder.Scan(prototypes ?? dataDir!, looseImagesAreClasses: prototypes is not null);
        }
        catch (Exception e) when (e is ArgumentException or DirectoryNotFoundException)
        {
            throw new UsageException(e.Message);
        }
        foreach (var note in folder.Notes) environment.WriteWarning(note);
        if (ModelZoo.Create(backboneName, folder.ClassNames.Count) is not ResNet model)
            throw new UsageException($"--backbone must be a ResNet zoo model (its pooled features feed the head); '{backboneName}' is not.");
        var normalization = ImageNormalization.ForArchitecture(backboneName) ?? ImageNormalization.ImageNet;
        var loader = new ImageLoader(new ImageLoadOptions { Normalization = normalization });
        HeadReport report;
        try
        {
            report = prototypes is not null
                ? BackboneHeads.BuildPrototypes(model, loader, folder, backboneName, cancellationToken: environment.Cancellation)
                : BackboneHeads.TrainLinearProbe(model, loader, folder, backboneName, options, environment.Error, environment.Cancellation);
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new UsageException(e.Message);
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message);
        }
        foreach (var note in report.Notes.Except(folder.Notes)) environment.WriteWarning(note);
        report = BackboneHeads.Save(model, report, output);
        environment.Out.WriteLine(report.ToString());
        environment.Out.WriteLine($"weights: {report.WeightsPath}");
        environment.Out.WriteLine($"labels:  {report.LabelsPath}");
        environment.Out.WriteLine($"explain: rootdtd explain IMAGES --arch {backboneName} --weights {report.WeightsPath} --labels {report.LabelsPath} --out DIR");
        return ExitCodes.Ok;
    }
}
