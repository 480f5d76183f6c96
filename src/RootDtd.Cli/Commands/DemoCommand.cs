using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Training;

namespace RootDtd.Cli.Commands;

/// <summary>
/// <c>rootdtd demo [--out DIR]</c>: generates a few synthetic images, explains them with the committed trained ResNet
/// (the root rule and the best baselines) and the committed ViT (chefer, chefer-root, rollout, attn-lrp), and writes per
/// model a heatmap gallery and the metric tables (Table 1: perturbation, coarse and fine schedules; Table 2:
/// localisation); prints where the files are.
/// </summary>
public sealed class DemoCommand : ICliCommand
{
    /// <summary>The models of the default demo: the ResNet and the ViT.</summary>
    public const string DefaultModels = SyntheticModels.ResNetName + "," + SyntheticModels.VitName;

    /// <inheritdoc />
    public Command Build(CliEnvironment environment)
    {
        var output = new Option<string>("--out", "-o") { Description = "Output folder.", DefaultValueFactory = _ => "demo-output", HelpName = "dir" };
        var samples = new Option<int>("--samples", "-n") { Description = "Images to explain and score.", DefaultValueFactory = _ => 32, HelpName = "N" };
        var model = new Option<string>("--model") { Description = "synthetic-resnet, synthetic-vgg, synthetic-vit, a comma-separated list of them, or all (default: the ResNet and the ViT side by side).", DefaultValueFactory = _ => DefaultModels, HelpName = "name[,name…]|all" };
        var gallery = new Option<int>("--gallery") { Description = "Images shown in the heatmap gallery (at most --samples).", DefaultValueFactory = _ => 4, HelpName = "N" };
        var methods = new Option<string>("--methods", "-m") { Description = "Comma-separated catalog specs for every model, or 'demo' (the ResNet's root rule and best baselines; on synthetic-vit chefer, chefer-root, rollout, attn-lrp).", DefaultValueFactory = _ => "demo", HelpName = "demo|list" };
        var command = new Command("demo", "Explain a few generated images with the committed trained model (root rule and the best baselines); write a heatmap gallery and a metric table.")
        {
            output, samples, model, gallery, methods,
        };
        command.SetAction(parse => CommandAction.Run(environment, () =>
        {
            var architectures = new List<SyntheticArchitecture>();
            try
            {
                var text = parse.GetValue(model)!.Trim();
                if (text.Equals("all", StringComparison.OrdinalIgnoreCase)) architectures.AddRange(SyntheticModels.Architectures);
                else
                    foreach (var name in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                        if (!architectures.Contains(SyntheticModels.ParseArchitecture(name))) architectures.Add(SyntheticModels.ParseArchitecture(name));
                if (architectures.Count == 0) throw new ArgumentException("--model needs at least one model name.");
            }
            catch (ArgumentException e)
            {
                throw new UsageException(e.Message);
            }

            // every model's weights before the first one runs (a missing ViT should not appear after the ResNet's minute)
            foreach (var architecture in architectures)
            {
                string path;
                try
                {
                    path = SyntheticModels.WeightsPath(architecture);
                }
                catch (DirectoryNotFoundException e)
                {
                    throw new UsageException(e.Message);
                }
                if (!File.Exists(path)) throw new UsageException($"The weights of {SyntheticModels.NameOf(architecture)} are missing: '{path}' does not exist (set {SyntheticModels.ModelsDirectoryVariable} to a models/ folder that has them).");
            }

            if (parse.GetValue(samples) < 1) throw new UsageException("--samples must be at least 1.");
            if (parse.GetValue(gallery) < 0) throw new UsageException("--gallery must be 0 or more.");
            var methodText = parse.GetValue(methods);
            if (string.IsNullOrWhiteSpace(methodText)) throw new UsageException("--methods needs 'demo' or at least one method name.");
            foreach (var architecture in architectures)
            {
                BenchmarkMethods.Resolve(BenchmarkMethods.ParseList(methodText, architecture == SyntheticArchitecture.Vit), out var unknown);
                if (unknown.Count > 0) throw new UsageException($"--methods: {string.Join("; ", unknown.Select(u => u.Reason))}");
            }
            var clock = Stopwatch.StartNew();
            var dir = parse.GetValue(output)!;
            CommandAction.RequireWritableFolder(dir);
            var o = environment.Out;
            foreach (var architecture in architectures)
            {
                var modelClock = Stopwatch.StartNew();
                var transformer = architecture == SyntheticArchitecture.Vit;
                var methodList = BenchmarkMethods.ParseList(methodText, transformer);
                var settings = new SyntheticBenchmarkSettings
                {
                    Architecture = architecture,
                    Samples = parse.GetValue(samples),
                    DataSeed = 7,
                    OutputDirectory = dir,
                    Prefix = architectures.Count == 1 ? "demo" : "demo-" + SyntheticModels.NameOf(architecture),
                    Options = new BenchmarkOptions
                    {
                        Methods = methodList,
                        Protocols = BenchmarkProtocols.Localization | BenchmarkProtocols.Perturbation,
                        Perturbation = new PixelPerturbationOptions { Schedules = new[] { PerturbationSchedule.Coarse, PerturbationSchedule.Fine } },
                        BatchSize = 32,
                        GallerySamples = parse.GetValue(gallery),
                    },
                };
                environment.Error.WriteLine($"demo: explaining {settings.Samples} generated images with {SyntheticModels.NameOf(architecture)} ({string.Join(", ", methodList.Select(m => m.Label))}) …");
                var progress = new BenchmarkConsoleProgress(environment);
                BenchmarkRunOutput run;
                try
                {
                    run = SyntheticBenchmark.Run(settings, environment.Error, progress, environment.Cancellation);
                }
                catch (BenchmarkInterruptedException e)
                {
                    // the demo has no --resume: its state file would only be left behind
                    progress.Finish();
                    if (e.StatePath is not null) File.Delete(e.StatePath);
                    environment.WriteError($"interrupted: no report of {SyntheticModels.NameOf(architecture)} was written; the reports of the models before it are complete.");
                    return ExitCodes.Interrupted;
                }
                var result = run.Result;
                var files = run.Files!;
                progress.Finish();
                o.WriteLine();
                o.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{result.Options.ModelName}: clean accuracy {result.CleanAccuracy:P1} on {result.Samples} images"));
                o.WriteLine();
                o.Write(BenchmarkReport.PerturbationTable(result).ToMarkdown(1));
                o.WriteLine();
                o.Write(BenchmarkReport.LocalizationTable(result).ToMarkdown(3));
                o.WriteLine();
                o.WriteLine(BenchmarkReport.GalleryCaption(result));
                foreach (var s in result.Skipped) o.WriteLine($"(skipped {s.Label}: {s.Reason})");
                o.WriteLine();
                o.WriteLine($"report:  {Path.GetFullPath(files.Markdown)}");
                foreach (var image in files.Images) o.WriteLine($"figure:  {Path.GetFullPath(image)}");
                o.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{result.Options.ModelName} done in {modelClock.Elapsed.TotalSeconds:F0} s"));
            }

            o.WriteLine(string.Create(CultureInfo.InvariantCulture, $"done in {clock.Elapsed.TotalSeconds:F0} s"));
            return ExitCodes.Ok;
        }));
        return command;
    }
}
