using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Imaging;

/// <summary>Conversions between RGB images and [3,H,W] float tensors with values in [0,1].</summary>
public static class ImageTensorConversion
{
    /// <summary>Converts an RGB image to a float32 CPU tensor [3,H,W] with values in [0,1].</summary>
    /// <param name="image">The image.</param>
    public static Tensor ToUnitTensor(Image<Rgb24> image) => ToTensor(image, null);

    /// <summary>Converts an RGB image to a normalised float32 CPU tensor [3,H,W].</summary>
    /// <param name="image">The image.</param>
    /// <param name="normalization">The normalisation applied to the [0,1] pixels.</param>
    public static Tensor ToNormalizedTensor(Image<Rgb24> image, ImageNormalization normalization)
    {
        ArgumentNullException.ThrowIfNull(normalization);
        if (normalization.IsPerChannel) return ToTensor(image, normalization);
        using var scope = NewDisposeScope();
        return normalization.Normalize(ToTensor(image, null)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Converts a [3,H,W] (or [1,3,H,W]) tensor with values in [0,1] to an RGB image.
    /// Values are clamped to [0,1] and rounded to the nearest byte. Any device and floating dtype.
    /// </summary>
    /// <param name="unitRange">The tensor.</param>
    public static Image<Rgb24> ToImage(Tensor unitRange)
    {
        var (bytes, height, width) = ToRgbBytesCore(unitRange, nameof(unitRange));
        return Image.LoadPixelData<Rgb24>(bytes, width, height);
    }

    /// <summary>Converts a [3,H,W] (or [1,3,H,W]) tensor with values in [0,1] to interleaved RGB bytes (H·W·3, row-major).</summary>
    /// <param name="unitRange">The tensor.</param>
    public static byte[] ToRgbBytes(Tensor unitRange) => ToRgbBytesCore(unitRange, nameof(unitRange)).Bytes;

    /// <summary>Copies the pixels of an image into interleaved RGB bytes (H·W·3, row-major).</summary>
    /// <param name="image">The image.</param>
    public static byte[] GetRgbBytes(Image<Rgb24> image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var bytes = new byte[checked(image.Width * image.Height * 3)];
        image.CopyPixelDataTo(bytes);
        return bytes;
    }

    private static Tensor ToTensor(Image<Rgb24> image, ImageNormalization? normalization)
    {
        ArgumentNullException.ThrowIfNull(image);
        int h = image.Height, w = image.Width, plane = h * w;
        var rgb = GetRgbBytes(image);
        var buffer = new float[3 * plane];
        // Precompute the 256 possible values per channel: no per-pixel division.
        var table = new float[3 * 256];
        for (int c = 0; c < 3; c++)
            for (int v = 0; v < 256; v++)
                table[c * 256 + v] = normalization is null ? v / 255f : normalization.NormalizeValue(c, v / 255f);
        for (int i = 0, p = 0; i < plane; i++, p += 3)
        {
            buffer[i] = table[rgb[p]];
            buffer[plane + i] = table[256 + rgb[p + 1]];
            buffer[2 * plane + i] = table[512 + rgb[p + 2]];
        }
        return tensor(buffer, new long[] { 3, h, w });
    }

    private static (byte[] Bytes, int Height, int Width) ToRgbBytesCore(Tensor unitRange, string paramName)
    {
        ArgumentNullException.ThrowIfNull(unitRange, paramName);
        using var scope = NewDisposeScope();
        var t = unitRange;
        if (t.dim() == 4 && t.shape[0] == 1) t = t.squeeze(0);
        if (t.dim() != 3 || t.shape[0] != 3)
            throw new ArgumentException($"Expected a [3,H,W] tensor, got shape [{string.Join(",", unitRange.shape)}].", paramName);
        if (!t.is_floating_point())
            throw new ArgumentException($"Expected a floating-point tensor, got {t.dtype}.", paramName);
        int h = (int)t.shape[1], w = (int)t.shape[2];
        // One transfer to the CPU; HWC layout, rounding to the nearest byte.
        var hwc = t.detach().to(ScalarType.Float32).cpu().nan_to_num(0).clamp(0, 1).mul(255).round()
            .permute(1, 2, 0).contiguous().to(ScalarType.Byte);
        var bytes = hwc.data<byte>().ToArray();
        return (bytes, h, w);
    }
}
