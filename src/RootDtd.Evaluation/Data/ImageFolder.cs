using System.Globalization;

namespace RootDtd.Evaluation.Data;

/// <summary>One image of an <see cref="ImageFolder"/>.</summary>
/// <param name="Path">The image file.</param>
/// <param name="Label">Index of its class in <see cref="ImageFolder.ClassNames"/>.</param>
public sealed record ImageFolderItem(string Path, int Label);

/// <summary>
/// A labelled image folder: one subfolder per class (its name is the class name, classes in ordinal order of the
/// names), PNG/JPEG/BMP images inside (not recursive). Optionally, images directly in the folder are each a class of
/// their own, named by the file name without extension. Files that are not images and empty class folders are listed
/// in <see cref="Notes"/>.
/// </summary>
public sealed class ImageFolder
{
    /// <summary>The image file extensions read (case-insensitive).</summary>
    public static IReadOnlyList<string> ImageExtensions { get; } = new[] { ".png", ".jpg", ".jpeg", ".bmp" };

    private ImageFolder(string root, IReadOnlyList<string> classNames, IReadOnlyList<ImageFolderItem> items, IReadOnlyList<string> notes)
    {
        Root = root;
        ClassNames = classNames;
        Items = items;
        Notes = notes;
    }

    /// <summary>The folder.</summary>
    public string Root { get; }

    /// <summary>Class names; index = label.</summary>
    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>Every image with its label, by class, then by file name (ordinal).</summary>
    public IReadOnlyList<ImageFolderItem> Items { get; }

    /// <summary>What was skipped and why (empty class folders, files that are not images).</summary>
    public IReadOnlyList<string> Notes { get; }

    /// <summary>Number of images per class.</summary>
    public IReadOnlyList<int> CountsPerClass => ClassNames.Select((_, c) => Items.Count(i => i.Label == c)).ToList();

    /// <summary>True when <paramref name="path"/> has an image extension.</summary>
    /// <param name="path">A file path.</param>
    public static bool IsImageFile(string path) => ImageExtensions.Contains(System.IO.Path.GetExtension(path).ToLowerInvariant());

    /// <summary>Reads the folder's layout.</summary>
    /// <param name="root">The folder.</param>
    /// <param name="looseImagesAreClasses">Images directly in <paramref name="root"/> are classes of their own (else they are skipped with a note).</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="ArgumentException">It holds no images (the message says where they were expected), or two classes have the same name.</exception>
    public static ImageFolder Scan(string root, bool looseImagesAreClasses = false)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(root);
        if (!Directory.Exists(root))
            throw new DirectoryNotFoundException(File.Exists(root) ? $"'{root}' is a file; an image folder (one subfolder per class) was expected." : $"The image folder '{root}' does not exist.");
        var notes = new List<string>();
        var classes = new List<(string Name, List<string> Files)>();
        foreach (var dir in Directory.GetDirectories(root).Order(StringComparer.Ordinal))
        {
            var name = System.IO.Path.GetFileName(dir);
            if (name.StartsWith('.')) continue;
            var files = Directory.GetFiles(dir).Order(StringComparer.Ordinal).ToList();
            var images = files.Where(IsImageFile).ToList();
            foreach (var other in files.Where(f => !IsImageFile(f)))
                notes.Add($"skipped '{other}': not a PNG, JPEG or BMP file");
            if (images.Count == 0)
            {
                notes.Add($"skipped class folder '{dir}': it has no images");
                continue;
            }
            classes.Add((name, images));
        }
        foreach (var file in Directory.GetFiles(root).Order(StringComparer.Ordinal))
        {
            if (!IsImageFile(file)) continue;
            if (!looseImagesAreClasses)
            {
                notes.Add($"skipped '{file}': images must be inside a class subfolder");
                continue;
            }
            var name = System.IO.Path.GetFileNameWithoutExtension(file);
            if (classes.Any(c => string.Equals(c.Name, name, StringComparison.Ordinal)))
                throw new ArgumentException($"'{file}' would be a class of its own named '{name}', but '{root}' also has a class folder of that name.", nameof(root));
            classes.Add((name, new List<string> { file }));
        }
        if (classes.Count == 0)
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"The image folder '{root}' has no images: expected one subfolder per class with PNG, JPEG or BMP images inside{(looseImagesAreClasses ? " (or images directly in it, each a class of its own)" : string.Empty)}."), nameof(root));
        var items = classes.SelectMany((c, label) => c.Files.Select(f => new ImageFolderItem(f, label))).ToList();
        return new ImageFolder(root, classes.Select(c => c.Name).ToList(), items, notes);
    }
}
