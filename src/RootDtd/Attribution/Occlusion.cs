using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Attribution;

/// <summary>
/// Occlusion (Zeiler and Fergus 2014): a square window of every channel is set to <see cref="Fill"/> (in the model's input
/// space) at each position, and the drop of the target logit f(x) − f(x with the window filled) is credited to the
/// window's pixels; a pixel's value is the mean over the windows that cover it (Captum's convention). Window positions
/// are 0, s, 2s, … along each axis, plus one last window flush with the border when the stride does not reach it, so
/// every pixel is covered. Positions are evaluated in batches of at most <see cref="AttributionProcedure.MaxImagesPerPass"/>
/// images (no gradients). The map is spread evenly over the channels.
/// </summary>
public sealed class Occlusion : AttributionProcedure
{
    /// <summary>Default window side in pixels (zennit's default).</summary>
    public const int DefaultWindow = 8;

    /// <summary>Creates the procedure.</summary>
    /// <param name="window">Window side in pixels (≥ 1).</param>
    /// <param name="stride">Stride in pixels (≥ 1); <see langword="null"/> = the window (no overlap).</param>
    /// <param name="fill">Value written into the window (model input space).</param>
    public Occlusion(int window = DefaultWindow, int? stride = null, double fill = 0)
    {
        if (window < 1) throw new ArgumentOutOfRangeException(nameof(window), window, "The occlusion window must be ≥ 1 pixel.");
        var s = stride ?? window;
        if (s < 1) throw new ArgumentOutOfRangeException(nameof(stride), s, "The occlusion stride must be ≥ 1 pixel.");
        if (!double.IsFinite(fill)) throw new ArgumentOutOfRangeException(nameof(fill), fill, "The occlusion fill value must be finite.");
        Window = window;
        Stride = s;
        Fill = fill;
    }

    /// <summary>Window side.</summary>
    public int Window { get; }

    /// <summary>Stride.</summary>
    public int Stride { get; }

    /// <summary>Fill value.</summary>
    public double Fill { get; }

    /// <summary>Window start positions along an axis of <paramref name="size"/> pixels.</summary>
    public IReadOnlyList<long> Positions(long size)
    {
        var w = Math.Min(Window, size);
        var list = new List<long>();
        for (long p = 0; p + w <= size; p += Stride) list.Add(p);
        if (list[^1] + w < size) list.Add(size - w);
        return list;
    }

    /// <inheritdoc />
    public override AttributionResult Attribute(AttributionContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var x = context.Input;
        if (x.dim() != 4) throw new ArgumentException($"Occlusion needs image inputs [B,C,H,W]; got [{string.Join(", ", x.shape)}].");
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var (b, h, w) = ((int)x.shape[0], x.shape[2], x.shape[3]);
        var wh = Math.Min(Window, h);
        var ww = Math.Min(Window, w);
        var windows = Positions(h).SelectMany(r => Positions(w).Select(c => (Row: r, Column: c))).ToList();
        var clean = context.TargetScore(x);
        var score = torch.zeros(new long[] { b, h, w }, dtype: x.dtype, device: x.device);
        var cover = torch.zeros(new long[] { 1, h, w }, dtype: x.dtype, device: x.device);
        var perPass = Math.Max(1, MaxImagesPerPass / b);
        for (var first = 0; first < windows.Count; first += perPass)
        {
            using var step = torch.NewDisposeScope();
            var chunk = windows.Skip(first).Take(perPass).ToList();
            // masks [k,1,H,W]: 1 inside window j
            var masks = torch.zeros(new long[] { chunk.Count, 1, h, w }, dtype: x.dtype, device: x.device);
            for (var j = 0; j < chunk.Count; j++) masks[j, 0, TensorIndex.Slice(chunk[j].Row, chunk[j].Row + wh), TensorIndex.Slice(chunk[j].Column, chunk[j].Column + ww)].fill_(1);
            var m = masks.unsqueeze(1); // [k,1,1,H,W] against x [1,B,C,H,W]
            var occluded = (x.unsqueeze(0) * (1 - m) + Fill * m).reshape(new long[] { chunk.Count * b }.Concat(x.shape.Skip(1)).ToArray());
            var drop = clean.repeat(chunk.Count) - context.TargetScore(occluded); // [k·B], copy-major
            score.add_((drop.view(chunk.Count, b, 1, 1) * masks).sum(new long[] { 0 }));
            cover.add_(masks.sum(new long[] { 0 }));
        }
        var map = score / cover;
        return new AttributionResult(context.SpreadOverChannels(map).MoveToOuterDisposeScope());
    }

    /// <inheritdoc />
    public override string ToString() => $"Occlusion(window={Window}, stride={Stride}, fill={Fill})";
}
