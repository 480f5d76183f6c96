using System.Diagnostics;
using System.Globalization;
using RootDtd.Evaluation.Data;
using RootDtd.Imaging;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Benchmark;

/// <summary>An image folder loaded for the benchmark: images, labels, masks, and what was skipped.</summary>
/// <param name="Images">Normalised images [N,3,H,W] (CPU, float32).</param>
/// <param name="Masks">Masks [N,H,W] int64 (0 background, 255 ignore, other foreground); all zero without a mask folder.</param>
/// <param name="Labels">Model class indices [N] int64.</param>
/// <param name="Files">The image file of each sample.</param>
/// <param name="HasMasks">True when every sample has its mask.</param>
/// <param name="Notes">What was skipped and why, one line each.</param>
public sealed record FolderData(Tensor Images, Tensor Masks, Tensor Labels, IReadOnlyList<string> Files, bool HasMasks, IReadOnlyList<string> Notes) : IDisposable
{
    /// <inheritdoc />
    public void Dispose()
    {
        Images.Dispose();
        Masks.Dispose();
        Labels.Dispose();
    }
}

/// <summary>
/// Loads any labelled image folder for <see cref="BenchmarkRunner"/>: class subfolders (<see cref="ImageFolder"/>),
/// each image resized and centre-cropped by an <see cref="ImageLoader"/>, and optionally one mask PNG per image from a
/// mask folder — <c>MASKS/&lt;class&gt;/&lt;stem&gt;.png</c>, <c>MASKS/&lt;stem&gt;.png</c> or the VOC layout
/// <c>MASKS/SegmentationClass/&lt;stem&gt;.png</c> (or <c>SegmentationObject</c>). An image whose mask is missing or
/// of another size than the image is left out, and said so in <see cref="FolderData.Notes"/>; so is an image that
/// cannot be read and a class with a single image.
/// </summary>
public static class FolderBenchmark
{
    /// <summary>Loads the folder.</summary>
    /// <param name="folder">The scanned image folder.</param>
    /// <param name="loader">Resize/crop/normalisation of the model.</param>
    /// <param name="classIndex">Model class index of each class name of <paramref name="folder"/>.</param>
    /// <param name="masksDirectory">The mask folder, or null (then localisation cannot be measured).</param>
    /// <param name="maxSamples">Keep at most this many images (taken round-robin over the classes so each stays represented), or null for all.</param>
    /// <exception cref="ArgumentException">No image is left to evaluate (the message says why).</exception>
    public static FolderData Load(ImageFolder folder, ImageLoader loader, IReadOnlyList<int> classIndex, string? masksDirectory, int? maxSamples = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(loader);
        ArgumentNullException.ThrowIfNull(classIndex);
        if (classIndex.Count != folder.ClassNames.Count) throw new ArgumentException("One class index per class of the folder is needed.", nameof(classIndex));
        if (masksDirectory is not null && !Directory.Exists(masksDirectory)) throw new DirectoryNotFoundException($"The mask folder '{masksDirectory}' does not exist.");
        var notes = folder.Notes.ToList();
        for (var c = 0; c < folder.ClassNames.Count; c++)
            if (folder.CountsPerClass[c] == 1) notes.Add($"class '{folder.ClassNames[c]}' has one image: its class means rest on that image alone");

        // Round-robin over the classes, so a sample cap keeps every class.
        var byClass = folder.ClassNames.Select((_, c) => new Queue<ImageFolderItem>(folder.Items.Where(i => i.Label == c))).ToList();
        var order = new List<ImageFolderItem>();
        while (byClass.Any(q => q.Count > 0))
            foreach (var q in byClass)
                if (q.Count > 0) order.Add(q.Dequeue());
        var images = new List<Tensor>();
        var masks = new List<Tensor>();
        var labels = new List<long>();
        var files = new List<string>();
        try
        {
            foreach (var item in order)
            {
                if (maxSamples is { } max && images.Count >= max) break;
                Tensor? mask = null;
                if (masksDirectory is not null)
                {
                    var maskPath = FindMask(masksDirectory, folder.ClassNames[item.Label], item.Path);
                    if (maskPath is null)
                    {
                        notes.Add($"skipped '{item.Path}': no mask (looked for {Path.GetFileNameWithoutExtension(item.Path)}.png in '{masksDirectory}', its class subfolder and SegmentationClass/)");
                        continue;
                    }
                    var imageSize = ImageSizeOf(item.Path);
                    var maskSize = ImageSizeOf(maskPath);
                    if (imageSize is null || maskSize is null || imageSize != maskSize)
                    {
                        notes.Add(string.Create(CultureInfo.InvariantCulture,
                            $"skipped '{item.Path}': its mask '{maskPath}' is {Describe(maskSize)}, the image is {Describe(imageSize)}; a mask must have the image's size"));
                        continue;
                    }
                    try
                    {
                        mask = loader.LoadMask(maskPath);
                    }
                    catch (ImageLoadException e)
                    {
                        notes.Add($"skipped '{item.Path}': its mask cannot be read: {e.Message}");
                        continue;
                    }
                }
                Tensor image;
                try
                {
                    image = loader.LoadTensor(item.Path);
                }
                catch (ImageLoadException e)
                {
                    mask?.Dispose();
                    notes.Add($"skipped '{item.Path}': {e.Message}");
                    continue;
                }
                if (images.Count > 0 && !image.shape.SequenceEqual(images[0].shape))
                {
                    notes.Add($"skipped '{item.Path}': after resizing and cropping it is [{string.Join(", ", image.shape)}], the others are [{string.Join(", ", images[0].shape)}] (give a square crop size)");
                    image.Dispose();
                    mask?.Dispose();
                    continue;
                }
                images.Add(image);
                masks.Add(mask ?? zeros(image.shape[1], image.shape[2], dtype: ScalarType.Int64));
                labels.Add(classIndex[item.Label]);
                files.Add(item.Path);
            }
            if (images.Count == 0)
                throw new ArgumentException($"No image of '{folder.Root}' is left to evaluate: {string.Join("; ", notes.TakeLast(5))}", nameof(folder));
            return new FolderData(stack(images), stack(masks), tensor(labels.ToArray()), files, masksDirectory is not null, notes);
        }
        finally
        {
            foreach (var t in images) t.Dispose();
            foreach (var t in masks) t.Dispose();
        }
    }

    private static string Describe((int W, int H)? size) => size is { } s ? string.Create(CultureInfo.InvariantCulture, $"{s.W}×{s.H}") : "unreadable";

    private static (int W, int H)? ImageSizeOf(string path)
    {
        try
        {
            var info = SixLabors.ImageSharp.Image.Identify(path);
            return info is null ? null : (info.Width, info.Height);
        }
        catch (Exception e) when (e is IOException or SixLabors.ImageSharp.ImageFormatException or SixLabors.ImageSharp.UnknownImageFormatException or NotSupportedException)
        {
            return null;
        }
    }

    /// <summary>The mask file of an image, or null: <c>MASKS/&lt;class&gt;/&lt;stem&gt;.png</c>, <c>MASKS/&lt;stem&gt;.png</c>, <c>MASKS/SegmentationClass/&lt;stem&gt;.png</c>, <c>MASKS/SegmentationObject/&lt;stem&gt;.png</c>.</summary>
    /// <param name="masksDirectory">The mask folder.</param>
    /// <param name="className">The image's class folder name.</param>
    /// <param name="imagePath">The image.</param>
    public static string? FindMask(string masksDirectory, string className, string imagePath)
    {
        var stem = Path.GetFileNameWithoutExtension(imagePath) + ".png";
        foreach (var candidate in new[]
                 {
                     Path.Combine(masksDirectory, className, stem), Path.Combine(masksDirectory, stem),
                     Path.Combine(masksDirectory, "SegmentationClass", stem), Path.Combine(masksDirectory, "SegmentationObject", stem),
                 })
            if (File.Exists(candidate)) return candidate;
        return null;
    }

    /// <summary>Runs the benchmark on a loaded folder and writes the report.</summary>
    /// <param name="model">The model (any classifier).</param>
    /// <param name="data">The loaded folder.</param>
    /// <param name="options">Benchmark options (methods, protocols, normalisation, model name, data description).</param>
    /// <param name="outputDirectory">Report folder.</param>
    /// <param name="prefix">File-name prefix.</param>
    /// <param name="log">Log lines, or null.</param>
    /// <param name="progress">Progress, or null.</param>
    /// <exception cref="ArgumentException">Localisation was asked for without masks.</exception>
    public static (BenchmarkResult Result, BenchmarkFiles Files) Run(nn.Module<Tensor, Tensor> model, FolderData data, BenchmarkOptions options, string outputDirectory, string prefix,
        TextWriter? log = null, IProgress<BenchmarkProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        if (!data.HasMasks && options.Protocols.HasFlag(BenchmarkProtocols.Localization))
            throw new ArgumentException("Localisation needs masks: give a mask folder (one mask PNG per image, or the VOC layout), or leave localisation out of the protocols.", nameof(options));
        var clock = Stopwatch.StartNew();
        var runner = new BenchmarkRunner(model, options with { DataNotes = options.DataNotes.Concat(data.Notes).ToList() }, progress, log);
        var result = runner.Run(data.Images, data.Masks, data.Labels);
        log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"benchmark of {data.Files.Count} images in {clock.Elapsed.TotalSeconds:F0} s"));
        return (result, BenchmarkReport.Write(result, outputDirectory, prefix));
    }
}
