using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Graph;

/// <summary>
/// The registry that maps module types to <see cref="ModuleAdapter"/>s. <see cref="Default"/> knows nested
/// <c>Sequential</c>, Conv1d/2d/3d, Linear (on any rank), LayerNorm, BatchNorm1d/2d, ReLU, LeakyReLU, GELU, Dropout, Identity, Flatten, MaxPool2d,
/// AvgPool2d, AdaptiveAvgPool2d, torchvision ResNet (BasicBlock, Bottleneck, downsample, residual sum), torchvision VGG
/// RootDtd's own <see cref="Models.ResNet"/> and <see cref="Models.Vgg"/>, and the timm-layout <see cref="Models.VisionTransformer"/>. Later registrations win over earlier ones.
/// </summary>
public sealed class ModuleAdapters
{
    private readonly List<(Func<nn.Module, bool> Matches, ModuleAdapter Adapter)> _entries = new();

    /// <summary>The process-wide registry used when an explainer is not given its own.</summary>
    public static ModuleAdapters Default { get; } = CreateBuiltIn();

    /// <summary>Creates a registry with the built-in adapters only.</summary>
    public static ModuleAdapters CreateBuiltIn()
    {
        var r = new ModuleAdapters();
        RegisterBuiltIns(r);
        return r;
    }

    /// <summary>Registers <paramref name="adapter"/> for modules of type <typeparamref name="TModule"/> (and subclasses).</summary>
    public ModuleAdapters Register<TModule>(ModuleAdapter adapter) where TModule : nn.Module
        => Register(m => m is TModule, adapter);

    /// <summary>Registers <paramref name="adapter"/> for every module that satisfies <paramref name="matches"/>.</summary>
    public ModuleAdapters Register(Func<nn.Module, bool> matches, ModuleAdapter adapter)
    {
        ArgumentNullException.ThrowIfNull(matches);
        ArgumentNullException.ThrowIfNull(adapter);
        lock (_entries) _entries.Add((matches, adapter));
        return this;
    }

    /// <summary>Returns the adapter registered last for <paramref name="module"/>, or <c>null</c>.</summary>
    public ModuleAdapter? Find(nn.Module module)
    {
        lock (_entries)
        {
            for (var i = _entries.Count - 1; i >= 0; i--)
                if (_entries[i].Matches(module)) return _entries[i].Adapter;
        }
        return null;
    }

    private static void RegisterBuiltIns(ModuleAdapters r)
    {
        r.Register<Sequential>((b, path, m, x) => b.AddChildrenInOrder(path, m, x));

        r.Register(m => m is Conv1d or Conv2d or Conv3d, (b, path, m, x) =>
        {
            var conv = (Convolution)m;
            if (conv.padding_mode != PaddingModes.Zeros)
                throw new NotSupportedException($"{m.GetType().Name} '{path}': padding mode {conv.padding_mode} is not supported (only zero padding).");
            if (conv.padding_type.HasValue || conv.padding is null)
                throw new NotSupportedException($"{m.GetType().Name} '{path}': symbolic padding ('same'/'valid') is not supported; give explicit padding sizes.");
            var unit = LinearUnit.Convolution(conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups);
            return b.Add(new LinearUnitNode(path, unit, x) { Module = m });
        });

        r.Register<Linear>((b, path, m, x) =>
        {
            var lin = (Linear)m;
            return b.Add(new LinearUnitNode(path, LinearUnit.Dense(lin.weight, lin.bias), x) { Module = m });
        });

        r.Register(m => m is BatchNorm1d or BatchNorm2d, (b, path, m, x) =>
        {
            var bn = (NormBase)m;
            if (bn.running_mean is null || bn.running_var is null)
                throw new NotSupportedException($"BatchNorm '{path}' has no running statistics (track_running_stats=false); it cannot be explained in evaluation mode.");
            using var _ = torch.no_grad();
            var scale = (bn.running_var + bn.eps).rsqrt();
            if (bn.weight is not null) scale = scale * bn.weight;
            var shift = -bn.running_mean * scale;
            if (bn.bias is not null) shift = shift + bn.bias;
            return b.Add(new BatchNormNode(path, x, scale.detach().DetachFromDisposeScope(), shift.detach().DetachFromDisposeScope()) { Module = m });
        });

        r.Register<ReLU>((b, path, m, x) => b.Add(new OperationNode(path, NodeKind.Activation, x, t => F.relu(t)) { Module = m, ClampsToNonNegative = true }));
        r.Register<LeakyReLU>((b, path, m, x) =>
        {
            var slope = ((LeakyReLU)m).negative_slope;
            return b.Add(new OperationNode(path, NodeKind.Activation, x, t => F.leaky_relu(t, slope)) { Module = m });
        });
        r.Register<GELU>((b, path, m, x) => b.Add(new OperationNode(path, NodeKind.Activation, x, t => F.gelu(t)) { Module = m }));
        r.Register(m => m is Dropout or Dropout2d or Identity, (b, path, m, x) =>
            b.Add(new OperationNode(path, NodeKind.Shape, x, t => t.alias()) { Module = m }));
        r.Register<Flatten>((b, path, m, x) =>
        {
            var f = (Flatten)m;
            long start = f.start_dim, end = f.end_dim;
            return b.Add(new OperationNode(path, NodeKind.Shape, x, t => t.flatten(start, end)) { Module = m });
        });
        r.Register<MaxPool2d>((b, path, m, x) =>
        {
            var p = (MaxPool2d)m;
            return b.Add(new OperationNode(path, NodeKind.MaxPool, x, t => p.forward(t)) { Module = m });
        });
        r.Register(m => m is AvgPool2d or AdaptiveAvgPool2d, (b, path, m, x) =>
        {
            var p = (nn.Module<Tensor, Tensor>)m;
            return b.Add(new OperationNode(path, NodeKind.AvgPool, x, t => p.forward(t)) { Module = m });
        });
        TransformerAdapters.Register(r);

        // torchvision ResNet: its children run in registration order (conv1 … layer4, avgpool, flatten, fc).
        r.Register<TorchSharp.Modules.ResNet>((b, path, m, x) =>
            b.AddChildren(path, m, x, "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "flatten", "fc"));
        // torchvision's BasicBlock/Bottleneck are private nested types; RootDtd's own blocks have the same layout.
        r.Register(m => IsTorchVisionBlock(m) || m is Models.ResidualBlock, AddResidualBlock);

        r.Register<TorchSharp.Modules.VGG>((b, path, m, x) =>
        {
            x = b.AddChildren(path, m, x, "features", "avgpool");
            x = b.AddOperation(GraphBuilder.Join(path, "flatten"), NodeKind.Shape, x, t => t.flatten(1));
            return b.AddChildren(path, m, x, "classifier");
        });
        r.Register<Models.ResNet>((b, path, m, x) => b.AddChildrenInOrder(path, m, x));
        r.Register<Models.Vgg>((b, path, m, x) =>
        {
            var vgg = (Models.Vgg)m;
            x = b.AddChildren(path, m, x, "features");
            if (GraphBuilder.Child(m, "avgpool") is not null) x = b.AddChildren(path, m, x, "avgpool");
            x = b.AddOperation(GraphBuilder.Join(path, "flatten"), NodeKind.Shape, x, t => t.flatten(1));
            return b.AddChildren(path, m, x, "classifier");
        });
    }

    private static bool IsTorchVisionBlock(nn.Module m)
    {
        var t = m.GetType();
        return t.DeclaringType == typeof(TorchSharp.Modules.ResNet) && t.Name is "BasicBlock" or "Bottleneck";
    }

    /// <summary>
    /// conv1 → bn1 → relu → conv2 → bn2 [→ relu → conv3 → bn3] ; identity = downsample(input) or input ;
    /// sum(identity, out) → relu. The residual sum and the final ReLU are functional in torchvision and become graph
    /// nodes named <c>&lt;block&gt;.sum</c> and <c>&lt;block&gt;.relu_out</c>.
    /// </summary>
    private static int AddResidualBlock(GraphBuilder b, string path, nn.Module m, int input)
    {
        var bottleneck = GraphBuilder.Child(m, "conv3") is not null;
        var reluNames = m.named_children().Where(c => c.module is ReLU).Select(c => c.name).ToList();
        string Relu(int i) => reluNames.Count > i ? reluNames[i] : reluNames.Count > 0 ? reluNames[0] : "";

        int ReluNode(int i, int x)
        {
            var name = Relu(i);
            if (name.Length == 0) return b.AddRelu(GraphBuilder.Join(path, $"relu{i + 1}"), x);
            // a ReLU module that the block calls several times gets one node per call (PyTorch's block.relu)
            var node = b.Add(new OperationNode(reluNames.Count > i ? GraphBuilder.Join(path, name) : GraphBuilder.Join(path, $"{name}#{i + 1}"),
                NodeKind.Activation, x, t => F.relu(t)) { Module = GraphBuilder.Child(m, name), ClampsToNonNegative = true });
            return node;
        }

        var h = b.AddChildren(path, m, input, "conv1", "bn1");
        h = ReluNode(0, h);
        h = b.AddChildren(path, m, h, "conv2", "bn2");
        if (bottleneck)
        {
            h = ReluNode(1, h);
            h = b.AddChildren(path, m, h, "conv3", "bn3");
        }
        var identity = GraphBuilder.Child(m, "downsample") is { } ds ? b.AddModule(GraphBuilder.Join(path, "downsample"), ds, input) : input;
        var sum = b.AddSum(GraphBuilder.Join(path, "sum"), identity, h);
        return b.AddRelu(GraphBuilder.Join(path, "relu_out"), sum);
    }
}
