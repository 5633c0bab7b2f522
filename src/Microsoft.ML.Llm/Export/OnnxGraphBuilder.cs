// A small builder of ONNX graphs over the message types that Grpc.Tools' protoc generates from onnx.proto3: nodes
// get unique output names, constants and weights become initializers. The exporter reads top to bottom as the model
// does; this file only spells the protobuf messages.

using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;

namespace Microsoft.ML.Llm;

/// <summary>Builds one ONNX <see cref="GraphProto"/>: nodes, initializers, inputs and outputs.</summary>
internal sealed class OnnxGraphBuilder
{
    private readonly Dictionary<string, int> _counters = new(StringComparer.Ordinal);

    /// <summary>The graph being built.</summary>
    public GraphProto Graph { get; } = new() { Name = "main_graph" };

    /// <summary>The number of bytes of initializer data added so far.</summary>
    public long InitializerBytes { get; private set; }

    /// <summary>Declares a graph input of element type <paramref name="type"/> and the given dimensions (a string is a named, dynamic axis).</summary>
    public string Input(string name, TensorProto.Types.DataType type, params object[] dims)
    {
        Graph.Input.Add(ValueInfo(name, type, dims));
        return name;
    }

    /// <summary>Declares <paramref name="value"/> a graph output named <paramref name="name"/> (an Identity node renames it).</summary>
    public void Output(string value, string name, TensorProto.Types.DataType type, params object[] dims)
    {
        if (value != name)
            Node("Identity", [value], [name]);
        Graph.Output.Add(ValueInfo(name, type, dims));
    }

    /// <summary>Adds a node with one output and returns that output's (fresh) name.</summary>
    public string Op(string opType, IEnumerable<string> inputs, params AttributeProto[] attributes) =>
        Ops(opType, inputs, 1, attributes)[0];

    /// <summary>Adds a node with <paramref name="outputCount"/> outputs and returns their (fresh) names.</summary>
    public string[] Ops(string opType, IEnumerable<string> inputs, int outputCount, params AttributeProto[] attributes) =>
        Ops(opType, inputs, outputCount, "", attributes);

    /// <summary>Adds a node of <paramref name="domain"/> with <paramref name="outputCount"/> outputs and returns their (fresh) names.</summary>
    public string[] Ops(string opType, IEnumerable<string> inputs, int outputCount, string domain, params AttributeProto[] attributes)
    {
        string baseName = $"/{opType}";
        int n = _counters.TryGetValue(baseName, out int c) ? c : 0;
        _counters[baseName] = n + 1;
        string prefix = n == 0 ? baseName : $"{baseName}_{n}";
        var outputs = Enumerable.Range(0, outputCount).Select(i => $"{prefix}_output_{i}").ToArray();
        Node(opType, inputs, outputs, attributes, prefix, domain);
        return outputs;
    }

    /// <summary>Adds a node with named outputs, in the default domain unless <paramref name="domain"/> is given.</summary>
    public void Node(string opType, IEnumerable<string> inputs, IEnumerable<string> outputs, AttributeProto[]? attributes = null, string? name = null, string domain = "")
    {
        var node = new NodeProto { OpType = opType, Name = name ?? $"/{opType}_{outputs.First()}", Domain = domain };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        if (attributes is not null)
            node.Attribute.AddRange(attributes);
        Graph.Node.Add(node);
    }

    /// <summary>Adds a float initializer of the given shape.</summary>
    public string Initializer(string name, ReadOnlySpan<float> values, params long[] shape) =>
        Initializer(name, TensorProto.Types.DataType.Float, MemoryMarshal.AsBytes(values), shape);

    /// <summary>Adds an int8 initializer of the given shape.</summary>
    public string Initializer(string name, ReadOnlySpan<sbyte> values, params long[] shape) =>
        Initializer(name, TensorProto.Types.DataType.Int8, MemoryMarshal.AsBytes(values), shape);

    /// <summary>Adds a uint8 initializer of the given shape.</summary>
    public string Initializer(string name, ReadOnlySpan<byte> values, params long[] shape) =>
        Initializer(name, TensorProto.Types.DataType.Uint8, values, shape);

    /// <summary>Adds an int64 initializer of the given shape.</summary>
    public string Initializer(string name, ReadOnlySpan<long> values, params long[] shape) =>
        Initializer(name, TensorProto.Types.DataType.Int64, MemoryMarshal.AsBytes(values), shape);

    private string Initializer(string name, TensorProto.Types.DataType type, ReadOnlySpan<byte> data, long[] shape)
    {
        // raw_data is little-endian, row-major (onnx.proto3: TensorProto.raw_data), which .NET's memory layout is here.
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("ONNX export writes raw little-endian tensor data; this machine is big-endian.");
        var tensor = new TensorProto { Name = name, DataType = (int)type, RawData = ByteString.CopyFrom(data) };
        tensor.Dims.AddRange(shape);
        Graph.Initializer.Add(tensor);
        InitializerBytes += data.Length;
        return name;
    }

    /// <summary>A 1-D int64 constant (shapes, axes, split sizes), as an initializer.</summary>
    public string Int64s(params long[] values) => Initializer(FreshName("const_i64"), values, values.Length);

    /// <summary>A scalar int64 constant.</summary>
    public string Int64Scalar(long value) => Initializer(FreshName("const_i64"), [value]);

    /// <summary>A scalar float constant.</summary>
    public string FloatScalar(float value) => Initializer(FreshName("const_f32"), [value]);

    private string FreshName(string stem)
    {
        int n = _counters.TryGetValue(stem, out int c) ? c : 0;
        _counters[stem] = n + 1;
        return $"/{stem}_{n}";
    }

    /// <summary>An integer attribute.</summary>
    public static AttributeProto Attr(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    /// <summary>A float attribute.</summary>
    public static AttributeProto Attr(string name, float value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    /// <summary>An integer-list attribute.</summary>
    public static AttributeProto Attr(string name, long[] values)
    {
        var attribute = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        attribute.Ints.AddRange(values);
        return attribute;
    }

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
        {
            shape.Dim.Add(d switch
            {
                string param => new TensorShapeProto.Types.Dimension { DimParam = param },
                long value => new TensorShapeProto.Types.Dimension { DimValue = value },
                int value => new TensorShapeProto.Types.Dimension { DimValue = value },
                _ => throw new ArgumentException($"A dimension is a string (named axis) or an integer, got {d.GetType().Name}.", nameof(dims)),
            });
        }

        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }
}
