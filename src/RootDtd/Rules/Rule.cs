using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Rules;

/// <summary>Where a conv/linear unit's input lives; decides the box of root-seeking rules and lets rules skip work.</summary>
public enum InputDomain
{
    /// <summary>Nothing is known: the input may have either sign.</summary>
    Free,

    /// <summary>The input was produced by a ReLU (possibly through pooling, flattening or dropout): it is ≥ 0.</summary>
    Relu,

    /// <summary>The input is the network input and the explainer has input bounds [low, high].</summary>
    PixelBox,
}

/// <summary>
/// What one layer does with relevance: given the layer's recorded inputs, its output and the relevance of its output,
/// it returns the relevance of each input. Rules are stateless and may be shared by many layers.
/// </summary>
public abstract class Rule
{
    /// <summary>Propagates <see cref="RuleContext.Relevance"/> to the node's inputs (one tensor per input, same shapes).</summary>
    /// <remarks>
    /// The backward walk runs each call in a dispose scope of its own: every tensor the rule makes is disposed when the
    /// call returns, except the returned ones (and what it keeps with <see cref="ExplanationRecorder.Keep"/> or detaches
    /// from the scope, e.g. a cached derived parameter). A rule may return a tensor it received; the walk never
    /// disposes the recorded outputs.
    /// </remarks>
    public abstract Tensor[] Propagate(RuleContext context);

    /// <summary>A short description with the rule's parameters, e.g. <c>Epsilon(0.25)</c>.</summary>
    public abstract override string ToString();
}

/// <summary>Everything a rule may read about the node it is applied to. Created by the explainer for every node.</summary>
public sealed class RuleContext
{
    internal RuleContext(GraphNode node, IReadOnlyList<Tensor> inputs, Tensor output, Tensor relevance, InputDomain domain,
        Tensor? low, Tensor? high, ExplanationRecorder recorder, IReadOnlyList<NodeKind>? inputKinds = null)
    {
        InputKinds = inputKinds ?? Array.Empty<NodeKind>();
        Node = node;
        Inputs = inputs;
        Output = output;
        Relevance = relevance;
        Domain = domain;
        Low = low;
        High = high;
        Recorder = recorder;
    }

    /// <summary>The node being explained.</summary>
    public GraphNode Node { get; }

    /// <summary>The node's recorded inputs (detached).</summary>
    public IReadOnlyList<Tensor> Inputs { get; }

    /// <summary>The node's recorded output (detached).</summary>
    public Tensor Output { get; }

    /// <summary>The relevance of the node's output (same shape as <see cref="Output"/>).</summary>
    public Tensor Relevance { get; }

    /// <summary>The input domain of a linear unit (always <see cref="InputDomain.Free"/> for other nodes).</summary>
    public InputDomain Domain { get; }

    /// <summary>Lower input bound at this node's input when the explainer was given input bounds and the node reads the network input (through shape-only operations); otherwise <c>null</c>.</summary>
    public Tensor? Low { get; }

    /// <summary>Upper input bound, like <see cref="Low"/>.</summary>
    public Tensor? High { get; }

    /// <summary>Collects optional per-unit diagnostics and tensors requested by the caller.</summary>
    public ExplanationRecorder Recorder { get; }

    /// <summary>The unit of a <see cref="LinearUnitNode"/>; throws a clear error for other nodes.</summary>
    public LinearUnit Unit => Node is LinearUnitNode u
        ? u.Unit
        : throw new ExplanationException($"A conv/linear rule was assigned to '{Node.Name}' ({Node.Kind}), which is not a conv/linear layer.");

    /// <summary>The kinds of the nodes that produce each input (empty when unknown), e.g. to hold attention probabilities (softmax outputs) constant.</summary>
    public IReadOnlyList<NodeKind> InputKinds { get; }

    /// <summary>The single input of the node.</summary>
    public Tensor Input => Inputs[0];
}
