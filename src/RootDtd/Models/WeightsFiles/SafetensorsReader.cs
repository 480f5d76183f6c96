using System.Buffers.Binary;
using System.Globalization;
using System.Text.Json;
using static TorchSharp.torch;

namespace RootDtd.Models.WeightsFiles;

/// <summary>
/// Reads the index of a safetensors file and checks it completely before any tensor data is read: the header fits in
/// the file, no key appears twice, every dtype is known, every shape is non-negative and matches its byte range, and
/// the byte ranges lie inside the data section without overlapping.
/// </summary>
internal static class SafetensorsReader
{
    /// <summary>The safetensors format caps its JSON header at 100 MB.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    public static List<TensorRecord> ReadIndex(string path)
    {
        using var stream = File.OpenRead(path);
        long fileLength = stream.Length;
        Span<byte> lengthBytes = stackalloc byte[8];
        if (stream.ReadAtLeast(lengthBytes, 8, throwOnEndOfStream: false) < 8)
            throw Bad(path, $"the file has {fileLength} bytes, fewer than the 8-byte header length");
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > (ulong)(fileLength - 8))
            throw Bad(path, $"the header length field says {headerLength} bytes of JSON, but only {fileLength - 8} bytes follow it (the file is truncated or not safetensors)");
        if (headerLength > MaxHeaderBytes)
            throw Bad(path, $"the JSON header has {headerLength} bytes, more than the format's limit of {MaxHeaderBytes}");
        var header = new byte[headerLength];
        stream.ReadExactly(header);
        long dataStart = 8 + (long)headerLength;
        long dataLength = fileLength - dataStart;

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw Bad(path, $"the JSON header is invalid ({e.Message})");
        }
        using var _ = document;
        if (document.RootElement.ValueKind != JsonValueKind.Object) throw Bad(path, "the JSON header is not an object");

        var records = new List<(TensorRecord Record, long Begin, long End)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var property in document.RootElement.EnumerateObject())
        {
            if (!seen.Add(property.Name)) throw Bad(path, $"the key '{property.Name}' appears twice in the header");
            if (property.Name == "__metadata__") continue;
            var key = property.Name;
            var entry = property.Value;
            if (entry.ValueKind != JsonValueKind.Object
                || !entry.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String
                || !entry.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array
                || !entry.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array || offsetsElement.GetArrayLength() != 2)
                throw Bad(path, $"the entry of '{key}' needs \"dtype\", \"shape\" and two \"data_offsets\"");
            var dtype = ParseDType(dtypeElement.GetString()!, key, path);
            var shape = new long[shapeElement.GetArrayLength()];
            int i = 0;
            foreach (var dim in shapeElement.EnumerateArray())
            {
                if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out shape[i]) || shape[i] < 0)
                    throw Bad(path, $"the shape of '{key}' has an invalid dimension {dim}");
                i++;
            }
            long begin = Offset(offsetsElement[0], key, path), end = Offset(offsetsElement[1], key, path);
            if (begin > end) throw Bad(path, $"the byte range of '{key}' starts at {begin} after its end {end}");
            if (end > dataLength)
                throw Bad(path, $"'{key}' needs data bytes {begin}..{end}, but the data section has only {dataLength} bytes (the file is truncated)");
            long expected;
            try
            {
                expected = checked(shape.Aggregate(1L, (a, b) => checked(a * b)) * TensorRecord.ElementSize(dtype));
            }
            catch (OverflowException)
            {
                throw Bad(path, $"the shape {ModelWeights.FormatShape(shape)} of '{key}' is too large");
            }
            if (end - begin != expected)
                throw Bad(path, $"'{key}' has shape {ModelWeights.FormatShape(shape)} of {dtypeElement.GetString()} ({expected} bytes) but a byte range of {end - begin} bytes");
            long absolute = dataStart + begin;
            int length = checked((int)Math.Min(int.MaxValue, end - begin));
            if (end - begin > int.MaxValue) throw Bad(path, $"'{key}' has {end - begin} bytes; tensors above 2 GiB are not supported");
            var record = new TensorRecord(key, dtype, shape, end - begin, $"bytes {begin}..{end}", () =>
            {
                var bytes = new byte[length];
                using var file = File.OpenRead(path);
                file.Position = absolute;
                file.ReadExactly(bytes);
                using var flat = TensorRecord.FromBytes(bytes, dtype);
                return flat.reshape(shape).clone();
            });
            records.Add((record, begin, end));
        }
        var ordered = records.Where(r => r.End > r.Begin).OrderBy(r => r.Begin).ToList();
        for (int k = 1; k < ordered.Count; k++)
            if (ordered[k].Begin < ordered[k - 1].End)
                throw Bad(path, $"the byte ranges of '{ordered[k - 1].Record.Key}' ({ordered[k - 1].Begin}..{ordered[k - 1].End}) and '{ordered[k].Record.Key}' ({ordered[k].Begin}..{ordered[k].End}) overlap");
        return records.Select(r => r.Record).ToList();
    }

    private static long Offset(JsonElement element, string key, string path) =>
        element.ValueKind == JsonValueKind.Number && element.TryGetInt64(out var v) && v >= 0
            ? v
            : throw Bad(path, $"the data_offsets of '{key}' are not non-negative integers");

    private static ScalarType ParseDType(string name, string key, string path) => name switch
    {
        "F64" => ScalarType.Float64,
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "I16" => ScalarType.Int16,
        "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => throw Bad(path, $"'{key}' has the unsupported dtype \"{name}\" (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)"),
    };

    private static ModelWeightsException Bad(string path, string reason) =>
        new(path, string.Create(CultureInfo.InvariantCulture, $"Cannot read the safetensors weights file '{path}': {reason}."));
}
