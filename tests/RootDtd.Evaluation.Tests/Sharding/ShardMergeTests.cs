using FluentAssertions;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Sharding;
using RootDtd.Evaluation.Training;
using TorchSharp;
using Xunit;
using RootDtd.TestKit;

namespace RootDtd.Evaluation.Tests.Sharding;

public sealed class ShardMergeTests
{
    private const int Samples = 6, Batch = 2;

    private static BenchmarkOptions Options() => new()
    {
        ModelName = "tiny",
        DataDescription = "seed 99",
        Methods = new[] { BenchmarkMethod.Of("epsilon-plus-flat"), new BenchmarkMethod("root (1 step)", "root:steps=1") },
        // every protocol that merges; the sanity checks are not part of shard state files (see MethodState.Sanity)
        Protocols = BenchmarkProtocols.All & ~BenchmarkProtocols.Sanity,
        BatchSize = Batch,
        PgdSamples = 4,   // spans shards 0 and 1
        Pgd = new PgdOptions { MaxIterations = 1 },
        GallerySamples = 2,
    };

    private static torch.nn.Module<torch.Tensor, torch.Tensor> Model()
    {
        torch.random.manual_seed(11);
        var model = SyntheticModels.Create(SyntheticArchitecture.ResNet);
        model.eval();
        return model;
    }

    /// <summary>One shard of the images, run on a fresh <see cref="Model"/> and read back through the state file format.</summary>
    private static BenchmarkRunState RunShard(BenchmarkOptions options, BenchmarkShard shard, torch.Tensor images, torch.Tensor masks, torch.Tensor labels, BenchmarkRunState? resume = null)
    {
        using var model = Model();
        using var x = images.narrow(0, shard.Start, shard.Length);
        using var m = masks.narrow(0, shard.Start, shard.Length);
        using var y = labels.narrow(0, shard.Start, shard.Length);
        return BenchmarkRunState.FromJson(new BenchmarkRunner(model, options).RunShard(x, m, y, shard, resume).ToJson(), $"shard {shard.Index}");
    }

    [Fact]
    public void Three_shards_merged_give_the_unsharded_report_exactly()
    {
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 99, count: Samples);
        using (images)
        using (masks)
        using (labels)
        {
            string single;
            using (var model = Model()) single = BenchmarkReport.ToJson(new BenchmarkRunner(model, Options()).Run(images, masks, labels));

            var states = new List<BenchmarkRunState>();
            foreach (var i in new[] { 2, 0, 1 })   // any order
            {
                var shard = BenchmarkShard.Of(i, 3, Samples, Batch);
                shard.Length.Should().Be(2);
                states.Add(RunShard(Options(), shard, images, masks, labels));   // through the file format
            }

            var merged = BenchmarkResult.FromStates(states);
            var json = BenchmarkReport.ToJson(merged);
            ReportJson.WithoutTimes(json).Should().Be(ReportJson.WithoutTimes(single), "means merge by counts, IoU by summed intersections and unions, curves by summed counts — exactly");
            merged.Gallery.Should().HaveCount(2);
            merged.Methods.Should().OnlyContain(r => r.GalleryHeatmaps != null && r.GalleryHeatmaps.Length == 2);
            merged.Methods[1].RootScores!.LogitRoot.Should().HaveCount(Samples, "per-sample root scores are concatenated in sample order");
            merged.Methods[0].Pgd!.Samples.Should().Be(4);
        }
    }

    [Fact]
    public void A_merged_report_describes_a_mean_image_normalisation_as_the_run_did()
    {
        // the state keeps the per-channel statistics of a mean image only; the report line must still name the mean image
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 99, count: Batch);
        using (images)
        using (masks)
        using (labels)
        {
            using var meanImage = torch.linspace(90, 140, 3 * 64 * 64).reshape(3, 64, 64);
            var normalization = RootDtd.Imaging.ImageNormalization.FromMeanImage(meanImage, RootDtd.Models.ChannelOrder.Bgr);
            var options = Options() with { Protocols = BenchmarkProtocols.Localization, Normalization = normalization, GallerySamples = 0 };
            var state = RunShard(options, BenchmarkShard.Of(0, 1, Batch, Batch), images, masks, labels);
            var line = NormalisationLine(BenchmarkReport.ToMarkdown(BenchmarkResult.FromStates(new[] { state })));

            line.Should().Be("- normalisation: " + normalization + "; explained class: the true label; perturbation baseline: NormalizedZero");
            line.Should().Contain("BGR 0-255 minus a 64x64 mean image");

            // a state written before the description was kept: the report falls back to the per-channel statistics
            state.Settings = state.Settings with { NormalizationDescription = null };
            NormalisationLine(BenchmarkReport.ToMarkdown(BenchmarkResult.FromStates(new[] { state }))).Should().StartWith("- normalisation: mean ");
        }

        static string NormalisationLine(string markdown) => markdown.Split('\n').Single(l => l.StartsWith("- normalisation: ", StringComparison.Ordinal));
    }

    [Fact]
    public void Resuming_or_merging_refuses_batches_made_with_another_normalisation()
    {
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 99, count: 2 * Batch);
        using (images)
        using (masks)
        using (labels)
        {
            using var meanImage = torch.full(3, 64, 64, 127.5);
            var half = Options() with { Protocols = BenchmarkProtocols.Localization, Methods = new[] { BenchmarkMethod.Of("epsilon-plus-flat") }, GallerySamples = 0 };
            // a mean image of 127.5 and its per-channel twin (mean 0.5, std 1/255): the same statistics in the state,
            // told apart only by the description; and another std
            var withMeanImage = half with { Normalization = RootDtd.Imaging.ImageNormalization.FromMeanImage(meanImage, RootDtd.Models.ChannelOrder.Rgb) };
            var perChannelTwin = half with { Normalization = new RootDtd.Imaging.ImageNormalization([0.5f, 0.5f, 0.5f], [1f / 255f, 1f / 255f, 1f / 255f]) };
            withMeanImage.Normalization.Mean.Should().Equal(perChannelTwin.Normalization.Mean);
            withMeanImage.Normalization.Std.Should().Equal(perChannelTwin.Normalization.Std);
            var otherStd = half with { Normalization = new RootDtd.Imaging.ImageNormalization([0.5f, 0.5f, 0.5f], [0.25f, 0.25f, 0.25f]) };

            BenchmarkRunState Shard(BenchmarkOptions options, int index, BenchmarkRunState? resume = null) =>
                RunShard(options, BenchmarkShard.Of(index, 2, 2 * Batch, Batch), images, masks, labels, resume);

            var first = Shard(half, 0);
            FluentActions.Invoking(() => Shard(otherStd, 0, first)).Should().Throw<ArgumentException>()
                .WithMessage("*resume was made with the normalisation 'mean 0.5/0.5/0.5, std 0.5/0.5/0.5', this run uses 'mean 0.5/0.5/0.5, std 0.25/0.25/0.25'*");
            FluentActions.Invoking(() => BenchmarkResult.FromStates(new[] { Shard(perChannelTwin, 0), Shard(withMeanImage, 1) })).Should().Throw<ArgumentException>()
                .WithMessage("*Shard 1/2 was run with the normalisation 'RGB 0-255 minus a 64x64 mean image*, shard 0/2 with 'mean 0.5/0.5/0.5, std 0.00392/0.00392/0.00392'*");
            FluentActions.Invoking(() => BenchmarkResult.FromStates(new[] { first, Shard(otherStd, 1) })).Should().Throw<ArgumentException>().WithMessage("*std 0.25/0.25/0.25*");
            BenchmarkResult.FromStates(new[] { first, Shard(half, 1) }).Samples.Should().Be(2 * Batch, "shards made with the same normalisation still merge");
            Shard(half, 0, first).Complete.Should().BeTrue("a state resumes under its own normalisation");
        }
    }

    [Fact]
    public void Shards_are_whole_batches_that_cover_the_data_once()
    {
        foreach (var (total, batch, count) in new[] { (10, 3, 3), (7, 2, 5), (5, 8, 2), (100, 25, 4) })
        {
            var shards = Enumerable.Range(0, count).Select(i => BenchmarkShard.Of(i, count, total, batch)).ToList();
            shards.Sum(s => s.Length).Should().Be(total);
            for (var i = 0; i < count; i++)
            {
                (shards[i].Start % batch).Should().Be(0);
                if (i > 0) shards[i].Start.Should().Be(shards[i - 1].Start + shards[i - 1].Length);
            }
        }
        BenchmarkShard.Parse("2/4").Should().Be((2, 4));
        FluentActions.Invoking(() => BenchmarkShard.Parse("4/4")).Should().Throw<ArgumentException>().WithMessage("*0 ≤ i < n*");
    }

    [Fact]
    public void A_resumed_run_continues_after_the_last_saved_batch_and_ends_with_the_same_numbers()
    {
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 99, count: Samples);
        using (images)
        using (masks)
        using (labels)
        {
            var options = Options() with { Protocols = BenchmarkProtocols.Perturbation | BenchmarkProtocols.Localization, Methods = new[] { BenchmarkMethod.Of("epsilon-plus-flat") } };
            var shard = BenchmarkShard.Whole(Samples);
            string full;
            using (var model = Model()) full = ReportJson.WithoutTimes(BenchmarkReport.ToJson(BenchmarkResult.FromStates(new[] { new BenchmarkRunner(model, options).RunShard(images, masks, labels, shard) })));

            // interrupt after the method's second batch: the last file written is what a killed process leaves
            string? saved = null;
            using (var model = Model())
            {
                var runner = new BenchmarkRunner(model, options);
                var act = () => runner.RunShard(images, masks, labels, shard, checkpoint: s =>
                {
                    saved = s.ToJson();
                    if (s.Methods.Count == 1 && s.Methods[0].BatchesDone.Count == 2) throw new OperationCanceledException("interrupted");
                });
                act.Should().Throw<OperationCanceledException>();
            }
            var partial = BenchmarkRunState.FromJson(saved!, "checkpoint");
            partial.Complete.Should().BeFalse();
            partial.Methods[0].BatchesDone.Should().Equal(0, 2);

            var explained = new List<int>();
            using (var model = Model())
            {
                var resumed = new BenchmarkRunner(model, options, new Collect(p => { if (p.Method == "epsilon-plus-flat" && p.Stage.StartsWith("explain", StringComparison.Ordinal)) explained.Add(p.SamplesDone); }))
                    .RunShard(images, masks, labels, shard, partial);
                resumed.Complete.Should().BeTrue();
                resumed.Methods[0].BatchesDone.Should().Equal(0, 2, 4);
                ReportJson.WithoutTimes(BenchmarkReport.ToJson(BenchmarkResult.FromStates(new[] { resumed }))).Should().Be(full);
            }
            explained.Should().NotBeEmpty().And.OnlyContain(v => v >= 4, "only the last batch (samples 4 and 5) is explained again");
        }
    }

    [Fact]
    public void Merging_refuses_missing_unfinished_or_foreign_shards()
    {
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 99, count: 4);
        using (images)
        using (masks)
        using (labels)
        {
            var options = Options() with { Protocols = BenchmarkProtocols.Localization, Methods = new[] { BenchmarkMethod.Of("gradient") }, PgdSamples = null };
            BenchmarkRunState Shard(int i, BenchmarkOptions o) => RunShard(o, BenchmarkShard.Of(i, 2, 4, Batch), images, masks, labels);
            var a = Shard(0, options);
            var b = Shard(1, options);
            FluentActions.Invoking(() => BenchmarkResult.FromStates(new[] { a })).Should().Throw<ArgumentException>().WithMessage("*Samples 2 … 3 are in no shard*");
            FluentActions.Invoking(() => BenchmarkResult.FromStates(new[] { a, a })).Should().Throw<ArgumentException>().WithMessage("*overlaps*");
            var other = Shard(1, options with { BatchSize = 1 });
            FluentActions.Invoking(() => BenchmarkResult.FromStates(new[] { a, other })).Should().Throw<ArgumentException>().WithMessage("*other settings*");
            b.Complete = false;
            FluentActions.Invoking(() => BenchmarkResult.FromStates(new[] { a, b })).Should().Throw<ArgumentException>().WithMessage("*not finished*--resume*");
        }
    }

    [Fact]
    public void Exact_sums_do_not_depend_on_grouping()
    {
        var rng = new Random(5);
        var values = Enumerable.Range(0, 200).Select(_ => (rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-12, 12))).ToArray();
        var forward = values.Aggregate(ExactSum.Zero, (a, v) => a + v);
        var backward = values.Reverse().Aggregate(ExactSum.Zero, (a, v) => a + v);
        var grouped = values.Chunk(7).Select(c => c.Aggregate(ExactSum.Zero, (a, v) => a + v)).Aggregate(ExactSum.Zero, (a, v) => a + v);
        forward.Should().Be(backward).And.Be(grouped);
        ExactSum.Parse(forward.ToString()).Should().Be(forward);
        (ExactSum.Of(0.5) + 0.25).ToDouble().Should().Be(0.75);
        (ExactSum.Of(1e16) + 1 + (-1e16)).ToDouble().Should().Be(1, "no digit is lost in between");
        ExactSum.Of(-3.5).ToDouble().Should().Be(-3.5);
        ExactSum.Of(double.Epsilon).ToDouble().Should().Be(double.Epsilon);
        FluentActions.Invoking(() => ExactSum.Of(double.NaN)).Should().Throw<ArgumentException>();
    }

    private sealed class Collect : IProgress<BenchmarkProgress>
    {
        private readonly Action<BenchmarkProgress> _action;

        public Collect(Action<BenchmarkProgress> action) => _action = action;

        public void Report(BenchmarkProgress value) => _action(value);
    }
}
