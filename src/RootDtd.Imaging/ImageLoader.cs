using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Bmp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Imaging;

/// <summary>
/// Loads JPEG, PNG and BMP files into normalised float32 tensors with torchvision-style geometry
/// (resize the shorter side, then centre-crop), and segmentation masks with the same geometry.
/// </summary>
/// <remarks>
/// Images are treated as untrusted input. Only the PNG, JPEG and BMP decoders are registered
/// (<see cref="CreateSafeConfiguration"/>), with metadata ignored; ancillary PNG chunks (text, EXIF, ICC, ...) are
/// removed before ImageSharp sees the file, so a compressed text chunk cannot inflate to gigabytes; the header is read
/// with <c>Image.Identify</c> and the size and aspect-ratio limits of <see cref="ImageLoadOptions"/> are enforced before
/// anything is decoded; resizing computes only the pixels of the centre crop; truncated files are detected by our own
/// structural check; and every failure surfaces as an <see cref="ImageLoadException"/> naming the file.
/// An instance is immutable and thread-safe.
/// </remarks>
public sealed class ImageLoader
{
    private readonly Configuration _configuration;

    /// <summary>Creates a loader.</summary>
    /// <param name="options">Geometry, normalisation and limits; <c>null</c> means <see cref="ImageLoadOptions.ImageNet"/>.</param>
    public ImageLoader(ImageLoadOptions? options = null)
    {
        Options = options ?? ImageLoadOptions.ImageNet;
        Options.Validate();
        _configuration = CreateSafeConfiguration();
    }

    /// <summary>The options this loader applies.</summary>
    public ImageLoadOptions Options { get; }

    /// <summary>
    /// An ImageSharp configuration with only the PNG, JPEG and BMP format modules (no GIF, TIFF, WebP, TGA, PBM),
    /// so other formats are never parsed, and PNG and JPEG decoders that ignore metadata (text chunks, EXIF, ICC, XMP).
    /// </summary>
    public static Configuration CreateSafeConfiguration()
    {
        var configuration = new Configuration(new PngConfigurationModule(), new JpegConfigurationModule(), new BmpConfigurationModule());
        configuration.ImageFormatsManager.SetDecoder(PngFormat.Instance, new PngDecoder { IgnoreMetadata = true });
        configuration.ImageFormatsManager.SetDecoder(JpegFormat.Instance, new JpegDecoder { IgnoreMetadata = true });
        return configuration;
    }

    /// <summary>Loads an image file: the normalised [3,H,W] tensor plus the resized and cropped RGB image.</summary>
    /// <param name="path">Path of a JPEG, PNG or BMP file.</param>
    /// <exception cref="ImageLoadException">The file is missing, unreadable, too large, truncated, corrupt or of another format.</exception>
    public LoadedImage Load(string path) => Load(ReadFile(path), path);

    /// <summary>Loads an image from encoded bytes (same pipeline as <see cref="Load(string)"/>).</summary>
    /// <param name="encoded">The encoded file content.</param>
    /// <param name="sourceName">A name for the data used in error messages (e.g. a URL or file name).</param>
    public LoadedImage Load(byte[] encoded, string sourceName)
    {
        ArgumentNullException.ThrowIfNull(encoded);
        ArgumentNullException.ThrowIfNull(sourceName);
        var image = DecodeRgb(encoded, sourceName);
        try
        {
            ApplyGeometry(image, sourceName);
            using var scope = NewDisposeScope();
            var normalized = ImageTensorConversion.ToNormalizedTensor(image, Options.Normalization);
            return new LoadedImage(sourceName, image, normalized.DetachFromDisposeScope(), Options.Normalization);
        }
        catch
        {
            image.Dispose();
            throw;
        }
    }

    /// <summary>Loads an image file as a normalised float32 CPU tensor [3,H,W].</summary>
    /// <param name="path">Path of a JPEG, PNG or BMP file.</param>
    /// <exception cref="ImageLoadException">The file cannot be loaded.</exception>
    public Tensor LoadTensor(string path)
    {
        using var image = LoadDisplayImage(path);
        return ImageTensorConversion.ToNormalizedTensor(image, Options.Normalization);
    }

    /// <summary>Loads image files as one normalised float32 CPU tensor [B,3,H,W]; all must have the same size after resize and crop.</summary>
    /// <param name="paths">Paths of JPEG, PNG or BMP files (at least one).</param>
    /// <exception cref="ImageLoadException">A file cannot be loaded, or its size differs from the first image's.</exception>
    public Tensor LoadBatch(IEnumerable<string> paths)
    {
        ArgumentNullException.ThrowIfNull(paths);
        var list = paths.ToList();
        if (list.Count == 0) throw new ArgumentException("At least one path is required.", nameof(paths));
        using var scope = NewDisposeScope();
        var tensors = new List<Tensor>(list.Count);
        foreach (var path in list)
        {
            var t = LoadTensor(path);
            if (tensors.Count > 0 && (t.shape[1] != tensors[0].shape[1] || t.shape[2] != tensors[0].shape[2]))
                throw new ImageLoadException(path, ImageLoadFailure.SizeMismatch,
                    $"its size {t.shape[2]}x{t.shape[1]} differs from the first image's {tensors[0].shape[2]}x{tensors[0].shape[1]}; set CropSize to batch images of different sizes");
            tensors.Add(t);
        }
        return stack(tensors).MoveToOuterDisposeScope();
    }

    /// <summary>Loads an image file and returns the resized and centre-cropped RGB image (what the model sees, before normalisation).</summary>
    /// <param name="path">Path of a JPEG, PNG or BMP file.</param>
    /// <exception cref="ImageLoadException">The file cannot be loaded.</exception>
    public Image<Rgb24> LoadDisplayImage(string path)
    {
        var image = DecodeRgb(ReadFile(path), path);
        try
        {
            ApplyGeometry(image, path);
            return image;
        }
        catch
        {
            image.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Loads a segmentation mask PNG (palette-indexed or greyscale) as a [H,W] tensor of label values, with the same
    /// resize and centre-crop geometry as images but nearest-neighbour resampling, so only label values of the file
    /// occur in the result (e.g. VOC's 255 "ignore" border stays 255). Palette PNGs yield palette indices
    /// (a colour listed twice in the palette maps to its first index); greyscale PNGs with 1, 2 or 4 bits yield
    /// the raw sample values, 16-bit greyscale is reduced to 8 bits.
    /// </summary>
    /// <param name="path">Path of the mask PNG.</param>
    /// <param name="dtype"><see cref="ScalarType.Int64"/> (default) or <see cref="ScalarType.Byte"/>.</param>
    /// <exception cref="ImageLoadException">The file cannot be loaded or is not a greyscale or palette PNG.</exception>
    public Tensor LoadMask(string path, ScalarType dtype = ScalarType.Int64)
    {
        if (dtype is not (ScalarType.Int64 or ScalarType.Byte))
            throw new ArgumentException($"Mask dtype must be Int64 or Byte, was {dtype}.", nameof(dtype));
        var data = ReadFile(path);
        var format = SniffAndIdentify(data, path);
        if (format != SniffedFormat.Png)
            throw new ImageLoadException(path, ImageLoadFailure.UnsupportedFormat, $"masks must be PNG files, this is {format}");
        var problem = ImageFileFormat.CheckPng(data, out var layout);
        if (problem is { } p) throw new ImageLoadException(path, p.Failure, p.Reason);
        var labels = DecodeLabels(ImageFileFormat.StripAncillaryPngChunks(data), layout!, path, out int width, out int height);

        var (rw, rh, left, top, cw, ch) = PlanGeometry(width, height, path);
        var output = new byte[cw * ch];
        for (int y = 0; y < ch; y++)
        {
            int sy = Math.Min(height - 1, (int)Math.Floor((y + top + 0.5) * height / rh));
            for (int x = 0; x < cw; x++)
            {
                int sx = Math.Min(width - 1, (int)Math.Floor((x + left + 0.5) * width / rw));
                output[y * cw + x] = labels[sy * width + sx];
            }
        }
        using var scope = NewDisposeScope();
        var result = tensor(output, new long[] { ch, cw });
        return (dtype == ScalarType.Byte ? result : result.to(ScalarType.Int64)).MoveToOuterDisposeScope();
    }

    /// <summary>The size (width, height) an image of the given size has after this loader's resize and crop.</summary>
    /// <param name="width">Original width.</param>
    /// <param name="height">Original height.</param>
    /// <exception cref="ImageLoadException">The size is outside the limits (aspect ratio, output size) or smaller than the crop.</exception>
    public (int Width, int Height) OutputSize(int width, int height)
    {
        var (_, _, _, _, cw, ch) = PlanGeometry(width, height, "<size>");
        return (cw, ch);
    }

    // ---- pipeline pieces -------------------------------------------------------------------------------------

    private byte[] ReadFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists)
                throw Directory.Exists(path)
                    ? new ImageLoadException(path, ImageLoadFailure.IoError, "the path is a directory")
                    : new ImageLoadException(path, ImageLoadFailure.NotFound, "the file does not exist");
            if (info.Length > Options.MaxFileBytes)
                throw new ImageLoadException(path, ImageLoadFailure.TooLarge, $"the file has {info.Length} bytes, more than the limit of {Options.MaxFileBytes}");
            return File.ReadAllBytes(path);
        }
        catch (ImageLoadException) { throw; }
        catch (Exception ex)
        {
            throw new ImageLoadException(path, ImageLoadFailure.IoError, $"the file could not be read ({ex.GetType().Name}: {ex.Message})", ex);
        }
    }

    /// <summary>Checks magic bytes, reads the header with Image.Identify and enforces the limits. Nothing is decoded.</summary>
    private SniffedFormat SniffAndIdentify(byte[] data, string source)
    {
        if (data.Length == 0) throw new ImageLoadException(source, ImageLoadFailure.Empty, "the file is empty (0 bytes)");
        if (data.LongLength > Options.MaxFileBytes)
            throw new ImageLoadException(source, ImageLoadFailure.TooLarge, $"the data has {data.LongLength} bytes, more than the limit of {Options.MaxFileBytes}");
        var format = ImageFileFormat.Sniff(data);
        switch (format)
        {
            case SniffedFormat.Unknown when ImageFileFormat.IsSignaturePrefix(data):
                throw new ImageLoadException(source, ImageLoadFailure.Truncated, $"the file ends after {data.Length} bytes, inside the image signature");
            case SniffedFormat.Unknown:
                throw new ImageLoadException(source, ImageLoadFailure.UnknownFormat, "not a PNG, JPEG or BMP image (unrecognised file signature)");
            case SniffedFormat.Gif or SniffedFormat.Tiff or SniffedFormat.WebP:
                throw new ImageLoadException(source, ImageLoadFailure.UnsupportedFormat, $"{format} images are not supported (only PNG, JPEG and BMP are decoded)");
        }

        IImageInfo? info;
        try
        {
            // Only the critical PNG chunks reach ImageSharp: its header read would otherwise inflate text chunks.
            info = Image.Identify(_configuration, format == SniffedFormat.Png ? ImageFileFormat.StripAncillaryPngChunks(data) : data, out _);
        }
        catch (Exception ex)
        {
            var structural = ImageFileFormat.Check(format, data);
            var (failure, reason) = structural ?? (ImageLoadFailure.Corrupt, "the header is invalid");
            throw new ImageLoadException(source, failure, $"{reason} ({ex.GetType().Name}: {ex.Message})", ex);
        }
        if (info is null)
        {
            var (failure, reason) = ImageFileFormat.Check(format, data) ?? (ImageLoadFailure.UnknownFormat, $"no {format} decoder recognised the header");
            throw new ImageLoadException(source, failure, reason);
        }
        if (info.Width <= 0 || info.Height <= 0)
            throw new ImageLoadException(source, ImageLoadFailure.Corrupt, $"the header declares invalid dimensions {info.Width}x{info.Height}");
        if (info.Width > Options.MaxDimension || info.Height > Options.MaxDimension)
            throw new ImageLoadException(source, ImageLoadFailure.TooLarge,
                $"the header declares {info.Width}x{info.Height} pixels; the largest accepted side is {Options.MaxDimension}");
        if ((long)info.Width * info.Height > Options.MaxPixels)
            throw new ImageLoadException(source, ImageLoadFailure.TooLarge,
                $"the header declares {info.Width}x{info.Height} = {(long)info.Width * info.Height} pixels, more than the limit of {Options.MaxPixels}");
        PlanGeometry(info.Width, info.Height, source); // aspect ratio and output size, before decoding
        return format;
    }

    private Image<Rgb24> DecodeRgb(byte[] data, string source)
    {
        var format = SniffAndIdentify(data, source);
        var problem = ImageFileFormat.Check(format, data);
        if (problem is { } p) throw new ImageLoadException(source, p.Failure, p.Reason);
        return Decode<Rgb24>(format == SniffedFormat.Png ? ImageFileFormat.StripAncillaryPngChunks(data) : data, source);
    }

    private Image<TPixel> Decode<TPixel>(byte[] data, string source) where TPixel : unmanaged, IPixel<TPixel>
    {
        try
        {
            using var stream = new MemoryStream(data, writable: false);
            return Image.Load<TPixel>(_configuration, stream);
        }
        catch (Exception ex)
        {
            throw new ImageLoadException(source, ImageLoadFailure.Corrupt, $"decoding failed ({ex.GetType().Name}: {ex.Message})", ex);
        }
    }

    private byte[] DecodeLabels(byte[] data, PngLayout layout, string source, out int width, out int height)
    {
        switch (layout.ColorType)
        {
            case 0 or 4: // greyscale, greyscale + alpha
            {
                using var grey = Decode<L8>(data, source);
                width = grey.Width;
                height = grey.Height;
                var labels = new byte[width * height];
                grey.CopyPixelDataTo(labels);
                if (layout.BitDepth is 1 or 2 or 4)
                {
                    // ImageSharp scales low bit depths to 0..255; restore the stored sample values.
                    int scale = 255 / ((1 << layout.BitDepth) - 1);
                    for (int i = 0; i < labels.Length; i++) labels[i] = (byte)(labels[i] / scale);
                }
                return labels;
            }
            case 3: // palette: decode colours, then map each colour back to its (first) palette index
            {
                var palette = layout.Palette;
                if (palette is null || palette.Length % 3 != 0 || palette.Length == 0)
                    throw new ImageLoadException(source, ImageLoadFailure.Corrupt, "palette PNG has no valid PLTE chunk");
                var indexOfColour = new Dictionary<int, byte>();
                for (int i = palette.Length / 3 - 1; i >= 0; i--)
                    indexOfColour[(palette[3 * i] << 16) | (palette[3 * i + 1] << 8) | palette[3 * i + 2]] = (byte)i;
                using var rgb = Decode<Rgb24>(data, source);
                width = rgb.Width;
                height = rgb.Height;
                var pixels = ImageTensorConversion.GetRgbBytes(rgb);
                var labels = new byte[width * height];
                for (int i = 0, p = 0; i < labels.Length; i++, p += 3)
                {
                    int key = (pixels[p] << 16) | (pixels[p + 1] << 8) | pixels[p + 2];
                    if (!indexOfColour.TryGetValue(key, out labels[i]))
                        throw new ImageLoadException(source, ImageLoadFailure.Corrupt, $"pixel {i % width},{i / width} has a colour that is not in the palette");
                }
                return labels;
            }
            default:
                throw new ImageLoadException(source, ImageLoadFailure.UnsupportedFormat,
                    $"a mask must be a greyscale or palette-indexed PNG; this PNG has colour type {layout.ColorType} (RGB)");
        }
    }

    private void ApplyGeometry(Image<Rgb24> image, string source)
    {
        var (rw, rh, left, top, cw, ch) = PlanGeometry(image.Width, image.Height, source);
        try
        {
            image.Mutate(context =>
            {
                if (rw != image.Width || rh != image.Height)
                    // Resize into a canvas of the crop's size, the full resized image placed at (-left, -top): only the
                    // pixels of the crop are computed (the same values as resizing everything, then cropping).
                    context.Resize(cw, ch, KnownResamplers.Triangle, new Rectangle(0, 0, image.Width, image.Height),
                        new Rectangle(-left, -top, rw, rh), compand: false);
                else if (cw != rw || ch != rh)
                    context.Crop(new Rectangle(left, top, cw, ch));
            });
        }
        catch (Exception ex)
        {
            throw new ImageLoadException(source, ImageLoadFailure.Corrupt, $"resizing failed ({ex.GetType().Name}: {ex.Message})", ex);
        }
    }

    /// <summary>
    /// The resized size and the crop window of an image of the given size, after checking the aspect ratio and that the
    /// output (what is decoded into memory after resize and crop) stays within <see cref="ImageLoadOptions.MaxPixels"/>.
    /// </summary>
    private (int ResizedWidth, int ResizedHeight, int Left, int Top, int Width, int Height) PlanGeometry(int width, int height, string source)
    {
        if (width <= 0 || height <= 0)
            throw new ImageLoadException(source, ImageLoadFailure.Corrupt, $"invalid dimensions {width}x{height}");
        double aspect = (double)Math.Max(width, height) / Math.Min(width, height);
        if (aspect > Options.MaxAspectRatio)
            throw new ImageLoadException(source, ImageLoadFailure.TooLarge,
                $"the image is {width}x{height}, an aspect ratio of {aspect:0.#}:1; the largest accepted is {Options.MaxAspectRatio:0.#}:1 (ImageLoadOptions.MaxAspectRatio)");
        var (rw, rh) = ResizedSize(width, height, Options.ResizeShorterSide);
        var (left, top, cw, ch) = CropWindow(rw, rh, Options.CropSize, source);
        if ((long)cw * ch > Options.MaxPixels)
            throw new ImageLoadException(source, ImageLoadFailure.TooLarge,
                $"the image would be {cw}x{ch} = {(long)cw * ch} pixels after resizing, more than the limit of {Options.MaxPixels} (ImageLoadOptions.MaxPixels)");
        return (rw, rh, left, top, cw, ch);
    }

    /// <summary>torchvision <c>Resize(int)</c>: the shorter side becomes <paramref name="shorter"/>, the longer is truncated.</summary>
    internal static (int Width, int Height) ResizedSize(int width, int height, int? shorter)
    {
        if (shorter is not int s) return (width, height);
        return width <= height
            ? (s, (int)Math.Min(int.MaxValue, (long)s * height / width))
            : ((int)Math.Min(int.MaxValue, (long)s * width / height), s);
    }

    /// <summary>torchvision <c>CenterCrop</c>: offsets are <c>round((size - crop) / 2)</c> (round half to even).</summary>
    private static (int Left, int Top, int Width, int Height) CropWindow(int width, int height, int? crop, string source)
    {
        if (crop is not int c) return (0, 0, width, height);
        if (c > width || c > height)
            throw new ImageLoadException(source, ImageLoadFailure.TooSmall,
                $"the image is {width}x{height} after resizing, smaller than the {c}x{c} centre crop");
        int left = (int)Math.Round((width - c) / 2.0, MidpointRounding.ToEven);
        int top = (int)Math.Round((height - c) / 2.0, MidpointRounding.ToEven);
        return (left, top, c, c);
    }
}
