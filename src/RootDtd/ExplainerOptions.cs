using RootDtd.Canonizers;
using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd;

/// <summary>Options of an <see cref="Explainer"/>.</summary>
public sealed class ExplainerOptions
{
    /// <summary>
    /// Lowest valid input value (scalar tensor, per-channel [1,C,1,1], or the input's shape), e.g. the normalised value of
    /// pixel 0. Needed by z^B and by root inference on the input layer (the root must be a valid input).
    /// </summary>
    public Tensor? InputLow { get; init; }

    /// <summary>Highest valid input value; see <see cref="InputLow"/>.</summary>
    public Tensor? InputHigh { get; init; }

    /// <summary>
    /// Canonizers applied to the relevance graph; <c>null</c> (default) = the method's own (<see cref="Composites.Composite.Canonizers"/>:
    /// BatchNorm merging for every catalog method except <c>root-published</c>). The model itself is never changed.
    /// </summary>
    public IReadOnlyList<ICanonizer>? Canonizers { get; init; }

    /// <summary>
    /// An input of the model (one sample is used) for the probe forward that recognises modules without an adapter whose
    /// forward is a chain of known modules. Optional: without it, such a model's graph is built on the first
    /// <see cref="Explainer.Explain(Tensor)"/> from that input; with it, already in the constructor.
    /// </summary>
    public Tensor? ProbeInput { get; init; }

    /// <summary>Adapters used to build the graph (default: <see cref="ModuleAdapters.Default"/>).</summary>
    public ModuleAdapters? Adapters { get; init; }

    /// <summary>Module paths whose output relevance is returned in <see cref="Explanation.LayerRelevance"/> ("*" = every module).</summary>
    public IReadOnlyList<string> RecordLayers { get; init; } = Array.Empty<string>();

    /// <summary>Collect per-unit diagnostics of rules that report them (root inference).</summary>
    public bool CollectDiagnostics { get; init; }

    /// <summary>Keep the signal S and root N tensors of root-inference units (needed for the f(N) test and the paper's Fig. 7).</summary>
    public bool RecordRoots { get; init; }

    /// <summary>
    /// Check on every explanation that the graph reproduces the model's output (default true). A mismatch means a
    /// functional operation of the model has no node, and throws an <see cref="ExplanationException"/> naming the module.
    /// </summary>
    public bool VerifyForward { get; init; } = true;

    /// <summary>Relative tolerance of that check (default 1e-3 in float32, 1e-8 in float64; relative to max |logit|).</summary>
    public double? VerifyTolerance { get; init; }

    /// <summary>
    /// Receives one report per graph node during the backward walk of every <see cref="Explainer.Explain(TorchSharp.torch.Tensor, long[])"/>
    /// call (synchronously, on the calling thread), so that a long explanation — root inference solves an optimisation
    /// per unit — can show progress within a batch. <c>null</c> (default): no reports.
    /// </summary>
    public IProgress<ExplanationProgress>? Progress { get; init; }
}

/// <summary>Progress of one explanation's backward walk (see <see cref="ExplainerOptions.Progress"/>).</summary>
/// <param name="NodesDone">Graph nodes whose relevance has been propagated so far.</param>
/// <param name="NodeCount">Graph nodes to propagate in this explanation.</param>
/// <param name="UnitsDone">Linear units (convolutions, dense layers) done so far: where the time goes.</param>
/// <param name="UnitCount">Linear units of the graph.</param>
/// <param name="Node">Name of the node just done.</param>
public readonly record struct ExplanationProgress(int NodesDone, int NodeCount, int UnitsDone, int UnitCount, string Node)
{
    /// <summary>Fraction done, in [0,1]: by units when the graph has any (they take almost all the time), else by nodes.</summary>
    public double Fraction => UnitCount > 0 ? (double)UnitsDone / UnitCount : NodeCount == 0 ? 1 : (double)NodesDone / NodeCount;
}
