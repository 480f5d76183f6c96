using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Rules.RootInference.Published;

/// <summary>
/// The structural similarity index of two [B, C, H, W] maps as the <c>pytorch_ssim</c> package bundled with the
/// published root-inference code computes it: an 11×11 Gaussian window (σ = 1.5, normalised to sum 1) applied to
/// every channel separately with zero padding 5 (so the map keeps its size and borders see zeros), the fixed constants
/// <c>C1 = 0.01²</c> and <c>C2 = 0.03²</c> (not scaled by the data range), and
/// <c>SSIM = (2μ₁μ₂ + C1)(2σ₁₂ + C2) / ((μ₁² + μ₂² + C1)(σ₁² + σ₂² + C2))</c> per position, averaged.
/// Differentiable with respect to both maps.
/// </summary>
public static class Ssim
{
    /// <summary>Side of the square Gaussian window.</summary>
    public const int WindowSize = 11;

    /// <summary>Standard deviation of the Gaussian window.</summary>
    public const double Sigma = 1.5;

    /// <summary>The luminance constant 0.01².</summary>
    public const double C1 = 0.01 * 0.01;

    /// <summary>The contrast constant 0.03².</summary>
    public const double C2 = 0.03 * 0.03;

    /// <summary>
    /// The depthwise window [channels, 1, 11, 11]: the normalised 1-D Gaussian's outer product with itself, built in
    /// float32 as the reference does and then converted to <paramref name="dtype"/>.
    /// </summary>
    public static Tensor Window(long channels, ScalarType dtype, Device device)
    {
        using var scope = torch.NewDisposeScope();
        var g = new float[WindowSize];
        for (var i = 0; i < WindowSize; i++)
        {
            var d = i - WindowSize / 2;
            g[i] = (float)Math.Exp(-(d * d) / (2 * Sigma * Sigma));
        }
        var g1 = torch.tensor(g, dtype: ScalarType.Float32);
        g1 = g1 / g1.sum();
        var w2 = g1.unsqueeze(1).mm(g1.unsqueeze(0));
        return w2.expand(channels, 1, WindowSize, WindowSize).contiguous().to(dtype).to(device).MoveToOuterDisposeScope();
    }

    /// <summary>The SSIM map [B, C, H, W] of <paramref name="a"/> against <paramref name="b"/>.</summary>
    public static Tensor Map(Tensor a, Tensor b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.dim() != 4 || !a.shape.SequenceEqual(b.shape))
            throw new ArgumentException($"SSIM needs two maps of the same shape [B, C, H, W]; got [{string.Join(", ", a.shape)}] and [{string.Join(", ", b.shape)}].");
        using var scope = torch.NewDisposeScope();
        var channels = a.shape[1];
        var window = Window(channels, a.dtype, a.device);
        var pad = new long[] { WindowSize / 2, WindowSize / 2 };
        Tensor Blur(Tensor t) => F.conv2d(t, window, null, new long[] { 1, 1 }, pad, new long[] { 1, 1 }, channels);
        var mu1 = Blur(a);
        var mu2 = Blur(b);
        var mu1Sq = mu1 * mu1;
        var mu2Sq = mu2 * mu2;
        var mu12 = mu1 * mu2;
        var sigma1Sq = Blur(a * a) - mu1Sq;
        var sigma2Sq = Blur(b * b) - mu2Sq;
        var sigma12 = Blur(a * b) - mu12;
        var map = (2 * mu12 + C1) * (2 * sigma12 + C2) / ((mu1Sq + mu2Sq + C1) * (sigma1Sq + sigma2Sq + C2));
        return map.MoveToOuterDisposeScope();
    }

    /// <summary>The mean SSIM of every sample, shape [B] (the reference's <c>size_average=False</c>).</summary>
    public static Tensor PerSample(Tensor a, Tensor b)
    {
        using var scope = torch.NewDisposeScope();
        var m = Map(a, b);
        return m.reshape(m.shape[0], -1).mean(new long[] { 1 }).MoveToOuterDisposeScope();
    }

    /// <summary>The mean SSIM over the whole batch, a scalar (the reference's default, <c>size_average=True</c>).</summary>
    public static Tensor Mean(Tensor a, Tensor b)
    {
        using var scope = torch.NewDisposeScope();
        return Map(a, b).mean().MoveToOuterDisposeScope();
    }
}
