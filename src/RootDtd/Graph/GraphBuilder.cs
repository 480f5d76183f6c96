using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Graph;

/// <summary>
/// Turns a module of the model into graph nodes. Receives the builder, the module's path, the module and the index of
/// the node that feeds it; returns the index of the node that holds the module's output.
/// </summary>
public delegate int ModuleAdapter(GraphBuilder builder, string path, nn.Module module, int input);

/// <summary>
/// Builds a <see cref="RelevanceGraph"/> from a module tree by dispatching each module to a registered
/// <see cref="ModuleAdapter"/>. Support for a new architecture is data: register an adapter for its module type with
/// <see cref="ModuleAdapters.Register{TModule}"/> (on <see cref="ModuleAdapters.Default"/> or your own registry). A module
/// without an adapter whose forward only calls known modules in a chain is recognised by a probe forward.
/// </summary>
public sealed class GraphBuilder
{
    private readonly List<GraphNode> _nodes = new() { new InputNode() };
    private readonly Dictionary<string, int> _moduleOutputs = new(StringComparer.Ordinal);
    private readonly ModuleAdapters _adapters;
    private readonly nn.Module? _model;
    private readonly Tensor? _probeInput;
    private ChainProbe? _probe;

    internal GraphBuilder(ModuleAdapters adapters, nn.Module? model = null, Tensor? probeInput = null)
    {
        _adapters = adapters;
        _model = model;
        _probeInput = probeInput;
    }

    /// <summary>Builds the graph of <paramref name="model"/> with the given adapters (the global registry by default).</summary>
    /// <param name="model">The model.</param>
    /// <param name="adapters">Module adapters (default <see cref="ModuleAdapters.Default"/>).</param>
    /// <param name="probeInput">
    /// An input of the model (one sample is enough), used to recognise modules without an adapter: a probe forward records
    /// which child modules such a module calls; when they form a chain (each reading the previous one's output) the
    /// module becomes that chain. Without it, such a module is an error that says a probe input is needed.
    /// </param>
    /// <exception cref="NotSupportedException">A module without an adapter that is not a chain of known modules; the message says what to register.</exception>
    public static RelevanceGraph Build(nn.Module model, ModuleAdapters? adapters = null, Tensor? probeInput = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var builder = new GraphBuilder(adapters ?? ModuleAdapters.Default, model, probeInput);
        var output = builder.AddModule("", model, 0);
        return new RelevanceGraph(builder._nodes, builder._moduleOutputs, output)
        {
            TokenLayout = builder.TokenLayout,
            InputValidator = builder.InputValidator,
        };
    }

    /// <summary>Token layout of a transformer (set by its adapter; drives token maps).</summary>
    public TokenLayout? TokenLayout { get; set; }

    /// <summary>An input-shape check run by the explainer before anything else (throws <see cref="ArgumentException"/>).</summary>
    public Action<long[]>? InputValidator { get; set; }

    /// <summary>Records node <paramref name="node"/> as the output of <paramref name="path"/> (for functional operations that should be addressable like modules, e.g. <c>blocks.0.attn.softmax</c>).</summary>
    public int NameOutput(string path, int node)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        _moduleOutputs[path] = node;
        return node;
    }

    /// <summary>Appends a node, records it under its name (see <see cref="NameOutput"/>) and returns its index.</summary>
    public int AddNamed(GraphNode node) => NameOutput(node.Name, Add(node));

    /// <summary>Appends a node and returns its index.</summary>
    public int Add(GraphNode node)
    {
        ArgumentNullException.ThrowIfNull(node);
        foreach (var j in node.Inputs)
            if (j < 0 || j >= _nodes.Count) throw new ArgumentException($"Node '{node.Name}' reads node {j}, which does not exist yet.", nameof(node));
        node.Index = _nodes.Count;
        _nodes.Add(node);
        return node.Index;
    }

    /// <summary>Adds a module (dispatching to its adapter) and records its output under <paramref name="path"/>.</summary>
    public int AddModule(string path, nn.Module module, int input)
    {
        ArgumentNullException.ThrowIfNull(module);
        var adapter = _adapters.Find(module);
        var output = adapter is null ? AddRecognisedChain(path, module, input) : adapter(this, path, module, input);
        if (path.Length > 0) _moduleOutputs[path] = output;
        return output;
    }

    /// <summary>
    /// A module without an adapter: if it has children and the probe forward shows that its forward calls child modules
    /// in a chain, the chain's modules (each through its own adapter); otherwise an error that says what to register.
    /// </summary>
    private int AddRecognisedChain(string path, nn.Module module, int input)
    {
        var shown = path.Length == 0 ? "<model>" : path;
        var type = module.GetType();
        var typeName = type.FullName ?? type.Name;
        var register = $"Register an adapter that describes its forward: ModuleAdapters.Default.Register<{type.Name}>((b, path, m, x) => …) — " +
            "children in order with b.AddChildren(path, m, x, \"child1\", \"child2\"), functional operations with b.AddOperation or b.AddRelu, " +
            "a residual addition with b.AddSum (docs/custom-models.md shows a worked adapter); or pass your own ModuleAdapters in ExplainerOptions.Adapters.";
        if (!module.named_children().Any())
            throw new NotSupportedException($"Module '{shown}' of type {typeName} is not supported by the relevance graph: it has no adapter and no child modules. {register}");
        if (_probeInput is null || _model is null)
            throw new ProbeInputRequiredException($"Module '{shown}' of type {typeName} has no adapter; a probe forward on an input can recognise it if its forward is a chain of known modules. " +
                "Give GraphBuilder.Build a probe input (the Explainer does this on the first Explain, or give ExplainerOptions.ProbeInput). " + register);
        _probe ??= ChainProbe.Record(_model, _probeInput);
        var chain = _probe.ChainOf(module, out var why)
            ?? throw new NotSupportedException($"Module '{shown}' of type {typeName} has no adapter and its forward is not a chain of known modules: {why}. {register}");
        var x = input;
        var used = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var callee in chain)
        {
            var calleePath = _probe.PathOf(callee);
            used[calleePath] = used.GetValueOrDefault(calleePath) + 1;
            // a module called twice (one ReLU reused) gets one node per call
            x = AddModule(used[calleePath] == 1 ? calleePath : $"{calleePath}#{used[calleePath]}", callee, x);
        }
        RecognisedChains.Add(shown);
        return x;
    }

    /// <summary>Modules without an adapter that were recognised as chains by the probe forward (module paths).</summary>
    internal List<string> RecognisedChains { get; } = new();

    /// <summary>Adds the children of <paramref name="module"/> one after another (the forward of a Sequential).</summary>
    public int AddChildrenInOrder(string path, nn.Module module, int input)
    {
        var x = input;
        foreach (var (name, child) in module.named_children())
            x = AddModule(Join(path, name), child, x);
        return x;
    }

    /// <summary>Adds the named children of <paramref name="module"/> in the given order; every name must exist.</summary>
    public int AddChildren(string path, nn.Module module, int input, params string[] names)
    {
        var children = module.named_children().ToDictionary(c => c.name, c => c.module);
        var x = input;
        foreach (var name in names)
        {
            if (!children.TryGetValue(name, out var child))
                throw new NotSupportedException($"Module '{path}' ({module.GetType().Name}) has no child '{name}' (children: {string.Join(", ", children.Keys)}).");
            x = AddModule(Join(path, name), child, x);
        }
        return x;
    }

    /// <summary>Adds a functional operation that is not a module (e.g. the flatten inside a VGG forward).</summary>
    public int AddOperation(string name, NodeKind kind, int input, Func<Tensor, Tensor> forward, bool clampsToNonNegative = false)
        => Add(new OperationNode(name, kind, input, forward) { ClampsToNonNegative = clampsToNonNegative });

    /// <summary>Adds a functional ReLU (e.g. the one after a residual addition).</summary>
    public int AddRelu(string name, int input) => AddOperation(name, NodeKind.Activation, input, x => F.relu(x), clampsToNonNegative: true);

    /// <summary>Adds an element-wise sum of several nodes (a residual addition).</summary>
    public int AddSum(string name, params int[] inputs) => Add(new SumNode(name, inputs));

    /// <summary>Returns the direct child module called <paramref name="name"/>, or <c>null</c>.</summary>
    public static nn.Module? Child(nn.Module module, string name)
    {
        foreach (var (n, m) in module.named_children())
            if (n == name) return m;
        return null;
    }

    /// <summary>Joins a parent path and a child name with a dot.</summary>
    public static string Join(string path, string name) => path.Length == 0 ? name : path + "." + name;
}

/// <summary>A module without an adapter could be recognised by a probe forward, but no probe input was given.</summary>
public sealed class ProbeInputRequiredException : NotSupportedException
{
    /// <summary>Creates the exception.</summary>
    public ProbeInputRequiredException(string message) : base(message) { }
}
