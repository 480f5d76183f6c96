using FluentAssertions;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Imaging.Tests;

public class ImageGridTests
{
    [Fact]
    public void Grid_size_follows_cells_padding_and_title_band()
    {
        using var a = TestImages.Noise(30, 20, 1);
        using var b = TestImages.Noise(40, 10, 2);
        using var c = TestImages.Noise(10, 25, 3);
        var grid = new ImageGrid(2) { Padding = 4, TitleScale = 1 };
        grid.Add(a, "A").Add(b).Add(c, "C");
        grid.Rows.Should().Be(2);
        grid.TitleHeight.Should().Be(7 + 4);
        using var image = grid.Render();
        // cells are 40 wide and 11 + 25 high
        image.Width.Should().Be(2 * 40 + 3 * 4);
        image.Height.Should().Be(2 * (11 + 25) + 3 * 4);
    }

    [Fact]
    public void Images_are_copied_into_their_cells_and_titles_are_drawn()
    {
        using var red = new Image<Rgb24>(10, 10, new Rgb24(255, 0, 0));
        using var blue = new Image<Rgb24>(10, 10, new Rgb24(0, 0, 255));
        var grid = new ImageGrid(2) { Padding = 2, TitleScale = 1 };
        grid.Add(red, "I").Add(blue);
        using var image = grid.Render();
        int titleBand = 7 + 2;
        image[2 + 5, 2 + titleBand + 5].Should().Be(new Rgb24(255, 0, 0));
        image[2 + 10 + 2 + 5, 2 + titleBand + 5].Should().Be(new Rgb24(0, 0, 255));
        // The 'I' glyph has a vertical bar in its middle column, centred above the red cell.
        int textLeft = 2 + (10 - 5) / 2;
        image[textLeft + 2, 2 + 3].Should().Be(new Rgb24(0, 0, 0));
        image[0, 0].Should().Be(new Rgb24(255, 255, 255));
    }

    [Fact]
    public void Comparison_figure_has_input_column_and_two_rows_per_method()
    {
        using var scope = NewDisposeScope();
        using var input = TestImages.Gradient(128, 128);
        var heatmaps = new Dictionary<string, Tensor>
        {
            ["DTD"] = rand(new long[] { 128, 128 }),
            ["LRP-eps"] = randn(new long[] { 128, 128 }),
            ["Gradient"] = rand(new long[] { 8, 8 }), // resized to the image
        };
        using var figure = ImageGrid.Compare(input, heatmaps, HeatmapOptions.Paper);
        // "Gradient overlay" (16 characters) is too wide at scale 2 but fits at scale 1: one title line
        int padding = 6, titleBand = 7 * 2 + padding;
        figure.Width.Should().Be(4 * 128 + 5 * padding);
        figure.Height.Should().Be(2 * (titleBand + 128) + 3 * padding);
    }

    [Fact]
    public void Titles_too_wide_for_a_cell_wrap_at_separators_and_lose_no_character()
    {
        ImageGrid.WrapTitle("epsilon-plus-flat", 16).Should().Equal("epsilon-plus-", "flat");
        ImageGrid.WrapTitle("root overlay", 8).Should().Equal("root", "overlay");
        ImageGrid.WrapTitle("abcdefghij", 4).Should().Equal("abcd", "efgh", "ij");
        ImageGrid.WrapTitle("short", 16).Should().Equal("short");

        // a 96-pixel cell holds 16 characters at scale 1: "epsilon-plus-flat" (17) takes a second line
        using var cell = new Image<Rgb24>(96, 20);
        var one = new ImageGrid(1) { Padding = 4, TitleScale = 1 }.Add(cell, "epsilon-plus");
        var two = new ImageGrid(1) { Padding = 4, TitleScale = 1 }.Add(cell, "epsilon-plus-flat");
        two.TitleHeight.Should().Be(one.TitleHeight + 9);
        using var rendered = two.Render();
        rendered.Height.Should().Be(4 + two.TitleHeight + 20 + 4);
        // the second line ("flat") is drawn: some black pixel in the band of line 2
        var found = false;
        for (int y = 4 + 9; y < 4 + 9 + 7 && !found; y++)
            for (int x = 0; x < rendered.Width && !found; x++)
                found = rendered[x, y].Equals(new Rgb24(0, 0, 0));
        found.Should().BeTrue();
    }

    [Fact]
    public void Font_has_glyphs_for_letters_digits_and_punctuation()
    {
        foreach (char ch in "ABCXYZabcxyz0189.,:-_()%+/")
        {
            bool any = false;
            for (int x = 0; x < BitmapFont.GlyphWidth; x++)
                for (int y = 0; y < BitmapFont.GlyphHeight; y++)
                    any |= BitmapFont.IsPixelSet(ch, x, y);
            any.Should().BeTrue($"'{ch}' has a glyph");
        }
        BitmapFont.IsSupported('é').Should().BeFalse();
        BitmapFont.MeasureWidth("abc", 2).Should().Be((3 * 6 - 1) * 2);
        // Distinct glyphs for look-alikes.
        Glyph('O').Should().NotEqual(Glyph('0'));
        Glyph('l').Should().NotEqual(Glyph('1'));
    }

    private static bool[] Glyph(char ch)
    {
        var bits = new bool[BitmapFont.GlyphWidth * BitmapFont.GlyphHeight];
        for (int x = 0; x < BitmapFont.GlyphWidth; x++)
            for (int y = 0; y < BitmapFont.GlyphHeight; y++)
                bits[y * BitmapFont.GlyphWidth + x] = BitmapFont.IsPixelSet(ch, x, y);
        return bits;
    }

    [Fact]
    public void Png_output_decodes_back_to_the_same_pixels()
    {
        using var image = TestImages.Noise(17, 11, 4);
        var bytes = image.ToPngBytes();
        bytes[..4].Should().Equal(0x89, 0x50, 0x4E, 0x47);
        using var decoded = Image.Load<Rgb24>(bytes);
        decoded.Width.Should().Be(17);
        decoded.Height.Should().Be(11);
        ImageTensorConversion.GetRgbBytes(decoded).Should().Equal(ImageTensorConversion.GetRgbBytes(image));

        using var dir = new TempDirectory();
        var path = Path.Combine(dir.Path, "out.png");
        image.SavePng(path);
        using var loaded = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = null, CropSize = null }).LoadDisplayImage(path);
        loaded.Width.Should().Be(17);
        image.ToPngDataUri().Should().StartWith("data:image/png;base64,iVBOR");
    }

    [Fact]
    public void Sample_figure_is_written_for_visual_inspection()
    {
        // Writes a comparison figure next to the test binaries (not asserted beyond its size) so people can look at it.
        using var scope = NewDisposeScope();
        using var input = TestImages.Gradient(96, 96);
        var yy = arange(96).unsqueeze(1).expand(96, 96).to(ScalarType.Float32);
        var xx = arange(96).unsqueeze(0).expand(96, 96).to(ScalarType.Float32);
        var blob = exp(yy.sub(40).pow(2).add(xx.sub(60).pow(2)).neg().div(200));
        var signed = blob.sub(exp(yy.sub(70).pow(2).add(xx.sub(25).pow(2)).neg().div(150)));
        using var figure = ImageGrid.Compare(input, new Dictionary<string, Tensor> { ["Paper (Turbo)"] = blob, ["Signed"] = signed },
            HeatmapOptions.Paper with { MeanCropping = false });
        figure.SavePng(Path.Combine(AppContext.BaseDirectory, "imaging-sample-grid.png"));
        figure.Width.Should().BeGreaterThan(3 * 96);
    }
}
