using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Graph;

/// <summary>
/// The model as a list of operations in forward order, built from the module tree by <see cref="GraphBuilder"/> and
/// rewritten by canonizers. Its <see cref="Forward"/> records every node's output; the explainer then walks the nodes
/// backwards, applying one rule per node.
/// </summary>
public sealed class RelevanceGraph : IDisposable
{
    private readonly List<GraphNode> _nodes;
    private readonly Dictionary<string, int> _moduleOutputs;

    internal RelevanceGraph(List<GraphNode> nodes, Dictionary<string, int> moduleOutputs, int output)
    {
        _nodes = nodes;
        _moduleOutputs = moduleOutputs;
        OutputIndex = output;
        Reindex();
    }

    /// <summary>The nodes in forward order; node 0 is the input.</summary>
    public IReadOnlyList<GraphNode> Nodes => _nodes;

    /// <summary>Index of the node whose output is the model's output (the logits).</summary>
    public int OutputIndex { get; private set; }

    /// <summary>For every module path of the model, the node whose output is that module's output.</summary>
    public IReadOnlyDictionary<string, int> ModuleOutputs => _moduleOutputs;

    /// <summary>Token layout of a transformer graph (class token, patch grid), or <c>null</c> for other models.</summary>
    public TokenLayout? TokenLayout { get; internal set; }

    /// <summary>Checks an input shape before anything runs (set by adapters that know their input, e.g. a ViT's patch size and position embedding); throws <see cref="ArgumentException"/>.</summary>
    public Action<long[]>? InputValidator { get; internal set; }

    /// <summary>The softmax nodes (attention probabilities) in forward order.</summary>
    public IReadOnlyList<int> SoftmaxNodes => _nodes.Where(n => n.Kind == NodeKind.Softmax).Select(n => n.Index).ToList();

    /// <summary>The indices of the nodes that read the output of node <paramref name="index"/>.</summary>
    public IReadOnlyList<int> Consumers(int index) => _nodes.Where(n => n.Inputs.Contains(index)).Select(n => n.Index).ToList();

    /// <summary>The conv/linear units in forward order.</summary>
    public IReadOnlyList<LinearUnitNode> Units { get; private set; } = Array.Empty<LinearUnitNode>();

    /// <summary>Runs the graph on <paramref name="input"/> and returns the output of every node (index = node index).</summary>
    public Tensor[] Forward(Tensor input)
    {
        var outputs = new Tensor[_nodes.Count];
        outputs[0] = input;
        var args = new List<Tensor>(4);
        for (var i = 1; i < _nodes.Count; i++)
        {
            var node = _nodes[i];
            args.Clear();
            foreach (var j in node.Inputs) args.Add(outputs[j]);
            try
            {
                outputs[i] = node.Forward(args);
            }
            catch (ExplanationException e) when (node is LinearUnitNode && !e.Message.Contains($"'{node.Name}'", StringComparison.Ordinal))
            {
                throw new ExplanationException($"'{node.Name}': {e.Message}", e); // name the module, not only its shape
            }
            catch (Exception e) when (e is not ExplanationException)
            {
                throw new ExplanationException(
                    $"The relevance graph failed at '{node.Name}' ({node.Kind}) on inputs of shape {string.Join(", ", args.Select(a => "[" + string.Join(", ", a.shape) + "]"))}: {e.Message}", e);
            }
        }
        return outputs;
    }

    /// <summary>Number of nodes that read the output of node <paramref name="index"/>.</summary>
    public int ConsumerCount(int index) => _nodes.Count(n => n.Inputs.Contains(index)) + (index == OutputIndex ? 1 : 0);

    /// <summary>
    /// Removes node <paramref name="index"/>, redirecting its consumers (and any module path mapped to it) to
    /// <paramref name="replacement"/>. Used by canonizers.
    /// </summary>
    public void Bypass(int index, int replacement)
    {
        foreach (var n in _nodes)
            n.Inputs = n.Inputs.Select(j => j == index ? replacement : j).ToArray();
        foreach (var key in _moduleOutputs.Where(kv => kv.Value == index).Select(kv => kv.Key).ToList())
            _moduleOutputs[key] = replacement;
        if (OutputIndex == index) OutputIndex = replacement;

        // drop the node and shift indices above it
        _nodes.RemoveAt(index);
        int Shift(int j) => j > index ? j - 1 : j;
        foreach (var n in _nodes) n.Inputs = n.Inputs.Select(Shift).ToArray();
        foreach (var key in _moduleOutputs.Keys.ToList()) _moduleOutputs[key] = Shift(_moduleOutputs[key]);
        OutputIndex = Shift(OutputIndex);
        Reindex();
    }

    /// <summary>Recomputes node indices, unit indices and the non-negativity flags after a rewrite.</summary>
    internal void Reindex()
    {
        var units = new List<LinearUnitNode>();
        for (var i = 0; i < _nodes.Count; i++)
        {
            var node = _nodes[i];
            node.Index = i;
            if (node is LinearUnitNode u)
            {
                u.UnitIndex = units.Count;
                units.Add(u);
            }
            node.NonNegativeOutput = node.ClampsToNonNegative
                || node.Kind is NodeKind.MaxPool or NodeKind.AvgPool or NodeKind.Shape
                   && node.Inputs.Count == 1 && _nodes[node.Inputs[0]].NonNegativeOutput;
        }
        Units = units;
    }

    /// <summary>
    /// The chain of shape-only nodes between the graph input and <paramref name="unit"/>'s input, or <c>null</c> when the
    /// unit's input is not the network input (reached through flatten/identity/dropout only).
    /// </summary>
    public IReadOnlyList<GraphNode>? PathFromInput(LinearUnitNode unit)
    {
        var chain = new List<GraphNode>();
        var j = unit.Inputs[0];
        while (j != 0)
        {
            var n = _nodes[j];
            if (n.Kind != NodeKind.Shape || n.Inputs.Count != 1) return null;
            chain.Add(n);
            j = n.Inputs[0];
        }
        chain.Reverse();
        return chain;
    }

    /// <summary>Releases the parameter copies held by the graph's units.</summary>
    public void Dispose()
    {
        foreach (var n in _nodes)
        {
            if (n is LinearUnitNode u) u.Unit.Dispose();
            if (n is BatchNormNode b)
            {
                b.Scale.Dispose();
                b.Shift.Dispose();
            }
            if (n is IDisposable d) d.Dispose();
        }
    }
}
