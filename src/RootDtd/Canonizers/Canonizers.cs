using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Canonizers;

/// <summary>
/// A temporary rewrite of the model for explanation purposes. Canonizers act on the relevance graph (a copy of the
/// model's structure with its own parameter tensors), never on the user's modules.
/// </summary>
public interface ICanonizer
{
    /// <summary>Short name for reports.</summary>
    string Name { get; }

    /// <summary>Rewrites <paramref name="graph"/> in place.</summary>
    void Apply(RelevanceGraph graph);
}

/// <summary>
/// Merges every BatchNorm that directly follows a conv/linear unit (and is its only consumer) into that unit:
/// <c>W' = W·s</c>, <c>b' = (b − μ)·s + β</c> with <c>s = γ/√(σ²+ε)</c>. The BatchNorm node disappears from the graph
/// and its module path then refers to the merged unit's output.
/// </summary>
public sealed class BatchNormMerger : ICanonizer
{
    /// <inheritdoc />
    public string Name => "merge-batchnorm";

    /// <inheritdoc />
    public void Apply(RelevanceGraph graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        bool merged;
        do
        {
            merged = false;
            foreach (var node in graph.Nodes)
            {
                if (node is not BatchNormNode bn) continue;
                if (graph.Nodes[bn.Inputs[0]] is not LinearUnitNode unitNode || graph.ConsumerCount(unitNode.Index) != 1) continue;
                using (var scope = torch.NewDisposeScope())
                using (torch.no_grad())
                {
                    var old = unitNode.Unit;
                    var shape = new long[old.Weight.dim()];
                    Array.Fill(shape, 1L);
                    shape[0] = -1;
                    var w = old.Weight * bn.Scale.view(shape);
                    var b = (old.Bias is null ? torch.zeros_like(bn.Shift) : old.Bias * bn.Scale) + bn.Shift;
                    unitNode.Unit = old.WithParameters(w, b);
                    old.Dispose();
                }
                unitNode.MergedModules.Add(bn.Name);
                bn.Scale.Dispose();
                bn.Shift.Dispose();
                graph.Bypass(bn.Index, unitNode.Index);
                merged = true;
                break;
            }
        } while (merged);
    }
}
