using System.Globalization;
using System.Text.Json.Serialization;
using RootDtd.Composites;
using RootDtd.Rules.RootInference.Published;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Metrics;

/// <summary>How similar a map is to the original map of the same sample (means over samples).</summary>
/// <param name="Spearman">Spearman rank correlation of the absolute maps (average ranks for ties; 1 when both maps are
/// constant, 0 when only one is).</param>
/// <param name="Ssim">SSIM (11×11 Gaussian window, σ = 1.5, data range 1) of the absolute maps, each divided by its
/// maximum (an all-zero map stays zero).</param>
/// <param name="TopK">|top-k(original) ∩ top-k(other)| / k of the absolute maps, k = a fraction of the pixels.</param>
public sealed record MapSimilarity(double Spearman, double Ssim, double TopK);

/// <summary>The similarity measures of the sanity checks (Adebayo et al. 2018), on CPU arrays and on map batches.</summary>
public static class MapSimilarityMeasures
{
    /// <summary>Default fraction of the pixels in the top-k intersection.</summary>
    public const double DefaultTopFraction = 0.1;

    /// <summary>Spearman rank correlation with average ranks for ties (1 when both inputs are constant, 0 when one is).</summary>
    public static double Spearman(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Count != b.Count || a.Count == 0) throw new ArgumentException($"Spearman needs two non-empty lists of the same length; got {a.Count} and {b.Count}.");
        var ra = Ranks(a);
        var rb = Ranks(b);
        var ma = ra.Average();
        var mb = rb.Average();
        double sab = 0, saa = 0, sbb = 0;
        for (var i = 0; i < ra.Length; i++)
        {
            sab += (ra[i] - ma) * (rb[i] - mb);
            saa += (ra[i] - ma) * (ra[i] - ma);
            sbb += (rb[i] - mb) * (rb[i] - mb);
        }
        if (saa == 0 && sbb == 0) return 1;
        if (saa == 0 || sbb == 0) return 0;
        return sab / Math.Sqrt(saa * sbb);
    }

    /// <summary>1-based ranks, ties sharing their average rank.</summary>
    public static double[] Ranks(IReadOnlyList<double> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var order = Enumerable.Range(0, values.Count).OrderBy(i => values[i]).ToArray();
        var ranks = new double[values.Count];
        for (var start = 0; start < order.Length;)
        {
            var end = start;
            while (end + 1 < order.Length && values[order[end + 1]] == values[order[start]]) end++;
            var rank = (start + end) / 2.0 + 1;
            for (var j = start; j <= end; j++) ranks[order[j]] = rank;
            start = end + 1;
        }
        return ranks;
    }

    /// <summary>|top-k(a) ∩ top-k(b)| / k (ties at the k-th value broken by position, lower index first).</summary>
    public static double TopKIntersection(IReadOnlyList<double> a, IReadOnlyList<double> b, int k)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Count != b.Count) throw new ArgumentException($"Top-k needs lists of the same length; got {a.Count} and {b.Count}.");
        if (k < 1 || k > a.Count) throw new ArgumentOutOfRangeException(nameof(k), k, $"k must be in 1…{a.Count}.");
        HashSet<int> Top(IReadOnlyList<double> v) => Enumerable.Range(0, v.Count).OrderByDescending(i => v[i]).ThenBy(i => i).Take(k).ToHashSet();
        var ta = Top(a);
        return Top(b).Count(ta.Contains) / (double)k;
    }

    /// <summary>The similarity of every sample of <paramref name="other"/> [B,H,W] to <paramref name="original"/> [B,H,W].</summary>
    public static MapSimilarity[] Compare(Tensor original, Tensor other, double topFraction = DefaultTopFraction)
    {
        ArgumentNullException.ThrowIfNull(original);
        ArgumentNullException.ThrowIfNull(other);
        if (original.dim() != 3 || !original.shape.SequenceEqual(other.shape))
            throw new ArgumentException($"Sanity checks compare maps [B,H,W] of the same shape; got [{string.Join(", ", original.shape)}] and [{string.Join(", ", other.shape)}].");
        if (!(topFraction > 0 && topFraction <= 1)) throw new ArgumentOutOfRangeException(nameof(topFraction), topFraction, "The top-k fraction must be in (0, 1].");
        using var scope = torch.NewDisposeScope();
        var a = original.detach().to(ScalarType.Float64).abs();
        var b = other.detach().to(ScalarType.Float64).abs();
        Tensor Normalised(Tensor t)
        {
            var max = t.reshape(t.shape[0], -1).amax(1).view(-1, 1, 1);
            return torch.where(max.gt(0), t / torch.where(max.gt(0), max, torch.ones_like(max)), torch.zeros_like(t)).unsqueeze(1);
        }
        var ssim = Ssim.PerSample(Normalised(a), Normalised(b)).cpu().data<double>().ToArray();
        var av = a.reshape(a.shape[0], -1).cpu();
        var bv = b.reshape(b.shape[0], -1).cpu();
        var n = (int)av.shape[1];
        var k = Math.Max(1, (int)Math.Round(topFraction * n));
        var result = new MapSimilarity[a.shape[0]];
        for (var i = 0; i < result.Length; i++)
        {
            var x = av[i].data<double>().ToArray();
            var y = bv[i].data<double>().ToArray();
            result[i] = new MapSimilarity(Spearman(x, y), ssim[i], TopKIntersection(x, y, k));
        }
        return result;
    }

    /// <summary>The mean of each measure.</summary>
    public static MapSimilarity Mean(IReadOnlyCollection<MapSimilarity> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        return values.Count == 0
            ? new MapSimilarity(double.NaN, double.NaN, double.NaN)
            : new MapSimilarity(values.Average(v => v.Spearman), values.Average(v => v.Ssim), values.Average(v => v.TopK));
    }
}

/// <summary>Which weights a step of the model-parameter randomisation test re-draws.</summary>
public enum RandomisationMode
{
    /// <summary>Every layer from the top down to this step's group (Adebayo et al.'s cascading randomisation).</summary>
    Cascading,

    /// <summary>Only this step's group, the rest as trained (independent randomisation).</summary>
    Independent,

    /// <summary>A model of the same architecture trained on randomly permuted labels (data randomisation).</summary>
    Labels,
}

/// <summary>One randomisation step: which units were re-drawn and how similar the maps stayed.</summary>
/// <param name="Mode">Cascading, independent or label randomisation.</param>
/// <param name="Step">0-based step (from the top).</param>
/// <param name="Label">The group, e.g. <c>fc</c> or <c>layer4.0.conv1…layer4.1.conv2</c>.</param>
/// <param name="Units">Module paths re-drawn in this step (cascading: every unit down to this group).</param>
/// <param name="Similarity">Mean similarity to the original maps.</param>
public sealed record SanityStep(RandomisationMode Mode, int Step, string Label, IReadOnlyList<string> Units, MapSimilarity Similarity);

/// <summary>The sanity checks of one method.</summary>
/// <param name="Method">Method label.</param>
/// <param name="Samples">Number of explained samples.</param>
/// <param name="Steps">Every step, cascading first (top-down), then independent, then label randomisation if run.</param>
public sealed record SanityCheckResult(string Method, int Samples, IReadOnlyList<SanityStep> Steps)
{
    /// <summary>The last cascading step: every unit re-drawn (<see langword="null"/> if none ran).</summary>
    [JsonIgnore]
    public SanityStep? FullRandomisation => Steps.LastOrDefault(s => s.Mode == RandomisationMode.Cascading);

    /// <summary>The label-randomisation step, if run.</summary>
    [JsonIgnore]
    public SanityStep? LabelRandomisation => Steps.FirstOrDefault(s => s.Mode == RandomisationMode.Labels);

    /// <summary>True when the maps barely change with every weight re-drawn: Spearman(|·|) ≥ <paramref name="threshold"/>.</summary>
    public bool IsInsensitive(double threshold = SanityCheckOptions.DefaultInsensitiveSpearman) =>
        FullRandomisation is { } full && full.Similarity.Spearman >= threshold;
}

/// <summary>Settings of <see cref="SanityChecks"/>.</summary>
public sealed record SanityCheckOptions
{
    /// <summary>Default Spearman threshold above which a method is flagged as insensitive to the model.</summary>
    public const double DefaultInsensitiveSpearman = 0.5;

    /// <summary>Number of groups the units are split into, top-down (contiguous, near-equal sizes; one step each). Default 6; the unit count gives per-layer steps.</summary>
    public int Groups { get; init; } = 6;

    /// <summary>Run the independent randomisation as well (default true).</summary>
    public bool Independent { get; init; } = true;

    /// <summary>Fraction of the pixels in the top-k intersection.</summary>
    public double TopFraction { get; init; } = MapSimilarityMeasures.DefaultTopFraction;

    /// <summary>Seed of the re-drawn weights (group g uses seed + g).</summary>
    public long Seed { get; init; } = 2018;

    /// <summary>Explanation batch size.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Spearman threshold for <see cref="SanityCheckResult.IsInsensitive"/> in reports.</summary>
    public double InsensitiveSpearman { get; init; } = DefaultInsensitiveSpearman;

    /// <summary>Checks the values.</summary>
    public void Validate()
    {
        if (Groups < 1) throw new ArgumentOutOfRangeException(nameof(Groups), Groups, "SanityCheckOptions.Groups must be ≥ 1.");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "SanityCheckOptions.BatchSize must be ≥ 1.");
        if (!(TopFraction > 0 && TopFraction <= 1)) throw new ArgumentOutOfRangeException(nameof(TopFraction), TopFraction, "SanityCheckOptions.TopFraction must be in (0, 1].");
    }
}

/// <summary>
/// The sanity checks of Adebayo et al. (2018): explain the same images with the trained model and with models whose
/// weights were re-drawn — cascading from the top layer down and each group alone — and, when a model trained on
/// random labels is given, with that one; report how similar the maps stay. A method whose maps survive full
/// randomisation explains the input's structure, not the model's decision. Re-drawn weights: every conv/linear
/// unit's weight and bias (module paths of the relevance graph's units) get N(0, s²) with s the standard deviation of
/// that tensor in the trained model (a zero-std tensor stays zero); BatchNorm is left as trained. The model is
/// modified in place during the run and restored exactly afterwards (also on failure).
/// </summary>
public static class SanityChecks
{
    /// <summary>Runs the model-parameter randomisation test (and the label test when <paramref name="randomLabelModel"/> is given).</summary>
    /// <param name="model">The trained classifier (restored afterwards).</param>
    /// <param name="method">Row label of the method.</param>
    /// <param name="createComposite">Builds the method's composite (called once per model state).</param>
    /// <param name="explainerOptions">Explainer options (input bounds etc.).</param>
    /// <param name="images">Images [N,C,H,W].</param>
    /// <param name="targets">Explained class per image [N] (int64; the same for every model state).</param>
    /// <param name="options">Settings.</param>
    /// <param name="randomLabelModel">A model of the same architecture trained on permuted labels, or <see langword="null"/>.</param>
    /// <param name="cancellationToken">
    /// Checked before every batch of every model state and inside every explanation; a cancelled call throws
    /// <see cref="OperationCanceledException"/>, returns nothing partial and leaves the model's weights restored.
    /// </param>
    /// <returns>Every step's similarity.</returns>
    public static SanityCheckResult Run(nn.Module<Tensor, Tensor> model, string method, Func<Composite> createComposite, ExplainerOptions explainerOptions,
        Tensor images, Tensor targets, SanityCheckOptions? options = null, nn.Module<Tensor, Tensor>? randomLabelModel = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(createComposite);
        ArgumentNullException.ThrowIfNull(explainerOptions);
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(targets);
        options ??= new SanityCheckOptions();
        options.Validate();
        if (targets.dim() != 1 || targets.shape[0] != images.shape[0])
            throw new ArgumentException($"Expected one target per image ({images.shape[0]}); got [{string.Join(", ", targets.shape)}].", nameof(targets));
        var t = targets.to(ScalarType.Int64).cpu().data<long>().ToArray();

        using var original = Maps(model, createComposite, explainerOptions, images, t, options.BatchSize, cancellationToken);
        IReadOnlyList<string> units;
        using (var probe = new Explainer(model, createComposite(), explainerOptions)) units = probe.Graph.Units.Select(u => u.Name).ToList();
        var groups = Groups(units.Reverse().ToList(), options.Groups);
        var steps = new List<SanityStep>();
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
        for (var g = 0; g < groups.Count; g++)
        {
            var cascade = groups.Take(g + 1).SelectMany(x => x).ToList();
            steps.Add(Step(RandomisationMode.Cascading, g, groups[g], cascade));
        }
        if (options.Independent)
            for (var g = 0; g < groups.Count; g++) steps.Add(Step(RandomisationMode.Independent, g, groups[g], groups[g]));
        if (randomLabelModel is not null)
        {
            using var maps = Maps(randomLabelModel, createComposite, explainerOptions, images, t, options.BatchSize, cancellationToken);
            steps.Add(new SanityStep(RandomisationMode.Labels, 0, "labels randomised", Array.Empty<string>(),
                MapSimilarityMeasures.Mean(MapSimilarityMeasures.Compare(original, maps, options.TopFraction))));
        }
        return new SanityCheckResult(method, (int)images.shape[0], steps);

        SanityStep Step(RandomisationMode mode, int index, IReadOnlyList<string> group, IReadOnlyList<string> redraw)
        {
            var saved = Redraw(modules, redraw, options.Seed);
            try
            {
                using var maps = Maps(model, createComposite, explainerOptions, images, t, options.BatchSize, cancellationToken);
                var label = group.Count == 1 ? group[0] : $"{group[0]}…{group[^1]}";
                return new SanityStep(mode, index, label, redraw, MapSimilarityMeasures.Mean(MapSimilarityMeasures.Compare(original, maps, options.TopFraction)));
            }
            finally
            {
                Restore(saved);
            }
        }
    }

    /// <summary>Splits <paramref name="items"/> into <paramref name="count"/> contiguous groups of near-equal size (earlier groups get the extra items).</summary>
    public static IReadOnlyList<IReadOnlyList<string>> Groups(IReadOnlyList<string> items, int count)
    {
        ArgumentNullException.ThrowIfNull(items);
        var n = Math.Min(count, items.Count);
        var result = new List<IReadOnlyList<string>>();
        var start = 0;
        for (var g = 0; g < n; g++)
        {
            var size = items.Count / n + (g < items.Count % n ? 1 : 0);
            result.Add(items.Skip(start).Take(size).ToList());
            start += size;
        }
        return result;
    }

    private static Tensor Maps(nn.Module<Tensor, Tensor> model, Func<Composite> createComposite, ExplainerOptions explainerOptions, Tensor images, long[] targets, int batchSize,
        CancellationToken cancellationToken)
    {
        using var explainer = new Explainer(model, createComposite(), explainerOptions);
        var parts = new List<Tensor>();
        using var scope = torch.NewDisposeScope();
        for (var s = 0; s < images.shape[0]; s += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var len = (int)Math.Min(batchSize, images.shape[0] - s);
            using var e = explainer.Explain(images.narrow(0, s, len), targets.Skip(s).Take(len).ToArray(), cancellationToken);
            parts.Add(e.Heatmap.detach().clone());
        }
        return torch.cat(parts.ToArray()).MoveToOuterDisposeScope();
    }

    private static List<(Tensor Parameter, Tensor Saved)> Redraw(Dictionary<string, nn.Module> modules, IEnumerable<string> units, long seed)
    {
        var saved = new List<(Tensor, Tensor)>();
        using var noGrad = torch.no_grad();
        try
        {
            var index = 0;
            foreach (var unit in units)
            {
                if (!modules.TryGetValue(unit, out var module))
                    throw new ArgumentException($"Sanity checks: the model has no module '{unit}' to randomise (a unit of its relevance graph).");
                foreach (var (_, p) in module.named_parameters(recurse: false))
                {
                    saved.Add((p, p.detach().clone()));
                    using var gen = new torch.Generator((ulong)(seed + index++), torch.CPU);
                    var std = p.numel() > 1 ? p.detach().to(ScalarType.Float64).std().item<double>() : Math.Abs(p.detach().to(ScalarType.Float64).sum().item<double>());
                    using var fresh = torch.randn(p.shape, dtype: ScalarType.Float32, generator: gen).to(p.dtype).to(p.device);
                    p.copy_(fresh * std);
                }
            }
        }
        catch
        {
            Restore(saved);
            throw;
        }
        return saved;
    }

    private static void Restore(List<(Tensor Parameter, Tensor Saved)> saved)
    {
        using var noGrad = torch.no_grad();
        foreach (var (p, s) in saved)
        {
            p.copy_(s);
            s.Dispose();
        }
        saved.Clear();
    }

    /// <summary>One line per flagged method, for report text.</summary>
    public static string InsensitivityNote(IEnumerable<SanityCheckResult> results, double threshold = SanityCheckOptions.DefaultInsensitiveSpearman)
    {
        ArgumentNullException.ThrowIfNull(results);
        var flagged = results.Where(r => r.IsInsensitive(threshold)).ToList();
        if (flagged.Count == 0)
            return string.Create(CultureInfo.InvariantCulture, $"No method keeps a Spearman rank correlation (|maps|) ≥ {threshold:0.##} with its original maps once every layer is re-drawn.");
        return string.Create(CultureInfo.InvariantCulture, $"**Flagged (maps barely change under full randomisation, Spearman ≥ {threshold:0.##}):** ") +
            string.Join(", ", flagged.Select(r => string.Create(CultureInfo.InvariantCulture, $"{r.Method} ({r.FullRandomisation!.Similarity.Spearman:0.00})"))) +
            ". These maps reflect the input more than the trained weights.";
    }
}
