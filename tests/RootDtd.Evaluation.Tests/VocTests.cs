using FluentAssertions;
using RootDtd.Imaging;
using RootDtd.Evaluation.Data;
using RootDtd.Evaluation.Synthetic;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace RootDtd.Evaluation.Tests;

public sealed class VocTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "rootdtd-voc-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    private SyntheticDatasetGenerator WriteFixture(int w = 40, int h = 32)
    {
        var g = new SyntheticDatasetGenerator(new SyntheticOptions { Width = w, Height = h, ClassCount = 4 });
        g.WriteVoc(_root, seed: 9, train: 3, val: 2, test: 1);
        return g;
    }

    [Fact]
    public void WritesVocLayout()
    {
        WriteFixture();
        File.ReadAllLines(Path.Combine(_root, "ImageSets", "Segmentation", "train.txt")).Should().Equal("syn_000000", "syn_000001", "syn_000002");
        File.ReadAllLines(Path.Combine(_root, "ImageSets", "Segmentation", "val.txt")).Should().Equal("syn_000003", "syn_000004");
        File.ReadAllLines(Path.Combine(_root, "ImageSets", "Segmentation", "test.txt")).Should().Equal("syn_000005");
        File.ReadAllLines(Path.Combine(_root, "labels.txt")).Should().Equal("striped-disc", "checkered-square", "dotted-triangle", "solid-ring");
        Directory.GetFiles(Path.Combine(_root, "JPEGImages"), "*.png").Should().HaveCount(6);
        Directory.GetFiles(Path.Combine(_root, "SegmentationClass"), "*.png").Should().HaveCount(6);
    }

    [Fact]
    public void ReaderReturnsTheGeneratedImagesMasksAndLabels()
    {
        var g = WriteFixture();
        var ds = new VocDataset(_root, new VocReaderOptions { Split = "val" });
        ds.Ids.Should().Equal("syn_000003", "syn_000004");
        ds.ClassNames.Should().HaveCount(4);
        var norm = ImageNormalization.ImageNet;
        for (int i = 0; i < 2; i++)
        {
            var truth = g.Generate(9, 3 + i);
            using var s = ds.Load(i);
            s.Label.Should().Be(truth.Label);
            s.Image.shape.Should().Equal(3, 32, 40);
            s.Mask.data<long>().ToArray().Should().Equal(truth.Mask.Select(v => (long)v));
            var img = s.Image.data<float>().ToArray();
            for (int p = 0; p < 32 * 40; p += 37)
                for (int c = 0; c < 3; c++)
                    img[c * 32 * 40 + p].Should().BeApproximately((float)((truth.Pixels[3 * p + c] / 255.0 - norm.Mean[c]) / norm.Std[c]), 1e-5f);
        }

        using var batch = ds.LoadBatch(0, 2);
        batch.Images.shape.Should().Equal(2, 3, 32, 40);
        batch.Masks!.shape.Should().Equal(2, 32, 40);
        batch.Labels.data<long>().ToArray().Should().Equal(g.Generate(9, 3).Label, g.Generate(9, 4).Label);
        batch.Ids.Should().Equal("syn_000003", "syn_000004");
    }

    [Fact]
    public void ResizeAndCropAreAppliedIdenticallyToImageAndMask()
    {
        var g = WriteFixture(w: 48, h: 32);
        var ds = new VocDataset(_root, new VocReaderOptions { Split = "train", Resize = VocResize.ShorterSide, ResizeTo = 64, CropSize = 56, Normalization = ImageNormalization.Identity });
        using var s = ds.Load(1);
        s.Image.shape.Should().Equal(3, 56, 56);
        s.Mask.shape.Should().Equal(56, 56);
        // 48×32 → 96×64 (scale 2) → crop x0 = 20, y0 = 4: mask pixel (y, x) = original (floor((y + 4) / 2), floor((x + 20) / 2)).
        var truth = g.Generate(9, 1);
        var mask = s.Mask.data<long>().ToArray();
        for (int y = 0; y < 56; y++)
            for (int x = 0; x < 56; x++)
                mask[y * 56 + x].Should().Be(truth.Mask[((y + 4) / 2) * 48 + (x + 20) / 2]);
        // Bilinear up-sampling by 2 of a pixel inside a flat 2×2 region keeps its value (within rounding).
        s.Image.min().item<float>().Should().BeGreaterThanOrEqualTo(0f);
        s.Image.max().item<float>().Should().BeLessThanOrEqualTo(1f);
    }

    [Fact]
    public void SquareResizeGivesBatchableImages()
    {
        WriteFixture(w: 48, h: 32);
        var ds = new VocDataset(_root, new VocReaderOptions { Split = "train", Resize = VocResize.Square, ResizeTo = 24 });
        var batches = ds.Batches(2).ToList();
        batches.Select(b => b.Count).Should().Equal(2, 1);
        batches[0].Images.shape.Should().Equal(2, 3, 24, 24);
        foreach (var b in batches) b.Dispose();
    }

    [Fact]
    public void MissingImageFileGivesAClearError()
    {
        WriteFixture();
        File.Delete(Path.Combine(_root, "JPEGImages", "syn_000004.png"));
        var ds = new VocDataset(_root);
        FluentActions.Invoking(() => ds.Load(1)).Should().Throw<FileNotFoundException>().WithMessage("*syn_000004*");
        File.Delete(Path.Combine(_root, "SegmentationClass", "syn_000003.png"));
        FluentActions.Invoking(() => ds.Load(0)).Should().Throw<FileNotFoundException>().WithMessage("*SegmentationClass*syn_000003.png*");
        FluentActions.Invoking(() => new VocDataset(_root, new VocReaderOptions { Split = "nope" })).Should().Throw<FileNotFoundException>().WithMessage("*nope.txt*");
    }

    [Fact]
    public void ImageLabelsFileOverridesMaskLabels()
    {
        WriteFixture();
        File.WriteAllLines(Path.Combine(_root, "image_labels.txt"), new[] { "syn_000003 17", "syn_000004 2" });
        var ds = new VocDataset(_root, new VocReaderOptions { LabelSource = VocLabelSource.ImageLabelsFile });
        using var s = ds.Load(0);
        s.Label.Should().Be(17);
    }

    [Fact]
    public void LargestMaskClassWinsAndIgnoreIsSkipped()
    {
        // VOC-like mask with two classes and an ignore border.
        Directory.CreateDirectory(Path.Combine(_root, "ImageSets", "Segmentation"));
        Directory.CreateDirectory(Path.Combine(_root, "JPEGImages"));
        Directory.CreateDirectory(Path.Combine(_root, "SegmentationClass"));
        var mask = new byte[8 * 8];
        for (int p = 0; p < 64; p++) mask[p] = (byte)(p < 10 ? 255 : p < 20 ? 15 : p < 23 ? 3 : 0);
        File.WriteAllBytes(Path.Combine(_root, "SegmentationClass", "a.png"), MaskPng.Encode(mask, 8, 8));
        using (var img = new Image<Rgb24>(8, 8)) img.SaveAsJpeg(Path.Combine(_root, "JPEGImages", "a.jpg"));
        File.WriteAllLines(Path.Combine(_root, "ImageSets", "Segmentation", "val.txt"), new[] { "a" });
        using var s = new VocDataset(_root).Load(0);
        s.Label.Should().Be(14, "class value 15 has the most pixels; labels are value − 1");
    }

    [Fact]
    public void MaskPngPaletteIsTheVocColourMapAndDecodesGreyPngs()
    {
        var values = new byte[] { 0, 1, 2, 15, 255, 7 };
        var png = MaskPng.Encode(values, 3, 2);
        MaskPng.Decode(png).Values.Should().Equal(values.Select(v => (int)v));
        using (var decoded = Image.Load<Rgb24>(png))
        {
            decoded[1, 0].Should().Be(new Rgb24(128, 0, 0), "VOC class 1 (aeroplane)");
            decoded[2, 0].Should().Be(new Rgb24(0, 128, 0));
            decoded[1, 1].Should().Be(new Rgb24(224, 224, 192), "VOC ignore colour");
        }

        var grey = new Image<L8>(5, 3);
        for (int y = 0; y < 3; y++) for (int x = 0; x < 5; x++) grey[x, y] = new L8((byte)(y * 5 + x + 200));
        using var ms = new MemoryStream();
        grey.SaveAsPng(ms);
        MaskPng.Decode(ms.ToArray()).Values.Should().Equal(Enumerable.Range(200, 15));
        FluentActions.Invoking(() => MaskPng.Decode(new byte[] { 1, 2, 3 })).Should().Throw<InvalidDataException>();
    }
}
