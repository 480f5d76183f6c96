using System.Diagnostics;
using FluentAssertions;
using RootDtd.Evaluation.Synthetic;
using Xunit;

namespace RootDtd.Evaluation.Tests;

public class GeneratorTests
{
    [Fact]
    public void SameSeedGivesIdenticalBytes_DifferentSeedDiffers()
    {
        var g = new SyntheticDatasetGenerator();
        var a = g.Generate(7, 3);
        var b = new SyntheticDatasetGenerator().Generate(7, 3);
        a.Pixels.Should().Equal(b.Pixels);
        a.Mask.Should().Equal(b.Mask);
        var c = g.Generate(8, 3);
        c.Pixels.Should().NotEqual(a.Pixels);
    }

    [Fact]
    public void ParallelBatchEqualsSequentialGeneration()
    {
        var g = new SyntheticDatasetGenerator(new SyntheticOptions { Width = 40, Height = 32 });
        var many = g.GenerateMany(11, 20, start: 5);
        for (int i = 0; i < many.Length; i++)
        {
            var one = g.Generate(11, 5 + i);
            many[i].Pixels.Should().Equal(one.Pixels);
            many[i].Mask.Should().Equal(one.Mask);
            many[i].Index.Should().Be(5 + i);
        }
    }

    [Theory]
    [InlineData(64, 64)]
    [InlineData(96, 72)]
    [InlineData(224, 224)]
    public void SingleObjectOnPlainBackground_MaskIsExactlyTheChangedPixels(int w, int h)
    {
        var g = new SyntheticDatasetGenerator(new SyntheticOptions { Width = w, Height = h, Background = BackgroundStyle.Plain, NoiseAmplitude = 0, PlainColor = (90, 140, 200) });
        for (int label = 0; label < 6; label++)
        {
            for (int seed = 0; seed < 4; seed++)
            {
                var img = g.Generate(seed, 100 + label, label, distractors: 0);
                int maskCount = 0;
                for (int p = 0; p < w * h; p++)
                {
                    bool changed = img.Pixels[3 * p] != 90 || img.Pixels[3 * p + 1] != 140 || img.Pixels[3 * p + 2] != 200;
                    bool inMask = img.Mask[p] != 0;
                    changed.Should().Be(inMask, $"pixel {p} of label {label}, seed {seed}");
                    if (inMask)
                    {
                        img.Mask[p].Should().Be((byte)(label + 1));
                        maskCount++;
                    }
                }

                maskCount.Should().BeGreaterThan(w * h / 60, "the object is at least 0.4 of the shorter side wide");
            }
        }
    }

    [Fact]
    public void LabelledObjectIsFullyInsideTheImage()
    {
        var g = new SyntheticDatasetGenerator(new SyntheticOptions { Background = BackgroundStyle.Plain, NoiseAmplitude = 0 });
        foreach (var img in g.GenerateMany(3, 60))
        {
            for (int x = 0; x < 64; x++)
            {
                img.Mask[x].Should().Be(0);
                img.Mask[63 * 64 + x].Should().Be(0);
                img.Mask[x * 64].Should().Be(0);
                img.Mask[x * 64 + 63].Should().Be(0);
            }
        }
    }

    [Fact]
    public void EveryClassAppearsWithMatchingMaskValues()
    {
        var g = new SyntheticDatasetGenerator();
        var imgs = g.GenerateMany(1, 30);
        imgs.Select(i => i.Label).Distinct().Should().BeEquivalentTo(Enumerable.Range(0, 6));
        foreach (var i in imgs)
        {
            i.Mask.Where(v => v != 0).Distinct().Should().Equal((byte)(i.Label + 1));
            i.Mask.Count(v => v != 0).Should().BeGreaterThan(0);
        }

        g.Classes.Select(c => c.Name).Should().OnlyHaveUniqueItems().And.HaveCount(6);
        g.Classes.Select(c => c.Shape).Should().OnlyHaveUniqueItems();
        g.Classes.Select(c => c.Texture).Should().OnlyHaveUniqueItems();
    }

    [Fact]
    public void ClutteredImagesAreNotTrivial_DistractorsChangeTheBackground()
    {
        var plain = new SyntheticDatasetGenerator(new SyntheticOptions { Background = BackgroundStyle.Plain, NoiseAmplitude = 0, MinDistractors = 3, MaxDistractors = 3 });
        var img = plain.Generate(5, 0, 0, distractors: 3);
        int changedOutsideMask = Enumerable.Range(0, 64 * 64).Count(p => img.Mask[p] == 0 && (img.Pixels[3 * p] != 128 || img.Pixels[3 * p + 1] != 128 || img.Pixels[3 * p + 2] != 128));
        changedOutsideMask.Should().BeGreaterThan(0, "distractors are drawn outside the mask");
    }

    [Fact]
    public void ToTensorsHasExpectedShapesAndValues()
    {
        var g = new SyntheticDatasetGenerator(new SyntheticOptions { Width = 48, Height = 32, ClassCount = 4 });
        var imgs = g.GenerateMany(2, 5);
        var (x, m, y) = SyntheticDatasetGenerator.ToTensors(imgs);
        using (x) using (m) using (y)
        {
            x.shape.Should().Equal(5, 3, 32, 48);
            m.shape.Should().Equal(5, 32, 48);
            y.data<long>().ToArray().Should().Equal(0, 1, 2, 3, 0);
            x[2, 1, 7, 9].item<float>().Should().BeApproximately(imgs[2].Pixels[3 * (7 * 48 + 9) + 1] / 255f, 1e-6f);
            m[3, 10, 11].item<long>().Should().Be(imgs[3].Mask[10 * 48 + 11]);
        }
    }

    [Fact]
    public void ThousandsOfSmallImagesInSeconds()
    {
        var g = new SyntheticDatasetGenerator();
        g.GenerateMany(0, 50);
        var sw = Stopwatch.StartNew();
        var imgs = g.GenerateMany(0, 2000);
        sw.Stop();
        imgs.Should().HaveCount(2000);
        sw.Elapsed.Should().BeLessThan(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public void InvalidOptionsAreRejected()
    {
        FluentActions.Invoking(() => new SyntheticDatasetGenerator(new SyntheticOptions { ClassCount = 7 }))
            .Should().Throw<ArgumentOutOfRangeException>().WithMessage("*ClassCount*");
        FluentActions.Invoking(() => new SyntheticDatasetGenerator(new SyntheticOptions { Width = 8 }))
            .Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Width*");
        FluentActions.Invoking(() => new SyntheticDatasetGenerator().Generate(0, 0, label: 9, distractors: 0))
            .Should().Throw<ArgumentOutOfRangeException>().WithMessage("*label*");
    }
}
