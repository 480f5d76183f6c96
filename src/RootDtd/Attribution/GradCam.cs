using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Attribution;

/// <summary>How Grad-CAM weighs the channels of the target layer.</summary>
public enum GradCamWeighting
{
    /// <summary>Grad-CAM (Selvaraju et al. 2017): α_k = mean over positions of ∂y/∂A_k.</summary>
    Mean,

    /// <summary>
    /// Grad-CAM++ (Chattopadhyay et al. 2018), in the closed form of its Eq. 19 with first-order gradients g:
    /// a_ij = g² / (2g² + Σ_ab A_ab g³) (0 where the denominator is 0), α_k = Σ_ij a_ij · ReLU(g_ij).
    /// </summary>
    PlusPlus,
}

/// <summary>
/// Grad-CAM: ReLU(Σ_k α_k A_k) at a target layer's output A [B,K,h,w], upsampled bilinearly (corners not aligned) to the
/// input's H×W and spread evenly over the input channels, so that the heatmap is the CAM. The gradient is that of the
/// target logit through the relevance graph (one forward with autograd and one backward per batch). Default layer
/// (<see cref="DefaultLayer"/>): the module <c>layer4</c> when the model has one (torchvision ResNets), otherwise the
/// output of the last convolution, taken after its ReLU when a ReLU directly follows it (VGG: the last conv's ReLU).
/// </summary>
public sealed class GradCam : AttributionProcedure
{
    /// <summary>Creates the procedure.</summary>
    /// <param name="layer">Module path of the target layer; <see langword="null"/> or empty = <see cref="DefaultLayer"/>.</param>
    /// <param name="weighting">Grad-CAM or Grad-CAM++.</param>
    public GradCam(string? layer = null, GradCamWeighting weighting = GradCamWeighting.Mean)
    {
        Layer = string.IsNullOrWhiteSpace(layer) ? null : layer.Trim();
        Weighting = weighting;
    }

    /// <summary>Module path of the target layer (<see langword="null"/> = the default of the model).</summary>
    public string? Layer { get; }

    /// <summary>Channel weighting.</summary>
    public GradCamWeighting Weighting { get; }

    /// <summary>
    /// The default target layer of <paramref name="graph"/> as (module path, node index): <c>layer4</c> when present,
    /// else the last convolution unit (or the ReLU reading only it).
    /// </summary>
    public static (string Name, int Node) DefaultLayer(RelevanceGraph graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        if (graph.ModuleOutputs.TryGetValue("layer4", out var l4)) return ("layer4", l4);
        var conv = graph.Units.LastOrDefault(u => u.Unit.Kind == LinearUnitKind.Convolution2d)
            ?? throw new ArgumentException("Grad-CAM needs a convolution layer; the model has none (give layer=<module path>).");
        var node = conv.Index;
        var consumers = graph.Nodes.Where(n => n.Inputs.Contains(conv.Index)).ToList();
        if (consumers.Count == 1 && consumers[0].Kind == NodeKind.Activation && consumers[0].ClampsToNonNegative) node = consumers[0].Index;
        var name = graph.ModuleOutputs.Where(kv => kv.Value == node).Select(kv => kv.Key).OrderByDescending(k => k.Length).FirstOrDefault() ?? graph.Nodes[node].Name;
        return (name, node);
    }

    /// <summary>The (module path, node index) this procedure uses on <paramref name="graph"/>.</summary>
    public (string Name, int Node) ResolveLayer(RelevanceGraph graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        if (Layer is null) return DefaultLayer(graph);
        return graph.ModuleOutputs.TryGetValue(Layer, out var node)
            ? (Layer, node)
            : throw new ArgumentException($"Grad-CAM: the model has no module '{Layer}'. Modules: {string.Join(", ", graph.ModuleOutputs.Keys.Take(60))}.");
    }

    /// <inheritdoc />
    public override AttributionResult Attribute(AttributionContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        using var scope = torch.NewDisposeScope();
        var (name, index) = ResolveLayer(context.Graph);
        var x = context.Input;
        if (x.dim() != 4) throw new ArgumentException($"Grad-CAM needs image inputs [B,C,H,W]; got [{string.Join(", ", x.shape)}].");
        Tensor a, score;
        using (torch.enable_grad())
        {
            var leaf = x.detach().requires_grad_(true);
            var outputs = context.Graph.Forward(leaf);
            a = outputs[index];
            score = context.TargetScore(outputs[context.Graph.OutputIndex], leaf).sum();
        }
        if (a.dim() != 4)
            throw new ArgumentException($"Grad-CAM: the output of '{name}' has shape [{string.Join(", ", a.shape)}]; a feature map [B,K,h,w] is needed (choose a convolutional layer).");
        // validated before autograd.grad, which aborts the process instead of throwing
        if (!a.requires_grad || !score.requires_grad)
            throw new ExplanationException($"Grad-CAM: the target logit does not depend on '{name}' through autograd.");
        var g = torch.autograd.grad(new[] { score }, new[] { a }, allow_unused: true)[0];
        if (g is null || g.IsInvalid) g = torch.zeros_like(a);
        var act = a.detach();
        Tensor weights;
        if (Weighting == GradCamWeighting.Mean)
        {
            weights = g.mean(new long[] { 2, 3 }, keepdim: true);
        }
        else
        {
            var g2 = g.pow(2);
            var g3 = g2 * g;
            var denominator = 2 * g2 + act.sum(new long[] { 2, 3 }, keepdim: true) * g3;
            var alpha = torch.where(denominator.ne(0), g2 / torch.where(denominator.ne(0), denominator, torch.ones_like(denominator)), torch.zeros_like(g2));
            weights = (alpha * torch.nn.functional.relu(g)).sum(new long[] { 2, 3 }, keepdim: true);
        }
        var cam = torch.nn.functional.relu((weights * act).sum(1, keepdim: true));
        var up = torch.nn.functional.interpolate(cam, new[] { x.shape[2], x.shape[3] }, mode: InterpolationMode.Bilinear, align_corners: false).squeeze(1);
        return new AttributionResult(context.SpreadOverChannels(up).MoveToOuterDisposeScope());
    }

    /// <inheritdoc />
    public override string ToString() => $"{(Weighting == GradCamWeighting.Mean ? "Grad-CAM" : "Grad-CAM++")}({Layer ?? "default layer"})";
}
