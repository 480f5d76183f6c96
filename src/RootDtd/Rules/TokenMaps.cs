using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Rules;

/// <summary>What a <see cref="TokenMapMethod"/> may read about one explanation of a transformer.</summary>
public sealed class TokenMapContext
{
    private readonly Func<IReadOnlyDictionary<int, Tensor>> _gradient;
    private IReadOnlyDictionary<int, Tensor>? _gradientCache;

    internal TokenMapContext(RelevanceGraph graph, TokenLayout layout, IReadOnlyList<Tensor> outputs, IReadOnlyDictionary<int, Tensor> relevance,
        Func<IReadOnlyDictionary<int, Tensor>> gradient, ExplanationRecorder recorder)
    {
        Graph = graph;
        Layout = layout;
        Outputs = outputs;
        AttentionRelevance = relevance;
        _gradient = gradient;
        Recorder = recorder;
    }

    /// <summary>The graph.</summary>
    public RelevanceGraph Graph { get; }

    /// <summary>Class token and patch grid.</summary>
    public TokenLayout Layout { get; }

    /// <summary>Every node's recorded output (index = node index).</summary>
    public IReadOnlyList<Tensor> Outputs { get; }

    /// <summary>The softmax (attention probability) nodes in forward order.</summary>
    public IReadOnlyList<int> AttentionNodes => Graph.SoftmaxNodes;

    /// <summary>The attention probabilities A [B, H, N, N] of every block, in forward order.</summary>
    public IReadOnlyList<Tensor> Attention => AttentionNodes.Select(i => Outputs[i]).ToList();

    /// <summary>Relevance at every softmax output from the method's backward walk (empty when the method has none).</summary>
    public IReadOnlyDictionary<int, Tensor> AttentionRelevance { get; }

    /// <summary>∂ target logit / ∂A at every softmax output (plain gradient of the unmodified model; computed on first use).</summary>
    public IReadOnlyDictionary<int, Tensor> AttentionGradient => _gradientCache ??= _gradient();

    /// <summary>Keeps intermediate tensors (when <see cref="ExplainerOptions.RecordRoots"/> is set).</summary>
    public ExplanationRecorder Recorder { get; }
}

/// <summary>
/// A method whose result is a map over the patch tokens [B, N_patches] (attention rollout, raw attention, Chefer's
/// transformer attribution). The explainer shows it on the image by bilinear upsampling.
/// </summary>
public abstract class TokenMapMethod
{
    /// <summary>Whether the composite's backward walk must run (Chefer: yes; rollout: no).</summary>
    public abstract bool NeedsBackwardWalk { get; }

    /// <summary>
    /// Whether <see cref="Compute"/> reads <see cref="TokenMapContext.AttentionGradient"/>: then the pass runs its one
    /// forward of the graph under autograd and takes the gradient from it, instead of a second forward (default false).
    /// </summary>
    public virtual bool NeedsAttentionGradient => false;

    /// <summary>Computes the class-token row over the patch tokens, [B, N_patches].</summary>
    public abstract Tensor Compute(TokenMapContext context);

    /// <inheritdoc />
    public abstract override string ToString();

    /// <summary>Identity matrices [B, N, N] like the attention of <paramref name="like"/> ([B, H, N, N]).</summary>
    protected static Tensor Identity(Tensor like)
    {
        var n = like.shape[^1];
        return torch.eye(n, dtype: like.dtype, device: like.device).expand(like.shape[0], n, n);
    }

    /// <summary>Row 0 (the class token) over the patch columns of a joint map [B, N, N].</summary>
    protected static Tensor ClassRow(Tensor joint, TokenLayout layout) => joint.select(1, 0).narrow(1, layout.PrefixTokens, joint.shape[^1] - layout.PrefixTokens);

    /// <summary>Multiplies per-block maps from the left: <c>M_last · … · M_1 · M_0</c>.</summary>
    protected static Tensor Roll(IEnumerable<Tensor> maps)
    {
        Tensor? joint = null;
        foreach (var m in maps) joint = joint is null ? m : m.matmul(joint);
        return joint ?? throw new ExplanationException("The model has no attention (softmax) nodes to roll out.");
    }
}

/// <summary>Attention rollout (Abnar &amp; Zuidema 2020): <c>M_i = (Ā_i + I)/rowsum</c>, Ā the head mean; the map is row 0 of M_L·…·M_0.</summary>
public sealed class RolloutTokenMap : TokenMapMethod
{
    /// <inheritdoc />
    public override bool NeedsBackwardWalk => false;

    /// <inheritdoc />
    public override Tensor Compute(TokenMapContext context)
    {
        var maps = context.Attention.Select(a =>
        {
            var m = a.mean(new long[] { 1 }) + Identity(a);
            return m / m.sum(-1, keepdim: true);
        });
        return ClassRow(Roll(maps), context.Layout);
    }

    /// <inheritdoc />
    public override string ToString() => "Rollout";
}

/// <summary>Raw attention: the head mean of the last block's attention, class-token row over the patches.</summary>
public sealed class RawAttentionTokenMap : TokenMapMethod
{
    /// <inheritdoc />
    public override bool NeedsBackwardWalk => false;

    /// <inheritdoc />
    public override Tensor Compute(TokenMapContext context)
    {
        var attention = context.Attention;
        if (attention.Count == 0) throw new ExplanationException("The model has no attention (softmax) nodes.");
        return ClassRow(attention[^1].mean(new long[] { 1 }), context.Layout);
    }

    /// <inheritdoc />
    public override string ToString() => "RawAttention";
}

/// <summary>
/// Chefer, Gur &amp; Wolf (2021) transformer attribution: per block <c>cam = mean_h max(∂y/∂A ⊙ R(A), 0)</c> with R(A)
/// the relevance of the attention probabilities from the composite's LRP walk and ∂y/∂A the plain gradient; the map
/// is row 0 of <c>(I + cam_L)·…·(I + cam_0)</c> (no row normalisation). The cams are kept as
/// <c>&lt;softmax node&gt;/cam</c> when roots are recorded.
/// </summary>
public sealed class CheferTokenMap : TokenMapMethod
{
    /// <inheritdoc />
    public override bool NeedsBackwardWalk => true;

    /// <inheritdoc />
    public override bool NeedsAttentionGradient => true;

    /// <inheritdoc />
    public override Tensor Compute(TokenMapContext context)
    {
        var gradient = context.AttentionGradient;
        var maps = new List<Tensor>();
        foreach (var i in context.AttentionNodes)
        {
            var a = context.Outputs[i];
            var relevance = context.AttentionRelevance.TryGetValue(i, out var r) ? r : torch.zeros_like(a);
            using var blockScope = torch.NewDisposeScope();
            var cam = (gradient[i] * relevance).clamp_(min: 0).mean(new long[] { 1 });
            if (context.Recorder.RecordRoots) context.Recorder.Keep(context.Graph.Nodes[i].Name + "/cam", cam.clone());
            maps.Add(blockScope.MoveToOuter(cam + Identity(a)));
        }
        return ClassRow(Roll(maps), context.Layout);
    }

    /// <inheritdoc />
    public override string ToString() => "CheferTransformerAttribution";
}
