using System.CommandLine;
using System.Globalization;
using RootDtd.Evaluation.Training;
using TorchSharp;

namespace RootDtd.Cli.Commands;

/// <summary>
/// <c>rootdtd train --arch resnet|vgg --out models/NAME.safetensors [--images N] [--size 64] [--seed S] [--epochs E]</c>:
/// trains a synthetic-benchmark classifier on the CPU and writes the weights plus a JSON sidecar.
/// </summary>
public sealed class TrainCommand : ICliCommand
{
    /// <inheritdoc />
    public Command Build(CliEnvironment environment)
    {
        var arch = new Option<string>("--arch", "-a") { Description = "resnet or vgg.", Required = true, HelpName = "resnet|vgg" };
        var output = new Option<string>("--out", "-o") { Description = "Output .safetensors file (the sidecar .json is written next to it).", Required = true, HelpName = "file" };
        var images = new Option<int>("--images") { Description = "Training images.", DefaultValueFactory = _ => 6000, HelpName = "N" };
        var size = new Option<int>("--size") { Description = "Image side in pixels.", DefaultValueFactory = _ => SyntheticModels.ImageSize, HelpName = "pixels" };
        var seed = new Option<int>("--seed") { Description = "Torch seed (initialisation, shuffling, flips).", DefaultValueFactory = _ => 1, HelpName = "S" };
        var dataSeed = new Option<int>("--data-seed") { Description = "Generator seed of the training stream (validation +1, test +2).", DefaultValueFactory = _ => 1000, HelpName = "S" };
        var epochs = new Option<int>("--epochs") { Description = "Maximum epochs.", DefaultValueFactory = _ => 30, HelpName = "E" };
        var target = new Option<double>("--target") { Description = "Stop when the validation accuracy reaches this value.", DefaultValueFactory = _ => 0.95, HelpName = "accuracy" };
        var threads = new Option<int>("--threads") { Description = "CPU threads of libtorch (0 = libtorch's default).", DefaultValueFactory = _ => 0, HelpName = "N" };
        var command = new Command("train", "Train a small ResNet or VGG on the seeded synthetic benchmark (CPU) and save safetensors weights plus a JSON sidecar.")
        {
            arch, output, images, size, seed, dataSeed, epochs, target, threads,
        };
        command.SetAction(parse => CommandAction.Run(environment, () =>
        {
            SyntheticArchitecture architecture;
            try
            {
                architecture = SyntheticModels.ParseArchitecture(parse.GetValue(arch)!);
            }
            catch (ArgumentException e)
            {
                throw new UsageException(e.Message);
            }

            if (parse.GetValue(threads) is > 0 and var n) torch.set_num_threads(n);
            var options = new TrainingOptions
            {
                Architecture = architecture,
                TrainImages = parse.GetValue(images),
                ImageSize = parse.GetValue(size),
                Seed = parse.GetValue(seed),
                DataSeed = parse.GetValue(dataSeed),
                MaxEpochs = parse.GetValue(epochs),
                TargetAccuracy = parse.GetValue(target),
            };
            TrainingReport report;
            try
            {
                report = SyntheticTrainer.TrainAndSave(options, parse.GetValue(output)!, environment.Error);
            }
            catch (ArgumentOutOfRangeException e)
            {
                throw new UsageException(e.Message);
            }

            environment.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{report.Name}: test accuracy {report.TestAccuracy:P2} after {report.Epochs} epochs ({report.Seconds:F0} s) -> {Path.GetFullPath(parse.GetValue(output)!)}"));
            return ExitCodes.Ok;
        }));
        return command;
    }
}
