using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace RootDtd.Imaging;

/// <summary>Writes rendered images as 8-bit RGB PNG (file, stream or bytes, e.g. for notebook display).</summary>
public static class PngExport
{
    // ChunkFilter ExcludeAll: no metadata (EXIF, XMP, text, ICC, physical size) of the source image reaches the PNGs, the
    // notebook HTML or the reports, whatever the Image<Rgb24> carries.
    private static readonly PngEncoder Encoder = new() { ColorType = PngColorType.Rgb, BitDepth = PngBitDepth.Bit8, ChunkFilter = PngChunkFilter.ExcludeAll };

    /// <summary>Encodes the image as PNG bytes.</summary>
    /// <param name="image">The image.</param>
    public static byte[] ToPngBytes(this Image<Rgb24> image)
    {
        using var stream = new MemoryStream();
        WritePng(image, stream);
        return stream.ToArray();
    }

    /// <summary>Writes the image as PNG to a stream (the stream is not closed).</summary>
    /// <param name="image">The image.</param>
    /// <param name="stream">A writable stream.</param>
    public static void WritePng(this Image<Rgb24> image, Stream stream)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(stream);
        image.Save(stream, Encoder);
    }

    /// <summary>
    /// Writes the image as a PNG file (created or overwritten) through <see cref="RootDtd.IO.AtomicFile"/>: the file
    /// appears complete or not at all, and a failed write leaves a previous file of that name as it was.
    /// </summary>
    /// <param name="image">The image.</param>
    /// <param name="path">The file path.</param>
    public static void SavePng(this Image<Rgb24> image, string path)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(path);
        RootDtd.IO.AtomicFile.Write(path, stream => WritePng(image, stream));
    }

    /// <summary>A <c>data:image/png;base64,...</c> URI of the image, for HTML output.</summary>
    /// <param name="image">The image.</param>
    public static string ToPngDataUri(this Image<Rgb24> image) => "data:image/png;base64," + Convert.ToBase64String(ToPngBytes(image));
}
