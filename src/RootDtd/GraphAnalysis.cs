using RootDtd.Graph;
using RootDtd.Rules;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd;

/// <summary>
/// What an explainer knows about its graph before any input arrives, computed once per graph (at construction and on
/// <see cref="Explainer.Refresh"/>) instead of on every explanation: the input domain of every node (ReLU domain,
/// pixel box, free; unit numbering is the graph's own), the shape-only path from the network input to each
/// pixel-box unit, and — per input shape, dtype and device — the input bounds carried along that path.
/// </summary>
internal sealed class GraphAnalysis : IDisposable
{
    private readonly InputDomain[] _domains;
    private readonly IReadOnlyList<GraphNode>?[] _paths;
    private readonly Dictionary<int, (Tensor Low, Tensor High)> _bounds = new();
    private (string Shape, ScalarType DType, string Device)? _boundsKey;

    /// <summary>Analyses <paramref name="graph"/>.</summary>
    public GraphAnalysis(RelevanceGraph graph)
    {
        var count = graph.Nodes.Count;
        _domains = new InputDomain[count];
        _paths = new IReadOnlyList<GraphNode>?[count];
        foreach (var node in graph.Nodes)
        {
            if (node is not LinearUnitNode unit) continue;
            if (graph.Nodes[unit.Inputs[0]].NonNegativeOutput)
            {
                _domains[node.Index] = InputDomain.Relu;
                continue;
            }
            _paths[node.Index] = graph.PathFromInput(unit);
            _domains[node.Index] = _paths[node.Index] is null ? InputDomain.Free : InputDomain.PixelBox;
        }
    }

    /// <summary>
    /// The domain of <paramref name="node"/>'s input and, for a pixel-box unit, the bounds at its input, given the bounds
    /// <paramref name="low"/>/<paramref name="high"/> of the network input (expanded to its shape), or free without bounds.
    /// Bounds carried through a non-empty path are computed once per input shape, dtype and device and kept.
    /// </summary>
    public (InputDomain Domain, Tensor? Low, Tensor? High) DomainOf(GraphNode node, Tensor? low, Tensor? high)
    {
        var domain = _domains[node.Index];
        if (domain == InputDomain.Relu) return (InputDomain.Relu, null, null);
        if (domain == InputDomain.Free || low is null || high is null) return (InputDomain.Free, null, null);
        var path = _paths[node.Index]!;
        if (path.Count == 0) return (InputDomain.PixelBox, low, high);
        var key = (string.Join(",", low.shape), low.dtype, low.device.ToString());
        if (_boundsKey != key) ClearBounds();
        _boundsKey = key;
        if (!_bounds.TryGetValue(node.Index, out var b))
        {
            using var scope = torch.NewDisposeScope();
            using var _ = torch.no_grad();
            Tensor l = low, h = high;
            foreach (var n in path)
            {
                l = n.Forward(new[] { l });
                h = n.Forward(new[] { h });
            }
            // own copies: a shape-only node may return a view of the network input's bounds
            b = (l.clone().DetachFromDisposeScope(), h.clone().DetachFromDisposeScope());
            _bounds[node.Index] = b;
        }
        return (InputDomain.PixelBox, b.Low, b.High);
    }

    private void ClearBounds()
    {
        foreach (var (l, h) in _bounds.Values)
        {
            l.Dispose();
            h.Dispose();
        }
        _bounds.Clear();
    }

    /// <summary>Releases the kept bounds.</summary>
    public void Dispose() => ClearBounds();
}
