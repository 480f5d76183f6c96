namespace RootDtd.Evaluation.Synthetic;

/// <summary>Silhouette of a synthetic object.</summary>
public enum SyntheticShape
{
    /// <summary>Filled disc.</summary>
    Disc,

    /// <summary>Filled square.</summary>
    Square,

    /// <summary>Equilateral triangle.</summary>
    Triangle,

    /// <summary>Annulus (ring), inner radius 0.55 of the outer.</summary>
    Ring,

    /// <summary>Plus-shaped cross.</summary>
    Cross,

    /// <summary>Five-pointed star.</summary>
    Star,
}

/// <summary>Fill pattern of a synthetic object (drawn in the object's rotated frame).</summary>
public enum SyntheticTexture
{
    /// <summary>One colour.</summary>
    Solid,

    /// <summary>Parallel stripes in two colours.</summary>
    Stripes,

    /// <summary>Checkerboard in two colours.</summary>
    Checker,

    /// <summary>Dots of one colour on the other.</summary>
    Dots,

    /// <summary>Concentric bands around the object centre.</summary>
    Concentric,

    /// <summary>Grid lines of one colour on the other.</summary>
    Grid,
}

/// <summary>How the image background is drawn.</summary>
public enum BackgroundStyle
{
    /// <summary>One flat colour (<see cref="SyntheticOptions.PlainColor"/>); useful for tests.</summary>
    Plain,

    /// <summary>A two-colour linear gradient.</summary>
    Gradient,

    /// <summary>Gradient plus random translucent blobs and line segments.</summary>
    Cluttered,
}

/// <summary>A class of the synthetic benchmark: a shape drawn with a texture.</summary>
/// <param name="Name">Class name (written to <c>labels.txt</c>).</param>
/// <param name="Shape">Silhouette.</param>
/// <param name="Texture">Fill pattern.</param>
public sealed record SyntheticClass(string Name, SyntheticShape Shape, SyntheticTexture Texture);

/// <summary>Options of <see cref="SyntheticDatasetGenerator"/>. All sizes are in pixels unless stated.</summary>
public sealed record SyntheticOptions
{
    /// <summary>Image width (≥ 16). Default 64.</summary>
    public int Width { get; init; } = 64;

    /// <summary>Image height (≥ 16). Default 64.</summary>
    public int Height { get; init; } = 64;

    /// <summary>Number of classes, 2–6 (the first entries of <see cref="SyntheticDatasetGenerator.AllClasses"/>). Default 6.</summary>
    public int ClassCount { get; init; } = 6;

    /// <summary>Smallest diameter of the labelled object as a fraction of the shorter image side. Default 0.4.</summary>
    public double MinObjectScale { get; init; } = 0.4;

    /// <summary>Largest diameter of the labelled object as a fraction of the shorter image side (≤ 0.9). Default 0.7.</summary>
    public double MaxObjectScale { get; init; } = 0.7;

    /// <summary>Fewest distractor objects per image. Default 1.</summary>
    public int MinDistractors { get; init; } = 1;

    /// <summary>Most distractor objects per image. Default 3.</summary>
    public int MaxDistractors { get; init; } = 3;

    /// <summary>Smallest distractor diameter as a fraction of the shorter image side. Default 0.2.</summary>
    public double MinDistractorScale { get; init; } = 0.2;

    /// <summary>Largest distractor diameter as a fraction of the shorter image side. Default 0.45.</summary>
    public double MaxDistractorScale { get; init; } = 0.45;

    /// <summary>Background style. Default <see cref="BackgroundStyle.Cluttered"/>.</summary>
    public BackgroundStyle Background { get; init; } = BackgroundStyle.Cluttered;

    /// <summary>Background colour for <see cref="BackgroundStyle.Plain"/> (R, G, B). Default mid grey.</summary>
    public (byte R, byte G, byte B) PlainColor { get; init; } = (128, 128, 128);

    /// <summary>Peak-to-peak amplitude (0–255 units) of per-pixel, per-channel uniform noise added last. Default 16.</summary>
    public int NoiseAmplitude { get; init; } = 16;

    /// <summary>Most translucent blobs of a cluttered background. Default 5.</summary>
    public int MaxClutterBlobs { get; init; } = 5;

    /// <summary>Most line segments of a cluttered background. Default 4.</summary>
    public int MaxClutterLines { get; init; } = 4;

    internal void Validate()
    {
        if (Width < 16 || Height < 16) throw new ArgumentOutOfRangeException(nameof(Width), $"Width and Height must be ≥ 16 (got {Width}×{Height}).");
        if (ClassCount < 2 || ClassCount > SyntheticDatasetGenerator.AllClasses.Count)
            throw new ArgumentOutOfRangeException(nameof(ClassCount), ClassCount, $"ClassCount must be in 2..{SyntheticDatasetGenerator.AllClasses.Count}.");
        if (!(MinObjectScale > 0) || MaxObjectScale < MinObjectScale || MaxObjectScale > 0.9)
            throw new ArgumentOutOfRangeException(nameof(MaxObjectScale), "Object scales must satisfy 0 < MinObjectScale ≤ MaxObjectScale ≤ 0.9.");
        if (MinDistractors < 0 || MaxDistractors < MinDistractors)
            throw new ArgumentOutOfRangeException(nameof(MaxDistractors), "Distractor counts must satisfy 0 ≤ MinDistractors ≤ MaxDistractors.");
        if (!(MinDistractorScale > 0) || MaxDistractorScale < MinDistractorScale)
            throw new ArgumentOutOfRangeException(nameof(MaxDistractorScale), "Distractor scales must satisfy 0 < min ≤ max.");
        if (NoiseAmplitude < 0 || NoiseAmplitude > 255) throw new ArgumentOutOfRangeException(nameof(NoiseAmplitude), NoiseAmplitude, "Must be in 0..255.");
        if (MaxClutterBlobs < 0 || MaxClutterLines < 0) throw new ArgumentOutOfRangeException(nameof(MaxClutterBlobs), "Clutter counts must be ≥ 0.");
    }
}

/// <summary>One generated image with its exact mask.</summary>
public sealed class SyntheticImage
{
    internal SyntheticImage(int index, int label, int width, int height, byte[] pixels, byte[] mask)
    {
        Index = index;
        Label = label;
        Width = width;
        Height = height;
        Pixels = pixels;
        Mask = mask;
    }

    /// <summary>Index of the image in its seeded stream.</summary>
    public int Index { get; }

    /// <summary>Identifier used on disk, <c>syn_{Index:D6}</c>.</summary>
    public string Id => $"syn_{Index:D6}";

    /// <summary>Class index of the labelled object (0-based).</summary>
    public int Label { get; }

    /// <summary>Width in pixels.</summary>
    public int Width { get; }

    /// <summary>Height in pixels.</summary>
    public int Height { get; }

    /// <summary>Interleaved RGB bytes, row-major, length H·W·3.</summary>
    public byte[] Pixels { get; }

    /// <summary>Mask bytes, row-major, length H·W: 0 = background, Label + 1 = the labelled object.</summary>
    public byte[] Mask { get; }
}
