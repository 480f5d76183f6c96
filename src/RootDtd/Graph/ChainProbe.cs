using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Graph;

/// <summary>
/// A record of which modules a model's forward calls, in which order and nesting, on one probe input: forward hooks
/// (pre and post) on every <c>Module&lt;Tensor, Tensor&gt;</c> of the model, so only calls through <c>Module.call()</c> are
/// seen. Used by <see cref="GraphBuilder"/> to recognise a module without an adapter whose forward is a chain of
/// known modules (each reading the previous one's output).
/// </summary>
internal sealed class ChainProbe
{
    private readonly List<Call> _calls = new();
    private readonly Dictionary<nn.Module, string> _paths = new(ReferenceEqualityComparer.Instance);

    private ChainProbe() { }

    /// <summary>One module call.</summary>
    /// <param name="Module">The module called.</param>
    /// <param name="Parent">Index of the enclosing call (−1 for the model itself).</param>
    internal sealed record Call(nn.Module Module, int Parent)
    {
        /// <summary>The input object passed to the call.</summary>
        public object? Input { get; set; }

        /// <summary>The output object returned.</summary>
        public object? Output { get; set; }
    }

    /// <summary>Runs <paramref name="model"/> on <paramref name="probe"/> under no_grad and records every module call.</summary>
    public static ChainProbe Record(nn.Module model, Tensor probe)
    {
        var p = new ChainProbe();
        foreach (var (name, m) in model.named_modules()) p._paths.TryAdd(m, name);
        if (model is not nn.Module<Tensor, Tensor> root)
            throw new NotSupportedException($"The model ({model.GetType().Name}) is not a Module<Tensor, Tensor>; it cannot be probed.");
        var stack = new Stack<int>();
        var removers = new List<Action>();
        try
        {
            foreach (var m in p._paths.Keys)
            {
                if (m is not nn.Module<Tensor, Tensor> hookable) continue;
                var pre = hookable.register_forward_pre_hook((module, input) =>
                {
                    p._calls.Add(new Call(module, stack.Count == 0 ? -1 : stack.Peek()) { Input = input });
                    stack.Push(p._calls.Count - 1);
                    return null!;
                });
                var post = hookable.register_forward_hook((module, input, output) =>
                {
                    if (stack.Count > 0) p._calls[stack.Pop()].Output = output;
                    return null!;
                });
                removers.Add(() => pre.remove());
                removers.Add(() => post.remove());
            }
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            root.call(probe);
        }
        finally
        {
            foreach (var remove in removers) remove();
        }
        return p;
    }

    /// <summary>The model path of <paramref name="module"/> (its first name in <c>named_modules</c>).</summary>
    public string PathOf(nn.Module module) => _paths.TryGetValue(module, out var path) ? path : module.GetType().Name;

    /// <summary>
    /// The modules that the first call of <paramref name="module"/> calls directly, in order, if they form a chain: the
    /// first reads the module's input, each next one the previous one's output, and the module returns the last one's
    /// output. Otherwise <c>null</c> with the reason in <paramref name="why"/>.
    /// </summary>
    public IReadOnlyList<nn.Module>? ChainOf(nn.Module module, out string why)
    {
        var index = _calls.FindIndex(c => ReferenceEquals(c.Module, module));
        if (index < 0)
        {
            why = "the probe forward never called it through Module.call()";
            return null;
        }
        var call = _calls[index];
        var inner = _calls.Select((c, i) => (Call: c, Index: i)).Where(c => c.Call.Parent == index).ToList();
        if (inner.Count == 0)
        {
            why = "its forward called no module through Module.call() (children run with forward() or functional operations are invisible to a probe)";
            return null;
        }
        var previous = call.Input;
        var previousName = "the block's input";
        foreach (var (c, _) in inner)
        {
            if (!ReferenceEquals(c.Input, previous))
            {
                why = $"'{PathOf(c.Module)}' does not read {previousName} (an operation between them, or a branch such as a residual addition)";
                return null;
            }
            previous = c.Output;
            previousName = $"the output of '{PathOf(c.Module)}'";
        }
        if (!ReferenceEquals(call.Output, previous))
        {
            why = $"it does not return {previousName} unchanged (an operation after the last module call, or a residual addition)";
            return null;
        }
        why = string.Empty;
        return inner.Select(c => c.Call.Module).ToList();
    }
}
