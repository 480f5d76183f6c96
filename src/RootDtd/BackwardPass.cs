using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Rules;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd;

/// <summary>
/// One method's backward pass over one relevance graph: the rule of every node (resolved once from the
/// <see cref="Composite"/>, after its canonizers rewrote the graph), the static analysis of the graph (input domains,
/// bounds per input shape), and the explanation itself — the graph's forward recording every node's output, the start
/// relevance at the logits, the walk from the output to the input applying one rule per node (or the composite's
/// attribution procedure, or its token map), and the conservation report. It knows nothing of the model the graph came
/// from: <see cref="Explainer"/> is the facade that builds the graph from a TorchSharp module, keeps it in step with
/// the module (device, dtype, <see cref="Explainer.Refresh"/>), checks the graph's forward against the module's own and
/// hands every explanation to its pass.
/// </summary>
/// <remarks>
/// A pass is not thread-safe (its analysis keeps bounds per input shape): calling one pass from two threads at once
/// throws <see cref="InvalidOperationException"/>. It owns its graph: disposing the pass disposes the graph.
/// </remarks>
/// <example>
/// <code>
/// using var pass = new BackwardPass(GraphBuilder.Build(model), MethodCatalog.Parse("epsilon-plus-flat"));
/// using var e = pass.Run(images);                      // explains the predicted classes; no check against the model
/// </code>
/// </example>
public sealed class BackwardPass : IDisposable
{
    private readonly ExplainerOptions _options;
    private readonly Rule?[] _rules;
    private readonly FanOutRule?[] _fanOut;
    private readonly GraphAnalysis _analysis;
    private Dictionary<int, List<string>>? _wantedLayers;
    private int _busy;

    /// <summary>
    /// Makes the pass of <paramref name="composite"/> over <paramref name="graph"/>, which it takes over (canonizes —
    /// with <see cref="ExplainerOptions.Canonizers"/> or the composite's own — and disposes with the pass, also when
    /// this constructor throws). Of <paramref name="options"/> the pass reads the input bounds, the recorded layers,
    /// diagnostics, roots and progress; the options about models (adapters, probe input, forward check) are the
    /// <see cref="Explainer"/>'s.
    /// </summary>
    /// <exception cref="ExplanationException">A node has no rule in the composite, or the method needs attention the graph does not have.</exception>
    public BackwardPass(RelevanceGraph graph, Composite composite, ExplainerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(graph);
        try
        {
            Composite = composite ?? throw new ArgumentNullException(nameof(composite));
            _options = options ?? new ExplainerOptions();
            if ((_options.InputLow is null) != (_options.InputHigh is null))
                throw new ArgumentException("Give both InputLow and InputHigh, or neither.", nameof(options));
            Canonize(graph, composite, _options);
            if (composite.TokenMap is not null && (graph.TokenLayout is null || graph.SoftmaxNodes.Count == 0))
                throw new ExplanationException($"Method '{composite.Name}' computes a token map from attention, but the model's graph has no token layout and attention (only transformer adapters such as VisionTransformer's provide them); use a pixel-relevance method.");
            _rules = composite.Resolve(graph);
            _fanOut = composite.ResolveFanOut(graph);
            // the static analysis of the graph (domains, paths, bounds per input shape), once per graph
            _analysis = new GraphAnalysis(graph);
            Graph = graph;
        }
        catch
        {
            graph.Dispose();
            throw;
        }
    }

    /// <summary>Applies the canonizers a pass of <paramref name="composite"/> applies (<see cref="ExplainerOptions.Canonizers"/>, else the composite's).</summary>
    internal static void Canonize(RelevanceGraph graph, Composite composite, ExplainerOptions options)
    {
        foreach (var c in options.Canonizers ?? composite.Canonizers) c.Apply(graph);
    }

    /// <summary>The relevance graph (after canonizers).</summary>
    public RelevanceGraph Graph { get; }

    /// <summary>The composite that assigns rules to nodes.</summary>
    public Composite Composite { get; }

    /// <summary>The static analysis of the graph.</summary>
    internal GraphAnalysis Analysis => _analysis;

    /// <summary>The rule of every graph node after the input, in graph order (for reports).</summary>
    public IReadOnlyList<(string Node, string Rule)> RuleAssignment =>
        Graph.Nodes.Skip(1).Select(n => (n.Name, _rules[n.Index]?.ToString() ?? "-")).ToList();

    /// <summary>Whether a rule of this pass solves root inference (which needs float32 or float64).</summary>
    internal bool UsesRootInference =>
        _rules.Any(r => r is Rules.RootInference.RootInferenceRule or Rules.RootInference.Published.PublishedDenseRootRule or Rules.RootInference.Published.PublishedConvRootRule);

    /// <summary>
    /// Explains <paramref name="targets"/> of <paramref name="input"/> (one class per sample; <c>null</c> = the
    /// classes the graph predicts), checking <paramref name="cancellationToken"/> before every node. The graph's
    /// forward is not compared with any model (<see cref="Explainer"/> does that).
    /// </summary>
    /// <exception cref="ArgumentException">The input is not a finite, batched floating-point tensor the graph accepts.</exception>
    /// <exception cref="ExplanationException">A rule failed at a node (the message names it).</exception>
    public Explanation Run(Tensor input, long[]? targets = null, CancellationToken cancellationToken = default)
    {
        ValidateBatch(input);
        return Run(input, targets, forwardCheck: null, cancellationToken);
    }

    /// <summary>
    /// <see cref="Run(Tensor, long[], CancellationToken)"/> after <see cref="ValidateBatch"/> passed;
    /// <paramref name="forwardCheck"/> receives the pass's copy of the input and the graph's logits before the walk.
    /// </summary>
    internal Explanation Run(Tensor input, long[]? targets, Action<Tensor, Tensor>? forwardCheck, CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _busy, 1) == 1)
            throw new InvalidOperationException("This BackwardPass is already running on another thread; a pass is not thread-safe: make one per thread.");
        try
        {
            ValidateShape(input);
            if (input.dtype is ScalarType.Float16 or ScalarType.BFloat16 && UsesRootInference)
                throw new ArgumentException($"Root inference needs float32 or float64: its per-unit optimisation is not accurate in {input.dtype} (29 % off float64 on a test net). Convert the model and the input with .to(float32).", nameof(input));
            // Explanations need autograd: leave a caller's inference_mode or no_grad for the duration of the call.
            using var normalMode = torch.inference_mode(false);
            using var grad = torch.enable_grad();
            return RunCore(input, targets, forwardCheck, cancellationToken);
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>
    /// The checks of an input that need no graph: a live, finite, floating-point tensor with a batch axis and at least
    /// one sample (one device synchronisation, for finiteness).
    /// </summary>
    /// <exception cref="ArgumentException">Names what is wrong with the input.</exception>
    public static void ValidateBatch(Tensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.IsInvalid) throw new ArgumentException("The input tensor has been disposed.", nameof(input));
        if (!input.is_floating_point()) throw new ArgumentException($"The input must be a floating-point tensor; got {input.dtype}.", nameof(input));
        if (input.dim() < 2) throw new ArgumentException($"The input must be batched ([B,C,H,W] or [B,F]); got shape [{string.Join(", ", input.shape)}].", nameof(input));
        if (input.shape[0] == 0) throw new ArgumentException("The input batch is empty.", nameof(input));
        // a scope of its own: the caller may have none
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        if (!torch.isfinite(input).all().item<bool>())
            throw new ArgumentException("The input contains NaN or infinite values.", nameof(input));
    }

    /// <summary>The input's shape against the graph: the first unit when it reads the input directly, and the graph's own validator (e.g. a ViT's image size).</summary>
    internal void ValidateShape(Tensor input)
    {
        var first = Graph.Units.FirstOrDefault();
        if (first is not null && Graph.PathFromInput(first) is { } path && path.Count == 0)
        {
            var unit = first.Unit;
            if (unit.IsConvolution && (input.dim() != unit.SpatialAxes + 2 || input.shape[1] != unit.InputFeatures))
                throw new ArgumentException($"'{first.Name}' expects input {unit.ExpectedInputShape}; got [{string.Join(", ", input.shape)}].", nameof(input));
            if (unit.Kind == LinearUnitKind.Dense && (input.dim() != 2 || input.shape[1] != unit.InputFeatures))
                throw new ArgumentException($"'{first.Name}' expects input [B, {unit.InputFeatures}]; got [{string.Join(", ", input.shape)}].", nameof(input));
        }
        Graph.InputValidator?.Invoke(input.shape);
    }

    private Tensor StartRelevanceOf(Tensor logits, Tensor onehot) => Composite.StartRelevance switch
    {
        StartRelevance.TargetLogit => onehot * logits,
        StartRelevance.AbsoluteTargetLogit => onehot * logits.abs(),
        _ => onehot,
    };

    private Explanation RunCore(Tensor input, long[]? targets, Action<Tensor, Tensor>? forwardCheck, CancellationToken cancellationToken)
    {
        using var scope = torch.NewDisposeScope();
        // Our own copy: the caller's tensor is never modified (e.g. by a model whose first layer is an in-place ReLU),
        // and a tensor made under inference_mode becomes an ordinary one.
        var x = input.detach().clone();
        Tensor[] outputs;
        Tensor[]? attached = null;   // the same forward under autograd, when the token map needs the attention gradient
        if (Composite.Procedure is null && Composite.TokenMap is { NeedsAttentionGradient: true })
        {
            using (torch.enable_grad()) attached = Graph.Forward(x.detach().requires_grad_(true));
            outputs = attached.Select(o => o.detach()).ToArray();
        }
        else
        {
            using (torch.no_grad()) outputs = Graph.Forward(x);
        }
        var logits = outputs[Graph.OutputIndex];
        if (logits.dim() != 2 || logits.shape[0] != x.shape[0])
            throw new ExplanationException($"The model must return logits [B, K]; the graph produced [{string.Join(", ", logits.shape)}].");
        forwardCheck?.Invoke(x, logits);

        var batch = (int)x.shape[0];
        var classes = logits.shape[1];
        var t = ResolveTargets(targets, logits, batch, classes);
        var targetTensor = torch.tensor(t, device: x.device);
        var onehot = torch.nn.functional.one_hot(targetTensor, classes).to(logits.dtype);
        var start = StartRelevanceOf(logits, onehot);

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
        var attentionNodes = tokenMap is null ? Array.Empty<int>() : Graph.SoftmaxNodes.ToArray();
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
            sums = Graph.Nodes.Select(_ => torch.zeros(batch, dtype: logits.dtype, device: x.device)).ToArray();
            absorbed = sums;
            attentionRelevance = new Dictionary<int, Tensor>();
        }
        Tensor? map = null;
        if (tokenMap is not null)
        {
            var layout = Graph.TokenLayout!;
            var context = new TokenMapContext(Graph, layout, outputs, attentionRelevance, () => AttentionGradient(x, onehot, attentionNodes, attached), recorder);
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
        var n = Graph.Nodes.Count - 1;
        var table = torch.stack(sums.Skip(1).Concat(absorbed.Skip(1)).Append(start.sum(1)).Append(inputRelevance.reshape(batch, -1).sum(1)).ToArray()).to(float64).cpu();
        var values = table.data<double>().ToArray();
        double[] Row(int row) => values.Skip(row * batch).Take(batch).ToArray();
        var nodeRows = Graph.Nodes.Skip(1).Select((node, k) => (node.Name, Row(k))).ToList();
        var absorbedRows = Graph.Nodes.Skip(1).Select((node, k) => (node.Name, Row(n + k))).ToList();
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
            using (torch.no_grad()) o = Graph.Forward(at);
            var y = o[Graph.OutputIndex];
            var start = StartRelevanceOf(y, onehot);
            var r = Walk(_rules, _fanOut, o, start, batch, low, high, recorder, noLayers, new Dictionary<string, Tensor>(StringComparer.Ordinal), Array.Empty<int>(), null).Input;
            if (Composite.MultiplyByInput) r = r * at;
            return r.detach().MoveToOuterDisposeScope();
        }

        var context = new Attribution.AttributionContext(Graph, x, t, targetTensor, low, high, recorder, WalkAt);
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
    /// The rules (exact types) whose relevance is zero for every input when the relevance of their output is zero, with no
    /// other effect (nothing recorded, nothing checked that zeros would not pass): the walk skips them on zeros. Only
    /// for nodes that are not conv/linear units (unit rules record diagnostics or check their bounds).
    /// </summary>
    private static readonly HashSet<Type> ZeroPreserving = new()
    {
        typeof(PassRule), typeof(GradientRule), typeof(NormRule), typeof(ProportionalRule), typeof(SoftmaxRule), typeof(CheferAddRule),
    };

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
        var count = Graph.Nodes.Count;
        var branches = new List<Tensor>?[count];
        // Σ per sample of every branch in branches (same order): a node reached by one branch reports that branch's sum,
        // the same reduction of the same tensor, instead of reducing it a second time
        var branchSums = new List<Tensor>?[count];
        // branches known to be zero without looking at them (sent by Stop, or by a zero-preserving rule that received
        // only zeros: cp-lrp's held attention, whose q·kᵀ, q and k then skip their rules); kept out of branches
        var zeroBranches = new int[count];
        branches[Graph.OutputIndex] = new List<Tensor> { start };
        branchSums[Graph.OutputIndex] = new List<Tensor> { start.reshape(batch, -1).sum(1) };
        var sums = new Tensor[count];
        var absorbed = new Tensor[count];
        var captured = new Dictionary<int, Tensor>();
        var args = new List<Tensor>(4);
        var kinds = new List<NodeKind>(4);
        // Relevance a node has consumed is freed as soon as no branch still waits for it, so that the next nodes reuse
        // its memory (kept: the recorded outputs, the start, captured relevance, and whatever a rule passed on as is)
        var kept = new HashSet<Tensor>(outputs, ReferenceEqualityComparer.Instance) { start };
        var pending = new Dictionary<Tensor, int>(ReferenceEqualityComparer.Instance);
        void Free(Tensor t)
        {
            if (!kept.Contains(t) && pending.GetValueOrDefault(t) == 0) t.Dispose();
        }
        void Release(List<Tensor>? consumedBranches, Tensor gathered)
        {
            // a tensor listed twice is freed at its last listing (Free waits until no branch holds it)
            foreach (var t in consumedBranches ?? Enumerable.Empty<Tensor>())
            {
                if (pending.TryGetValue(t, out var c))
                {
                    if (c <= 1) pending.Remove(t);
                    else pending[t] = c - 1;
                }
                Free(t);
            }
            Free(gathered);
        }
        var unitsDone = 0;
        // (the relevance, its Σ per sample when already known, whether it is known to be zero)
        (Tensor Relevance, Tensor? Sum, bool Zero) Gather(int i)
        {
            var list = branches[i];
            if (list is null || list.Count == 0) return (torch.zeros_like(outputs[i]), null, true);
            if (fanOut?[i] is { } combine)
            {
                if (list.Count == 1 && zeroBranches[i] == 0) return (list[0], branchSums[i]![0], false);
                // a fan-out rule sees every branch, the zero ones too
                using var combineScope = torch.NewDisposeScope();
                for (var z = 0; z < zeroBranches[i]; z++) list.Add(torch.zeros_like(outputs[i]));
                return (combineScope.MoveToOuter(combine.Combine(Graph.Nodes[i], outputs[i], list)), null, false);
            }
            // zero branches add nothing to the sum: leaving them out gives the same values
            if (list.Count == 1) return (list[0], branchSums[i]![0], false);
            var total = list[0];
            for (var k = 1; k < list.Count; k++) total = total + list[k];
            return (total, null, false);
        }
        for (var i = count - 1; i >= 1; i--)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var node = Graph.Nodes[i];
            var consumed = branches[i];
            var (r, knownSum, isZero) = Gather(i);
            branches[i] = null;
            branchSums[i] = null;
            sums[i] = knownSum ?? r.reshape(batch, -1).sum(1);
            if (capture.Contains(i))
            {
                captured[i] = r;
                kept.Add(r);
            }
            if (wantedLayers.TryGetValue(i, out var names))
                foreach (var name in names) layers[name] = r.detach().clone();
            var rule = rules[i]!;
            // Stop sends zeros; a zero-preserving rule sends zeros when it receives zeros (no rule runs for them)
            if (rule is StopRule || (isZero && node is not LinearUnitNode && ZeroPreserving.Contains(rule.GetType())))
            {
                foreach (var j in node.Inputs) zeroBranches[j]++;
                absorbed[i] = sums[i] - torch.zeros_like(sums[i]);
                Release(consumed, r);
                progress?.Report(new ExplanationProgress(count - i, count - 1, unitsDone, Graph.Units.Count, node.Name));
                continue;
            }
            args.Clear();
            kinds.Clear();
            foreach (var j in node.Inputs)
            {
                args.Add(outputs[j]);
                kinds.Add(Graph.Nodes[j].Kind);
            }
            var (domain, nodeLow, nodeHigh) = DomainOf(node, low, high);
            var context = new RuleContext(node, args, outputs[i], r, domain, nodeLow, nodeHigh, recorder, kinds.ToArray());
            Tensor[] result;
            try
            {
                using var nodeScope = torch.NewDisposeScope();
                result = rule.Propagate(context);
                nodeScope.MoveToOuter(result);
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
                var branchSum = result[k].reshape(batch, -1).sum(1);
                (branches[j] ??= new List<Tensor>()).Add(result[k]);
                (branchSums[j] ??= new List<Tensor>()).Add(branchSum);
                pending[result[k]] = pending.GetValueOrDefault(result[k]) + 1;
                sent = sent + branchSum;
            }
            absorbed[i] = sums[i] - sent;
            Release(consumed, r);
            if (node is LinearUnitNode) unitsDone++;
            progress?.Report(new ExplanationProgress(count - i, count - 1, unitsDone, Graph.Units.Count, node.Name));
        }
        var input = Gather(0).Relevance;
        return (input, sums, absorbed, captured);
    }

    /// <summary>
    /// ∂ target logit / ∂ output of every node in <paramref name="nodes"/>: one backward through the unmodified graph
    /// (the plain gradient, as a gradient-composite walk would give), from <paramref name="attached"/> — the pass's own
    /// forward, run under autograd when the token map asked for the gradient — or else from a forward of its own.
    /// </summary>
    private IReadOnlyDictionary<int, Tensor> AttentionGradient(Tensor x, Tensor onehot, IReadOnlyCollection<int> nodes, Tensor[]? attached)
    {
        var wanted = nodes.ToArray();
        var result = new Dictionary<int, Tensor>();
        if (wanted.Length == 0) return result;
        Tensor[] grads;
        using (torch.enable_grad())
        {
            var outputs = attached ?? Graph.Forward(x.detach().requires_grad_(true));
            var score = (outputs[Graph.OutputIndex] * onehot).sum();
            // libtorch's autograd.grad terminates the process when a tensor is not part of the graph: check first
            var missing = wanted.Where(i => !outputs[i].requires_grad).Select(i => Graph.Nodes[i].Name).ToList();
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
        for (var j = unit.Inputs[0]; j != 0; j = Graph.Nodes[j].Inputs.Count > 0 ? Graph.Nodes[j].Inputs[0] : 0)
            if (Graph.Nodes[j].Kind != NodeKind.Shape || Graph.Nodes[j].Inputs.Count != 1) blocker = Graph.Nodes[j];
        var between = blocker is null ? "a module" : $"'{blocker.Name}' ({blocker.Kind})";
        return $"{rule} at '{unit.Name}' needs the bounds of its input. ExplainerOptions.InputLow/InputHigh were given, but they bound the model's input, " +
               $"and {between} lies between the input and '{unit.Name}', so they do not bound this layer's input. " +
               $"Give '{unit.Name}' a rule without bounds, or a z^B rule with bounds of its own (new ZBoxRule(low, high)).";
    }

    private (InputDomain, Tensor?, Tensor?) DomainOf(GraphNode node, Tensor? low, Tensor? high) => _analysis.DomainOf(node, low, high);

    private Dictionary<int, List<string>> WantedLayers() => _wantedLayers ??= FindWantedLayers();

    private Dictionary<int, List<string>> FindWantedLayers()
    {
        var wanted = new Dictionary<int, List<string>>();
        foreach (var name in _options.RecordLayers)
        {
            IEnumerable<KeyValuePair<string, int>> matches = name == "*"
                ? Graph.ModuleOutputs
                : Graph.ModuleOutputs.TryGetValue(name, out var idx)
                    ? new[] { new KeyValuePair<string, int>(name, idx) }
                    : throw new ArgumentException($"RecordLayers: the model has no module '{name}'. Known modules: {string.Join(", ", Graph.ModuleOutputs.Keys.Take(40))}…");
            foreach (var (n, i) in matches)
            {
                if (!wanted.TryGetValue(i, out var list)) wanted[i] = list = new List<string>();
                list.Add(n);
            }
        }
        return wanted;
    }

    /// <summary>Releases the graph's parameter copies and the kept bounds.</summary>
    public void Dispose()
    {
        Graph.Dispose();
        _analysis.Dispose();
    }
}
