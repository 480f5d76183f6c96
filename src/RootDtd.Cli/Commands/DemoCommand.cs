using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Training;

namespace RootDtd.Cli.Commands;

/// <summary>
/// <c>rootdtd demo [--out DIR]</c>: generates a few synthetic images, explains them with the committed trained ResNet using
/// the root rule and the best baselines, and writes a heatmap gallery and a short metric table (localisation and coarse
/// perturbation); prints where the files are.
/// </summary>
public sealed class DemoCommand : ICliCommand
{
    /// <inheritdoc />
    public Command Build(CliEnvironment environment)
    {
        var output = new Option<string>("--out", "-o") { Description = "Output folder.", DefaultValueFactory = _ => "demo-output", HelpName = "dir" };
        var samples = new Option<int>("--samples", "-n") { Description = "Images to explain and score.", DefaultValueFactory = _ => 32, HelpName = "N" };
        var model = new Option<string>("--model") { Description = "synthetic-resnet or synthetic-vgg.", DefaultValueFactory = _ => SyntheticModels.ResNetName, HelpName = "name" };
        var command = new Command("demo", "Explain a few generated images with the committed trained model (root rule and the best baselines); write a heatmap gallery and a metric table.")
        {
            output, samples, model,
        };
        command.SetAction(parse => CommandAction.Run(environment, () =>
        {
            SyntheticArchitecture architecture;
            try
            {
                architecture = SyntheticModels.ParseArchitecture(parse.GetValue(model)!);
            }
            catch (ArgumentException e)
            {
                throw new UsageException(e.Message);
            }

            if (parse.GetValue(samples) < 1) throw new UsageException("--samples must be at least 1.");
            var clock = Stopwatch.StartNew();
            var dir = parse.GetValue(output)!;
            var settings = new SyntheticBenchmarkSettings
            {
                Architecture = architecture,
                Samples = parse.GetValue(samples),
                DataSeed = 7,
                OutputDirectory = dir,
                Prefix = "demo",
                Options = new BenchmarkOptions
                {
                    Methods = BenchmarkMethods.Demo,
                    Protocols = BenchmarkProtocols.Localization | BenchmarkProtocols.Perturbation,
                    Perturbation = new PixelPerturbationOptions { Schedules = new[] { PerturbationSchedule.Coarse } },
                    BatchSize = 32,
                    GallerySamples = 4,
                },
            };
            environment.Error.WriteLine($"demo: explaining {settings.Samples} generated images with {SyntheticModels.NameOf(architecture)} ({string.Join(", ", BenchmarkMethods.Demo.Select(m => m.Label))}) …");
            var (result, files) = SyntheticBenchmark.Run(settings, environment.Error, null);
            var o = environment.Out;
            o.WriteLine();
            o.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{result.Options.ModelName}: clean accuracy {result.CleanAccuracy:P1} on {result.Samples} images"));
            o.WriteLine();
            o.Write(BenchmarkReport.LocalizationTable(result).ToMarkdown(3));
            o.WriteLine();
            o.Write(BenchmarkReport.PerturbationTable(result).ToMarkdown(1));
            foreach (var s in result.Skipped) o.WriteLine($"(skipped {s.Label}: {s.Reason})");
            o.WriteLine();
            o.WriteLine($"report:  {Path.GetFullPath(files.Markdown)}");
            foreach (var image in files.Images) o.WriteLine($"figure:  {Path.GetFullPath(image)}");
            o.WriteLine(string.Create(CultureInfo.InvariantCulture, $"done in {clock.Elapsed.TotalSeconds:F0} s"));
            return ExitCodes.Ok;
        }));
        return command;
    }
}
