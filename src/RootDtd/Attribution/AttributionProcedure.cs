using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Attribution;

/// <summary>
/// An attribution method that is not one backward walk of relevance rules: Grad-CAM, SmoothGrad, Integrated Gradients,
/// occlusion. A <see cref="Composites.Composite"/> carries one in <see cref="Composites.Composite.Procedure"/>; the
/// <see cref="Explainer"/> validates the input, runs and checks the forward pass, resolves the targets and then hands
/// over to the procedure, which returns the relevance of every input element. Everything stays on the input's device.
/// </summary>
public abstract class AttributionProcedure
{
    /// <summary>Computes the attribution of the context's input for its targets.</summary>
    /// <param name="context">Graph, input, targets, bounds, and the composite's rule walk.</param>
    /// <returns>The relevance of every input element and, optionally, what its per-sample sum should equal.</returns>
    public abstract AttributionResult Attribute(AttributionContext context);

    /// <summary>Most images one forward (or forward + backward) pass of a procedure evaluates at once; larger sets are chunked.</summary>
    public const int MaxImagesPerPass = 16;
}

/// <summary>The outcome of an <see cref="AttributionProcedure"/>.</summary>
/// <param name="InputRelevance">Relevance of every input element (the input's shape). Spatial maps (Grad-CAM, occlusion) are
/// spread evenly over the channels so that the channel sum (the heatmap) is the map itself.</param>
/// <param name="Reference">Per-sample value [B] that Σ relevance should equal (Integrated Gradients: f(x) − f(baseline));
/// <see langword="null"/> = the explained logit.</param>
public sealed record AttributionResult(Tensor InputRelevance, Tensor? Reference = null);

/// <summary>What a procedure sees: the relevance graph, the input, the targets, the input box and the rule walk.</summary>
public sealed class AttributionContext
{
    private readonly Func<Tensor, Tensor> _walk;

    internal AttributionContext(RelevanceGraph graph, Tensor input, long[] targets, Tensor targetIndex, Tensor? inputLow, Tensor? inputHigh,
        ExplanationRecorder recorder, Func<Tensor, Tensor> walk)
    {
        Graph = graph;
        Input = input;
        Targets = targets;
        TargetIndex = targetIndex;
        InputLow = inputLow;
        InputHigh = inputHigh;
        Recorder = recorder;
        _walk = walk;
    }

    /// <summary>The relevance graph (a canonized copy of the model).</summary>
    public RelevanceGraph Graph { get; }

    /// <summary>The input [B, …] (detached).</summary>
    public Tensor Input { get; }

    /// <summary>The explained class of every sample.</summary>
    public long[] Targets { get; }

    /// <summary>The targets as an int64 tensor [B] on the input's device.</summary>
    public Tensor TargetIndex { get; }

    /// <summary>Lowest valid input (the input's shape), when the explainer has bounds.</summary>
    public Tensor? InputLow { get; }

    /// <summary>Highest valid input (the input's shape), when the explainer has bounds.</summary>
    public Tensor? InputHigh { get; }

    /// <summary>Where diagnostics and kept tensors go.</summary>
    public ExplanationRecorder Recorder { get; }

    /// <summary>Batch size of <see cref="Input"/>.</summary>
    public int Batch => (int)Input.shape[0];

    /// <summary>
    /// The input relevance that the composite's rules give at <paramref name="x"/> (shape of <see cref="Input"/>) for the
    /// same targets: one forward and one backward walk (the start relevance and input multiplication of the composite).
    /// </summary>
    public Tensor Walk(Tensor x)
    {
        CheckShape(x, nameof(x));
        return _walk(x);
    }

    /// <summary>The same context at another input of the same shape (e.g. a noisy copy); bounds and targets are kept.</summary>
    public AttributionContext WithInput(Tensor x)
    {
        CheckShape(x, nameof(x));
        return new AttributionContext(Graph, x, Targets, TargetIndex, InputLow, InputHigh, Recorder, _walk);
    }

    /// <summary>
    /// The target logit of every image of <paramref name="x"/> ([k·B, …]: k copies of the batch, copy-major) through the
    /// graph, differentiable when <paramref name="x"/> requires grad. Returns [k·B].
    /// </summary>
    public Tensor TargetScore(Tensor x) => TargetScore(Graph.Forward(x)[Graph.OutputIndex], x);

    /// <summary>The target logits of graph <paramref name="logits"/> [k·B, K] computed from <paramref name="x"/> (see <see cref="TargetScore(Tensor)"/>).</summary>
    public Tensor TargetScore(Tensor logits, Tensor x)
    {
        var copies = x.shape[0] / Batch;
        if (copies * Batch != x.shape[0])
            throw new ArgumentException($"Expected a multiple of the batch size {Batch} images; got {x.shape[0]}.", nameof(x));
        var index = copies == 1 ? TargetIndex : TargetIndex.repeat(copies);
        return logits.gather(1, index.unsqueeze(1)).squeeze(1);
    }

    /// <summary>Spreads a spatial map [B,H,W] evenly over the input's channels ([B,C,H,W], channel sum = the map).</summary>
    public Tensor SpreadOverChannels(Tensor map)
    {
        if (Input.dim() != 4) throw new ArgumentException($"A spatial map needs an image input [B,C,H,W]; got [{string.Join(", ", Input.shape)}].");
        var channels = Input.shape[1];
        return (map.unsqueeze(1) / channels).expand(Input.shape).contiguous();
    }

    private void CheckShape(Tensor x, string name)
    {
        ArgumentNullException.ThrowIfNull(x, name);
        if (!x.shape.SequenceEqual(Input.shape))
            throw new ArgumentException($"Expected an input of shape [{string.Join(", ", Input.shape)}]; got [{string.Join(", ", x.shape)}].", name);
    }
}
