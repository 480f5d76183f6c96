using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace RootDtd.Evaluation.Data;

/// <summary>
/// Minimal PNG codec for segmentation masks, where the stored <em>index</em> (palette PNG) or grey value is the class
/// value. General image decoders convert palette entries to colours, which loses the class index, hence this codec.
/// Reads non-interlaced grey (1/2/4/8/16 bit) and palette (1/2/4/8 bit) PNGs; writes 8-bit palette PNGs with the
/// PASCAL VOC colour map.
/// </summary>
public static class MaskPng
{
    private static readonly byte[] Signature = { 137, 80, 78, 71, 13, 10, 26, 10 };
    private static readonly uint[] CrcTable = BuildCrcTable();

    /// <summary>The PASCAL VOC colour map: entry i = (R, G, B) of class value i (entry 255 = (224, 224, 192)).</summary>
    /// <returns>256 × 3 bytes.</returns>
    public static byte[] VocPalette()
    {
        var p = new byte[256 * 3];
        for (int i = 0; i < 256; i++)
        {
            int r = 0, g = 0, b = 0, c = i;
            for (int j = 0; j < 8; j++)
            {
                r |= ((c >> 0) & 1) << (7 - j);
                g |= ((c >> 1) & 1) << (7 - j);
                b |= ((c >> 2) & 1) << (7 - j);
                c >>= 3;
            }

            p[3 * i] = (byte)r;
            p[3 * i + 1] = (byte)g;
            p[3 * i + 2] = (byte)b;
        }

        return p;
    }

    /// <summary>Encodes a mask as an 8-bit palette PNG with the VOC colour map.</summary>
    /// <param name="values">Class values, row-major, length width·height.</param>
    /// <param name="width">Width (&gt; 0).</param>
    /// <param name="height">Height (&gt; 0).</param>
    /// <returns>The PNG file bytes.</returns>
    public static byte[] Encode(byte[] values, int width, int height)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (width <= 0 || height <= 0) throw new ArgumentOutOfRangeException(nameof(width), $"Size must be positive (got {width}×{height}).");
        if (values.Length != width * height) throw new ArgumentException($"Expected {width * height} values, got {values.Length}.", nameof(values));
        using var ms = new MemoryStream();
        ms.Write(Signature);
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = 8; // bit depth
        ihdr[9] = 3; // palette
        WriteChunk(ms, "IHDR", ihdr);
        WriteChunk(ms, "PLTE", VocPalette());
        using (var raw = new MemoryStream())
        {
            using (var z = new ZLibStream(raw, CompressionLevel.Optimal, leaveOpen: true))
            {
                for (int y = 0; y < height; y++)
                {
                    z.WriteByte(0); // filter: none
                    z.Write(values, y * width, width);
                }
            }

            WriteChunk(ms, "IDAT", raw.ToArray());
        }

        WriteChunk(ms, "IEND", Array.Empty<byte>());
        return ms.ToArray();
    }

    /// <summary>Reads a mask PNG file.</summary>
    /// <param name="path">Path of a grey or palette PNG.</param>
    /// <returns>Width, height and row-major values (palette index or grey level).</returns>
    public static (int Width, int Height, int[] Values) Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Mask file not found: {path}", path);
        try
        {
            return Decode(File.ReadAllBytes(path));
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"Cannot read mask '{path}': {e.Message}", e);
        }
    }

    /// <summary>Decodes mask PNG bytes.</summary>
    /// <param name="png">PNG file bytes (grey or palette, not interlaced).</param>
    /// <returns>Width, height and row-major values (palette index or grey level).</returns>
    public static (int Width, int Height, int[] Values) Decode(byte[] png)
    {
        ArgumentNullException.ThrowIfNull(png);
        if (png.Length < 8 || !png.AsSpan(0, 8).SequenceEqual(Signature)) throw new InvalidDataException("not a PNG file");
        int pos = 8, width = 0, height = 0, depth = 0, colorType = -1;
        using var idat = new MemoryStream();
        while (pos + 8 <= png.Length)
        {
            int len = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(pos));
            string type = Encoding.ASCII.GetString(png, pos + 4, 4);
            if (len < 0 || pos + 12 + len > png.Length) throw new InvalidDataException("truncated PNG chunk");
            var data = png.AsSpan(pos + 8, len);
            if (type == "IHDR")
            {
                width = BinaryPrimitives.ReadInt32BigEndian(data);
                height = BinaryPrimitives.ReadInt32BigEndian(data[4..]);
                depth = data[8];
                colorType = data[9];
                if (data[12] != 0) throw new InvalidDataException("interlaced PNG masks are not supported");
                if (colorType != 0 && colorType != 3)
                    throw new InvalidDataException($"mask PNGs must be greyscale or palette (colour type {colorType} found)");
                if (colorType == 3 && depth > 8 || depth is not (1 or 2 or 4 or 8 or 16))
                    throw new InvalidDataException($"unsupported bit depth {depth}");
            }
            else if (type == "IDAT")
            {
                idat.Write(data);
            }
            else if (type == "IEND")
            {
                break;
            }

            pos += 12 + len;
        }

        if (width <= 0 || height <= 0 || colorType < 0) throw new InvalidDataException("missing IHDR");
        int rowBytes = (width * depth + 7) / 8, bpp = Math.Max(1, depth / 8);
        var raw = new byte[(rowBytes + 1) * height];
        idat.Position = 0;
        using (var z = new ZLibStream(idat, CompressionMode.Decompress))
        {
            int read = 0, n;
            while (read < raw.Length && (n = z.Read(raw, read, raw.Length - read)) > 0) read += n;
            if (read != raw.Length) throw new InvalidDataException("PNG image data is truncated");
        }

        var prev = new byte[rowBytes];
        var cur = new byte[rowBytes];
        var values = new int[width * height];
        for (int y = 0; y < height; y++)
        {
            int filter = raw[y * (rowBytes + 1)];
            Array.Copy(raw, y * (rowBytes + 1) + 1, cur, 0, rowBytes);
            Unfilter(filter, cur, prev, bpp);
            for (int x = 0; x < width; x++)
            {
                values[y * width + x] = depth switch
                {
                    16 => (cur[2 * x] << 8) | cur[2 * x + 1],
                    8 => cur[x],
                    _ => (cur[x * depth / 8] >> (8 - depth - (x * depth % 8))) & ((1 << depth) - 1),
                };
            }

            (prev, cur) = (cur, prev);
        }

        return (width, height, values);
    }

    private static void Unfilter(int filter, byte[] cur, byte[] prev, int bpp)
    {
        for (int i = 0; i < cur.Length; i++)
        {
            int a = i >= bpp ? cur[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
            cur[i] = filter switch
            {
                0 => cur[i],
                1 => (byte)(cur[i] + a),
                2 => (byte)(cur[i] + b),
                3 => (byte)(cur[i] + ((a + b) >> 1)),
                4 => (byte)(cur[i] + Paeth(a, b, c)),
                _ => throw new InvalidDataException($"invalid PNG row filter {filter}"),
            };
        }
    }

    private static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }

    private static void WriteChunk(Stream s, string type, byte[] data)
    {
        Span<byte> buf = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(buf, data.Length);
        s.Write(buf);
        var typeBytes = Encoding.ASCII.GetBytes(type);
        s.Write(typeBytes);
        s.Write(data);
        uint crc = 0xFFFFFFFFu;
        foreach (var b in typeBytes) crc = CrcTable[(crc ^ b) & 0xFF] ^ (crc >> 8);
        foreach (var b in data) crc = CrcTable[(crc ^ b) & 0xFF] ^ (crc >> 8);
        BinaryPrimitives.WriteUInt32BigEndian(buf, crc ^ 0xFFFFFFFFu);
        s.Write(buf);
    }

    private static uint[] BuildCrcTable()
    {
        var t = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }

        return t;
    }
}
