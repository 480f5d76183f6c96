using FluentAssertions;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Results;
using RootDtd.Evaluation.Sharding;
using RootDtd.Evaluation.Training;
using TorchSharp;
using Xunit;
using static RootDtd.Evaluation.Tests.Kit;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests.Statistics;

/// <summary>The per-image values benchmark reports keep: hand-worked records, the report's metrics recomputed from them, JSON, resume and merge.</summary>
public sealed class PerImageValuesTests
{
    // the hand-worked image of LocalizationTests / docs/evaluation.md: gt = 2×2 block, two ignored pixels, one of them hot
    private static readonly long[] Mask1 = { 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 255, 0, 0, 0, 255 };
    private static readonly float[] Heat1 = { 0, 0, 0, 0, 0, 4, 4, 0, 0, 4, 0, 4, 0, 0, 2, 0 };
    private static readonly long[] Mask2 = Enumerable.Range(0, 16).Select(i => i == 15 ? 7L : 0L).ToArray();

    [Fact]
    public void Localisation_records_are_the_hand_worked_counts_and_values()
    {
        using var h = torch.cat(new[] { T(Heat1, 1, 4, 4), torch.zeros(1, 4, 4) });
        using var m = torch.tensor(Mask1.Concat(Mask2).ToArray(), new long[] { 2, 4, 4 });
        using var acc = new LocalizationAccumulator();
        acc.Add(h, m);
        var v = acc.PerImageValues!;
        v.Samples.Should().Be(2);
        v.Columns.Should().Equal(LocalizationAccumulator.PerImageColumns);
        // image 1: FG = {(1,1),(1,2),(2,1),(2,3),(3,2)} (5 pixels, one of them ignored), valid 14, gt 4
        v["correct"].Should().Equal(12, 15);      // image 2: the empty map predicts no foreground: 15 of 16 right
        v["valid"].Should().Equal(14, 16);
        v["fg_intersection"].Should().Equal(3, 0);
        v["fg_union"].Should().Equal(5, 1);
        v["bg_intersection"].Should().Equal(9, 15);
        v["bg_union"].Should().Equal(11, 16);
        v["foreground"].Should().Equal(4, 1);
        v["ap"][0].Should().BeApproximately(0.75 + 0.25 * 4 / 14, 1e-12);
        v["ap"][1].Should().BeApproximately(1.0 / 16, 1e-12);
        v["mass"][0].Should().BeApproximately(12.0 / 14, 1e-12);
        double.IsNaN(v["mass"][1]).Should().BeTrue("the empty map has no positive relevance: the mass is undefined and the mean skips it");
        v["pointing"].Should().Equal(1, 0);
    }

    [Fact]
    public void Every_report_metric_recomputed_from_the_per_image_values_equals_the_report()
    {
        using var maps = Localization.RandomMaps(3, new long[] { 7, 8, 8 }, torch.CPU);
        using var masks = (torch.rand(7, 8, 8, generator: new torch.Generator(1)) > 0.6).to(ScalarType.Int64);
        masks[2].fill_(0); // an image without foreground: AP, pointing and paper PA undefined there
        using var loc = new LocalizationAccumulator();
        loc.Add(maps.narrow(0, 0, 3), masks.narrow(0, 0, 3));
        loc.Add(maps.narrow(0, 3, 4), masks.narrow(0, 3, 4));
        var report = loc.Result("m").ToValues();
        var values = loc.PerImageValues!;
        foreach (var metric in PerImageMetrics.All.Where(x => report.ContainsKey(x.Name)))
            metric.Evaluate(metric.Terms(values)).Should().BeApproximately(report[metric.Name], 1e-12, metric.Name);
        PerImageMetrics.All.Count(x => report.ContainsKey(x.Name)).Should().Be(LocalizationResult.Columns.Count, "every localisation column has a per-image definition");
    }

    [Fact]
    public void Per_image_AUCs_average_to_the_curve_AUC_and_are_each_sample_alone()
    {
        using var x = torch.rand(5, 1, 4, 4, generator: new torch.Generator(4));
        using var y = L(1, 0, 1, 1, 0);
        using var heat = torch.rand(5, 4, 4, generator: new torch.Generator(5));
        using var w = torch.rand(1, 16, generator: new torch.Generator(6));
        Tensor Model(Tensor t)
        {
            var s = (t.reshape(t.shape[0], 16) * w).sum(1, keepdim: true);
            return torch.cat(new[] { torch.full_like(s, 3.0), s }, 1);
        }
        using var all = new PixelPerturbationAccumulator();
        all.Add(Model, x, y, heat);
        var curves = all.Result("m");
        var values = all.PerImageValues!;
        values.Columns.Should().Equal("auc_plus_coarse", "auc_plus_fine", "auc_minus_coarse", "auc_minus_fine");
        foreach (var c in curves)
            values[PixelPerturbationAccumulator.AucColumn(c.Order, c.Schedule)].Average().Should().BeApproximately(c.Auc, 1e-9);
        for (var i = 0; i < 5; i++)
        {
            using var one = new PixelPerturbationAccumulator();
            one.Add(Model, x.narrow(0, i, 1), y.narrow(0, i, 1), heat.narrow(0, i, 1));
            foreach (var c in one.Result("m"))
                values[PixelPerturbationAccumulator.AucColumn(c.Order, c.Schedule)][i].Should().Be(c.Auc, "sample i's AUC is the AUC of its own curve");
        }
    }

    private static BenchmarkOptions Options() => new()
    {
        ModelName = "tiny",
        DataDescription = "seed 99",
        Methods = new[] { BenchmarkMethod.Of("zplus"), BenchmarkMethod.Of("gradient") },
        Protocols = BenchmarkProtocols.Perturbation | BenchmarkProtocols.Localization,
        BatchSize = 2,
        GallerySamples = 0,
    };

    private static nn.Module<Tensor, Tensor> Model()
    {
        torch.random.manual_seed(11);
        var model = SyntheticModels.Create(SyntheticArchitecture.ResNet);
        model.eval();
        return model;
    }

    [Fact]
    public void The_report_JSON_carries_them_compactly_they_survive_the_state_file_and_a_merge_and_reproduce_the_tables()
    {
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 99, count: 4);
        using (images)
        using (masks)
        using (labels)
        {
            BenchmarkResult single;
            using (var model = Model()) single = new BenchmarkRunner(model, Options()).Run(images, masks, labels);
            var states = new List<BenchmarkRunState>();
            foreach (var i in new[] { 1, 0 })
            {
                var shard = BenchmarkShard.Of(i, 2, 4, 2);
                using var model = Model();
                var state = new BenchmarkRunner(model, Options()).RunShard(images.narrow(0, shard.Start, shard.Length), masks.narrow(0, shard.Start, shard.Length), labels.narrow(0, shard.Start, shard.Length), shard);
                states.Add(BenchmarkRunState.FromJson(state.ToJson(), $"shard {i}"));
            }
            var merged = BenchmarkResult.FromStates(states);
            foreach (var (a, b) in single.Methods.Zip(merged.Methods).Concat(single.References.Zip(merged.References)))
            {
                a.PerImage.Should().NotBeNull();
                a.PerImage!.Samples.Should().Be(4);
                b.PerImage!.Columns.Should().Equal(a.PerImage.Columns);
                foreach (var c in a.PerImage.Columns) b.PerImage[c].Should().Equal(a.PerImage[c], $"{a.Label}/{c}: shards concatenate in sample order, bit for bit");
            }

            var json = BenchmarkReport.ToJson(single);
            var read = BenchmarkReport.ReadPerImage(json, "report");
            read.Select(r => r.Method).Should().Equal("zplus", "gradient");
            BenchmarkReport.ReadPerImage(json, "report", new[] { "reference" }).Select(r => r.Method).Should().Equal("random (reference)", "empty (reference)");
            var zplus = single.Methods[0];
            foreach (var c in zplus.PerImage!.Columns)
                read[0].Values[c].Should().Equal(zplus.PerImage[c], (x, y) => x.Equals(y), $"{c} round-trips through the JSON (NaN as null)");
            // the table values from the per-image values of the JSON
            var loc = zplus.Localization!.ToValues();
            foreach (var name in new[] { "mIoU", "IoU fg", "mass", "pointing", "mAP", "pixAcc (img)", "paper IoU" })
            {
                var metric = PerImageMetrics.Get(name);
                metric.Evaluate(metric.Terms(read[0].Values)).Should().BeApproximately(loc[name], 1e-12, name);
            }
            var aucPlus = PerImageMetrics.Get("AUC+ coarse ↓");
            aucPlus.Evaluate(aucPlus.Terms(read[0].Values)).Should().BeApproximately(zplus.Auc(PerturbationOrder.MostRelevantFirst, "coarse"), 1e-9);

            // compact: one array per column, not an object per image (14 columns; counts ≤ 4 digits, values ≤ ~20 characters)
            var section = json[json.IndexOf("\"perImage\"", StringComparison.Ordinal)..];
            var perRowImage = (double)section.Length / (4 * 4);
            perRowImage.Should().BeLessThan(14 * 21 + 40, "about one number per column and image");
            BenchmarkReport.ToMarkdown(single).Should().Contain("95 % bootstrap intervals and paired differences").And.Contain("Paired difference to `zplus`");
        }
    }

    [Fact]
    public void A_state_without_per_image_values_gives_a_result_without_them_and_compare_says_why()
    {
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 99, count: 2);
        using (images)
        using (masks)
        using (labels)
        {
            var options = Options() with { Methods = new[] { BenchmarkMethod.Of("zplus") } };
            BenchmarkRunState state;
            using (var model = Model()) state = new BenchmarkRunner(model, options).RunShard(images, masks, labels, BenchmarkShard.Whole(2));
            // a state file written before per-image values were kept has no per_image / per_image_auc fields
            var old = System.Text.Json.Nodes.JsonNode.Parse(state.ToJson())!;
            foreach (var row in old["methods"]!.AsArray().Concat(old["references"]!.AsArray()))
            {
                row!["localization"]!.AsObject().Remove("per_image");
                row["perturbation"]!.AsObject().Remove("per_image_auc");
            }
            var result = BenchmarkResult.FromStates(new[] { BenchmarkRunState.FromJson(old.ToJsonString(), "old") });
            result.Methods[0].PerImage.Should().BeNull();
            result.Methods[0].Localization.Should().NotBeNull("the sums are all there");
            var json = BenchmarkReport.ToJson(result);
            BenchmarkReport.ToMarkdown(result).Should().NotContain("bootstrap intervals");
            FluentActions.Invoking(() => BenchmarkReport.ReadPerImage(json, "old.json")).Should().Throw<InvalidDataException>()
                .WithMessage("'old.json' has no per-image values*Run 'rootdtd evaluate' again*");
            FluentActions.Invoking(() => BenchmarkReport.ReadPerImage("{\"model\": 1}", "x.json")).Should().Throw<InvalidDataException>().WithMessage("*not a benchmark report JSON*");
        }
    }
}
