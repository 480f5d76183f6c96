using RootDtd.Evaluation.Results;
using TorchSharp;
using static TorchSharp.torch;

using RootDtd.Evaluation.Sharding;

namespace RootDtd.Evaluation.Metrics;

/// <summary>Options of <see cref="Localization"/>.</summary>
public sealed record LocalizationOptions
{
    /// <summary>Class explained. Default the true label; Chefer's segmentation test explains the prediction.</summary>
    public ExplanationTarget Target { get; init; } = ExplanationTarget.TrueLabel;

    /// <summary>Also evaluate the random-map and empty-map reference rows. Default <see langword="true"/>.</summary>
    public bool IncludeReferenceRows { get; init; } = true;

    /// <summary>Seed of the random reference map (sample i of the run uses seed + i). Default 0.</summary>
    public int RandomSeed { get; init; }

    /// <summary>Mask value of ignored pixels. Default 255.</summary>
    public int IgnoreValue { get; init; } = 255;

    /// <summary>Device the batches are moved to, or <see langword="null"/> to keep them where they are.</summary>
    public Device? Device { get; init; }
}

/// <summary>Localisation scores of one method (see docs/evaluation.md for the exact definitions).</summary>
/// <param name="Method">Method name.</param>
/// <param name="Images">Number of images.</param>
/// <param name="PixelAccuracy">Dataset-accumulated pixel accuracy of the binarised map (Chefer).</param>
/// <param name="ForegroundIoU">Dataset-accumulated foreground IoU.</param>
/// <param name="BackgroundIoU">Dataset-accumulated background IoU.</param>
/// <param name="MeanIoU">(ForegroundIoU + BackgroundIoU) / 2 (Chefer's mIoU).</param>
/// <param name="PerImagePixelAccuracy">Mean over images of the per-image pixel accuracy.</param>
/// <param name="PerImageForegroundIoU">Mean over images of the per-image foreground IoU (images with an empty union skipped).</param>
/// <param name="PerImageBackgroundIoU">Mean over images of the per-image background IoU (images with an empty union skipped).</param>
/// <param name="PerImageMeanIoU">Mean over images of the per-image mIoU (images where either IoU is undefined skipped).</param>
/// <param name="MeanAveragePrecision">Mean over images of the average precision of the continuous map vs the mask.</param>
/// <param name="RelevanceMass">Mean over images of Σ positive relevance inside the mask / Σ positive relevance.</param>
/// <param name="PointingGame">Fraction of images whose arg-max pixel lies inside the mask.</param>
/// <param name="PaperPixelAccuracy">The ACM MM'24 code's "PA": per-image foreground recall, averaged.</param>
/// <param name="PaperIoU">The ACM MM'24 code's "IoU": per-image 2·I/U, averaged.</param>
public sealed record LocalizationResult(
    string Method, int Images, double PixelAccuracy, double ForegroundIoU, double BackgroundIoU, double MeanIoU,
    double PerImagePixelAccuracy, double PerImageForegroundIoU, double PerImageBackgroundIoU, double PerImageMeanIoU,
    double MeanAveragePrecision, double RelevanceMass, double PointingGame, double PaperPixelAccuracy, double PaperIoU)
{
    /// <summary>Column names used by <see cref="ToValues"/> and <see cref="LocalizationReport.ToTable"/>.</summary>
    public static IReadOnlyList<string> Columns { get; } = new[]
    {
        "pixAcc", "IoU fg", "IoU bg", "mIoU", "pixAcc (img)", "mIoU (img)", "mAP", "mass", "pointing", "paper PA", "paper IoU",
    };

    /// <summary>The metric values keyed by <see cref="Columns"/>.</summary>
    /// <returns>Name → value.</returns>
    public IReadOnlyDictionary<string, double> ToValues() => new Dictionary<string, double>
    {
        ["pixAcc"] = PixelAccuracy, ["IoU fg"] = ForegroundIoU, ["IoU bg"] = BackgroundIoU, ["mIoU"] = MeanIoU,
        ["pixAcc (img)"] = PerImagePixelAccuracy, ["mIoU (img)"] = PerImageMeanIoU, ["mAP"] = MeanAveragePrecision,
        ["mass"] = RelevanceMass, ["pointing"] = PointingGame, ["paper PA"] = PaperPixelAccuracy, ["paper IoU"] = PaperIoU,
    };
}

/// <summary>Localisation results of a method plus the two reference rows.</summary>
/// <param name="Method">The evaluated method.</param>
/// <param name="Random">Seeded uniform-noise map, or <see langword="null"/> if not requested.</param>
/// <param name="Empty">All-zero map (empty foreground), or <see langword="null"/> if not requested.</param>
public sealed record LocalizationReport(LocalizationResult Method, LocalizationResult? Random, LocalizationResult? Empty)
{
    /// <summary>Method × metric table (method row first, then the reference rows).</summary>
    /// <returns>The table.</returns>
    public ResultTable ToTable()
    {
        var t = new ResultTable("Localisation against masks", LocalizationResult.Columns);
        foreach (var r in new[] { Method, Random, Empty }.Where(r => r is not null)) t.AddRow(r!.Method, r.ToValues());
        return t;
    }
}

/// <summary>The sums of a <see cref="LocalizationAccumulator"/>: dataset counts (intersections, unions, pixels) and per-image metric sums with their counts.</summary>
/// <param name="Images">Images accumulated.</param>
/// <param name="Sums">The statistics vector, exactly summed.</param>
/// <param name="PerImage">
/// The per-image records in sample order, row-major (<see cref="LocalizationAccumulator.PerImageColumns"/> values per
/// image; undefined values NaN), or <see langword="null"/> when they are not available (a state written before they were kept).
/// </param>
public sealed record LocalizationState(int Images, IReadOnlyList<ExactSum> Sums, IReadOnlyList<double>? PerImage = null);

/// <summary>
/// Accumulates localisation statistics over batches: each batch's statistics come to the host once and are added
/// exactly (<see cref="ExactSum"/>), so shards and resumed runs <see cref="Merge"/> to the numbers of one run.
/// </summary>
public sealed class LocalizationAccumulator : IDisposable
{
    // Slots of the statistics vector.
    private const int Correct = 0, Valid = 1, FgI = 2, FgU = 3, BgI = 4, BgU = 5;
    private const int PerImage = 6; // then (sum, count) pairs:
    private const int PaI = 0, FgIoUI = 1, BgIoUI = 2, MIoUI = 3, Ap = 4, Mass = 5, Point = 6, PaperPa = 7, PaperIoU = 8, PerImageCount = 9;
    private const int Slots = PerImage + 2 * PerImageCount;
    private readonly int _ignore;
    private ExactSum[]? _stats;
    private int _images;
    private List<double>? _perImage = new();

    /// <summary>
    /// The per-image record of <see cref="PerImageValues"/>: the pixel counts the dataset-accumulated metrics sum
    /// (correct = valid pixels where the binarised map equals the mask, valid = non-ignored pixels, fg/bg intersection
    /// and union, foreground = mask pixels) and the per-image values of the metrics that are means over images
    /// (average precision, relevance mass, pointing hit 0/1; NaN where the image leaves it undefined and the mean skips it).
    /// Every metric of <see cref="LocalizationResult"/> is a function of the column sums of these records
    /// (<see cref="PerImageMetrics"/>), so a resample of images recomputes it by the report's own definition.
    /// </summary>
    public static IReadOnlyList<string> PerImageColumns { get; } = new[]
    {
        "correct", "valid", "fg_intersection", "fg_union", "bg_intersection", "bg_union", "foreground", "ap", "mass", "pointing",
    };

    /// <summary>Creates an accumulator.</summary>
    /// <param name="ignoreValue">Mask value of ignored pixels.</param>
    public LocalizationAccumulator(int ignoreValue = 255) => _ignore = ignoreValue;

    /// <summary>Images accumulated so far.</summary>
    public int Images => _images;

    /// <summary>Adds a batch.</summary>
    /// <param name="heatmaps">Relevance [B,H,W], finite.</param>
    /// <param name="masks">Masks [B,H,W] integer: 0 background, ignore value excluded, others foreground.</param>
    public void Add(Tensor heatmaps, Tensor masks)
    {
        ArgumentNullException.ThrowIfNull(masks);
        if (masks.dim() != 3) throw new ArgumentException($"Expected masks [B,H,W], got [{string.Join(",", masks.shape)}].", nameof(masks));
        if (masks.is_floating_point()) throw new ArgumentException($"Expected integer masks, got {masks.dtype}.", nameof(masks));
        Check.Heatmap(heatmaps, masks.shape[0], masks.shape[1], masks.shape[2], nameof(heatmaps));
        using var scope = torch.NewDisposeScope();
        // one transfer per batch: the batch's statistics are added exactly on the host, its per-image records appended
        var (sums, perImage) = Statistics(heatmaps.detach().to(ScalarType.Float64), masks.to(heatmaps.device), _ignore);
        var all = torch.cat(new[] { sums, perImage.reshape(-1) }).cpu().data<double>().ToArray();
        _stats = ExactSum.Add(_stats ?? new ExactSum[Slots], all[..Slots]);
        _perImage?.AddRange(all[Slots..]);
        _images += (int)masks.shape[0];
    }

    /// <summary>The accumulated sums (for sharded and resumed evaluations: <see cref="Merge"/> adds them exactly).</summary>
    public LocalizationState State => new(_images, _stats ?? new ExactSum[Slots], _perImage?.ToArray());

    /// <summary>
    /// The per-image records (<see cref="PerImageColumns"/>) of every image in the order accumulated, or
    /// <see langword="null"/> when a merged state had none.
    /// </summary>
    public PerImageValues? PerImageValues => _perImage is null || _images == 0 ? null : PerImageValues.FromRows(PerImageColumns, _images, _perImage);

    /// <summary>Adds the sums of another accumulator (another shard, an earlier part of a resumed run).</summary>
    /// <param name="state">Its <see cref="State"/>.</param>
    public void Merge(LocalizationState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.Sums.Count != Slots) throw new ArgumentException($"A localisation state has {Slots} sums, got {state.Sums.Count}.", nameof(state));
        if (state.Images == 0) return;
        if (state.PerImage is { } p && p.Count != state.Images * PerImageColumns.Count)
            throw new ArgumentException($"A localisation state of {state.Images} images has {p.Count} per-image values; expected {state.Images * PerImageColumns.Count}.", nameof(state));
        _stats = ExactSum.Add(_stats ?? new ExactSum[Slots], state.Sums.ToArray());
        _images += state.Images;
        // a state without per-image records (an older file) leaves the whole accumulator without them
        if (state.PerImage is null) _perImage = null;
        else _perImage?.AddRange(state.PerImage);
    }

    /// <summary>The aggregated result (one transfer to the host).</summary>
    /// <param name="method">Method name.</param>
    /// <returns>The result.</returns>
    public LocalizationResult Result(string method)
    {
        if (_stats is null) throw new InvalidOperationException("No images were accumulated.");
        var v = _stats.Select(x => x.ToDouble()).ToArray();
        double Mean(int m) => v[PerImage + 2 * m + 1] > 0 ? v[PerImage + 2 * m] / v[PerImage + 2 * m + 1] : double.NaN;
        double Div(double a, double b) => b > 0 ? a / b : double.NaN;
        double fg = Div(v[FgI], v[FgU]), bg = Div(v[BgI], v[BgU]);
        return new LocalizationResult(
            method, _images, Div(v[Correct], v[Valid]), fg, bg, (fg + bg) / 2,
            Mean(PaI), Mean(FgIoUI), Mean(BgIoUI), Mean(MIoUI), Mean(Ap), Mean(Mass), Mean(Point), Mean(PaperPa), Mean(PaperIoU));
    }

    /// <inheritdoc />
    public void Dispose()
    {
    }

    /// <summary>Per-batch statistics vector and per-image records [B, <see cref="PerImageColumns"/>] (float64, on the heatmap's device).</summary>
    private static (Tensor Sums, Tensor PerImage) Statistics(Tensor heat, Tensor masks, int ignore)
    {
        long b = heat.shape[0];
        var h = heat.reshape(b, -1);
        var m = masks.reshape(b, -1);
        var valid = m.ne(ignore);
        var gt = valid.logical_and(m.ne(0));
        var validF = valid.to(ScalarType.Float64);
        var gtF = gt.to(ScalarType.Float64);

        // Min-max normalisation; a constant map becomes all zeros (so its foreground is empty).
        var min = h.amin(new long[] { 1 }, keepdim: true);
        var max = h.amax(new long[] { 1 }, keepdim: true);
        var range = max - min;
        var norm = torch.where(range > 0, (h - min) / torch.where(range > 0, range, torch.ones_like(range)), torch.zeros_like(h));
        var pred = norm > norm.mean(new long[] { 1 }, keepdim: true);
        var notPred = pred.logical_not();
        var notGt = gt.logical_not();

        Tensor Count(Tensor boolean) => boolean.to(ScalarType.Float64).sum(1);
        var correct = Count(pred.eq(gt).logical_and(valid));
        var nValid = Count(valid);
        var fgI = Count(pred.logical_and(gt));
        var fgU = Count(pred.logical_or(gt).logical_and(valid));
        var bgI = Count(notPred.logical_and(notGt).logical_and(valid));
        var bgU = Count(notPred.logical_or(notGt).logical_and(valid));
        var nGt = gtF.sum(1);

        var stats = new List<Tensor> { correct.sum(), nValid.sum(), fgI.sum(), fgU.sum(), bgI.sum(), bgU.sum() };
        var records = new List<Tensor> { correct, nValid, fgI, fgU, bgI, bgU, nGt };
        Tensor PerImageMetric(Tensor value, Tensor defined)
        {
            stats.Add(torch.where(defined, value, torch.zeros_like(value)).sum());
            stats.Add(defined.to(ScalarType.Float64).sum());
            return torch.where(defined, value, torch.full_like(value, double.NaN));
        }

        Tensor SafeDiv(Tensor a, Tensor d) => a / torch.where(d > 0, d, torch.ones_like(d));
        var fgIoU = SafeDiv(fgI, fgU);
        var bgIoU = SafeDiv(bgI, bgU);
        PerImageMetric(SafeDiv(correct, nValid), nValid > 0);
        PerImageMetric(fgIoU, fgU > 0);
        PerImageMetric(bgIoU, bgU > 0);
        PerImageMetric((fgIoU + bgIoU) / 2, (fgU > 0).logical_and(bgU > 0));
        records.Add(PerImageMetric(AveragePrecision(norm, gtF, validF, nGt), nGt > 0));

        var pos = h.clamp_min(0);
        var inMask = (pos * gtF).sum(1);
        var total = (pos * validF).sum(1);
        records.Add(PerImageMetric(SafeDiv(inMask, total), total > 0));

        var masked = torch.where(valid, h, torch.full_like(h, double.NegativeInfinity));
        var arg = masked.argmax(1, keepdim: true);
        records.Add(PerImageMetric(gtF.gather(1, arg).squeeze(1), nGt > 0));

        PerImageMetric(SafeDiv(fgI, nGt), nGt > 0);
        PerImageMetric(SafeDiv(2 * fgI, fgU), fgU > 0);
        var result = torch.stack(stats);
        System.Diagnostics.Debug.Assert(result.shape[0] == Slots, "statistics layout");
        System.Diagnostics.Debug.Assert(records.Count == PerImageColumns.Count, "per-image layout");
        return (result, torch.stack(records, 1));
    }

    /// <summary>
    /// Average precision per row (scikit-learn's definition, tied scores grouped): Σ over thresholds of
    /// precision · Δrecall, computed on the device with a stable sort. Invalid pixels are ranked last and never counted.
    /// </summary>
    internal static Tensor AveragePrecision(Tensor scores01, Tensor gtF, Tensor validF, Tensor nGt)
    {
        var s = torch.where(validF > 0, scores01, torch.full_like(scores01, -1.0));
        var (sorted, order) = s.sort(dim: 1, descending: true, stable: true);
        var g = gtF.gather(1, order);
        var v = validF.gather(1, order);
        var tp = g.cumsum(1);
        var fp = (v - g).cumsum(1);
        long n = s.shape[1];
        var isEnd = torch.cat(new[] { sorted.narrow(1, 1, n - 1).ne(sorted.narrow(1, 0, n - 1)), torch.ones(s.shape[0], 1, dtype: ScalarType.Bool, device: s.device) }, 1);
        var precision = tp / (tp + fp).clamp_min(1);
        var tpEnd = torch.where(isEnd, tp, torch.zeros_like(tp));
        var (runningMax, _) = tpEnd.cummax(1);
        var prevEnd = torch.cat(new[] { torch.zeros(s.shape[0], 1, dtype: tp.dtype, device: s.device), runningMax.narrow(1, 0, n - 1) }, 1);
        var dTp = torch.where(isEnd, tp - prevEnd, torch.zeros_like(tp));
        return (precision * dTp).sum(1) / torch.where(nGt > 0, nGt, torch.ones_like(nGt));
    }
}

/// <summary>
/// Localisation of heatmaps against object masks: Chefer's binarised-map pixel accuracy / IoU / mIoU (micro over the
/// dataset and per-image), mAP of the continuous map, relevance mass, pointing game and the ACM MM'24 code's variants,
/// with random-map and empty-map reference rows.
/// </summary>
public static class Localization
{
    /// <summary>Scores one set of heatmaps (single batch or whole dataset) without reference rows.</summary>
    /// <param name="heatmaps">Relevance [B,H,W].</param>
    /// <param name="masks">Masks [B,H,W].</param>
    /// <param name="method">Method name.</param>
    /// <param name="ignoreValue">Mask value of ignored pixels.</param>
    /// <returns>The result.</returns>
    public static LocalizationResult Score(Tensor heatmaps, Tensor masks, string method = "method", int ignoreValue = 255)
    {
        using var acc = new LocalizationAccumulator(ignoreValue);
        acc.Add(heatmaps, masks);
        return acc.Result(method);
    }

    /// <summary>Runs the test over a dataset (batches must carry masks).</summary>
    /// <param name="explain">Heatmap source.</param>
    /// <param name="data">Batches with masks (each is disposed after use).</param>
    /// <param name="options">Options.</param>
    /// <param name="model">Model; required only for <see cref="ExplanationTarget.Predicted"/>.</param>
    /// <param name="method">Method name.</param>
    /// <param name="progress">Optional progress, reported after every batch.</param>
    /// <param name="cancellationToken">Checked before every batch; a cancelled call throws <see cref="OperationCanceledException"/> and returns nothing partial.</param>
    /// <returns>The method's result and the reference rows.</returns>
    public static LocalizationReport Evaluate(
        HeatmapSource explain, IEnumerable<EvaluationBatch> data, LocalizationOptions? options = null, Func<Tensor, Tensor>? model = null,
        string method = "method", IProgress<EvaluationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(explain);
        ArgumentNullException.ThrowIfNull(data);
        options ??= new LocalizationOptions();
        if (options.Target == ExplanationTarget.Predicted && model is null)
            throw new ArgumentNullException(nameof(model), "A model is required when Target = Predicted.");
        using var main = new LocalizationAccumulator(options.IgnoreValue);
        using var random = new LocalizationAccumulator(options.IgnoreValue);
        using var empty = new LocalizationAccumulator(options.IgnoreValue);
        foreach (var batch in data)
        {
            using (batch)
            using (var scope = torch.NewDisposeScope())
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (batch.Masks is null) throw new ArgumentException("Every batch needs masks for the localisation test.", nameof(data));
                var x = options.Device is null ? batch.Images : batch.Images.to(options.Device);
                var y = batch.Labels.to(ScalarType.Int64, x.device);
                var masks = batch.Masks.to(x.device);
                var targets = Ops.Targets(options.Target, model, x, y);
                var heat = Ops.Heatmap(explain, x, targets);
                if (options.IncludeReferenceRows)
                {
                    random.Add(RandomMaps(options.RandomSeed + main.Images, heat.shape, heat.device), masks);
                    empty.Add(torch.zeros_like(heat), masks);
                }

                main.Add(heat, masks);
            }

            progress?.Report(new EvaluationProgress("localisation", main.Images, null));
        }

        return new LocalizationReport(
            main.Result(method),
            options.IncludeReferenceRows ? random.Result("random (reference)") : null,
            options.IncludeReferenceRows ? empty.Result("empty (reference)") : null);
    }

    /// <summary>
    /// Uniform [0,1) noise maps; sample j of the batch uses a CPU generator seeded with <paramref name="firstSeed"/> + j,
    /// so the maps do not depend on the batch size or the device.
    /// </summary>
    /// <param name="firstSeed">Seed of the first sample.</param>
    /// <param name="shape">[B,H,W].</param>
    /// <param name="device">Device of the result.</param>
    /// <returns>Noise maps [B,H,W] float32.</returns>
    public static Tensor RandomMaps(long firstSeed, long[] shape, Device device)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (shape.Length != 3) throw new ArgumentException($"Expected [B,H,W], got [{string.Join(",", shape)}].", nameof(shape));
        using var scope = torch.NewDisposeScope();
        var maps = new Tensor[shape[0]];
        for (int j = 0; j < shape[0]; j++)
        {
            using var gen = new torch.Generator((ulong)(firstSeed + j), torch.CPU);
            maps[j] = torch.rand(new[] { shape[1], shape[2] }, generator: gen);
        }

        return torch.stack(maps).to(device).MoveToOuterDisposeScope();
    }
}
