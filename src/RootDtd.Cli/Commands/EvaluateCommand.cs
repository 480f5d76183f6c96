using RootDtd.Evaluation.Metrics;
using System.CommandLine;
using System.Globalization;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Sharding;
using RootDtd.Evaluation.Training;
using TorchSharp;

namespace RootDtd.Cli.Commands;

/// <summary>
/// <c>rootdtd evaluate --model synthetic-resnet|synthetic-vgg [--weights FILE --arch resnet|vgg] --methods … --protocols …
/// --samples N --out DIR</c>: runs the benchmark on a freshly generated synthetic test split and writes the Markdown report,
/// the perturbation plot, the heatmap gallery and a JSON file. With <c>--data FOLDER</c> it runs on any image folder
/// (class subfolders) and any model (<c>--arch NAME [--weights FILE]</c>), with masks from <c>--masks FOLDER</c>
/// for the localisation protocol. <c>--shard i/n</c>, <c>--resume</c> and <c>--device</c> split, continue and place a
/// synthetic-benchmark run (see docs/scaling.md); <c>rootdtd merge</c> combines the shards.
/// </summary>
public sealed class EvaluateCommand : ICliCommand
{
    /// <inheritdoc />
    public Command Build(CliEnvironment environment)
    {
        var model = new Option<string>("--model") { Description = "synthetic-resnet or synthetic-vgg (committed weights in models/), or with --weights the architecture (resnet|vgg).", DefaultValueFactory = _ => SyntheticModels.ResNetName, HelpName = "name" };
        var weights = new Option<string?>("--weights", "-w") { Description = "A .safetensors file of the --model architecture instead of the committed weights.", HelpName = "file" };
        var methods = new Option<string>("--methods", "-m") { Description = "Comma-separated catalog specs (NAME or NAME:key=value,…), or 'full' / 'demo'.", DefaultValueFactory = _ => "full", HelpName = "list" };
        var protocols = new Option<string>("--protocols", "-p") { Description = "perturbation, localisation, pgd, root-checks, sanity or all (comma-separated).", DefaultValueFactory = _ => "all", HelpName = "list" };
        var samples = new Option<int>("--samples", "-n") { Description = "Test images.", DefaultValueFactory = _ => 500, HelpName = "N" };
        var seed = new Option<int>("--seed") { Description = "Generator seed of the test split.", DefaultValueFactory = _ => 4242, HelpName = "S" };
        var batch = new Option<int>("--batch") { Description = "Samples per batch.", DefaultValueFactory = _ => 25, HelpName = "B" };
        var pgdSamples = new Option<int>("--pgd-samples") { Description = "PGD runs on the first N samples.", DefaultValueFactory = _ => 100, HelpName = "N" };
        var sanitySamples = new Option<int>("--sanity-samples") { Description = "Sanity checks (model randomisation) run on the first N samples.", DefaultValueFactory = _ => 16, HelpName = "N" };
        var sanityGroups = new Option<int>("--sanity-groups") { Description = "Groups of layers re-drawn top-down in the sanity checks (the unit count = per layer).", DefaultValueFactory = _ => 6, HelpName = "G" };
        var ablations = new Option<bool>("--ablations") { Description = "Also run the ablations of the root rule (steps, γ, constraints, redistribution)." };
        var gallery = new Option<int>("--gallery") { Description = "Samples in the heatmap gallery (0 = none).", DefaultValueFactory = _ => 4, HelpName = "N" };
        var output = new Option<string>("--out", "-o") { Description = "Output folder.", Required = true, HelpName = "dir" };
        var modelsDir = new Option<string?>("--models-dir") { Description = "The models/ folder (default: searched upwards from the current folder).", HelpName = "dir" };
        var threads = new Option<int>("--threads") { Description = "CPU threads of libtorch (0 = libtorch's default).", DefaultValueFactory = _ => 0, HelpName = "N" };
        var data = new Option<string?>("--data") { Description = "Evaluate on an image folder (one subfolder per class) instead of the synthetic data; the model is --arch (+ --weights).", HelpName = "dir" };
        var masks = new Option<string?>("--masks") { Description = "With --data: one mask PNG per image (MASKS/<class>/<stem>.png, MASKS/<stem>.png or VOC's SegmentationClass/<stem>.png); needed for localisation.", HelpName = "dir" };
        var arch = new Option<string?>("--arch", "-a") { Description = "With --data: a zoo architecture (see 'rootdtd models'), e.g. resnet18-imagenet-cntk.", HelpName = "name" };
        var labelsFile = new Option<string?>("--labels") { Description = "With --data: the model's class names, one per line; class folders are matched to them by name.", HelpName = "file" };
        var classes = new Option<int?>("--classes") { Description = "With --data: outputs of the model (default: lines of --labels, else the number of class folders).", HelpName = "N" };
        var size = new Option<int>("--size") { Description = "With --data: side of the square centre crop (resize of the shorter side to size × 256/224 first).", DefaultValueFactory = _ => 224, HelpName = "pixels" };
        var ablationSamples = new Option<int?>("--ablation-samples") { Description = "With --data: run the root ablations on the first N samples only (default: all).", HelpName = "N" };
        var shard = new Option<string?>("--shard") { Description = "Evaluate only shard i of n (0-based, e.g. 0/4): whole batches, split by sample index, the same on every machine. Writes a state file; 'rootdtd merge' makes the report.", HelpName = "i/n" };
        var resume = new Option<bool>("--resume") { Description = "Continue an interrupted run from the state file in --out (finished batches are kept; the state is written after every batch)." };
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:K (one process per GPU).", DefaultValueFactory = _ => "cpu", HelpName = "device" };
        var normalization = new Option<string>("--normalization") { Description = "With --data: imagenet, half or identity (resnet18-imagenet-cntk always uses its mean image).", DefaultValueFactory = _ => "imagenet", HelpName = "name" };
        var command = new Command("evaluate", "Benchmark explanation methods on the synthetic data with exact masks, or on any image folder and model: perturbation, localisation, relevance-guided PGD, f(N) and linear-region checks, sanity checks; writes a Markdown report with plots.")
        {
            model, weights, methods, protocols, samples, seed, batch, pgdSamples, sanitySamples, sanityGroups, ablations, gallery, output, modelsDir, threads,
            data, masks, arch, labelsFile, classes, size, normalization, ablationSamples, shard, resume, device,
        };
        command.SetAction(parse => CommandAction.Run(environment, () =>
        {
            if (parse.GetValue(data) is { } dataDir)
            {
                if (parse.GetValue(shard) is not null || parse.GetValue(resume) || parse.GetResult(device) is { Implicit: false })
                    throw new UsageException("--shard, --resume and --device work with the synthetic benchmark; with --data run the folder in one process (see docs/scaling.md).");
                BenchmarkProtocols folderProtocols;
                IReadOnlyList<BenchmarkMethod> folderMethods;
                try
                {
                    folderProtocols = SyntheticBenchmark.ParseProtocols(parse.GetValue(protocols)!);
                    folderMethods = BenchmarkMethods.ParseList(parse.GetValue(methods)!);
                }
                catch (ArgumentException e)
                {
                    throw new UsageException(e.Message);
                }
                if (parse.GetValue(threads) is > 0 and var t) torch.set_num_threads(t);
                var options = new BenchmarkOptions
                {
                    Methods = folderMethods,
                    Ablations = parse.GetValue(ablations) ? BenchmarkMethods.Ablations : Array.Empty<RootAblation>(),
                    Protocols = folderProtocols,
                    BatchSize = parse.GetValue(batch),
                    PgdSamples = parse.GetValue(pgdSamples),
                    AblationSamples = parse.GetValue(ablationSamples),
                    GallerySamples = parse.GetValue(gallery),
                    SanitySamples = Math.Max(1, parse.GetValue(sanitySamples)),
                    Sanity = new SanityCheckOptions { Groups = Math.Max(1, parse.GetValue(sanityGroups)) },
                };
                return FolderEvaluation.Run(environment, new FolderEvaluationSettings(
                    dataDir, parse.GetValue(masks), parse.GetValue(arch) ?? (parse.GetResult(model) is { Implicit: false } ? parse.GetValue(model) : null), parse.GetValue(weights),
                    parse.GetValue(labelsFile), parse.GetValue(classes), parse.GetValue(size), parse.GetValue(normalization)!,
                    parse.GetResult(samples) is { Implicit: false } ? parse.GetValue(samples) : null, parse.GetValue(output)!, options, string.Equals(parse.GetValue(protocols)?.Trim(), "all", StringComparison.OrdinalIgnoreCase)));
            }
            if (parse.GetValue(masks) is not null || parse.GetValue(arch) is not null || parse.GetValue(labelsFile) is not null)
                throw new UsageException("--masks, --arch and --labels need --data FOLDER.");
            SyntheticArchitecture architecture;
            BenchmarkProtocols protocolSet;
            IReadOnlyList<BenchmarkMethod> methodList;
            try
            {
                architecture = SyntheticModels.ParseArchitecture(parse.GetValue(model)!);
                protocolSet = SyntheticBenchmark.ParseProtocols(parse.GetValue(protocols)!);
                methodList = BenchmarkMethods.ParseList(parse.GetValue(methods)!);
            }
            catch (ArgumentException e)
            {
                throw new UsageException(e.Message);
            }

            if (parse.GetValue(samples) < 1) throw new UsageException("--samples must be at least 1.");
            if (parse.GetValue(batch) < 1) throw new UsageException("--batch must be at least 1.");
            if (parse.GetValue(sanitySamples) < 1) throw new UsageException("--sanity-samples must be at least 1.");
            if (parse.GetValue(sanityGroups) < 1) throw new UsageException("--sanity-groups must be at least 1.");
            var weightsPath = parse.GetValue(weights);
            if (weightsPath is not null && !File.Exists(weightsPath)) throw new UsageException($"The weights file '{weightsPath}' does not exist.");
            var modelsFolder = parse.GetValue(modelsDir);
            if (modelsFolder is not null && !Directory.Exists(modelsFolder)) throw new UsageException($"The --models-dir folder '{modelsFolder}' does not exist.");
            var shardValue = (0, 1);
            if (parse.GetValue(shard) is { } shardText)
            {
                try
                {
                    shardValue = BenchmarkShard.Parse(shardText);
                }
                catch (ArgumentException)
                {
                    throw new UsageException($"--shard must be i/n with 0 ≤ i < n (e.g. 0/4 … 3/4), was '{shardText}'.");
                }
            }
            var deviceText = DeviceOption.Resolve(parse.GetValue(device) ?? "cpu");
            if (parse.GetValue(threads) is > 0 and var n) torch.set_num_threads(n);
            var settings = new SyntheticBenchmarkSettings
            {
                Architecture = architecture,
                WeightsPath = weightsPath,
                ModelsDirectory = modelsFolder,
                Shard = shardValue,
                Resume = parse.GetValue(resume),
                Device = deviceText,
                Samples = parse.GetValue(samples),
                DataSeed = parse.GetValue(seed),
                OutputDirectory = parse.GetValue(output)!,
                Options = new BenchmarkOptions
                {
                    Methods = methodList,
                    Ablations = parse.GetValue(ablations) ? BenchmarkMethods.Ablations : Array.Empty<RootAblation>(),
                    Protocols = protocolSet,
                    BatchSize = parse.GetValue(batch),
                    PgdSamples = parse.GetValue(pgdSamples),
                    GallerySamples = parse.GetValue(gallery),
                    SanitySamples = parse.GetValue(sanitySamples),
                    Sanity = new SanityCheckOptions { Groups = parse.GetValue(sanityGroups) },
                },
            };
            var progress = new BenchmarkConsoleProgress(environment);
            var run = SyntheticBenchmark.Run(settings, environment.Error, progress);
            progress.Finish();
            var result = run.Result;
            var part = shardValue.Item2 > 1
                ? string.Create(CultureInfo.InvariantCulture, $" (shard {shardValue.Item1}/{shardValue.Item2}: samples {run.State.Shard.Start} … {run.State.Shard.Start + run.State.Shard.Length - 1} of {settings.Samples})")
                : string.Empty;
            environment.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{result.Options.ModelName}: {result.Samples} samples{part}, {result.Methods.Count} methods, {result.Ablations.Count} ablations, {result.Skipped.Count} skipped, {run.State.Seconds:F0} s"));
            if (run.Files is { } files)
            {
                environment.Out.WriteLine($"report:  {Path.GetFullPath(files.Markdown)}");
                foreach (var image in files.Images) environment.Out.WriteLine($"figure:  {Path.GetFullPath(image)}");
                environment.Out.WriteLine($"data:    {Path.GetFullPath(files.Json)}");
            }
            if (run.StatePath is not null) environment.Out.WriteLine($"state:   {Path.GetFullPath(run.StatePath)}");
            if (run.Files is null) environment.Out.WriteLine("When every shard is done: rootdtd merge SHARD_DIRS… --out DIR writes the report.");
            return ExitCodes.Ok;
        }));
        return command;
    }
}
