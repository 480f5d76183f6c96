using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using RootDtd.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Imaging;

/// <summary>
/// The normalisation of [0,1] RGB pixels into a model's input, <c>x_norm = (order(x) - mean) / std</c>, its inverse,
/// and the pixel-space input bounds that box rules (z^B) need. The mean is per channel (torchvision's ImageNet
/// statistics) or a per-pixel mean image (Caffe/CNTK models, <see cref="FromMeanImage"/>); <c>order</c> is the
/// identity (RGB) or the reversal of the channels (BGR).
/// </summary>
public sealed class ImageNormalization
{
    private readonly float[] _mean;
    private readonly float[] _std;
    private readonly float[]? _meanImage;
    private readonly int _meanImageHeight;
    private readonly int _meanImageWidth;

    /// <summary>Creates a normalisation from three means and three positive standard deviations (R, G, B).</summary>
    /// <param name="mean">Per-channel mean of the [0,1] pixels.</param>
    /// <param name="std">Per-channel standard deviation (must be finite and positive).</param>
    public ImageNormalization(IReadOnlyList<float> mean, IReadOnlyList<float> std)
    {
        ArgumentNullException.ThrowIfNull(mean);
        ArgumentNullException.ThrowIfNull(std);
        if (mean.Count != 3) throw new ArgumentException($"Expected 3 channel means, got {mean.Count}.", nameof(mean));
        if (std.Count != 3) throw new ArgumentException($"Expected 3 channel standard deviations, got {std.Count}.", nameof(std));
        if (mean.Any(m => !float.IsFinite(m))) throw new ArgumentException("Means must be finite.", nameof(mean));
        if (std.Any(s => !float.IsFinite(s) || s <= 0)) throw new ArgumentException("Standard deviations must be finite and positive.", nameof(std));
        _mean = mean.ToArray();
        _std = std.ToArray();
    }

    private ImageNormalization(float[] meanImageUnit, int height, int width, float std, ChannelOrder order)
    {
        _meanImage = meanImageUnit;
        _meanImageHeight = height;
        _meanImageWidth = width;
        ChannelOrder = order;
        var plane = height * width;
        _mean = new float[3];
        for (var c = 0; c < 3; c++)
        {
            double sum = 0;
            for (var i = 0; i < plane; i++) sum += meanImageUnit[c * plane + i];
            _mean[c] = (float)(sum / plane);
        }
        _std = new[] { std, std, std };
    }

    /// <summary>
    /// A Caffe/CNTK-style normalisation: <c>x_norm = 255 · order(x) - meanImage</c>, i.e. 0–255 pixels in the model's
    /// channel order minus a per-pixel mean image. Inputs must then be exactly the mean image's size.
    /// </summary>
    /// <param name="meanImage">The mean image [3,H,W] in the model's channel order, 0–255 units (any device; copied).</param>
    /// <param name="order">The model's channel order: <see cref="ChannelOrder.Bgr"/> reverses the RGB channels before the subtraction.</param>
    /// <exception cref="ArgumentException">The mean image is not a finite [3,H,W] tensor.</exception>
    public static ImageNormalization FromMeanImage(Tensor meanImage, ChannelOrder order)
    {
        ArgumentNullException.ThrowIfNull(meanImage);
        if (meanImage.dim() != 3 || meanImage.shape[0] != 3)
            throw new ArgumentException($"Expected a [3,H,W] mean image, got shape [{string.Join(",", meanImage.shape)}].", nameof(meanImage));
        using var scope = NewDisposeScope();
        var unit = meanImage.detach().to(ScalarType.Float32).cpu().div(255f).contiguous();
        if (!unit.isfinite().all().item<bool>()) throw new ArgumentException("The mean image has non-finite values.", nameof(meanImage));
        return new ImageNormalization(unit.data<float>().ToArray(), (int)meanImage.shape[1], (int)meanImage.shape[2], 1f / 255f, order);
    }

    /// <summary>
    /// The preprocessing of the ImageNet ResNet18 of ML.NET's NuGet package (<see cref="CntkResNet18"/>): 0–255 pixels
    /// minus the package's 224×224 mean image, in RGB order for the default (RGB) model or BGR for the original weights.
    /// The mean image is read from the converted-weights cache (converting the package on first use).
    /// </summary>
    /// <param name="order">The model's channel order (must match the <see cref="CntkResNet18Options.ChannelOrder"/> it was built with).</param>
    /// <param name="options">Where the package and cache are (null: defaults).</param>
    public static ImageNormalization CntkResNet18(ChannelOrder order = ChannelOrder.Rgb, CntkResNet18Options? options = null)
    {
        var o = new CntkResNet18Options
        {
            PackagesDirectory = options?.PackagesDirectory,
            CacheDirectory = options?.CacheDirectory,
            RestoreIfMissing = options?.RestoreIfMissing ?? true,
            NuGetConfigFile = options?.NuGetConfigFile,
            ChannelOrder = order,
        };
        using var mean = RootDtd.Models.CntkResNet18.MeanImage(o);
        return FromMeanImage(mean, order);
    }

    /// <summary>
    /// The normalisation a zoo model expects: <see cref="CntkResNet18(ChannelOrder, CntkResNet18Options?)"/> for
    /// <c>resnet18-imagenet-cntk</c>, null for every other architecture (whose preprocessing the caller chooses,
    /// usually <see cref="ImageNet"/>).
    /// </summary>
    /// <param name="architecture">A <see cref="ModelZoo"/> name.</param>
    public static ImageNormalization? ForArchitecture(string architecture) =>
        string.Equals(architecture?.Trim(), RootDtd.Models.CntkResNet18.ModelName, StringComparison.OrdinalIgnoreCase) ? CntkResNet18() : null;

    /// <summary>The model's channel order (<see cref="ChannelOrder.Rgb"/> unless made by <see cref="FromMeanImage"/> with BGR).</summary>
    public ChannelOrder ChannelOrder { get; } = ChannelOrder.Rgb;

    /// <summary>True when the mean is a per-pixel image (then inputs must be <see cref="MeanImageHeight"/>×<see cref="MeanImageWidth"/>).</summary>
    public bool HasMeanImage => _meanImage is not null;

    /// <summary>Height of the mean image (0 without one).</summary>
    public int MeanImageHeight => _meanImageHeight;

    /// <summary>Width of the mean image (0 without one).</summary>
    public int MeanImageWidth => _meanImageWidth;

    /// <summary>The ImageNet statistics: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).</summary>
    public static ImageNormalization ImageNet { get; } = new([0.485f, 0.456f, 0.406f], [0.229f, 0.224f, 0.225f]);

    /// <summary>No normalisation: mean 0, std 1 (tensors stay in [0,1]).</summary>
    public static ImageNormalization Identity { get; } = new([0f, 0f, 0f], [1f, 1f, 1f]);

    /// <summary>Mean = std = 0.5 per channel ([0,1] maps to [−1,1]; Chefer et al.'s ViT setting, and the committed synthetic models').</summary>
    public static ImageNormalization Half { get; } = new([0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]);

    /// <summary>Number of channels (always 3: R, G, B).</summary>
    public int Channels => 3;

    /// <summary>
    /// The mean in [0,1] units as a [1,3,1,1] tensor (per channel) or a [1,3,H,W] tensor (a mean image), in the model's
    /// channel order, of the given element type on the given device.
    /// </summary>
    /// <param name="dtype">Element type.</param>
    /// <param name="device">Target device.</param>
    public Tensor MeanTensor(ScalarType dtype, Device device) => _meanImage is null
        ? tensor(_mean, new long[] { 1, 3, 1, 1 }).to(dtype, device)
        : tensor(_meanImage, new long[] { 1, 3, _meanImageHeight, _meanImageWidth }).to(dtype, device);

    /// <summary>The per-channel standard deviation as a [1,3,1,1] tensor of the given element type on the given device.</summary>
    /// <param name="dtype">Element type.</param>
    /// <param name="device">Target device.</param>
    public Tensor StdTensor(ScalarType dtype, Device device) => tensor(_std, new long[] { 1, 3, 1, 1 }).to(dtype, device);

    /// <summary>Per-channel means in the model's channel order (for a mean image: its spatial average).</summary>
    public IReadOnlyList<float> Mean => _mean;

    /// <summary>Per-channel standard deviations in the model's channel order.</summary>
    public IReadOnlyList<float> Std => _std;

    /// <summary>Normalises [0,1] RGB pixels: <c>(order(x) - mean) / std</c>.</summary>
    /// <param name="unitRange">A [3,H,W] or [B,3,H,W] floating-point tensor with values in [0,1], RGB.</param>
    /// <returns>A new tensor of the same shape, dtype and device.</returns>
    public Tensor Normalize(Tensor unitRange)
    {
        using var scope = NewDisposeScope();
        var (mean, std) = ChannelTensors(unitRange, nameof(unitRange));
        var ordered = ChannelOrder == ChannelOrder.Bgr ? unitRange.flip(unitRange.dim() - 3) : unitRange;
        return ordered.sub(mean).div(std).MoveToOuterDisposeScope();
    }

    /// <summary>Inverts <see cref="Normalize"/>: <c>order⁻¹(x * std + mean)</c> (no clamping), RGB.</summary>
    /// <param name="normalized">A [3,H,W] or [B,3,H,W] floating-point tensor.</param>
    /// <returns>A new tensor of the same shape, dtype and device, nominally in [0,1].</returns>
    public Tensor Denormalize(Tensor normalized)
    {
        using var scope = NewDisposeScope();
        var (mean, std) = ChannelTensors(normalized, nameof(normalized));
        var unit = normalized.mul(std).add(mean);
        if (ChannelOrder == ChannelOrder.Bgr) unit = unit.flip(normalized.dim() - 3);
        return unit.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The lowest normalised value a pixel can take, <c>(0 - mean) / std</c> per channel (per pixel with a mean image).
    /// Without <paramref name="like"/> the result is a float32 CPU tensor of shape [1,3,1,1] ([1,3,H,W] with a mean image);
    /// with it, the result has its dtype and device and a shape that broadcasts against it
    /// ([3,1,1] for a [3,H,W] tensor, [1,3,1,1] for a [B,3,H,W] tensor; [3,H,W] / [1,3,H,W] with a mean image).
    /// </summary>
    /// <param name="like">Optional input tensor whose dtype, device and rank the bounds should match.</param>
    public Tensor LowerBound(Tensor? like = null) => Bound(0f, like);

    /// <summary>The highest normalised value a pixel can take, <c>(1 - mean) / std</c>; shaped like <see cref="LowerBound"/>.</summary>
    /// <param name="like">Optional input tensor whose dtype, device and rank the bounds should match.</param>
    public Tensor UpperBound(Tensor? like = null) => Bound(1f, like);

    /// <summary>Converts a normalised [3,H,W] tensor back to an RGB image (denormalise, clamp to [0,1], round to bytes).</summary>
    /// <param name="normalized">A [3,H,W] (or [1,3,H,W]) floating-point tensor on any device.</param>
    public Image<Rgb24> ToImage(Tensor normalized)
    {
        using var scope = NewDisposeScope();
        return ImageTensorConversion.ToImage(Denormalize(normalized));
    }

    /// <summary>Converts a normalised [3,H,W] tensor back to interleaved RGB bytes (H·W·3, row-major).</summary>
    /// <param name="normalized">A [3,H,W] (or [1,3,H,W]) floating-point tensor on any device.</param>
    public byte[] ToRgbBytes(Tensor normalized)
    {
        using var scope = NewDisposeScope();
        return ImageTensorConversion.ToRgbBytes(Denormalize(normalized));
    }

    /// <summary>True when a per-channel lookup table (<see cref="NormalizeValue"/>) is the whole normalisation (RGB, no mean image).</summary>
    internal bool IsPerChannel => _meanImage is null && ChannelOrder == ChannelOrder.Rgb;

    /// <summary>Normalises one [0,1] value of channel <paramref name="channel"/> (only when <see cref="IsPerChannel"/>).</summary>
    internal float NormalizeValue(int channel, float unit) => (unit - _mean[channel]) / _std[channel];

    /// <inheritdoc />
    public override string ToString() => _meanImage is null
        ? $"mean=({_mean[0]}, {_mean[1]}, {_mean[2]}), std=({_std[0]}, {_std[1]}, {_std[2]})"
        : string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"{ChannelOrder.ToString().ToUpperInvariant()} 0-255 minus a {_meanImageHeight}x{_meanImageWidth} mean image (channel means {_mean[0] * 255:F2}, {_mean[1] * 255:F2}, {_mean[2] * 255:F2})");

    private Tensor Bound(float pixel, Tensor? like)
    {
        if (like is not null && like.dim() is not (3 or 4))
            throw new ArgumentException($"Expected a [3,H,W] or [B,3,H,W] tensor, got shape [{string.Join(",", like.shape)}].", nameof(like));
        using var scope = NewDisposeScope();
        Tensor result;
        if (_meanImage is null)
        {
            var values = new float[3];
            for (int c = 0; c < 3; c++) values[c] = (pixel - _mean[c]) / _std[c];
            result = tensor(values, like?.dim() == 3 ? new long[] { 3, 1, 1 } : new long[] { 1, 3, 1, 1 });
        }
        else
        {
            result = tensor(_meanImage, new long[] { 1, 3, _meanImageHeight, _meanImageWidth }).neg().add(pixel).div(_std[0]);
            if (like?.dim() == 3) result = result.squeeze(0);
        }
        if (like is not null) result = result.to(like.dtype, like.device);
        return result.MoveToOuterDisposeScope();
    }

    private (Tensor Mean, Tensor Std) ChannelTensors(Tensor input, string paramName)
    {
        ArgumentNullException.ThrowIfNull(input, paramName);
        bool ok = (input.dim() == 3 && input.shape[0] == 3) || (input.dim() == 4 && input.shape[1] == 3);
        if (!ok)
            throw new ArgumentException($"Expected a [3,H,W] or [B,3,H,W] tensor, got shape [{string.Join(",", input.shape)}].", paramName);
        if (!input.is_floating_point())
            throw new ArgumentException($"Expected a floating-point tensor, got {input.dtype}.", paramName);
        if (_meanImage is not null && (input.shape[^2] != _meanImageHeight || input.shape[^1] != _meanImageWidth))
            throw new ArgumentException(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"This normalisation subtracts a {_meanImageHeight}x{_meanImageWidth} mean image, so images must be {_meanImageHeight}x{_meanImageWidth}; got {input.shape[^2]}x{input.shape[^1]} (crop or resize to {_meanImageHeight})."), paramName);
        var shape = input.dim() == 3 ? new long[] { 3, 1, 1 } : new long[] { 1, 3, 1, 1 };
        var mean = _meanImage is null ? tensor(_mean, shape).to(input.dtype, input.device)
            : tensor(_meanImage, input.dim() == 3 ? new long[] { 3, _meanImageHeight, _meanImageWidth } : new long[] { 1, 3, _meanImageHeight, _meanImageWidth }).to(input.dtype, input.device);
        var std = tensor(_std, shape).to(input.dtype, input.device);
        return (mean, std);
    }
}
