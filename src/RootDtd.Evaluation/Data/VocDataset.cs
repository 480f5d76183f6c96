using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Data;

/// <summary>How images (and masks) are resized before the optional centre crop.</summary>
public enum VocResize
{
    /// <summary>Keep the stored size.</summary>
    None,

    /// <summary>Scale so that the shorter side equals <see cref="VocReaderOptions.ResizeTo"/> (aspect kept).</summary>
    ShorterSide,

    /// <summary>Scale to <see cref="VocReaderOptions.ResizeTo"/> × <see cref="VocReaderOptions.ResizeTo"/> (Chefer's 224×224).</summary>
    Square,
}

/// <summary>Where the image-level label comes from.</summary>
public enum VocLabelSource
{
    /// <summary>The mask value with most pixels (excluding 0 and the ignore value), minus <see cref="VocReaderOptions.MaskValueOffset"/>.</summary>
    LargestMaskClass,

    /// <summary>A text file with lines <c>&lt;id&gt; &lt;label&gt;</c> (<see cref="VocReaderOptions.ImageLabelsFile"/>).</summary>
    ImageLabelsFile,
}

/// <summary>Options of <see cref="VocDataset"/>.</summary>
public sealed record VocReaderOptions
{
    /// <summary>Split name: ids are read from <c>ImageSets/Segmentation/&lt;Split&gt;.txt</c>. Default "val".</summary>
    public string Split { get; init; } = "val";

    /// <summary>Resize mode. Default <see cref="VocResize.None"/>.</summary>
    public VocResize Resize { get; init; } = VocResize.None;

    /// <summary>Target size for <see cref="Resize"/>. Default 224.</summary>
    public int ResizeTo { get; init; } = 224;

    /// <summary>Centre-crop size (square), or <see langword="null"/> for no crop.</summary>
    public int? CropSize { get; init; }

    /// <summary>Normalisation of the [0,1] image. Default ImageNet mean/std.</summary>
    public ImageNormalization Normalization { get; init; } = ImageNormalization.ImageNet;

    /// <summary>Label source. Default <see cref="VocLabelSource.LargestMaskClass"/>.</summary>
    public VocLabelSource LabelSource { get; init; } = VocLabelSource.LargestMaskClass;

    /// <summary>Image-level labels file relative to the root (for <see cref="VocLabelSource.ImageLabelsFile"/>). Default "image_labels.txt".</summary>
    public string ImageLabelsFile { get; init; } = "image_labels.txt";

    /// <summary>Label = mask value − offset. Default 1 (value 1 = class 0, as written by <see cref="VocWriter"/>).</summary>
    public int MaskValueOffset { get; init; } = 1;

    /// <summary>Mask value of ignored pixels. Default 255.</summary>
    public int IgnoreValue { get; init; } = 255;
}

/// <summary>One loaded sample.</summary>
/// <param name="Id">Image id.</param>
/// <param name="Image">Normalised image [3,H,W] float32 (CPU).</param>
/// <param name="Mask">Mask [H,W] int64 (CPU): stored class values, 255 = ignore.</param>
/// <param name="Label">Image-level label.</param>
public sealed record VocSample(string Id, Tensor Image, Tensor Mask, int Label) : IDisposable
{
    /// <inheritdoc />
    public void Dispose()
    {
        Image.Dispose();
        Mask.Dispose();
    }
}

/// <summary>
/// Reader of VOC-style segmentation folders (<c>JPEGImages</c>, <c>SegmentationClass</c>,
/// <c>ImageSets/Segmentation</c>, optional <c>labels.txt</c>): our synthetic benchmark, PASCAL VOC 2012, or ImageNet-S
/// converted to this layout. Images are resized bilinearly (ImageSharp triangle filter, antialiased when
/// downscaling), masks with nearest neighbour on the same pixel-centre grid; both get the same centre crop.
/// </summary>
public sealed class VocDataset
{
    private static readonly string[] ImageExtensions = { ".jpg", ".jpeg", ".png" };
    private readonly Dictionary<string, int>? _imageLabels;

    /// <summary>Opens a folder and reads its split file.</summary>
    /// <param name="root">Dataset root.</param>
    /// <param name="options">Options (default: split "val", no resize, ImageNet normalisation).</param>
    public VocDataset(string root, VocReaderOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        Options = options ?? new VocReaderOptions();
        if (!Directory.Exists(root)) throw new DirectoryNotFoundException($"Dataset root not found: {root}");
        if (Options.ResizeTo <= 0) throw new ArgumentOutOfRangeException(nameof(options), Options.ResizeTo, "ResizeTo must be positive.");
        if (Options.CropSize is <= 0) throw new ArgumentOutOfRangeException(nameof(options), Options.CropSize, "CropSize must be positive.");
        if (Options.Normalization.Channels != 3) throw new ArgumentException("Normalization must have 3 channels.", nameof(options));
        Root = root;
        var split = Path.Combine(root, "ImageSets", "Segmentation", Options.Split + ".txt");
        if (!File.Exists(split)) throw new FileNotFoundException($"Split file not found: {split}", split);
        Ids = File.ReadAllLines(split).Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        var labels = Path.Combine(root, "labels.txt");
        ClassNames = File.Exists(labels) ? File.ReadAllLines(labels).Select(l => l.Trim()).Where(l => l.Length > 0).ToArray() : null;
        if (Options.LabelSource == VocLabelSource.ImageLabelsFile)
        {
            var path = Path.Combine(root, Options.ImageLabelsFile);
            if (!File.Exists(path)) throw new FileNotFoundException($"Image labels file not found: {path}", path);
            _imageLabels = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var (line, n) in File.ReadAllLines(path).Select((l, i) => (l.Trim(), i + 1)))
            {
                if (line.Length == 0) continue;
                var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                if (parts.Length != 2 || !int.TryParse(parts[1], out var lab))
                    throw new InvalidDataException($"{path}:{n}: expected '<id> <label>', got '{line}'.");
                _imageLabels[parts[0]] = lab;
            }
        }
    }

    /// <summary>Dataset root.</summary>
    public string Root { get; }

    /// <summary>Options.</summary>
    public VocReaderOptions Options { get; }

    /// <summary>Image ids of the split, in file order.</summary>
    public IReadOnlyList<string> Ids { get; }

    /// <summary>Class names from <c>labels.txt</c>, or <see langword="null"/> if absent.</summary>
    public IReadOnlyList<string>? ClassNames { get; }

    /// <summary>Number of images in the split.</summary>
    public int Count => Ids.Count;

    /// <summary>Loads sample <paramref name="index"/>.</summary>
    /// <param name="index">0..Count−1.</param>
    /// <returns>The sample (caller disposes).</returns>
    public VocSample Load(int index)
    {
        if (index < 0 || index >= Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"Index must be in 0..{Count - 1}.");
        var (w, h, pixels, mask, label) = LoadRaw(Ids[index]);
        using var scope = torch.NewDisposeScope();
        var image = ToNormalizedTensor(pixels, w, h);
        var m = torch.tensor(mask.Select(v => (long)v).ToArray(), new long[] { h, w });
        return new VocSample(Ids[index], image.MoveToOuterDisposeScope(), m.MoveToOuterDisposeScope(), label);
    }

    /// <summary>Loads samples <paramref name="start"/> … <paramref name="start"/>+<paramref name="count"/>−1 as one batch.</summary>
    /// <param name="start">First index.</param>
    /// <param name="count">Number of samples (&gt; 0).</param>
    /// <returns>A batch (caller disposes); all samples must have the same size after resize/crop.</returns>
    public EvaluationBatch LoadBatch(int start, int count)
    {
        if (count <= 0 || start < 0 || start + count > Count)
            throw new ArgumentOutOfRangeException(nameof(count), $"Range [{start}, {start + count}) is outside 0..{Count}.");
        var samples = new List<VocSample>();
        try
        {
            for (int i = start; i < start + count; i++) samples.Add(Load(i));
            var size = samples[0].Image.shape;
            var bad = samples.FirstOrDefault(s => s.Image.shape[1] != size[1] || s.Image.shape[2] != size[2]);
            if (bad is not null)
                throw new InvalidOperationException(
                    $"Image '{bad.Id}' is {bad.Image.shape[2]}×{bad.Image.shape[1]} but '{samples[0].Id}' is {size[2]}×{size[1]}: set CropSize or Resize = Square to batch images of different sizes.");
            using var scope = torch.NewDisposeScope();
            var x = torch.stack(samples.Select(s => s.Image).ToArray());
            var m = torch.stack(samples.Select(s => s.Mask).ToArray());
            var y = torch.tensor(samples.Select(s => (long)s.Label).ToArray());
            return new EvaluationBatch(x.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope(), m.MoveToOuterDisposeScope(), samples.Select(s => s.Id).ToArray());
        }
        finally
        {
            foreach (var s in samples) s.Dispose();
        }
    }

    /// <summary>Enumerates the split in batches.</summary>
    /// <param name="batchSize">Samples per batch (&gt; 0).</param>
    /// <returns>Lazily loaded batches; dispose each after use.</returns>
    public IEnumerable<EvaluationBatch> Batches(int batchSize)
    {
        Check.Positive(batchSize, nameof(batchSize));
        return Iterate();

        IEnumerable<EvaluationBatch> Iterate()
        {
            for (int s = 0; s < Count; s += batchSize) yield return LoadBatch(s, Math.Min(batchSize, Count - s));
        }
    }

    /// <summary>Path of the image file of <paramref name="id"/> (.jpg, .jpeg or .png).</summary>
    /// <param name="id">Image id.</param>
    /// <returns>The existing path.</returns>
    public string ImagePath(string id)
    {
        var candidates = ImageExtensions.Select(e => Path.Combine(Root, "JPEGImages", id + e)).ToArray();
        return candidates.FirstOrDefault(File.Exists)
            ?? throw new FileNotFoundException($"Image file for id '{id}' not found; tried {string.Join(", ", candidates)}", candidates[0]);
    }

    /// <summary>Path of the mask file of <paramref name="id"/>.</summary>
    /// <param name="id">Image id.</param>
    /// <returns>The existing path.</returns>
    public string MaskPath(string id)
    {
        var p = Path.Combine(Root, "SegmentationClass", id + ".png");
        return File.Exists(p) ? p : throw new FileNotFoundException($"Mask file for id '{id}' not found: {p}", p);
    }

    private (int W, int H, byte[] Pixels, int[] Mask, int Label) LoadRaw(string id)
    {
        var imagePath = ImagePath(id);
        var maskPath = MaskPath(id);
        using var img = Image.Load<Rgb24>(imagePath);
        var (mw, mh, mask) = MaskPng.Read(maskPath);
        if (mw != img.Width || mh != img.Height)
            throw new InvalidDataException($"Mask '{maskPath}' is {mw}×{mh} but image '{imagePath}' is {img.Width}×{img.Height}.");
        int label = Label(id, mask, maskPath);

        int w = img.Width, h = img.Height;
        (int nw, int nh) = Options.Resize switch
        {
            VocResize.ShorterSide => w <= h
                ? (Options.ResizeTo, Math.Max(1, (int)Math.Round((double)h * Options.ResizeTo / w)))
                : (Math.Max(1, (int)Math.Round((double)w * Options.ResizeTo / h)), Options.ResizeTo),
            VocResize.Square => (Options.ResizeTo, Options.ResizeTo),
            _ => (w, h),
        };
        if (nw != w || nh != h)
        {
            img.Mutate(c => c.Resize(nw, nh, KnownResamplers.Triangle));
            mask = ResizeNearest(mask, w, h, nw, nh);
            w = nw;
            h = nh;
        }

        if (Options.CropSize is int crop)
        {
            if (crop > w || crop > h) throw new InvalidOperationException($"CropSize {crop} exceeds image '{id}' of size {w}×{h} (after resize).");
            int x0 = (w - crop) / 2, y0 = (h - crop) / 2;
            img.Mutate(c => c.Crop(new Rectangle(x0, y0, crop, crop)));
            var cropped = new int[crop * crop];
            for (int y = 0; y < crop; y++) Array.Copy(mask, (y + y0) * w + x0, cropped, y * crop, crop);
            mask = cropped;
            w = h = crop;
        }

        var pixels = new byte[w * h * 3];
        img.CopyPixelDataTo(pixels);
        return (w, h, pixels, mask, label);
    }

    private int Label(string id, int[] mask, string maskPath)
    {
        if (_imageLabels is not null)
            return _imageLabels.TryGetValue(id, out var l) ? l : throw new InvalidDataException($"No label for id '{id}' in {Path.Combine(Root, Options.ImageLabelsFile)}.");
        var counts = new Dictionary<int, int>();
        foreach (var v in mask)
            if (v != 0 && v != Options.IgnoreValue) counts[v] = counts.GetValueOrDefault(v) + 1;
        if (counts.Count == 0)
            throw new InvalidDataException($"Mask '{maskPath}' has no object pixels, so no label can be derived; use LabelSource = ImageLabelsFile.");
        int best = counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key).First().Key;
        return best - Options.MaskValueOffset;
    }

    private static int[] ResizeNearest(int[] src, int w, int h, int nw, int nh)
    {
        var dst = new int[nw * nh];
        for (int y = 0; y < nh; y++)
        {
            int sy = Math.Min(h - 1, (int)Math.Floor((y + 0.5) * h / nh));
            for (int x = 0; x < nw; x++)
            {
                int sx = Math.Min(w - 1, (int)Math.Floor((x + 0.5) * w / nw));
                dst[y * nw + x] = src[sy * w + sx];
            }
        }

        return dst;
    }

    private Tensor ToNormalizedTensor(byte[] pixels, int w, int h)
    {
        int plane = w * h;
        var buf = new float[3 * plane];
        var mean = Options.Normalization.Mean;
        var std = Options.Normalization.Std;
        for (int c = 0; c < 3; c++)
        {
            float m = (float)mean[c], s = (float)std[c];
            for (int p = 0; p < plane; p++) buf[c * plane + p] = (pixels[3 * p + c] / 255f - m) / s;
        }

        return torch.tensor(buf, new long[] { 3, h, w });
    }
}
