using System.Text;
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
}
