namespace RootDtd.Imaging;

/// <summary>
/// Geometry, normalisation and safety limits for <see cref="ImageLoader"/>.
/// The defaults reproduce the usual ImageNet evaluation pipeline: resize the shorter side to 256,
/// centre-crop 224×224, normalise with the ImageNet mean and standard deviation.
/// </summary>
public sealed record ImageLoadOptions
{
    /// <summary>Target length of the shorter image side after resizing (aspect ratio kept, bilinear); <c>null</c> keeps the original size.</summary>
    public int? ResizeShorterSide { get; init; } = 256;

    /// <summary>Side of the square centre crop taken after resizing; <c>null</c> disables cropping.</summary>
    public int? CropSize { get; init; } = 224;

    /// <summary>Per-channel mean and standard deviation applied to the [0,1] pixels.</summary>
    public ImageNormalization Normalization { get; init; } = ImageNormalization.ImageNet;

    /// <summary>Largest accepted image (width × height, read from the header before decoding). Default 40 megapixels.</summary>
    public long MaxPixels { get; init; } = 40_000_000;

    /// <summary>Largest accepted width or height in pixels (read from the header before decoding). Default 16384.</summary>
    public int MaxDimension { get; init; } = 16_384;

    /// <summary>Largest accepted file size in bytes. Default 256 MiB.</summary>
    public long MaxFileBytes { get; init; } = 256L * 1024 * 1024;

    /// <summary>
    /// Largest accepted ratio of the longer to the shorter image side (read from the header before decoding). Default 64:
    /// a 16384×1 strip would otherwise be resized to 256×4,194,304 pixels before the crop.
    /// </summary>
    public double MaxAspectRatio { get; init; } = 64;

    /// <summary>The ImageNet evaluation pipeline: resize 256, centre-crop 224, ImageNet mean/std.</summary>
    public static ImageLoadOptions ImageNet { get; } = new();

    /// <summary>Options that resize the shorter side to <paramref name="size"/> and centre-crop a square of the same size.</summary>
    /// <param name="size">Resize and crop size in pixels.</param>
    public static ImageLoadOptions ResizeAndCrop(int size) => new() { ResizeShorterSide = size, CropSize = size };

    /// <summary>Throws <see cref="ArgumentException"/> when a setting is out of range.</summary>
    public void Validate()
    {
        if (ResizeShorterSide is <= 0)
            throw new ArgumentException($"ResizeShorterSide must be positive, was {ResizeShorterSide}.", nameof(ResizeShorterSide));
        if (CropSize is <= 0)
            throw new ArgumentException($"CropSize must be positive, was {CropSize}.", nameof(CropSize));
        if (ResizeShorterSide is int r && CropSize is int c && c > r)
            throw new ArgumentException($"CropSize ({c}) must not exceed ResizeShorterSide ({r}).", nameof(CropSize));
        if (MaxPixels <= 0)
            throw new ArgumentException($"MaxPixels must be positive, was {MaxPixels}.", nameof(MaxPixels));
        if (MaxDimension <= 0)
            throw new ArgumentException($"MaxDimension must be positive, was {MaxDimension}.", nameof(MaxDimension));
        if (MaxFileBytes <= 0)
            throw new ArgumentException($"MaxFileBytes must be positive, was {MaxFileBytes}.", nameof(MaxFileBytes));
        if (!(MaxAspectRatio >= 1) || double.IsInfinity(MaxAspectRatio))
            throw new ArgumentException($"MaxAspectRatio must be a finite number of at least 1, was {MaxAspectRatio}.", nameof(MaxAspectRatio));
        ArgumentNullException.ThrowIfNull(Normalization, nameof(Normalization));
    }
}
