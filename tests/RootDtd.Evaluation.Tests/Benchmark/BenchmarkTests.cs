using RootDtd.Rules.RootInference;
using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Training;
using SixLabors.ImageSharp;
using TorchSharp;
using Xunit;

namespace RootDtd.Evaluation.Tests.Benchmark;

public class BenchmarkTests
{
    private static BenchmarkResult RunSmall(IReadOnlyList<BenchmarkMethod> methods, BenchmarkProtocols protocols, IReadOnlyList<RootAblation>? ablations = null)
    {
        torch.random.manual_seed(11);
        using var model = SyntheticModels.Create(SyntheticArchitecture.ResNet);
        model.eval();
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 99, count: 4);
        using (images)
        using (masks)
        using (labels)
        {
            var options = new BenchmarkOptions
            {
                ModelName = "tiny",
                Methods = methods,
                Ablations = ablations ?? Array.Empty<RootAblation>(),
                Protocols = protocols,
                BatchSize = 2,
                PgdSamples = 4,
                Pgd = new PgdOptions { MaxIterations = 2 },
                GallerySamples = 2,
                SanitySamples = 2,
                Sanity = new SanityCheckOptions { Groups = 2 },
            };
            return new BenchmarkRunner(model, options).Run(images, masks, labels);
        }
    }

    [Fact]
    public void ReportHasTheTablesHeadersAndRowsOfATwoMethodFourImageRun()
    {
        var methods = new[] { BenchmarkMethod.Of("epsilon-plus-flat"), BenchmarkMethod.Of("gradient-x-input"), BenchmarkMethod.Of("no-such-method") };
        var result = RunSmall(methods, BenchmarkProtocols.All);
        result.Samples.Should().Be(4);
        result.Methods.Select(m => m.Label).Should().Equal("epsilon-plus-flat", "gradient-x-input");
        result.Skipped.Should().ContainSingle(s => s.Label == "no-such-method");
        result.Methods.Should().OnlyContain(m => m.Error == null);

        var md = BenchmarkReport.ToMarkdown(result, "p.png", "g.png");
        md.Should().Contain("Table 1 — pixel perturbation");
        md.Should().Contain("| method | AUC+ coarse ↓ | AUC− coarse ↑ | AUC+ fine ↓ | AUC− fine ↑ |");
        md.Should().Contain("Table 2 — localisation");
        md.Should().Contain("| method | " + string.Join(" | ", LocalizationResult.Columns) + " |");
        md.Should().Contain("| method | success rate | mean iterations | clean acc | post-attack acc |");
        md.Should().Contain("**Not run**").And.Contain("no-such-method");
        md.Should().Contain("![perturbation curves](p.png)").And.Contain("![heatmap gallery](g.png)");

        var perturbation = BenchmarkReport.PerturbationTable(result);
        perturbation.Rows.Select(r => r.Method).Should().Equal("epsilon-plus-flat", "gradient-x-input", "random (reference)", "empty (reference)");
        perturbation.Rows.Should().OnlyContain(r => r.Values.Values.All(double.IsFinite));
        var localisation = BenchmarkReport.LocalizationTable(result);
        localisation.Rows.Select(r => r.Method).Should().Equal("epsilon-plus-flat", "gradient-x-input", "random (reference)", "empty (reference)");
        localisation.Rows[0].Values["mIoU"].Should().BeInRange(0, 1);
        BenchmarkReport.PgdTable(result).Rows.Select(r => r.Method).Should().Equal("epsilon-plus-flat", "gradient-x-input", "random (reference)");
        foreach (var row in md.Split('\n').Where(l => l.StartsWith("| ", StringComparison.Ordinal)))
            row.Count(c => c == '|').Should().BeGreaterThan(2);
    }

    /// <summary>
    /// A method that fails after it measured something (issue 10: a failed row printed its partial numbers) shows as
    /// failed, with its error, and no number in any table, plot or JSON curve.
    /// </summary>
    [Fact]
    public void AFailedMethodShowsNoNumbersAnywhere()
    {
        var result = RunSmall(new[] { BenchmarkMethod.Of("epsilon-plus-flat"), BenchmarkMethod.Of("gradient-x-input") }, BenchmarkProtocols.All);
        var failed = result.Methods[0];
        failed.Curves.Should().NotBeEmpty("the method measured before it 'failed'");
        // the runner sets Error when a protocol throws after others completed; set it the same way here
        typeof(MethodResult).GetProperty(nameof(MethodResult.Error))!.SetValue(failed, "Tensor invalid -- empty handle");

        var md = BenchmarkReport.ToMarkdown(result);
        var rows = md.Split('\n').Where(l => l.StartsWith("| epsilon-plus-flat (failed)", StringComparison.Ordinal)).ToList();
        rows.Should().HaveCountGreaterThanOrEqualTo(4, "one row in each method table");
        foreach (var row in rows)
            row.Split('|', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(c => c.Trim()).Should().OnlyContain(c => c == "–", row);
        md.Should().Contain("- epsilon-plus-flat: Tensor invalid -- empty handle");
        md.Split('\n').Where(l => l.StartsWith("| gradient-x-input |", StringComparison.Ordinal)).Should().NotBeEmpty();
        var json = BenchmarkReport.ToJson(result);
        json.Should().Contain("gradient-x-input\"", "the curves of the other method are there");
        json.Replace(" ", "", StringComparison.Ordinal).Should().NotContain("\"method\":\"epsilon-plus-flat\"", "no curve of the failed method");
    }

    [Fact]
    public void WriteProducesMarkdownPngsAndJson()
    {
        var result = RunSmall(new[] { BenchmarkMethod.Of("epsilon"), BenchmarkMethod.Of("zplus") }, BenchmarkProtocols.Perturbation | BenchmarkProtocols.Localization);
        var dir = Path.Combine(Path.GetTempPath(), "rootdtd-bench-" + Guid.NewGuid().ToString("N"));
        try
        {
            var files = BenchmarkReport.Write(result, dir, "tiny");
            File.Exists(files.Markdown).Should().BeTrue();
            File.Exists(files.Json).Should().BeTrue();
            files.Images.Should().HaveCount(2);
            var gallery = Image.Identify(files.Images.Single(p => p.EndsWith("gallery.png", StringComparison.Ordinal)));
            gallery.Width.Should().BeGreaterThan(4 * 96);
            File.ReadAllText(files.Json).Should().Contain("\"tables\"");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void ProgressMovesWithinABatchAndTheReportSaysWhatItLeavesOut()
    {
        torch.random.manual_seed(11);
        using var model = SyntheticModels.Create(SyntheticArchitecture.ResNet);
        model.eval();
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 99, count: 4);
        using (images)
        using (masks)
        using (labels)
        {
            var reports = new List<BenchmarkProgress>();
            var options = new BenchmarkOptions
            {
                ModelName = "tiny",
                Methods = new[] { BenchmarkMethod.Of("root:steps=2"), BenchmarkMethod.Of("gradient") },
                Protocols = BenchmarkProtocols.Localization,
                BatchSize = 4,
                GallerySamples = 2,
            };
            var result = new BenchmarkRunner(model, options, new Collect(reports)).Run(images, masks, labels);
            // one batch of 4: without per-unit reports the only values would be 4
            var root = reports.Where(r => r.Method == "root:steps=2" && r.Stage == "explain+perturb+localise").Select(r => r.SamplesDone).ToList();
            root.Should().Contain(v => v > 0 && v < 4, "progress moves within the batch");
            root.Should().BeInAscendingOrder();
            root[^1].Should().Be(4);

            BenchmarkReport.GalleryCaption(result).Should().Contain("the first 2 of the 4 explained images (2 not shown");
            var cost = BenchmarkReport.CostTable(result);
            double.IsNaN(cost.Rows.Single(r => r.Method == "gradient").Values["conservation error"]).Should().BeTrue("gradients make no conservation claim");
            double.IsFinite(cost.Rows.Single(r => r.Method == "root:steps=2").Values["conservation error"]).Should().BeTrue();
            using var gallery = BenchmarkReport.RenderGallery(result);
            gallery.Should().NotBeNull();
        }
    }

    private sealed class Collect : IProgress<BenchmarkProgress>
    {
        private readonly List<BenchmarkProgress> _list;

        public Collect(List<BenchmarkProgress> list) => _list = list;

        public void Report(BenchmarkProgress value) => _list.Add(value);
    }

    [Fact]
    public void TheSanityTableAndPlotCoverTheNewMethods()
    {
        var result = RunSmall(new[] { BenchmarkMethod.Of("gradcam"), BenchmarkMethod.Of("integrated-gradients:steps=4") }, BenchmarkProtocols.Sanity);
        result.Methods.Should().OnlyContain(m => m.Error == null && m.Sanity != null);
        var table = BenchmarkReport.SanityTable(result);
        table.Rows.Select(r => r.Method.TrimEnd(' ', '⚑')).Should().Equal("gradcam", "integrated-gradients:steps=4");
        table.Rows.Should().OnlyContain(r => r.Values.Values.All(v => v >= -1 && v <= 1));
        table.Rows.Should().OnlyContain(r => !r.Values.ContainsKey(BenchmarkReport.SanityColumns[5]), "no random-label model was given");
        var md = BenchmarkReport.ToMarkdown(result, sanityPng: "s.png");
        md.Should().Contain("Sanity checks (Adebayo et al. 2018)").And.Contain("![sanity checks](s.png)").And.Contain("no random-label model was given");
        using var plot = BenchmarkReport.RenderSanityPlot(result);
        plot!.Width.Should().Be(2 * 300);
        result.Methods[0].Sanity!.Steps.Should().HaveCount(4, "2 cascading and 2 independent steps");
    }

    [Fact]
    public void PlotPngHasTheRequestedSize()
    {
        var series = new[]
        {
            new PlotSeries("a", new[] { 0.0, 0.5, 1.0 }, new[] { 1.0, 0.6, 0.2 }),
            new PlotSeries("b (ref)", new[] { 0.0, 0.5, 1.0 }, new[] { 1.0, 0.9, 0.8 }, Dashed: true),
        };
        using var image = LinePlot.Render(series, "title γ", "x", "y", 320, 200, (0, 1));
        image.Width.Should().Be(320);
        image.Height.Should().Be(200);
        var path = Path.Combine(Path.GetTempPath(), $"rootdtd-plot-{Guid.NewGuid():N}.png");
        try
        {
            RootDtd.Imaging.PngExport.SavePng(image, path);
            var info = Image.Identify(path);
            info.Width.Should().Be(320);
            info.Height.Should().Be(200);
        }
        finally
        {
            File.Delete(path);
        }

        // The first series' colour appears in the image; the background stays white in a corner.
        var colour = LinePlot.ColorOf(0);
        var found = false;
        for (var y = 0; y < image.Height && !found; y++)
            for (var x = 0; x < image.Width && !found; x++)
                found = image[x, y].Equals(colour);
        found.Should().BeTrue();
        image[0, image.Height - 1].Should().Be(new SixLabors.ImageSharp.PixelFormats.Rgb24(255, 255, 255));
    }

    [Fact]
    public void MethodListsParseAndRejectedAblationsAreSkippedWithAReason()
    {
        BenchmarkMethods.ParseList("root,epsilon:epsilon=0.1,gradient-x-input").Select(m => m.Spec)
            .Should().Equal("root", "epsilon:epsilon=0.1", "gradient-x-input");
        BenchmarkMethods.ParseList("full").Should().BeSameAs(BenchmarkMethods.Full);
        // ablations are typed options of 'root': an accepted one becomes its canonical spec, a rejected one (γ must be > 0) is skipped with the reason
        var ablations = BenchmarkMethods.ResolveAblations(new[]
        {
            new RootAblation("three steps", o => o with { Steps = 3 }),
            new RootAblation("γ = 0", o => o with { Gamma = 0 }),
        }, out var skipped);
        ablations.Should().ContainSingle().Which.Spec.Should().Be("root:steps=3");
        ablations[0].Method!.OptionsAs<RootInferenceOptions>().Should().Be(RootInferenceOptions.Default with { Steps = 3 });
        skipped.Should().ContainSingle().Which.Reason.Should().Contain("γ must be a finite number > 0");
        SyntheticBenchmark.ParseProtocols("perturbation,localisation").Should().Be(BenchmarkProtocols.Perturbation | BenchmarkProtocols.Localization);
        SyntheticBenchmark.ParseProtocols("all").Should().Be(BenchmarkProtocols.All);
    }

    [Fact]
    public void DefaultAblationsChangeExactlyOneOptionOfTheRootRule()
    {
        var resolved = BenchmarkMethods.ResolveAblations(null, out var skipped);
        skipped.Should().BeEmpty();
        resolved.Select(m => m.Spec).Should().Equal(
            "root", "root:steps=0", "root:steps=5", "root", "root:gamma=0.5", "root",
            "root:positive=0", "root:gradient=0", "root:domain=0", "root:normalized=0");
        var d = RootInferenceOptions.Default;
        resolved.Select(m => m.Method!.OptionsAs<RootInferenceOptions>()).Should().Equal(
            d, d with { Steps = 0 }, d with { Steps = 5 }, d, d with { Gamma = 0.5 }, d,
            d with { PositiveConstraint = false }, d with { GradientConstraint = false }, d with { DomainConstraint = false },
            d with { Redistribution = RootRedistribution.Direct });
        // the spec text reads back to the same options (what the report prints is what ran)
        foreach (var m in resolved) MethodSpec.Parse(m.Spec).Should().Be(m.Method);
    }

    [Fact]
    public void RootMethodsFillTheRootCheckTables()
    {
        if (!MethodCatalog.All.Any(m => m.Name == "root")) return; // the root composites are not in this build's catalog
        var result = RunSmall(new[] { new BenchmarkMethod("root (2 steps)", "root:steps=2") }, BenchmarkProtocols.RootChecks | BenchmarkProtocols.Localization);
        result.Methods.Should().ContainSingle().Which.Error.Should().BeNull();
        var m = result.Methods[0];
        m.RootScores.Should().NotBeNull();
        m.RootScores!.LogitRoot.Should().HaveCount(4);
        m.LinearRegions.Should().NotBeEmpty();
        m.LinearRegions.Should().OnlyContain(u => u.SameStateFraction >= 0 && u.SameStateFraction <= 1);
        BenchmarkReport.RootScoreTable(result).Rows.Should().ContainSingle();
        BenchmarkReport.LinearRegionTable(result).Rows.Should().HaveCount(m.LinearRegions.Count + 1);
    }
}
