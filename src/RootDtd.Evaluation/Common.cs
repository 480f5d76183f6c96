using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation;

/// <summary>
/// Computes a relevance heatmap for a batch: <paramref name="inputs"/> is a normalised batch [B,C,H,W],
/// <paramref name="targets"/> an int64 vector [B] of class indices; the result must be [B,H,W] (finite values).
/// </summary>
/// <param name="inputs">Normalised input batch [B,C,H,W].</param>
/// <param name="targets">Class to explain per sample, int64 [B].</param>
/// <returns>Heatmap [B,H,W] on the device of <paramref name="inputs"/>.</returns>
public delegate Tensor HeatmapSource(Tensor inputs, Tensor targets);

/// <summary>Which class a metric asks the heatmap source to explain.</summary>
public enum ExplanationTarget
{
    /// <summary>The ground-truth label of each sample (paper code, Chefer's <c>--vis-class target</c>).</summary>
    TrueLabel,

    /// <summary>The model's top-1 prediction on the clean input (Chefer's segmentation test).</summary>
    Predicted,
}

/// <summary>Progress of a long-running evaluation, reported once per batch.</summary>
/// <param name="Stage">Name of the running metric or stage, for example <c>"pixel-perturbation"</c>.</param>
/// <param name="SamplesDone">Samples processed so far.</param>
/// <param name="SamplesTotal">Total number of samples when known, otherwise <see langword="null"/>.</param>
public readonly record struct EvaluationProgress(string Stage, int SamplesDone, int? SamplesTotal);

/// <summary>
/// One batch of evaluation data: normalised images [B,C,H,W] (float), labels int64 [B] and optional masks [B,H,W]
/// (integer; 0 = background, 255 = ignore, any other value = the labelled object). Disposing the batch disposes
/// its tensors.
/// </summary>
public sealed class EvaluationBatch : IDisposable
{
    /// <summary>Creates a batch; the batch takes ownership of the tensors.</summary>
    /// <param name="images">Normalised images [B,C,H,W], floating point.</param>
    /// <param name="labels">Labels, integer [B].</param>
    /// <param name="masks">Optional masks [B,H,W], integer.</param>
    /// <param name="ids">Optional sample ids (length B).</param>
    public EvaluationBatch(Tensor images, Tensor labels, Tensor? masks = null, IReadOnlyList<string>? ids = null)
    {
        Check.Images(images, nameof(images));
        Check.Labels(labels, images.shape[0], nameof(labels));
        if (masks is not null) Check.Masks(masks, images, nameof(masks));
        if (ids is not null && ids.Count != images.shape[0])
            throw new ArgumentException($"Expected {images.shape[0]} ids (one per image), got {ids.Count}.", nameof(ids));
        Images = images;
        Labels = labels;
        Masks = masks;
        Ids = ids;
    }

    /// <summary>Normalised images [B,C,H,W].</summary>
    public Tensor Images { get; }

    /// <summary>Labels int64 [B].</summary>
    public Tensor Labels { get; }

    /// <summary>Masks [B,H,W] (0 background, 255 ignore, other values foreground) or <see langword="null"/>.</summary>
    public Tensor? Masks { get; }

    /// <summary>Sample ids, when known.</summary>
    public IReadOnlyList<string>? Ids { get; }

    /// <summary>Number of samples B.</summary>
    public int Count => (int)Images.shape[0];

    /// <summary>
    /// Splits whole-dataset tensors into batches (views; the returned batches own new handles, the caller keeps
    /// ownership of the inputs).
    /// </summary>
    /// <param name="images">Normalised images [N,C,H,W].</param>
    /// <param name="labels">Labels [N].</param>
    /// <param name="masks">Optional masks [N,H,W].</param>
    /// <param name="batchSize">Samples per batch (&gt; 0).</param>
    /// <returns>Lazily created batches; dispose each after use.</returns>
    public static IEnumerable<EvaluationBatch> Split(Tensor images, Tensor labels, Tensor? masks, int batchSize)
    {
        Check.Images(images, nameof(images));
        Check.Labels(labels, images.shape[0], nameof(labels));
        if (masks is not null) Check.Masks(masks, images, nameof(masks));
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "Batch size must be positive.");
        return Iterate();

        IEnumerable<EvaluationBatch> Iterate()
        {
            long n = images.shape[0];
            for (long s = 0; s < n; s += batchSize)
            {
                long len = Math.Min(batchSize, n - s);
                yield return new EvaluationBatch(images.narrow(0, s, len), labels.narrow(0, s, len), masks?.narrow(0, s, len));
            }
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Images.Dispose();
        Labels.Dispose();
        Masks?.Dispose();
    }
}

/// <summary>Argument validation shared by the evaluation code.</summary>
internal static class Check
{
    public static void Images(Tensor images, string name, int? channels = null)
    {
        ArgumentNullException.ThrowIfNull(images, name);
        if (images.dim() != 4)
            throw new ArgumentException($"Expected images of shape [B,C,H,W], got [{string.Join(",", images.shape)}].", name);
        if (!images.is_floating_point())
            throw new ArgumentException($"Expected floating-point images, got {images.dtype}.", name);
        if (channels is int c && images.shape[1] != c)
            throw new ArgumentException($"Expected {c} channels, got {images.shape[1]} (shape [{string.Join(",", images.shape)}]).", name);
    }

    public static void Labels(Tensor labels, long batch, string name)
    {
        ArgumentNullException.ThrowIfNull(labels, name);
        if (labels.dim() != 1 || labels.shape[0] != batch)
            throw new ArgumentException($"Expected labels of shape [{batch}], got [{string.Join(",", labels.shape)}].", name);
        if (labels.is_floating_point() || labels.dtype == ScalarType.Bool)
            throw new ArgumentException($"Expected integer labels, got {labels.dtype}.", name);
    }

    public static void Masks(Tensor masks, Tensor images, string name)
    {
        ArgumentNullException.ThrowIfNull(masks, name);
        if (masks.dim() != 3 || masks.shape[0] != images.shape[0] || masks.shape[1] != images.shape[2] || masks.shape[2] != images.shape[3])
            throw new ArgumentException(
                $"Expected masks of shape [{images.shape[0]},{images.shape[2]},{images.shape[3]}], got [{string.Join(",", masks.shape)}].", name);
        if (masks.is_floating_point())
            throw new ArgumentException($"Expected integer masks (0 background, 255 ignore, other values foreground), got {masks.dtype}.", name);
    }

    /// <summary>Validates a heatmap against the batch; one device sync for the finiteness check.</summary>
    public static void Heatmap(Tensor heatmap, long batch, long height, long width, string name)
    {
        ArgumentNullException.ThrowIfNull(heatmap, name);
        if (heatmap.dim() != 3 || heatmap.shape[0] != batch || heatmap.shape[1] != height || heatmap.shape[2] != width)
            throw new ArgumentException(
                $"Expected a heatmap of shape [{batch},{height},{width}] ([B,H,W] matching the images), got [{string.Join(",", heatmap.shape)}].", name);
        if (!heatmap.is_floating_point())
            throw new ArgumentException($"Expected a floating-point heatmap, got {heatmap.dtype}.", name);
        using var finite = heatmap.isfinite().all();
        if (!finite.item<bool>())
            throw new ArgumentException("The heatmap contains NaN or infinite values.", name);
    }

    public static void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(name, value, "Must be positive.");
    }
}

/// <summary>Tensor helpers shared by the metrics.</summary>
internal static class Ops
{
    /// <summary>
    /// Rank of each pixel [B,N] (0 = removed first). Ties are broken by the flattened pixel index (row-major):
    /// the lower index comes first, for both orders.
    /// </summary>
    public static Tensor Ranks(Tensor heatmap, bool mostRelevantFirst)
    {
        using var scope = torch.NewDisposeScope();
        var flat = heatmap.reshape(heatmap.shape[0], -1);
        var (_, order) = flat.sort(dim: 1, descending: mostRelevantFirst, stable: true);
        long n = flat.shape[1];
        var positions = torch.arange(n, dtype: ScalarType.Int64, device: heatmap.device).expand(flat.shape[0], n);
        var ranks = torch.zeros(flat.shape[0], n, dtype: ScalarType.Int64, device: heatmap.device).scatter_(1, order, positions);
        return ranks.MoveToOuterDisposeScope();
    }

    /// <summary>Targets to explain: labels, or the clean top-1 prediction.</summary>
    public static Tensor Targets(ExplanationTarget target, Func<Tensor, Tensor>? model, Tensor x, Tensor labels)
    {
        if (target == ExplanationTarget.TrueLabel) return labels.to(ScalarType.Int64).alias();
        if (model is null) throw new ArgumentNullException(nameof(model), "A model is required when the explanation target is the prediction.");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        return Logits(model, x).argmax(1).MoveToOuterDisposeScope();
    }

    public static Tensor Logits(Func<Tensor, Tensor> model, Tensor x)
    {
        var logits = model(x) ?? throw new InvalidOperationException("The model returned null.");
        if (logits.dim() != 2 || logits.shape[0] != x.shape[0])
            throw new InvalidOperationException($"The model must return logits [B,K] with B = {x.shape[0]}, got [{string.Join(",", logits.shape)}].");
        return logits;
    }

    public static Tensor Heatmap(HeatmapSource source, Tensor x, Tensor targets)
    {
        var h = source(x, targets) ?? throw new InvalidOperationException("The heatmap source returned null.");
        Check.Heatmap(h, x.shape[0], x.shape[2], x.shape[3], "heatmap");
        return h.detach();
    }
}
