using System.Collections;
using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Display;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

/// <summary>
/// The core holds only the notebook hook: without a display package (this test project does not reference
/// RootDtd.Imaging) an explanation's formatters decline, so the kernel shows its default; a registered display is used
/// for its MIME type only. Driven by reflection, as .NET Interactive's Formatter finds them.
/// </summary>
public sealed class NotebookDisplayHookTests
{
    private static bool? FormatLikeKernel(object value, string mimeType, out string output)
    {
        var attribute = value.GetType().GetCustomAttributes(true).Single(a => a.GetType().Name == "TypeFormatterSourceAttribute");
        var sourceType = (Type)attribute.GetType().GetProperty("FormatterSourceType")!.GetValue(attribute)!;
        var source = Activator.CreateInstance(sourceType)!;
        foreach (var formatter in (IEnumerable)source.GetType().GetMethod("CreateTypeFormatters")!.Invoke(source, null)!)
        {
            if ((string)formatter.GetType().GetProperty("MimeType")!.GetValue(formatter)! != mimeType) continue;
            using var writer = new StringWriter();
            var written = (bool)formatter.GetType().GetMethod("Format")!.Invoke(formatter, new[] { value, writer })!;
            output = writer.ToString();
            return written;
        }
        output = string.Empty;
        return null;
    }

    [Fact]
    public void WithoutADisplayPackageTheFormattersDeclineAndARegisteredDisplayIsUsed()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(3);
        var net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2));
        using var explainer = new Explainer(net, MethodCatalog.Parse("epsilon"));
        using var e = explainer.Explain(torch.randn(1, 4));
        AppDomain.CurrentDomain.GetAssemblies().Should().NotContain(a => a.GetName().Name == "RootDtd.Imaging");
        try
        {
            FormatLikeKernel(e, "text/html", out var html).Should().BeFalse("no display registered and RootDtd.Imaging cannot be loaded here");
            html.Should().BeEmpty();
            FormatLikeKernel(e, "text/plain", out _).Should().BeFalse();
            NotebookDisplay.IsRegistered.Should().BeFalse();

            NotebookDisplay.Register(x => $"<b>{x.Method}</b>", null);
            NotebookDisplay.IsRegistered.Should().BeTrue();
            FormatLikeKernel(e, "text/html", out html).Should().BeTrue();
            html.Should().Be("<b>epsilon</b>");
            FormatLikeKernel(e, "text/plain", out _).Should().BeFalse("only the registered MIME type is formatted");
        }
        finally
        {
            NotebookDisplay.Register(null, null);
        }
    }
}
