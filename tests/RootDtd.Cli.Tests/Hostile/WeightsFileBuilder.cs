using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using System.Text.Json;

namespace RootDtd.Cli.Tests.Hostile;

/// <summary>
/// Writes weights files byte by byte, the way <c>torch.save</c> and <c>safetensors</c> lay them out, so that tests can
/// make valid ones and hostile ones (huge declared storages, lying lengths, duplicate keys, overlapping ranges).
/// </summary>
public static class WeightsFileBuilder
{
    /// <summary>One tensor of a torch.save file: its key, its view (shape, stride, offset) and its storage.</summary>
    public sealed record PtTensor(string Key, long[] Shape, long[] Stride, long Offset, string StorageKey, long StorageElements, float Fill);

    /// <summary>
    /// A torch.save zip (archive/data.pkl, archive/data/&lt;key&gt;, archive/byteorder) with float32 storages filled
    /// with the tensor's <see cref="PtTensor.Fill"/> value; storages are deflated (so a huge one is a small file).
    /// <paramref name="pickleOverride"/> replaces data.pkl.
    /// </summary>
    public static byte[] TorchZip(IReadOnlyList<PtTensor> tensors, byte[]? pickleOverride = null)
    {
        using var file = new MemoryStream();
        using (var zip = new ZipArchive(file, ZipArchiveMode.Create, leaveOpen: true))
        {
            Write(zip, "archive/data.pkl", pickleOverride ?? StateDictPickle(tensors), CompressionLevel.NoCompression);
            Write(zip, "archive/byteorder", "little"u8.ToArray(), CompressionLevel.NoCompression);
            foreach (var storage in tensors.GroupBy(t => t.StorageKey).Select(g => g.First()))
            {
                var entry = zip.CreateEntry("archive/data/" + storage.StorageKey, CompressionLevel.SmallestSize);
                using var s = entry.Open();
                var block = new byte[1 << 20];
                for (int i = 0; i < block.Length; i += 4) BinaryPrimitives.WriteSingleLittleEndian(block.AsSpan(i), storage.Fill);
                for (long left = storage.StorageElements * 4; left > 0; left -= block.Length) s.Write(block, 0, (int)Math.Min(block.Length, left));
            }
        }
        return file.ToArray();
    }

    private static void Write(ZipArchive zip, string name, byte[] content, CompressionLevel level)
    {
        var entry = zip.CreateEntry(name, level);
        using var s = entry.Open();
        s.Write(content);
    }

    /// <summary>The pickle torch.save writes for an OrderedDict of tensors (protocol 2).</summary>
    public static byte[] StateDictPickle(IReadOnlyList<PtTensor> tensors)
    {
        var p = new PickleWriter();
        p.Proto(2).Global("collections", "OrderedDict").Op(')').Op('R').Op('(');
        foreach (var t in tensors)
        {
            p.Unicode(t.Key).Global("torch._utils", "_rebuild_tensor_v2").Op('(');
            p.Op('(').Unicode("storage").Global("torch", "FloatStorage").Unicode(t.StorageKey).Unicode("cpu").Int(t.StorageElements).Op('t').Op('Q');
            p.Int(t.Offset).Tuple(t.Shape).Tuple(t.Stride).Op(0x89).Global("collections", "OrderedDict").Op(')').Op('R').Op('t').Op('R');
        }
        p.Op('u').Op('.');
        return p.ToArray();
    }

    /// <summary>Emits pickle opcodes.</summary>
    public sealed class PickleWriter
    {
        private readonly MemoryStream _s = new();

        public PickleWriter Op(char op) => Op((byte)op);

        public PickleWriter Op(byte op)
        {
            _s.WriteByte(op);
            return this;
        }

        public PickleWriter Raw(ReadOnlySpan<byte> bytes)
        {
            _s.Write(bytes);
            return this;
        }

        public PickleWriter Proto(byte version) => Op(0x80).Op(version);

        public PickleWriter Global(string module, string name) => Op('c').Raw(Encoding.ASCII.GetBytes(module + "\n" + name + "\n"));

        public PickleWriter Unicode(string text)
        {
            var bytes = Encoding.UTF8.GetBytes(text);
            Span<byte> length = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(length, bytes.Length);
            return Op('X').Raw(length).Raw(bytes);
        }

        public PickleWriter Int(long value)
        {
            if (value is >= int.MinValue and <= int.MaxValue)
            {
                Span<byte> v = stackalloc byte[4];
                BinaryPrimitives.WriteInt32LittleEndian(v, (int)value);
                return Op('J').Raw(v);
            }
            Span<byte> l = stackalloc byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(l, value);
            return Op(0x8a).Op(8).Raw(l);
        }

        public PickleWriter Tuple(long[] values)
        {
            Op('(');
            foreach (var v in values) Int(v);
            return Op('t');
        }

        public byte[] ToArray() => _s.ToArray();
    }

    /// <summary>One safetensors entry, written as given (even when inconsistent).</summary>
    public sealed record StEntry(string Key, string DType, long[] Shape, long Begin, long End);

    /// <summary>A safetensors file whose header is built from the entries verbatim (duplicates kept) and a data section of <paramref name="dataBytes"/> bytes.</summary>
    public static byte[] Safetensors(IReadOnlyList<StEntry> entries, long dataBytes)
    {
        var json = new StringBuilder("{");
        json.Append(string.Join(",", entries.Select(e =>
            $"{JsonSerializer.Serialize(e.Key)}:{{\"dtype\":\"{e.DType}\",\"shape\":[{string.Join(",", e.Shape)}],\"data_offsets\":[{e.Begin},{e.End}]}}")));
        json.Append('}');
        var header = Encoding.UTF8.GetBytes(json.ToString());
        var bytes = new byte[8 + header.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        for (long i = 0; i < dataBytes; i += 4)
            if (i + 4 <= dataBytes) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan((int)(8 + header.Length + i)), 1 + i / 4);
        return bytes;
    }
}
