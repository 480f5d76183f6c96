using System.Buffers.Binary;

namespace RootDtd.Imaging;

/// <summary>The container formats the loader recognises by their magic bytes.</summary>
internal enum SniffedFormat
{
    Unknown,
    Png,
    Jpeg,
    Bmp,
    Gif,
    Tiff,
    WebP,
}

/// <summary>What the PNG chunk walk found.</summary>
internal sealed record PngLayout(int Width, int Height, int BitDepth, int ColorType, byte[]? Palette);

/// <summary>
/// Our own, allocation-free structural checks of PNG, JPEG and BMP files. They run on the raw bytes
/// before ImageSharp decodes anything, so truncated files are refused deterministically
/// (ImageSharp 2.x may silently decode a truncated file into a partly grey image).
/// Each check returns <c>null</c> when the file is complete, or the reason it is not.
/// </summary>
internal static class ImageFileFormat
{
    private static ReadOnlySpan<byte> PngSignature => [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    private static readonly uint[] CrcTable = BuildCrcTable();

    public static SniffedFormat Sniff(ReadOnlySpan<byte> data)
    {
        if (data.StartsWith(PngSignature)) return SniffedFormat.Png;
        if (data.Length >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return SniffedFormat.Jpeg;
        if (data.Length >= 2 && data[0] == (byte)'B' && data[1] == (byte)'M') return SniffedFormat.Bmp;
        if (data.Length >= 4 && data[..4].SequenceEqual("GIF8"u8)) return SniffedFormat.Gif;
        if (data.Length >= 4 && (data[..4].SequenceEqual("II*\0"u8) || data[..4].SequenceEqual("MM\0*"u8))) return SniffedFormat.Tiff;
        if (data.Length >= 12 && data[..4].SequenceEqual("RIFF"u8) && data[8..12].SequenceEqual("WEBP"u8)) return SniffedFormat.WebP;
        return SniffedFormat.Unknown;
    }

    /// <summary>True when the data is shorter than, and a prefix of, a PNG, JPEG or BMP signature (a file cut inside its signature).</summary>
    public static bool IsSignaturePrefix(ReadOnlySpan<byte> data) =>
        data.Length > 0 && ((data.Length < PngSignature.Length && PngSignature.StartsWith(data))
                            || (data.Length < 3 && ((ReadOnlySpan<byte>)[0xFF, 0xD8, 0xFF]).StartsWith(data))
                            || (data.Length < 2 && data[0] == (byte)'B'));

    public static (ImageLoadFailure Failure, string Reason)? Check(SniffedFormat format, ReadOnlySpan<byte> data) => format switch
    {
        SniffedFormat.Png => CheckPng(data, out _),
        SniffedFormat.Jpeg => CheckJpeg(data),
        SniffedFormat.Bmp => CheckBmp(data),
        _ => (ImageLoadFailure.UnknownFormat, "unknown image format"),
    };

    /// <summary>Walks the PNG chunks up to IEND, checking bounds and the CRC of every critical chunk.</summary>
    public static (ImageLoadFailure Failure, string Reason)? CheckPng(ReadOnlySpan<byte> data, out PngLayout? layout)
    {
        layout = null;
        int pos = PngSignature.Length;
        int width = 0, height = 0, bitDepth = 0, colorType = -1;
        byte[]? palette = null;
        bool sawIdat = false;
        while (true)
        {
            if (pos + 8 > data.Length) return (ImageLoadFailure.Truncated, $"PNG ends at byte {data.Length} before the IEND chunk");
            uint length = BinaryPrimitives.ReadUInt32BigEndian(data[pos..]);
            var type = data.Slice(pos + 4, 4);
            string typeName = System.Text.Encoding.ASCII.GetString(type);
            if (length > int.MaxValue) return (ImageLoadFailure.Corrupt, $"PNG chunk '{typeName}' at byte {pos} has an invalid length {length}");
            for (int i = 0; i < 4; i++)
                if (!((type[i] >= 'A' && type[i] <= 'Z') || (type[i] >= 'a' && type[i] <= 'z')))
                    return (ImageLoadFailure.Corrupt, $"invalid PNG chunk type at byte {pos}");
            long end = (long)pos + 12 + length;
            if (end > data.Length) return (ImageLoadFailure.Truncated, $"PNG chunk '{typeName}' at byte {pos} needs {length} data bytes but the file ends at byte {data.Length}");
            var body = data.Slice(pos + 8, (int)length);
            bool critical = type[0] >= 'A' && type[0] <= 'Z';
            if (critical)
            {
                uint expected = BinaryPrimitives.ReadUInt32BigEndian(data[(pos + 8 + (int)length)..]);
                if (Crc32(data.Slice(pos + 4, 4 + (int)length)) != expected)
                    return (ImageLoadFailure.Corrupt, $"CRC mismatch in PNG chunk '{typeName}' at byte {pos}");
            }
            if (pos == PngSignature.Length)
            {
                if (typeName != "IHDR" || length != 13) return (ImageLoadFailure.Corrupt, "PNG does not start with a valid IHDR chunk");
                width = (int)Math.Min(int.MaxValue, BinaryPrimitives.ReadUInt32BigEndian(body));
                height = (int)Math.Min(int.MaxValue, BinaryPrimitives.ReadUInt32BigEndian(body[4..]));
                bitDepth = body[8];
                colorType = body[9];
            }
            switch (typeName)
            {
                case "PLTE":
                    palette = body.ToArray();
                    break;
                case "IDAT":
                    sawIdat = true;
                    break;
                case "IEND":
                    if (!sawIdat) return (ImageLoadFailure.Corrupt, "PNG has no IDAT (image data) chunk");
                    layout = new PngLayout(width, height, bitDepth, colorType, palette);
                    return null;
            }
            pos = (int)end;
        }
    }

    /// <summary>
    /// The PNG with only the chunks that define its pixels (IHDR, PLTE, tRNS, IDAT, IEND): text (tEXt/zTXt/iTXt), EXIF,
    /// ICC and every other ancillary chunk are dropped, so no decoder inflates them. Returns <paramref name="data"/>
    /// itself when there is nothing to drop. A file whose chunk walk fails is cut at that point (the structural check
    /// reports why); nothing is decompressed here.
    /// </summary>
    public static byte[] StripAncillaryPngChunks(byte[] data)
    {
        if (Sniff(data) != SniffedFormat.Png) return data;
        var kept = new List<(int Start, int Length)>();
        bool dropped = false;
        int pos = PngSignature.Length;
        while (pos + 8 <= data.Length)
        {
            uint length = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan(pos));
            long end = (long)pos + 12 + length;
            if (length > int.MaxValue || end > data.Length) { dropped = true; break; }
            var type = System.Text.Encoding.ASCII.GetString(data, pos + 4, 4);
            if (type is "IHDR" or "PLTE" or "tRNS" or "IDAT" or "IEND") kept.Add((pos, (int)(end - pos)));
            else dropped = true;
            pos = (int)end;
            if (type == "IEND") break;
        }
        if (!dropped) return data;
        long total = PngSignature.Length + kept.Sum(k => (long)k.Length);
        var result = new byte[total];
        data.AsSpan(0, PngSignature.Length).CopyTo(result);
        int at = PngSignature.Length;
        foreach (var (start, len) in kept)
        {
            data.AsSpan(start, len).CopyTo(result.AsSpan(at));
            at += len;
        }
        return result;
    }

    /// <summary>Walks the JPEG markers (and the entropy-coded scans) up to EOI.</summary>
    public static (ImageLoadFailure Failure, string Reason)? CheckJpeg(ReadOnlySpan<byte> data)
    {
        int pos = 2; // after SOI
        bool sawFrame = false, sawScan = false;
        while (true)
        {
            if (pos >= data.Length) return (ImageLoadFailure.Truncated, $"JPEG ends at byte {data.Length} before the end-of-image marker");
            if (data[pos] != 0xFF) return (ImageLoadFailure.Corrupt, $"expected a JPEG marker at byte {pos}, found 0x{data[pos]:X2}");
            while (pos < data.Length && data[pos] == 0xFF) pos++; // fill bytes
            if (pos >= data.Length) return (ImageLoadFailure.Truncated, $"JPEG ends at byte {data.Length} inside a marker");
            byte marker = data[pos++];
            if (marker == 0xD9)
            {
                if (!sawFrame || !sawScan) return (ImageLoadFailure.Corrupt, "JPEG has no frame or no scan before the end-of-image marker");
                return null;
            }
            if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue; // stand-alone markers
            if (marker == 0x00 || marker == 0xD8) return (ImageLoadFailure.Corrupt, $"unexpected JPEG marker 0xFF{marker:X2} at byte {pos - 2}");
            if (pos + 2 > data.Length) return (ImageLoadFailure.Truncated, $"JPEG ends at byte {data.Length} inside the header of marker 0xFF{marker:X2}");
            int length = BinaryPrimitives.ReadUInt16BigEndian(data[pos..]);
            if (length < 2) return (ImageLoadFailure.Corrupt, $"JPEG segment 0xFF{marker:X2} at byte {pos - 2} has an invalid length {length}");
            if (pos + length > data.Length) return (ImageLoadFailure.Truncated, $"JPEG segment 0xFF{marker:X2} at byte {pos - 2} needs {length} bytes but the file ends at byte {data.Length}");
            bool isFrame = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
            sawFrame |= isFrame;
            pos += length;
            if (marker != 0xDA) continue;
            if (!sawFrame) return (ImageLoadFailure.Corrupt, "JPEG scan starts before any frame header");
            sawScan = true;
            // Entropy-coded data: 0xFF is followed by 0x00 (stuffing), RSTn or fill bytes; anything else is the next marker.
            while (true)
            {
                int ff = data[pos..].IndexOf((byte)0xFF);
                if (ff < 0 || pos + ff + 1 >= data.Length)
                    return (ImageLoadFailure.Truncated, $"JPEG ends at byte {data.Length} inside the compressed image data");
                pos += ff;
                byte next = data[pos + 1];
                if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) { pos += 2; continue; }
                if (next == 0xFF) { pos += 1; continue; }
                break; // a marker: back to the segment loop
            }
        }
    }

    /// <summary>Checks that a BMP's pixel array fits in the file (uncompressed and bit-field BMPs).</summary>
    public static (ImageLoadFailure Failure, string Reason)? CheckBmp(ReadOnlySpan<byte> data)
    {
        if (data.Length < 26) return (ImageLoadFailure.Truncated, $"BMP ends at byte {data.Length} inside its headers");
        uint offset = BinaryPrimitives.ReadUInt32LittleEndian(data[10..]);
        uint headerSize = BinaryPrimitives.ReadUInt32LittleEndian(data[14..]);
        if (headerSize < 12 || 14L + headerSize > data.Length)
            return headerSize < 12
                ? (ImageLoadFailure.Corrupt, $"BMP information header has an invalid size {headerSize}")
                : (ImageLoadFailure.Truncated, $"BMP ends at byte {data.Length} inside its information header");
        long width, height;
        int bitsPerPixel;
        uint compression = 0;
        if (headerSize == 12)
        {
            width = BinaryPrimitives.ReadUInt16LittleEndian(data[18..]);
            height = BinaryPrimitives.ReadUInt16LittleEndian(data[20..]);
            bitsPerPixel = BinaryPrimitives.ReadUInt16LittleEndian(data[24..]);
        }
        else
        {
            if (data.Length < 34) return (ImageLoadFailure.Truncated, $"BMP ends at byte {data.Length} inside its information header");
            width = BinaryPrimitives.ReadInt32LittleEndian(data[18..]);
            height = Math.Abs((long)BinaryPrimitives.ReadInt32LittleEndian(data[22..]));
            bitsPerPixel = BinaryPrimitives.ReadUInt16LittleEndian(data[28..]);
            compression = BinaryPrimitives.ReadUInt32LittleEndian(data[30..]);
        }
        if (width <= 0 || height <= 0) return (ImageLoadFailure.Corrupt, $"BMP has invalid dimensions {width}x{height}");
        if (offset > data.Length) return (ImageLoadFailure.Truncated, $"BMP pixel data starts at byte {offset} but the file ends at byte {data.Length}");
        bool uncompressed = compression is 0 or 3 or 6; // BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS
        if (uncompressed && bitsPerPixel is 1 or 2 or 4 or 8 or 16 or 24 or 32)
        {
            long stride = (width * bitsPerPixel + 31) / 32 * 4;
            long needed = offset + stride * height;
            if (needed > data.Length)
                return (ImageLoadFailure.Truncated, $"BMP pixel data needs {needed} bytes but the file has {data.Length}");
        }
        return null;
    }

    public static uint Crc32(ReadOnlySpan<byte> bytes)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (byte b in bytes) crc = CrcTable[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return crc ^ 0xFFFFFFFFu;
    }

    private static uint[] BuildCrcTable()
    {
        var table = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[n] = c;
        }
        return table;
    }
}
