using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace RootDtd.Evaluation.Data;

/// <summary>One image of a VOC-style folder to write.</summary>
/// <param name="Id">Image id (file stem), without path separators.</param>
/// <param name="Width">Width in pixels.</param>
/// <param name="Height">Height in pixels.</param>
/// <param name="Rgb">Interleaved RGB bytes, row-major, length H·W·3.</param>
/// <param name="Mask">Class values, row-major, length H·W (0 background, class index + 1 object, 255 ignore).</param>
public sealed record VocRecord(string Id, int Width, int Height, byte[] Rgb, byte[] Mask);

/// <summary>
/// Writes a VOC-style folder: <c>JPEGImages/&lt;id&gt;.png</c> (lossless PNG, kept under the VOC folder name),
/// <c>SegmentationClass/&lt;id&gt;.png</c> (8-bit palette PNG with the VOC colour map; index = class value),
/// <c>ImageSets/Segmentation/&lt;split&gt;.txt</c> and <c>labels.txt</c> (class names, one per line, class index order).
/// </summary>
public static class VocWriter
{
    /// <summary>Writes the folder.</summary>
    /// <param name="root">Output folder (created if missing; existing files with the same names are overwritten).</param>
    /// <param name="classNames">Class names in index order.</param>
    /// <param name="records">Images and masks.</param>
    /// <param name="splits">Split name → ids.</param>
    public static void Write(string root, IReadOnlyList<string> classNames, IEnumerable<VocRecord> records, IReadOnlyDictionary<string, IReadOnlyList<string>> splits)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        ArgumentNullException.ThrowIfNull(classNames);
        ArgumentNullException.ThrowIfNull(records);
        ArgumentNullException.ThrowIfNull(splits);
        var images = Directory.CreateDirectory(Path.Combine(root, "JPEGImages")).FullName;
        var masks = Directory.CreateDirectory(Path.Combine(root, "SegmentationClass")).FullName;
        var sets = Directory.CreateDirectory(Path.Combine(root, "ImageSets", "Segmentation")).FullName;
        foreach (var r in records)
        {
            if (string.IsNullOrEmpty(r.Id) || r.Id.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || r.Id.Contains('/'))
                throw new ArgumentException($"Invalid image id '{r.Id}'.", nameof(records));
            if (r.Rgb.Length != r.Width * r.Height * 3 || r.Mask.Length != r.Width * r.Height)
                throw new ArgumentException($"Record '{r.Id}': expected {r.Width * r.Height * 3} RGB bytes and {r.Width * r.Height} mask bytes.", nameof(records));
            using (var img = Image.LoadPixelData<Rgb24>(r.Rgb, r.Width, r.Height))
                img.SaveAsPng(Path.Combine(images, r.Id + ".png"));
            File.WriteAllBytes(Path.Combine(masks, r.Id + ".png"), MaskPng.Encode(r.Mask, r.Width, r.Height));
        }

        foreach (var (name, ids) in splits)
            File.WriteAllLines(Path.Combine(sets, name + ".txt"), ids);
        File.WriteAllLines(Path.Combine(root, "labels.txt"), classNames);
    }
}
