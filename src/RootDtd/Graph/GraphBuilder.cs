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
/// <see cref="ModuleAdapters.Register{TModule}"/>.
/// </summary>
public sealed class GraphBuilder
{
    private readonly List<GraphNode> _nodes = new() { new InputNode() };
    private readonly Dictionary<string, int> _moduleOutputs = new(StringComparer.Ordinal);
    private readonly ModuleAdapters _adapters;

    internal GraphBuilder(ModuleAdapters adapters)
    {
        _adapters = adapters;
    }

    /// <summary>Builds the graph of <paramref name="model"/> with the given adapters (the global registry by default).</summary>
    public static RelevanceGraph Build(nn.Module model, ModuleAdapters? adapters = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var builder = new GraphBuilder(adapters ?? ModuleAdapters.Default);
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
        var adapter = _adapters.Find(module)
            ?? throw new NotSupportedException(
                $"Module '{(path.Length == 0 ? "<model>" : path)}' of type {module.GetType().FullName} is not supported by the relevance graph. " +
                "Register an adapter for it with RootDtd.Graph.ModuleAdapters.Register<T>(...) (see docs/architecture.md).");
        var output = adapter(this, path, module, input);
        if (path.Length > 0) _moduleOutputs[path] = output;
        return output;
    }

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
