using System.Globalization;
using Google.Protobuf;
using RootDtd.Models.Onnx.Proto;
using static TorchSharp.torch;

namespace RootDtd.Models.Onnx;

/// <summary>
/// An ONNX model file read for its graph structure and its initializers (the weights): nodes with their operator,
/// inputs, outputs and attributes; initializers as tensors; the graph's own inputs and outputs. It does not run the
/// model. Parsing uses Google.Protobuf on a subset of the ONNX schema (<c>onnx-subset.proto</c> beside this file);
/// fields RootDtd does not need are skipped.
/// </summary>
public sealed class OnnxModelFile
{
    private readonly Dictionary<string, OnnxInitializer> _initializers;

    private OnnxModelFile(string path, OnnxModel model)
    {
        FilePath = path;
        var graph = model.Graph ?? throw new OnnxFormatException(path, $"'{path}' holds no graph: it is not an ONNX model file.");
        if (graph.Node.Count == 0) throw new OnnxFormatException(path, $"'{path}' holds an ONNX graph without nodes.");
        IrVersion = model.IrVersion;
        Producer = string.IsNullOrEmpty(model.ProducerVersion) ? model.ProducerName : $"{model.ProducerName} {model.ProducerVersion}";
        OperatorSets = model.OpsetImport.GroupBy(o => o.Domain).ToDictionary(g => g.Key, g => g.Max(o => o.Version), StringComparer.Ordinal);
        _initializers = new Dictionary<string, OnnxInitializer>(StringComparer.Ordinal);
        foreach (var t in graph.Initializer)
        {
            if (string.IsNullOrEmpty(t.Name)) throw new OnnxFormatException(path, $"'{path}' has an initializer without a name.");
            _initializers[t.Name] = new OnnxInitializer(path, t);
        }
        Nodes = graph.Node.Select((n, i) => new OnnxNodeInfo(
            string.IsNullOrEmpty(n.Name) ? $"#{i}" : n.Name, n.OpType, n.Input.ToList(), n.Output.ToList(),
            n.Attribute.ToDictionary(a => a.Name, a => new OnnxAttributeValue(a), StringComparer.Ordinal))).ToList();
        Inputs = graph.Input.Select(v => v.Name).Where(n => !_initializers.ContainsKey(n)).ToList();
        Outputs = graph.Output.Select(v => v.Name).ToList();
    }

    /// <summary>The file that was read.</summary>
    public string FilePath { get; }

    /// <summary>The ONNX IR version of the file.</summary>
    public long IrVersion { get; }

    /// <summary>The program that wrote the file (e.g. <c>CNTK 2.6</c>).</summary>
    public string Producer { get; }

    /// <summary>Operator set version per domain (the default domain is the empty string).</summary>
    public IReadOnlyDictionary<string, long> OperatorSets { get; }

    /// <summary>The graph's nodes in file order (any topological order; nothing should depend on it).</summary>
    public IReadOnlyList<OnnxNodeInfo> Nodes { get; }

    /// <summary>The graph's inputs that are not initializers (the data inputs).</summary>
    public IReadOnlyList<string> Inputs { get; }

    /// <summary>The graph's outputs.</summary>
    public IReadOnlyList<string> Outputs { get; }

    /// <summary>The initializers (constant tensors, i.e. the weights) by name.</summary>
    public IReadOnlyDictionary<string, OnnxInitializer> Initializers => _initializers;

    /// <summary>Reads an ONNX file.</summary>
    /// <param name="path">The <c>.onnx</c> file.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="OnnxFormatException">The file is not a readable ONNX model (truncated, corrupt, empty, no graph).</exception>
    public static OnnxModelFile Read(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"The ONNX file '{path}' does not exist.", path);
        OnnxModel model;
        try
        {
            using var stream = File.OpenRead(path);
            if (stream.Length == 0) throw new OnnxFormatException(path, $"The ONNX file '{path}' is empty.");
            model = OnnxModel.Parser.ParseFrom(stream);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new OnnxFormatException(path, $"'{path}' is not a readable ONNX file (corrupt or truncated protobuf: {e.Message}).", e);
        }
        catch (IOException e)
        {
            throw new OnnxFormatException(path, $"Cannot read the ONNX file '{path}': {e.Message}", e);
        }
        return new OnnxModelFile(path, model);
    }

    /// <summary>The nodes that take <paramref name="value"/> as one of their inputs.</summary>
    /// <param name="value">A value (tensor) name of the graph.</param>
    public IReadOnlyList<OnnxNodeInfo> ConsumersOf(string value) => Nodes.Where(n => n.Inputs.Contains(value)).ToList();

    /// <summary>The node that produces <paramref name="value"/>, or null for graph inputs and initializers.</summary>
    /// <param name="value">A value (tensor) name of the graph.</param>
    public OnnxNodeInfo? ProducerOf(string value) => Nodes.FirstOrDefault(n => n.Outputs.Contains(value));

    /// <summary>The initializer called <paramref name="name"/>.</summary>
    /// <param name="name">Its name.</param>
    /// <exception cref="OnnxFormatException">There is none (the message names the file).</exception>
    public OnnxInitializer Initializer(string name) =>
        _initializers.TryGetValue(name, out var t) ? t : throw new OnnxFormatException(FilePath, $"'{FilePath}' has no initializer named '{name}'.");
}

/// <summary>One node of an ONNX graph.</summary>
/// <param name="Name">The node's name (<c>#i</c> for an unnamed node, i its position in the file).</param>
/// <param name="OpType">The operator, e.g. <c>Conv</c>.</param>
/// <param name="Inputs">Names of its input values (initializers included).</param>
/// <param name="Outputs">Names of its output values.</param>
/// <param name="Attributes">Its attributes by name.</param>
public sealed record OnnxNodeInfo(string Name, string OpType, IReadOnlyList<string> Inputs, IReadOnlyList<string> Outputs,
    IReadOnlyDictionary<string, OnnxAttributeValue> Attributes)
{
    /// <summary>An integer-list attribute, or <paramref name="fallback"/> when the node does not have it.</summary>
    /// <param name="name">Attribute name.</param>
    /// <param name="fallback">Value when absent.</param>
    public IReadOnlyList<long> Ints(string name, IReadOnlyList<long> fallback) => Attributes.TryGetValue(name, out var a) ? a.Ints : fallback;

    /// <summary>An integer attribute, or <paramref name="fallback"/> when the node does not have it.</summary>
    /// <param name="name">Attribute name.</param>
    /// <param name="fallback">Value when absent.</param>
    public long Int(string name, long fallback) => Attributes.TryGetValue(name, out var a) ? a.Int : fallback;

    /// <summary>A float attribute, or <paramref name="fallback"/> when the node does not have it.</summary>
    /// <param name="name">Attribute name.</param>
    /// <param name="fallback">Value when absent.</param>
    public float Float(string name, float fallback) => Attributes.TryGetValue(name, out var a) ? a.Float : fallback;

    /// <summary><c>Conv 'name'</c>.</summary>
    public override string ToString() => $"{OpType} '{Name}'";
}

/// <summary>The value of one ONNX node attribute (the scalar, list and string kinds).</summary>
public sealed class OnnxAttributeValue
{
    internal OnnxAttributeValue(OnnxAttribute a)
    {
        Int = a.I;
        Float = a.F;
        Ints = a.Ints.ToArray();
        Floats = a.Floats.ToArray();
        Text = a.S.ToStringUtf8();
    }

    /// <summary>The integer value (0 when the attribute is of another kind).</summary>
    public long Int { get; }

    /// <summary>The float value (0 when the attribute is of another kind).</summary>
    public float Float { get; }

    /// <summary>The integer list (empty when the attribute is of another kind).</summary>
    public IReadOnlyList<long> Ints { get; }

    /// <summary>The float list (empty when the attribute is of another kind).</summary>
    public IReadOnlyList<float> Floats { get; }

    /// <summary>The string value (empty when the attribute is of another kind).</summary>
    public string Text { get; }
}

/// <summary>A constant tensor of an ONNX graph (float32 data read; other element types are reported, not converted).</summary>
public sealed class OnnxInitializer
{
    private const int FloatType = 1;
    private readonly OnnxTensor _proto;
    private readonly string _path;

    internal OnnxInitializer(string path, OnnxTensor proto)
    {
        _path = path;
        _proto = proto;
        Name = proto.Name;
        Shape = proto.Dims.ToArray();
        ElementType = proto.DataType;
    }

    /// <summary>The initializer's name.</summary>
    public string Name { get; }

    /// <summary>Its shape (empty for a scalar).</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>ONNX element type code (1 = float32).</summary>
    public int ElementType { get; }

    /// <summary>Number of elements (product of the shape).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>The values as float32, in row-major order.</summary>
    /// <exception cref="OnnxFormatException">The tensor is not float32, is stored outside the file, or its data does not match its shape.</exception>
    public float[] ToFloats()
    {
        if (ElementType != FloatType)
            throw new OnnxFormatException(_path, $"Initializer '{Name}' of '{_path}' has ONNX element type {ElementType}; float32 (1) was expected.");
        if (_proto.DataLocation != 0)
            throw new OnnxFormatException(_path, $"Initializer '{Name}' of '{_path}' is stored in an external file, which RootDtd does not read.");
        var count = ElementCount;
        float[] values;
        if (!_proto.RawData.IsEmpty)
        {
            if (_proto.RawData.Length != count * sizeof(float))
                throw new OnnxFormatException(_path, string.Create(CultureInfo.InvariantCulture,
                    $"Initializer '{Name}' of '{_path}' has {_proto.RawData.Length} bytes of data for shape [{string.Join(", ", Shape)}] ({count * sizeof(float)} expected): the file is corrupt."));
            values = new float[count];
            var raw = _proto.RawData.Span;
            for (var i = 0; i < values.Length; i++) values[i] = System.Buffers.Binary.BinaryPrimitives.ReadSingleLittleEndian(raw.Slice(i * 4, 4));
        }
        else
        {
            if (_proto.FloatData.Count != count)
                throw new OnnxFormatException(_path, string.Create(CultureInfo.InvariantCulture,
                    $"Initializer '{Name}' of '{_path}' has {_proto.FloatData.Count} values for shape [{string.Join(", ", Shape)}] ({count} expected): the file is corrupt."));
            values = _proto.FloatData.ToArray();
        }
        return values;
    }

    /// <summary>The values as a float32 CPU tensor of <see cref="Shape"/> (the caller disposes it).</summary>
    public Tensor ToTensor() => tensor(ToFloats(), Shape.ToArray());

    /// <summary><c>name [shape]</c>.</summary>
    public override string ToString() => $"{Name} [{string.Join(", ", Shape)}]";
}

/// <summary>An ONNX file cannot be read, or its graph is not the one expected (the message says what was expected).</summary>
public sealed class OnnxFormatException : ModelWeightsException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="path">The ONNX file.</param>
    /// <param name="message">What went wrong; names the file.</param>
    /// <param name="inner">The underlying cause, if any.</param>
    public OnnxFormatException(string path, string message, Exception? inner = null) : base(path, message, inner)
    {
    }
}
