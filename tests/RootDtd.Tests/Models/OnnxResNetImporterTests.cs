using FluentAssertions;
using Google.Protobuf;
using RootDtd.Models;
using RootDtd.Models.Onnx;
using RootDtd.Models.Onnx.Proto;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Models;

/// <summary>
/// The ONNX ResNet import on graphs written here from a known <see cref="ResNet"/>: nodes shuffled and given
/// meaningless names, so only the data flow can map them; the imported state dict must equal the model's.
/// </summary>
public sealed class OnnxResNetImporterTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rootdtd-onnx-").FullName;

    /// <summary>Writes <paramref name="model"/>'s backbone as an ONNX graph in the style of the CNTK export.</summary>
    private static OnnxModel Export(ResNet model, int seed, bool cntkPads = true)
    {
        var sd = model.state_dict();
        var graph = new OnnxGraph { Name = "test" };
        var nodes = new List<OnnxNode>();
        var counter = 0;
        string Value() => $"v{counter++}";
        string Init(string key)
        {
            var t = sd[key].detach().contiguous();
            var name = $"p{counter++}";
            var proto = new OnnxTensor { Name = name, DataType = 1 };
            proto.Dims.AddRange(t.shape);
            proto.RawData = ByteString.CopyFrom(t.data<float>().ToArray().SelectMany(BitConverter.GetBytes).ToArray());
            graph.Initializer.Add(proto);
            return name;
        }
        OnnxNode Node(string op, IEnumerable<string> inputs, params (string, long[])[] ints)
        {
            var n = new OnnxNode { OpType = op, Name = $"n{counter++}" };
            n.Input.AddRange(inputs);
            n.Output.Add(Value());
            foreach (var (name, values) in ints)
            {
                var a = new OnnxAttribute { Name = name, Type = 7 };
                a.Ints.AddRange(values);
                n.Attribute.Add(a);
            }
            nodes.Add(n);
            return n;
        }
        string ConvBn(string x, string conv, string bn, long k, long s)
        {
            var p = k / 2;
            var end = cntkPads && s == 2 ? p - 1 : p;
            var c = Node("Conv", new[] { x, Init(conv + ".weight") }, ("kernel_shape", new[] { k, k }), ("strides", new[] { s, s }), ("pads", new[] { p, p, end, end }));
            var b = Node("BatchNormalization", new[] { c.Output[0], Init(bn + ".weight"), Init(bn + ".bias"), Init(bn + ".running_mean"), Init(bn + ".running_var") });
            b.Attribute.Add(new OnnxAttribute { Name = "epsilon", F = 1e-5f, Type = 1 });
            return b.Output[0];
        }
        graph.Input.Add(new OnnxValueInfo { Name = "data" });
        var h = ConvBn("data", "conv1", "bn1", 7, 2);
        h = Node("Relu", new[] { h }).Output[0];
        h = Node("MaxPool", new[] { h }, ("kernel_shape", new long[] { 3, 3 }), ("strides", new long[] { 2, 2 }), ("pads", cntkPads ? new long[] { 1, 1, 0, 0 } : new long[] { 1, 1, 1, 1 })).Output[0];
        var blockKeys = sd.Keys.Where(k => k.StartsWith("layer", StringComparison.Ordinal) && k.EndsWith(".conv1.weight", StringComparison.Ordinal))
            .Select(k => k[..^".conv1.weight".Length]).ToList();
        foreach (var b in blockKeys)
        {
            var stride = sd.ContainsKey(b + ".downsample.0.weight") && b.EndsWith(".0", StringComparison.Ordinal) && b != "layer1.0" ? 2 : 1;
            var m = ConvBn(h, b + ".conv1", b + ".bn1", 3, stride);
            m = Node("Relu", new[] { m }).Output[0];
            m = ConvBn(m, b + ".conv2", b + ".bn2", 3, 1);
            var identity = sd.ContainsKey(b + ".downsample.0.weight") ? ConvBn(h, b + ".downsample.0", b + ".downsample.1", 1, stride) : h;
            var add = Node("Add", seed % 2 == 0 ? new[] { m, identity } : new[] { identity, m });
            h = Node("Relu", new[] { add.Output[0] }).Output[0];
        }
        var pool = Node("GlobalAveragePool", new[] { h });
        graph.Output.Add(new OnnxValueInfo { Name = pool.Output[0] });
        var rng = new Random(seed);
        graph.Node.AddRange(nodes.OrderBy(_ => rng.Next()));
        var model2 = new OnnxModel { IrVersion = 3, ProducerName = "test", Graph = graph };
        model2.OpsetImport.Add(new OnnxOperatorSet { Version = 8 });
        return model2;
    }

    private string Write(OnnxModel model, string name)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    private static ResNet SmallResNet(int[] blocks)
    {
        torch.manual_seed(11);
        var model = new ResNet(blocks, new[] { 8, 16, 16, 32 }, false, 5);
        using (torch.no_grad())
            foreach (var (name, t) in model.state_dict())
                if (name.Contains("running_", StringComparison.Ordinal) || name.Contains("bn", StringComparison.Ordinal) || name.Contains("downsample.1", StringComparison.Ordinal))
                    if (t.is_floating_point()) t.copy_(torch.rand_like(t) + 0.5);
        return model;
    }

    [Theory]
    [InlineData(1, true)]
    [InlineData(2, false)]
    [InlineData(3, true)]
    public void Shuffled_graphs_map_to_the_state_dict_by_structure(int seed, bool cntkPads)
    {
        using var model = SmallResNet(new[] { 2, 1, 1, 3 });
        var path = Write(Export(model, seed, cntkPads), $"resnet{seed}.onnx");
        var import = OnnxResNetImporter.Import(OnnxModelFile.Read(path));
        import.Blocks.Should().Equal(2, 1, 1, 3);
        import.Widths.Should().Equal(8, 16, 16, 32);
        var expected = model.state_dict().Where(kv => !kv.Key.StartsWith("fc.", StringComparison.Ordinal) && !kv.Key.EndsWith("num_batches_tracked", StringComparison.Ordinal)).ToList();
        import.StateDict.Keys.Should().BeEquivalentTo(expected.Select(kv => kv.Key));
        foreach (var (key, t) in expected) import.StateDict[key].eq(t).all().item<bool>().Should().BeTrue(key);

        // Loaded into a fresh model of the same shape, the features agree with the original.
        using var copy = new ResNet(import.Blocks, import.Widths, false, 5);
        ModelWeights.LoadStateDict(copy, import.StateDict, strict: false);
        model.eval();
        copy.eval();
        using var x = torch.randn(2, 3, 64, 64, generator: new Generator(5));
        using var a = model.ForwardFeatures(x);
        using var b = copy.ForwardFeatures(x);
        (a - b).abs().max().item<float>().Should().Be(0);
        foreach (var t in import.StateDict.Values) t.Dispose();
    }

    [Fact]
    public void A_ResNet_of_another_shape_is_refused_by_the_cntk_model()
    {
        using var model = SmallResNet(new[] { 1, 1, 1, 1 });
        var path = Write(Export(model, 1), "small.onnx");
        var act = () => CntkResNet18.Convert(path, path);
        act.Should().Throw<OnnxFormatException>().WithMessage("*small.onnx' is a ResNet with blocks 1-1-1-1 and widths 8-16-16-32*expects blocks 2-2-2-3 and widths 64-128-256-512*");
    }

    [Fact]
    public void Graphs_that_are_not_a_BasicBlock_ResNet_name_where_they_differ()
    {
        using var model = SmallResNet(new[] { 1, 1, 1, 1 });
        // The main path's ReLU in layer2.0 replaced by a Sigmoid.
        var onnx = Export(model, 4);
        var conv = onnx.Graph.Node.Single(n => n.OpType == "Conv" && onnx.Graph.Initializer.Any(i => i.Name == n.Input[1] && i.Dims.SequenceEqual(new long[] { 16, 8, 3, 3 })));
        var bn = onnx.Graph.Node.Single(n => n.Input.Contains(conv.Output[0]));
        onnx.Graph.Node.Single(n => n.Input.Contains(bn.Output[0])).OpType = "Sigmoid";
        var path = Write(onnx, "sigmoid.onnx");
        var act = () => OnnxResNetImporter.Import(OnnxModelFile.Read(path));
        act.Should().Throw<OnnxFormatException>().WithMessage("*sigmoid.onnx' is not the expected ONNX graph*a Relu (main path) or an Add (shortcut) was expected*");

        // A dilated stem.
        onnx = Export(model, 5);
        var stem = onnx.Graph.Node.Single(n => n.Input.Contains("data"));
        var dil = new OnnxAttribute { Name = "dilations", Type = 7 };
        dil.Ints.AddRange(new long[] { 2, 2 });
        stem.Attribute.Add(dil);
        path = Write(onnx, "dilated.onnx");
        act.Should().Throw<OnnxFormatException>().WithMessage("*dilated.onnx*is dilated*");
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
