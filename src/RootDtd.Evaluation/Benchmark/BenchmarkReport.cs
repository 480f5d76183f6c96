using System.Globalization;
using System.Text;
using RootDtd.Composites;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Results;
using RootDtd.Imaging;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Benchmark;

/// <summary>Files written by <see cref="BenchmarkReport.Write"/>.</summary>
/// <param name="Markdown">The Markdown report.</param>
/// <param name="Images">PNG files (perturbation curves, gallery).</param>
/// <param name="Json">Machine-readable tables and curves.</param>
public sealed record BenchmarkFiles(string Markdown, IReadOnlyList<string> Images, string Json);

/// <summary>
/// Renders a <see cref="BenchmarkResult"/> as Markdown tables in the shape of the paper's Tables 1 (perturbation),
/// 2 (localisation) and 6 (linear region), plus PGD, root-rule ablations and f(N), with the random-map and empty-map
/// reference rows; and draws the perturbation curves and a heatmap gallery as PNG.
/// </summary>
public static class BenchmarkReport
{
    /// <summary>Column names of the perturbation table.</summary>
    public static IReadOnlyList<string> PerturbationColumns { get; } = new[] { "AUC+ coarse ↓", "AUC− coarse ↑", "AUC+ fine ↓", "AUC− fine ↑" };

    /// <summary>Column names of the ablation table.</summary>
    public static IReadOnlyList<string> AblationColumns { get; } = new[] { "AUC+ coarse ↓", "AUC− coarse ↑", "mIoU", "IoU fg", "pixAcc", "mAP", "mass", "pointing", "f(N)", "ms/img" };

    /// <summary>Column names of the linear-region table.</summary>
    public static IReadOnlyList<string> LinearRegionColumns { get; } = new[] { "samples", "MSD of f′ (x vs N)", "same on/off state", "identical pattern" };

    /// <summary>Column names of the cost table.</summary>
    public static IReadOnlyList<string> CostColumns { get; } = new[] { "ms/img", "conservation error", "seconds" };

    /// <summary>Table 1: perturbation AUCs (coarse and fine schedules) per method plus reference rows.</summary>
    /// <param name="result">Result.</param>
    /// <returns>The table.</returns>
    public static ResultTable PerturbationTable(BenchmarkResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var t = new ResultTable("Table 1 — pixel perturbation: AUC ×100 of accuracy vs fraction of pixels removed (AUC+: most relevant first, lower is better; AUC−: least relevant first, higher is better; coarse: 0–90 %, fine: 0–10 %)", PerturbationColumns);
        foreach (var r in result.Methods.Concat(result.References))
        {
            if (r.Curves.Count == 0 && r.Error is null) continue;
            t.AddRow(RowLabel(r), Shown(r, new Dictionary<string, double>
            {
                [PerturbationColumns[0]] = r.Auc(PerturbationOrder.MostRelevantFirst, PerturbationSchedule.Coarse.Name),
                [PerturbationColumns[1]] = r.Auc(PerturbationOrder.LeastRelevantFirst, PerturbationSchedule.Coarse.Name),
                [PerturbationColumns[2]] = r.Auc(PerturbationOrder.MostRelevantFirst, PerturbationSchedule.Fine.Name),
                [PerturbationColumns[3]] = r.Auc(PerturbationOrder.LeastRelevantFirst, PerturbationSchedule.Fine.Name),
            }));
        }

        return t;
    }

    /// <summary>Table 2: localisation against the exact masks plus reference rows.</summary>
    /// <param name="result">Result.</param>
    /// <returns>The table.</returns>
    public static ResultTable LocalizationTable(BenchmarkResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var t = new ResultTable("Table 2 — localisation against the exact object masks (higher is better; dataset-accumulated unless marked (img); \"paper PA\"/\"paper IoU\" are the ACM MM'24 code's variants)", LocalizationResult.Columns);
        return AddMethodRows(t, result, r => r.Localization?.ToValues());
    }

    /// <summary>Relevance-guided PGD per method plus the random reference.</summary>
    /// <param name="result">Result.</param>
    /// <returns>The table.</returns>
    public static ResultTable PgdTable(BenchmarkResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var pgd = result.Options.Pgd;
        var t = new ResultTable(string.Create(CultureInfo.InvariantCulture,
            $"Relevance-guided PGD on the first {result.PgdSamples} samples (ε = {pgd.Epsilon * 255:0.#}/255, step ε/4, ≤ {pgd.MaxIterations} iterations, k = {pgd.ResolveTopK(result.Height, result.Width)} most relevant pixels re-chosen every iteration; a higher success rate / fewer iterations mean the map found more decision-relevant pixels)"),
            PgdResult.Columns);
        return AddMethodRows(t, result, r => r.Pgd?.ToValues());
    }

    /// <summary>Ablations of the root rule.</summary>
    /// <param name="result">Result.</param>
    /// <returns>The table.</returns>
    public static ResultTable AblationTable(BenchmarkResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var t = new ResultTable(string.Create(CultureInfo.InvariantCulture, $"Ablations of the root rule on the first {result.AblationSampleCount} samples (one parameter changed from the default `root`{(result.Ablations.Any(a => a.Method.Spec.StartsWith(BenchmarkMethods.CheferRootMethod, StringComparison.Ordinal)) ? " or `chefer-root`" : "")}; compare with the method's `(default)` row, not with the tables above when the sample counts differ)"), AblationColumns);
        foreach (var r in result.Ablations)
        {
            var v = new Dictionary<string, double>
            {
                [AblationColumns[0]] = r.Auc(PerturbationOrder.MostRelevantFirst, PerturbationSchedule.Coarse.Name),
                [AblationColumns[1]] = r.Auc(PerturbationOrder.LeastRelevantFirst, PerturbationSchedule.Coarse.Name),
                [AblationColumns[9]] = r.MillisecondsPerImage,
            };
            if (r.Localization is { } l)
            {
                v[AblationColumns[2]] = l.MeanIoU;
                v[AblationColumns[3]] = l.ForegroundIoU;
                v[AblationColumns[4]] = l.PixelAccuracy;
                v[AblationColumns[5]] = l.MeanAveragePrecision;
                v[AblationColumns[6]] = l.RelevanceMass;
                v[AblationColumns[7]] = l.PointingGame;
            }

            if (r.RootScores is { } s) v[AblationColumns[8]] = s.LogitRoot.Average();
            t.AddRow(RowLabel(r) + (r.Method.Spec is BenchmarkMethods.RootMethod or BenchmarkMethods.CheferRootMethod ? "" : $" (`{r.Method.Spec}`)"), Shown(r, v));
        }

        return t;
    }

    /// <summary>f(N) ≈ 0: target logit and probability at the input x, the signal S and the root N of the input layer.</summary>
    /// <param name="result">Result.</param>
    /// <returns>The table.</returns>
    public static ResultTable RootScoreTable(BenchmarkResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var t = new ResultTable("f(N) ≈ 0 — mean target logit f and probability p at the input x, the signal S and the root N = x − S of the input layer", RootScoreResult.Columns);
        foreach (var r in result.Methods.Concat(result.Ablations))
            if (r.RootScores is { } s) t.AddRow(RowLabel(r) + (r.IsAblation ? " [ablation]" : ""), Shown(r, s.ToValues()));
        return t;
    }

    /// <summary>Table 6: linear region — ReLU derivative of every root-inference unit's output at x vs at its root N.</summary>
    /// <param name="result">Result.</param>
    /// <returns>The table.</returns>
    public static ResultTable LinearRegionTable(BenchmarkResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var t = new ResultTable("Table 6 — linear region: per unit, the derivative of ReLU(z) at the unit's pre-activation z for input x vs root N (MSD: mean squared difference, lower is better; same on/off state and identical pattern: higher is better)", LinearRegionColumns);
        foreach (var r in result.Methods.Where(m => m.LinearRegions.Count > 0 && m.Error is null))
        {
            foreach (var u in r.LinearRegions)
                t.AddRow($"{r.Label} / {u.Unit}", new Dictionary<string, double>
                {
                    [LinearRegionColumns[0]] = u.Samples, [LinearRegionColumns[1]] = u.MeanSquaredDifference,
                    [LinearRegionColumns[2]] = u.SameStateFraction, [LinearRegionColumns[3]] = u.IdenticalPatternRate,
                });
            t.AddRow($"{r.Label} / mean over units", new Dictionary<string, double>
            {
                [LinearRegionColumns[0]] = r.LinearRegions[0].Samples,
                [LinearRegionColumns[1]] = r.LinearRegions.Average(u => u.MeanSquaredDifference),
                [LinearRegionColumns[2]] = r.LinearRegions.Average(u => u.SameStateFraction),
                [LinearRegionColumns[3]] = r.LinearRegions.Average(u => u.IdenticalPatternRate),
            });
        }

        return t;
    }

    /// <summary>Columns of <see cref="SanityTable"/>.</summary>
    public static IReadOnlyList<string> SanityColumns { get; } = new[]
    {
        "Spearman, all layers ↓", "SSIM, all layers ↓", "top-k ∩, all layers ↓", "Spearman, top group only ↓", "lowest Spearman, one group", "Spearman, labels randomised ↓", "SSIM, labels randomised ↓",
    };

    /// <summary>
    /// Sanity checks per method: similarity of the maps to the trained model's after every layer is re-drawn (cascading
    /// to the bottom), after only the top group is re-drawn, the lowest similarity over the independent single-group
    /// randomisations, and (when run) with a model trained on permuted labels. Low = the map depends on the weights.
    /// </summary>
    /// <param name="result">Result.</param>
    /// <returns>The table.</returns>
    public static ResultTable SanityTable(BenchmarkResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var o = result.Options;
        var t = new ResultTable(string.Create(CultureInfo.InvariantCulture,
            $"Sanity checks (Adebayo et al. 2018) on {Math.Min(result.Samples, o.SanitySamples)} samples: similarity of |map| to the trained model's (Spearman, SSIM, top-{o.Sanity.TopFraction:P0} intersection); {o.Sanity.Groups} groups of units, top-down"), SanityColumns);
        foreach (var r in result.Methods)
        {
            if (r.Sanity is not { } s)
            {
                if (r.Error is not null) t.AddRow(RowLabel(r), new Dictionary<string, double>());
                continue;
            }
            var values = new Dictionary<string, double>();
            if (s.FullRandomisation is { } full)
            {
                values[SanityColumns[0]] = full.Similarity.Spearman;
                values[SanityColumns[1]] = full.Similarity.Ssim;
                values[SanityColumns[2]] = full.Similarity.TopK;
            }
            if (s.Steps.FirstOrDefault(x => x.Mode == RandomisationMode.Cascading) is { } top) values[SanityColumns[3]] = top.Similarity.Spearman;
            var independent = s.Steps.Where(x => x.Mode == RandomisationMode.Independent).ToList();
            if (independent.Count > 0) values[SanityColumns[4]] = independent.Min(x => x.Similarity.Spearman);
            if (s.LabelRandomisation is { } labels)
            {
                values[SanityColumns[5]] = labels.Similarity.Spearman;
                values[SanityColumns[6]] = labels.Similarity.Ssim;
            }
            t.AddRow(RowLabel(r) + (s.IsInsensitive(o.Sanity.InsensitiveSpearman) ? " ⚑" : ""), Shown(r, values));
        }
        return t;
    }

    /// <summary>Per method, the cascading randomisation curves (Spearman, SSIM, top-k vs groups re-drawn), one panel each.</summary>
    /// <param name="result">Result.</param>
    /// <param name="panelWidth">Panel width.</param>
    /// <param name="panelHeight">Panel height.</param>
    /// <returns>The image, or <see langword="null"/> without sanity results.</returns>
    public static Image<Rgb24>? RenderSanityPlot(BenchmarkResult result, int panelWidth = 300, int panelHeight = 220)
    {
        ArgumentNullException.ThrowIfNull(result);
        var rows = result.Methods.Where(m => m.Sanity is not null && m.Sanity.Steps.Any(s => s.Mode == RandomisationMode.Cascading)).ToList();
        if (rows.Count == 0) return null;
        const int columns = 4;
        var panels = new List<Image<Rgb24>>();
        try
        {
            foreach (var r in rows)
            {
                var steps = r.Sanity!.Steps.Where(s => s.Mode == RandomisationMode.Cascading).ToList();
                var x = steps.Select(s => (double)(s.Step + 1)).Prepend(0).ToArray();
                PlotSeries Series(string name, Func<MapSimilarity, double> pick) => new(name, x, steps.Select(s => pick(s.Similarity)).Prepend(1).ToArray());
                panels.Add(LinePlot.Render(new[] { Series("Spearman", m => m.Spearman), Series("SSIM", m => m.Ssim), Series("top-k", m => m.TopK) },
                    LinePlot.Ascii(r.Label), "groups re-drawn (top-down)", "similarity", panelWidth, panelHeight, (-0.2, 1)));
            }
            var rowsCount = (panels.Count + columns - 1) / columns;
            var image = new Image<Rgb24>(panelWidth * Math.Min(columns, panels.Count), panelHeight * rowsCount, new Rgb24(255, 255, 255));
            for (var i = 0; i < panels.Count; i++)
            {
                var p = panels[i];
                var at = new Point(i % columns * panelWidth, i / columns * panelHeight);
                image.Mutate(c => c.DrawImage(p, at, 1f));
            }
            return image;
        }
        finally
        {
            foreach (var p in panels) p.Dispose();
        }
    }

    /// <summary>Explanation cost and conservation per method.</summary>
    /// <param name="result">Result.</param>
    /// <returns>The table.</returns>
    public static ResultTable CostTable(BenchmarkResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var t = new ResultTable("Cost and conservation (ms/img: explanation only; conservation error: mean |Σ input relevance − start relevance| / |start relevance|, "
            + "only for methods expected to conserve — – for gradient methods and root-published, which are not conservative by construction; seconds: all protocols)", CostColumns);
        foreach (var r in result.Methods.Concat(result.Ablations))
        {
            var expected = MethodTraits.Of(r.Method.Spec).Conservation != ConservationExpectation.NotExpected;
            t.AddRow(RowLabel(r) + (r.IsAblation ? " [ablation]" : ""), Shown(r, new Dictionary<string, double>
            {
                [CostColumns[0]] = r.MillisecondsPerImage, [CostColumns[1]] = expected ? r.ConservationError : double.NaN, [CostColumns[2]] = r.Seconds,
            }));
        }
        return t;
    }

    /// <summary>
    /// How a report describes a normalisation: the mean image and channel order when it has one, else the per-channel
    /// mean and std. Kept in the state file (<see cref="Sharding.BenchmarkSettings.NormalizationDescription"/>), because
    /// the state keeps only the per-channel statistics of a mean image.
    /// </summary>
    internal static string DescribeNormalization(ImageNormalization normalization)
    {
        var inv = CultureInfo.InvariantCulture;
        return normalization.HasMeanImage
            ? normalization.ToString()
            : "mean " + string.Join("/", normalization.Mean.Select(v => v.ToString("g3", inv))) +
              ", std " + string.Join("/", normalization.Std.Select(v => v.ToString("g3", inv)));
    }

    /// <summary>The Markdown report.</summary>
    /// <param name="result">Result.</param>
    /// <param name="perturbationPng">Relative path of the perturbation plot, if any.</param>
    /// <param name="galleryPng">Relative path of the gallery, if any.</param>
    /// <param name="sanityPng">Relative path of the sanity-check plot, if any.</param>
    /// <returns>Markdown text.</returns>
    public static string ToMarkdown(BenchmarkResult result, string? perturbationPng = null, string? galleryPng = null, string? sanityPng = null)
    {
        ArgumentNullException.ThrowIfNull(result);
        var o = result.Options;
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.Append("# Benchmark: ").Append(o.ModelName).Append("\n\n");
        sb.Append(string.Create(inv, $"- samples: {result.Samples} ({result.Width}×{result.Height}); clean top-1 accuracy {result.CleanAccuracy:P1}\n"));
        if (o.DataDescription.Length > 0) sb.Append("- data: ").Append(o.DataDescription).Append('\n');
        foreach (var note in o.DataNotes) sb.Append("- data note: ").Append(note).Append('\n');
        sb.Append("- normalisation: ").Append(o.NormalizationDescription ?? DescribeNormalization(o.Normalization));
        sb.Append("; explained class: the true label; perturbation baseline: ").Append(o.Perturbation.Baseline).Append('\n');
        sb.Append("- protocols: ").Append(o.Protocols).Append(string.Create(inv, $"; batch {o.BatchSize}; run time {result.Seconds:F0} s\n"));
        sb.Append("- every metric is computed the same way for every method by RootDtd.Evaluation; reference rows: a seeded uniform-noise map (`random`) and an all-zero map (`empty`; ties broken by pixel index)\n");
        if (result.Skipped.Count > 0)
        {
            sb.Append("\n**Not run** (not available in the method catalog when the benchmark ran):\n\n");
            foreach (var s in result.Skipped) sb.Append("- ").Append(s.Label).Append(" (`").Append(s.Spec).Append("`): ").Append(s.Reason).Append('\n');
        }

        var failed = result.Methods.Concat(result.Ablations).Where(m => m.Error is not null).ToList();
        if (failed.Count > 0)
        {
            sb.Append("\n**Failed** (rows shown as –):\n\n");
            foreach (var f in failed) sb.Append("- ").Append(f.Label).Append(": ").Append(f.Error).Append('\n');
        }

        sb.Append('\n');
        if (o.Protocols.HasFlag(BenchmarkProtocols.Perturbation))
        {
            sb.Append(PerturbationTable(result).ToMarkdown(1)).Append('\n');
            if (perturbationPng is not null) sb.Append("![perturbation curves](").Append(perturbationPng).Append(")\n\n");
        }

        if (o.Protocols.HasFlag(BenchmarkProtocols.Localization)) sb.Append(LocalizationTable(result).ToMarkdown(3)).Append('\n');
        if (Intervals(result) is { } intervals) sb.Append(intervals.ToMarkdown());
        if (o.Protocols.HasFlag(BenchmarkProtocols.Pgd)) sb.Append(PgdTable(result).ToMarkdown(3)).Append('\n');
        if (result.Ablations.Count > 0) sb.Append(AblationTable(result).ToMarkdown(3)).Append('\n');
        if (o.Protocols.HasFlag(BenchmarkProtocols.RootChecks))
        {
            var scores = RootScoreTable(result);
            if (scores.Rows.Count > 0)
            {
                sb.Append(scores.ToMarkdown(3));
                var unit = result.Methods.Concat(result.Ablations).FirstOrDefault(m => m.RootUnit is not null)?.RootUnit;
                sb.Append("\nInput-layer unit: `").Append(unit ?? "?").Append("`. Methods without root inference on the input layer have no row.\n\n");
            }
            else sb.Append("*f(N) table: no method inferred a root on the input layer.*\n\n");

            var lr = LinearRegionTable(result);
            if (lr.Rows.Count > 0) sb.Append(lr.ToMarkdown(4)).Append('\n');
            else sb.Append("*Linear-region table: no rows — no method recorded roots of units followed by ReLU (on a transformer the check does not apply: its units feed GELU, softmax and residual sums).*\n\n");
        }

        if (o.Protocols.HasFlag(BenchmarkProtocols.Sanity))
        {
            sb.Append(SanityTable(result).ToMarkdown(3)).Append('\n');
            sb.Append(SanityChecks.InsensitivityNote(result.Methods.Where(m => m.Sanity is not null).Select(m => m.Sanity!), o.Sanity.InsensitiveSpearman))
              .Append(" Flagged rows carry ⚑. Re-drawn: each conv/linear unit's weight and bias ~ N(0, s²), s = that tensor's trained standard deviation; BatchNorm as trained.")
              // a merged report (rootdtd merge) has no model object, only the shards' results and the stored description
              .Append(o.RandomLabelModel is null && !result.Methods.Any(m => m.Sanity?.LabelRandomisation is not null)
                  ? " The label-randomisation columns are empty: no random-label model was given.\n\n"
                  : " Labels randomised: the maps of a model of the same architecture trained on randomly permuted training labels" +
                    (o.RandomLabelModelDescription is null ? "" : " (" + o.RandomLabelModelDescription + ")") + ", same images and explained classes.\n\n");
            if (sanityPng is not null) sb.Append("![sanity checks](").Append(sanityPng).Append(")\n\n");
        }

        sb.Append(CostTable(result).ToMarkdown(2)).Append('\n');
        if (galleryPng is not null) sb.Append("![heatmap gallery](").Append(galleryPng).Append(")\n\n").Append(GalleryCaption(result)).Append('\n');
        return sb.ToString();
    }

    /// <summary>Renders the perturbation curves (coarse schedule): positive and negative side by side.</summary>
    /// <param name="result">Result.</param>
    /// <param name="panelWidth">Width of each panel.</param>
    /// <param name="panelHeight">Height of each panel.</param>
    /// <returns>The image, or <see langword="null"/> when there are no curves.</returns>
    public static Image<Rgb24>? RenderPerturbationPlot(BenchmarkResult result, int panelWidth = 560, int panelHeight = 360)
    {
        ArgumentNullException.ThrowIfNull(result);
        var rows = result.Methods.Concat(result.References).Where(r => r.Curves.Count > 0 && r.Error is null).ToList();
        if (rows.Count == 0) return null;
        var panels = new List<Image<Rgb24>>();
        try
        {
            foreach (var (order, name) in new[] { (PerturbationOrder.MostRelevantFirst, "positive (most relevant first)"), (PerturbationOrder.LeastRelevantFirst, "negative (least relevant first)") })
            {
                var series = rows.Select(r => r.Curves.FirstOrDefault(c => c.Order == order && c.Schedule == PerturbationSchedule.Coarse.Name) is { } c
                        ? new PlotSeries(r.Label, c.Fractions.ToArray(), c.Accuracy.ToArray(), r.Method.Spec is "random" or "empty")
                        : null)
                    .Where(s => s is not null).Select(s => s!).ToList();
                panels.Add(LinePlot.Render(series, $"{result.Options.ModelName}: {name}", "fraction of pixels removed", "accuracy", panelWidth, panelHeight, (0, 1)));
            }

            var image = new Image<Rgb24>(panels.Sum(p => p.Width), panels.Max(p => p.Height), new Rgb24(255, 255, 255));
            var x = 0;
            foreach (var p in panels)
            {
                var left = x;
                image.Mutate(c => c.DrawImage(p, new Point(left, 0), 1f));
                x += p.Width;
            }

            return image;
        }
        finally
        {
            foreach (var p in panels) p.Dispose();
        }
    }

    /// <summary>
    /// Rendering of a method's gallery maps: signed relevance on the blue–white–red map, scaled at the method family's
    /// clipping percentile (<see cref="HeatmapDefaults"/>), with a colour bar.
    /// </summary>
    /// <param name="method">The method.</param>
    public static HeatmapOptions GalleryOptions(BenchmarkMethod method)
    {
        ArgumentNullException.ThrowIfNull(method);
        return HeatmapDefaults.For(method.Spec) with { Mode = HeatmapMode.Signed, MeanCropping = false, ColorBar = true };
    }

    /// <summary>The sentence under the gallery: what it shows and how many explained images it leaves out.</summary>
    /// <param name="result">Result.</param>
    public static string GalleryCaption(BenchmarkResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var shown = result.Gallery.Count;
        var left = result.Samples - shown;
        var count = left > 0
            ? string.Create(CultureInfo.InvariantCulture, $"the first {shown} of the {result.Samples} explained images ({left} not shown; `--gallery N` shows more)")
            : string.Create(CultureInfo.InvariantCulture, $"all {shown} explained images");
        return "Gallery: " + count + ". Per image: the image, its object mask, then one heatmap per method (red positive, blue negative relevance; "
            + "each map scaled symmetrically at its method family's clipping percentile, the colour bar beside it gives the scale).";
    }

    /// <summary>Renders the gallery: per sample the image, its mask and every main method's heatmap.</summary>
    /// <param name="result">Result.</param>
    /// <param name="cellSize">Side of each cell (images are upscaled with nearest neighbour).</param>
    /// <returns>The image, or <see langword="null"/> without gallery data.</returns>
    public static Image<Rgb24>? RenderGallery(BenchmarkResult result, int cellSize = 96)
    {
        ArgumentNullException.ThrowIfNull(result);
        var methods = result.Methods.Where(m => m.GalleryHeatmaps is not null).ToList();
        if (result.Gallery.Count == 0 || methods.Count == 0) return null;
        int h = result.Height, w = result.Width;
        var grid = new ImageGrid(2 + methods.Count) { TitleScale = 1, Padding = 4 };
        var owned = new List<Image<Rgb24>>();
        Image<Rgb24> Own(Image<Rgb24> image)
        {
            image.Mutate(c => c.Resize(cellSize, cellSize, KnownResamplers.NearestNeighbor));
            owned.Add(image);
            return image;
        }

        try
        {
            for (var i = 0; i < result.Gallery.Count; i++)
            {
                var (pixels, mask, label) = result.Gallery[i];
                using (var t = tensor(pixels, new long[] { 3, h, w })) grid.Add(Own(ImageTensorConversion.ToImage(t)), i == 0 ? "image" : null);
                var maskImage = new Image<Rgb24>(w, h);
                for (var y = 0; y < h; y++)
                    for (var x = 0; x < w; x++)
                    {
                        var v = mask[y * w + x];
                        maskImage[x, y] = v == 0 ? new Rgb24(0, 0, 0) : v == 255 ? new Rgb24(128, 128, 128) : new Rgb24(255, 255, 255);
                    }

                grid.Add(Own(maskImage), i == 0 ? "mask" : null);
                foreach (var m in methods)
                {
                    if (i >= m.GalleryHeatmaps!.Length)
                    {
                        grid.AddEmpty();
                        continue;
                    }

                    using var t = tensor(m.GalleryHeatmaps[i], new long[] { h, w });
                    var options = GalleryOptions(m.Method);
                    using var map = HeatmapRenderer.Render(t, options with { ColorBar = false });
                    map.Mutate(c => c.Resize(cellSize, cellSize, KnownResamplers.NearestNeighbor));
                    var cell = ColorBar.AppendTo(map, HeatmapRenderer.ComputeScale(t, options), options);
                    owned.Add(cell);
                    grid.Add(cell, i == 0 ? LinePlot.Ascii(m.Label) : null);
                }
            }

            return grid.Render();
        }
        finally
        {
            foreach (var image in owned) image.Dispose();
        }
    }

    /// <summary>Writes <c>&lt;prefix&gt;.md</c>, <c>&lt;prefix&gt;-perturbation.png</c>, <c>&lt;prefix&gt;-gallery.png</c> and <c>&lt;prefix&gt;.json</c> to <paramref name="directory"/>.</summary>
    /// <param name="result">Result.</param>
    /// <param name="directory">Output folder (created).</param>
    /// <param name="prefix">File-name prefix (e.g. the model name).</param>
    /// <returns>The files written.</returns>
    public static BenchmarkFiles Write(BenchmarkResult result, string directory, string prefix)
    {
        ArgumentNullException.ThrowIfNull(result);
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        ArgumentException.ThrowIfNullOrWhiteSpace(prefix);
        Directory.CreateDirectory(directory);
        var images = new List<string>();
        string? plotName = null, galleryName = null;
        using (var plot = RenderPerturbationPlot(result))
        {
            if (plot is not null)
            {
                plotName = prefix + "-perturbation.png";
                plot.SavePng(Path.Combine(directory, plotName));
                images.Add(Path.Combine(directory, plotName));
            }
        }

        using (var gallery = RenderGallery(result))
        {
            if (gallery is not null)
            {
                galleryName = prefix + "-gallery.png";
                gallery.SavePng(Path.Combine(directory, galleryName));
                images.Add(Path.Combine(directory, galleryName));
            }
        }

        string? sanityName = null;
        using (var sanity = RenderSanityPlot(result))
        {
            if (sanity is not null)
            {
                sanityName = prefix + "-sanity.png";
                sanity.SavePng(Path.Combine(directory, sanityName));
                images.Add(Path.Combine(directory, sanityName));
            }
        }

        // every file through AtomicFile (PNGs: SavePng): complete or absent, never truncated; the Markdown last
        var json = Path.Combine(directory, prefix + ".json");
        RootDtd.IO.AtomicFile.WriteAllText(json, ToJson(result));
        var md = Path.Combine(directory, prefix + ".md");
        RootDtd.IO.AtomicFile.WriteAllText(md, ToMarkdown(result, plotName, galleryName, sanityName));
        return new BenchmarkFiles(md, images, json);
    }

    /// <summary>The files <see cref="Write"/> writes for <paramref name="prefix"/> (whether or not they exist).</summary>
    /// <param name="directory">Output folder.</param>
    /// <param name="prefix">File-name prefix.</param>
    public static IReadOnlyList<string> FileNames(string directory, string prefix)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        ArgumentException.ThrowIfNullOrWhiteSpace(prefix);
        return new[] { prefix + ".md", prefix + ".json", prefix + "-perturbation.png", prefix + "-gallery.png", prefix + "-sanity.png" }
            .Select(n => Path.Combine(directory, n)).ToList();
    }

    /// <summary>
    /// Deletes the report files of an earlier run with this prefix (<see cref="FileNames"/>), so that an interrupted or
    /// failed run never leaves a previous report in place looking like its own.
    /// </summary>
    /// <param name="directory">Output folder.</param>
    /// <param name="prefix">File-name prefix.</param>
    /// <returns>The files deleted.</returns>
    /// <exception cref="IOException">A file cannot be deleted (the message names it).</exception>
    public static IReadOnlyList<string> RemovePrevious(string directory, string prefix)
    {
        var removed = new List<string>();
        foreach (var file in FileNames(directory, prefix).Where(File.Exists))
        {
            try
            {
                File.Delete(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new IOException($"Cannot remove the previous report file '{file}': {e.Message}", e);
            }
            removed.Add(file);
        }
        return removed;
    }

    /// <summary>All tables and perturbation curves as JSON.</summary>
    /// <param name="result">Result.</param>
    /// <returns>JSON text.</returns>
    public static string ToJson(BenchmarkResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var tables = new List<ResultTable> { PerturbationTable(result), LocalizationTable(result), PgdTable(result), AblationTable(result), RootScoreTable(result), LinearRegionTable(result), SanityTable(result), CostTable(result) };
        var sb = new StringBuilder();
        sb.Append("{\n\"model\": ").Append(System.Text.Json.JsonSerializer.Serialize(result.Options.ModelName))
          .Append(",\n\"samples\": ").Append(result.Samples.ToString(CultureInfo.InvariantCulture))
          .Append(",\n\"cleanAccuracy\": ").Append(result.CleanAccuracy.ToString("R", CultureInfo.InvariantCulture))
          .Append(",\n\"skipped\": ").Append(System.Text.Json.JsonSerializer.Serialize(result.Skipped))
          .Append(",\n\"tables\": [\n").Append(string.Join(",\n", tables.Select(t => t.ToJson()))).Append("\n]")
          .Append(",\n\"curves\": ").Append(PerturbationCurve.ToJson(result.Methods.Concat(result.Ablations).Concat(result.References).Where(m => m.Error is null).SelectMany(m => m.Curves)))
          .Append(",\n\"perImage\": ");
        AppendPerImage(sb, result);
        sb.Append("\n}\n");
        return sb.ToString();
    }

    /// <summary>
    /// The <c>perImage</c> section of the JSON: per row (method, reference, ablation) its per-image columns as compact
    /// arrays, one array per column with one value per image in sample order (null where undefined):
    /// <c>{"rows":[{"method":…,"spec":…,"kind":"method","samples":N,"columns":[…],"values":[[…],[…]]}]}</c>.
    /// </summary>
    private static void AppendPerImage(StringBuilder sb, BenchmarkResult result)
    {
        var inv = CultureInfo.InvariantCulture;
        var rows = result.Methods.Select(m => (m, "method")).Concat(result.References.Select(m => (m, "reference"))).Concat(result.Ablations.Select(m => (m, "ablation")))
            .Where(x => x.m.PerImage is not null && x.m.Error is null).ToList(); // a failed method's values are partial: none
        sb.Append("{\"rows\": [");
        for (var r = 0; r < rows.Count; r++)
        {
            var (m, kind) = rows[r];
            var v = m.PerImage!;
            sb.Append(r == 0 ? "\n" : ",\n").Append("{\"method\": ").Append(System.Text.Json.JsonSerializer.Serialize(m.Label))
              .Append(", \"spec\": ").Append(System.Text.Json.JsonSerializer.Serialize(m.Method.Spec))
              .Append(", \"kind\": \"").Append(kind).Append("\", \"samples\": ").Append(v.Samples.ToString(inv))
              .Append(", \"columns\": ").Append(System.Text.Json.JsonSerializer.Serialize(v.Columns)).Append(", \"values\": [");
            for (var c = 0; c < v.Columns.Count; c++)
            {
                if (c > 0) sb.Append(',');
                sb.Append('[');
                var column = v[v.Columns[c]];
                for (var i = 0; i < column.Count; i++)
                {
                    if (i > 0) sb.Append(',');
                    var x = column[i];
                    sb.Append(double.IsFinite(x) ? x.ToString("R", inv) : "null");
                }
                sb.Append(']');
            }
            sb.Append("]}");
        }
        sb.Append("\n]}");
    }

    /// <summary>
    /// The per-image values of a report JSON written by <see cref="ToJson"/> (<c>rootdtd compare</c>): the rows of the
    /// given kinds (default the main methods), in report order.
    /// </summary>
    /// <param name="json">The report JSON.</param>
    /// <param name="source">Where it came from (for messages).</param>
    /// <param name="kinds">Row kinds: method, reference, ablation (default: method).</param>
    /// <exception cref="InvalidDataException">Not a report JSON, or one without per-image values (the message says how to get them).</exception>
    public static IReadOnlyList<MethodPerImage> ReadPerImage(string json, string source, IReadOnlyCollection<string>? kinds = null)
    {
        ArgumentNullException.ThrowIfNull(json);
        kinds ??= new[] { "method" };
        System.Text.Json.JsonDocument doc;
        try
        {
            doc = System.Text.Json.JsonDocument.Parse(json);
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException($"'{source}' is not a benchmark report JSON ({e.Message}).", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != System.Text.Json.JsonValueKind.Object || !root.TryGetProperty("tables", out _))
                throw new InvalidDataException($"'{source}' is not a benchmark report JSON (no \"tables\"; the report of 'rootdtd evaluate' is <model>.json).");
            if (!root.TryGetProperty("perImage", out var perImage) || !perImage.TryGetProperty("rows", out var rowsElement) || rowsElement.GetArrayLength() == 0)
                throw new InvalidDataException($"'{source}' has no per-image values: it was written before benchmark reports kept them, or ran neither the localisation nor the perturbation protocol. Run 'rootdtd evaluate' again (or 'rootdtd merge' on its state files, if they hold per-image values) to get a report with them.");
            var list = new List<MethodPerImage>();
            try
            {
                foreach (var row in rowsElement.EnumerateArray())
                {
                    var kind = row.GetProperty("kind").GetString() ?? "method";
                    if (!kinds.Contains(kind)) continue;
                    var columns = row.GetProperty("columns").EnumerateArray().Select(c => c.GetString() ?? "").ToList();
                    var values = row.GetProperty("values").EnumerateArray()
                        .Select(col => (IReadOnlyList<double>)col.EnumerateArray().Select(x => x.ValueKind == System.Text.Json.JsonValueKind.Null ? double.NaN : x.GetDouble()).ToArray()).ToList();
                    if (values.Count != columns.Count) throw new InvalidDataException($"'{source}': the row '{row.GetProperty("method").GetString()}' has {columns.Count} per-image columns but {values.Count} value arrays.");
                    list.Add(new MethodPerImage(row.GetProperty("method").GetString() ?? "", PerImageValues.FromColumns(columns.Zip(values).ToList())));
                }
            }
            catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException or ArgumentException)
            {
                throw new InvalidDataException($"'{source}': the per-image section is malformed ({e.Message}).", e);
            }
            return list;
        }
    }

    /// <summary>
    /// The interval section of the Markdown report: every main method's bootstrap intervals of
    /// <see cref="PerImageMetrics.ReportMetrics"/> and the paired differences to <c>zplus</c> when it was run (null when
    /// no method has per-image values).
    /// </summary>
    /// <param name="result">Result.</param>
    /// <param name="references">Reference methods (default: <c>zplus</c> when present).</param>
    /// <param name="options">Bootstrap options.</param>
    public static BootstrapComparison? Intervals(BenchmarkResult result, IReadOnlyList<string>? references = null, BootstrapOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(result);
        var rows = result.Methods.Where(m => m.PerImage is not null && m.Error is null).Select(m => new MethodPerImage(m.Label, m.PerImage!)).ToList();
        if (rows.Count == 0 || rows.Any(r => r.Values.Samples != rows[0].Values.Samples)) return null;
        if (!PerImageMetrics.ReportMetrics.Select(PerImageMetrics.Get).Any(m => rows.All(r => m.Required.All(r.Values.Has)))) return null;
        references ??= rows.Any(r => r.Method == IntervalReference) ? new[] { IntervalReference } : Array.Empty<string>();
        return BootstrapComparison.Compute(rows, references, PerImageMetrics.ReportMetrics, options);
    }

    /// <summary>The method the report's paired differences refer to when it was run: z⁺, the classic rule root inference is measured against.</summary>
    public const string IntervalReference = "zplus";

    private static string RowLabel(MethodResult r) => r.Error is null ? r.Label : r.Label + " (failed)";

    /// <summary>The row of a failed method: no value in any column (rendered –), whatever it measured before it failed.</summary>
    private static readonly IReadOnlyDictionary<string, double> Failed = new Dictionary<string, double>();

    /// <summary><paramref name="values"/>, or none for a failed method: its numbers are partial and must not be shown.</summary>
    private static IReadOnlyDictionary<string, double> Shown(MethodResult r, IReadOnlyDictionary<string, double> values) => r.Error is null ? values : Failed;

    /// <summary>One row per method and reference that has values; a failed method gets an empty, labelled row.</summary>
    private static ResultTable AddMethodRows(ResultTable table, BenchmarkResult result, Func<MethodResult, IReadOnlyDictionary<string, double>?> values)
    {
        foreach (var r in result.Methods.Concat(result.References))
        {
            if (r.Error is not null) table.AddRow(RowLabel(r), Failed);
            else if (values(r) is { } v) table.AddRow(RowLabel(r), v);
        }

        return table;
    }
}
