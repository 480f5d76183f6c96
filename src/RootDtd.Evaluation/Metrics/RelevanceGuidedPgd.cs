using RootDtd.Evaluation.Results;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Metrics;

/// <summary>Options of <see cref="RelevanceGuidedPgd"/>.</summary>
public sealed record PgdOptions
{
    /// <summary>L∞ radius in pixel units ([0,1] scale). Default 8/255.</summary>
    public double Epsilon { get; init; } = 8.0 / 255;

    /// <summary>Step size in pixel units, or <see langword="null"/> for Epsilon / 4.</summary>
    public double? StepSize { get; init; }

    /// <summary>Maximum iterations. Default 20.</summary>
    public int MaxIterations { get; init; } = 20;

    /// <summary>Pixels perturbed per image, or <see langword="null"/> for round(500 · H · W / 224²) (at least 1).</summary>
    public int? TopK { get; init; }

    /// <summary>Normalisation of the inputs (ε and the valid box are converted per channel). Default ImageNet.</summary>
    public ImageNormalization Normalization { get; init; } = ImageNormalization.ImageNet;

    /// <summary>Recompute the heatmap at every iteration (default) or once on the clean input.</summary>
    public bool RecomputeHeatmap { get; init; } = true;

    /// <summary>Device the batches are moved to, or <see langword="null"/> to keep them where they are.</summary>
    public Device? Device { get; init; }

    /// <summary>k for an H×W image under these options.</summary>
    /// <param name="height">Image height.</param>
    /// <param name="width">Image width.</param>
    /// <returns>Number of perturbed pixels.</returns>
    public int ResolveTopK(long height, long width)
    {
        int k = TopK ?? (int)Math.Max(1, Math.Round(500.0 * height * width / (224.0 * 224.0), MidpointRounding.AwayFromZero));
        return (int)Math.Min(k, height * width);
    }

    internal void Validate()
    {
        if (!(Epsilon > 0) || !double.IsFinite(Epsilon)) throw new ArgumentOutOfRangeException(nameof(Epsilon), Epsilon, "Epsilon must be finite and > 0.");
        if (StepSize is double s && (!(s > 0) || !double.IsFinite(s))) throw new ArgumentOutOfRangeException(nameof(StepSize), s, "StepSize must be finite and > 0.");
        if (MaxIterations <= 0) throw new ArgumentOutOfRangeException(nameof(MaxIterations), MaxIterations, "MaxIterations must be positive.");
        if (TopK is <= 0) throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "TopK must be positive.");
        ArgumentNullException.ThrowIfNull(Normalization);
    }
}

/// <summary>Per-sample outcome of an attack on one batch (tensors on the batch's device; dispose after use).</summary>
public sealed class PgdBatchResult : IDisposable
{
    internal PgdBatchResult(Tensor adversarial, Tensor initiallyCorrect, Tensor success, Tensor iterations, Tensor perturbedPixels)
    {
        Adversarial = adversarial;
        InitiallyCorrect = initiallyCorrect;
        Success = success;
        Iterations = iterations;
        PerturbedPixels = perturbedPixels;
    }

    /// <summary>Final inputs [B,C,H,W] (normalised): the first misclassified iterate for successful samples, else the last iterate.</summary>
    public Tensor Adversarial { get; }

    /// <summary>Bool [B]: the clean input was classified correctly (only these are attacked).</summary>
    public Tensor InitiallyCorrect { get; }

    /// <summary>Bool [B]: the attack flipped the prediction.</summary>
    public Tensor Success { get; }

    /// <summary>Int64 [B]: iteration of the first misclassification (1-based), 0 if none.</summary>
    public Tensor Iterations { get; }

    /// <summary>Bool [B,H,W]: union of the top-k pixel sets that were allowed to change.</summary>
    public Tensor PerturbedPixels { get; }

    /// <inheritdoc />
    public void Dispose()
    {
        Adversarial.Dispose();
        InitiallyCorrect.Dispose();
        Success.Dispose();
        Iterations.Dispose();
        PerturbedPixels.Dispose();
    }
}

/// <summary>Aggregated attack statistics.</summary>
/// <param name="Method">Method name (the heatmap that chose the pixels).</param>
/// <param name="Samples">All samples.</param>
/// <param name="InitiallyCorrect">Samples classified correctly before the attack.</param>
/// <param name="Successes">Initially correct samples whose prediction flipped.</param>
/// <param name="MeanIterations">Mean iteration of first misclassification over successful attacks (NaN if none).</param>
public sealed record PgdResult(string Method, int Samples, int InitiallyCorrect, int Successes, double MeanIterations)
{
    /// <summary>Successes / initially correct samples.</summary>
    public double SuccessRate => InitiallyCorrect > 0 ? (double)Successes / InitiallyCorrect : double.NaN;

    /// <summary>Clean accuracy: initially correct / samples.</summary>
    public double CleanAccuracy => Samples > 0 ? (double)InitiallyCorrect / Samples : double.NaN;

    /// <summary>Accuracy after the attack: (initially correct − successes) / samples.</summary>
    public double PostAttackAccuracy => Samples > 0 ? (double)(InitiallyCorrect - Successes) / Samples : double.NaN;

    /// <summary>Column names of <see cref="ToValues"/>.</summary>
    public static IReadOnlyList<string> Columns { get; } = new[] { "success rate", "mean iterations", "clean acc", "post-attack acc" };

    /// <summary>Values keyed by <see cref="Columns"/>.</summary>
    /// <returns>Name → value.</returns>
    public IReadOnlyDictionary<string, double> ToValues() => new Dictionary<string, double>
    {
        ["success rate"] = SuccessRate, ["mean iterations"] = MeanIterations, ["clean acc"] = CleanAccuracy, ["post-attack acc"] = PostAttackAccuracy,
    };

    /// <summary>A one-row table.</summary>
    /// <returns>The table.</returns>
    public ResultTable ToTable() => new ResultTable("Relevance-guided PGD", Columns).AddRow(Method, ToValues());
}

/// <summary>
/// Relevance-guided PGD (paper §4.1): sign-gradient ascent of the cross-entropy of the true label, restricted to the
/// k most relevant pixels (all channels), projected onto the L∞ ball of radius ε (pixel units, i.e. ε/std_c in
/// normalised space) around the clean input and onto the valid pixel box; each sample stops at its first
/// misclassification.
/// </summary>
public static class RelevanceGuidedPgd
{
    /// <summary>Attacks one batch.</summary>
    /// <param name="model">Normalised batch → logits [B,K]; must be differentiable w.r.t. its input.</param>
    /// <param name="explain">Heatmap source choosing the pixels (called with the true labels).</param>
    /// <param name="images">Normalised clean images [B,C,H,W].</param>
    /// <param name="labels">True labels [B].</param>
    /// <param name="options">Options.</param>
    /// <param name="cancellationToken">Checked before every iteration; a cancelled call throws <see cref="OperationCanceledException"/> and returns nothing partial.</param>
    /// <returns>Per-sample outcome.</returns>
    public static PgdBatchResult Attack(Func<Tensor, Tensor> model, HeatmapSource explain, Tensor images, Tensor labels, PgdOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(explain);
        options ??= new PgdOptions();
        options.Validate();
        Check.Images(images, nameof(images), options.Normalization.Channels);
        Check.Labels(labels, images.shape[0], nameof(labels));
        long b = images.shape[0], h = images.shape[2], w = images.shape[3];
        int k = options.ResolveTopK(h, w);

        using var scope = torch.NewDisposeScope();
        var x0 = images.detach();
        var y = labels.to(ScalarType.Int64, x0.device);
        var std = options.Normalization.StdTensor(x0.dtype, x0.device);
        var mean = options.Normalization.MeanTensor(x0.dtype, x0.device);
        var eps = options.Epsilon / std;
        var alpha = (options.StepSize ?? options.Epsilon / 4) / std;
        var lower = torch.maximum(x0 - eps, (0 - mean) / std);
        var upper = torch.minimum(x0 + eps, (1 - mean) / std);

        Tensor Predict(Tensor x)
        {
            using var noGrad = torch.no_grad();
            return Ops.Logits(model, x).argmax(1);
        }

        Tensor TopK(Tensor x) => Ops.Ranks(Ops.Heatmap(explain, x, y), mostRelevantFirst: true).lt(k).view(b, 1, h, w);

        var initiallyCorrect = Predict(x0).eq(y);
        var active = initiallyCorrect.clone();
        var success = torch.zeros_like(initiallyCorrect);
        var iterations = torch.zeros(b, dtype: ScalarType.Int64, device: x0.device);
        var perturbed = torch.zeros(b, 1, h, w, dtype: ScalarType.Bool, device: x0.device);
        var xAdv = x0.clone();
        Tensor? fixedMask = options.RecomputeHeatmap ? null : TopK(x0);

        for (int t = 1; t <= options.MaxIterations; t++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (!active.any().item<bool>()) break; // one sync per iteration
            using var step = torch.NewDisposeScope();
            var mask = (fixedMask ?? TopK(xAdv)).logical_and(active.view(b, 1, 1, 1));
            var grad = InputGradient(model, xAdv, y);
            var next = torch.minimum(torch.maximum(xAdv + alpha * grad.sign() * mask.to(x0.dtype), lower), upper);
            xAdv = torch.where(active.view(b, 1, 1, 1), next, xAdv).MoveToOuterDisposeScope();
            perturbed = perturbed.logical_or(mask).MoveToOuterDisposeScope();
            var flipped = active.logical_and(Predict(xAdv).ne(y));
            iterations = torch.where(flipped, torch.full_like(iterations, t), iterations).MoveToOuterDisposeScope();
            success = success.logical_or(flipped).MoveToOuterDisposeScope();
            active = active.logical_and(flipped.logical_not()).MoveToOuterDisposeScope();
        }

        return new PgdBatchResult(
            xAdv.MoveToOuterDisposeScope(), initiallyCorrect.MoveToOuterDisposeScope(), success.MoveToOuterDisposeScope(),
            iterations.MoveToOuterDisposeScope(), perturbed.squeeze(1).MoveToOuterDisposeScope());
    }

    /// <summary>Attacks a dataset and aggregates the statistics.</summary>
    /// <param name="model">Normalised batch → logits [B,K].</param>
    /// <param name="explain">Heatmap source.</param>
    /// <param name="data">Batches (each is disposed after use).</param>
    /// <param name="options">Options.</param>
    /// <param name="method">Method name.</param>
    /// <param name="progress">Optional progress, reported after every batch.</param>
    /// <param name="cancellationToken">Checked before every batch and every iteration; a cancelled call throws <see cref="OperationCanceledException"/> and returns nothing partial.</param>
    /// <returns>Aggregated statistics.</returns>
    public static PgdResult Evaluate(
        Func<Tensor, Tensor> model, HeatmapSource explain, IEnumerable<EvaluationBatch> data, PgdOptions? options = null,
        string method = "method", IProgress<EvaluationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        options ??= new PgdOptions();
        int samples = 0, correct = 0, successes = 0;
        long iterSum = 0;
        foreach (var batch in data)
        {
            using (batch)
            using (var scope = torch.NewDisposeScope())
            {
                cancellationToken.ThrowIfCancellationRequested();
                var x = options.Device is null ? batch.Images : batch.Images.to(options.Device);
                using var r = Attack(model, explain, x, batch.Labels, options, cancellationToken);
                var stats = torch.stack(new[]
                {
                    r.InitiallyCorrect.sum(), r.Success.sum(), r.Iterations.sum(),
                }).cpu().data<long>().ToArray(); // one transfer per batch, for reporting
                samples += batch.Count;
                correct += (int)stats[0];
                successes += (int)stats[1];
                iterSum += stats[2];
            }

            progress?.Report(new EvaluationProgress("relevance-guided-pgd", samples, null));
        }

        return new PgdResult(method, samples, correct, successes, successes > 0 ? (double)iterSum / successes : double.NaN);
    }

    /// <summary>∇x Σ CE(model(x), y), validated so that autograd cannot abort the process.</summary>
    private static Tensor InputGradient(Func<Tensor, Tensor> model, Tensor x, Tensor y)
    {
        using var enable = torch.enable_grad();
        var xi = x.detach().requires_grad_(true);
        var logits = Ops.Logits(model, xi);
        if (!logits.requires_grad)
            throw new InvalidOperationException("The model output does not require grad: the attack needs a model that is differentiable with respect to its input (do not run it under no_grad or detach the input).");
        var loss = torch.nn.functional.cross_entropy(logits, y, reduction: nn.Reduction.Sum);
        return Grad.Of(loss, xi, "model output");
    }
}

/// <summary>Safe wrapper around torch.autograd.grad (which aborts the process on a libtorch error).</summary>
internal static class Grad
{
    public static Tensor Of(Tensor scalar, Tensor input, string what)
    {
        if (!input.requires_grad) throw new InvalidOperationException("Internal error: the gradient input does not require grad.");
        if (!scalar.requires_grad)
            throw new InvalidOperationException($"The {what} does not depend on the input through autograd (it does not require grad).");
        var g = torch.autograd.grad(new[] { scalar }, new[] { input }, allow_unused: true)[0];
        if (g is null || g.IsInvalid || g.Handle == IntPtr.Zero)
            throw new InvalidOperationException($"The {what} does not depend on the input (its gradient is undefined).");
        return g;
    }
}
