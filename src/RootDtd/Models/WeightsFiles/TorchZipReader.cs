using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using System.Text;
using static TorchSharp.torch;

namespace RootDtd.Models.WeightsFiles;

/// <summary>
/// Reads PyTorch's <c>torch.save</c> zip format without executing anything from the file: <c>data.pkl</c> is run by a
/// small pickle machine that knows only the opcodes of pickle protocols 2–5 that hold data, and constructs only
/// dictionaries (<c>collections.OrderedDict</c>), tensors (<c>torch._utils._rebuild_tensor(_v2)</c>,
/// <c>_rebuild_parameter</c>) and storage types; any other class is refused by name. Every length in the pickle is
/// checked against the bytes that follow it, and tensors are only described (key, dtype, shape, storage) until the
/// caller asks to read them, so declared sizes can be compared with the model and the archive before any allocation.
/// </summary>
internal static class TorchZipReader
{
    /// <summary>Largest accepted <c>data.pkl</c> (a ResNet-152 state dict's pickle has about 100 KB).</summary>
    public const long MaxPickleBytes = 64L * 1024 * 1024;

    /// <summary>The records of the top-level dictionary (or of the first nested state dict); <paramref name="archiveLifetime"/> keeps the archive open while they are read.</summary>
    public static List<TensorRecord> ReadIndex(string path, out IDisposable archiveLifetime)
    {
        var stream = File.OpenRead(path);
        ZipArchive archive;
        try
        {
            archive = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: false);
        }
        catch (InvalidDataException e)
        {
            stream.Dispose();
            throw Bad(path, $"it starts like a zip archive but is not a readable one ({e.Message})");
        }
        archiveLifetime = archive;
        try
        {
            var pickle = archive.Entries.FirstOrDefault(e => e.FullName.EndsWith("data.pkl", StringComparison.Ordinal) && e.FullName.Count(c => c == '/') <= 1)
                         ?? throw Bad(path, "the archive has no data.pkl (not a torch.save file)");
            var prefix = pickle.FullName[..^"data.pkl".Length];
            var byteOrder = archive.GetEntry(prefix + "byteorder");
            if (byteOrder is not null && ReadSmallText(byteOrder, path) is { } order && order.Trim() != "little")
                throw Bad(path, $"it was saved on a {order.Trim()}-endian machine; only little-endian files are supported");
            var bytes = ReadBounded(pickle, MaxPickleBytes, path);
            var machine = new PickleMachine(bytes, path, key => archive.GetEntry(prefix + "data/" + key));
            var root = machine.Run();
            return Records(root, path);
        }
        catch
        {
            archive.Dispose();
            throw;
        }
    }

    private static List<TensorRecord> Records(object? root, string path)
    {
        if (root is not PickleDict dict) throw Bad(path, $"its top-level object is {Describe(root)}, not a dictionary of tensors; save model.state_dict()");
        var tensors = dict.Items.Where(kv => kv.Value is TensorRecord).ToList();
        if (tensors.Count == 0)
        {
            foreach (var name in new[] { "state_dict", "model_state_dict", "model" })
            {
                var inner = dict.Items.FirstOrDefault(kv => kv.Key as string == name).Value as PickleDict;
                if (inner is null) continue;
                var nested = inner.Items.Where(kv => kv.Value is TensorRecord).ToList();
                if (nested.Count > 0) return Named(nested, path);
            }
            var dicts = dict.Items.Where(kv => kv.Value is PickleDict).Select(kv => kv.Key?.ToString()).ToList();
            throw Bad(path, $"it contains no tensors at its top level{(dicts.Count > 0 ? $" (it holds the dictionaries {string.Join(", ", dicts)})" : string.Empty)}; save model.state_dict() itself");
        }
        return Named(tensors, path);
    }

    private static List<TensorRecord> Named(List<KeyValuePair<object?, object?>> items, string path)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var result = new List<TensorRecord>();
        foreach (var (key, value) in items)
        {
            var name = key as string ?? throw Bad(path, $"a tensor has the key {Describe(key)}, not a string");
            if (!seen.Add(name)) throw Bad(path, $"the key '{name}' appears twice");
            var record = (TensorRecord)value!;
            result.Add(new TensorRecord(name, record.DType, record.Shape, record.StorageBytes, record.StorageName, record.Read));
        }
        return result;
    }

    private static string? ReadSmallText(ZipArchiveEntry entry, string path) => Encoding.ASCII.GetString(ReadBounded(entry, 64, path));

    /// <summary>Reads a whole entry, refusing (before and while reading) more than <paramref name="limit"/> bytes.</summary>
    private static byte[] ReadBounded(ZipArchiveEntry entry, long limit, string path)
    {
        if (entry.Length > limit) throw Bad(path, $"'{entry.FullName}' declares {entry.Length} bytes, more than the limit of {limit}");
        using var input = entry.Open();
        var buffer = new MemoryStream((int)entry.Length);
        var chunk = new byte[81920];
        int read;
        while ((read = input.Read(chunk, 0, chunk.Length)) > 0)
        {
            if (buffer.Length + read > limit) throw Bad(path, $"'{entry.FullName}' inflates to more than {limit} bytes");
            buffer.Write(chunk, 0, read);
        }
        return buffer.ToArray();
    }

    internal static string Describe(object? value) => value switch
    {
        null => "None",
        string s => $"the string '{(s.Length > 40 ? s[..40] + "…" : s)}'",
        PickleDict => "a dictionary",
        TensorRecord => "a tensor",
        object[] => "a tuple",
        List<object?> => "a list",
        _ => $"a {value.GetType().Name}",
    };

    internal static ModelWeightsException Bad(string path, string reason) =>
        new(path, string.Create(CultureInfo.InvariantCulture, $"Cannot read the PyTorch weights file '{path}': {reason}."));

    /// <summary>A pickled dict in insertion order (duplicates kept, so they can be reported).</summary>
    internal sealed class PickleDict
    {
        public List<KeyValuePair<object?, object?>> Items { get; } = new();
    }

    private sealed record GlobalRef(string Module, string Name)
    {
        public override string ToString() => Module + "." + Name;
    }

    private sealed record StorageType(ScalarType DType, string Name);

    private sealed class StorageRef
    {
        public required string Key { get; init; }
        public required ScalarType DType { get; init; }
        public required long ElementCount { get; init; }
        public required ZipArchiveEntry Entry { get; init; }
    }

    private sealed class Mark
    {
        public static readonly Mark Instance = new();
    }

    /// <summary>The restricted pickle virtual machine.</summary>
    private sealed class PickleMachine
    {
        private readonly byte[] _data;
        private readonly string _path;
        private readonly Func<string, ZipArchiveEntry?> _entry;
        private readonly List<object?> _stack = new();
        private readonly Dictionary<long, object?> _memo = new();
        private readonly Dictionary<string, StorageRef> _storages = new(StringComparer.Ordinal);
        private int _pos;

        public PickleMachine(byte[] data, string path, Func<string, ZipArchiveEntry?> entry)
        {
            _data = data;
            _path = path;
            _entry = entry;
        }

        public object? Run()
        {
            while (true)
            {
                if (_pos >= _data.Length) throw Fail("data.pkl ends without a STOP opcode (truncated)");
                int at = _pos;
                byte op = _data[_pos++];
                switch (op)
                {
                    case 0x80: Take(1); break; // PROTO
                    case 0x95: Take(8); break; // FRAME
                    case (byte)'.': // STOP
                        return Pop();
                    case (byte)'(': Push(Mark.Instance); break;
                    case (byte)'}': Push(new PickleDict()); break;
                    case (byte)']': Push(new List<object?>()); break;
                    case (byte)')': Push(Array.Empty<object?>()); break;
                    case (byte)'N': Push(null); break;
                    case 0x88: Push(true); break;
                    case 0x89: Push(false); break;
                    case (byte)'t': Push(PopToMark().ToArray()); break;
                    case 0x85: Push(new[] { Pop() }); break;
                    case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; }
                    case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; }
                    case (byte)'l': Push(PopToMark()); break;
                    case (byte)'d': { var items = PopToMark(); var d = new PickleDict(); AddPairs(d, items, at); Push(d); break; }
                    case (byte)'a': { var v = Pop(); AsList(Peek(), at).Add(v); break; }
                    case (byte)'e': { var items = PopToMark(); AsList(Peek(), at).AddRange(items); break; }
                    case (byte)'s': { var v = Pop(); var k = Pop(); AsDict(Peek(), at).Items.Add(new(k, v)); break; }
                    case (byte)'u': { var items = PopToMark(); AddPairs(AsDict(Peek(), at), items, at); break; }
                    case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break;
                    case (byte)'K': Push((long)Take(1)[0]); break;
                    case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break;
                    case 0x8a: Push(Long(Take(Take(1)[0]), at)); break;
                    case 0x8b: Push(Long(Take(Length(4, at, "LONG4")), at)); break;
                    case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8))); break;
                    case (byte)'X': Push(Utf8(Take(Length(4, at, "BINUNICODE")))); break;
                    case 0x8c: Push(Utf8(Take(Take(1)[0]))); break;
                    case 0x8d: Push(Utf8(Take(Length(8, at, "BINUNICODE8")))); break;
                    case (byte)'U': Push(Encoding.Latin1.GetString(Take(Take(1)[0]))); break;
                    case (byte)'T': Push(Encoding.Latin1.GetString(Take(Length(4, at, "BINSTRING")))); break;
                    case (byte)'C': Push(Take(Take(1)[0]).ToArray()); break;
                    case (byte)'B': Push(Take(Length(4, at, "BINBYTES")).ToArray()); break;
                    case 0x8e: Push(Take(Length(8, at, "BINBYTES8")).ToArray()); break;
                    case (byte)'q': _memo[Take(1)[0]] = Peek(); break;
                    case (byte)'r': _memo[BinaryPrimitives.ReadUInt32LittleEndian(Take(4))] = Peek(); break;
                    case 0x94: _memo[_memo.Count] = Peek(); break;
                    case (byte)'h': Push(Memo(Take(1)[0], at)); break;
                    case (byte)'j': Push(Memo(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)), at)); break;
                    case (byte)'0': Pop(); break;
                    case (byte)'1': PopToMark(); break;
                    case (byte)'2': Push(Peek()); break;
                    case (byte)'c': { var module = Line(at); var name = Line(at); Push(Global(module, name, at)); break; }
                    case 0x93: { var name = Pop() as string; var module = Pop() as string; Push(Global(module ?? "?", name ?? "?", at)); break; }
                    case (byte)'Q': Push(Persistent(Pop(), at)); break;
                    case (byte)'R': { var args = Pop() as object?[] ?? throw Fail($"REDUCE at byte {at} without an argument tuple"); Push(Reduce(Pop(), args, at)); break; }
                    case (byte)'b': Pop(); break; // BUILD: the state of an OrderedDict (its _metadata) or a tensor's attributes; not needed
                    default:
                        throw Fail($"data.pkl uses the pickle opcode 0x{op:X2} at byte {at}, which a state dict does not need; it was not run");
                }
            }
        }

        private ReadOnlySpan<byte> Take(int count)
        {
            if (count < 0 || count > _data.Length - _pos)
                throw Fail($"data.pkl needs {count} bytes at byte {_pos} but only {_data.Length - _pos} remain (corrupt or truncated)");
            var span = _data.AsSpan(_pos, count);
            _pos += count;
            return span;
        }

        /// <summary>Reads a length prefix and checks it against the bytes that follow, before anything is allocated.</summary>
        private int Length(int size, int at, string opcode)
        {
            var raw = Take(size);
            ulong length = size == 4 ? BinaryPrimitives.ReadUInt32LittleEndian(raw) : BinaryPrimitives.ReadUInt64LittleEndian(raw);
            if (length > (ulong)(_data.Length - _pos))
                throw Fail($"data.pkl declares a {length}-byte {opcode} at byte {at}, but only {_data.Length - _pos} bytes follow (corrupt or hostile)");
            return (int)length;
        }

        private long Long(ReadOnlySpan<byte> bytes, int at)
        {
            if (bytes.Length > 8) throw Fail($"data.pkl has a {bytes.Length}-byte integer at byte {at}; at most 8 bytes are supported");
            long value = 0;
            for (int i = bytes.Length - 1; i >= 0; i--) value = (value << 8) | bytes[i];
            if (bytes.Length is > 0 and < 8 && (bytes[^1] & 0x80) != 0) value -= 1L << (8 * bytes.Length); // sign
            return value;
        }

        private string Utf8(ReadOnlySpan<byte> bytes) => Encoding.UTF8.GetString(bytes);

        private string Line(int at)
        {
            int end = Array.IndexOf(_data, (byte)'\n', _pos);
            if (end < 0 || end - _pos > 256) throw Fail($"data.pkl has an unterminated GLOBAL at byte {at}");
            var text = Encoding.ASCII.GetString(_data, _pos, end - _pos);
            _pos = end + 1;
            return text;
        }

        private object? Memo(long index, int at) =>
            _memo.TryGetValue(index, out var v) ? v : throw Fail($"data.pkl refers to memo entry {index} at byte {at}, which was never stored");

        private void Push(object? value) => _stack.Add(value);

        private object? Peek() => _stack.Count > 0 ? _stack[^1] : throw Fail($"data.pkl's stack is empty at byte {_pos - 1}");

        private object? Pop()
        {
            var v = Peek();
            _stack.RemoveAt(_stack.Count - 1);
            if (v is Mark) throw Fail($"data.pkl pops a mark at byte {_pos - 1}");
            return v;
        }

        private List<object?> PopToMark()
        {
            int mark = _stack.FindLastIndex(v => v is Mark);
            if (mark < 0) throw Fail($"data.pkl has no mark for the opcode at byte {_pos - 1}");
            var items = _stack.GetRange(mark + 1, _stack.Count - mark - 1);
            _stack.RemoveRange(mark, _stack.Count - mark);
            return items;
        }

        private List<object?> AsList(object? value, int at) => value as List<object?> ?? throw Fail($"data.pkl appends to {Describe(value)} at byte {at}");

        private PickleDict AsDict(object? value, int at) => value as PickleDict ?? throw Fail($"data.pkl sets an item of {Describe(value)} at byte {at}");

        private void AddPairs(PickleDict dict, List<object?> items, int at)
        {
            if (items.Count % 2 != 0) throw Fail($"data.pkl has an odd number of dictionary items at byte {at}");
            for (int i = 0; i < items.Count; i += 2) dict.Items.Add(new(items[i], items[i + 1]));
        }

        private object Global(string module, string name, int at)
        {
            if (module == "torch" && name.EndsWith("Storage", StringComparison.Ordinal) && StorageDType(name) is { } dtype)
                return new StorageType(dtype, name);
            if ((module, name) is ("collections", "OrderedDict") or ("torch._utils", "_rebuild_tensor_v2")
                or ("torch._utils", "_rebuild_tensor") or ("torch._utils", "_rebuild_parameter"))
                return new GlobalRef(module, name);
            throw Fail($"data.pkl asks for the Python object '{module}.{name}' at byte {at}. Only state dicts (tensors in dictionaries) " +
                       "are read, and nothing from the file is executed; if it is a whole pickled model, save model.state_dict() instead");
        }

        private static ScalarType? StorageDType(string name) => name switch
        {
            "DoubleStorage" => ScalarType.Float64,
            "FloatStorage" => ScalarType.Float32,
            "HalfStorage" => ScalarType.Float16,
            "BFloat16Storage" => ScalarType.BFloat16,
            "LongStorage" => ScalarType.Int64,
            "IntStorage" => ScalarType.Int32,
            "ShortStorage" => ScalarType.Int16,
            "CharStorage" => ScalarType.Int8,
            "ByteStorage" => ScalarType.Byte,
            "BoolStorage" => ScalarType.Bool,
            _ => null,
        };

        private StorageRef Persistent(object? pid, int at)
        {
            if (pid is not object?[] { Length: 5 } t || t[0] as string != "storage" || t[1] is not StorageType type || t[2] is not string key || t[4] is not long count)
                throw Fail($"data.pkl has a persistent id at byte {at} that is not a torch storage ('storage', type, key, location, size)");
            if (_storages.TryGetValue(key, out var known)) return known;
            if (count < 0) throw Fail($"storage '{key}' declares {count} elements");
            var entry = _entry(key) ?? throw Fail($"storage '{key}' is not in the archive");
            long bytes;
            try { bytes = checked(count * TensorRecord.ElementSize(type.DType)); }
            catch (OverflowException) { throw Fail($"storage '{key}' declares {count} elements, too many"); }
            if (entry.Length < bytes)
                throw Fail($"storage '{key}' declares {count} elements of {type.Name} ({bytes} bytes) but its archive entry has {entry.Length} bytes");
            var storage = new StorageRef { Key = key, DType = type.DType, ElementCount = count, Entry = entry };
            _storages[key] = storage;
            return storage;
        }

        private object? Reduce(object? callable, object?[] args, int at)
        {
            if (callable is not GlobalRef g) throw Fail($"data.pkl calls {Describe(callable)} at byte {at}");
            switch (g.Name)
            {
                case "OrderedDict":
                    return new PickleDict();
                case "_rebuild_parameter":
                    return args.Length > 0 && args[0] is TensorRecord p ? p : throw Fail($"_rebuild_parameter at byte {at} has no tensor");
                default: // _rebuild_tensor(_v2)(storage, storage_offset, size, stride, …)
                    if (args.Length < 4 || args[0] is not StorageRef storage || args[1] is not long offset
                        || args[2] is not object?[] size || args[3] is not object?[] stride || size.Length != stride.Length)
                        throw Fail($"{g} at byte {at} has unexpected arguments");
                    var shape = Longs(size, at);
                    var strides = Longs(stride, at);
                    return Tensor(storage, offset, shape, strides, at);
            }
        }

        private long[] Longs(object?[] values, int at) =>
            values.Select(v => v is long l && l >= 0 ? l : throw Fail($"a tensor at byte {at} has an invalid size or stride {Describe(v)}")).ToArray();

        private TensorRecord Tensor(StorageRef storage, long offset, long[] shape, long[] strides, int at)
        {
            long count;
            long last = offset;
            try
            {
                count = shape.Aggregate(1L, (a, b) => checked(a * b));
                for (int i = 0; i < shape.Length; i++)
                    if (shape[i] > 0) last = checked(last + (shape[i] - 1) * strides[i]);
            }
            catch (OverflowException)
            {
                throw Fail($"a tensor of shape {ModelWeights.FormatShape(shape)} at byte {at} is too large");
            }
            if (offset < 0 || (count > 0 && last >= storage.ElementCount))
                throw Fail($"a tensor of shape {ModelWeights.FormatShape(shape)} at byte {at} reaches element {last} of storage '{storage.Key}', which has {storage.ElementCount}");
            long storageBytes = storage.ElementCount * TensorRecord.ElementSize(storage.DType);
            var path = _path;
            return new TensorRecord("?", storage.DType, shape, storageBytes, storage.Entry.FullName, () =>
            {
                if (storageBytes > int.MaxValue)
                    throw Bad(path, $"storage '{storage.Entry.FullName}' has {storageBytes} bytes; tensors above 2 GiB are not supported");
                var bytes = new byte[storageBytes];
                using (var input = storage.Entry.Open())
                {
                    int read = input.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
                    if (read < bytes.Length) throw Bad(path, $"storage '{storage.Entry.FullName}' ends after {read} of its {bytes.Length} bytes");
                }
                using var flat = TensorRecord.FromBytes(bytes, storage.DType);
                using var view = flat.as_strided(shape, strides, offset);
                return view.contiguous().clone();
            });
        }

        private ModelWeightsException Fail(string reason) => Bad(_path, reason);
    }
}
