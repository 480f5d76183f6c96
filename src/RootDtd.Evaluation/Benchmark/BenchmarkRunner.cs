using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using RootDtd.Composites;
using RootDtd.Evaluation.Metrics;
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

    /// <summary>Runs the benchmark.</summary>
    /// <param name="images">Normalised images [N,C,H,W] (CPU).</param>
    /// <param name="masks">Masks [N,H,W] integer (0 background, 255 ignore, other foreground).</param>
    /// <param name="labels">Labels int64 [N].</param>
    /// <returns>The result.</returns>
    public BenchmarkResult Run(Tensor images, Tensor masks, Tensor labels)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(masks);
        ArgumentNullException.ThrowIfNull(labels);
        using (var probe = new EvaluationBatch(images.alias(), labels.alias(), masks.alias())) { }
        var total = Stopwatch.StartNew();
        _model.eval();
        var result = new BenchmarkResult(_options)
        {
            Samples = (int)images.shape[0],
            Height = (int)images.shape[2],
            Width = (int)images.shape[3],
            PgdSamples = (int)Math.Min(images.shape[0], _options.PgdSamples ?? images.shape[0]),
        };
        result.CleanAccuracy = SyntheticTrainer.Accuracy(_model, images, labels);
        _log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{_options.ModelName}] {result.Samples} samples, clean accuracy {result.CleanAccuracy:P1}"));

        var methods = BenchmarkMethods.Resolve(_options.Methods, out var skipped);
        result.Skipped.AddRange(skipped);
        IReadOnlyList<BenchmarkMethod> ablations = Array.Empty<BenchmarkMethod>();
        if (_options.Ablations.Count > 0)
        {
            ablations = BenchmarkMethods.ResolveAblations(_options.Ablations, out var skippedAblations);
            result.Skipped.AddRange(skippedAblations);
        }

        foreach (var s in result.Skipped) _log?.WriteLine($"warning: skipping '{s.Label}' ({s.Spec}): {s.Reason}");

        CollectGallery(result, images, masks, labels);
        var count = methods.Count + ablations.Count + 1;
        RunReferences(result, images, masks, labels, count);
        var index = 1;
        foreach (var m in methods) result.Methods.Add(RunMethod(m, false, images, masks, labels, index++, count));
        if (ablations.Count > 0)
        {
            var n = (int)Math.Min(images.shape[0], _options.AblationSamples ?? images.shape[0]);
            result.AblationSampleCount = n;
            using var ai = images.narrow(0, 0, n);
            using var am = masks.narrow(0, 0, n);
            using var al = labels.narrow(0, 0, n);
            foreach (var m in ablations) result.Ablations.Add(RunMethod(m, true, ai, am, al, index++, count));
        }
        result.Seconds = total.Elapsed.TotalSeconds;
        _log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{_options.ModelName}] done in {result.Seconds:F0} s"));
        return result;
    }

    private PixelPerturbationOptions PerturbationOptions => _options.Perturbation with { Normalization = _options.Normalization, Target = ExplanationTarget.TrueLabel };

    private PgdOptions PgdOptions => _options.Pgd with { Normalization = _options.Normalization };

    private IEnumerable<(Tensor X, Tensor Y, Tensor M, int Start)> Batches(Tensor images, Tensor masks, Tensor labels, int count)
    {
        for (var s = 0; s < count; s += _options.BatchSize)
        {
            var len = Math.Min(_options.BatchSize, count - s);
            yield return (images.narrow(0, s, len), labels.narrow(0, s, len).to(ScalarType.Int64), masks.narrow(0, s, len), s);
        }
    }

    private void CollectGallery(BenchmarkResult result, Tensor images, Tensor masks, Tensor labels)
    {
        var g = (int)Math.Min(_options.GallerySamples, images.shape[0]);
        if (g == 0) return;
        using var scope = torch.NewDisposeScope();
        var x = _options.Normalization.Denormalize(images.narrow(0, 0, g)).clamp(0, 1).to(ScalarType.Float32).cpu();
        var m = masks.narrow(0, 0, g).to(ScalarType.Byte).cpu();
        var y = labels.narrow(0, 0, g).to(ScalarType.Int64).cpu().data<long>().ToArray();
        for (var i = 0; i < g; i++)
            result.Gallery.Add((x[i].contiguous().data<float>().ToArray(), m[i].contiguous().data<byte>().ToArray(), (int)y[i]));
    }

    private void RunReferences(BenchmarkResult result, Tensor images, Tensor masks, Tensor labels, int methodCount)
    {
        var clock = Stopwatch.StartNew();
        var random = new MethodResult(new BenchmarkMethod("random (reference)", "random"), false);
        var empty = new MethodResult(new BenchmarkMethod("empty (reference)", "empty"), false);
        var protocols = _options.Protocols;
        using var pRandom = new PixelPerturbationAccumulator(PerturbationOptions);
        using var pEmpty = new PixelPerturbationAccumulator(PerturbationOptions);
        using var lRandom = new LocalizationAccumulator();
        using var lEmpty = new LocalizationAccumulator();
        foreach (var (x, y, m, start) in Batches(images, masks, labels, result.Samples))
        {
            using var scope = torch.NewDisposeScope();
            var shape = new[] { x.shape[0], x.shape[2], x.shape[3] };
            var rnd = Localization.RandomMaps(_options.RandomSeed + start, shape, x.device);
            var zero = torch.zeros(shape);
            if (protocols.HasFlag(BenchmarkProtocols.Perturbation))
            {
                pRandom.Add(Forward, x, y, rnd);
                pEmpty.Add(Forward, x, y, zero);
            }

            if (protocols.HasFlag(BenchmarkProtocols.Localization))
            {
                lRandom.Add(rnd, m);
                lEmpty.Add(zero, m);
            }

            _progress?.Report(new BenchmarkProgress("references", "perturb+localise", 0, methodCount, start + (int)x.shape[0], result.Samples));
        }

        if (protocols.HasFlag(BenchmarkProtocols.Perturbation))
        {
            random.Curves = pRandom.Result(random.Label);
            empty.Curves = pEmpty.Result(empty.Label);
        }

        if (protocols.HasFlag(BenchmarkProtocols.Localization))
        {
            random.Localization = lRandom.Result(random.Label);
            empty.Localization = lEmpty.Result(empty.Label);
        }

        if (protocols.HasFlag(BenchmarkProtocols.Pgd))
        {
            var calls = 0;
            HeatmapSource source = (x, _) => Localization.RandomMaps(_options.RandomSeed + 1_000_000 + 1000 * calls++, new[] { x.shape[0], x.shape[2], x.shape[3] }, x.device);
            random.Pgd = RelevanceGuidedPgd.Evaluate(Forward, source, PgdBatches(images, masks, labels, result.PgdSamples), PgdOptions, random.Label);
        }

        random.Seconds = empty.Seconds = clock.Elapsed.TotalSeconds;
        result.References.Add(random);
        result.References.Add(empty);
    }

    private IEnumerable<EvaluationBatch> PgdBatches(Tensor images, Tensor masks, Tensor labels, int count)
    {
        foreach (var (x, y, m, _) in Batches(images, masks, labels, count)) yield return new EvaluationBatch(x, y, m);
    }

    private MethodResult RunMethod(BenchmarkMethod method, bool isAblation, Tensor images, Tensor masks, Tensor labels, int index, int methodCount)
    {
        var result = new MethodResult(method, isAblation);
        var clock = Stopwatch.StartNew();
        var protocols = _options.Protocols;
        try
        {
            var composite = method.CreateComposite();
            using var low = SyntheticModels.Bounds(0, _options.Normalization);
            using var high = SyntheticModels.Bounds(1, _options.Normalization);
            var wantRoots = protocols.HasFlag(BenchmarkProtocols.RootChecks);
            // within a batch the explainer reports per graph unit (only during the main loop: PGD re-explains too)
            int batchStart = 0, batchLength = 0, total = (int)images.shape[0];
            var inMainLoop = false;
            var unitProgress = _progress is null ? null : new SyncProgress<ExplanationProgress>(p =>
            {
                if (inMainLoop)
                    _progress.Report(new BenchmarkProgress(method.Label, "explain+perturb+localise", index, methodCount, batchStart + (int)(p.Fraction * batchLength), total));
            });
            using var explainer = new Explainer(_model, composite, new ExplainerOptions { InputLow = low, InputHigh = high, RecordRoots = wantRoots, Progress = unitProgress });
            var firstUnit = explainer.Graph.Units.FirstOrDefault()?.Name;
            using var perturbation = new PixelPerturbationAccumulator(PerturbationOptions);
            using var localization = new LocalizationAccumulator();
            var explainTime = TimeSpan.Zero;
            double conservation = 0;
            var scoreParts = new List<RootScoreResult>();
            var regions = new Dictionary<string, (int N, double Msd, double Same, double Identical)>(StringComparer.Ordinal);
            var regionOrder = new List<string>();
            var gallery = new List<float[]>();
            var explained = protocols.HasFlag(BenchmarkProtocols.Perturbation) || protocols.HasFlag(BenchmarkProtocols.Localization) || wantRoots ? (int)images.shape[0] : 0;
            foreach (var (x, y, m, start) in Batches(images, masks, labels, explained))
            {
                using var scope = torch.NewDisposeScope();
                var targets = y.data<long>().ToArray();
                var t0 = Stopwatch.GetTimestamp();
                (batchStart, batchLength, inMainLoop) = (start, (int)x.shape[0], true);
                using var e = explainer.Explain(x, targets);
                inMainLoop = false;
                var heat = e.Heatmap;
                heat.sum().item<float>(); // make the timing honest on asynchronous devices
                explainTime += Stopwatch.GetElapsedTime(t0);
                var logits = e.Logits.gather(1, y.unsqueeze(1)).squeeze(1).to(ScalarType.Float64).cpu().data<double>().ToArray();
                for (var i = 0; i < logits.Length; i++)
                    conservation += Math.Abs(e.Conservation.InputSum[i] - e.Conservation.StartRelevance[i]) / Math.Max(Math.Abs(e.Conservation.StartRelevance[i]), 1e-12);
                if (protocols.HasFlag(BenchmarkProtocols.Perturbation)) perturbation.Add(Forward, x, y, heat);
                if (protocols.HasFlag(BenchmarkProtocols.Localization)) localization.Add(heat, m);
                if (start == 0 && _options.GallerySamples > 0)
                {
                    var cpu = heat.detach().to(ScalarType.Float32).cpu();
                    for (var i = 0; i < Math.Min(_options.GallerySamples, heat.shape[0]); i++) gallery.Add(cpu[i].contiguous().data<float>().ToArray());
                }

                if (wantRoots) CollectRootChecks(explainer, e, firstUnit, x, y, scoreParts, regions, regionOrder);
                _progress?.Report(new BenchmarkProgress(method.Label, "explain+perturb+localise", index, methodCount, start + (int)x.shape[0], (int)images.shape[0]));
            }

            var n = explained;
            result.MillisecondsPerImage = n > 0 ? explainTime.TotalMilliseconds / n : double.NaN;
            result.ConservationError = n > 0 ? conservation / n : double.NaN;
            var traits = MethodTraits.Of(method.Spec);
            if (n > 0 && traits.LostConservation(result.ConservationError))
                _log?.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"warning: '{method.Label}' {traits.ConservationText}, but its mean conservation error is {result.ConservationError:g3} (more than {traits.WarningThreshold:g2}): relevance is absorbed or explodes somewhere; its maps and metrics may mean little."));
            if (gallery.Count > 0) result.GalleryHeatmaps = gallery.ToArray();
            if (protocols.HasFlag(BenchmarkProtocols.Perturbation) && perturbation.Samples > 0) result.Curves = perturbation.Result(method.Label);
            if (protocols.HasFlag(BenchmarkProtocols.Localization) && localization.Images > 0) result.Localization = localization.Result(method.Label);
            if (scoreParts.Count > 0)
            {
                result.RootUnit = firstUnit;
                result.RootScores = new RootScoreResult(
                    scoreParts.SelectMany(s => s.LogitInput).ToArray(), scoreParts.SelectMany(s => s.LogitSignal).ToArray(), scoreParts.SelectMany(s => s.LogitRoot).ToArray(),
                    scoreParts.SelectMany(s => s.ProbabilityInput).ToArray(), scoreParts.SelectMany(s => s.ProbabilitySignal).ToArray(), scoreParts.SelectMany(s => s.ProbabilityRoot).ToArray());
            }

            result.LinearRegions = regionOrder.Select(u =>
            {
                var r = regions[u];
                return new UnitLinearRegion(u, r.N, r.Msd / r.N, r.Same / r.N, r.Identical / r.N);
            }).ToArray();

            if (protocols.HasFlag(BenchmarkProtocols.Pgd) && !isAblation)
            {
                HeatmapSource source = (x, t) =>
                {
                    using var e = explainer.Explain(x, t.to(ScalarType.Int64).cpu().data<long>().ToArray());
                    return e.Heatmap.detach().clone();
                };
                var pgdCount = (int)Math.Min(images.shape[0], _options.PgdSamples ?? images.shape[0]);
                result.Pgd = RelevanceGuidedPgd.Evaluate(Forward, source, PgdBatches(images, masks, labels, pgdCount), PgdOptions, method.Label,
                    new SyncProgress<EvaluationProgress>(p => _progress?.Report(new BenchmarkProgress(method.Label, "pgd", index, methodCount, p.SamplesDone, pgdCount))));
            }
        }
        catch (Exception e) when (e is ArgumentException or ExplanationException or InvalidOperationException or ExternalException)
        {
            result.Error = e.Message;
            _log?.WriteLine($"warning: method '{method.Label}' failed: {e.Message}");
        }

        result.Seconds = clock.Elapsed.TotalSeconds;
        _log?.WriteLine(Summary(result));
        return result;
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
        if (r.RootScores is { } s) parts.Add(string.Create(inv, $"f(N) {s.LogitRoot.Average():F3}"));
        parts.Add(string.Create(inv, $"{r.Seconds:F0} s"));
        return $"  {r.Label}: {string.Join(", ", parts)}";
    }

    private void CollectRootChecks(Explainer explainer, Explanation e, string? firstUnit, Tensor x, Tensor y,
        List<RootScoreResult> scores, Dictionary<string, (int N, double Msd, double Same, double Identical)> regions, List<string> order)
    {
        if (firstUnit is not null && e.Tensors.TryGetValue(firstUnit + "/root", out var root) && e.Tensors.TryGetValue(firstUnit + "/signal", out var signal))
            scores.Add(RootChecks.TargetScores(Forward, x, signal, root, y));
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
            if (!regions.TryGetValue(unit.Name, out var acc))
            {
                acc = (0, 0, 0, 0);
                order.Add(unit.Name);
            }

            regions[unit.Name] = (acc.N + lr.MeanSquaredDifference.Count, acc.Msd + lr.MeanSquaredDifference.Sum(), acc.Same + lr.SameStateFraction.Sum(),
                acc.Identical + lr.IdenticalPattern.Count(p => p));
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
