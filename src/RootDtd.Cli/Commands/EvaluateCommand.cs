using RootDtd.Evaluation.Metrics;
using System.CommandLine;
using System.Globalization;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Sharding;
using RootDtd.Evaluation.Training;
using TorchSharp;

namespace RootDtd.Cli.Commands;

/// <summary>
/// <c>rootdtd evaluate --model synthetic-resnet|synthetic-vgg|synthetic-vit [--weights FILE] --methods … --protocols …
/// --samples N --out DIR</c>: runs the benchmark on a freshly generated synthetic test split and writes the Markdown report,
/// the perturbation plot, the heatmap gallery and a JSON file. With <c>--data FOLDER</c> it runs on any image folder
/// (class subfolders) and any model (<c>--arch NAME [--weights FILE]</c>), with masks from <c>--masks FOLDER</c>
/// for the localisation protocol. <c>--shard i/n</c>, <c>--resume</c> and <c>--device</c> split, continue and place
/// either kind of run (see docs/scaling.md); <c>rootdtd merge</c> combines the shards.
/// </summary>
public sealed class EvaluateCommand : ICliCommand
{
    /// <inheritdoc />
    public Command Build(CliEnvironment environment)
    {
        var model = new Option<string>("--model") { Description = "synthetic-resnet, synthetic-vgg or synthetic-vit (committed weights in models/), or with --weights the architecture (resnet|vgg|vit).", DefaultValueFactory = _ => SyntheticModels.ResNetName, HelpName = "name" };
        var weights = new Option<string?>("--weights", "-w") { Description = "A .safetensors file of the --model architecture instead of the committed weights.", HelpName = "file" };
        var methods = new Option<string>("--methods", "-m") { Description = "Comma-separated catalog specs (NAME or NAME:key=value,…), or 'full' / 'demo' (on synthetic-vit: the ViT methods).", DefaultValueFactory = _ => "full", HelpName = "list" };
        var protocols = new Option<string>("--protocols", "-p") { Description = "perturbation, localisation, pgd, root-checks, sanity or all (comma-separated).", DefaultValueFactory = _ => "all", HelpName = "list" };
        var samples = new Option<int>("--samples", "-n") { Description = "Test images (with --data: the first N of the folder, round-robin over the classes; default all).", DefaultValueFactory = _ => 500, HelpName = "N" };
        var seed = new Option<int>("--seed") { Description = "Generator seed of the evaluated stream: 4242 is the benchmark's test stream; another seed gives another stream (docs/research uses 5151 as its validation stream).", DefaultValueFactory = _ => 4242, HelpName = "S" };
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
        var ablationSamples = new Option<int?>("--ablation-samples") { Description = "Run the root ablations (--ablations) on the first N samples only (default: all).", HelpName = "N" };
        var shard = new Option<string?>("--shard") { Description = "Evaluate only shard i of n (0-based, e.g. 0/4): whole batches, split by sample index, the same on every machine. Writes a state file; 'rootdtd merge' makes the report.", HelpName = "i/n" };
        var resume = new Option<bool>("--resume") { Description = "Continue an interrupted run from the state file in --out (finished batches are kept; the state is written after every batch)." };
        var device = new Option<string>("--device") { Description = "cpu, cuda or cuda:K (one process per GPU).", DefaultValueFactory = _ => "cpu", HelpName = "device" };
        var randomLabels = new Option<string?>("--random-label-weights")
        {
            Description = "Sanity checks' data randomisation: weights of the same architecture trained on permuted labels (rootdtd train --permuted-labels SEED), or 'none'. Default: models/<model>-random-labels.safetensors when it exists and --weights is not given.",
            HelpName = "file|none",
        };
        var normalization = new Option<string>("--normalization") { Description = "With --data: imagenet, half or identity (resnet18-imagenet-cntk always uses its mean image).", DefaultValueFactory = _ => "imagenet", HelpName = "name" };
        var command = new Command("evaluate", "Benchmark explanation methods on the synthetic data with exact masks, or on any image folder and model: perturbation, localisation, relevance-guided PGD, f(N) and linear-region checks, sanity checks; writes a Markdown report with plots.")
        {
            model, weights, methods, protocols, samples, seed, batch, pgdSamples, sanitySamples, sanityGroups, ablations, gallery, output, modelsDir, threads,
            data, masks, arch, labelsFile, classes, size, normalization, ablationSamples, shard, resume, device, randomLabels,
        };
        command.SetAction(parse => CommandAction.Run(environment, () =>
        {
            var dataDir = parse.GetValue(data);
            if (dataDir is null && (parse.GetValue(masks) is not null || parse.GetValue(arch) is not null || parse.GetValue(labelsFile) is not null))
                throw new UsageException("--masks, --arch and --labels need --data FOLDER.");
            // one builder and one validation of the benchmark options, for the synthetic and the folder benchmark
            // on the synthetic ViT, 'full', 'demo' and --ablations mean the transformer methods and ablations
            var transformer = dataDir is null && IsSyntheticVit(parse.GetValue(model));
            var options = BuildOptions(parse.GetValue(methods)!, parse.GetValue(protocols)!, parse.GetValue(batch), parse.GetValue(pgdSamples), parse.GetValue(sanitySamples),
                parse.GetValue(sanityGroups), parse.GetValue(ablations), parse.GetValue(ablationSamples), parse.GetValue(gallery), transformer);
            var explicitSamples = parse.GetResult(samples) is { Implicit: false } ? parse.GetValue(samples) : (int?)null;
            if (explicitSamples is < 1) throw new UsageException($"--samples must be at least 1, was {explicitSamples}.");
            var shardValue = ParseShard(parse.GetValue(shard));
            var deviceText = DeviceOption.Resolve(parse.GetValue(device) ?? "cpu");
            if (parse.GetValue(threads) is > 0 and var n) torch.set_num_threads(n);
            var run = new RunPlacement(shardValue, parse.GetValue(resume), deviceText);
            var randomLabelText = parse.GetValue(randomLabels)?.Trim();
            if (randomLabelText is { Length: 0 }) throw new UsageException("--random-label-weights needs a .safetensors file or 'none'.");
            var noRandomLabels = string.Equals(randomLabelText, "none", StringComparison.OrdinalIgnoreCase);
            if (dataDir is not null && randomLabelText is not null)
                throw new UsageException("--random-label-weights applies to the synthetic nets (--model); a folder evaluation (--data) has no random-label model.");
            if (dataDir is not null)
            {
                return FolderEvaluation.Run(environment, new FolderEvaluationSettings(
                    dataDir, parse.GetValue(masks), parse.GetValue(arch) ?? (parse.GetResult(model) is { Implicit: false } ? parse.GetValue(model) : null), parse.GetValue(weights),
                    parse.GetValue(labelsFile), parse.GetValue(classes), parse.GetValue(size), parse.GetValue(normalization)!,
                    explicitSamples, parse.GetValue(output)!, options, string.Equals(parse.GetValue(protocols)?.Trim(), "all", StringComparison.OrdinalIgnoreCase), run));
            }

            SyntheticArchitecture architecture;
            try
            {
                architecture = SyntheticModels.ParseArchitecture(parse.GetValue(model)!);
            }
            catch (ArgumentException e)
            {
                throw new UsageException(e.Message);
            }
            var weightsPath = parse.GetValue(weights);
            if (weightsPath is not null && !File.Exists(weightsPath)) throw new UsageException($"The weights file '{weightsPath}' does not exist.");
            var modelsFolder = parse.GetValue(modelsDir);
            if (modelsFolder is not null && !Directory.Exists(modelsFolder)) throw new UsageException($"The --models-dir folder '{modelsFolder}' does not exist.");
            if (randomLabelText is not null && !noRandomLabels && !File.Exists(randomLabelText))
                throw new UsageException($"The --random-label-weights file '{randomLabelText}' does not exist.");
            CommandAction.RequireWritableFolder(parse.GetValue(output)!);
            var settings = new SyntheticBenchmarkSettings
            {
                RandomLabelWeightsPath = noRandomLabels ? null : randomLabelText,
                NoRandomLabelModel = noRandomLabels,
                Architecture = architecture,
                WeightsPath = weightsPath,
                ModelsDirectory = modelsFolder,
                Shard = run.Shard,
                Resume = run.Resume,
                Device = run.Device,
                Samples = explicitSamples ?? parse.GetValue(samples),
                DataSeed = parse.GetValue(seed),
                OutputDirectory = parse.GetValue(output)!,
                Options = options,
            };
            var progress = new BenchmarkConsoleProgress(environment);
            BenchmarkRunOutput outcome;
            try
            {
                outcome = SyntheticBenchmark.Run(settings, environment.Error, progress, environment.Cancellation);
            }
            catch (BenchmarkInterruptedException e)
            {
                progress.Finish();
                return Interrupted(environment, e, settings.Shard.Count > 1);
            }
            progress.Finish();
            var result = outcome.Result;
            environment.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{result.Options.ModelName}: {result.Samples} samples{ShardText(outcome, settings.Samples)}, {result.Methods.Count} methods, {result.Ablations.Count} ablations, {result.Skipped.Count} skipped, {outcome.State.Seconds:F0} s"));
            WriteFiles(environment, outcome);
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>The benchmark options of the command line, validated once for both benchmarks (a usage error names the option).</summary>
    internal static BenchmarkOptions BuildOptions(string methods, string protocols, int batch, int pgdSamples, int sanitySamples, int sanityGroups, bool ablations, int? ablationSamples, int gallery,
        bool transformer = false)
    {
        if (batch < 1) throw new UsageException($"--batch must be at least 1, was {batch}.");
        if (pgdSamples < 1) throw new UsageException($"--pgd-samples must be at least 1, was {pgdSamples}.");
        if (sanitySamples < 1) throw new UsageException($"--sanity-samples must be at least 1, was {sanitySamples}.");
        if (sanityGroups < 1) throw new UsageException($"--sanity-groups must be at least 1, was {sanityGroups}.");
        if (ablationSamples is < 1) throw new UsageException($"--ablation-samples must be at least 1, was {ablationSamples}.");
        if (gallery < 0) throw new UsageException($"--gallery must be 0 or more, was {gallery}.");
        try
        {
            return new BenchmarkOptions
            {
                Methods = BenchmarkMethods.ParseList(methods, transformer),
                Ablations = ablations ? BenchmarkMethods.AblationsFor(transformer) : Array.Empty<RootAblation>(),
                Protocols = SyntheticBenchmark.ParseProtocols(protocols),
                BatchSize = batch,
                PgdSamples = pgdSamples,
                AblationSamples = ablationSamples,
                GallerySamples = gallery,
                SanitySamples = sanitySamples,
                Sanity = new SanityCheckOptions { Groups = sanityGroups },
            };
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message);
        }
    }

    /// <summary>Whether <paramref name="model"/> names the synthetic ViT (false for anything unknown: the synthetic path reports it).</summary>
    private static bool IsSyntheticVit(string? model)
    {
        try
        {
            return model is not null && SyntheticModels.ParseArchitecture(model) == SyntheticArchitecture.Vit;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

        /// <summary>Parses <c>--shard i/n</c> ((0, 1) when it is not given).</summary>
    private static (int Index, int Count) ParseShard(string? text)
    {
        if (text is null) return (0, 1);
        try
        {
            return BenchmarkShard.Parse(text);
        }
        catch (ArgumentException)
        {
            throw new UsageException($"--shard must be i/n with 0 ≤ i < n (e.g. 0/4 … 3/4), was '{text}'.");
        }
    }

    /// <summary>" (shard i/n: samples a … b of N)" for a shard of several, else empty.</summary>
    internal static string ShardText(BenchmarkRunOutput output, int total)
    {
        var shard = output.State.Shard;
        if (shard.Count == 1) return string.Empty;
        return shard.Length == 0
            ? string.Create(CultureInfo.InvariantCulture, $" (shard {shard.Index}/{shard.Count}: no samples of {total})")
            : string.Create(CultureInfo.InvariantCulture, $" (shard {shard.Index}/{shard.Count}: samples {shard.Start} … {shard.Start + shard.Length - 1} of {total})");
    }

    /// <summary>
    /// Ctrl-C during a benchmark: says that no report was written (and that a previous one was removed), what the state
    /// file keeps and how to continue; <see cref="ExitCodes.Interrupted"/>.
    /// </summary>
    internal static int Interrupted(CliEnvironment environment, BenchmarkInterruptedException e, bool sharded)
    {
        var where = e.StatePath is null ? string.Empty : $" in {Path.GetFullPath(e.StatePath)}";
        environment.WriteError($"interrupted: no report was written (any previous report of this model in --out was removed when the run started, so none looks current); kept{where}: {e.Kept}.");
        environment.Error.WriteLine(sharded
            ? "To continue where it stopped, run the same command again with --resume; when every shard is done, rootdtd merge writes the report."
            : "To continue where it stopped, run the same command again with --resume (the completed batches are not computed again).");
        return ExitCodes.Interrupted;
    }

    /// <summary>The report files, or the state file and how to merge.</summary>
    internal static void WriteFiles(CliEnvironment environment, BenchmarkRunOutput output)
    {
        if (output.Files is { } files)
        {
            environment.Out.WriteLine($"report:  {Path.GetFullPath(files.Markdown)}");
            foreach (var image in files.Images) environment.Out.WriteLine($"figure:  {Path.GetFullPath(image)}");
            environment.Out.WriteLine($"data:    {Path.GetFullPath(files.Json)}");
        }
        if (output.StatePath is not null) environment.Out.WriteLine($"state:   {Path.GetFullPath(output.StatePath)}");
        if (output.Files is null) environment.Out.WriteLine("When every shard is done: rootdtd merge SHARD_DIRS… --out DIR writes the report.");
    }
}

/// <summary>Where and how much of an evaluation this process runs: its shard, whether it resumes, its device.</summary>
/// <param name="Shard">(index, count); (0, 1) = everything.</param>
/// <param name="Resume">Continue from the state file in the output folder.</param>
/// <param name="Device">cpu, cuda or cuda:K (checked).</param>
internal sealed record RunPlacement((int Index, int Count) Shard, bool Resume, string Device);
