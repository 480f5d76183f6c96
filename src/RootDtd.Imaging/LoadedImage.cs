using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace RootDtd.Imaging;

/// <summary>
/// An image loaded by <see cref="ImageLoader"/>: the normalised model input and the RGB image it was made from
/// (after resizing and cropping), for display and overlays. Owns both; dispose it when done.
/// </summary>
public sealed class LoadedImage : IDisposable
{
    internal LoadedImage(string sourcePath, Image<Rgb24> displayImage, Tensor normalized, ImageNormalization normalization)
    {
        SourcePath = sourcePath;
        DisplayImage = displayImage;
        Normalized = normalized;
        Normalization = normalization;
    }

    /// <summary>The file path (or source name) the image came from.</summary>
    public string SourcePath { get; }

    /// <summary>The resized and cropped RGB image (what the model sees, before normalisation).</summary>
    public Image<Rgb24> DisplayImage { get; }

    /// <summary>The normalised float32 CPU tensor [3,H,W]. Not part of any dispose scope; disposed with this object.</summary>
    public Tensor Normalized { get; }

    /// <summary>The normalisation that produced <see cref="Normalized"/>.</summary>
    public ImageNormalization Normalization { get; }

    /// <summary>Image width in pixels.</summary>
    public int Width => DisplayImage.Width;

    /// <summary>Image height in pixels.</summary>
    public int Height => DisplayImage.Height;

    /// <summary>A new float32 tensor [3,H,W] with the un-normalised pixels in [0,1].</summary>
    public Tensor ToUnitTensor() => ImageTensorConversion.ToUnitTensor(DisplayImage);

    /// <summary>A new normalised batch of one, [1,3,H,W], ready for a model.</summary>
    public Tensor ToBatch() => Normalized.unsqueeze(0);

    /// <summary>Lower pixel-space bound of the normalised input, <c>(0 - mean) / std</c>, shaped [1,3,1,1].</summary>
    public Tensor LowerBound() => Normalization.LowerBound();

    /// <summary>Upper pixel-space bound of the normalised input, <c>(1 - mean) / std</c>, shaped [1,3,1,1].</summary>
    public Tensor UpperBound() => Normalization.UpperBound();

    /// <summary>Disposes the tensor and the image.</summary>
    public void Dispose()
    {
        Normalized.Dispose();
        DisplayImage.Dispose();
    }
}
