using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Imaging;

/// <summary>
/// Per-channel RGB normalisation <c>x_norm = (x - mean) / std</c> of [0,1] pixels, its inverse,
/// and the pixel-space input bounds that box rules (z^B) need.
/// </summary>
public sealed class ImageNormalization
{
    private readonly float[] _mean;
    private readonly float[] _std;

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

    /// <summary>The ImageNet statistics: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).</summary>
    public static ImageNormalization ImageNet { get; } = new([0.485f, 0.456f, 0.406f], [0.229f, 0.224f, 0.225f]);

    /// <summary>No normalisation: mean 0, std 1 (tensors stay in [0,1]).</summary>
    public static ImageNormalization Identity { get; } = new([0f, 0f, 0f], [1f, 1f, 1f]);

    /// <summary>Mean = std = 0.5 per channel ([0,1] maps to [−1,1]; Chefer et al.'s ViT setting, and the committed synthetic models').</summary>
    public static ImageNormalization Half { get; } = new([0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]);

    /// <summary>Number of channels (always 3: R, G, B).</summary>
    public int Channels => 3;

    /// <summary>The per-channel mean as a [1,3,1,1] tensor of the given element type on the given device.</summary>
    /// <param name="dtype">Element type.</param>
    /// <param name="device">Target device.</param>
    public Tensor MeanTensor(ScalarType dtype, Device device) => tensor(_mean, new long[] { 1, 3, 1, 1 }).to(dtype, device);

    /// <summary>The per-channel standard deviation as a [1,3,1,1] tensor of the given element type on the given device.</summary>
    /// <param name="dtype">Element type.</param>
    /// <param name="device">Target device.</param>
    public Tensor StdTensor(ScalarType dtype, Device device) => tensor(_std, new long[] { 1, 3, 1, 1 }).to(dtype, device);

    /// <summary>Per-channel means (R, G, B).</summary>
    public IReadOnlyList<float> Mean => _mean;

    /// <summary>Per-channel standard deviations (R, G, B).</summary>
    public IReadOnlyList<float> Std => _std;

    /// <summary>Normalises [0,1] pixels: <c>(x - mean) / std</c>.</summary>
    /// <param name="unitRange">A [3,H,W] or [B,3,H,W] floating-point tensor with values in [0,1].</param>
    /// <returns>A new tensor of the same shape, dtype and device.</returns>
    public Tensor Normalize(Tensor unitRange)
    {
        using var scope = NewDisposeScope();
        var (mean, std) = ChannelTensors(unitRange, nameof(unitRange));
        return unitRange.sub(mean).div(std).MoveToOuterDisposeScope();
    }

    /// <summary>Inverts <see cref="Normalize"/>: <c>x * std + mean</c> (no clamping).</summary>
    /// <param name="normalized">A [3,H,W] or [B,3,H,W] floating-point tensor.</param>
    /// <returns>A new tensor of the same shape, dtype and device, nominally in [0,1].</returns>
    public Tensor Denormalize(Tensor normalized)
    {
        using var scope = NewDisposeScope();
        var (mean, std) = ChannelTensors(normalized, nameof(normalized));
        return normalized.mul(std).add(mean).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The lowest normalised value a pixel can take, <c>(0 - mean) / std</c> per channel.
    /// Without <paramref name="like"/> the result is a float32 CPU tensor of shape [1,3,1,1];
    /// with it, the result has its dtype and device and a shape that broadcasts against it
    /// ([3,1,1] for a [3,H,W] tensor, [1,3,1,1] for a [B,3,H,W] tensor).
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

    /// <summary>Normalises one [0,1] value of channel <paramref name="channel"/>.</summary>
    internal float NormalizeValue(int channel, float unit) => (unit - _mean[channel]) / _std[channel];

    /// <inheritdoc />
    public override string ToString() =>
        $"mean=({_mean[0]}, {_mean[1]}, {_mean[2]}), std=({_std[0]}, {_std[1]}, {_std[2]})";

    private Tensor Bound(float pixel, Tensor? like)
    {
        var values = new float[3];
        for (int c = 0; c < 3; c++) values[c] = (pixel - _mean[c]) / _std[c];
        if (like is null) return tensor(values, new long[] { 1, 3, 1, 1 });
        using var scope = NewDisposeScope();
        var shape = like.dim() == 3 ? new long[] { 3, 1, 1 } : new long[] { 1, 3, 1, 1 };
        if (like.dim() is not (3 or 4))
            throw new ArgumentException($"Expected a [3,H,W] or [B,3,H,W] tensor, got shape [{string.Join(",", like.shape)}].", nameof(like));
        return tensor(values, shape).to(like.dtype, like.device).MoveToOuterDisposeScope();
    }

    private (Tensor Mean, Tensor Std) ChannelTensors(Tensor input, string paramName)
    {
        ArgumentNullException.ThrowIfNull(input, paramName);
        bool ok = (input.dim() == 3 && input.shape[0] == 3) || (input.dim() == 4 && input.shape[1] == 3);
        if (!ok)
            throw new ArgumentException($"Expected a [3,H,W] or [B,3,H,W] tensor, got shape [{string.Join(",", input.shape)}].", paramName);
        if (!input.is_floating_point())
            throw new ArgumentException($"Expected a floating-point tensor, got {input.dtype}.", paramName);
        var shape = input.dim() == 3 ? new long[] { 3, 1, 1 } : new long[] { 1, 3, 1, 1 };
        var mean = tensor(_mean, shape).to(input.dtype, input.device);
        var std = tensor(_std, shape).to(input.dtype, input.device);
        return (mean, std);
    }
}
