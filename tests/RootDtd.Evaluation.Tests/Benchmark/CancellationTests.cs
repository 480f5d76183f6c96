using FluentAssertions;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Sharding;
using RootDtd.Evaluation.Training;
using RootDtd.TestKit;
using TorchSharp;
using Xunit;

namespace RootDtd.Evaluation.Tests.Benchmark;

/// <summary>
/// Cancelling a benchmark run: nothing partial is presented as a report, the completed batches stay in the state file,
/// and a run resumed from it ends with the numbers of an uninterrupted run.
/// </summary>
public sealed class CancellationTests : IDisposable
{
    private const int Samples = 6, Batch = 2, Size = 32; // 32×32: a quarter of the work of the benchmark's 64×64
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "rootdtd-cancel-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static BenchmarkOptions Options() => new()
    {
        ModelName = "tiny",
        DataDescription = "seed 99",
        // two cheap methods (the root methods' cost is not what is tested here); the sanity checks have a test of their own
        Methods = new[] { BenchmarkMethod.Of("epsilon-plus-flat"), BenchmarkMethod.Of("epsilon") },
        Protocols = BenchmarkProtocols.Perturbation | BenchmarkProtocols.Localization | BenchmarkProtocols.Pgd,
        BatchSize = Batch,
        PgdSamples = 2,
        Pgd = new PgdOptions { MaxIterations = 1 },
        GallerySamples = 2,
        Perturbation = new PixelPerturbationOptions { Schedules = new[] { PerturbationSchedule.Coarse } },
    };

    private static torch.nn.Module<torch.Tensor, torch.Tensor> Model()
    {
        torch.random.manual_seed(11);
        var model = SyntheticModels.Create(SyntheticArchitecture.ResNet, imageSize: Size);
        model.eval();
        return model;
    }

    private static (torch.Tensor Images, torch.Tensor Masks, torch.Tensor Labels) Split() => SyntheticModels.GenerateSplit(seed: 99, count: Samples, size: Size);

    /// <summary>Runs <see cref="ShardedBenchmark.Run"/> unsharded into the test folder (prefix "tiny").</summary>
    private BenchmarkRunOutput RunWhole(torch.Tensor images, torch.Tensor masks, torch.Tensor labels, BenchmarkRunState? resume, IProgress<BenchmarkProgress>? progress,
        CancellationToken token, string? directory = null)
    {
        var dir = directory ?? _dir;
        var (statePath, _) = ShardedBenchmark.OpenState(dir, "tiny", (0, 1), resume: false, log: null);
        using var model = Model();
        // no PGD here: the runner test covers it
        var options = Options() with { Protocols = BenchmarkProtocols.Perturbation | BenchmarkProtocols.Localization };
        var runner = new BenchmarkRunner(model, options, progress);
        return ShardedBenchmark.Run(runner, options, images, masks, labels, BenchmarkShard.Whole(Samples), statePath, resume, dir, "tiny", cancellationToken: token);
    }

    [Fact]
    public void A_cancelled_token_stops_the_runner_before_the_next_batch_and_the_checkpoint_holds_every_completed_one()
    {
        var (images, masks, labels) = Split();
        using (images)
        using (masks)
        using (labels)
        {
            var shard = BenchmarkShard.Whole(Samples);
            string full;
            using (var model = Model()) full = ReportJson.WithoutTimes(BenchmarkReport.ToJson(BenchmarkResult.FromStates(new[] { new BenchmarkRunner(model, Options()).RunShard(images, masks, labels, shard) })));

            // pre-cancelled: nothing runs, no checkpoint is written
            using (var model = Model())
            {
                using var cancelled = new CancellationTokenSource();
                cancelled.Cancel();
                var checkpoints = 0;
                var act = () => new BenchmarkRunner(model, Options()).RunShard(images, masks, labels, shard, checkpoint: _ => checkpoints++, cancellationToken: cancelled.Token);
                act.Should().Throw<OperationCanceledException>();
                checkpoints.Should().Be(0);
            }

            // cancelled after the second method's second batch: the checkpoint holds it, the third is never explained
            string? saved = null;
            using (var model = Model())
            {
                using var source = new CancellationTokenSource();
                var explainedAfterCancel = 0;
                var runner = new BenchmarkRunner(model, Options(), new Collect(p =>
                {
                    if (source.IsCancellationRequested && p.Stage.StartsWith("explain", StringComparison.Ordinal)) explainedAfterCancel++;
                }));
                var act = () => runner.RunShard(images, masks, labels, shard, checkpoint: s =>
                {
                    saved = s.ToJson();
                    if (s.Methods.Count == 2 && s.Methods[1].BatchesDone.Count == 2) source.Cancel();
                }, cancellationToken: source.Token);
                act.Should().Throw<OperationCanceledException>();
                explainedAfterCancel.Should().Be(0, "the token is checked before the next batch and inside the explanation");
            }
            var partial = BenchmarkRunState.FromJson(saved!, "checkpoint");
            partial.Complete.Should().BeFalse();
            partial.Methods[0].Complete.Should().BeTrue();
            partial.Methods[1].Complete.Should().BeFalse();
            partial.Methods[1].BatchesDone.Should().Equal(0, 2);
            partial.Methods[1].Pgd.Should().BeNull("PGD runs after the method's explanations");
            partial.DescribeProgress().Should().Be("complete: references, epsilon-plus-flat; partial: epsilon (2 of 3 batches)");

            using (var model = Model())
            {
                var resumed = new BenchmarkRunner(model, Options()).RunShard(images, masks, labels, shard, partial);
                resumed.Complete.Should().BeTrue();
                ReportJson.WithoutTimes(BenchmarkReport.ToJson(BenchmarkResult.FromStates(new[] { resumed }))).Should().Be(full);
            }
        }
    }

    [Fact]
    public void An_interrupted_run_writes_no_report_removes_the_previous_one_keeps_its_state_and_resumes_to_the_same_json()
    {
        var (images, masks, labels) = Split();
        using (images)
        using (masks)
        using (labels)
        {
            var reference = Path.Combine(_dir, "uninterrupted");
            var full = RunWhole(images, masks, labels, null, null, CancellationToken.None, reference);
            full.Files.Should().NotBeNull();
            var fullJson = ReportJson.WithoutTimes(File.ReadAllText(full.Files!.Json));

            // a previous report in the folder, as an earlier run leaves it
            Directory.CreateDirectory(_dir);
            foreach (var file in BenchmarkReport.FileNames(_dir, "tiny")) File.WriteAllText(file, "earlier run");

            using var source = new CancellationTokenSource();
            var act = () => RunWhole(images, masks, labels, null, new Collect(p =>
            {
                if (p.Method == "epsilon-plus-flat" && p.Stage.StartsWith("explain", StringComparison.Ordinal) && p.SamplesDone >= 4) source.Cancel();
            }), source.Token);
            var interrupted = act.Should().Throw<BenchmarkInterruptedException>().Which;

            BenchmarkReport.FileNames(_dir, "tiny").Where(File.Exists).Should().BeEmpty("neither a partial report nor the earlier one may look like this run's result");
            Directory.GetFiles(_dir, "*" + RootDtd.IO.AtomicFile.PartialSuffix, SearchOption.AllDirectories).Should().BeEmpty();
            interrupted.StatePath.Should().Be(ShardedBenchmark.StatePath(_dir, "tiny", (0, 1)));
            var state = BenchmarkRunState.FromJson(File.ReadAllText(interrupted.StatePath!), interrupted.StatePath!);
            state.Complete.Should().BeFalse();
            state.References.Should().OnlyContain(r => r.Complete);
            state.Methods.Should().ContainSingle().Which.BatchesDone.Should().NotBeEmpty().And.HaveCountLessThan(3);
            interrupted.Kept.Should().Be(state.DescribeProgress()).And.StartWith("complete: references; partial: epsilon-plus-flat (");

            var (statePath, resume) = ShardedBenchmark.OpenState(_dir, "tiny", (0, 1), resume: true, log: null);
            statePath.Should().Be(interrupted.StatePath);
            resume.Should().NotBeNull();
            var resumed = RunWhole(images, masks, labels, resume, null, CancellationToken.None);
            ReportJson.WithoutTimes(File.ReadAllText(resumed.Files!.Json)).Should().Be(fullJson);
            File.ReadAllText(resumed.Files.Markdown).Should().NotContain("earlier run");
        }
    }

    [Fact]
    public void A_resumed_unsharded_run_keeps_the_sanity_checks_of_methods_finished_before_the_interruption_and_computes_only_the_rest()
    {
        // MethodState.Sanity is written to the state file: resuming must not pay for the finished methods' checks again
        var (images, masks, labels) = Split();
        using (images)
        using (masks)
        using (labels)
        {
            var options = Options() with
            {
                Protocols = BenchmarkProtocols.Localization | BenchmarkProtocols.Sanity, SanitySamples = 2,
                Sanity = new SanityCheckOptions { Groups = 1, Independent = false },
            };
            var shard = BenchmarkShard.Whole(Samples);
            string? saved = null;
            SanityCheckResult? first = null;
            using (var model = Model())
            {
                using var source = new CancellationTokenSource();
                var act = () => new BenchmarkRunner(model, options).RunShard(images, masks, labels, shard, checkpoint: s =>
                {
                    saved = s.ToJson();
                    if (s.Methods.Count == 1 && s.Methods[0].Complete)
                    {
                        first = s.Methods[0].Sanity;
                        source.Cancel();
                    }
                }, cancellationToken: source.Token);
                act.Should().Throw<OperationCanceledException>();
            }
            first.Should().NotBeNull("the first method finished with its sanity checks before the interruption");
            var partial = BenchmarkRunState.FromJson(saved!, "checkpoint");
            var kept = partial.Methods.Should().ContainSingle().Which;
            kept.Complete.Should().BeTrue();
            kept.Sanity.Should().NotBeNull("the state file holds the finished method's sanity checks");
            kept.Sanity!.Method.Should().Be(first!.Method);
            kept.Sanity.Samples.Should().Be(2);
            kept.Sanity.Steps.Should().HaveCount(first.Steps.Count);
            for (var i = 0; i < first.Steps.Count; i++)
            {
                kept.Sanity.Steps[i].Mode.Should().Be(first.Steps[i].Mode);
                kept.Sanity.Steps[i].Label.Should().Be(first.Steps[i].Label);
                kept.Sanity.Steps[i].Units.Should().Equal(first.Steps[i].Units);
                kept.Sanity.Steps[i].Similarity.Should().Be(first.Steps[i].Similarity, "doubles survive the JSON round trip exactly");
            }

            var sanityStages = new List<string>();
            var progress = new Collect(p => { if (p.Stage == "sanity checks") sanityStages.Add(p.Method); });
            using (var model = Model())
            {
                var resumed = BenchmarkResult.FromStates(options, new[] { new BenchmarkRunner(model, options, progress).RunShard(images, masks, labels, shard, partial) });
                resumed.Methods.Should().HaveCount(2).And.OnlyContain(m => m.Sanity != null && m.Sanity.Steps.Count == 1);
                resumed.Methods[0].Sanity!.Steps[0].Similarity.Should().Be(first.Steps[0].Similarity);
            }
            sanityStages.Should().NotContain(kept.Label, "the finished method's checks come from the state file")
                .And.Contain(options.Methods[1].Label, "the unfinished method's checks are computed");

            // other sanity settings: the stored results are not this run's, so they are computed again
            sanityStages.Clear();
            var fewer = options with { SanitySamples = 1 };
            using (var model = Model())
            {
                var again = BenchmarkResult.FromStates(fewer, new[] { new BenchmarkRunner(model, fewer, progress).RunShard(images, masks, labels, shard, BenchmarkRunState.FromJson(saved!, "checkpoint")) });
                again.Methods.Should().OnlyContain(m => m.Sanity != null && m.Sanity.Samples == 1);
            }
            sanityStages.Should().Contain(kept.Label, "results stored for 2 samples are not reused for 1");
        }
    }

    [Fact]
    public void A_pre_cancelled_run_writes_nothing_and_leaves_the_folder_as_it_was()
    {
        var (images, masks, labels) = Split();
        using (images)
        using (masks)
        using (labels)
        {
            Directory.CreateDirectory(_dir);
            var previous = Path.Combine(_dir, "tiny.md");
            File.WriteAllText(previous, "earlier run");
            using var source = new CancellationTokenSource();
            source.Cancel();
            var act = () => RunWhole(images, masks, labels, null, null, source.Token);
            act.Should().Throw<OperationCanceledException>();
            Directory.GetFiles(_dir).Select(Path.GetFileName).Should().Equal("tiny.md");
            File.ReadAllText(previous).Should().Be("earlier run", "nothing ran, so nothing replaced it");
        }
    }

    [Fact]
    public void Protocol_loops_throw_on_a_cancelled_token_before_any_work()
    {
        var (images, masks, labels) = Split();
        using (images)
        using (masks)
        using (labels)
        using (var model = Model())
        {
            using var source = new CancellationTokenSource();
            source.Cancel();
            var calls = 0;
            HeatmapSource explain = (x, _) =>
            {
                calls++;
                return torch.rand(x.shape[0], x.shape[2], x.shape[3]);
            };
            IEnumerable<EvaluationBatch> Data() { yield return new EvaluationBatch(images.alias(), labels.alias(), masks.alias()); }
            Func<torch.Tensor, torch.Tensor> forward = model.forward;
            FluentActions.Invoking(() => PixelPerturbation.Evaluate(forward, explain, Data(), new PixelPerturbationOptions { Normalization = SyntheticModels.Normalization }, cancellationToken: source.Token))
                .Should().Throw<OperationCanceledException>();
            FluentActions.Invoking(() => Localization.Evaluate(explain, Data(), cancellationToken: source.Token)).Should().Throw<OperationCanceledException>();
            FluentActions.Invoking(() => RelevanceGuidedPgd.Evaluate(forward, explain, Data(), new PgdOptions { Normalization = SyntheticModels.Normalization }, cancellationToken: source.Token))
                .Should().Throw<OperationCanceledException>();
            using var low = SyntheticModels.Bounds(0);
            using var high = SyntheticModels.Bounds(1);
            var weights = model.parameters().Select(p => p.detach().clone()).ToList();
            FluentActions.Invoking(() => SanityChecks.Run(model, "epsilon-plus-flat", () => BenchmarkMethod.Of("epsilon-plus-flat").CreateComposite(),
                    new ExplainerOptions { InputLow = low, InputHigh = high }, images, labels, cancellationToken: source.Token))
                .Should().Throw<OperationCanceledException>();
            calls.Should().Be(0);
            model.parameters().Zip(weights).Should().OnlyContain(p => p.First.eq(p.Second).all().item<bool>(), "the sanity checks leave the model's weights as they were");
            foreach (var w in weights) w.Dispose();
        }
    }

    private sealed class Collect(Action<BenchmarkProgress> action) : IProgress<BenchmarkProgress>
    {
        public void Report(BenchmarkProgress value) => action(value);
    }
}
