using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Imaging;

/// <summary>
/// Turns relevance heatmaps ([H,W] or [B,H,W], any device, any floating dtype) into intensities, colour images and
/// overlays. Tensors are copied to the CPU once; all further work is on plain arrays.
/// </summary>
public static class HeatmapRenderer
{
    /// <summary>
    /// Normalised intensities of one or several heatmaps: the mode is applied, outliers optionally clipped, each map
    /// min-max normalised to [0,1] (Signed: divided by max|R|, giving [-1,1]), and mean cropping applied if requested.
    /// An all-zero or constant map gives all zeros in every mode (no NaN).
    /// </summary>
    /// <param name="heatmap">A [H,W] or [B,H,W] floating-point tensor; must be finite.</param>
    /// <param name="options">Rendering options; <c>null</c> means <see cref="HeatmapOptions.Default"/>.</param>
    /// <returns>A new float32 CPU tensor of the same shape.</returns>
    /// <exception cref="ArgumentException">The heatmap has the wrong rank or contains NaN or infinity.</exception>
    public static Tensor ComputeIntensity(Tensor heatmap, HeatmapOptions? options = null)
    {
        options ??= HeatmapOptions.Default;
        options.Validate();
        var (values, shape, count, mapSize) = ReadMaps(heatmap, nameof(heatmap));
        for (int b = 0; b < count; b++)
            Normalize(values.AsSpan(b * mapSize, mapSize), options, applyMeanCropping: true);
        return tensor(values, shape);
    }

    /// <summary>Renders one [H,W] heatmap (or a [1,H,W] batch) as a colour image.</summary>
    /// <param name="heatmap">The heatmap; must be finite.</param>
    /// <param name="options">Rendering options; <c>null</c> means <see cref="HeatmapOptions.Default"/>.</param>
    public static Image<Rgb24> Render(Tensor heatmap, HeatmapOptions? options = null)
    {
        var images = RenderMaps(heatmap, options, nameof(heatmap));
        if (images.Count != 1)
        {
            foreach (var image in images) image.Dispose();
            throw new ArgumentException($"Render expects a single map; got a batch of {images.Count}. Use RenderBatch.", nameof(heatmap));
        }
        return images[0];
    }

    /// <summary>Renders every map of a [B,H,W] (or [H,W]) heatmap tensor; the caller disposes the images.</summary>
    /// <param name="heatmaps">The heatmaps; must be finite.</param>
    /// <param name="options">Rendering options; <c>null</c> means <see cref="HeatmapOptions.Default"/>.</param>
    public static IReadOnlyList<Image<Rgb24>> RenderBatch(Tensor heatmaps, HeatmapOptions? options = null) =>
        RenderMaps(heatmaps, options, nameof(heatmaps));

    private static List<Image<Rgb24>> RenderMaps(Tensor heatmaps, HeatmapOptions? options, string paramName)
    {
        options ??= HeatmapOptions.Default;
        options.Validate();
        var (values, shape, count, mapSize) = ReadMaps(heatmaps, paramName);
        int height = (int)shape[^2], width = (int)shape[^1];
        var images = new List<Image<Rgb24>>(count);
        for (int b = 0; b < count; b++)
        {
            var map = values.AsSpan(b * mapSize, mapSize);
            var scale = Normalize(map, options, applyMeanCropping: true);
            var colored = Colorize(map, width, height, options);
            images.Add(options.ColorBar ? ColorBar.AppendTo(colored, scale, options, disposeImage: true) : colored);
        }
        return images;
    }

    /// <summary>
    /// The value scale a heatmap is rendered with: the relevance shown at the bottom and top of the colour map (after
    /// the mode and the clipping of <paramref name="options"/>), as drawn on the colour bar.
    /// </summary>
    /// <param name="heatmap">A [H,W] (or [1,H,W]) heatmap; must be finite.</param>
    /// <param name="options">Rendering options; <c>null</c> means <see cref="HeatmapOptions.Default"/>.</param>
    public static HeatmapScale ComputeScale(Tensor heatmap, HeatmapOptions? options = null)
    {
        options ??= HeatmapOptions.Default;
        options.Validate();
        var (values, _, count, mapSize) = ReadMaps(heatmap, nameof(heatmap));
        if (count != 1) throw new ArgumentException($"ComputeScale expects a single map; got a batch of {count}.", nameof(heatmap));
        return Normalize(values.AsSpan(0, mapSize), options, applyMeanCropping: false);
    }

    /// <summary>
    /// Renders a heatmap and alpha-blends it over an image: with <see cref="OverlayAlphaMode.Relevance"/> (default) the
    /// opacity of each pixel is <see cref="HeatmapOptions.OverlayOpacity"/> × its |intensity|, with
    /// <see cref="OverlayAlphaMode.Constant"/> it is <see cref="HeatmapOptions.OverlayOpacity"/> everywhere. A heatmap of
    /// another size is resized bilinearly to the image size first. With <see cref="HeatmapOptions.ColorBar"/> the
    /// colour bar is appended on the right.
    /// </summary>
    /// <param name="image">The background image (not modified).</param>
    /// <param name="heatmap">A [H,W] heatmap (or [1,H,W]); must be finite.</param>
    /// <param name="options">Rendering options; <c>null</c> means <see cref="HeatmapOptions.Default"/>.</param>
    public static Image<Rgb24> Overlay(Image<Rgb24> image, Tensor heatmap, HeatmapOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(heatmap);
        options ??= HeatmapOptions.Default;
        using var scope = NewDisposeScope();
        var map = heatmap.dim() == 3 && heatmap.shape[0] == 1 ? heatmap.squeeze(0) : heatmap;
        if (map.dim() != 2)
            throw new ArgumentException($"Expected a [H,W] heatmap, got shape [{string.Join(",", heatmap.shape)}].", nameof(heatmap));
        if (map.shape[0] != image.Height || map.shape[1] != image.Width)
        {
            var (values, _) = TensorData.ToCpuFloats(map, nameof(heatmap));
            TensorData.RequireFinite(values, nameof(heatmap));
            map = LayerMaps.Upsample(tensor(values, map.shape), image.Height, image.Width);
        }
        options.Validate();
        var (mapValues, _, _, mapSize) = ReadMaps(map, nameof(heatmap));
        var intensity = mapValues.AsSpan(0, mapSize);
        var scale = Normalize(intensity, options, applyMeanCropping: true);
        using var colored = Colorize(intensity, image.Width, image.Height, options);
        Image<Rgb24> blended;
        if (options.OverlayAlpha == OverlayAlphaMode.Constant)
        {
            blended = Blend(image, colored, options.OverlayOpacity);
        }
        else
        {
            var alpha = new float[mapSize];
            for (int i = 0; i < alpha.Length; i++) alpha[i] = options.OverlayOpacity * Math.Min(1f, MathF.Abs(intensity[i]));
            blended = Blend(image, colored, alpha);
        }
        return options.ColorBar ? ColorBar.AppendTo(blended, scale, options, disposeImage: true) : blended;
    }

    /// <summary>Per-pixel alpha blend <c>(1 − αᵢ)·background + αᵢ·foreground</c> of two images of the same size.</summary>
    /// <param name="background">The background image.</param>
    /// <param name="foreground">The foreground image.</param>
    /// <param name="alpha">Foreground opacity per pixel (row-major, width × height values in [0,1]).</param>
    public static Image<Rgb24> Blend(Image<Rgb24> background, Image<Rgb24> foreground, ReadOnlySpan<float> alpha)
    {
        ArgumentNullException.ThrowIfNull(background);
        ArgumentNullException.ThrowIfNull(foreground);
        if (background.Width != foreground.Width || background.Height != foreground.Height)
            throw new ArgumentException($"Image sizes differ: {background.Width}x{background.Height} vs {foreground.Width}x{foreground.Height}.", nameof(foreground));
        if (alpha.Length != background.Width * background.Height)
            throw new ArgumentException($"Expected {background.Width * background.Height} alpha values, got {alpha.Length}.", nameof(alpha));
        var bg = ImageTensorConversion.GetRgbBytes(background);
        var fg = ImageTensorConversion.GetRgbBytes(foreground);
        var output = new byte[bg.Length];
        for (int p = 0; p < alpha.Length; p++)
        {
            float a = alpha[p];
            if (!(a >= 0 && a <= 1)) throw new ArgumentException($"Alpha values must be in [0, 1]; value {p} is {a}.", nameof(alpha));
            for (int c = 0; c < 3; c++)
            {
                int i = 3 * p + c;
                output[i] = (byte)Math.Clamp((int)MathF.Round((1f - a) * bg[i] + a * fg[i]), 0, 255);
            }
        }
        return Image.LoadPixelData<Rgb24>(output, background.Width, background.Height);
    }

    /// <summary>Alpha blend <c>(1 − opacity)·background + opacity·foreground</c> of two images of the same size.</summary>
    /// <param name="background">The background image.</param>
    /// <param name="foreground">The foreground image.</param>
    /// <param name="opacity">Foreground opacity in [0,1]: 0 returns the background, 1 the foreground.</param>
    public static Image<Rgb24> Blend(Image<Rgb24> background, Image<Rgb24> foreground, float opacity)
    {
        ArgumentNullException.ThrowIfNull(background);
        ArgumentNullException.ThrowIfNull(foreground);
        if (!(opacity >= 0 && opacity <= 1)) throw new ArgumentException($"Opacity must be in [0, 1], was {opacity}.", nameof(opacity));
        if (background.Width != foreground.Width || background.Height != foreground.Height)
            throw new ArgumentException($"Image sizes differ: {background.Width}x{background.Height} vs {foreground.Width}x{foreground.Height}.", nameof(foreground));
        var bg = ImageTensorConversion.GetRgbBytes(background);
        var fg = ImageTensorConversion.GetRgbBytes(foreground);
        var output = new byte[bg.Length];
        float keep = 1f - opacity;
        for (int i = 0; i < output.Length; i++)
            output[i] = (byte)Math.Clamp((int)MathF.Round(keep * bg[i] + opacity * fg[i]), 0, 255);
        return Image.LoadPixelData<Rgb24>(output, background.Width, background.Height);
    }

    /// <summary>Upper end of the "dark band" of <see cref="DarkBandFraction"/>: the lowest tenth of the colour map.</summary>
    public const float DarkBandLimit = 0.1f;

    /// <summary>
    /// Legibility of a rendered map: the fraction of pixels whose normalised intensity magnitude is below
    /// <see cref="DarkBandLimit"/> — for Turbo the darkest band, for <see cref="HeatmapMode.Signed"/> the white band
    /// around 0. A map where almost every pixel is there shows nothing but a few extreme pixels.
    /// </summary>
    /// <param name="heatmap">A [H,W] (or [1,H,W]) heatmap; must be finite.</param>
    /// <param name="options">Rendering options; <c>null</c> means <see cref="HeatmapOptions.Default"/>.</param>
    /// <returns>A fraction in [0,1].</returns>
    public static double DarkBandFraction(Tensor heatmap, HeatmapOptions? options = null)
    {
        options ??= HeatmapOptions.Default;
        options.Validate();
        var (values, _, count, mapSize) = ReadMaps(heatmap, nameof(heatmap));
        if (count != 1) throw new ArgumentException($"DarkBandFraction expects a single map; got a batch of {count}.", nameof(heatmap));
        Normalize(values.AsSpan(0, mapSize), options, applyMeanCropping: true);
        var dark = 0;
        foreach (var v in values) if (MathF.Abs(v) < DarkBandLimit) dark++;
        return (double)dark / mapSize;
    }

    // ---- shared with LayerMaps ---------------------------------------------------------------------------------

    internal static (float[] Values, long[] Shape, int Count, int MapSize) ReadMaps(Tensor maps, string paramName)
    {
        ArgumentNullException.ThrowIfNull(maps, paramName);
        if (maps.dim() is not (2 or 3))
            throw new ArgumentException($"Expected a [H,W] or [B,H,W] heatmap, got shape [{string.Join(",", maps.shape)}].", paramName);
        if (maps.numel() == 0)
            throw new ArgumentException("The heatmap is empty.", paramName);
        var (values, shape) = TensorData.ToCpuFloats(maps, paramName);
        TensorData.RequireFinite(values, paramName);
        int mapSize = checked((int)(shape[^1] * shape[^2]));
        return (values, shape, values.Length / mapSize, mapSize);
    }

    /// <summary>In place: mode, clipping, normalisation and (optionally) mean cropping of one map; returns the value scale.</summary>
    internal static HeatmapScale Normalize(Span<float> map, HeatmapOptions options, bool applyMeanCropping)
    {
        bool clipped = options.ClipPercentile is double cp && cp < 100;
        switch (options.Mode)
        {
            case HeatmapMode.Absolute:
                for (int i = 0; i < map.Length; i++) map[i] = MathF.Abs(map[i]);
                break;
            case HeatmapMode.Positive:
                for (int i = 0; i < map.Length; i++) map[i] = MathF.Max(map[i], 0f);
                break;
        }

        if (options.Mode == HeatmapMode.Signed)
        {
            // A constant map carries no spatial information: it renders as zero (white), like in the other modes.
            bool constant = true;
            for (int i = 1; i < map.Length && constant; i++) constant = map[i] == map[0];
            if (constant) { map.Clear(); return new HeatmapScale(0, 0, options.Mode, false); }
            float scale = 0f;
            if (options.ClipPercentile is double ps)
            {
                var magnitudes = map.ToArray();
                for (int i = 0; i < magnitudes.Length; i++) magnitudes[i] = MathF.Abs(magnitudes[i]);
                scale = Percentile(magnitudes, ps);
            }
            else
            {
                foreach (float v in map) scale = MathF.Max(scale, MathF.Abs(v));
            }
            if (!(scale > 0f) || !float.IsFinite(1f / scale)) { map.Clear(); return new HeatmapScale(0, 0, options.Mode, false); }
            for (int i = 0; i < map.Length; i++) map[i] = Math.Clamp(map[i] / scale, -1f, 1f);
            return new HeatmapScale(-scale, scale, options.Mode, clipped);
        }

        if (options.ClipPercentile is double p)
        {
            var sorted = map.ToArray();
            float high = Percentile(sorted, p);
            float low = options.Mode == HeatmapMode.Raw ? Percentile(sorted, 100 - p) : float.NegativeInfinity;
            for (int i = 0; i < map.Length; i++) map[i] = Math.Clamp(map[i], low, high);
        }

        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        foreach (float v in map) { min = MathF.Min(min, v); max = MathF.Max(max, v); }
        double range = (double)max - min;
        if (!(range > 0) || !double.IsFinite(range)) { map.Clear(); return new HeatmapScale(min, max, options.Mode, false); }
        for (int i = 0; i < map.Length; i++) map[i] = (float)((map[i] - min) / range);

        if (applyMeanCropping && options.MeanCropping) ApplyMeanCropping(map);
        return new HeatmapScale(min, max, options.Mode, clipped);
    }

    /// <summary>Sets every value not above the mean (≤ mean) to 0.</summary>
    internal static void ApplyMeanCropping(Span<float> map)
    {
        double sum = 0;
        foreach (float v in map) sum += v;
        float mean = (float)(sum / map.Length);
        for (int i = 0; i < map.Length; i++)
            if (!(map[i] > mean)) map[i] = 0f;
    }

    internal static Image<Rgb24> Colorize(ReadOnlySpan<float> intensity, int width, int height, HeatmapOptions options)
    {
        var colorMap = options.ResolvedColorMap;
        byte[] rgb;
        if (options.Mode == HeatmapMode.Signed)
        {
            // [-1,1] → [0,1]; exactly 0 goes to the white centre entry 128 (127 is white as well in the diverging map).
            var shifted = new float[intensity.Length];
            for (int i = 0; i < shifted.Length; i++) shifted[i] = 0.5f + 0.5f * intensity[i];
            rgb = colorMap.MapToRgbBytes(shifted);
        }
        else
        {
            rgb = colorMap.MapToRgbBytes(intensity);
        }
        return Image.LoadPixelData<Rgb24>(rgb, width, height);
    }

    /// <summary>Linear-interpolated percentile (NumPy's default) of the values; sorts <paramref name="values"/> in place.</summary>
    internal static float Percentile(float[] values, double percentile)
    {
        Array.Sort(values);
        double position = percentile / 100.0 * (values.Length - 1);
        int lower = (int)Math.Floor(position);
        int upper = Math.Min(values.Length - 1, lower + 1);
        double fraction = position - lower;
        return (float)(values[lower] + (values[upper] - values[lower]) * fraction);
    }
}
