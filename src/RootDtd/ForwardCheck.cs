using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd;

/// <summary>
/// The check that a relevance graph reproduces its model's own logits, and the diagnosis when it does not: non-finite
/// weights, parameters changed after the graph was built, or the first module whose output differs (a functional
/// operation an adapter did not describe). The only place where an explanation runs the user's model.
/// </summary>
internal sealed class ForwardCheck
{
    private readonly nn.Module _model;
    private readonly RelevanceGraph _graph;
    private readonly double? _tolerance;
    private readonly Func<RelevanceGraph> _buildFresh;

    /// <summary>Checks <paramref name="graph"/> against <paramref name="model"/>; <paramref name="buildFresh"/> builds and canonizes a new graph from the model (for the diagnosis).</summary>
    public ForwardCheck(nn.Module model, RelevanceGraph graph, double? tolerance, Func<RelevanceGraph> buildFresh)
    {
        _model = model;
        _graph = graph;
        _tolerance = tolerance;
        _buildFresh = buildFresh;
    }

    /// <summary>Runs the model on <paramref name="x"/> (under its lock, with eval semantics) and compares with the graph's <paramref name="logits"/>.</summary>
    /// <exception cref="ExplanationException">They differ beyond the tolerance, or the model's output is not finite; the message says why.</exception>
    public void Verify(Tensor x, Tensor logits)
    {
        Tensor expected;
        using (ModelGate.Enter(_model))
        using (torch.no_grad())
            expected = ((nn.Module<Tensor, Tensor>)_model).forward(x.clone());
        if (!torch.isfinite(expected).all().item<bool>()) throw NonFiniteModelOutput(expected);
        var tolerance = _tolerance ?? (x.dtype == ScalarType.Float64 ? 1e-8 : 1e-3);
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
            // native attention modules take masks through call(src, mask), which bypasses forward hooks: one that is in the
            // graph but never reported its output was probably given a mask the graph does not describe
            var natives = _model.named_modules().Where(m => m.name.Length > 0 && m.module is TorchSharp.Modules.TransformerEncoderLayer
                    or TorchSharp.Modules.TransformerEncoder or TorchSharp.Modules.MultiheadAttention)
                .ToDictionary(m => m.name, m => m.module.GetType().Name);
            var unreported = new List<string>();
            string Masked() => unreported.Count == 0 ? string.Empty
                : $" Before it, {string.Join(", ", unreported)} reported no output to forward hooks (called with a mask, or through a call that bypasses hooks): " +
                  "the relevance graph describes unmasked self-attention only; an attention or key-padding mask (call(src, mask)) is not supported.";
            foreach (var node in _graph.Nodes)
            {
                foreach (var kv in _graph.ModuleOutputs)
                    if (kv.Value == node.Index && !captured.ContainsKey(kv.Key) && natives.TryGetValue(kv.Key, out var type)) unreported.Add($"'{kv.Key}' ({type})");
                var name = _graph.ModuleOutputs.Where(kv => kv.Value == node.Index && captured.ContainsKey(kv.Key))
                    .Select(kv => kv.Key).OrderBy(n => captured[n].Order).LastOrDefault();
                if (name is null) continue;
                var actual = captured[name].Output;
                var mine = outputs[node.Index];
                if (!actual.shape.SequenceEqual(mine.shape))
                    return $"First difference at module '{name}': the model's output has shape [{string.Join(", ", actual.shape)}], the graph's [{string.Join(", ", mine.shape)}].{Masked()}";
                var d = (actual - mine).abs().max().ToDouble();
                var s = Math.Max(1.0, actual.abs().max().ToDouble());
                if (d > 1e-3 * s) return $"First difference at module '{name}' (max |Δ| = {d:g3}).{Masked()}";
            }
            if (unreported.Count > 0) return "Every module output that was reported matches." + Masked();
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
        using var fresh = _buildFresh();
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
}
