using System.Globalization;
using TorchSharp;

namespace RootDtd.Cli.Commands;

/// <summary>Checks a <c>--device</c> value (<c>cpu</c>, <c>cuda</c>, <c>cuda:K</c>) against the machine.</summary>
internal static class DeviceOption
{
    /// <summary>The normalised device text; a usage error for a malformed value, a failure when CUDA or device K is missing.</summary>
    public static string Resolve(string text)
    {
        var device = text.Trim().ToLowerInvariant();
        if (!(device == "cpu" || device == "cuda" || (device.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(device[5..], NumberStyles.None, CultureInfo.InvariantCulture, out _))))
            throw new UsageException($"--device must be cpu, cuda or cuda:K, was '{text}'.");
        if (device == "cpu") return device;
        if (!torch.cuda.is_available())
            throw new CliFailureException($"CUDA was requested (--device {device}) but is not available: this rootdtd uses TorchSharp's CPU backend or no CUDA GPU/driver was found. Use --device cpu (see docs/cuda.md).");
        var index = device == "cuda" ? 0 : int.Parse(device[5..], CultureInfo.InvariantCulture);
        if (index >= torch.cuda.device_count())
            throw new CliFailureException($"--device {device}: there are only {torch.cuda.device_count()} CUDA device(s).");
        return device;
    }
}
