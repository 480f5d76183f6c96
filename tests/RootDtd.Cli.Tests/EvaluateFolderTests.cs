using System.Text.Json;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Data;
using RootDtd.Imaging;
using RootDtd.Models;
using FluentAssertions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;
using RootDtd.TestKit;

namespace RootDtd.Cli.Tests;

/// <summary><c>rootdtd evaluate --data FOLDER</c> on the tiny CLI model and a generated image folder with masks.</summary>
[Collection("cli")]
public sealed class EvaluateFolderTests
{
    private readonly CliFixture _fx;

    public EvaluateFolderTests(CliFixture fx) => _fx = fx;

    private static void WriteMask(string path, int size, int x0, int y0, int side)
    {
        using var mask = new Image<L8>(size, size);
        for (var y = 0; y < size; y++)
            for (var x = 0; x < size; x++)
                mask[x, y] = new L8((byte)(x >= x0 && x < x0 + side && y >= y0 && y < y0 + side ? 1 : 0));
        mask.SaveAsPng(path, new PngEncoder { ColorType = PngColorType.Grayscale, BitDepth = PngBitDepth.Bit8 });
    }

    /// <summary>Classes "0" and "3" (folder names are class indices), squares of a class colour, one mask per image.</summary>
    private (string Data, string Masks) MakeFolder(string name)
    {
        var root = Path.Combine(_fx.Root, name);
        var rng = new Random(9);
        foreach (var cls in new[] { "0", "3" })
        {
            Directory.CreateDirectory(Path.Combine(root, "data", cls));
            Directory.CreateDirectory(Path.Combine(root, "masks", cls));
            for (var i = 0; i < 3; i++)
            {
                int x0 = rng.Next(2, 14), y0 = rng.Next(2, 14), side = 14;
                var colour = cls == "0" ? new Rgb24(220, 40, 40) : new Rgb24(40, 60, 220);
                CliFixture.WriteImage(Path.Combine(root, "data", cls, $"img{cls}{i}.png"), 32, 32,
                    (x, y) => x >= x0 && x < x0 + side && y >= y0 && y < y0 + side ? colour : new Rgb24(128, 128, 128), jpeg: false);
                WriteMask(Path.Combine(root, "masks", cls, $"img{cls}{i}.png"), 32, x0, y0, side);
            }
        }
        return (Path.Combine(root, "data"), Path.Combine(root, "masks"));
    }

    private CliResult Evaluate(string data, string output, params string[] extra) =>
        EvaluateModel(data, output, new[] { "--methods", "gradient", "--gallery", "0", "--batch", "4" }.Concat(extra).ToArray());

    /// <summary>evaluate --data with the tiny model and only the options given.</summary>
    private CliResult EvaluateModel(string data, string output, params string[] extra) => CliFixture.Run(new[]
    {
        "evaluate", "--data", data, "--arch", CliFixture.Arch, "--weights", _fx.Weights, "--classes", "5", "--size", "32", "--out", output,
    }.Concat(extra).ToArray());

    [Fact]
    public void Any_model_on_an_image_folder_with_masks_reports_what_it_skipped()
    {
        var (data, masks) = MakeFolder("eval-masks");
        // One mask of the wrong size, one missing.
        WriteMask(Path.Combine(masks, "0", "img00.png"), 20, 1, 1, 5);
        File.Delete(Path.Combine(masks, "3", "img31.png"));
        var output = _fx.NewOutputDir();
        var r = Evaluate(data, output, "--masks", masks, "--protocols", "perturbation,localisation");
        r.ExitCode.Should().Be(0, r.ToString());
        r.Error.Should().Contain("img00.png").And.Contain("is 20×20, the image is 32×32");
        r.Error.Should().Contain("skipped").And.Contain("img31.png': no mask");
        r.Out.Should().Contain(": 4 images");
        var md = File.ReadAllText(Directory.GetFiles(output, "*.md").Single());
        md.Should().Contain("data note: skipped").And.Contain("a mask must have the image's size");
        using var json = JsonDocument.Parse(File.ReadAllText(Directory.GetFiles(output, "*.json").Single()));
        json.RootElement.ToString().Should().Contain("IoU", "localisation was measured with the masks");
    }

    [Fact]
    public void Localisation_without_masks_is_refused_and_perturbation_runs_without_them()
    {
        var (data, _) = MakeFolder("eval-nomasks");
        var r = Evaluate(data, _fx.NewOutputDir(), "--protocols", "localisation");
        r.ExitCode.Should().Be(2, r.ToString());
        r.Error.Should().Contain("Localisation needs masks");

        var output = _fx.NewOutputDir();
        r = Evaluate(data, output, "--protocols", "perturbation");
        r.ExitCode.Should().Be(0, r.ToString());
        r.Out.Should().Contain(": 6 images");
        File.ReadAllText(Directory.GetFiles(output, "*.md").Single()).Should().Contain("AUC+ coarse", "the perturbation table is there");
    }

    [Fact]
    public void Folders_without_images_and_one_image_classes_are_said_so()
    {
        var empty = Directory.CreateDirectory(Path.Combine(_fx.Root, "eval-empty", "cats")).Parent!.FullName;
        var r = Evaluate(empty, _fx.NewOutputDir(), "--protocols", "perturbation");
        r.ExitCode.Should().Be(2, r.ToString());
        r.Error.Should().Contain("has no images");

        var (data, _) = MakeFolder("eval-single");
        foreach (var f in Directory.GetFiles(Path.Combine(data, "3")).Skip(1)) File.Delete(f);
        r = Evaluate(data, _fx.NewOutputDir(), "--protocols", "perturbation");
        r.ExitCode.Should().Be(0, r.ToString());
        r.Error.Should().Contain("class '3' has one image");

        r = Evaluate(data, _fx.NewOutputDir(), "--protocols", "perturbation", "--labels", _fx.Labels);
        r.ExitCode.Should().Be(2);
        r.Error.Should().Contain("class folder '0' is not a class of --labels");
    }

    // PGD's counts merge like the other sums (the synthetic ShardMergeTests cover it); here the folder's slicing matters
    private static readonly string[] ShardedRun = { "--methods", "gradient", "--protocols", "perturbation,localisation", "--gallery", "3", "--batch", "2" };

    [Fact]
    public void Three_folder_shards_merged_equal_the_unsharded_folder_run_exactly()
    {
        var (data, masks) = MakeFolder("eval-shards");
        var single = _fx.NewOutputDir();
        var r = EvaluateModel(data, single, ShardedRun.Append("--masks").Append(masks).ToArray());
        r.ExitCode.Should().Be(0, r.ToString());

        var shards = new List<string>();
        foreach (var i in new[] { 2, 0, 1 })
        {
            var dir = _fx.NewOutputDir();
            shards.Add(dir);
            var s = EvaluateModel(data, dir, ShardedRun.Concat(new[] { "--masks", masks, "--shard", $"{i}/3" }).ToArray());
            s.ExitCode.Should().Be(0, s.ToString());
            s.Out.Should().Contain($"shard {i}/3: samples {2 * i} … {2 * i + 1} of 6").And.Contain("rootdtd merge");
            File.Exists(Path.Combine(dir, $"tiny.shard-{i}-of-3.state.json")).Should().BeTrue();
            Directory.GetFiles(dir, "*.md").Should().BeEmpty("a shard writes its state, the merge writes the report");
        }

        var merged = _fx.NewOutputDir();
        var m = CliFixture.Run(new[] { "merge" }.Concat(shards).Concat(new[] { "--out", merged }).ToArray());
        m.ExitCode.Should().Be(0, m.ToString());
        m.Out.Should().Contain("merged 3 shard(s), 6 samples");
        var singleJson = File.ReadAllText(Path.Combine(single, "tiny.json"));
        ReportJson.WithoutTimes(File.ReadAllText(Path.Combine(merged, "tiny.json"))).Should().Be(ReportJson.WithoutTimes(singleJson),
            "means merge by counts, IoU by summed intersections and unions, curves by summed counts: the same numbers in the same order");
        singleJson.Should().Contain("\"auc_plus_coarse\": ").And.Contain("\"miou\"");
        // the same data description (no absolute paths, the file list's digest) in both reports
        string DataLine(string dir) => File.ReadAllLines(Path.Combine(dir, "tiny.md")).First(l => l.Contains("image folder 'data'", StringComparison.Ordinal));
        DataLine(merged).Should().Be(DataLine(single)).And.Contain("file list ").And.NotContain(_fx.Root);
        File.Exists(Path.Combine(merged, "tiny-gallery.png")).Should().BeTrue();
    }

    [Fact]
    public void An_interrupted_folder_run_resumes_from_its_last_batch_with_the_same_numbers()
    {
        var (data, masks) = MakeFolder("eval-resume");
        using var model = ModelZoo.Create(CliFixture.Arch, CliFixture.Classes);
        ModelWeights.Load(model, _fx.Weights);
        model.eval();
        var plan = FolderBenchmark.Plan(ImageFolder.Scan(data), new[] { 0, 3 }, masks);
        var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = 37, CropSize = 32, Normalization = ImageNormalization.ImageNet });
        var options = new BenchmarkOptions
        {
            ModelName = "tiny", DataDescription = "resume test", Methods = new[] { BenchmarkMethod.Of("epsilon") },
            Protocols = BenchmarkProtocols.Perturbation | BenchmarkProtocols.Localization, BatchSize = 2, GallerySamples = 0, Normalization = ImageNormalization.ImageNet,
            Perturbation = new RootDtd.Evaluation.Metrics.PixelPerturbationOptions { Schedules = new[] { RootDtd.Evaluation.Metrics.PerturbationSchedule.Coarse } },
        };
        var full = FolderBenchmark.Run(model, plan, loader, new FolderBenchmarkSettings { Options = options, OutputDirectory = _fx.NewOutputDir(), Prefix = "tiny" });

        // interrupted during the method's second batch: its state file holds the first batch only
        var dir = _fx.NewOutputDir();
        var settings = new FolderBenchmarkSettings { Options = options, OutputDirectory = dir, Prefix = "tiny", Shard = (1, 2), Resume = true };
        var interrupt = new Collect(p =>
        {
            if (p.Method == "epsilon" && p.SamplesDone == 4) throw new OperationCanceledException("interrupted");
        });
        FluentActions.Invoking(() => FolderBenchmark.Run(model, plan, loader, settings, progress: interrupt)).Should().Throw<OperationCanceledException>();
        var statePath = Path.Combine(dir, "tiny.shard-1-of-2.state.json");
        var partial = RootDtd.Evaluation.Sharding.BenchmarkRunState.FromJson(File.ReadAllText(statePath), statePath);
        partial.Complete.Should().BeFalse();
        partial.Shard.Start.Should().Be(2, "shard 1/2 of 3 batches of 2 is batches 1 and 2");
        partial.Methods.Single().BatchesDone.Should().Equal(2);
        Directory.GetFiles(dir, "*.partial", SearchOption.AllDirectories).Should().BeEmpty("the state is replaced atomically");

        var explained = new List<int>();
        var log = new StringWriter();
        var resumed = FolderBenchmark.Run(model, plan, loader, settings, log, new Collect(p =>
        {
            if (p.Method == "epsilon" && p.Stage.StartsWith("explain", StringComparison.Ordinal)) explained.Add(p.SamplesDone);
        }));
        log.ToString().Should().Contain("resuming from");
        // within a batch the explainer reports per graph unit: the shard's first batch would report values below 2
        explained.Should().Contain(4).And.OnlyContain(v => v >= 2, "only the shard's second batch (samples 4 and 5) is explained again");
        resumed.State.Complete.Should().BeTrue();
        resumed.State.Methods.Single().BatchesDone.Should().Equal(2, 4);

        // and with shard 0/2 it merges into the unsharded numbers
        var first = FolderBenchmark.Run(model, plan, loader, settings with { Shard = (0, 2), Resume = false });
        var states = new[] { first.State, resumed.State }.Select(st => RootDtd.Evaluation.Sharding.BenchmarkRunState.FromJson(st.ToJson(), "state")).ToList();
        ReportJson.WithoutTimes(BenchmarkReport.ToJson(BenchmarkResult.FromStates(states))).Should().Be(ReportJson.WithoutTimes(BenchmarkReport.ToJson(full.Result)));
    }

    [Fact]
    public void A_shard_refuses_to_leave_out_an_image_that_cannot_be_decoded()
    {
        var (data, _) = MakeFolder("eval-corrupt");
        File.Copy(_fx.Corrupt, Path.Combine(data, "0", "img01.png"), overwrite: true);   // its header reads, its pixels do not
        var r = Evaluate(data, _fx.NewOutputDir(), "--protocols", "perturbation");
        r.ExitCode.Should().Be(0, r.ToString());
        r.Error.Should().Contain("skipped").And.Contain("img01.png");
        r.Out.Should().Contain(": 5 images");

        var s = Evaluate(data, _fx.NewOutputDir(), "--protocols", "perturbation", "--shard", "0/2");
        s.ExitCode.Should().Be(1, s.ToString());
        s.Error.Should().Contain("img01.png").And.Contain("A shard cannot leave an image out");
    }

    [Fact]
    public void Evaluate_checks_its_options_once_for_both_benchmarks()
    {
        var (data, _) = MakeFolder("eval-options");
        foreach (var (option, value) in new[] { ("--sanity-samples", "0"), ("--sanity-groups", "0"), ("--pgd-samples", "0"), ("--batch", "0"), ("--gallery", "-1") })
        {
            var folder = EvaluateModel(data, _fx.NewOutputDir(), option, value);
            folder.ExitCode.Should().Be(2, folder.ToString());
            folder.Error.Should().Contain($"{option} must be");
            var synthetic = CliFixture.Run("evaluate", "--samples", "2", option, value, "--out", _fx.NewOutputDir());
            synthetic.ExitCode.Should().Be(2, synthetic.ToString());
            synthetic.Error.Should().Contain($"{option} must be");
        }
    }

    [Fact]
    public void Cuda_without_cuda_is_a_clear_failure_for_folder_and_synthetic_runs()
    {
        if (TorchSharp.torch.cuda.is_available()) return;   // this machine has no CUDA; on one that has, the run would start
        var (data, _) = MakeFolder("eval-cuda");
        foreach (var r in new[] { Evaluate(data, _fx.NewOutputDir(), "--protocols", "perturbation", "--device", "cuda"), CliFixture.Run("evaluate", "--samples", "2", "--device", "cuda:1", "--out", _fx.NewOutputDir()) })
        {
            r.ExitCode.Should().Be(1, r.ToString());
            r.Error.Should().Contain("CUDA was requested (--device cuda").And.Contain("not available").And.Contain("--device cpu");
            r.Error.Should().NotContain("   at ", "no stack trace");
        }
    }

    private sealed class Collect : IProgress<BenchmarkProgress>
    {
        private readonly Action<BenchmarkProgress> _action;

        public Collect(Action<BenchmarkProgress> action) => _action = action;

        public void Report(BenchmarkProgress value) => _action(value);
    }
}
