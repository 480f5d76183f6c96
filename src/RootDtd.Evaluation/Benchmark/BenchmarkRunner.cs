using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using RootDtd.Composites;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Sharding;
using RootDtd.Evaluation.Training;
using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Benchmark;

/// <summary>
/// Runs a list of explanation methods over a labelled, masked test split and collects every protocol: pixel
/// perturbation, localisation, relevance-guided PGD and — for root-inference methods — f(N) and the linear-region
/// check; plus random-map and empty-map reference rows. One explanation per batch feeds perturbation, localisation and
/// the root checks; PGD re-explains at every iteration on the first <see cref="BenchmarkOptions.PgdSamples"/> samples.
/// Methods missing from the catalog are skipped with a warning and listed in the result; a method that fails is
/// recorded with its error and the run goes on.
/// </summary>
public sealed class BenchmarkRunner
{
    private readonly nn.Module<Tensor, Tensor> _model;
    private readonly BenchmarkOptions _options;
    private readonly IProgress<BenchmarkProgress>? _progress;
    private readonly TextWriter? _log;

    /// <summary>Creates a runner.</summary>
    /// <param name="model">Classifier (normalised [B,C,H,W] → logits); it is put in eval mode.</param>
    /// <param name="options">Options.</param>
    /// <param name="progress">Per-batch progress.</param>
    /// <param name="log">Optional text log (per-method summaries, warnings).</param>
    public BenchmarkRunner(nn.Module<Tensor, Tensor> model, BenchmarkOptions? options = null, IProgress<BenchmarkProgress>? progress = null, TextWriter? log = null)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _options = options ?? new BenchmarkOptions();
        _options.Validate();
        _progress = progress;
        _log = log;
    }

    private Tensor Forward(Tensor x) => _model.forward(x);

    /// <summary>Runs the benchmark on the whole split.</summary>
    /// <param name="images">Normalised images [N,C,H,W] (CPU).</param>
    /// <param name="masks">Masks [N,H,W] integer (0 background, 255 ignore, other foreground).</param>
    /// <param name="labels">Labels int64 [N].</param>
    /// <param name="cancellationToken">
    /// Checked before every batch of every stage and inside every explanation; a cancelled run throws
    /// <see cref="OperationCanceledException"/> and returns nothing partial.
    /// </param>
    /// <returns>The result.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public BenchmarkResult Run(Tensor images, Tensor masks, Tensor labels, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(images);
        var state = RunShard(images, masks, labels, BenchmarkShard.Whole((int)images.shape[0]), cancellationToken: cancellationToken);
        return BenchmarkResult.FromStates(_options, new[] { state });
    }

    /// <summary>
    /// Runs the benchmark on one shard and returns its state (sums that <see cref="BenchmarkResult.FromStates(IReadOnlyList{BenchmarkRunState})"/> merges
    /// exactly with the other shards' into the report of one run).
    /// </summary>
    /// <param name="images">The shard's normalised images [L,C,H,W] (samples <see cref="BenchmarkShard.Start"/> … of the dataset).</param>
    /// <param name="masks">Their masks [L,H,W].</param>
    /// <param name="labels">Their labels [L].</param>
    /// <param name="shard">Which slice of the dataset they are (made with <see cref="BenchmarkShard.Of"/> and this run's batch size).</param>
    /// <param name="resume">The state of an interrupted run of the same shard: finished batches are not run again.</param>
    /// <param name="checkpoint">Called with the state after every completed batch and stage (write it atomically to resume from it).</param>
    /// <param name="cancellationToken">
    /// Checked before every batch of every stage (references, each method's explanations, PGD iterations, sanity-check
    /// batches) and passed to every <see cref="Explainer.Explain(Tensor, long[], CancellationToken)"/>. A cancelled run
    /// throws <see cref="OperationCanceledException"/>: the batch in progress is discarded, and the last state given to
    /// <paramref name="checkpoint"/> holds every batch completed before it, so a run resumed from it (<paramref name="resume"/>)
    /// ends with the same numbers as an uninterrupted one. A PGD or sanity-check stage is kept only when it completed.
    /// </param>
    /// <returns>The shard's state.</returns>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public BenchmarkRunState RunShard(Tensor images, Tensor masks, Tensor labels, BenchmarkShard shard, BenchmarkRunState? resume = null, Action<BenchmarkRunState>? checkpoint = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(masks);
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(shard);
        if (images.shape[0] != shard.Length)
            throw new ArgumentException($"The shard has {shard.Length} samples but {images.shape[0]} images were given.", nameof(images));
        if (shard.Start % _options.BatchSize != 0 && shard.Length > 0)
            throw new ArgumentException($"A shard must start at a batch boundary (a multiple of {_options.BatchSize}); it starts at {shard.Start}.", nameof(shard));
        if (shard.Length > 0) using (var probe = new EvaluationBatch(images.alias(), labels.alias(), masks.alias())) { }
        var fingerprint = Fingerprint(shard.Total);
        if (resume is not null && (resume.Fingerprint != fingerprint || resume.Shard != shard))
            throw new ArgumentException($"The state to resume was written by another run (shard {resume.Shard.Index}/{resume.Shard.Count}, {resume.Fingerprint}); this is shard {shard.Index}/{shard.Count}, {fingerprint}.", nameof(resume));
        // a resumed state takes this run's settings (they describe what the rest of the rows are run with)
        var settings = BenchmarkSettings.Of(_options);
        if (resume is not null && !resume.Settings.SameNormalization(settings))
            throw new ArgumentException($"The state to resume was made with the normalisation {resume.Settings.NormalizationForMessages()}, this run uses {settings.NormalizationForMessages()}: their batches cannot be combined (run without --resume, or with the state's normalisation).", nameof(resume));
        cancellationToken.ThrowIfCancellationRequested();
        var total = Stopwatch.StartNew();
        _model.eval();
        var state = resume ?? new BenchmarkRunState { Fingerprint = fingerprint, Shard = shard, Settings = settings };
        state.Settings = settings;
        var previousSeconds = state.Seconds;
        if (shard.Length > 0)
        {
            state.Height = (int)images.shape[2];
            state.Width = (int)images.shape[3];
            if (resume is null) state.CleanCorrect = (int)Math.Round(SyntheticTrainer.Accuracy(_model, images, labels) * shard.Length);
        }
        _log?.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"[{_options.ModelName}] {shard.Length} samples{(shard.Count > 1 ? $" (shard {shard.Index}/{shard.Count}: {shard.Start} … {shard.Start + shard.Length - 1} of {shard.Total})" : "")}, clean accuracy {(shard.Length > 0 ? (double)state.CleanCorrect / shard.Length : double.NaN):P1}"));

        var methods = BenchmarkMethods.Resolve(_options.Methods, out var skipped);
        var allSkipped = new List<SkippedMethod>(skipped);
        IReadOnlyList<BenchmarkMethod> ablations = Array.Empty<BenchmarkMethod>();
        if (_options.Ablations.Count > 0)
        {
            ablations = BenchmarkMethods.ResolveAblations(_options.Ablations, out var skippedAblations);
            allSkipped.AddRange(skippedAblations);
        }
        if (resume is null) state.Skipped.AddRange(allSkipped);
        foreach (var s in allSkipped) _log?.WriteLine($"warning: skipping '{s.Label}' ({s.Spec}): {s.Reason}");

        if (resume is null) CollectGallery(state, images, masks, labels, shard);
        var count = methods.Count + ablations.Count + 1;
        void Save()
        {
            state.Seconds = previousSeconds + total.Elapsed.TotalSeconds;
            checkpoint?.Invoke(state);
        }

        RunReferences(state, images, masks, labels, shard, count, Save, cancellationToken);
        var index = 1;
        foreach (var m in methods) RunMethod(StateOf(state.Methods, m, false), m, false, images, masks, labels, shard, shard.Length, index++, count, Save, cancellationToken);
        if (ablations.Count > 0)
        {
            // the ablations run on the dataset's first AblationSamples samples: this shard's part of them
            var n = Math.Clamp((_options.AblationSamples ?? shard.Total) - shard.Start, 0, shard.Length);
            foreach (var m in ablations) RunMethod(StateOf(state.Ablations, m, true), m, true, images, masks, labels, shard, n, index++, count, Save, cancellationToken);
        }
        state.Complete = true;
        Save();
        _log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{_options.ModelName}] done in {total.Elapsed.TotalSeconds:F0} s"));
        return state;
    }

    /// <summary>What must agree between the shards of one evaluation (and between a run and the state it resumes).</summary>
    private string Fingerprint(int totalSamples)
    {
        var text = string.Create(CultureInfo.InvariantCulture,
            $"model={_options.ModelName}; data={_options.DataDescription}; samples={totalSamples}; methods={string.Join(",", _options.Methods.Select(m => m.Label + "=" + m.Spec))}; " +
            $"ablations={string.Join(",", _options.Ablations.Select(a => a.Label))}; protocols={_options.Protocols}; batch={_options.BatchSize}; pgd={_options.PgdSamples}; " +
            $"ablation-samples={_options.AblationSamples}; gallery={_options.GallerySamples}; seed={_options.RandomSeed}; schedules={string.Join(",", _options.Perturbation.Schedules.Select(x => x.Name))}; " +
            $"pgd-options={_options.Pgd.Epsilon:R}/{_options.Pgd.StepSize}/{_options.Pgd.MaxIterations}/{_options.Pgd.TopK}/{_options.Pgd.RecomputeHeatmap}");
        // the state keeps the sanity results, so a run with another random-label model must not resume it (the part is
        // absent without one, so that states written before it existed still resume)
        if (_options.RandomLabelModel is not null && _options.Protocols.HasFlag(BenchmarkProtocols.Sanity))
            text += "; random-label-model=" + (_options.RandomLabelModelDescription ?? "given");
        return text;
    }

    private static MethodState StateOf(List<MethodState> list, BenchmarkMethod method, bool isAblation)
    {
        var existing = list.FirstOrDefault(m => m.Label == method.Label && m.Spec == method.Spec);
        if (existing is not null) return existing;
        var created = new MethodState { Label = method.Label, Spec = method.Spec, IsAblation = isAblation };
        list.Add(created);
        return created;
    }

    private PixelPerturbationOptions PerturbationOptions => _options.Perturbation with { Normalization = _options.Normalization, Target = ExplanationTarget.TrueLabel };

    private PgdOptions PgdOptions => _options.Pgd with { Normalization = _options.Normalization };

    /// <summary>The options' perturbation settings as the runner uses them (for merging states).</summary>
    internal static PixelPerturbationOptions PerturbationOptionsOf(BenchmarkOptions options) =>
        options.Perturbation with { Normalization = options.Normalization, Target = ExplanationTarget.TrueLabel };

    /// <summary>Batches of the first <paramref name="count"/> samples of the shard, with their global start index.</summary>
    private IEnumerable<(Tensor X, Tensor Y, Tensor M, int Start)> Batches(Tensor images, Tensor masks, Tensor labels, int count, BenchmarkShard shard)
    {
        for (var s = 0; s < count; s += _options.BatchSize)
        {
            var len = Math.Min(_options.BatchSize, count - s);
            yield return (images.narrow(0, s, len), labels.narrow(0, s, len).to(ScalarType.Int64), masks.narrow(0, s, len), shard.Start + s);
        }
    }

    private void CollectGallery(BenchmarkRunState state, Tensor images, Tensor masks, Tensor labels, BenchmarkShard shard)
    {
        // the gallery shows the dataset's first samples: they are in the shard that starts at 0
        if (shard.Start != 0) return;
        var g = (int)Math.Min(_options.GallerySamples, images.shape[0]);
        if (g == 0) return;
        using var scope = torch.NewDisposeScope();
        var x = _options.Normalization.Denormalize(images.narrow(0, 0, g)).clamp(0, 1).to(ScalarType.Float32).cpu();
        var m = masks.narrow(0, 0, g).to(ScalarType.Byte).cpu();
        var y = labels.narrow(0, 0, g).to(ScalarType.Int64).cpu().data<long>().ToArray();
        for (var i = 0; i < g; i++)
            state.Gallery.Add(new GallerySample(x[i].contiguous().data<float>().ToArray(), m[i].contiguous().data<byte>().ToArray(), (int)y[i]));
    }

    private void RunReferences(BenchmarkRunState state, Tensor images, Tensor masks, Tensor labels, BenchmarkShard shard, int methodCount, Action save, CancellationToken cancellationToken)
    {
        var random = StateOf(state.References, new BenchmarkMethod("random (reference)", "random"), false);
        var empty = StateOf(state.References, new BenchmarkMethod("empty (reference)", "empty"), false);
        if (random.Complete && empty.Complete) return;
        var clock = Stopwatch.StartNew();
        var previous = random.Seconds;
        var protocols = _options.Protocols;
        using var pRandom = new PixelPerturbationAccumulator(PerturbationOptions);
        using var pEmpty = new PixelPerturbationAccumulator(PerturbationOptions);
        using var lRandom = new LocalizationAccumulator();
        using var lEmpty = new LocalizationAccumulator();
        if (random.Perturbation is { } pr) pRandom.Merge(pr);
        if (empty.Perturbation is { } pe) pEmpty.Merge(pe);
        if (random.Localization is { } lr) lRandom.Merge(lr);
        if (empty.Localization is { } le) lEmpty.Merge(le);
        foreach (var (x, y, m, start) in Batches(images, masks, labels, shard.Length, shard))
        {
            if (random.BatchesDone.Contains(start)) continue;
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = torch.NewDisposeScope();
            var shape = new[] { x.shape[0], x.shape[2], x.shape[3] };
            var rnd = Localization.RandomMaps(_options.RandomSeed + start, shape, x.device);
            var zero = torch.zeros(shape, device: x.device);
            if (protocols.HasFlag(BenchmarkProtocols.Perturbation))
            {
                pRandom.Add(Forward, x, y, rnd);
                pEmpty.Add(Forward, x, y, zero);
                random.Perturbation = pRandom.State;
                empty.Perturbation = pEmpty.State;
            }

            if (protocols.HasFlag(BenchmarkProtocols.Localization))
            {
                lRandom.Add(rnd, m);
                lEmpty.Add(zero, m);
                random.Localization = lRandom.State;
                empty.Localization = lEmpty.State;
            }

            random.BatchesDone.Add(start);
            empty.BatchesDone.Add(start);
            random.Explained = empty.Explained += (int)x.shape[0];
            random.Seconds = empty.Seconds = previous + clock.Elapsed.TotalSeconds;
            _progress?.Report(new BenchmarkProgress("references", "perturb+localise", 0, methodCount, start - shard.Start + (int)x.shape[0], shard.Length));
            save();
        }

        if (protocols.HasFlag(BenchmarkProtocols.Pgd) && random.Pgd is null)
        {
            // the random maps of a PGD step depend only on the batch's global start and the call within the batch
            int batchStart = 0, call = 0;
            HeatmapSource source = (x, _) => Localization.RandomMaps(unchecked(_options.RandomSeed + 1_000_000 + 7919 * batchStart + 1000 * call++), new[] { x.shape[0], x.shape[2], x.shape[3] }, x.device);
            var pgdCount = PgdCount(shard);
            var pgd = RelevanceGuidedPgd.Evaluate(Forward, source, PgdBatches(images, masks, labels, pgdCount, shard, s => (batchStart, call) = (s, 0)), PgdOptions, random.Label,
                cancellationToken: cancellationToken);
            random.Pgd = new PgdCounts(pgd.Samples, pgd.InitiallyCorrect, pgd.Successes, Iterations(pgd));
        }

        random.Seconds = empty.Seconds = previous + clock.Elapsed.TotalSeconds;
        random.Complete = empty.Complete = true;
        save();
    }

    /// <summary>Σ iterations of the successful attacks, recovered exactly from the mean (an integer sum divided by the successes).</summary>
    private static long Iterations(PgdResult pgd) => pgd.Successes > 0 ? (long)Math.Round(pgd.MeanIterations * pgd.Successes) : 0;

    /// <summary>This shard's part of the dataset's first PgdSamples samples.</summary>
    private int PgdCount(BenchmarkShard shard) => Math.Clamp((_options.PgdSamples ?? shard.Total) - shard.Start, 0, shard.Length);

    private IEnumerable<EvaluationBatch> PgdBatches(Tensor images, Tensor masks, Tensor labels, int count, BenchmarkShard shard, Action<int>? onBatch = null)
    {
        foreach (var (x, y, m, start) in Batches(images, masks, labels, count, shard))
        {
            onBatch?.Invoke(start);
            yield return new EvaluationBatch(x, y, m);
        }
    }

    private void RunMethod(MethodState state, BenchmarkMethod method, bool isAblation, Tensor images, Tensor masks, Tensor labels, BenchmarkShard shard, int samples,
        int index, int methodCount, Action save, CancellationToken cancellationToken)
    {
        // a state written before the sanity results were saved (MethodState.Sanity) lacks them: the resumed run computes them once
        // sanity results stored under other sanity settings (samples, groups, seed …) are not this run's: computed again
        var sanitySettings = SanitySettings(images);
        // (a state written before the settings were stored has none: its results are kept, as the fingerprint matched)
        if (state.Sanity is not null && state.SanitySettings is not null && state.SanitySettings != sanitySettings) state.Sanity = null;
        var sanityMissing = _options.Protocols.HasFlag(BenchmarkProtocols.Sanity) && !isAblation && state.Sanity is null && shard.Count == 1;
        if (state.Complete && (state.Error is not null || !sanityMissing)) return;
        var clock = Stopwatch.StartNew();
        var previous = state.Seconds;
        var protocols = _options.Protocols;
        // what the method promises on this model's graph (root conserves on a CNN, only approximately on a transformer)
        var traits = MethodTraits.Of(method.Spec);
        try
        {
            var composite = method.CreateComposite();
            using var low = SyntheticModels.Bounds(0, _options.Normalization);
            using var high = SyntheticModels.Bounds(1, _options.Normalization);
            var wantRoots = protocols.HasFlag(BenchmarkProtocols.RootChecks);
            // within a batch the explainer reports per graph unit (only during the main loop: PGD re-explains too)
            int batchStart = 0, batchLength = 0;
            var inMainLoop = false;
            var unitProgress = _progress is null ? null : new SyncProgress<ExplanationProgress>(p =>
            {
                if (inMainLoop)
                    _progress.Report(new BenchmarkProgress(method.Label, "explain+perturb+localise", index, methodCount, batchStart + (int)(p.Fraction * batchLength), samples));
            });
            using var explainer = new Explainer(_model, composite, new ExplainerOptions { InputLow = low, InputHigh = high, RecordRoots = wantRoots, Progress = unitProgress });
            var firstUnit = explainer.Graph.Units.FirstOrDefault()?.Name;
            traits = traits.On(explainer.Graph);
            using var perturbation = new PixelPerturbationAccumulator(PerturbationOptions);
            using var localization = new LocalizationAccumulator();
            if (state.Perturbation is { } ps) perturbation.Merge(ps);
            if (state.Localization is { } ls) localization.Merge(ls);
            var explained = protocols.HasFlag(BenchmarkProtocols.Perturbation) || protocols.HasFlag(BenchmarkProtocols.Localization) || wantRoots ? samples : 0;
            foreach (var (x, y, m, start) in Batches(images, masks, labels, explained, shard))
            {
                if (state.BatchesDone.Contains(start)) continue;
                cancellationToken.ThrowIfCancellationRequested();
                using var scope = torch.NewDisposeScope();
                var targets = y.cpu().data<long>().ToArray();
                var t0 = Stopwatch.GetTimestamp();
                (batchStart, batchLength, inMainLoop) = (start - shard.Start, (int)x.shape[0], true);
                using var e = explainer.Explain(x, targets, cancellationToken);
                inMainLoop = false;
                var heat = e.Heatmap;
                heat.sum().item<float>(); // make the timing honest on asynchronous devices
                state.ExplainMilliseconds += Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                // non-finite relevance (an exploding rule): name the images and the node instead of failing in the sums below
                if (e.Conservation.DescribeNonFinite(start) is { } nonFinite)
                    throw new ExplanationException($"'{method.Label}': {nonFinite}.");
                var conservation = state.Conservation;
                for (var i = 0; i < targets.Length; i++)
                    conservation += e.Conservation.RelativeError(i);
                state.Conservation = conservation;
                if (protocols.HasFlag(BenchmarkProtocols.Perturbation))
                {
                    perturbation.Add(Forward, x, y, heat);
                    state.Perturbation = perturbation.State;
                }
                if (protocols.HasFlag(BenchmarkProtocols.Localization))
                {
                    localization.Add(heat, m);
                    state.Localization = localization.State;
                }
                if (start == 0 && _options.GallerySamples > 0)
                {
                    var cpu = heat.detach().to(ScalarType.Float32).cpu();
                    state.Gallery = Enumerable.Range(0, (int)Math.Min(_options.GallerySamples, heat.shape[0])).Select(i => cpu[i].contiguous().data<float>().ToArray()).ToArray();
                }

                if (wantRoots) CollectRootChecks(explainer, e, firstUnit, x, y, state);
                state.Explained += targets.Length;
                state.BatchesDone.Add(start);
                state.Seconds = previous + clock.Elapsed.TotalSeconds;
                _progress?.Report(new BenchmarkProgress(method.Label, "explain+perturb+localise", index, methodCount, start - shard.Start + (int)x.shape[0], samples));
                save();
            }

            if (protocols.HasFlag(BenchmarkProtocols.Pgd) && !isAblation && state.Pgd is null)
            {
                HeatmapSource source = (x, t) =>
                {
                    using var e = explainer.Explain(x, t.to(ScalarType.Int64).cpu().data<long>().ToArray(), cancellationToken);
                    return e.Heatmap.detach().clone();
                };
                var pgdCount = PgdCount(shard);
                var pgd = RelevanceGuidedPgd.Evaluate(Forward, source, PgdBatches(images, masks, labels, pgdCount, shard), PgdOptions, method.Label,
                    new SyncProgress<EvaluationProgress>(p => _progress?.Report(new BenchmarkProgress(method.Label, "pgd", index, methodCount, p.SamplesDone, pgdCount))), cancellationToken);
                state.Pgd = new PgdCounts(pgd.Samples, pgd.InitiallyCorrect, pgd.Successes, Iterations(pgd));
            }

            // only an unsharded run computes the sanity checks (MethodState.Sanity: shards' randomised maps would not merge bit for bit)
            if (protocols.HasFlag(BenchmarkProtocols.Sanity) && !isAblation && state.Sanity is null && shard.Count == 1)
            {
                var sanityCount = (int)Math.Min(images.shape[0], _options.SanitySamples);
                using var si = images.narrow(0, 0, sanityCount);
                using var sl = labels.narrow(0, 0, sanityCount);
                _progress?.Report(new BenchmarkProgress(method.Label, "sanity checks", index, methodCount, 0, sanityCount));
                state.SanitySettings = sanitySettings;
                state.Sanity = SanityChecks.Run(_model, method.Label, method.CreateComposite, new ExplainerOptions { InputLow = low, InputHigh = high }, si, sl,
                    _options.Sanity with { BatchSize = _options.BatchSize }, _options.RandomLabelModel, cancellationToken);
                _progress?.Report(new BenchmarkProgress(method.Label, "sanity checks", index, methodCount, sanityCount, sanityCount));
            }
        }
        catch (Exception e) when (e is ArgumentException or ExplanationException or InvalidOperationException or ExternalException)
        {
            state.Error = e.Message;
            _log?.WriteLine($"warning: method '{method.Label}' failed: {e.Message}");
        }

        state.Seconds = previous + clock.Elapsed.TotalSeconds;
        state.Complete = true;
        var meanConservation = state.Explained > 0 ? state.Conservation.ToDouble() / state.Explained : double.NaN;
        if (state.Explained > 0 && traits.LostConservation(meanConservation))
            _log?.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"warning: '{method.Label}' {traits.ConservationText}, but its mean conservation error is {meanConservation:g3} (more than {traits.WarningThreshold:g2}): relevance is absorbed or explodes somewhere; its maps and metrics may mean little."));
        _log?.WriteLine(Summary(MethodResult.FromStates(_options, new[] { state })));
        save();
    }

    /// <summary>What the sanity results depend on besides the fingerprint: sample count and the sanity options.</summary>
    private string SanitySettings(Tensor images)
    {
        var o = _options.Sanity;
        return string.Create(CultureInfo.InvariantCulture,
            $"samples={Math.Min(images.shape[0], _options.SanitySamples)}; groups={o.Groups}; independent={o.Independent}; top={o.TopFraction:R}; seed={o.Seed}");
    }

    private static string Summary(MethodResult r)
    {
        var inv = CultureInfo.InvariantCulture;
        if (r.Error is not null) return $"  {r.Label}: FAILED ({r.Error})";
        var parts = new List<string> { string.Create(inv, $"{r.MillisecondsPerImage:F1} ms/img") };
        if (r.Curves.Count > 0)
            parts.Add(string.Create(inv, $"AUC+ {r.Auc(PerturbationOrder.MostRelevantFirst, "coarse"):F1} AUC- {r.Auc(PerturbationOrder.LeastRelevantFirst, "coarse"):F1}"));
        if (r.Localization is { } l) parts.Add(string.Create(inv, $"mIoU {l.MeanIoU:F3} mAP {l.MeanAveragePrecision:F3}"));
        if (r.Pgd is { } p) parts.Add(string.Create(inv, $"PGD success {p.SuccessRate:P1}"));
        if (r.Sanity?.FullRandomisation is { } sanity) parts.Add(string.Create(inv, $"sanity Spearman {sanity.Similarity.Spearman:F2}"));
        if (r.RootScores is { } s) parts.Add(string.Create(inv, $"f(N) {s.LogitRoot.Average():F3}"));
        parts.Add(string.Create(inv, $"{r.Seconds:F0} s"));
        return $"  {r.Label}: {string.Join(", ", parts)}";
    }

    private void CollectRootChecks(Explainer explainer, Explanation e, string? firstUnit, Tensor x, Tensor y, MethodState state)
    {
        if (firstUnit is not null && e.Tensors.TryGetValue(firstUnit + "/root", out var root) && e.Tensors.TryGetValue(firstUnit + "/signal", out var signal))
        {
            var scores = RootChecks.TargetScores(Forward, x, signal, root, y);
            state.RootUnit = firstUnit;
            for (var i = 0; i < scores.LogitInput.Count; i++)
                state.RootScores.Add(new[] { scores.LogitInput[i], scores.LogitSignal[i], scores.LogitRoot[i], scores.ProbabilityInput[i], scores.ProbabilitySignal[i], scores.ProbabilityRoot[i] });
        }
        // the linear-region check is ReLU's: a transformer's units feed GELU, softmax and residual sums, so it does not apply
        if (explainer.Graph.TokenLayout is not null) return;
        foreach (var unit in explainer.Graph.Units)
        {
            if (!e.Tensors.TryGetValue(unit.Name + "/root", out var n) || !e.Tensors.TryGetValue(unit.Name + "/signal", out var s)) continue;
            using var scope = torch.NewDisposeScope();
            Tensor zx, zn;
            using (torch.no_grad())
            {
                zx = unit.Forward(new[] { s + n });
                zn = unit.Forward(new[] { n });
            }

            var lr = RootChecks.LinearRegion(z => torch.nn.functional.relu(z), zx, zn);
            var k = state.Regions.FindIndex(r => r.Unit == unit.Name);
            var acc = k >= 0 ? state.Regions[k] : new RegionSums(unit.Name, 0, ExactSum.Zero, ExactSum.Zero, 0);
            var msd = acc.MeanSquaredDifference;
            foreach (var v in lr.MeanSquaredDifference) msd += v;
            var same = acc.SameState;
            foreach (var v in lr.SameStateFraction) same += v;
            var updated = new RegionSums(unit.Name, acc.Samples + lr.MeanSquaredDifference.Count, msd, same, acc.Identical + lr.IdenticalPattern.Count(p => p));
            if (k >= 0) state.Regions[k] = updated;
            else state.Regions.Add(updated);
        }
    }

    /// <summary>Progress that reports synchronously on the calling thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SyncProgress<T> : IProgress<T>
    {
        private readonly Action<T> _action;

        public SyncProgress(Action<T> action) => _action = action;

        public void Report(T value) => _action(value);
    }
}
