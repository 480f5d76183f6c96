using System.Globalization;
using System.Text;
using System.Text.Json;
using RootDtd.Evaluation.Results;
using RootDtd.Evaluation.Sharding;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Metrics;

/// <summary>Which pixels are removed first.</summary>
public enum PerturbationOrder
{
    /// <summary>Positive perturbation: most relevant first (lower AUC is better).</summary>
    MostRelevantFirst,

    /// <summary>Negative perturbation: least relevant first (higher AUC is better).</summary>
    LeastRelevantFirst,
}

/// <summary>Value written into removed pixels.</summary>
public enum PerturbationBaseline
{
    /// <summary>0 in normalised space (the dataset mean colour; the ACM MM'24 code).</summary>
    NormalizedZero,

    /// <summary>Black: the normalised value of pixel value 0, −mean_c/std_c per channel (Chefer et al.).</summary>
    Black,

    /// <summary>Per-channel normalised values from <see cref="PixelPerturbationOptions.CustomBaseline"/>.</summary>
    Custom,
}

/// <summary>A named list of removed-pixel fractions (strictly increasing, in [0,1]).</summary>
/// <param name="Name">Name, for example "coarse".</param>
/// <param name="Fractions">Fractions of H·W removed at each step.</param>
public sealed record PerturbationSchedule(string Name, IReadOnlyList<double> Fractions)
{
    /// <summary>0, 0.01, 0.1, 0.2, …, 0.9.</summary>
    public static PerturbationSchedule Coarse { get; } = new("coarse", new[] { 0, 0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9 });

    /// <summary>0, 0.01, 0.02, …, 0.10.</summary>
    public static PerturbationSchedule Fine { get; } = new("fine", Enumerable.Range(0, 11).Select(i => i / 100.0).ToArray());

    internal void Validate()
    {
        if (string.IsNullOrEmpty(Name)) throw new ArgumentException("A schedule needs a name.", nameof(Name));
        if (Fractions is null || Fractions.Count < 2) throw new ArgumentException($"Schedule '{Name}' needs at least two fractions.", nameof(Fractions));
        for (int i = 0; i < Fractions.Count; i++)
        {
            if (!(Fractions[i] >= 0 && Fractions[i] <= 1)) throw new ArgumentOutOfRangeException(nameof(Fractions), Fractions[i], $"Schedule '{Name}': fractions must be in [0,1].");
            if (i > 0 && !(Fractions[i] > Fractions[i - 1])) throw new ArgumentException($"Schedule '{Name}': fractions must be strictly increasing.", nameof(Fractions));
        }
    }
}

/// <summary>Options of <see cref="PixelPerturbation"/>.</summary>
public sealed record PixelPerturbationOptions
{
    /// <summary>Orders to evaluate. Default both.</summary>
    public IReadOnlyList<PerturbationOrder> Orders { get; init; } = new[] { PerturbationOrder.MostRelevantFirst, PerturbationOrder.LeastRelevantFirst };

    /// <summary>Schedules (curves) to evaluate; shared fractions are evaluated once. Default coarse and fine.</summary>
    public IReadOnlyList<PerturbationSchedule> Schedules { get; init; } = new[] { PerturbationSchedule.Coarse, PerturbationSchedule.Fine };

    /// <summary>Value of removed pixels. Default <see cref="PerturbationBaseline.NormalizedZero"/>.</summary>
    public PerturbationBaseline Baseline { get; init; } = PerturbationBaseline.NormalizedZero;

    /// <summary>Normalisation of the inputs (used by <see cref="PerturbationBaseline.Black"/>). Default ImageNet.</summary>
    public ImageNormalization Normalization { get; init; } = ImageNormalization.ImageNet;

    /// <summary>Per-channel normalised values for <see cref="PerturbationBaseline.Custom"/>.</summary>
    public IReadOnlyList<double>? CustomBaseline { get; init; }

    /// <summary>Class explained by the heatmap source. Default the true label (accuracy is always against the true label).</summary>
    public ExplanationTarget Target { get; init; } = ExplanationTarget.TrueLabel;

    /// <summary>Device the batches are moved to, or <see langword="null"/> to keep them where they are.</summary>
    public Device? Device { get; init; }
}

/// <summary>An accuracy curve of one perturbation run.</summary>
/// <param name="Method">Method name.</param>
/// <param name="Order">Removal order.</param>
/// <param name="Schedule">Schedule name.</param>
/// <param name="Fractions">x: fraction of pixels removed.</param>
/// <param name="Accuracy">y: top-1 accuracy against the true label, in [0,1].</param>
/// <param name="MeanTrueClassProbability">Mean softmax probability of the true label at each step.</param>
/// <param name="Samples">Number of samples.</param>
public sealed record PerturbationCurve(
    string Method, PerturbationOrder Order, string Schedule, IReadOnlyList<double> Fractions, IReadOnlyList<double> Accuracy,
    IReadOnlyList<double> MeanTrueClassProbability, int Samples)
{
    /// <summary>Chefer's AUC: 100 · trapezoid integral of accuracy over the fraction axis (over the schedule's own x range).</summary>
    public double Auc => 100 * Trapezoid(Fractions, Accuracy);

    /// <summary><see cref="Auc"/> divided by the x range: the mean accuracy in percent (comparable between schedules).</summary>
    public double NormalizedAuc => Auc / (Fractions[^1] - Fractions[0]);

    /// <summary>Trapezoid integral of y over x.</summary>
    /// <param name="x">Increasing x values.</param>
    /// <param name="y">y values (same length).</param>
    /// <returns>Σ (x_{i+1} − x_i)(y_i + y_{i+1})/2.</returns>
    public static double Trapezoid(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(y);
        if (x.Count != y.Count) throw new ArgumentException($"x has {x.Count} values but y has {y.Count}.", nameof(y));
        double s = 0;
        for (int i = 1; i < x.Count; i++) s += (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2;
        return s;
    }

    /// <summary>Curves as long-format CSV: <c>method,order,schedule,fraction,accuracy,true_class_probability</c>.</summary>
    /// <param name="curves">Curves.</param>
    /// <returns>CSV text.</returns>
    public static string ToCsv(IEnumerable<PerturbationCurve> curves)
    {
        ArgumentNullException.ThrowIfNull(curves);
        var sb = new StringBuilder("method,order,schedule,fraction,accuracy,true_class_probability\n");
        var inv = CultureInfo.InvariantCulture;
        foreach (var c in curves)
            for (int i = 0; i < c.Fractions.Count; i++)
                sb.Append(Csv.Escape(c.Method)).Append(',').Append(c.Order).Append(',').Append(Csv.Escape(c.Schedule)).Append(',')
                  .Append(c.Fractions[i].ToString("R", inv)).Append(',').Append(c.Accuracy[i].ToString("R", inv)).Append(',')
                  .Append(c.MeanTrueClassProbability[i].ToString("R", inv)).Append('\n');
        return sb.ToString();
    }

    /// <summary>Curves as a JSON array (fields of the record plus <c>auc</c> and <c>normalizedAuc</c>).</summary>
    /// <param name="curves">Curves.</param>
    /// <returns>JSON text.</returns>
    public static string ToJson(IEnumerable<PerturbationCurve> curves)
    {
        ArgumentNullException.ThrowIfNull(curves);
        var arr = curves.Select(c => new
        {
            method = c.Method,
            order = c.Order.ToString(),
            schedule = c.Schedule,
            samples = c.Samples,
            fractions = c.Fractions,
            accuracy = c.Accuracy,
            trueClassProbability = c.MeanTrueClassProbability,
            auc = c.Auc,
            normalizedAuc = c.NormalizedAuc,
        });
        return JsonSerializer.Serialize(arr, new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>A table with one row per curve: AUC and normalised AUC per (order, schedule) column.</summary>
    /// <param name="curves">Curves of one or more methods.</param>
    /// <returns>The table.</returns>
    public static ResultTable ToTable(IEnumerable<PerturbationCurve> curves)
    {
        ArgumentNullException.ThrowIfNull(curves);
        var list = curves.ToList();
        var cols = list.Select(c => $"{Short(c.Order)} AUC ({c.Schedule})").Distinct().ToList();
        var table = new ResultTable("Pixel perturbation (AUC ×100 of accuracy vs fraction removed)", cols);
        foreach (var g in list.GroupBy(c => c.Method))
            table.AddRow(g.Key, g.ToDictionary(c => $"{Short(c.Order)} AUC ({c.Schedule})", c => c.Auc));
        return table;
    }

    private static string Short(PerturbationOrder o) => o == PerturbationOrder.MostRelevantFirst ? "positive" : "negative";
}

/// <summary>The sums of a <see cref="PixelPerturbationAccumulator"/>: correct predictions and true-class probabilities per (order, fraction).</summary>
/// <param name="Samples">Samples accumulated.</param>
/// <param name="Fractions">The distinct removed fractions, increasing.</param>
/// <param name="Orders">The orders, outer index of the sums.</param>
/// <param name="Correct">Σ correct per (order, fraction), order-major.</param>
/// <param name="Probability">Σ true-class probability per (order, fraction).</param>
/// <param name="PerImageAuc">
/// Per sample, in sample order, the AUC of each curve of <see cref="PixelPerturbationAccumulator.Result"/> computed on that
/// sample alone (row-major: curves per sample, in the curves' order), or <see langword="null"/> when not available (a
/// state written before they were kept).
/// </param>
public sealed record PerturbationState(int Samples, IReadOnlyList<double> Fractions, IReadOnlyList<PerturbationOrder> Orders, IReadOnlyList<ExactSum> Correct, IReadOnlyList<ExactSum> Probability,
    IReadOnlyList<double>? PerImageAuc = null);

/// <summary>
/// Accumulates pixel-perturbation statistics over batches: each batch's sums come to the host once and are added
/// exactly (<see cref="ExactSum"/>), so accumulators of shards or of the parts of a resumed run <see cref="Merge"/> to
/// the same numbers as one uninterrupted run.
/// </summary>
public sealed class PixelPerturbationAccumulator : IDisposable
{
    private readonly PixelPerturbationOptions _options;
    private readonly double[] _fractions;
    private ExactSum[]? _correct; // [orders × steps], exact so that shards and resumed runs merge bit for bit
    private ExactSum[]? _prob;    // [orders × steps]
    private int _samples;
    private List<double>? _perImageAuc = new(); // [samples × curves]

    /// <summary>Creates an accumulator.</summary>
    /// <param name="options">Options (default: both orders, coarse + fine, normalised-zero baseline).</param>
    public PixelPerturbationAccumulator(PixelPerturbationOptions? options = null)
    {
        _options = options ?? new PixelPerturbationOptions();
        if (_options.Orders is null || _options.Orders.Count == 0) throw new ArgumentException("At least one order is required.", nameof(options));
        if (_options.Schedules is null || _options.Schedules.Count == 0) throw new ArgumentException("At least one schedule is required.", nameof(options));
        foreach (var s in _options.Schedules) s.Validate();
        if (_options.Baseline == PerturbationBaseline.Custom && (_options.CustomBaseline is null || _options.CustomBaseline.Count == 0))
            throw new ArgumentException("Baseline = Custom requires CustomBaseline (one normalised value per channel).", nameof(options));
        _fractions = _options.Schedules.SelectMany(s => s.Fractions).Distinct().OrderBy(f => f).ToArray();
    }

    /// <summary>Samples accumulated so far.</summary>
    public int Samples => _samples;

    /// <summary>Removes pixels of one batch step by step and accumulates the accuracy of <paramref name="model"/>.</summary>
    /// <param name="model">Normalised batch → logits [B,K].</param>
    /// <param name="images">Normalised images [B,C,H,W].</param>
    /// <param name="labels">True labels [B].</param>
    /// <param name="heatmaps">Relevance [B,H,W] (finite).</param>
    public void Add(Func<Tensor, Tensor> model, Tensor images, Tensor labels, Tensor heatmaps)
    {
        ArgumentNullException.ThrowIfNull(model);
        Check.Images(images, nameof(images));
        Check.Labels(labels, images.shape[0], nameof(labels));
        long b = images.shape[0], c = images.shape[1], h = images.shape[2], w = images.shape[3], n = h * w;
        Check.Heatmap(heatmaps, b, h, w, nameof(heatmaps));

        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var x = images.detach();
        var y = labels.to(ScalarType.Int64, x.device);
        var baseline = Baseline(c, x.dtype, x.device);
        var ks = _fractions.Select(f => (long)Math.Floor(f * n + 1e-9)).ToArray();
        var correctRows = new List<Tensor>();
        var probRows = new List<Tensor>();
        foreach (var order in _options.Orders)
        {
            var ranks = Ops.Ranks(heatmaps.to(x.device), order == PerturbationOrder.MostRelevantFirst).view(b, 1, h, w);
            var correct = new List<Tensor>();
            var prob = new List<Tensor>();
            foreach (var k in ks)
            {
                var xp = k == 0 ? x : torch.where(ranks < k, baseline, x);
                var logits = Ops.Logits(model, xp);
                // per sample (0/1), so that each sample's own curve gives its AUC; the batch sum of 0/1 values is exact
                correct.Add(logits.argmax(1).eq(y).to(ScalarType.Float64));
                prob.Add(logits.to(ScalarType.Float64).softmax(1).gather(1, y.unsqueeze(1)).sum());
            }

            correctRows.Add(torch.stack(correct));
            probRows.Add(torch.stack(prob));
        }

        // one transfer per batch: the batch's sums are added exactly on the host, the per-sample hits give per-sample AUCs
        var hits = torch.stack(correctRows); // [orders, steps, B]
        var both = torch.cat(new[] { hits.sum(new long[] { 2 }).reshape(-1), torch.stack(probRows).reshape(-1), hits.reshape(-1) }).cpu().data<double>().ToArray();
        var half = _options.Orders.Count * _fractions.Length;
        _correct = ExactSum.Add(_correct ?? new ExactSum[half], both[..half]);
        _prob = ExactSum.Add(_prob ?? new ExactSum[half], both[half..(2 * half)]);
        if (_perImageAuc is not null)
        {
            var perSample = both[(2 * half)..];
            for (var i = 0; i < b; i++)
                for (var o = 0; o < _options.Orders.Count; o++)
                    foreach (var schedule in _options.Schedules)
                    {
                        var y01 = schedule.Fractions.Select(f => perSample[(o * _fractions.Length + Array.IndexOf(_fractions, f)) * b + i]).ToArray();
                        _perImageAuc.Add(100 * PerturbationCurve.Trapezoid(schedule.Fractions, y01));
                    }
        }
        _samples += (int)b;
    }

    /// <summary>Curves per sample: orders × schedules, in the order of <see cref="Result"/>.</summary>
    private int CurveCount => _options.Orders.Count * _options.Schedules.Count;

    /// <summary>
    /// The per-image column names of <see cref="PerImageValues"/>: one AUC per curve of <see cref="Result"/>
    /// (<c>auc_plus_coarse</c>, <c>auc_minus_coarse</c>, <c>auc_plus_fine</c>, <c>auc_minus_fine</c> for the default options).
    /// </summary>
    public IReadOnlyList<string> PerImageColumns => _options.Orders.SelectMany(o => _options.Schedules.Select(s => AucColumn(o, s.Name))).ToArray();

    /// <summary>The per-image column of the AUC of one (order, schedule): <c>auc_plus_&lt;schedule&gt;</c> (most relevant first) or <c>auc_minus_&lt;schedule&gt;</c>.</summary>
    /// <param name="order">Order.</param>
    /// <param name="schedule">Schedule name.</param>
    public static string AucColumn(PerturbationOrder order, string schedule) =>
        RootDtd.Evaluation.Results.ResultTable.ColumnId((order == PerturbationOrder.MostRelevantFirst ? "AUC+ " : "AUC− ") + schedule);

    /// <summary>
    /// Per sample, the AUC of each curve computed on that sample alone (its accuracy is 0 or 1 at every step); the curve's
    /// AUC is their mean (the trapezoid is linear in the accuracies). <see langword="null"/> when a merged state had none.
    /// </summary>
    public PerImageValues? PerImageValues => _perImageAuc is null || _samples == 0 ? null : PerImageValues.FromRows(PerImageColumns, _samples, _perImageAuc);

    /// <summary>The accumulated sums (for sharded and resumed evaluations: <see cref="Merge"/> adds them exactly).</summary>
    public PerturbationState State => new(_samples, _fractions, _options.Orders.ToArray(), _correct ?? new ExactSum[_options.Orders.Count * _fractions.Length],
        _prob ?? new ExactSum[_options.Orders.Count * _fractions.Length], _perImageAuc?.ToArray());

    /// <summary>Adds the sums of another accumulator with the same orders and fractions (another shard, an earlier part of a resumed run).</summary>
    /// <param name="state">Its <see cref="State"/>.</param>
    public void Merge(PerturbationState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (!state.Fractions.SequenceEqual(_fractions) || !state.Orders.SequenceEqual(_options.Orders))
            throw new ArgumentException("The perturbation state was made with other fractions or orders.", nameof(state));
        if (state.Samples == 0) return;
        if (state.PerImageAuc is { } p && p.Count != state.Samples * CurveCount)
            throw new ArgumentException($"A perturbation state of {state.Samples} samples has {p.Count} per-image AUCs; expected {state.Samples * CurveCount}.", nameof(state));
        _correct = ExactSum.Add(_correct ?? new ExactSum[state.Correct.Count], state.Correct.ToArray());
        _prob = ExactSum.Add(_prob ?? new ExactSum[state.Probability.Count], state.Probability.ToArray());
        _samples += state.Samples;
        // a state without per-image AUCs (an older file) leaves the whole accumulator without them
        if (state.PerImageAuc is null) _perImageAuc = null;
        else _perImageAuc?.AddRange(state.PerImageAuc);
    }

    /// <summary>The curves.</summary>
    /// <param name="method">Method name stored in the curves.</param>
    /// <returns>One curve per (order, schedule), orders outer.</returns>
    public IReadOnlyList<PerturbationCurve> Result(string method)
    {
        if (_correct is null || _samples == 0) throw new InvalidOperationException("No samples were accumulated.");
        var correct = _correct.Select(v => v.ToDouble()).ToArray();
        var prob = _prob!.Select(v => v.ToDouble()).ToArray();
        var curves = new List<PerturbationCurve>();
        for (int o = 0; o < _options.Orders.Count; o++)
        {
            foreach (var s in _options.Schedules)
            {
                var idx = s.Fractions.Select(f => Array.IndexOf(_fractions, f)).ToArray();
                curves.Add(new PerturbationCurve(
                    method, _options.Orders[o], s.Name, s.Fractions.ToArray(),
                    idx.Select(i => correct[o * _fractions.Length + i] / _samples).ToArray(),
                    idx.Select(i => prob[o * _fractions.Length + i] / _samples).ToArray(),
                    _samples));
            }
        }

        return curves;
    }

    /// <inheritdoc />
    public void Dispose()
    {
    }

    private Tensor Baseline(long channels, ScalarType dtype, Device device)
    {
        // With a per-pixel mean image (Caffe/CNTK preprocessing) a black pixel has a different value at every position.
        if (_options.Baseline == PerturbationBaseline.Black && _options.Normalization.HasMeanImage)
        {
            using var lower = _options.Normalization.LowerBound();
            return lower.to(dtype, device);
        }

        double[] values = _options.Baseline switch
        {
            PerturbationBaseline.Black => _options.Normalization.Mean.Select((m, c) => -(double)m / _options.Normalization.Std[c]).ToArray(),
            PerturbationBaseline.Custom => _options.CustomBaseline!.ToArray(),
            _ => new double[channels],
        };
        if (values.Length != channels)
            throw new ArgumentException($"The baseline has {values.Length} channel values but the images have {channels} channels.", "options");
        return torch.tensor(values, new long[] { 1, channels, 1, 1 }).to(dtype, device);
    }
}

/// <summary>
/// Pixel perturbation (Chefer et al.'s positive/negative perturbation test): remove the top-k pixels ranked by
/// relevance (all channels), re-classify, and record accuracy against the true label per removed fraction.
/// </summary>
public static class PixelPerturbation
{
    /// <summary>Runs the test over a dataset (preprocess → batch → explain → perturb → aggregate).</summary>
    /// <param name="model">Normalised batch → logits [B,K].</param>
    /// <param name="explain">Heatmap source.</param>
    /// <param name="data">Batches (each is disposed after use).</param>
    /// <param name="options">Options.</param>
    /// <param name="method">Method name for the curves.</param>
    /// <param name="progress">Optional progress, reported after every batch.</param>
    /// <param name="cancellationToken">Checked before every batch; a cancelled call throws <see cref="OperationCanceledException"/> and returns nothing partial.</param>
    /// <returns>One curve per (order, schedule).</returns>
    public static IReadOnlyList<PerturbationCurve> Evaluate(
        Func<Tensor, Tensor> model, HeatmapSource explain, IEnumerable<EvaluationBatch> data, PixelPerturbationOptions? options = null,
        string method = "method", IProgress<EvaluationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(explain);
        ArgumentNullException.ThrowIfNull(data);
        options ??= new PixelPerturbationOptions();
        using var acc = new PixelPerturbationAccumulator(options);
        foreach (var batch in data)
        {
            using (batch)
            using (var scope = torch.NewDisposeScope())
            {
                cancellationToken.ThrowIfCancellationRequested();
                var x = options.Device is null ? batch.Images : batch.Images.to(options.Device);
                var y = batch.Labels.to(ScalarType.Int64, x.device);
                var targets = Ops.Targets(options.Target, model, x, y);
                var heat = Ops.Heatmap(explain, x, targets);
                acc.Add(model, x, y, heat);
            }

            progress?.Report(new EvaluationProgress("pixel-perturbation", acc.Samples, null));
        }

        return acc.Result(method);
    }
}
