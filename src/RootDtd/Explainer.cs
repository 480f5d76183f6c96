using RootDtd.Composites;
using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd;

/// <summary>
/// Explains a TorchSharp classifier with a <see cref="Composite"/> of relevance rules. A facade over a
/// <see cref="BackwardPass"/>: the explainer builds a relevance graph from the module tree (<see cref="GraphBuilder"/>;
/// the pass canonizes it, e.g. BatchNorm merged — the model itself is left untouched), keeps the graph in step with
/// the model (a probe forward for modules without an adapter, a rebuild when the model moved to another device or
/// dtype, <see cref="Refresh"/>), checks the input against the model, and hands every explanation to the pass, which
/// runs the graph forward, checks it against the model's own logits (<see cref="ExplainerOptions.VerifyForward"/>) and
/// walks the graph backwards applying one rule per node.
/// </summary>
/// <remarks>
/// Thread safety: an explainer is not thread-safe — use one per thread; calling one explainer from two threads at once
/// throws <see cref="InvalidOperationException"/> (it never returns a wrong result). Any number of explainers may share
/// one model across threads: the model's parameters, buffers and training flags are never changed, and the only call
/// of the model's own forward (the forward check) takes a per-model lock and gives the model eval semantics for its
/// duration, so BatchNorm statistics are never updated, even for a model left in training mode. Do not train or
/// modify the model while it is being explained.
/// </remarks>
/// <example>
/// <code>
/// using var explainer = new Explainer(model, Composites.EpsilonPlusFlat());
/// using var e = explainer.Explain(images);           // explains the predicted classes
/// var heatmap = e.Heatmap;                             // [B, H, W]
/// </code>
/// </example>
public sealed class Explainer : IDisposable
{
    private readonly nn.Module _model;
    private readonly ExplainerOptions _options;
    private BackwardPass? _pass;   // null until built (a probe forward may wait for the first Explain)
    private Tensor? _probe;
    private (DeviceType Type, int Index, ScalarType DType)? _snapshot;
    private int _busy;

    /// <summary>Creates an explainer for <paramref name="model"/> (which must map [B,C,H,W] or [B,F] inputs to [B,K] logits).</summary>
    public Explainer(nn.Module model, Composite composite, ExplainerOptions? options = null)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        CheckNestingDepth(model); // before anything recursive (TorchSharp's own module walks recurse too)
        Composite = composite ?? throw new ArgumentNullException(nameof(composite));
        if (model is not nn.Module<Tensor, Tensor>)
            throw new ArgumentException($"The model must be a Module<Tensor, Tensor> (one input, one output); got {model.GetType().FullName}.", nameof(model));
        _options = options ?? new ExplainerOptions();
        if ((_options.InputLow is null) != (_options.InputHigh is null))
            throw new ArgumentException("Give both InputLow and InputHigh, or neither.", nameof(options));
        if (_options.ProbeInput is { } probe)
        {
            if (probe.IsInvalid || probe.dim() < 2 || probe.shape[0] == 0)
                throw new ArgumentException("ExplainerOptions.ProbeInput must be a batched input of the model (one sample is enough).", nameof(options));
            _probe = KeepProbe(probe);
        }
        try
        {
            _pass = BuildPass();
        }
        catch (ProbeInputRequiredException) when (_probe is null)
        {
            // a module without an adapter: recognised by a probe forward on the first Explain's input
        }
    }

    /// <summary>The deepest module nesting an explainer accepts (real models nest fewer than 20 levels).</summary>
    public const int MaxNestingDepth = 256;

    /// <summary>Refuses models nested deeper than <see cref="MaxNestingDepth"/> with an iterative walk (no recursion).</summary>
    private static void CheckNestingDepth(nn.Module model)
    {
        var stack = new Stack<(nn.Module Module, int Depth, string Path)>();
        stack.Push((model, 1, string.Empty));
        int deepest = 0;
        string deepestPath = string.Empty;
        while (stack.Count > 0)
        {
            var (module, depth, path) = stack.Pop();
            if (depth > deepest) (deepest, deepestPath) = (depth, path);
            if (depth > MaxNestingDepth)
            {
                // measure the rest of this chain without keeping paths, for the message
                var chain = module;
                while (chain.named_children().FirstOrDefault() is { module: { } next }) { chain = next; deepest++; }
                throw new ArgumentException(
                    $"The model nests modules {deepest} levels deep (e.g. below '{(deepestPath.Length > 60 ? deepestPath[..60] + "…" : deepestPath)}'); at most {MaxNestingDepth} are supported.", nameof(model));
            }
            foreach (var (name, child) in module.named_children())
                stack.Push((child, depth + 1, path.Length == 0 ? name : path + "." + name));
        }
    }

    /// <summary>The composite that assigns rules to layers.</summary>
    public Composite Composite { get; }

    /// <summary>
    /// The backward pass over the current graph (rebuilt by <see cref="Refresh"/>, and when the model moved to another
    /// device or dtype). For a model with a module that has no adapter, it is made from a probe forward on the first
    /// <see cref="Explain(Tensor)"/> (or at construction with <see cref="ExplainerOptions.ProbeInput"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">The graph waits for a probe input.</exception>
    public BackwardPass Pass => _pass ?? throw new InvalidOperationException(
        "The model has a module without an adapter, which is recognised from a probe forward: the graph is built on the first Explain, " +
        "or at construction when ExplainerOptions.ProbeInput is given.");

    /// <summary>
    /// The relevance graph (after canonizers). For a model with a module that has no adapter, the graph is built from a
    /// probe forward on the first <see cref="Explain(Tensor)"/> (or at construction with <see cref="ExplainerOptions.ProbeInput"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">The graph waits for a probe input.</exception>
    public RelevanceGraph Graph => Pass.Graph;

    /// <summary>The static analysis of the current graph (null until the graph is built).</summary>
    internal GraphAnalysis? Analysis => _pass?.Analysis;

    /// <summary>The rule of every graph node, e.g. for reports (index = node index).</summary>
    public IReadOnlyList<(string Node, string Rule)> RuleAssignment => Pass.RuleAssignment;

    private static Tensor KeepProbe(Tensor input)
    {
        using var _ = torch.no_grad();
        return input[..1].detach().clone().DetachFromDisposeScope();
    }

    /// <summary>The graph of the model as it is now, canonized as the pass canonizes it (built with eval semantics: see <see cref="ModelGate"/>).</summary>
    private RelevanceGraph BuildCanonizedGraph()
    {
        var graph = BuildGraph();
        try
        {
            BackwardPass.Canonize(graph, Composite, _options);
            return graph;
        }
        catch
        {
            graph.Dispose();
            throw;
        }
    }

    private RelevanceGraph BuildGraph()
    {
        // leaf modules only (ModelGate): TorchSharp's recursive eval()/train() is exponential in the nesting depth
        using var gate = ModelGate.Enter(_model);
        return GraphBuilder.Build(_model, _options.Adapters, _probe);
    }

    private BackwardPass BuildPass()
    {
        var pass = new BackwardPass(BuildGraph(), Composite, _options);
        _snapshot = ModelDevice();
        return pass;
    }

    /// <summary>Rebuilds the graph from the model's current parameters (call after changing the weights).</summary>
    public void Refresh()
    {
        var old = _pass;
        _pass = BuildPass();
        old?.Dispose();
    }

    private (DeviceType, int, ScalarType)? ModelDevice()
    {
        foreach (var p in _model.parameters()) return (p.device_type, p.device_index, p.dtype);
        return null;
    }

    /// <summary>Explains the predicted class of every sample.</summary>
    public Explanation Explain(Tensor input) => Explain(input, (long[]?)null);

    /// <summary>Explains <paramref name="targets"/> (one class per sample; <c>null</c> = the predicted classes).</summary>
    public Explanation Explain(Tensor input, long[]? targets) => Explain(input, targets, CancellationToken.None);

    /// <summary>
    /// Explains <paramref name="targets"/> (<c>null</c> = the predicted classes), checking <paramref name="cancellationToken"/>
    /// before every graph node: a cancelled call throws <see cref="OperationCanceledException"/> and returns nothing partial.
    /// </summary>
    public Explanation Explain(Tensor input, long[]? targets, CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _busy, 1) == 1)
            throw new InvalidOperationException("This Explainer is already explaining on another thread; an Explainer is not thread-safe: create one per thread (they may share the model).");
        try
        {
            BackwardPass.ValidateBatch(input);
            var pass = PassFor(input);
            CheckAgainstModel(input);
            Action<Tensor, Tensor>? check = _options.VerifyForward
                ? new ForwardCheck(_model, pass.Graph, _options.VerifyTolerance, BuildCanonizedGraph).Verify
                : null;
            // The graph has eval semantics by construction; only the forward check runs the model (see ModelGate).
            return pass.Run(input, targets, check, cancellationToken);
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>The pass for this input: built from a probe forward on it if the graph waits for one, rebuilt if the model moved.</summary>
    private BackwardPass PassFor(Tensor input)
    {
        if (_pass is null)
        {
            _probe = KeepProbe(input);
            try
            {
                _pass = BuildPass();
            }
            catch
            {
                _probe.Dispose();
                _probe = null;
                throw;
            }
        }
        if (ModelDevice() is { } cur && _snapshot is { } snap && (cur.Item1 != snap.Type || cur.Item2 != snap.Index || cur.Item3 != snap.DType)) Refresh();
        return _pass!;
    }

    private void CheckAgainstModel(Tensor input)
    {
        var current = ModelDevice();
        if (current is { } c && (c.Item1 != input.device_type || (c.Item1 != DeviceType.CPU && c.Item2 != input.device_index)))
            throw new ArgumentException($"The input is on {input.device} but the model is on {c.Item1}:{c.Item2}; move one of them.", nameof(input));
        if (current is { } d && d.Item3 != input.dtype)
            throw new ArgumentException($"The input has dtype {input.dtype} but the model's parameters are {d.Item3}; convert one of them.", nameof(input));
    }

    /// <summary>Releases the graph's parameter copies.</summary>
    public void Dispose()
    {
        _pass?.Dispose();
        _probe?.Dispose();
    }
}
