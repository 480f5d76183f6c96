using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Imaging;

/// <summary>
/// Layer-wise relevance maps (the paper's Fig. 5): relevance of an intermediate layer [C,h,w] (or [B,C,h,w]) is
/// summed over channels, normalised, upsampled bilinearly to the image size and rendered.
/// </summary>
public static class LayerMaps
{
    /// <summary>Sums a layer relevance tensor over its channel dimension: [C,h,w] → [h,w], [B,C,h,w] → [B,h,w] (float32, CPU).</summary>
    /// <param name="layerRelevance">The layer relevance; any device and floating dtype.</param>
    public static Tensor SumChannels(Tensor layerRelevance)
    {
        ArgumentNullException.ThrowIfNull(layerRelevance);
        if (layerRelevance.dim() is not (3 or 4))
            throw new ArgumentException($"Expected a [C,h,w] or [B,C,h,w] tensor, got shape [{string.Join(",", layerRelevance.shape)}].", nameof(layerRelevance));
        if (!layerRelevance.is_floating_point())
            throw new ArgumentException($"Expected a floating-point tensor, got {layerRelevance.dtype}.", nameof(layerRelevance));
        using var scope = NewDisposeScope();
        return layerRelevance.detach().to(ScalarType.Float32).cpu().sum(layerRelevance.dim() == 3 ? 0L : 1L)
            .MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Intensities of a layer-wise map at image resolution: sum over channels, normalise per map
    /// (<see cref="HeatmapRenderer.ComputeIntensity"/> without mean cropping), upsample bilinearly
    /// (align_corners = false) to <paramref name="height"/>×<paramref name="width"/>, then mean cropping if requested.
    /// </summary>
    /// <param name="layerRelevance">A [C,h,w] or [B,C,h,w] relevance tensor; must be finite.</param>
    /// <param name="height">Output height (the image height).</param>
    /// <param name="width">Output width (the image width).</param>
    /// <param name="options">Rendering options; <c>null</c> means <see cref="HeatmapOptions.Default"/>.</param>
    /// <returns>A float32 CPU tensor [H,W] or [B,H,W].</returns>
    public static Tensor ComputeIntensity(Tensor layerRelevance, int height, int width, HeatmapOptions? options = null)
    {
        options ??= HeatmapOptions.Default;
        options.Validate();
        if (height <= 0 || width <= 0) throw new ArgumentException($"Output size must be positive, was {width}x{height}.", nameof(height));
        using var scope = NewDisposeScope();
        var summed = SumChannels(layerRelevance);
        var (values, shape, count, mapSize) = HeatmapRenderer.ReadMaps(summed, nameof(layerRelevance));
        for (int b = 0; b < count; b++)
            HeatmapRenderer.Normalize(values.AsSpan(b * mapSize, mapSize), options, applyMeanCropping: false);
        var upsampled = Upsample(tensor(values, shape), height, width);
        if (!options.MeanCropping) return upsampled.MoveToOuterDisposeScope();
        var result = upsampled.contiguous().data<float>().ToArray();
        int outSize = height * width;
        for (int b = 0; b < count; b++) HeatmapRenderer.ApplyMeanCropping(result.AsSpan(b * outSize, outSize));
        return tensor(result, upsampled.shape).MoveToOuterDisposeScope();
    }

    /// <summary>Renders a layer-wise map of a single sample ([C,h,w] or [1,C,h,w]) at image resolution.</summary>
    /// <param name="layerRelevance">The layer relevance; must be finite.</param>
    /// <param name="height">Output height (the image height).</param>
    /// <param name="width">Output width (the image width).</param>
    /// <param name="options">Rendering options; <c>null</c> means <see cref="HeatmapOptions.Default"/>.</param>
    public static Image<Rgb24> Render(Tensor layerRelevance, int height, int width, HeatmapOptions? options = null)
    {
        var images = RenderBatch(layerRelevance, height, width, options);
        if (images.Count != 1)
        {
            foreach (var image in images) image.Dispose();
            throw new ArgumentException($"Render expects a single sample; got a batch of {images.Count}. Use RenderBatch.", nameof(layerRelevance));
        }
        return images[0];
    }

    /// <summary>Renders the layer-wise maps of every sample of a [B,C,h,w] (or [C,h,w]) tensor; the caller disposes the images.</summary>
    /// <param name="layerRelevance">The layer relevance; must be finite.</param>
    /// <param name="height">Output height (the image height).</param>
    /// <param name="width">Output width (the image width).</param>
    /// <param name="options">Rendering options; <c>null</c> means <see cref="HeatmapOptions.Default"/>.</param>
    public static IReadOnlyList<Image<Rgb24>> RenderBatch(Tensor layerRelevance, int height, int width, HeatmapOptions? options = null)
    {
        options ??= HeatmapOptions.Default;
        using var scope = NewDisposeScope();
        var intensity = ComputeIntensity(layerRelevance, height, width, options);
        var values = intensity.contiguous().data<float>().ToArray();
        int mapSize = height * width, count = values.Length / mapSize;
        var images = new List<Image<Rgb24>>(count);
        for (int b = 0; b < count; b++)
            images.Add(HeatmapRenderer.Colorize(values.AsSpan(b * mapSize, mapSize), width, height, options));
        return images;
    }

    /// <summary>Bilinear resize (align_corners = false) of [h,w] or [B,h,w] maps to [H,W] / [B,H,W].</summary>
    /// <param name="maps">The maps (float32).</param>
    /// <param name="height">Output height.</param>
    /// <param name="width">Output width.</param>
    public static Tensor Upsample(Tensor maps, int height, int width)
    {
        ArgumentNullException.ThrowIfNull(maps);
        if (maps.dim() is not (2 or 3))
            throw new ArgumentException($"Expected [h,w] or [B,h,w] maps, got shape [{string.Join(",", maps.shape)}].", nameof(maps));
        using var scope = NewDisposeScope();
        bool single = maps.dim() == 2;
        var batch = single ? maps.unsqueeze(0).unsqueeze(0) : maps.unsqueeze(1);
        if (batch.shape[2] == height && batch.shape[3] == width)
            return maps.to(ScalarType.Float32).clone().MoveToOuterDisposeScope();
        var resized = nn.functional.interpolate(batch.to(ScalarType.Float32), new long[] { height, width },
            mode: InterpolationMode.Bilinear, align_corners: false);
        return (single ? resized.squeeze(0).squeeze(0) : resized.squeeze(1)).contiguous().MoveToOuterDisposeScope();
    }
}
