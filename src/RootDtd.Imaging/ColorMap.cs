using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace RootDtd.Imaging;

/// <summary>
/// A 256-entry colour look-up table that maps intensities in [0,1] to RGB colours.
/// Built-in maps: <see cref="Turbo"/>, <see cref="Diverging"/> (blue–white–red) and <see cref="Grey"/>.
/// </summary>
public sealed class ColorMap
{
    /// <summary>Number of entries of every colour map.</summary>
    public const int Size = 256;

    private readonly Rgb24[] _entries;

    /// <summary>Creates a colour map from exactly 256 colours; entry 0 is intensity 0, entry 255 intensity 1.</summary>
    /// <param name="name">Display name.</param>
    /// <param name="entries">The 256 colours.</param>
    public ColorMap(string name, IReadOnlyList<Rgb24> entries)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(entries);
        if (entries.Count != Size) throw new ArgumentException($"A colour map needs {Size} entries, got {entries.Count}.", nameof(entries));
        Name = name;
        _entries = entries.ToArray();
    }

    /// <summary>Google's Turbo rainbow map (Mikhailov 2019): dark blue → cyan → green → yellow → red → dark red.</summary>
    public static ColorMap Turbo { get; } = new("turbo", TurboColorMap.BuildEntries());

    /// <summary>
    /// Blue–white–red diverging map for signed values: entry 0 is blue, entries 127 and 128 are pure white, entry 255 is red,
    /// and entry <c>255 - i</c> is entry <c>i</c> with red and blue swapped (exact symmetry around zero).
    /// </summary>
    public static ColorMap Diverging { get; } = new("blue-white-red", BuildDiverging());

    /// <summary>Black-to-white grey ramp.</summary>
    public static ColorMap Grey { get; } = new("grey", Enumerable.Range(0, Size).Select(i => new Rgb24((byte)i, (byte)i, (byte)i)).ToArray());

    /// <summary>Display name.</summary>
    public string Name { get; }

    /// <summary>The colour of LUT entry <paramref name="index"/> (0..255).</summary>
    /// <param name="index">Entry index.</param>
    public Rgb24 this[int index] => _entries[index];

    /// <summary>The LUT index of an intensity: <c>round(255 · clamp(value, 0, 1))</c>; NaN maps to 0.</summary>
    /// <param name="value">Intensity in [0,1].</param>
    public static int IndexOf(float value)
    {
        if (!(value > 0f)) return 0;
        if (value >= 1f) return Size - 1;
        return (int)(value * (Size - 1) + 0.5f);
    }

    /// <summary>The colour of an intensity in [0,1] (clamped).</summary>
    /// <param name="value">Intensity.</param>
    public Rgb24 Map(float value) => _entries[IndexOf(value)];

    /// <summary>Maps intensities in [0,1] to interleaved RGB bytes (3 per value).</summary>
    /// <param name="intensities">Intensities.</param>
    public byte[] MapToRgbBytes(ReadOnlySpan<float> intensities)
    {
        var bytes = new byte[intensities.Length * 3];
        for (int i = 0, p = 0; i < intensities.Length; i++, p += 3)
        {
            var c = _entries[IndexOf(intensities[i])];
            bytes[p] = c.R;
            bytes[p + 1] = c.G;
            bytes[p + 2] = c.B;
        }
        return bytes;
    }

    /// <summary>Maps a [H,W] intensity tensor (values in [0,1], any device and floating dtype) to an RGB image.</summary>
    /// <param name="intensity">The intensities.</param>
    public Image<Rgb24> Apply(Tensor intensity)
    {
        ArgumentNullException.ThrowIfNull(intensity);
        if (intensity.dim() != 2)
            throw new ArgumentException($"Expected a [H,W] tensor, got shape [{string.Join(",", intensity.shape)}].", nameof(intensity));
        var (values, _) = TensorData.ToCpuFloats(intensity, nameof(intensity));
        return Image.LoadPixelData<Rgb24>(MapToRgbBytes(values), (int)intensity.shape[1], (int)intensity.shape[0]);
    }

    /// <inheritdoc />
    public override string ToString() => Name;

    private static Rgb24[] BuildDiverging()
    {
        var entries = new Rgb24[Size];
        for (int i = 0; i < Size; i++)
        {
            // Distance from the white centre (entries 127 and 128), 0..127, then a linear fade to the saturated end.
            double d = Math.Abs(i - 127.5) - 0.5;
            byte fade = (byte)Math.Round(255 * (1 - d / 127.0));
            entries[i] = i >= Size / 2 ? new Rgb24(255, fade, fade) : new Rgb24(fade, fade, 255);
        }
        return entries;
    }
}
