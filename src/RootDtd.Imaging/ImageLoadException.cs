namespace RootDtd.Imaging;

/// <summary>What went wrong when an image or mask file could not be loaded.</summary>
public enum ImageLoadFailure
{
    /// <summary>The file does not exist.</summary>
    NotFound,

    /// <summary>The file could not be read (permissions, a directory, an I/O error).</summary>
    IoError,

    /// <summary>The file has zero bytes.</summary>
    Empty,

    /// <summary>The bytes are not a known image format.</summary>
    UnknownFormat,

    /// <summary>The file is an image format that RootDtd refuses to decode (GIF, TIFF, WebP, ...), or a PNG colour type a mask cannot use.</summary>
    UnsupportedFormat,

    /// <summary>The file, or the image its header describes, exceeds a configured limit.</summary>
    TooLarge,

    /// <summary>The image is smaller than the requested centre crop.</summary>
    TooSmall,

    /// <summary>The file ends before the image data is complete.</summary>
    Truncated,

    /// <summary>The file is structurally invalid or could not be decoded.</summary>
    Corrupt,

    /// <summary>Images of one batch have different sizes after resizing and cropping.</summary>
    SizeMismatch,
}

/// <summary>
/// Thrown when an image or mask cannot be loaded. The message always names the file and the reason;
/// decoder exceptions are wrapped as <see cref="Exception.InnerException"/>.
/// </summary>
public sealed class ImageLoadException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="filePath">The path (or source name) of the image that failed.</param>
    /// <param name="failure">The kind of failure.</param>
    /// <param name="reason">A human-readable description of what was wrong.</param>
    /// <param name="innerException">The underlying exception, if any.</param>
    public ImageLoadException(string filePath, ImageLoadFailure failure, string reason, Exception? innerException = null)
        : base($"Cannot load image '{filePath}': {reason}", innerException)
    {
        FilePath = filePath;
        Failure = failure;
        Reason = reason;
    }

    /// <summary>The path (or source name) of the image that failed.</summary>
    public string FilePath { get; }

    /// <summary>The kind of failure.</summary>
    public ImageLoadFailure Failure { get; }

    /// <summary>What was wrong, without the file name.</summary>
    public string Reason { get; }
}
