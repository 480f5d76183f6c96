using System.Collections;
using System.Reflection;
using System.Text.RegularExpressions;
using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Display;
using RootDtd.Imaging;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Imaging.Tests;

/// <summary>
/// The notebook display through .NET Interactive's formatter-source convention, exercised the way the kernel's
/// <c>Formatter</c> does it: find the attribute by its type name, create the source, call <c>CreateTypeFormatters()</c>,
/// read <c>MimeType</c>/<c>Type</c> and invoke <c>Format(object, TextWriter)</c> — all by reflection.
/// </summary>
public sealed class NotebookDisplayTests
{
    private static readonly string[] ClassNames = { "cat", "dog", "bird<&>", "fish", "frog" };

    private static nn.Module<Tensor, Tensor> SmallNet()
    {
        torch.manual_seed(7);
        var net = nn.Sequential(nn.Conv2d(3, 6, 3, padding: 1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding: 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5));
        net.eval();
        return net;
    }

    private static LoadedImage LoadImage(int width, int height, int size)
    {
        using var source = TestImages.Noise(width, height, seed: 3);
        return new ImageLoader(ImageLoadOptions.ResizeAndCrop(size)).Load(TestImages.Png(source), "noise.png");
    }

    /// <summary>Formats <paramref name="value"/> as the kernel would, returning null when no formatter for the MIME type exists.</summary>
    private static (string? Output, string[] Preferred) FormatLikeKernel(object value, string mimeType)
    {
        var type = value.GetType();
        var attributes = type.GetCustomAttributes(true).Where(a => a.GetType().Name == "TypeFormatterSourceAttribute").ToList();
        attributes.Should().ContainSingle("the kernel finds the attribute by its type name");
        var attribute = attributes[0];
        var sourceType = attribute.GetType().GetProperty("FormatterSourceType")!.GetGetMethod()!.Invoke(attribute, null).Should().BeAssignableTo<Type>().Subject;
        var preferred = attribute.GetType().GetProperty("PreferredMimeTypes")!.GetGetMethod()!.Invoke(attribute, null) as string[] ?? Array.Empty<string>();
        var source = Activator.CreateInstance(sourceType)!;
        var formatters = (IEnumerable)source.GetType().GetMethod("CreateTypeFormatters")!.Invoke(source, null)!;
        foreach (var formatter in formatters)
        {
            var mime = (string)formatter.GetType().GetProperty("MimeType")!.GetGetMethod()!.Invoke(formatter, null)!;
            var formattedType = (Type)formatter.GetType().GetProperty("Type")!.GetGetMethod()!.Invoke(formatter, null)!;
            if (mime != mimeType || !formattedType.IsInstanceOfType(value)) continue;
            var format = formatter.GetType().GetMethod("Format", new[] { typeof(object), typeof(TextWriter) })!;
            format.ReturnType.Should().Be(typeof(bool));
            using var writer = new StringWriter();
            ((bool)format.Invoke(formatter, new[] { value, writer })!).Should().BeTrue();
            return (writer.ToString(), preferred);
        }
        return (null, preferred);
    }

    private static List<Image<Rgb24>> DecodeDataUris(string html, out List<string> alts)
    {
        var matches = Regex.Matches(html, "<img(?: alt=\"(?<alt>[a-z]+)\")? src=\"data:image/png;base64,(?<b64>[A-Za-z0-9+/=]+)\"");
        alts = matches.Select(m => m.Groups["alt"].Value).ToList();
        return matches.Select(m => Image.Load<Rgb24>(ImageLoader.CreateSafeConfiguration(), Convert.FromBase64String(m.Groups["b64"].Value))).ToList();
    }

    [Fact]
    public void ExplanationDisplaysImageOverlayAndHeatmapAsHtmlWithTheImageSize()
    {
        using var scope = torch.NewDisposeScope();
        using var image = LoadImage(40, 30, 24);
        var net = SmallNet();
        using var explainer = new Explainer(net, MethodCatalog.Parse("epsilon-plus-flat"));
        using var explanation = explainer.Explain(image.ToBatch());

        var (html, preferred) = FormatLikeKernel(explanation, "text/html");
        preferred.Should().StartWith("text/html");
        html.Should().NotBeNull();
        var images = DecodeDataUris(html!, out var alts);
        try
        {
            alts.Should().Equal("input", "overlay", "heatmap", "scale");
            images.Take(3).Should().AllSatisfy(i => (i.Width, i.Height).Should().Be((image.Width, image.Height)));
            images[3].Height.Should().Be(image.Height, "the colour bar stands beside the heatmap");
        }
        finally
        {
            images.ForEach(i => i.Dispose());
        }
        html.Should().Contain("epsilon-plus-flat").And.Contain("conservation error").And.Contain($"<td>{explanation.Targets[0]}");

        var (text, _) = FormatLikeKernel(explanation, "text/plain");
        text.Should().Contain("epsilon-plus-flat").And.Contain($"class {explanation.Targets[0]}").And.NotContain("\n");
    }

    [Theory]
    [InlineData("chefer")]
    [InlineData("attn-lrp")]
    public void VitTokenMapsDisplayUpsampledToTheImage(string method)
    {
        using var scope = torch.NewDisposeScope();
        using var image = LoadImage(40, 30, 16);
        torch.manual_seed(9);
        using var vit = RootDtd.Models.ModelZoo.Create("vit-test-patch4-16", 5);
        vit.eval();
        using var explainer = new Explainer(vit, MethodCatalog.Parse(method));
        using var explanation = explainer.Explain(image.ToBatch());
        (explanation.TokenMap is not null).Should().Be(method == "chefer");
        var images = DecodeDataUris(ExplanationDisplay.ToHtml(explanation), out var alts);
        try
        {
            alts.Should().Equal("input", "overlay", "heatmap", "scale");
            images.Take(3).Should().AllSatisfy(i => (i.Width, i.Height).Should().Be((16, 16)));
        }
        finally
        {
            images.ForEach(i => i.Dispose());
        }
    }

    [Fact]
    public void ExplanationWithoutDisplayImageShowsTheDenormalisedInput()
    {
        using var scope = torch.NewDisposeScope();
        using var image = LoadImage(24, 24, 24);
        using var explainer = new Explainer(SmallNet(), MethodCatalog.Parse("epsilon"));
        using var explanation = explainer.Explain(image.ToBatch());

        // The bare explanation guesses ImageNet normalisation for inputs outside [0,1]: the input round-trips to the loaded pixels.
        var images = DecodeDataUris(ExplanationDisplay.ToHtml(explanation), out _);
        try
        {
            var expected = ImageTensorConversion.GetRgbBytes(image.DisplayImage);
            var actual = ImageTensorConversion.GetRgbBytes(images[0]);
            actual.Zip(expected, (a, b) => Math.Abs(a - b)).Max().Should().BeLessThanOrEqualTo(1);
        }
        finally
        {
            images.ForEach(i => i.Dispose());
        }
    }

    [Fact]
    public void ViewOfABatchShowsOneRowPerSampleUpToTheCapWithClassNames()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(11);
        var batch = torch.rand(10, 3, 16, 20);                     // [0,1] inputs: shown as they are
        using var explainer = new Explainer(SmallNet(), MethodCatalog.Parse("epsilon"));
        using var explanation = explainer.Explain(batch);
        var view = explanation.ToView(classNames: ClassNames, options: new ExplanationDisplayOptions { MaxSamples = 4 });

        view.SampleCount.Should().Be(10);
        view.Samples.Should().HaveCount(4);
        view.Samples.Select(s => s.ClassIndex).Should().Equal(explanation.Targets.Take(4));
        view.Samples.Should().AllSatisfy(s => s.ConservationError.Should().Be(ExplanationFormatting.ConservationError(explanation, s.Index)));
        view.MaxConservationError.Should().Be(explanation.Conservation.MaxRelativeError);
        view.Samples.Should().AllSatisfy(s => s.ClassName.Should().Be(ClassNames[s.ClassIndex]));

        var (html, _) = FormatLikeKernel(view, "text/html");
        Regex.Matches(html!, "<tr><td>").Count.Should().Be(4);
        html.Should().Contain("first 4 shown, 6 left out").And.NotContain("bird<&>");   // names are HTML-encoded
        var images = DecodeDataUris(html!, out _);
        try
        {
            images.Should().HaveCount(16, "input, overlay, heatmap and colour bar of 4 samples");
            images.Where((_, k) => k % 4 != 3).Should().AllSatisfy(i => (i.Width, i.Height).Should().Be((20, 16)));
            images.Where((_, k) => k % 4 == 3).Should().AllSatisfy(i => i.Height.Should().Be(16));
        }
        finally
        {
            images.ForEach(i => i.Dispose());
        }
        html.Should().Contain("image-rendering:pixelated", "inputs narrower than MinDisplayWidth are scaled up");

        var (text, _) = FormatLikeKernel(view, "text/plain");
        text.Should().Contain("epsilon").And.Contain($"class {view.Samples[0].ClassLabel}").And.Contain("7 more");
    }

    [Fact]
    public void ViewOutlivesTheExplanationAndUsesTheGivenDisplayImage()
    {
        ExplanationView view;
        using (var scope = torch.NewDisposeScope())
        {
            using var image = LoadImage(32, 32, 32);
            using var explainer = new Explainer(SmallNet(), MethodCatalog.Parse("epsilon-plus-flat"));
            using var explanation = explainer.Explain(image.ToBatch(), new long[] { 2 });
            view = explanation.ToView(image, ClassNames);
            view.Samples[0].ImagePng.Should().Equal(image.DisplayImage.ToPngBytes());
        }
        view.Samples[0].ClassLabel.Should().Be("2 (bird<&>)");
        view.ToHtml().Should().Contain("2 (bird&lt;&amp;&gt;)");
        view.ToString().Should().Contain("epsilon-plus-flat").And.Contain("class 2 (bird<&>)");
    }

    [Fact]
    public void DisposedExplanationStillFormatsAsText()
    {
        Explanation explanation;
        using (var scope = torch.NewDisposeScope())
        {
            using var explainer = new Explainer(SmallNet(), MethodCatalog.Parse("epsilon"));
            explanation = explainer.Explain(torch.rand(1, 3, 8, 8));
            explanation.Dispose();
        }
        var (text, _) = FormatLikeKernel(explanation, "text/plain");
        text.Should().Contain("epsilon").And.Contain($"classes {explanation.Targets[0]}");
        var (html, _) = FormatLikeKernel(explanation, "text/html");
        html.Should().Contain("images unavailable").And.NotContain("data:image/png");
    }

    [Fact]
    public void DenseInputsHaveNoImagesButStillDisplay()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(5);
        var net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3));
        using var explainer = new Explainer(net, MethodCatalog.Parse("epsilon"));
        using var explanation = explainer.Explain(torch.randn(2, 6));
        var html = ExplanationFormatting.ToHtml(explanation);
        html.Should().NotContain("<img").And.Contain("conservation error");
        Regex.Matches(html, "<tr><td>").Count.Should().Be(2);
    }

    [Fact]
    public void RenderedHeatmapDisplaysAsAFigure()
    {
        using var scope = torch.NewDisposeScope();
        using var heat = HeatmapRenderer.Render(torch.rand(12, 18), HeatmapOptions.Paper);
        var figure = heat.ToFigure("heat <map>");
        var (html, preferred) = FormatLikeKernel(figure, "text/html");
        preferred.Should().StartWith("text/html");
        html.Should().StartWith("<figure").And.Contain("<figcaption>heat &lt;map&gt;</figcaption>");
        var images = DecodeDataUris(html!, out _);
        (images.Single().Width, images.Single().Height).Should().Be((18, 12));
        images.ForEach(i => i.Dispose());
        FormatLikeKernel(figure, "text/plain").Output.Should().Be("heat <map> (18x12 PNG, " + figure.Png.Length + " bytes)");
    }

    [Fact]
    public void ImagingRegistersItsRendererWithTheCore()
    {
        RuntimeHelpers_RunImagingModuleInitializer();
        ExplanationFormatting.HtmlRenderer.Should().NotBeNull();
        NotebookDisplay.IsRegistered.Should().BeTrue("the core's hook asks the imaging display");
    }

    private static void RuntimeHelpers_RunImagingModuleInitializer() =>
        System.Runtime.CompilerServices.RuntimeHelpers.RunModuleConstructor(typeof(ExplanationDisplay).Assembly.ManifestModule.ModuleHandle);

    [Fact]
    public void OptionsAreValidated()
    {
        var act = () => ExplanationDisplay.Defaults = new ExplanationDisplayOptions { MaxSamples = 0 };
        act.Should().Throw<ArgumentOutOfRangeException>();
        ExplanationDisplay.Defaults.MaxSamples.Should().Be(8);
    }
}
