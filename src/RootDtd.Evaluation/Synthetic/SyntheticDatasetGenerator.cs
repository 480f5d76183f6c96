using RootDtd.Evaluation.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Synthetic;

/// <summary>
/// Seeded generator of RGB images containing one labelled object (class = shape + texture) drawn on top of a
/// textured, cluttered background and distractor objects, with an exact pixel mask of the labelled object.
/// </summary>
/// <remarks>
/// <para>Class k is the pair (shape k, texture k) of <see cref="AllClasses"/>. Every distractor pairs a shape
/// with a texture of a <em>different</em> index, so no distractor is an instance of any class, yet every shape
/// and every texture also occurs on distractors: the class is decided only by the labelled object (shape and
/// texture together). Distractors may be cut by the image border or partly hidden by the labelled object; the
/// labelled object lies fully inside the image and is drawn last, without anti-aliasing, so its mask is exactly
/// the set of pixels it was drawn on (noise is added to all pixels afterwards).</para>
/// <para>Image <c>i</c> of seed <c>s</c> depends only on (s, i, options): generation is deterministic and can run in
/// parallel. Labels are balanced: label = i mod ClassCount.</para>
/// </remarks>
public sealed class SyntheticDatasetGenerator
{
    /// <summary>The six classes in index order (shape k with texture k).</summary>
    public static IReadOnlyList<SyntheticClass> AllClasses { get; } = new[]
    {
        new SyntheticClass("striped-disc", SyntheticShape.Disc, SyntheticTexture.Stripes),
        new SyntheticClass("checkered-square", SyntheticShape.Square, SyntheticTexture.Checker),
        new SyntheticClass("dotted-triangle", SyntheticShape.Triangle, SyntheticTexture.Dots),
        new SyntheticClass("solid-ring", SyntheticShape.Ring, SyntheticTexture.Solid),
        new SyntheticClass("banded-cross", SyntheticShape.Cross, SyntheticTexture.Concentric),
        new SyntheticClass("grid-star", SyntheticShape.Star, SyntheticTexture.Grid),
    };

    private static readonly SyntheticShape[] ShapeByIndex = AllClasses.Select(c => c.Shape).ToArray();
    private static readonly SyntheticTexture[] TextureByIndex = AllClasses.Select(c => c.Texture).ToArray();

    /// <summary>Creates a generator.</summary>
    /// <param name="options">Options; <see langword="null"/> = defaults (64×64, 6 classes, cluttered).</param>
    public SyntheticDatasetGenerator(SyntheticOptions? options = null)
    {
        Options = options ?? new SyntheticOptions();
        Options.Validate();
    }

    /// <summary>The options.</summary>
    public SyntheticOptions Options { get; }

    /// <summary>The classes in use (first <see cref="SyntheticOptions.ClassCount"/> of <see cref="AllClasses"/>).</summary>
    public IReadOnlyList<SyntheticClass> Classes => AllClasses.Take(Options.ClassCount).ToArray();

    /// <summary>Generates image <paramref name="index"/> of the stream <paramref name="seed"/>.</summary>
    /// <param name="seed">Stream seed.</param>
    /// <param name="index">Image index (≥ 0).</param>
    /// <returns>The image, mask and label.</returns>
    public SyntheticImage Generate(int seed, int index)
    {
        if (index < 0) throw new ArgumentOutOfRangeException(nameof(index), index, "Index must be ≥ 0.");
        return Render(seed, index, index % Options.ClassCount, null);
    }

    /// <summary>
    /// Generates image <paramref name="index"/> of the stream with an explicit label and distractor count (for tests
    /// and demonstrations).
    /// </summary>
    /// <param name="seed">Stream seed.</param>
    /// <param name="index">Image index (≥ 0).</param>
    /// <param name="label">Class of the labelled object, 0..ClassCount−1.</param>
    /// <param name="distractors">Number of distractors (≥ 0).</param>
    /// <returns>The image, mask and label.</returns>
    public SyntheticImage Generate(int seed, int index, int label, int distractors)
    {
        if (index < 0) throw new ArgumentOutOfRangeException(nameof(index), index, "Index must be ≥ 0.");
        if (label < 0 || label >= Options.ClassCount) throw new ArgumentOutOfRangeException(nameof(label), label, $"Label must be in 0..{Options.ClassCount - 1}.");
        if (distractors < 0) throw new ArgumentOutOfRangeException(nameof(distractors), distractors, "Must be ≥ 0.");
        return Render(seed, index, label, distractors);
    }

    /// <summary>Generates images <paramref name="start"/> … <paramref name="start"/>+<paramref name="count"/>−1 in parallel.</summary>
    /// <param name="seed">Stream seed.</param>
    /// <param name="count">Number of images (≥ 0).</param>
    /// <param name="start">First index (≥ 0).</param>
    /// <returns>The images in index order.</returns>
    public SyntheticImage[] GenerateMany(int seed, int count, int start = 0)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "Must be ≥ 0.");
        if (start < 0) throw new ArgumentOutOfRangeException(nameof(start), start, "Must be ≥ 0.");
        var result = new SyntheticImage[count];
        Parallel.For(0, count, i => result[i] = Generate(seed, start + i));
        return result;
    }

    /// <summary>
    /// Converts images to tensors: <c>Images</c> float [B,3,H,W] in [0,1] (not normalised), <c>Masks</c> int64
    /// [B,H,W] (0 background, label+1 object) and <c>Labels</c> int64 [B], on the CPU.
    /// </summary>
    /// <param name="images">Images of identical size.</param>
    /// <returns>The three tensors; the caller owns them.</returns>
    public static (Tensor Images, Tensor Masks, Tensor Labels) ToTensors(IReadOnlyList<SyntheticImage> images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.Count == 0) throw new ArgumentException("Expected at least one image.", nameof(images));
        int w = images[0].Width, h = images[0].Height, plane = w * h;
        if (images.Any(i => i.Width != w || i.Height != h)) throw new ArgumentException("All images must have the same size.", nameof(images));
        var pixels = new byte[images.Count * plane * 3];
        var masks = new byte[images.Count * plane];
        var labels = new long[images.Count];
        for (int b = 0; b < images.Count; b++)
        {
            Buffer.BlockCopy(images[b].Pixels, 0, pixels, b * plane * 3, plane * 3);
            Buffer.BlockCopy(images[b].Mask, 0, masks, b * plane, plane);
            labels[b] = images[b].Label;
        }

        using var scope = torch.NewDisposeScope();
        var x = torch.tensor(pixels, new long[] { images.Count, h, w, 3 }).permute(0, 3, 1, 2).to(ScalarType.Float32).div_(255f).contiguous();
        var m = torch.tensor(masks, new long[] { images.Count, h, w }).to(ScalarType.Int64);
        var y = torch.tensor(labels);
        return (x.MoveToOuterDisposeScope(), m.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Generates a VOC-style folder (see <see cref="VocWriter"/>): ids <c>syn_000000</c>… in the order train, val, test,
    /// all from one seeded stream.
    /// </summary>
    /// <param name="root">Output folder (created if missing).</param>
    /// <param name="seed">Stream seed.</param>
    /// <param name="train">Training images.</param>
    /// <param name="val">Validation images.</param>
    /// <param name="test">Test images.</param>
    public void WriteVoc(string root, int seed, int train, int val, int test)
    {
        if (train < 0 || val < 0 || test < 0) throw new ArgumentOutOfRangeException(nameof(train), "Split sizes must be ≥ 0.");
        var all = GenerateMany(seed, train + val + test);
        var splits = new Dictionary<string, IReadOnlyList<string>>
        {
            ["train"] = all.Take(train).Select(i => i.Id).ToArray(),
            ["val"] = all.Skip(train).Take(val).Select(i => i.Id).ToArray(),
            ["test"] = all.Skip(train + val).Select(i => i.Id).ToArray(),
        };
        VocWriter.Write(root, Classes.Select(c => c.Name).ToArray(), all.Select(i => new VocRecord(i.Id, i.Width, i.Height, i.Pixels, i.Mask)), splits);
    }

    // ---------------------------------------------------------------- rendering

    private SyntheticImage Render(int seed, int index, int label, int? distractorCount)
    {
        var o = Options;
        int w = o.Width, h = o.Height;
        var rng = new SplitMix(seed, index);
        var img = new byte[w * h * 3];
        var mask = new byte[w * h];
        double side = Math.Min(w, h);

        // Labelled object parameters are drawn first so that they do not depend on the clutter settings.
        var target = RandomObject(ref rng, label, label, side * rng.Uniform(o.MinObjectScale, o.MaxObjectScale) / 2, w, h, inside: true);

        DrawBackground(ref rng, img, w, h);
        int nd = distractorCount ?? rng.Int(o.MinDistractors, o.MaxDistractors + 1);
        for (int d = 0; d < nd; d++)
        {
            int s = rng.Int(0, ShapeByIndex.Length);
            int t = (s + rng.Int(1, TextureByIndex.Length)) % TextureByIndex.Length; // t != s
            var obj = RandomObject(ref rng, s, t, side * rng.Uniform(o.MinDistractorScale, o.MaxDistractorScale) / 2, w, h, inside: false);
            DrawObject(obj, img, null, 0, w, h);
        }

        DrawObject(target, img, mask, (byte)(label + 1), w, h);

        if (o.NoiseAmplitude > 0)
        {
            int amp = o.NoiseAmplitude;
            for (int p = 0; p < img.Length; p++)
                img[p] = Clamp(img[p] + (int)(rng.Next() % (ulong)(amp + 1)) - amp / 2);
        }

        return new SyntheticImage(index, label, w, h, img, mask);
    }

    private ObjectSpec RandomObject(ref SplitMix rng, int shape, int texture, double radius, int w, int h, bool inside)
    {
        double extent = radius * 1.05 + 1;
        double cx, cy;
        if (inside)
        {
            cx = rng.Uniform(extent, Math.Max(extent, w - extent));
            cy = rng.Uniform(extent, Math.Max(extent, h - extent));
        }
        else
        {
            cx = rng.Uniform(0, w);
            cy = rng.Uniform(0, h);
        }

        double angle = rng.Uniform(0, 2 * Math.PI);
        double freq = rng.Uniform(1.6, 2.4);
        double phase = rng.Uniform(0, 1);
        var a = RandomColor(ref rng);
        var b = RandomColor(ref rng);
        for (int tries = 0; tries < 64 && Distance(a, b) < 180; tries++) b = RandomColor(ref rng);
        if (Options.Background == BackgroundStyle.Plain)
        {
            var bg = Options.PlainColor;
            for (int tries = 0; tries < 64 && Distance(a, bg) < 90; tries++) a = RandomColor(ref rng);
            for (int tries = 0; tries < 64 && (Distance(b, bg) < 90 || Distance(a, b) < 120); tries++) b = RandomColor(ref rng);
            if (Distance(a, bg) == 0 || Distance(b, bg) == 0) b = ((byte)(255 - bg.R), (byte)(255 - bg.G), (byte)(255 - bg.B));
        }

        return new ObjectSpec(ShapeByIndex[shape], TextureByIndex[texture], cx, cy, radius, angle, freq, phase, a, b);
    }

    private void DrawBackground(ref SplitMix rng, byte[] img, int w, int h)
    {
        var o = Options;
        if (o.Background == BackgroundStyle.Plain)
        {
            for (int p = 0; p < w * h; p++)
            {
                img[3 * p] = o.PlainColor.R;
                img[3 * p + 1] = o.PlainColor.G;
                img[3 * p + 2] = o.PlainColor.B;
            }

            return;
        }

        var c1 = RandomColor(ref rng);
        var c2 = RandomColor(ref rng);
        double dir = rng.Uniform(0, 2 * Math.PI), dx = Math.Cos(dir), dy = Math.Sin(dir);
        double span = Math.Abs(dx) * w + Math.Abs(dy) * h, offset = Math.Min(0, dx * w) + Math.Min(0, dy * h);
        for (int y = 0; y < h; y++)
        {
            for (int x = 0; x < w; x++)
            {
                double t = ((x + 0.5) * dx + (y + 0.5) * dy - offset) / span;
                int p = 3 * (y * w + x);
                img[p] = Clamp((int)(c1.R + (c2.R - c1.R) * t));
                img[p + 1] = Clamp((int)(c1.G + (c2.G - c1.G) * t));
                img[p + 2] = Clamp((int)(c1.B + (c2.B - c1.B) * t));
            }
        }

        if (o.Background != BackgroundStyle.Cluttered) return;
        double side = Math.Min(w, h);
        int blobs = rng.Int(0, o.MaxClutterBlobs + 1);
        for (int i = 0; i < blobs; i++)
        {
            double cx = rng.Uniform(0, w), cy = rng.Uniform(0, h);
            double rx = side * rng.Uniform(0.05, 0.25), ry = side * rng.Uniform(0.05, 0.25), th = rng.Uniform(0, Math.PI);
            var c = RandomColor(ref rng);
            int alpha = rng.Int(90, 200);
            double ct = Math.Cos(th), st = Math.Sin(th), r = Math.Max(rx, ry);
            int x0 = Math.Max(0, (int)(cx - r)), x1 = Math.Min(w - 1, (int)(cx + r) + 1);
            int y0 = Math.Max(0, (int)(cy - r)), y1 = Math.Min(h - 1, (int)(cy + r) + 1);
            for (int y = y0; y <= y1; y++)
            {
                for (int x = x0; x <= x1; x++)
                {
                    double px = x + 0.5 - cx, py = y + 0.5 - cy;
                    double u = (ct * px + st * py) / rx, v = (-st * px + ct * py) / ry;
                    if (u * u + v * v <= 1) Blend(img, 3 * (y * w + x), c, alpha);
                }
            }
        }

        int lines = rng.Int(0, o.MaxClutterLines + 1);
        for (int i = 0; i < lines; i++)
        {
            double ax = rng.Uniform(0, w), ay = rng.Uniform(0, h), bx = rng.Uniform(0, w), by = rng.Uniform(0, h);
            double half = rng.Uniform(0.5, Math.Max(0.75, side / 40));
            var c = RandomColor(ref rng);
            double lx = bx - ax, ly = by - ay, len2 = Math.Max(1e-9, lx * lx + ly * ly);
            int x0 = Math.Max(0, (int)(Math.Min(ax, bx) - half)), x1 = Math.Min(w - 1, (int)(Math.Max(ax, bx) + half) + 1);
            int y0 = Math.Max(0, (int)(Math.Min(ay, by) - half)), y1 = Math.Min(h - 1, (int)(Math.Max(ay, by) + half) + 1);
            for (int y = y0; y <= y1; y++)
            {
                for (int x = x0; x <= x1; x++)
                {
                    double px = x + 0.5 - ax, py = y + 0.5 - ay;
                    double t = Math.Clamp((px * lx + py * ly) / len2, 0, 1);
                    double ex = px - t * lx, ey = py - t * ly;
                    if (ex * ex + ey * ey <= half * half) Blend(img, 3 * (y * w + x), c, 255);
                }
            }
        }
    }

    private static void DrawObject(in ObjectSpec o, byte[] img, byte[]? mask, byte maskValue, int w, int h)
    {
        double extent = o.Radius * 1.05 + 1;
        int x0 = Math.Max(0, (int)Math.Floor(o.Cx - extent)), x1 = Math.Min(w - 1, (int)Math.Ceiling(o.Cx + extent));
        int y0 = Math.Max(0, (int)Math.Floor(o.Cy - extent)), y1 = Math.Min(h - 1, (int)Math.Ceiling(o.Cy + extent));
        double c = Math.Cos(o.Angle), s = Math.Sin(o.Angle), inv = 1.0 / o.Radius;
        for (int y = y0; y <= y1; y++)
        {
            for (int x = x0; x <= x1; x++)
            {
                double dx = (x + 0.5 - o.Cx) * inv, dy = (y + 0.5 - o.Cy) * inv;
                double u = c * dx + s * dy, v = -s * dx + c * dy;
                if (!InShape(o.Shape, u, v)) continue;
                var col = TexturePrimary(o.Texture, u, v, o.Frequency, o.Phase) ? o.ColorA : o.ColorB;
                int p = y * w + x;
                img[3 * p] = col.R;
                img[3 * p + 1] = col.G;
                img[3 * p + 2] = col.B;
                if (mask is not null) mask[p] = maskValue;
            }
        }
    }

    private static readonly double StarInner = 0.42;
    private static readonly double StarSector = Math.PI / 5; // 36°
    private static readonly double StarP2X = StarInner * Math.Cos(StarSector), StarP2Y = StarInner * Math.Sin(StarSector);

    private static bool InShape(SyntheticShape shape, double u, double v)
    {
        switch (shape)
        {
            case SyntheticShape.Disc:
                return u * u + v * v <= 1;
            case SyntheticShape.Square:
                return Math.Abs(u) <= 0.75 && Math.Abs(v) <= 0.75;
            case SyntheticShape.Triangle:
                return v >= -0.5 && Math.Sqrt(3) * u + v <= 1 && -Math.Sqrt(3) * u + v <= 1;
            case SyntheticShape.Ring:
                double r2 = u * u + v * v;
                return r2 <= 1 && r2 >= 0.55 * 0.55;
            case SyntheticShape.Cross:
                return (Math.Abs(u) <= 0.3 && Math.Abs(v) <= 1) || (Math.Abs(v) <= 0.3 && Math.Abs(u) <= 1);
            default: // Star: fold the angle into [0, 36°] and test against the edge outer(0°) → inner(36°).
                double rho = Math.Sqrt(u * u + v * v);
                if (rho > 1) return false;
                if (rho <= StarInner * 0.8) return true;
                double a = Math.Atan2(v, u) + Math.PI / 2; // a point of the star faces up
                double period = 2 * StarSector;
                a %= period;
                if (a < 0) a += period;
                if (a > StarSector) a = period - a;
                double qx = rho * Math.Cos(a), qy = rho * Math.Sin(a);
                return (StarP2X - 1) * qy - StarP2Y * (qx - 1) >= 0;
        }
    }

    private static bool TexturePrimary(SyntheticTexture texture, double u, double v, double f, double phase)
    {
        switch (texture)
        {
            case SyntheticTexture.Solid:
                return true;
            case SyntheticTexture.Stripes:
                return (((int)Math.Floor(u * f + phase + 16)) & 1) == 0;
            case SyntheticTexture.Checker:
                return ((((int)Math.Floor(u * f + phase + 16)) + ((int)Math.Floor(v * f + phase + 16))) & 1) == 0;
            case SyntheticTexture.Dots:
            {
                double fu = Frac(u * f + phase) - 0.5, fv = Frac(v * f + phase) - 0.5;
                return fu * fu + fv * fv < 0.09;
            }

            case SyntheticTexture.Concentric:
                return (((int)Math.Floor(Math.Sqrt(u * u + v * v) * f * 1.5 + phase)) & 1) == 0;
            default: // Grid
                return Math.Abs(Frac(u * f + phase) - 0.5) > 0.32 || Math.Abs(Frac(v * f + phase) - 0.5) > 0.32;
        }
    }

    private static double Frac(double x) => x - Math.Floor(x);

    private static (byte R, byte G, byte B) RandomColor(ref SplitMix rng) => ((byte)rng.Int(0, 256), (byte)rng.Int(0, 256), (byte)rng.Int(0, 256));

    private static int Distance((byte R, byte G, byte B) a, (byte R, byte G, byte B) b) => Math.Abs(a.R - b.R) + Math.Abs(a.G - b.G) + Math.Abs(a.B - b.B);

    private static void Blend(byte[] img, int p, (byte R, byte G, byte B) c, int alpha)
    {
        img[p] = (byte)((img[p] * (255 - alpha) + c.R * alpha) / 255);
        img[p + 1] = (byte)((img[p + 1] * (255 - alpha) + c.G * alpha) / 255);
        img[p + 2] = (byte)((img[p + 2] * (255 - alpha) + c.B * alpha) / 255);
    }

    private static byte Clamp(int v) => (byte)(v < 0 ? 0 : v > 255 ? 255 : v);

    private readonly record struct ObjectSpec(
        SyntheticShape Shape, SyntheticTexture Texture, double Cx, double Cy, double Radius, double Angle, double Frequency, double Phase,
        (byte R, byte G, byte B) ColorA, (byte R, byte G, byte B) ColorB);

    /// <summary>SplitMix64: small, fast and identical on every platform (unlike System.Random's unseeded variants).</summary>
    private struct SplitMix
    {
        private ulong _state;

        public SplitMix(int seed, int index)
        {
            _state = Mix((ulong)(uint)seed * 0x9E3779B97F4A7C15UL) ^ Mix(((ulong)(uint)index + 0x632BE59BD9B4E019UL) * 0xBF58476D1CE4E5B9UL);
        }

        public ulong Next() => Mix(_state += 0x9E3779B97F4A7C15UL);

        public double Uniform(double lo, double hi) => lo + (hi - lo) * ((Next() >> 11) * (1.0 / (1UL << 53)));

        public int Int(int lo, int hiExclusive) => lo + (int)(Next() % (ulong)(hiExclusive - lo));

        private static ulong Mix(ulong z)
        {
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }
}
