using System.Globalization;
using static TorchSharp.torch;

namespace RootDtd.Models.Onnx;

/// <summary>What <see cref="OnnxResNetImporter.Import"/> found in an ONNX graph.</summary>
/// <param name="Blocks">Basic blocks per stage, e.g. 2,2,2,3.</param>
/// <param name="Widths">Output channels per stage, e.g. 64,128,256,512.</param>
/// <param name="StateDict">The weights under torchvision's key names (no <c>fc.*</c>: the graph ends at the pooled features). The caller disposes the tensors.</param>
/// <param name="BatchNormEpsilon">The BatchNorm ε of the graph (every BatchNorm has the same one).</param>
public sealed record OnnxResNetImport(IReadOnlyList<int> Blocks, IReadOnlyList<int> Widths, Dictionary<string, Tensor> StateDict, double BatchNormEpsilon)
{
    /// <summary>Number of parameters (BatchNorm running statistics excluded).</summary>
    public long ParameterCount => StateDict.Where(kv => !kv.Key.Contains("running_", StringComparison.Ordinal)).Sum(kv => kv.Value.numel());
}

/// <summary>
/// Maps an ONNX export of a BasicBlock ResNet feature extractor (conv 7×7/2 → BatchNorm → ReLU → max-pool 3×3/2 →
/// residual blocks → global average pooling) onto <see cref="ResNet"/>'s state dict with torchvision's key names.
/// The mapping follows the graph's data flow from its input — which Conv reads which value, where each Add takes its
/// two operands — never the order of the nodes in the file or their names. Any other structure is refused with an
/// <see cref="OnnxFormatException"/> that says what was expected and what was found.
/// </summary>
public static class OnnxResNetImporter
{
    /// <summary>The BatchNorm ε of <see cref="ResNet"/> (PyTorch's default).</summary>
    public const double TorchBatchNormEpsilon = 1e-5;

    /// <summary>Reads the ResNet structure and weights of <paramref name="file"/>.</summary>
    /// <param name="file">A parsed ONNX file.</param>
    /// <exception cref="OnnxFormatException">The graph is not a BasicBlock ResNet feature extractor (the message says where it differs).</exception>
    public static OnnxResNetImport Import(OnnxModelFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        var walker = new Walker(file);
        try
        {
            return walker.Run();
        }
        catch
        {
            foreach (var t in walker.State.Values) t.Dispose();
            throw;
        }
    }

    private sealed class Walker
    {
        private readonly OnnxModelFile _file;
        private readonly Dictionary<string, List<OnnxNodeInfo>> _consumers = new(StringComparer.Ordinal);
        private double? _epsilon;

        public Walker(OnnxModelFile file)
        {
            _file = file;
            foreach (var n in file.Nodes)
                foreach (var i in n.Inputs.Distinct())
                {
                    if (!_consumers.TryGetValue(i, out var list)) _consumers[i] = list = new List<OnnxNodeInfo>();
                    list.Add(n);
                }
        }

        public Dictionary<string, Tensor> State { get; } = new(StringComparer.Ordinal);

        private OnnxFormatException Error(string what) => new(_file.FilePath,
            $"'{_file.FilePath}' is not the expected ONNX graph (a BasicBlock ResNet feature extractor: Conv 7×7/2 → BatchNormalization → Relu → MaxPool 3×3/2 → residual blocks of Conv 3×3 → BatchNormalization → Relu → Conv 3×3 → BatchNormalization → Add → Relu, with a Conv 1×1 → BatchNormalization shortcut where the shape changes → global average pooling): {what}");

        private IReadOnlyList<OnnxNodeInfo> Consumers(string value) => _consumers.TryGetValue(value, out var l) ? l : Array.Empty<OnnxNodeInfo>();

        private OnnxNodeInfo Single(string value, string expectedOp, string where)
        {
            var c = Consumers(value);
            if (c.Count != 1 || c[0].OpType != expectedOp)
                throw Error($"{where}: expected the value '{value}' to feed exactly one {expectedOp}, found {(c.Count == 0 ? "nothing" : string.Join(", ", c))}.");
            return c[0];
        }

        public OnnxResNetImport Run()
        {
            if (_file.Inputs.Count != 1) throw Error($"expected one data input, found {_file.Inputs.Count} ({string.Join(", ", _file.Inputs)}).");
            if (_file.Outputs.Count != 1) throw Error($"expected one output, found {_file.Outputs.Count} ({string.Join(", ", _file.Outputs)}).");
            var x = _file.Inputs[0];

            var stem = Single(x, "Conv", "stem");
            var stemOut = ConvBn(stem, "conv1", "bn1", kernel: 7, stride: 2, "stem");
            var stemWidth = (int)State["conv1.weight"].shape[0];
            if (State["conv1.weight"].shape[1] != 3) throw Error($"the stem convolution {stem} has {State["conv1.weight"].shape[1]} input channels; 3 (a colour image) were expected.");
            var relu = Single(stemOut, "Relu", "stem");
            var pool = Single(relu.Outputs[0], "MaxPool", "stem");
            CheckWindow(pool, 3, 2, "the stem's max-pool");
            var v = pool.Outputs[0];

            var blocks = new List<(int Width, int Stride, bool Shortcut, string Prefix)>();
            var stageBlocks = new List<int>();
            var widths = new List<int>();
            var inWidth = stemWidth;
            while (true)
            {
                var consumers = Consumers(v);
                if (consumers.Count == 1 && consumers[0].OpType is "GlobalAveragePool" or "AveragePool")
                {
                    var avg = consumers[0];
                    if (avg.OpType == "AveragePool" && avg.Ints("pads", new long[4]).Any(p => p != 0))
                        throw Error($"the final {avg} pads its input; a global average pooling was expected.");
                    if (avg.Outputs[0] != _file.Outputs[0])
                        throw Error($"the final {avg} is not the graph's output '{_file.Outputs[0]}'.");
                    break;
                }
                var convs = consumers.Where(c => c.OpType == "Conv").ToList();
                var adds = consumers.Where(c => c.OpType == "Add").ToList();
                if (convs.Count == 0 || consumers.Count != convs.Count + adds.Count || adds.Count > 1)
                    throw Error($"after '{v}' expected the convolutions of a residual block (or the final average pooling), found {(consumers.Count == 0 ? "nothing" : string.Join(", ", consumers))}.");

                // Tell the main path (Conv → BN → Relu → …) from the shortcut (Conv → BN → Add) by what follows.
                OnnxNodeInfo? main = null, shortcut = null;
                foreach (var c in convs)
                {
                    var bn = Single(c.Outputs[0], "BatchNormalization", $"block after '{v}'");
                    var next = Consumers(bn.Outputs[0]);
                    if (next.Count == 1 && next[0].OpType == "Relu") main = main is null ? c : throw Error($"two main paths leave '{v}' ({main}, {c}).");
                    else if (next.Count == 1 && next[0].OpType == "Add") shortcut = shortcut is null ? c : throw Error($"two shortcuts leave '{v}'.");
                    else throw Error($"the convolution {c} is followed by {bn} and then {(next.Count == 0 ? "nothing" : string.Join(", ", next))}; a Relu (main path) or an Add (shortcut) was expected.");
                }
                if (main is null) throw Error($"no main path (Conv → BatchNormalization → Relu) leaves '{v}'.");
                if ((shortcut is null) == (adds.Count == 0)) throw Error($"the block after '{v}' has {(shortcut is null ? "neither an identity nor a convolutional shortcut" : "both an identity and a convolutional shortcut")}.");

                var mainWeight = _file.Initializer(WeightName(main));
                var width = (int)mainWeight.Shape[0];
                var stride = (int)main.Ints("strides", new long[] { 1, 1 })[0];
                var newStage = blocks.Count == 0 || width != blocks[^1].Width || stride != 1;
                if (newStage)
                {
                    if (widths.Count == 4) throw Error($"a fifth stage starts after '{v}'; a ResNet has four.");
                    widths.Add(width);
                    stageBlocks.Add(0);
                }
                var prefix = string.Create(CultureInfo.InvariantCulture, $"layer{widths.Count}.{stageBlocks[^1]}");
                stageBlocks[^1]++;

                var h = ConvBn(main, $"{prefix}.conv1", $"{prefix}.bn1", 3, stride, prefix);
                var r = Single(h, "Relu", prefix);
                var conv2 = Single(r.Outputs[0], "Conv", prefix);
                var h2 = ConvBn(conv2, $"{prefix}.conv2", $"{prefix}.bn2", 3, 1, prefix);
                var add = Single(h2, "Add", prefix);
                string identity;
                if (shortcut is not null)
                {
                    identity = ConvBn(shortcut, $"{prefix}.downsample.0", $"{prefix}.downsample.1", 1, stride, $"{prefix} shortcut");
                }
                else
                {
                    if (stride != 1 || width != inWidth) throw Error($"{prefix} changes the shape ({inWidth}→{width} channels, stride {stride}) but has an identity shortcut.");
                    identity = v;
                }
                if (add.Inputs.Count != 2 || !add.Inputs.Contains(identity) || !add.Inputs.Contains(h2))
                    throw Error($"{prefix}: {add} does not add the block's shortcut to its main path.");
                if (shortcut is not null && add != Single(identity, "Add", $"{prefix} shortcut"))
                    throw Error($"{prefix}: the shortcut does not end in the block's Add.");
                if (shortcut is null && adds[0] != add) throw Error($"{prefix}: the identity of '{v}' is added elsewhere ({adds[0]}).");
                var outRelu = Single(add.Outputs[0], "Relu", prefix);
                blocks.Add((width, stride, shortcut is not null, prefix));
                inWidth = width;
                v = outRelu.Outputs[0];
            }
            if (widths.Count != 4) throw Error($"found {widths.Count} stages ({string.Join("-", stageBlocks)}); a ResNet has four.");
            return new OnnxResNetImport(stageBlocks, widths, State, _epsilon ?? TorchBatchNormEpsilon);
        }

        private static string WeightName(OnnxNodeInfo conv) => conv.Inputs.Count >= 2 ? conv.Inputs[1] : string.Empty;

        private void CheckWindow(OnnxNodeInfo node, int kernel, int stride, string where)
        {
            var k = node.Ints("kernel_shape", Array.Empty<long>());
            var s = node.Ints("strides", new long[] { 1, 1 });
            if (k.Count != 2 || k[0] != kernel || k[1] != kernel || s.Count != 2 || s[0] != stride || s[1] != stride)
                throw Error($"{where} ({node}) has kernel [{string.Join(", ", k)}] and strides [{string.Join(", ", s)}]; {kernel}×{kernel} with stride {stride} was expected.");
            if (node.Attributes.TryGetValue("auto_pad", out var autoPad) && autoPad.Text is { Length: > 0 } mode && mode != "NOTSET")
                throw Error($"{where} ({node}) uses auto_pad={mode}; explicit pads were expected.");
            if (node.Ints("dilations", new long[] { 1, 1 }).Any(d => d != 1)) throw Error($"{where} ({node}) is dilated.");
            // PyTorch pads symmetrically by kernel/2. An export may drop the end padding that a strided window never
            // reaches (CNTK writes [3,3,2,2] and [1,1,0,0]); on even input sides both give the same result.
            var pads = node.Ints("pads", new long[4]);
            var p = kernel / 2;
            var endOk = stride == 1 ? new long[] { p } : new long[] { p, p - 1 };
            if (pads.Count != 4 || pads[0] != p || pads[1] != p || !endOk.Contains(pads[2]) || !endOk.Contains(pads[3]))
                throw Error($"{where} ({node}) has pads [{string.Join(", ", pads)}]; [{p}, {p}, {p}, {p}]{(stride == 1 ? string.Empty : $" or [{p}, {p}, {p - 1}, {p - 1}]")} was expected.");
        }

        private string ConvBn(OnnxNodeInfo conv, string convKey, string bnKey, int kernel, int stride, string where)
        {
            CheckWindow(conv, kernel, stride, $"{where}: {convKey}");
            if (conv.Int("group", 1) != 1) throw Error($"{where}: {conv} is a grouped convolution.");
            if (conv.Inputs.Count != 2) throw Error($"{where}: {conv} has a bias (or no weight); the ResNet's convolutions have none.");
            var weight = _file.Initializer(WeightName(conv));
            if (weight.Shape.Count != 4 || weight.Shape[2] != kernel || weight.Shape[3] != kernel)
                throw Error($"{where}: the weight '{weight.Name}' of {conv} has shape [{string.Join(", ", weight.Shape)}]; [out, in, {kernel}, {kernel}] was expected.");
            State[$"{convKey}.weight"] = weight.ToTensor();
            var bn = Single(conv.Outputs[0], "BatchNormalization", where);
            if (bn.Inputs.Count != 5) throw Error($"{where}: {bn} has {bn.Inputs.Count} inputs; 5 (x, scale, bias, mean, variance) were expected.");
            if (bn.Int("spatial", 1) != 1) throw Error($"{where}: {bn} is not spatial (per-channel).");
            var eps = bn.Float("epsilon", 1e-5f);
            _epsilon ??= eps;
            if (Math.Abs(eps - _epsilon.Value) > 1e-12 || Math.Abs(eps - TorchBatchNormEpsilon) > 1e-9)
                throw Error($"{where}: {bn} has ε = {eps.ToString("g", CultureInfo.InvariantCulture)}; {TorchBatchNormEpsilon.ToString("g", CultureInfo.InvariantCulture)} (PyTorch's BatchNorm2d) was expected.");
            var names = new[] { "weight", "bias", "running_mean", "running_var" };
            for (var i = 0; i < 4; i++)
            {
                var t = _file.Initializer(bn.Inputs[i + 1]);
                if (t.Shape.Count != 1 || t.Shape[0] != weight.Shape[0])
                    throw Error($"{where}: the {names[i]} '{t.Name}' of {bn} has shape [{string.Join(", ", t.Shape)}]; [{weight.Shape[0]}] was expected.");
                State[$"{bnKey}.{names[i]}"] = t.ToTensor();
            }
            return bn.Outputs[0];
        }
    }
}
