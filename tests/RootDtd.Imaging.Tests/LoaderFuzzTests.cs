using System.Buffers.Binary;
using FluentAssertions;
using Xunit;
using Xunit.Abstractions;

namespace RootDtd.Imaging.Tests;

/// <summary>
/// Malformed input must surface as <see cref="ImageLoadException"/> naming the file: never another exception type,
/// a crash or a hang. Every test here loads each file through <see cref="ImageLoader.Load(string)"/>.
/// </summary>
public sealed class LoaderFuzzTests : IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly ITestOutputHelper _output;
    private readonly ImageLoader _loader = new(ImageLoadOptions.ResizeAndCrop(16));

    public LoaderFuzzTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => _dir.Dispose();

    private ImageLoadException ExpectFailure(string name, byte[] bytes)
    {
        var path = _dir.Write(name, bytes);
        var caught = LoadWithTimeout(path);
        caught.Should().NotBeNull($"{name} is malformed and must be refused");
        caught.Should().BeOfType<ImageLoadException>($"{name} must fail with our exception, got: {caught}");
        var error = (ImageLoadException)caught!;
        error.FilePath.Should().Be(path);
        error.Message.Should().Contain(path);
        return error;
    }

    /// <summary>Loads on a worker thread; fails the test if loading takes longer than 20 s (a hang).</summary>
    private Exception? LoadWithTimeout(string path)
    {
        Exception? caught = null;
        var worker = Task.Run(() =>
        {
            try { using var loaded = _loader.Load(path); }
            catch (Exception ex) { caught = ex; }
        });
        worker.Wait(TimeSpan.FromSeconds(20)).Should().BeTrue($"loading {path} must not hang");
        return caught;
    }

    /// <summary>Cut points: every byte of the first 64 and the last 64, and about 60 evenly spread in between.</summary>
    private static IEnumerable<int> CutPoints(int length)
    {
        var cuts = new SortedSet<int>();
        for (int i = 0; i < Math.Min(64, length); i++) cuts.Add(i);
        for (int i = Math.Max(0, length - 64); i < length; i++) cuts.Add(i);
        for (int i = 0; i < 60; i++) cuts.Add((int)((long)length * i / 60));
        return cuts;
    }

    [Theory]
    [InlineData("jpg")]
    [InlineData("png")]
    [InlineData("bmp")]
    public void Truncated_files_are_refused_at_every_cut_point(string format)
    {
        using var image = TestImages.Gradient(48, 40);
        var bytes = format switch
        {
            "jpg" => TestImages.Jpeg(image),
            "png" => TestImages.Png(image),
            _ => TestImages.Bmp(image),
        };
        using (_loader.Load(_dir.Write("complete." + format, bytes))) { } // the complete file loads

        var failures = new Dictionary<ImageLoadFailure, int>();
        int count = 0;
        foreach (int cut in CutPoints(bytes.Length))
        {
            var error = ExpectFailure($"cut{cut}.{format}", bytes[..cut]);
            failures[error.Failure] = failures.GetValueOrDefault(error.Failure) + 1;
            count++;
        }
        _output.WriteLine($"{format}: {bytes.Length} bytes, {count} cut points: " + string.Join(", ", failures.Select(kv => $"{kv.Key}={kv.Value}")));
        // Cut 0 is the empty file; every other cut is recognised as a truncation.
        failures.Should().BeEquivalentTo(new Dictionary<ImageLoadFailure, int>
        {
            [ImageLoadFailure.Empty] = 1,
            [ImageLoadFailure.Truncated] = count - 1,
        });
    }

    [Fact]
    public void Zero_length_file_is_refused_as_empty()
        => ExpectFailure("empty.png", []).Failure.Should().Be(ImageLoadFailure.Empty);

    [Fact]
    public void Random_bytes_are_refused()
    {
        var random = new Random(1234);
        foreach (int length in new[] { 1, 2, 7, 64, 1000, 20000 })
            for (int trial = 0; trial < 5; trial++)
            {
                var bytes = new byte[length];
                random.NextBytes(bytes);
                ExpectFailure($"random{length}_{trial}.bin", bytes);
            }
    }

    [Theory]
    [InlineData("png")]
    [InlineData("jpg")]
    [InlineData("bmp")]
    public void Valid_header_with_garbage_body_is_refused(string format)
    {
        var random = new Random(99);
        for (int trial = 0; trial < 20; trial++)
        {
            var garbage = new byte[200 + 100 * trial];
            random.NextBytes(garbage);
            garbage[0] = 0x00; // the body never happens to start with a valid JPEG marker
            byte[] header = format switch
            {
                // PNG signature + a valid IHDR chunk (8x8 RGB); the following chunks are garbage.
                "png" => TestImages.RawPng(8, 8, 0, new byte[64])[..33],
                // JPEG SOI + APP0 (JFIF); what follows is garbage.
                "jpg" => [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, (byte)'J', (byte)'F', (byte)'I', (byte)'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00],
                // BMP file header + BITMAPINFOHEADER for 64x64x24 whose pixel array is missing (garbage is too short).
                _ => BmpHeader(64, 64),
            };
            ExpectFailure($"garbage{trial}.{format}", [.. header, .. garbage]);
        }
    }

    [Fact]
    public void Png_whose_header_claims_100000_by_100000_pixels_is_refused_before_decoding()
    {
        var bytes = TestImages.RawPng(4, 4, 0, new byte[16], headerWidth: 100_000, headerHeight: 100_000);
        var error = ExpectFailure("huge.png", bytes);
        error.Failure.Should().Be(ImageLoadFailure.TooLarge);
        error.Message.Should().Contain("100000x100000");
    }

    [Fact]
    public void Pixel_limit_and_dimension_limit_are_configurable()
    {
        using var image = TestImages.Gradient(300, 200);
        var path = _dir.Write("medium.png", TestImages.Png(image));
        var byPixels = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = null, MaxPixels = 50_000 });
        ((Action)(() => byPixels.Load(path))).Should().Throw<ImageLoadException>().Where(e => e.Failure == ImageLoadFailure.TooLarge);
        var byDimension = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = null, MaxDimension = 256 });
        ((Action)(() => byDimension.Load(path))).Should().Throw<ImageLoadException>().Where(e => e.Failure == ImageLoadFailure.TooLarge);
        var byFileSize = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = null, MaxFileBytes = 100 });
        ((Action)(() => byFileSize.Load(path))).Should().Throw<ImageLoadException>().Where(e => e.Failure == ImageLoadFailure.TooLarge);
        using (new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = null, MaxPixels = 60_000 }).Load(path)) { }
    }

    [Theory]
    [InlineData("gif")]
    [InlineData("tiff")]
    public void Gif_and_tiff_are_refused_as_unsupported(string format)
    {
        using var image = TestImages.Gradient(16, 16);
        var bytes = format == "gif" ? TestImages.Gif(image) : TestImages.Tiff(image);
        ExpectFailure("image." + format, bytes).Failure.Should().Be(ImageLoadFailure.UnsupportedFormat);
    }

    [Fact]
    public void Missing_file_and_directory_are_refused()
    {
        var missing = Path.Combine(_dir.Path, "missing.png");
        ((Action)(() => _loader.Load(missing))).Should().Throw<ImageLoadException>()
            .Where(e => e.Failure == ImageLoadFailure.NotFound && e.FilePath == missing && e.Message.Contains(missing));
        ((Action)(() => _loader.Load(_dir.Path))).Should().Throw<ImageLoadException>()
            .Where(e => e.Failure == ImageLoadFailure.IoError);
    }

    [Fact]
    public void Png_with_a_corrupted_critical_chunk_fails_its_crc()
    {
        using var image = TestImages.Gradient(32, 32);
        var bytes = TestImages.Png(image);
        bytes[bytes.Length / 2] ^= 0x5A; // inside IDAT
        ExpectFailure("crc.png", bytes).Failure.Should().Be(ImageLoadFailure.Corrupt);
    }

    [Theory]
    [InlineData("jpg")]
    [InlineData("png")]
    [InlineData("bmp")]
    public void Random_byte_flips_either_load_or_raise_our_exception(string format)
    {
        using var image = TestImages.Gradient(40, 32);
        var original = format switch { "jpg" => TestImages.Jpeg(image), "png" => TestImages.Png(image), _ => TestImages.Bmp(image) };
        var random = new Random(7);
        int loaded = 0, refused = 0;
        for (int trial = 0; trial < 60; trial++)
        {
            var bytes = (byte[])original.Clone();
            int flips = 1 + random.Next(8);
            for (int f = 0; f < flips; f++) bytes[random.Next(bytes.Length)] = (byte)random.Next(256);
            var path = _dir.Write($"flip{trial}.{format}", bytes);
            var caught = LoadWithTimeout(path);
            if (caught is null) { loaded++; continue; }
            caught.Should().BeOfType<ImageLoadException>($"flip{trial}.{format}: {caught}");
            ((ImageLoadException)caught).FilePath.Should().Be(path);
            refused++;
        }
        _output.WriteLine($"{format}: {loaded} loaded, {refused} refused");
    }

    private static byte[] BmpHeader(int width, int height)
    {
        var header = new byte[54];
        header[0] = (byte)'B';
        header[1] = (byte)'M';
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(2), 54 + width * height * 3);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(10), 54);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(14), 40);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(18), width);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(22), height);
        BinaryPrimitives.WriteInt16LittleEndian(header.AsSpan(26), 1);
        BinaryPrimitives.WriteInt16LittleEndian(header.AsSpan(28), 24);
        return header;
    }
}
