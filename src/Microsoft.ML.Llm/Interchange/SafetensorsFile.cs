// safetensors files: TorchSharp.PyBridge reads and writes the tensors; this file checks every header first, so a
// truncated, corrupted or hostile file is refused with a message naming it instead of reaching the reader (which
// trusts offsets, shapes and dtypes as written).
//
// Layout (https://github.com/huggingface/safetensors): uint64 little-endian header length N; N bytes of UTF-8 JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {string: string}};
// then the data, each tensor's bytes at [8 + N + begin, 8 + N + end), little-endian, row-major.

using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Interchange;

/// <summary>One tensor's entry in a safetensors header.</summary>
internal sealed record SafetensorsEntry(string Name, string DType, long[] Shape, long Begin, long End);

/// <summary>Validated reading and writing of safetensors files.</summary>
internal static class SafetensorsFile
{
    // Header sizes above this are refused before allocating (the format's own reader caps it at 100 MB too).
    private const long MaxHeaderBytes = 100_000_000;

    /// <summary>The dtypes accepted for weights (converted to fp32 on load), with their sizes in bytes.</summary>
    internal static readonly IReadOnlyDictionary<string, int> AcceptedDTypes = new Dictionary<string, int>(StringComparer.Ordinal)
    {
        ["F32"] = 4,
        ["F16"] = 2,
        ["BF16"] = 2,
    };

    /// <summary>
    /// Reads and checks the header of <paramref name="path"/>: a length that fits the file, JSON of the documented shape,
    /// an accepted dtype per tensor, a byte range per tensor that matches its shape and dtype, lies inside the data and
    /// overlaps no other, and a data section exactly as long as the ranges cover.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is malformed; the message names it and what is wrong.</exception>
    /// <exception cref="NotSupportedException">A tensor has a dtype other than F32, F16 or BF16 (named).</exception>
    internal static IReadOnlyList<SafetensorsEntry> ReadHeader(string path)
    {
        using var stream = File.OpenRead(path);
        long fileLength = stream.Length;
        if (fileLength < 8)
            throw Malformed(path, $"it is {fileLength} bytes long, shorter than the 8-byte header length");
        Span<byte> lengthBytes = stackalloc byte[8];
        stream.ReadExactly(lengthBytes);
        ulong headerLength = BitConverter.ToUInt64(lengthBytes);
        if (headerLength < 2 || headerLength > MaxHeaderBytes || (long)headerLength > fileLength - 8)
            throw Malformed(path, $"its header length is {headerLength} bytes, but the file holds {fileLength - 8} bytes after the length (and headers are limited to {MaxHeaderBytes} bytes)");
        var headerBytes = new byte[headerLength];
        stream.ReadExactly(headerBytes);
        long dataLength = fileLength - 8 - (long)headerLength;

        JsonObject header;
        try
        {
            header = JsonNode.Parse(Encoding.UTF8.GetString(headerBytes).TrimEnd(' ')) as JsonObject
                ?? throw Malformed(path, "its header is not a JSON object");
        }
        catch (JsonException e)
        {
            throw Malformed(path, $"its header is not valid JSON ({e.Message})");
        }

        var entries = new List<SafetensorsEntry>();
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__")
                continue;
            if (node is not JsonObject entry
                || entry["dtype"] is not JsonValue dtypeNode || !dtypeNode.TryGetValue(out string? dtype)
                || entry["shape"] is not JsonArray shapeNode
                || entry["data_offsets"] is not JsonArray { Count: 2 } offsets)
            {
                throw Malformed(path, $"tensor '{name}' has the entry {node?.ToJsonString()}; expected {{\"dtype\": ..., \"shape\": [...], \"data_offsets\": [begin, end]}}");
            }

            long[] shape;
            long begin, end;
            try
            {
                shape = shapeNode.Select(d => d!.GetValue<long>()).ToArray();
                begin = offsets[0]!.GetValue<long>();
                end = offsets[1]!.GetValue<long>();
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
            {
                throw Malformed(path, $"tensor '{name}' has a shape or data_offsets that are not integers ({node.ToJsonString()})");
            }

            if (!AcceptedDTypes.TryGetValue(dtype!, out int size))
            {
                throw new NotSupportedException(
                    $"Tensor '{name}' in '{path}' has dtype {dtype}; accepted dtypes are F32, F16 and BF16 (converted to F32 on load).");
            }

            long elements = 1;
            foreach (long d in shape)
            {
                if (d < 0 || (d > 0 && elements > long.MaxValue / d))
                    throw Malformed(path, $"tensor '{name}' has the shape [{string.Join(", ", shape)}]");
                elements *= d;
            }

            if (begin < 0 || end < begin || end > dataLength)
                throw Malformed(path, $"tensor '{name}' has data_offsets [{begin}, {end}], outside the {dataLength} bytes of data (truncated file?)");
            if (end - begin != elements * size)
                throw Malformed(path, $"tensor '{name}' has data_offsets [{begin}, {end}] ({end - begin} bytes), but its shape [{string.Join(", ", shape)}] of {dtype} needs {elements * size} bytes");
            entries.Add(new SafetensorsEntry(name, dtype!, shape, begin, end));
        }

        // The ranges must tile the data without overlaps or gaps, as the format requires.
        long covered = 0;
        foreach (var entry in entries.OrderBy(e => e.Begin).ThenBy(e => e.End))
        {
            if (entry.Begin != covered)
            {
                throw Malformed(path, entry.Begin < covered
                    ? $"tensor '{entry.Name}' starts at byte {entry.Begin}, inside the previous tensor (which ends at {covered})"
                    : $"the data has a gap of {entry.Begin - covered} bytes before tensor '{entry.Name}'");
            }

            covered = entry.End;
        }

        if (covered != dataLength)
            throw Malformed(path, $"its tensors cover {covered} bytes of data, but the file holds {dataLength} (truncated, or extra bytes)");
        return entries;
    }

    /// <summary>
    /// Reads every tensor of <paramref name="path"/> (after <see cref="ReadHeader"/>), converted to fp32; the tensors are
    /// detached from any dispose scope and owned by the caller.
    /// </summary>
    internal static Dictionary<string, Tensor> Load(string path)
    {
        var entries = ReadHeader(path);
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        using var scope = NewDisposeScope();
        foreach (var (name, tensor) in Safetensors.LoadStateDict(path))
        {
            var fp32 = tensor.to(ScalarType.Float32);
            tensors[name] = fp32.DetachFromDisposeScope();
        }

        if (tensors.Count != entries.Count)
            throw Malformed(path, $"its header lists {entries.Count} tensors, but {tensors.Count} were read (duplicate names?)");
        return tensors;
    }

    /// <summary>
    /// Writes <paramref name="tensors"/> (contiguous CPU tensors) to <paramref name="path"/> with PyBridge, adding
    /// <c>"__metadata__": {"format": "pt"}</c> (which transformers reads to know the tensors are PyTorch's) and padding the
    /// header with spaces to a multiple of 8 bytes, as Python's writer does, so the data is 8-byte aligned.
    /// </summary>
    internal static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors)
    {
        using var buffer = new MemoryStream();
        Safetensors.SaveStateDict(buffer, tensors.ToDictionary(kv => kv.Key, kv => kv.Value), leaveOpen: true);
        byte[] written = buffer.ToArray();
        long headerLength = (long)BitConverter.ToUInt64(written, 0);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(written, 8, (int)headerLength))!.AsObject();
        var withMetadata = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
        foreach (var (name, entry) in header.ToList())
        {
            header.Remove(name);
            withMetadata[name] = entry;
        }

        byte[] json = Encoding.UTF8.GetBytes(withMetadata.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        using var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        file.Write(BitConverter.GetBytes((ulong)padded));
        file.Write(json);
        for (int i = json.Length; i < padded; i++)
            file.WriteByte((byte)' ');
        file.Write(written, 8 + (int)headerLength, written.Length - 8 - (int)headerLength);
    }

    private static InvalidDataException Malformed(string path, string detail) =>
        new($"The safetensors file '{path}' is malformed: {detail}.");
}
