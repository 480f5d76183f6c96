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
/// On a Vision Transformer (a graph with a <see cref="TokenLayout"/>) a token layer's output [B, N, D] is the feature
/// map: the prefix (class) tokens are dropped and the patch tokens reshaped to the patch grid [B, D, h, w] (channels =
/// the D features); the default layer is the last block's first LayerNorm (<c>blocks.{L−1}.norm1</c>: the tokens the last
/// block attends over, normalised), because the output of the last block reaches the logit only through its class
/// token, so the gradient at its patch tokens is zero.
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
        if (graph.TokenLayout is not null)
        {
            var norm1 = graph.ModuleOutputs.Where(kv => IsBlockNorm1(kv.Key)).OrderBy(kv => kv.Value).LastOrDefault();
            return norm1.Key is not null
                ? (norm1.Key, norm1.Value)
                : throw new ArgumentException("Grad-CAM: the transformer has no module 'blocks.{i}.norm1' (the default target layer of a ViT); give layer=<module path> of a token layer [B, N, D].");
        }
        var conv = graph.Units.LastOrDefault(u => u.Unit.Kind == LinearUnitKind.Convolution2d)
            ?? throw new ArgumentException("Grad-CAM needs a convolution layer; the model has none (give layer=<module path>).");
        var node = conv.Index;
        var consumers = graph.Nodes.Where(n => n.Inputs.Contains(conv.Index)).ToList();
        if (consumers.Count == 1 && consumers[0].Kind == NodeKind.Activation && consumers[0].ClampsToNonNegative) node = consumers[0].Index;
        var name = graph.ModuleOutputs.Where(kv => kv.Value == node).Select(kv => kv.Key).OrderByDescending(k => k.Length).FirstOrDefault() ?? graph.Nodes[node].Name;
        return (name, node);
    }

    private static bool IsBlockNorm1(string path)
    {
        var parts = path.Split('.');
        return parts.Length >= 3 && parts[^1] == "norm1" && parts[^3] == "blocks" && int.TryParse(parts[^2], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out _);
    }

    /// <summary>
    /// The patch tokens of a token layer's output <paramref name="tokens"/> [B, N, D] as a feature map [B, D, h, w]
    /// (prefix tokens dropped, patch t = row·w + column), or <see langword="null"/> when the graph has no token layout.
    /// </summary>
    /// <param name="tokens">Tokens [B, N, D].</param>
    /// <param name="layout">Token layout of the graph.</param>
    /// <param name="name">Module path (for the error).</param>
    /// <returns>The feature map.</returns>
    public static Tensor TokensToGrid(Tensor tokens, TokenLayout layout, string name)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(layout);
        var patches = (long)layout.GridHeight * layout.GridWidth;
        if (tokens.dim() != 3 || tokens.shape[1] != layout.PrefixTokens + patches)
            throw new ArgumentException($"Grad-CAM: the output of '{name}' has shape [{string.Join(", ", tokens.shape)}]; a token layer [B, {layout.PrefixTokens + patches}, D] ({layout.PrefixTokens} class token(s) + {layout.GridHeight}×{layout.GridWidth} patches) or a feature map [B,K,h,w] is needed.");
        return tokens.narrow(1, layout.PrefixTokens, patches).transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], layout.GridHeight, layout.GridWidth);
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
        var layout = context.Graph.TokenLayout;
        if (a.dim() != 4 && !(layout is not null && a.dim() == 3))
            throw new ArgumentException(layout is null
                ? $"Grad-CAM: the output of '{name}' has shape [{string.Join(", ", a.shape)}]; a feature map [B,K,h,w] is needed (choose a convolutional layer)."
                : $"Grad-CAM: the output of '{name}' has shape [{string.Join(", ", a.shape)}]; a token layer [B, N, D] or a feature map [B,K,h,w] is needed (default: '{DefaultLayer(context.Graph).Name}').");
        // validated before autograd.grad, which aborts the process instead of throwing
        if (!a.requires_grad || !score.requires_grad)
            throw new ExplanationException($"Grad-CAM: the target logit does not depend on '{name}' through autograd.");
        if (a.dim() == 3) TokensToGrid(a.detach(), layout!, name).Dispose(); // shape checked before autograd.grad
        var g = torch.autograd.grad(new[] { score }, new[] { a }, allow_unused: true)[0];
        if (g is null || g.IsInvalid) g = torch.zeros_like(a);
        var act = a.detach();
        if (a.dim() == 3)
        {
            act = TokensToGrid(act, layout!, name);
            g = TokensToGrid(g, layout!, name);
            if (!g.ne(0).any().item<bool>())
                throw new ExplanationException($"Grad-CAM: the target logit does not depend on the patch tokens of '{name}' (after the last block only the class token is read); choose an earlier token layer, e.g. the default '{DefaultLayer(context.Graph).Name}'.");
        }
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
