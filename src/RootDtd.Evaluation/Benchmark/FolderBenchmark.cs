using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using RootDtd.Evaluation.Data;
using RootDtd.Evaluation.Sharding;
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

/// <summary>One image of a <see cref="FolderPlan"/>: the file, its mask file (or null) and its model class.</summary>
/// <param name="Image">The image file.</param>
/// <param name="Mask">Its mask file, or null without a mask folder.</param>
/// <param name="Label">The model's class index.</param>
public sealed record FolderSample(string Image, string? Mask, int Label);

/// <summary>
/// The samples of an image-folder benchmark in evaluation order, after the checks that read only file headers (the
/// image is readable, its mask exists and has its size). Sample <c>k</c> is the same image on every machine that
/// holds the same folder, so <c>--shard i/n</c> slices this list by index.
/// </summary>
/// <param name="Samples">The samples, round-robin over the classes (so that a cap keeps every class).</param>
/// <param name="HasMasks">True when a mask folder was given (every sample then has its mask).</param>
/// <param name="Notes">What was skipped and why, one line each.</param>
/// <param name="Digest">SHA-256 (12 hex digits) of the samples' paths relative to the folders and of their labels: equal
/// on two machines exactly when they evaluate the same list.</param>
public sealed record FolderPlan(IReadOnlyList<FolderSample> Samples, bool HasMasks, IReadOnlyList<string> Notes, string Digest);

/// <summary>Settings of <see cref="FolderBenchmark.Run"/>.</summary>
public sealed record FolderBenchmarkSettings
{
    /// <summary>Benchmark options (methods, protocols, normalisation, model name, data description).</summary>
    public BenchmarkOptions Options { get; init; } = new();

    /// <summary>Output folder of the report (and of the state file).</summary>
    public string OutputDirectory { get; init; } = "benchmark-output";

    /// <summary>File-name prefix of the report and the state file.</summary>
    public string Prefix { get; init; } = "model";

    /// <summary>This run's shard: index (0-based) and count; (0, 1) = every sample of the plan.</summary>
    public (int Index, int Count) Shard { get; init; } = (0, 1);

    /// <summary>
    /// Continue an interrupted run from the state file in <see cref="OutputDirectory"/>. Every run writes its state after
    /// every batch; an unsharded run without <c>Resume</c> removes it once the report is written, so only an interrupted run leaves it.
    /// </summary>
    public bool Resume { get; init; }

    /// <summary>Device of the model and the data (<c>cpu</c>, <c>cuda</c>, <c>cuda:K</c>); the caller checks that it exists. Default CPU.</summary>
    public string Device { get; init; } = "cpu";
}

/// <summary>
/// The benchmark on any labelled image folder: class subfolders (<see cref="ImageFolder"/>), each image resized and
/// centre-cropped by an <see cref="ImageLoader"/>, and optionally one mask PNG per image from a mask folder —
/// <c>MASKS/&lt;class&gt;/&lt;stem&gt;.png</c>, <c>MASKS/&lt;stem&gt;.png</c> or the VOC layout
/// <c>MASKS/SegmentationClass/&lt;stem&gt;.png</c> (or <c>SegmentationObject</c>). <see cref="Plan"/> lists the samples
/// (an image whose header cannot be read, whose mask is missing or of another size is left out and said so);
/// <see cref="Run"/> loads only the run's shard of them and evaluates it, resumably.
/// </summary>
public static class FolderBenchmark
{
    /// <summary>Lists the samples of a folder (reads file headers only, no pixels).</summary>
    /// <param name="folder">The scanned image folder.</param>
    /// <param name="classIndex">Model class index of each class name of <paramref name="folder"/>.</param>
    /// <param name="masksDirectory">The mask folder, or null (then localisation cannot be measured).</param>
    /// <param name="maxSamples">Keep at most this many images (taken round-robin over the classes so each stays represented), or null for all.</param>
    /// <exception cref="ArgumentException">No image is left to evaluate (the message says why).</exception>
    /// <exception cref="DirectoryNotFoundException">The mask folder does not exist.</exception>
    public static FolderPlan Plan(ImageFolder folder, IReadOnlyList<int> classIndex, string? masksDirectory, int? maxSamples = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(classIndex);
        if (classIndex.Count != folder.ClassNames.Count) throw new ArgumentException("One class index per class of the folder is needed.", nameof(classIndex));
        if (masksDirectory is not null && !Directory.Exists(masksDirectory)) throw new DirectoryNotFoundException($"The mask folder '{masksDirectory}' does not exist.");
        if (maxSamples is < 1) throw new ArgumentOutOfRangeException(nameof(maxSamples), maxSamples, "Must be ≥ 1.");
        var notes = folder.Notes.ToList();
        for (var c = 0; c < folder.ClassNames.Count; c++)
            if (folder.CountsPerClass[c] == 1) notes.Add($"class '{folder.ClassNames[c]}' has one image: its class means rest on that image alone");

        // Round-robin over the classes, so a sample cap keeps every class.
        var byClass = folder.ClassNames.Select((_, c) => new Queue<ImageFolderItem>(folder.Items.Where(i => i.Label == c))).ToList();
        var order = new List<ImageFolderItem>();
        while (byClass.Any(q => q.Count > 0))
            foreach (var q in byClass)
                if (q.Count > 0) order.Add(q.Dequeue());
        var samples = new List<FolderSample>();
        var digest = new StringBuilder();
        foreach (var item in order)
        {
            if (maxSamples is { } max && samples.Count >= max) break;
            var imageSize = ImageSizeOf(item.Path);
            if (imageSize is null)
            {
                notes.Add($"skipped '{item.Path}': it cannot be read as an image");
                continue;
            }
            string? maskPath = null;
            if (masksDirectory is not null)
            {
                maskPath = FindMask(masksDirectory, folder.ClassNames[item.Label], item.Path);
                if (maskPath is null)
                {
                    notes.Add($"skipped '{item.Path}': no mask (looked for {Path.GetFileNameWithoutExtension(item.Path)}.png in '{masksDirectory}', its class subfolder and SegmentationClass/)");
                    continue;
                }
                var maskSize = ImageSizeOf(maskPath);
                if (maskSize is null || imageSize != maskSize)
                {
                    notes.Add(string.Create(CultureInfo.InvariantCulture,
                        $"skipped '{item.Path}': its mask '{maskPath}' is {Describe(maskSize)}, the image is {Describe(imageSize)}; a mask must have the image's size"));
                    continue;
                }
            }
            samples.Add(new FolderSample(item.Path, maskPath, classIndex[item.Label]));
            digest.Append(Relative(folder.Root, item.Path)).Append('\t')
                  .Append(maskPath is null ? "" : Relative(masksDirectory!, maskPath)).Append('\t')
                  .Append(classIndex[item.Label].ToString(CultureInfo.InvariantCulture)).Append('\n');
        }
        if (samples.Count == 0)
            throw new ArgumentException($"No image of '{folder.Root}' is left to evaluate: {string.Join("; ", notes.TakeLast(5))}", nameof(folder));
        var hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(digest.ToString())))[..12].ToLowerInvariant();
        return new FolderPlan(samples, masksDirectory is not null, notes, hash);
    }

    private static string Relative(string root, string path) => Path.GetRelativePath(root, path).Replace('\\', '/');

    /// <summary>
    /// Loads samples <paramref name="start"/> … <paramref name="start"/> + <paramref name="count"/> − 1 of a plan. An
    /// image or mask whose pixels cannot be decoded (its header could be read) is left out with a note when
    /// <paramref name="skipUnreadable"/> (an unsharded run), and is an error otherwise (a shard: leaving it out would
    /// move every later sample of the dataset to another index).
    /// </summary>
    /// <param name="plan">The plan.</param>
    /// <param name="loader">Resize/crop/normalisation of the model.</param>
    /// <param name="start">First sample.</param>
    /// <param name="count">Samples.</param>
    /// <param name="skipUnreadable">Leave out what cannot be decoded (else throw).</param>
    /// <param name="cancellationToken">Checked before every image; a cancelled call throws <see cref="OperationCanceledException"/>.</param>
    /// <exception cref="ArgumentException">No image is left, or (without <paramref name="skipUnreadable"/>) one cannot be decoded.</exception>
    public static FolderData Load(FolderPlan plan, ImageLoader loader, int start, int count, bool skipUnreadable, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(loader);
        if (start < 0 || count < 0 || start + count > plan.Samples.Count)
            throw new ArgumentOutOfRangeException(nameof(count), count, string.Create(CultureInfo.InvariantCulture, $"Samples {start} … {start + count - 1} are not all in the plan's {plan.Samples.Count}."));
        var notes = new List<string>();
        var images = new List<Tensor>();
        var masks = new List<Tensor>();
        var labels = new List<long>();
        var files = new List<string>();
        void Skip(string note)
        {
            if (!skipUnreadable)
                throw new ArgumentException($"{note}. A shard cannot leave an image out (every later sample would move to another index): repair or remove the file and start all shards again.", nameof(plan));
            notes.Add(note);
        }
        try
        {
            foreach (var sample in plan.Samples.Skip(start).Take(count))
            {
                cancellationToken.ThrowIfCancellationRequested();
                Tensor? mask = null;
                if (sample.Mask is not null)
                {
                    try
                    {
                        mask = loader.LoadMask(sample.Mask);
                    }
                    catch (ImageLoadException e)
                    {
                        Skip($"skipped '{sample.Image}': its mask cannot be read: {e.Message}");
                        continue;
                    }
                }
                Tensor image;
                try
                {
                    image = loader.LoadTensor(sample.Image);
                }
                catch (ImageLoadException e)
                {
                    mask?.Dispose();
                    Skip($"skipped '{sample.Image}': {e.Message}");
                    continue;
                }
                if (images.Count > 0 && !image.shape.SequenceEqual(images[0].shape))
                {
                    var shape = $"[{string.Join(", ", image.shape)}]";
                    var others = $"[{string.Join(", ", images[0].shape)}]";
                    image.Dispose();
                    mask?.Dispose();
                    Skip($"skipped '{sample.Image}': after resizing and cropping it is {shape}, the others are {others} (give a square crop size)");
                    continue;
                }
                images.Add(image);
                masks.Add(mask ?? zeros(image.shape[1], image.shape[2], dtype: ScalarType.Int64));
                labels.Add(sample.Label);
                files.Add(sample.Image);
            }
            if (images.Count == 0)
                throw new ArgumentException($"No image is left to evaluate: {string.Join("; ", notes.TakeLast(5))}", nameof(plan));
            return new FolderData(stack(images), stack(masks), tensor(labels.ToArray()), files, plan.HasMasks, notes);
        }
        finally
        {
            foreach (var t in images) t.Dispose();
            foreach (var t in masks) t.Dispose();
        }
    }

    /// <summary>Lists and loads a whole folder (<see cref="Plan"/>, then <see cref="Load(FolderPlan, ImageLoader, int, int, bool, CancellationToken)"/> of every sample, leaving out what cannot be decoded).</summary>
    /// <param name="folder">The scanned image folder.</param>
    /// <param name="loader">Resize/crop/normalisation of the model.</param>
    /// <param name="classIndex">Model class index of each class name of <paramref name="folder"/>.</param>
    /// <param name="masksDirectory">The mask folder, or null.</param>
    /// <param name="maxSamples">Keep at most this many images, or null for all.</param>
    /// <exception cref="ArgumentException">No image is left to evaluate (the message says why).</exception>
    public static FolderData Load(ImageFolder folder, ImageLoader loader, IReadOnlyList<int> classIndex, string? masksDirectory, int? maxSamples = null)
    {
        var plan = Plan(folder, classIndex, masksDirectory, maxSamples);
        var data = Load(plan, loader, 0, plan.Samples.Count, skipUnreadable: true);
        return data with { Notes = plan.Notes.Concat(data.Notes).ToList() };
    }

    private static string Describe((int W, int H)? size) => size is { } s ? string.Create(CultureInfo.InvariantCulture, $"{s.W}×{s.H}") : "unreadable";

    private static (int W, int H)? ImageSizeOf(string path)
    {
        try
        {
            var info = SixLabors.ImageSharp.Image.Identify(path);
            return info is null ? null : (info.Width, info.Height);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SixLabors.ImageSharp.ImageFormatException or SixLabors.ImageSharp.UnknownImageFormatException or NotSupportedException)
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

    /// <summary>
    /// Runs (one shard of) the benchmark on a folder's plan: loads only the shard's samples (by index in the plan, in
    /// whole batches: <see cref="BenchmarkShard.Of"/>), evaluates them and writes the report (unsharded) or the state
    /// file that <c>rootdtd merge</c> combines (a shard of several). With <see cref="FolderBenchmarkSettings.Resume"/>
    /// it continues from the state file's last completed batch; the state is rewritten atomically after every batch.
    /// </summary>
    /// <param name="model">The model (any classifier); moved to <see cref="FolderBenchmarkSettings.Device"/>.</param>
    /// <param name="plan">The folder's samples.</param>
    /// <param name="loader">Resize/crop/normalisation of the model.</param>
    /// <param name="settings">Options, output, shard, resume, device.</param>
    /// <param name="log">Log lines, or null.</param>
    /// <param name="progress">Progress, or null.</param>
    /// <param name="cancellationToken">
    /// Checked while the images load and before every batch of the benchmark (see <see cref="ShardedBenchmark.Run"/>):
    /// an interrupted run writes no report and keeps its completed batches in the state file.
    /// </param>
    /// <exception cref="ArgumentException">Localisation was asked for without masks; no image is left; an image of a shard cannot be decoded.</exception>
    /// <exception cref="BenchmarkInterruptedException">Cancelled during the benchmark (the state file holds the completed batches).</exception>
    /// <exception cref="OperationCanceledException">Cancelled before the benchmark started (nothing was written).</exception>
    public static BenchmarkRunOutput Run(nn.Module<Tensor, Tensor> model, FolderPlan plan, ImageLoader loader, FolderBenchmarkSettings settings,
        TextWriter? log = null, IProgress<BenchmarkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(loader);
        ArgumentNullException.ThrowIfNull(settings);
        var options = settings.Options;
        if (!plan.HasMasks && options.Protocols.HasFlag(BenchmarkProtocols.Localization))
            throw new ArgumentException("Localisation needs masks: give a mask folder (one mask PNG per image, or the VOC layout), or leave localisation out of the protocols.", nameof(settings));
        var sharded = settings.Shard.Count > 1;
        var slice = BenchmarkShard.Of(settings.Shard.Index, settings.Shard.Count, plan.Samples.Count, options.BatchSize);
        var (statePath, resume) = ShardedBenchmark.OpenState(settings.OutputDirectory, settings.Prefix, settings.Shard, settings.Resume, log);
        var clock = Stopwatch.StartNew();
        // an unsharded run may leave out what cannot be decoded (its dataset is what loads); a shard may not
        using var cpu = slice.Length == 0
            ? new FolderData(zeros(0), zeros(0), zeros(0, dtype: ScalarType.Int64), Array.Empty<string>(), plan.HasMasks, Array.Empty<string>())
            : Load(plan, loader, slice.Start, slice.Length, skipUnreadable: !sharded, cancellationToken);
        var shard = sharded ? slice : BenchmarkShard.Whole(cpu.Files.Count);
        if (slice.Length == 0) log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"shard {slice.Index}/{slice.Count} has no samples ({plan.Samples.Count} samples in batches of {options.BatchSize})"));
        else log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"loaded {cpu.Files.Count} images in {clock.Elapsed.TotalSeconds:F1} s"));
        options = options with { DataNotes = options.DataNotes.Concat(plan.Notes).Concat(cpu.Notes).ToList() };
        var device = torch.device(settings.Device);
        if (device.type != DeviceType.CPU) model.to(device);
        using var images = device.type == DeviceType.CPU || slice.Length == 0 ? cpu.Images.alias() : cpu.Images.to(device);
        using var masks = device.type == DeviceType.CPU || slice.Length == 0 ? cpu.Masks.alias() : cpu.Masks.to(device);
        using var labels = device.type == DeviceType.CPU || slice.Length == 0 ? cpu.Labels.alias() : cpu.Labels.to(device);
        var runner = new BenchmarkRunner(model, options, progress, log);
        var output = ShardedBenchmark.Run(runner, options, images, masks, labels, shard, statePath, resume, settings.OutputDirectory, settings.Prefix, log,
            removeStateWhenComplete: settings.Shard.Count == 1 && !settings.Resume, cancellationToken);
        log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"benchmark of {shard.Length} images in {clock.Elapsed.TotalSeconds:F0} s"));
        return output;
    }
}
