using System.Text;
using System.Text.RegularExpressions;
using RootDtd;
using RootDtd.Composites;
using TorchSharp;
using FluentAssertions;
using RootDtd.Imaging;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace RootDtd.Imaging.Tests;

public sealed class PngMetadataTests
{
    [Fact]
    public void Written_pngs_carry_no_metadata_of_the_source_image()
    {
        using var image = new Image<Rgb24>(8, 6, new Rgb24(10, 20, 30));
        var exif = new ExifProfile();
        exif.SetValue(ExifTag.Artist, "secret-artist");
        exif.SetValue(ExifTag.GPSLatitudeRef, "N");
        image.Metadata.ExifProfile = exif;
        image.Metadata.XmpProfile = new SixLabors.ImageSharp.Metadata.Profiles.Xmp.XmpProfile(Encoding.UTF8.GetBytes("<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">secret-xmp</x:xmpmeta>"));

        var png = image.ToPngBytes();
        var text = Encoding.Latin1.GetString(png);
        text.Should().NotContain("secret").And.NotContain("eXIf").And.NotContain("iTXt").And.NotContain("tEXt");
        using var decoded = Image.Load<Rgb24>(png);
        decoded.Metadata.ExifProfile.Should().BeNull();
        decoded.Metadata.XmpProfile.Should().BeNull();
        decoded[3, 2].Should().Be(new Rgb24(10, 20, 30));
        image.Metadata.ExifProfile.Should().NotBeNull("the caller's image is not modified");
    }

    /// <summary>The chunk types of a PNG (its signature checked).</summary>
    private static List<string> Chunks(byte[] png)
    {
        png.Take(8).Should().Equal(new byte[] { 137, 80, 78, 71, 13, 10, 26, 10 });
        var types = new List<string>();
        for (var i = 8; i + 8 <= png.Length;)
        {
            var length = (png[i] << 24) | (png[i + 1] << 16) | (png[i + 2] << 8) | png[i + 3];
            types.Add(Encoding.ASCII.GetString(png, i + 4, 4));
            i += 12 + length;
        }
        return types;
    }

    [Fact]
    public void The_html_views_of_a_photo_with_exif_and_xmp_embed_pixels_only()
    {
        // a JPEG photo with an EXIF artist and an XMP packet, as cameras and editors write them
        var path = Path.Combine(Path.GetTempPath(), $"rootdtd-meta-{Guid.NewGuid():N}.jpg");
        using (var photo = new Image<Rgb24>(40, 36))
        {
            for (var y = 0; y < 36; y++)
                for (var x = 0; x < 40; x++)
                    photo[x, y] = new Rgb24((byte)(6 * x), (byte)(7 * y), 120);
            var exif = new ExifProfile();
            exif.SetValue(ExifTag.Artist, "secret-artist");
            photo.Metadata.ExifProfile = exif;
            photo.Metadata.XmpProfile = new SixLabors.ImageSharp.Metadata.Profiles.Xmp.XmpProfile(Encoding.UTF8.GetBytes("<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">secret-xmp</x:xmpmeta>"));
            photo.SaveAsJpeg(path);
        }
        try
        {
            Encoding.Latin1.GetString(File.ReadAllBytes(path)).Should().Contain("secret-artist").And.Contain("secret-xmp", "the photo does carry the metadata");
            var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = 32, CropSize = 32, Normalization = ImageNormalization.ImageNet });
            using var image = loader.Load(path);
            torch.manual_seed(3);
            using var net = torch.nn.Sequential(("conv", torch.nn.Conv2d(3, 4, 3, padding: 1)), ("relu", torch.nn.ReLU()),
                ("pool", torch.nn.AdaptiveAvgPool2d(1)), ("flatten", torch.nn.Flatten()), ("fc", torch.nn.Linear(4, 3)));
            using var explainer = new Explainer(net, MethodCatalog.Parse("epsilon"));
            using var x = image.ToBatch();
            using var e = explainer.Explain(x);
            foreach (var html in new[] { e.ToView(image).ToHtml(), ExplanationDisplay.ToHtml(e), image.DisplayImage.ToFigure("photo").ToHtml() })
            {
                var pngs = Regex.Matches(html, "data:image/png;base64,([A-Za-z0-9+/=]+)").Select(m => Convert.FromBase64String(m.Groups[1].Value)).ToList();
                pngs.Should().NotBeEmpty();
                foreach (var png in pngs)
                {
                    Chunks(png).Should().OnlyContain(t => t == "IHDR" || t == "PLTE" || t == "IDAT" || t == "IEND", "no eXIf, iTXt (XMP), tEXt or zTXt chunk");
                    Encoding.Latin1.GetString(png).Should().NotContain("secret");
                }
                Regex.Replace(html, "base64,[A-Za-z0-9+/=]+", "").Should().NotContain("secret");
            }
        }
        finally
        {
            File.Delete(path);
        }
    }
}
