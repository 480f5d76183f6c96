using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace RootDtd.Cli.Tests.Hostile;

/// <summary>
/// Builds small hostile files byte by byte (nothing is committed): images whose header or metadata would make a
/// naive loader allocate gigabytes. Each factory returns the file content; the tests write it to a temporary folder.
/// </summary>
public static class HostileCorpus
{
    private static readonly uint[] CrcTable = Enumerable.Range(0, 256).Select(n =>
    {
        uint c = (uint)n;
        for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    private static uint Crc32(ReadOnlySpan<byte> bytes)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (byte b in bytes) crc = CrcTable[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return crc ^ 0xFFFFFFFFu;
    }

    private static void Chunk(Stream output, string type, ReadOnlySpan<byte> body)
    {
        Span<byte> word = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(word, (uint)body.Length);
        output.Write(word);
        var typed = new byte[4 + body.Length];
        Encoding.ASCII.GetBytes(type).CopyTo(typed, 0);
        body.CopyTo(typed.AsSpan(4));
        output.Write(typed);
        BinaryPrimitives.WriteUInt32BigEndian(word, Crc32(typed));
        output.Write(word);
    }

    /// <summary>zlib-compresses <paramref name="length"/> bytes of <paramref name="fill"/> without holding them in memory.</summary>
    private static byte[] ZlibOfRepeated(long length, byte fill)
    {
        using var compressed = new MemoryStream();
        using (var z = new ZLibStream(compressed, CompressionLevel.SmallestSize, leaveOpen: true))
        {
            var block = new byte[1 << 20];
            Array.Fill(block, fill);
            for (long left = length; left > 0; left -= block.Length) z.Write(block, 0, (int)Math.Min(block.Length, left));
        }
        return compressed.ToArray();
    }

    /// <summary>
    /// An 8-bit RGB PNG of the given size whose every scanline is filter 0 and black (so a huge image is a tiny file),
    /// with optional extra chunks before the image data.
    /// </summary>
    public static byte[] Png(int width, int height, params (string Type, byte[] Body)[] extraChunks)
    {
        using var file = new MemoryStream();
        file.Write(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A });
        var ihdr = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(ihdr, (uint)width);
        BinaryPrimitives.WriteUInt32BigEndian(ihdr.AsSpan(4), (uint)height);
        ihdr[8] = 8; // bit depth
        ihdr[9] = 2; // RGB
        Chunk(file, "IHDR", ihdr);
        foreach (var (type, body) in extraChunks) Chunk(file, type, body);
        Chunk(file, "IDAT", ZlibOfRepeated((long)height * (1 + 3L * width), 0));
        Chunk(file, "IEND", ReadOnlySpan<byte>.Empty);
        return file.ToArray();
    }

    /// <summary>A zTXt chunk whose text inflates to <paramref name="textBytes"/> bytes.</summary>
    public static (string, byte[]) CompressedText(long textBytes)
    {
        var body = new MemoryStream();
        body.Write("Comment"u8);
        body.WriteByte(0); // keyword terminator
        body.WriteByte(0); // compression method: zlib
        body.Write(ZlibOfRepeated(textBytes, (byte)'a'));
        return ("zTXt", body.ToArray());
    }

    /// <summary>A compressed iTXt chunk whose text inflates to <paramref name="textBytes"/> bytes.</summary>
    public static (string, byte[]) CompressedInternationalText(long textBytes)
    {
        var body = new MemoryStream();
        body.Write("Description"u8);
        body.WriteByte(0); // keyword terminator
        body.WriteByte(1); // compressed
        body.WriteByte(0); // zlib
        body.WriteByte(0); // empty language tag
        body.WriteByte(0); // empty translated keyword
        body.Write(ZlibOfRepeated(textBytes, (byte)'b'));
        return ("iTXt", body.ToArray());
    }

    /// <summary>A baseline JPEG header declaring <paramref name="width"/>×<paramref name="height"/> pixels, then EOI.</summary>
    public static byte[] JpegHeaderOnly(int width, int height)
    {
        var bytes = new List<byte> { 0xFF, 0xD8 };
        bytes.AddRange(new byte[] { 0xFF, 0xC0, 0x00, 0x11, 0x08, (byte)(height >> 8), (byte)height, (byte)(width >> 8), (byte)width, 0x03,
            0x01, 0x11, 0x00, 0x02, 0x11, 0x00, 0x03, 0x11, 0x00 });
        bytes.AddRange(new byte[] { 0xFF, 0xD9 });
        return bytes.ToArray();
    }
}
