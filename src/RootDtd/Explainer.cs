using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Rules;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd;

/// <summary>
/// Explains a TorchSharp classifier with a <see cref="Composite"/> of relevance rules. The explainer builds a relevance
/// graph from the module tree (canonized, e.g. BatchNorm merged — the model itself is left untouched), runs the graph
/// forward recording every layer input, checks that the graph reproduces the model's own logits, and walks the graph
/// backwards applying one rule per node.
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
    private RelevanceGraph _graph = null!;   // null until built (a probe forward may wait for the first Explain)
    private Rule?[] _rules = Array.Empty<Rule?>();
    private Tensor? _probe;
    private FanOutRule?[] _fanOut = Array.Empty<FanOutRule?>();
    private GraphAnalysis? _analysis;
    private Dictionary<int, List<string>>? _wantedLayers;
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
            (_graph, _rules) = InEvalMode(BuildGraph);
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
    /// The relevance graph (after canonizers). For a model with a module that has no adapter, the graph is built from a
    /// probe forward on the first <see cref="Explain(Tensor)"/> (or at construction with <see cref="ExplainerOptions.ProbeInput"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">The graph waits for a probe input.</exception>
    public RelevanceGraph Graph => _graph ?? throw new InvalidOperationException(
        "The model has a module without an adapter, which is recognised from a probe forward: the graph is built on the first Explain, " +
        "or at construction when ExplainerOptions.ProbeInput is given.");

    /// <summary>The static analysis of the current graph (null until the graph is built).</summary>
    internal GraphAnalysis? Analysis => _analysis;

    /// <summary>The rule of every graph node, e.g. for reports (index = node index).</summary>
    public IReadOnlyList<(string Node, string Rule)> RuleAssignment =>
        Graph.Nodes.Skip(1).Select(n => (n.Name, _rules[n.Index]?.ToString() ?? "-")).ToList();

    private static Tensor KeepProbe(Tensor input)
    {
        using var _ = torch.no_grad();
        return input[..1].detach().clone().DetachFromDisposeScope();
    }

    private T InEvalMode<T>(Func<T> action)
    {
        // leaf modules only (ModelGate): TorchSharp's recursive eval()/train() is exponential in the nesting depth
        using var gate = ModelGate.Enter(_model);
        return action();
    }

    private (RelevanceGraph, Rule?[]) BuildGraph()
    {
        var graph = GraphBuilder.Build(_model, _options.Adapters, _probe);
        try
        {
            foreach (var c in _options.Canonizers ?? Composite.Canonizers) c.Apply(graph);
            if (Composite.TokenMap is not null && (graph.TokenLayout is null || graph.SoftmaxNodes.Count == 0))
                throw new ExplanationException($"Method '{Composite.Name}' computes a token map from attention, but the model's graph has no token layout and attention (only transformer adapters such as VisionTransformer's provide them); use a pixel-relevance method.");
            var rules = Composite.Resolve(graph);
            _fanOut = Composite.ResolveFanOut(graph);
            _snapshot = ModelDevice();
            // the static analysis of the graph (domains, paths, bounds per input shape) and the recorded layers, once per graph
            _analysis?.Dispose();
            _analysis = new GraphAnalysis(graph);
            _wantedLayers = null;
            return (graph, rules);
        }
        catch
        {
            graph.Dispose();
            throw;
        }
    }

    /// <summary>Rebuilds the graph from the model's current parameters (call after changing the weights).</summary>
    public void Refresh()
    {
        var old = _graph;
        (_graph, _rules) = InEvalMode(BuildGraph);
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
            // Explanations need autograd: leave a caller's inference_mode or no_grad for the duration of the call.
            using var normalMode = torch.inference_mode(false);
            using var grad = torch.enable_grad();
            return ExplainChecked(input, targets, cancellationToken);
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    private Explanation ExplainChecked(Tensor input, long[]? targets, CancellationToken cancellationToken)
    {
        ValidateInput(input);
        if (_graph is null)
        {
            _probe = KeepProbe(input);
            try
            {
                (_graph, _rules) = InEvalMode(BuildGraph);
            }
            catch
            {
                _probe.Dispose();
                _probe = null;
                throw;
            }
        }
        var current = ModelDevice();
        if (current is { } cur && _snapshot is { } snap && (cur.Item1 != snap.Type || cur.Item2 != snap.Index || cur.Item3 != snap.DType)) Refresh();
        if (current is { } c && (c.Item1 != input.device_type || (c.Item1 != DeviceType.CPU && c.Item2 != input.device_index)))
            throw new ArgumentException($"The input is on {input.device} but the model is on {c.Item1}:{c.Item2}; move one of them.", nameof(input));
        if (current is { } d && d.Item3 != input.dtype)
            throw new ArgumentException($"The input has dtype {input.dtype} but the model's parameters are {d.Item3}; convert one of them.", nameof(input));

        if (input.dtype is ScalarType.Float16 or ScalarType.BFloat16
            && _rules.Any(r => r is Rules.RootInference.RootInferenceRule or Rules.RootInference.Published.PublishedDenseRootRule or Rules.RootInference.Published.PublishedConvRootRule))
            throw new ArgumentException($"Root inference needs float32 or float64: its per-unit optimisation is not accurate in {input.dtype} (29 % off float64 on a test net). Convert the model and the input with .to(float32).", nameof(input));
        // The graph has eval semantics by construction; only the forward check runs the model (see ModelGate).
        return ExplainCore(input, targets, cancellationToken);
    }

    private void ValidateInput(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.IsInvalid) throw new ArgumentException("The input tensor has been disposed.", nameof(input));
        if (!input.is_floating_point()) throw new ArgumentException($"The input must be a floating-point tensor; got {input.dtype}.", nameof(input));
        if (input.dim() < 2) throw new ArgumentException($"The input must be batched ([B,C,H,W] or [B,F]); got shape [{string.Join(", ", input.shape)}].", nameof(input));
        if (input.shape[0] == 0) throw new ArgumentException("The input batch is empty.", nameof(input));
        var first = _graph?.Units.FirstOrDefault();
        if (first is not null && _graph!.PathFromInput(first) is { } path && path.Count == 0)
        {
            var unit = first.Unit;
            if (unit.IsConvolution && (input.dim() != unit.SpatialAxes + 2 || input.shape[1] != unit.InputFeatures))
                throw new ArgumentException($"'{first.Name}' expects input {unit.ExpectedInputShape}; got [{string.Join(", ", input.shape)}].", nameof(input));
            if (unit.Kind == LinearUnitKind.Dense && (input.dim() != 2 || input.shape[1] != unit.InputFeatures))
                throw new ArgumentException($"'{first.Name}' expects input [B, {unit.InputFeatures}]; got [{string.Join(", ", input.shape)}].", nameof(input));
        }
        _graph?.InputValidator?.Invoke(input.shape);
        // a scope of its own: ValidateInput runs before ExplainCore's scope, and the caller may have none
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        if (!torch.isfinite(input).all().item<bool>())
            throw new ArgumentException("The input contains NaN or infinite values.", nameof(input));
    }

    private Explanation ExplainCore(Tensor input, long[]? targets, CancellationToken cancellationToken)
    {
        using var scope = torch.NewDisposeScope();
        // Our own copy: the caller's tensor is never modified (e.g. by a model whose first layer is an in-place ReLU),
        // and a tensor made under inference_mode becomes an ordinary one.
        var x = input.detach().clone();
        Tensor[] outputs;
        using (torch.no_grad()) outputs = _graph.Forward(x);
        var logits = outputs[_graph.OutputIndex];
        if (logits.dim() != 2 || logits.shape[0] != x.shape[0])
            throw new ExplanationException($"The model must return logits [B, K]; the graph produced [{string.Join(", ", logits.shape)}].");
        if (_options.VerifyForward) VerifyForward(x, logits);

        var batch = (int)x.shape[0];
        var classes = logits.shape[1];
        var t = ResolveTargets(targets, logits, batch, classes);
        var targetTensor = torch.tensor(t, device: x.device);
        var onehot = torch.nn.functional.one_hot(targetTensor, classes).to(logits.dtype);
        var start = Composite.StartRelevance switch
        {
            StartRelevance.TargetLogit => onehot * logits,
            StartRelevance.AbsoluteTargetLogit => onehot * logits.abs(),
            _ => onehot,
        };

        var low = _options.InputLow is null ? null : Bound(_options.InputLow, x, "InputLow");
        var high = _options.InputHigh is null ? null : Bound(_options.InputHigh, x, "InputHigh");
        if (low is not null && high is not null && !low.le(high).all().item<bool>())
            throw new ArgumentException("ExplainerOptions.InputLow must be ≤ InputHigh everywhere.");

        var recorder = new ExplanationRecorder(_options.CollectDiagnostics, _options.RecordRoots);
        if (Composite.Procedure is { } procedure)
            return ExplainWithProcedure(procedure, x, logits, t, targetTensor, onehot, batch, low, high, recorder);
        var tokenMap = Composite.TokenMap;
        var wantedLayers = WantedLayers();
        var layers = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var attentionNodes = tokenMap is null ? Array.Empty<int>() : _graph.SoftmaxNodes.ToArray();
        Tensor inputRelevance;
        Tensor[] sums;
        Tensor[] absorbed;
        Dictionary<int, Tensor> attentionRelevance;
        if (tokenMap is null || tokenMap.NeedsBackwardWalk)
        {
            (inputRelevance, sums, absorbed, attentionRelevance) = Walk(_rules, _fanOut, outputs, start, batch, low, high, recorder, wantedLayers, layers, attentionNodes, _options.Progress, cancellationToken);
        }
        else
        {
            inputRelevance = torch.zeros_like(x);
            sums = _graph.Nodes.Select(_ => torch.zeros(batch, dtype: logits.dtype, device: x.device)).ToArray();
            absorbed = sums;
            attentionRelevance = new Dictionary<int, Tensor>();
        }
        Tensor? map = null;
        if (tokenMap is not null)
        {
            var layout = _graph.TokenLayout!;
            var context = new TokenMapContext(_graph, layout, outputs, attentionRelevance, () => AttentionGradient(x, onehot, attentionNodes), recorder);
            map = tokenMap.Compute(context);
            if (map.dim() != 2 || map.shape[0] != batch || map.shape[1] != (long)layout.GridHeight * layout.GridWidth)
                throw new ExplanationException($"{tokenMap} returned a map of shape [{string.Join(", ", map.shape)}]; expected [{batch}, {layout.GridHeight * layout.GridWidth}].");
            // shown on the image by bilinear upsampling; spread evenly over the channels so that Σ_c = the heatmap
            var grid = map.reshape(batch, 1, layout.GridHeight, layout.GridWidth);
            var heat = x.dim() == 4
                ? torch.nn.functional.interpolate(grid, new[] { x.shape[2], x.shape[3] }, mode: InterpolationMode.Bilinear, align_corners: false)
                : grid.reshape(batch, 1, -1);
            inputRelevance = x.dim() == 4 ? (heat / x.shape[1]).expand(x.shape).contiguous() : heat.reshape(x.shape);
        }
        else if (Composite.MultiplyByInput) inputRelevance = inputRelevance * x;

        // one transfer for the whole report
        var n = _graph.Nodes.Count - 1;
        var table = torch.stack(sums.Skip(1).Concat(absorbed.Skip(1)).Append(start.sum(1)).Append(inputRelevance.reshape(batch, -1).sum(1)).ToArray()).to(float64).cpu();
        var values = table.data<double>().ToArray();
        double[] Row(int row) => values.Skip(row * batch).Take(batch).ToArray();
        var nodeRows = _graph.Nodes.Skip(1).Select((node, k) => (node.Name, Row(k))).ToList();
        var absorbedRows = _graph.Nodes.Skip(1).Select((node, k) => (node.Name, Row(n + k))).ToList();
        var report = new ConservationReport(nodeRows, Row(2 * n), Row(2 * n + 1), absorbedRows);

        foreach (var l in layers.Values) l.MoveToOuterDisposeScope();
        var roots = recorder.Tensors;
        foreach (var v in roots.Values) v.MoveToOuterDisposeScope();
        return new Explanation(Composite.Name, x.clone().MoveToOuterDisposeScope(), inputRelevance.detach().MoveToOuterDisposeScope(),
            logits.detach().clone().MoveToOuterDisposeScope(), t, layers, report, recorder.Diagnostics, roots, map?.detach().MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Hands the explanation to the composite's procedure; the conservation report compares Σ relevance with the
    /// procedure's reference (Integrated Gradients: f(x) − f(baseline)) or the explained logit, without per-node rows.
    /// The procedure's <see cref="Attribution.AttributionContext.Walk"/> is this composite's rule walk at another input.
    /// </summary>
    private Explanation ExplainWithProcedure(Attribution.AttributionProcedure procedure, Tensor x, Tensor logits, long[] t, Tensor targetTensor, Tensor onehot,
        int batch, Tensor? low, Tensor? high, ExplanationRecorder recorder)
    {
        var noLayers = new Dictionary<int, List<string>>();
        Tensor WalkAt(Tensor at)
        {
            using var walkScope = torch.NewDisposeScope();
            Tensor[] o;
            using (torch.no_grad()) o = _graph.Forward(at);
            var y = o[_graph.OutputIndex];
            var start = Composite.StartRelevance switch
            {
                StartRelevance.TargetLogit => onehot * y,
                StartRelevance.AbsoluteTargetLogit => onehot * y.abs(),
                _ => onehot,
            };
            var r = Walk(_rules, _fanOut, o, start, batch, low, high, recorder, noLayers, new Dictionary<string, Tensor>(StringComparer.Ordinal), Array.Empty<int>(), null).Input;
            if (Composite.MultiplyByInput) r = r * at;
            return r.detach().MoveToOuterDisposeScope();
        }

        var context = new Attribution.AttributionContext(_graph, x, t, targetTensor, low, high, recorder, WalkAt);
        var result = procedure.Attribute(context);
        var inputRelevance = result.InputRelevance.detach();
        if (!inputRelevance.shape.SequenceEqual(x.shape))
            throw new ExplanationException($"Procedure {procedure} returned relevance [{string.Join(", ", inputRelevance.shape)}] for an input of shape [{string.Join(", ", x.shape)}].");
        var reference = result.Reference ?? logits.gather(1, targetTensor.unsqueeze(1)).squeeze(1);
        var table = torch.stack(new[] { reference.detach().reshape(batch), inputRelevance.reshape(batch, -1).sum(1) }).to(float64).cpu();
        var values = table.data<double>().ToArray();
        var report = new ConservationReport(Array.Empty<(string, double[])>(), values.Take(batch).ToArray(), values.Skip(batch).ToArray());
        var roots = recorder.Tensors;
        foreach (var v in roots.Values) v.MoveToOuterDisposeScope();
        return new Explanation(Composite.Name, x.clone().MoveToOuterDisposeScope(), inputRelevance.MoveToOuterDisposeScope(),
            logits.detach().clone().MoveToOuterDisposeScope(), t, new Dictionary<string, Tensor>(StringComparer.Ordinal), report, recorder.Diagnostics, roots);
    }

    /// <summary>
    /// The backward walk: from <paramref name="start"/> at the output, nodes in reverse order, each node's rule turning
    /// the relevance of its output into relevance of its inputs. Branches arriving at one node are summed (or combined
    /// by the composite's fan-out rule). Returns the input relevance, Σ relevance per node and sample, the part each
    /// node absorbed (Σ of its output relevance minus what it sent on), and the relevance at <paramref name="capture"/>.
    /// </summary>
    private (Tensor Input, Tensor[] Sums, Tensor[] Absorbed, Dictionary<int, Tensor> Captured) Walk(Rule?[] rules, FanOutRule?[]? fanOut, Tensor[] outputs,
        Tensor start, int batch, Tensor? low, Tensor? high, ExplanationRecorder recorder, Dictionary<int, List<string>> wantedLayers,
        Dictionary<string, Tensor> layers, IReadOnlyCollection<int> capture, IProgress<ExplanationProgress>? progress,
        CancellationToken cancellationToken = default)
    {
        var count = _graph.Nodes.Count;
        var branches = new List<Tensor>?[count];
        branches[_graph.OutputIndex] = new List<Tensor> { start };
        var sums = new Tensor[count];
        var absorbed = new Tensor[count];
        var captured = new Dictionary<int, Tensor>();
        var args = new List<Tensor>(4);
        var kinds = new List<NodeKind>(4);
        var unitsDone = 0;
        Tensor Gather(int i)
        {
            var list = branches[i];
            if (list is null || list.Count == 0) return torch.zeros_like(outputs[i]);
            if (list.Count == 1) return list[0];
            if (fanOut?[i] is { } combine) return combine.Combine(_graph.Nodes[i], outputs[i], list);
            var total = list[0];
            for (var k = 1; k < list.Count; k++) total = total + list[k];
            return total;
        }
        for (var i = count - 1; i >= 1; i--)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var node = _graph.Nodes[i];
            var r = Gather(i);
            branches[i] = null;
            sums[i] = r.reshape(batch, -1).sum(1);
            if (capture.Contains(i)) captured[i] = r;
            if (wantedLayers.TryGetValue(i, out var names))
                foreach (var name in names) layers[name] = r.detach().clone();
            args.Clear();
            kinds.Clear();
            foreach (var j in node.Inputs)
            {
                args.Add(outputs[j]);
                kinds.Add(_graph.Nodes[j].Kind);
            }
            var (domain, nodeLow, nodeHigh) = DomainOf(node, low, high);
            var rule = rules[i]!;
            var context = new RuleContext(node, args, outputs[i], r, domain, nodeLow, nodeHigh, recorder, kinds.ToArray());
            Tensor[] result;
            try
            {
                result = rule.Propagate(context);
            }
            catch (ExplanationException e) when (low is not null && node is LinearUnitNode unit && nodeLow is null && e.Message.Contains("needs input bounds", StringComparison.Ordinal))
            {
                throw new ExplanationException(BoundsDoNotReach(rule, unit), e);
            }
            catch (Exception e) when (e is not ExplanationException)
            {
                throw new ExplanationException($"Rule {rule} failed at '{node.Name}' ({node.Kind}): {e.Message}", e);
            }
            if (result.Length != node.Inputs.Count)
                throw new ExplanationException($"Rule {rule} returned {result.Length} relevance tensors for '{node.Name}', which has {node.Inputs.Count} inputs.");
            var sent = torch.zeros_like(sums[i]);
            for (var k = 0; k < result.Length; k++)
            {
                var j = node.Inputs[k];
                if (!result[k].shape.SequenceEqual(outputs[j].shape))
                    throw new ExplanationException($"Rule {rule} at '{node.Name}' returned relevance [{string.Join(", ", result[k].shape)}] for an input of shape [{string.Join(", ", outputs[j].shape)}].");
                (branches[j] ??= new List<Tensor>()).Add(result[k]);
                sent = sent + result[k].reshape(batch, -1).sum(1);
            }
            absorbed[i] = sums[i] - sent;
            if (node is LinearUnitNode) unitsDone++;
            progress?.Report(new ExplanationProgress(count - i, count - 1, unitsDone, _graph.Units.Count, node.Name));
        }
        var input = Gather(0);
        return (input, sums, absorbed, captured);
    }

    /// <summary>
    /// ∂ target logit / ∂ output of every node in <paramref name="nodes"/>: one forward of the unmodified graph under
    /// autograd and one backward (the plain gradient, as a gradient-composite walk would give, at the cost of one
    /// forward + gradient).
    /// </summary>
    private IReadOnlyDictionary<int, Tensor> AttentionGradient(Tensor x, Tensor onehot, IReadOnlyCollection<int> nodes)
    {
        var wanted = nodes.ToArray();
        var result = new Dictionary<int, Tensor>();
        if (wanted.Length == 0) return result;
        Tensor[] grads;
        using (torch.enable_grad())
        {
            var xi = x.detach().requires_grad_(true);
            var outputs = _graph.Forward(xi);
            var score = (outputs[_graph.OutputIndex] * onehot).sum();
            // libtorch's autograd.grad terminates the process when a tensor is not part of the graph: check first
            var missing = wanted.Where(i => !outputs[i].requires_grad).Select(i => _graph.Nodes[i].Name).ToList();
            if (!score.requires_grad || missing.Count > 0)
                throw new ExplanationException($"The gradient of the target logit with respect to {string.Join(", ", missing.DefaultIfEmpty("the attention"))} cannot be taken: the graph's forward is not differentiable there.");
            grads = VectorJacobian.Grad(score, wanted.Select(i => outputs[i]).ToArray(), torch.ones_like(score));
        }
        for (var k = 0; k < wanted.Length; k++) result[wanted[k]] = grads[k].detach();
        return result;
    }

    private static long[] ResolveTargets(long[]? targets, Tensor logits, int batch, long classes)
    {
        if (targets is null) return logits.argmax(1).cpu().data<long>().ToArray();
        if (targets.Length != batch)
            throw new ArgumentException($"{targets.Length} targets were given for a batch of {batch}.", nameof(targets));
        for (var i = 0; i < targets.Length; i++)
            if (targets[i] < 0 || targets[i] >= classes)
                throw new ArgumentOutOfRangeException(nameof(targets), targets[i], $"Target {i} is {targets[i]}; the model has {classes} classes (0…{classes - 1}).");
        return (long[])targets.Clone();
    }

    private static Tensor Bound(Tensor bound, Tensor x, string name)
    {
        if (torch.isnan(bound).any().item<bool>()) throw new ArgumentException($"ExplainerOptions.{name} contains NaN.");
        if (torch.isinf(bound).any().item<bool>()) throw new ArgumentException($"ExplainerOptions.{name} contains ±∞; give the finite range of valid inputs (e.g. the normalised pixel range).");
        var b = bound.to(x.dtype).to(x.device);
        if (b.dim() == 1 && x.dim() == 4 && b.shape[0] == x.shape[1]) b = b.view(1, -1, 1, 1);
        try
        {
            return b.expand(x.shape).contiguous();
        }
        catch (Exception e)
        {
            throw new ArgumentException($"ExplainerOptions.{name} of shape [{string.Join(", ", bound.shape)}] does not broadcast to the input shape [{string.Join(", ", x.shape)}].", e);
        }
    }

    /// <summary>Bounds were given, but a module between the input and <paramref name="unit"/> keeps them from applying to it.</summary>
    private string BoundsDoNotReach(Rule rule, LinearUnitNode unit)
    {
        GraphNode? blocker = null;
        for (var j = unit.Inputs[0]; j != 0; j = _graph.Nodes[j].Inputs.Count > 0 ? _graph.Nodes[j].Inputs[0] : 0)
            if (_graph.Nodes[j].Kind != NodeKind.Shape || _graph.Nodes[j].Inputs.Count != 1) blocker = _graph.Nodes[j];
        var between = blocker is null ? "a module" : $"'{blocker.Name}' ({blocker.Kind})";
        return $"{rule} at '{unit.Name}' needs the bounds of its input. ExplainerOptions.InputLow/InputHigh were given, but they bound the model's input, " +
               $"and {between} lies between the input and '{unit.Name}', so they do not bound this layer's input. " +
               $"Give '{unit.Name}' a rule without bounds, or a z^B rule with bounds of its own (new ZBoxRule(low, high)).";
    }

    private (InputDomain, Tensor?, Tensor?) DomainOf(GraphNode node, Tensor? low, Tensor? high) => _analysis!.DomainOf(node, low, high);

    private Dictionary<int, List<string>> WantedLayers() => _wantedLayers ??= FindWantedLayers();

    private Dictionary<int, List<string>> FindWantedLayers()
    {
        var wanted = new Dictionary<int, List<string>>();
        foreach (var name in _options.RecordLayers)
        {
            IEnumerable<KeyValuePair<string, int>> matches = name == "*"
                ? _graph.ModuleOutputs
                : _graph.ModuleOutputs.TryGetValue(name, out var idx)
                    ? new[] { new KeyValuePair<string, int>(name, idx) }
                    : throw new ArgumentException($"RecordLayers: the model has no module '{name}'. Known modules: {string.Join(", ", _graph.ModuleOutputs.Keys.Take(40))}…");
            foreach (var (n, i) in matches)
            {
                if (!wanted.TryGetValue(i, out var list)) wanted[i] = list = new List<string>();
                list.Add(n);
            }
        }
        return wanted;
    }

    private void VerifyForward(Tensor x, Tensor logits)
    {
        Tensor expected;
        using (ModelGate.Enter(_model))
        using (torch.no_grad())
            expected = ((nn.Module<Tensor, Tensor>)_model).forward(x.clone());
        if (!torch.isfinite(expected).all().item<bool>()) throw NonFiniteModelOutput(expected);
        var tolerance = _options.VerifyTolerance ?? (x.dtype == ScalarType.Float64 ? 1e-8 : 1e-3);
        if (!expected.shape.SequenceEqual(logits.shape))
            throw new ExplanationException($"The relevance graph produces [{string.Join(", ", logits.shape)}] but the model returns [{string.Join(", ", expected.shape)}]: the model's forward does something its adapters do not describe.");
        var scale = Math.Max(1.0, expected.abs().max().ToDouble());
        var diff = (expected - logits).abs().max().ToDouble();
        if (diff <= tolerance * scale) return;
        if (ChangedSinceBuilt(x) is { } changed)
            throw new ExplanationException(
                $"The relevance graph does not reproduce the model's output (max |Δlogit| = {diff:g3}, allowed {tolerance * scale:g3}) because the model's parameters " +
                $"changed after this Explainer was built (first difference at '{changed}'): call Refresh() after changing the weights.");
        throw new ExplanationException(
            $"The relevance graph does not reproduce the model's output (max |Δlogit| = {diff:g3}, allowed {tolerance * scale:g3}). " +
            LocateMismatch(x) + " A functional operation in a forward() was probably not described by the module's adapter; register one with ModuleAdapters.Default.Register<T>(...) (or on the ModuleAdapters given in ExplainerOptions.Adapters).");
    }

    /// <summary>
    /// The model's own output is NaN or ±∞: names the parameters and buffers with non-finite values (or negative
    /// BatchNorm variances) instead of blaming an adapter.
    /// </summary>
    private ExplanationException NonFiniteModelOutput(Tensor expected)
    {
        using var scope = torch.NewDisposeScope();
        var bad = new List<string>();
        foreach (var (name, p) in _model.named_parameters())
            if (p.is_floating_point() && !torch.isfinite(p).all().item<bool>()) bad.Add($"parameter '{name}'");
        foreach (var (name, b) in _model.named_buffers())
        {
            if (!b.is_floating_point()) continue;
            if (!torch.isfinite(b).all().item<bool>()) bad.Add($"buffer '{name}'");
            else if (name.EndsWith("running_var", StringComparison.Ordinal) && b.lt(0).any().item<bool>()) bad.Add($"buffer '{name}' (negative variance)");
        }
        var samples = torch.isfinite(expected).all(1).logical_not().nonzero().flatten().cpu().data<long>().ToArray();
        return bad.Count > 0
            ? new ExplanationException($"The model's output is NaN or infinite for sample(s) {string.Join(", ", samples.Take(10))} because its weights are: {string.Join(", ", bad.Take(10))}{(bad.Count > 10 ? $" and {bad.Count - 10} more" : string.Empty)} contain NaN or infinite values. Load finite weights.")
            : new ExplanationException($"The model's output is NaN or infinite for sample(s) {string.Join(", ", samples.Take(10))} although its weights and the input are finite (an overflow in the model's forward, e.g. float16 or very large weights).");
    }

    /// <summary>
    /// Names where the explainer's graph and the model part: runs the model with forward hooks and compares every
    /// graph node with the output of the last module that maps to it (after BatchNorm merging, a conv's node is the
    /// output of its BatchNorm), in forward order. Also says when a freshly built graph would match, i.e. the model's
    /// parameters changed after the explainer was built.
    /// </summary>
    private string LocateMismatch(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var captured = new Dictionary<string, (int Order, Tensor Output)>();
        var hooks = new List<Action>();
        foreach (var (name, module) in _model.named_modules())
        {
            if (name.Length == 0 || module is not nn.Module<Tensor, Tensor> m || !_graph.ModuleOutputs.ContainsKey(name)) continue;
            // The copy leaves the model's own dispose scopes (a forward() may dispose its intermediate outputs).
            var remover = m.register_forward_hook((_, _, o) =>
            {
                captured[name] = (captured.Count, o.detach().clone().DetachFromDisposeScope());
                return null!;
            });
            hooks.Add(() => remover.remove());
        }
        try
        {
            Tensor[] outputs;
            using (ModelGate.Enter(_model))
            using (torch.no_grad())
            {
                ((nn.Module<Tensor, Tensor>)_model).call(x.clone());
                outputs = _graph.Forward(x);
            }
            foreach (var node in _graph.Nodes)
            {
                var name = _graph.ModuleOutputs.Where(kv => kv.Value == node.Index && captured.ContainsKey(kv.Key))
                    .Select(kv => kv.Key).OrderBy(n => captured[n].Order).LastOrDefault();
                if (name is null) continue;
                var actual = captured[name].Output;
                var mine = outputs[node.Index];
                if (!actual.shape.SequenceEqual(mine.shape))
                    return $"First difference at module '{name}': the model's output has shape [{string.Join(", ", actual.shape)}], the graph's [{string.Join(", ", mine.shape)}].";
                var d = (actual - mine).abs().max().ToDouble();
                var s = Math.Max(1.0, actual.abs().max().ToDouble());
                if (d > 1e-3 * s) return $"First difference at module '{name}' (max |Δ| = {d:g3}).";
            }
            return "Every module output matches; the difference comes from an operation between modules (e.g. a functional activation or addition).";
        }
        finally
        {
            foreach (var remove in hooks) remove();
            foreach (var (_, t) in captured.Values) t.Dispose();
        }
    }

    /// <summary>
    /// When a graph built from the model now differs from the explainer's graph (the weights changed after it was
    /// built): the name of the first node whose output differs; otherwise null.
    /// </summary>
    private string? ChangedSinceBuilt(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        using var fresh = GraphBuilder.Build(_model, _options.Adapters, _probe);
        foreach (var c in _options.Canonizers ?? Composite.Canonizers) c.Apply(fresh);
        if (fresh.Nodes.Count != _graph.Nodes.Count) return null;
        using var _ = torch.no_grad();
        var a = fresh.Forward(x);
        var b = _graph.Forward(x);
        for (int i = 1; i < a.Length; i++)
        {
            if (!a[i].shape.SequenceEqual(b[i].shape)) return null; // another structure: not a weight change
            if ((a[i] - b[i]).abs().max().ToDouble() > 1e-6 * Math.Max(1.0, b[i].abs().max().ToDouble())) return _graph.Nodes[i].Name;
        }
        return null;
    }

    /// <summary>Releases the graph's parameter copies.</summary>
    public void Dispose()
    {
        _graph?.Dispose();
        _analysis?.Dispose();
        _probe?.Dispose();
    }
}
