using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.PixelFormats;

namespace RootDtd.Imaging.Tests;

/// <summary>A temporary directory, deleted on dispose, plus synthetic image factories.</summary>
public sealed class TempDirectory : IDisposable
{
    public TempDirectory() => Path = Directory.CreateTempSubdirectory("rootdtd-imaging-").FullName;

    public string Path { get; }

    public string Write(string name, byte[] bytes)
    {
        var file = System.IO.Path.Combine(Path, name);
        File.WriteAllBytes(file, bytes);
        return file;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

public static class TestImages
{
    /// <summary>Pixel (x, y) = (x mod 256, y mod 256, (x + y) mod 256): the colour encodes the coordinates.</summary>
    public static Image<Rgb24> Coordinates(int width, int height)
    {
        var image = new Image<Rgb24>(width, height);
        image.ProcessPixelRows(a =>
        {
            for (int y = 0; y < a.Height; y++)
            {
                var row = a.GetRowSpan(y);
                for (int x = 0; x < row.Length; x++) row[x] = new Rgb24((byte)x, (byte)y, (byte)(x + y));
            }
        });
        return image;
    }

    /// <summary>Deterministic pseudo-random noise.</summary>
    public static Image<Rgb24> Noise(int width, int height, int seed)
    {
        var random = new Random(seed);
        var bytes = new byte[width * height * 3];
        random.NextBytes(bytes);
        return Image.LoadPixelData<Rgb24>(bytes, width, height);
    }

    /// <summary>A smooth gradient with some structure (compresses to a JPEG with real scan data).</summary>
    public static Image<Rgb24> Gradient(int width, int height)
    {
        var image = new Image<Rgb24>(width, height);
        image.ProcessPixelRows(a =>
        {
            for (int y = 0; y < a.Height; y++)
            {
                var row = a.GetRowSpan(y);
                for (int x = 0; x < row.Length; x++)
                    row[x] = new Rgb24((byte)(255 * x / width), (byte)(255 * y / height), (byte)((x * y) % 256));
            }
        });
        return image;
    }

    public static byte[] Png(Image<Rgb24> image) { using var s = new MemoryStream(); image.SaveAsPng(s); return s.ToArray(); }

    public static byte[] Jpeg(Image<Rgb24> image, int quality = 90) { using var s = new MemoryStream(); image.SaveAsJpeg(s, new JpegEncoder { Quality = quality }); return s.ToArray(); }

    public static byte[] Bmp(Image<Rgb24> image) { using var s = new MemoryStream(); image.SaveAsBmp(s, new BmpEncoder { BitsPerPixel = BmpBitsPerPixel.Pixel24 }); return s.ToArray(); }

    public static byte[] Gif(Image<Rgb24> image) { using var s = new MemoryStream(); image.SaveAsGif(s); return s.ToArray(); }

    public static byte[] Tiff(Image<Rgb24> image) { using var s = new MemoryStream(); image.SaveAsTiff(s); return s.ToArray(); }

    /// <summary>
    /// A minimal PNG writer (8-bit samples, filter 0) so tests control palette indices and header fields exactly.
    /// colorType 0 = grey (one byte per pixel), 3 = palette (one index per pixel).
    /// </summary>
    public static byte[] RawPng(int width, int height, byte colorType, byte[] samples, byte[]? palette = null,
        int? headerWidth = null, int? headerHeight = null)
    {
        using var output = new MemoryStream();
        output.Write([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]);
        var ihdr = new byte[13];
        BinaryPrimitives.WriteUInt32BigEndian(ihdr, (uint)(headerWidth ?? width));
        BinaryPrimitives.WriteUInt32BigEndian(ihdr.AsSpan(4), (uint)(headerHeight ?? height));
        ihdr[8] = 8;
        ihdr[9] = colorType;
        WriteChunk(output, "IHDR", ihdr);
        if (palette is not null) WriteChunk(output, "PLTE", palette);
        using (var raw = new MemoryStream())
        {
            using (var z = new ZLibStream(raw, CompressionLevel.Optimal, leaveOpen: true))
            {
                for (int y = 0; y < height; y++)
                {
                    z.WriteByte(0);
                    z.Write(samples, y * width, width);
                }
            }
            WriteChunk(output, "IDAT", raw.ToArray());
        }
        WriteChunk(output, "IEND", []);
        return output.ToArray();
    }

    private static void WriteChunk(Stream output, string type, byte[] data)
    {
        var header = new byte[8];
        BinaryPrimitives.WriteUInt32BigEndian(header, (uint)data.Length);
        Encoding.ASCII.GetBytes(type).CopyTo(header, 4);
        output.Write(header);
        output.Write(data);
        var crcInput = new byte[4 + data.Length];
        Encoding.ASCII.GetBytes(type).CopyTo(crcInput, 0);
        data.CopyTo(crcInput, 4);
        var crc = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32(crcInput));
        output.Write(crc);
    }

    private static uint Crc32(byte[] bytes)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (byte b in bytes)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
        }
        return crc ^ 0xFFFFFFFFu;
    }
}
