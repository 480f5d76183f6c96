using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace RootDtd.Cli.Explain;

/// <summary>The JSON report written next to each image's heatmap (<c>&lt;name&gt;.json</c>); property names are snake_case.</summary>
public sealed record ImageReport
{
    /// <summary>The image path as given on the command line.</summary>
    public required string Image { get; init; }

    /// <summary>Width of the model input (after resize and crop).</summary>
    public required int Width { get; init; }

    /// <summary>Height of the model input.</summary>
    public required int Height { get; init; }

    /// <summary><c>predicted</c> (the top class is explained) or <c>given</c> (<c>--target</c>).</summary>
    public required string TargetMode { get; init; }

    /// <summary>The explained class.</summary>
    public required ClassScore Explained { get; init; }

    /// <summary>The model's top class.</summary>
    public required ClassScore Predicted { get; init; }

    /// <summary>The five highest-scoring classes (fewer for small models).</summary>
    public required IReadOnlyList<ClassScore> Top { get; init; }

    /// <summary>Σ input relevance compared with the explained logit.</summary>
    public required ConservationEntry Conservation { get; init; }

    /// <summary>How the PNGs were rendered.</summary>
    public required HeatmapEntry Heatmap { get; init; }

    /// <summary>The method and its parameters.</summary>
    public required MethodEntry Method { get; init; }

    /// <summary>Model and preprocessing.</summary>
    public required ModelEntry Model { get; init; }

    /// <summary>The rule of every graph node, in forward order.</summary>
    public required IReadOnlyList<RuleEntry> Rules { get; init; }

    /// <summary>Layer maps written for <c>--layers</c>.</summary>
    public required IReadOnlyList<LayerEntry> Layers { get; init; }

    /// <summary>Files written for this image (names relative to the output folder).</summary>
    public required OutputFiles Files { get; init; }

    /// <summary>Timings in milliseconds.</summary>
    public required TimingEntry TimingsMs { get; init; }

    /// <summary>Per-unit diagnostics of this image (with <c>--diagnostics</c>), else <c>null</c>.</summary>
    public IReadOnlyList<DiagnosticsEntry>? Diagnostics { get; init; }

    /// <summary>The rootdtd version that wrote the report.</summary>
    public required string RootdtdVersion { get; init; }

    /// <summary>Serializer settings of the reports (indented, snake_case, absent values as null, NaN allowed as a string).</summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
}

/// <summary>A class with its score.</summary>
/// <param name="ClassIndex">Class index.</param>
/// <param name="ClassName">Name from <c>--labels</c>, or <c>null</c>.</param>
/// <param name="Logit">The logit.</param>
/// <param name="Probability">Softmax probability over all classes.</param>
public sealed record ClassScore(int ClassIndex, string? ClassName, double Logit, double Probability);

/// <summary>Conservation of the explanation.</summary>
/// <param name="Reference"><c>logit</c> (LRP/DTD methods start from the explained logit) or <c>one-hot</c> (gradient baselines start from 1).</param>
/// <param name="StartRelevance">The relevance the backward pass started from.</param>
/// <param name="Logit">The explained logit.</param>
/// <param name="InputRelevanceSum">Σ of the input relevance.</param>
/// <param name="AbsoluteError">|Σ input relevance − start relevance|.</param>
/// <param name="RelativeError">Absolute error / |start relevance|.</param>
/// <param name="Expected"><c>conserves</c>, <c>approximately</c> (ε absorbs some) or <c>not_expected</c> (gradients, the published root code): whether the error means anything.</param>
/// <param name="Expectation">The same in words.</param>
/// <param name="Lost">True when a method that should conserve lost it (a warning was printed).</param>
public sealed record ConservationEntry(string Reference, double StartRelevance, double Logit, double InputRelevanceSum, double AbsoluteError, double RelativeError,
    string Expected, string Expectation, bool Lost);

/// <summary>How the heatmap and overlay PNGs were rendered, with the value scale of the colour bar.</summary>
/// <param name="Mode"><c>absolute</c>, <c>raw</c>, <c>positive</c> or <c>signed</c>.</param>
/// <param name="ClipPercentile">Percentile the map was clipped at, or <c>null</c>.</param>
/// <param name="MeanCropping">Whether mean cropping was applied.</param>
/// <param name="ScaleLow">Relevance at the bottom of the colour map.</param>
/// <param name="ScaleHigh">Relevance at the top of the colour map.</param>
/// <param name="ColorMap">Colour map name.</param>
/// <param name="ColorBar">Whether the PNGs carry a colour bar on the right.</param>
/// <param name="OverlayAlpha"><c>relevance</c> (opacity follows |R|) or <c>constant</c>.</param>
/// <param name="OverlayOpacity">Largest overlay opacity.</param>
public sealed record HeatmapEntry(string Mode, double? ClipPercentile, bool MeanCropping, double ScaleLow, double ScaleHigh, string ColorMap, bool ColorBar,
    string OverlayAlpha, double OverlayOpacity);

/// <summary>The method.</summary>
/// <param name="Spec">The <c>--method</c> text.</param>
/// <param name="Name">Catalog name.</param>
/// <param name="Description">Catalog description.</param>
/// <param name="Composite">Name of the composite that ran.</param>
/// <param name="Parameters">Every parameter with the value used.</param>
public sealed record MethodEntry(string Spec, string Name, string Description, string Composite, IReadOnlyDictionary<string, double> Parameters);

/// <summary>The model and preprocessing.</summary>
/// <param name="Architecture">Architecture name.</param>
/// <param name="Weights">Weights file, or <c>null</c> (random weights).</param>
/// <param name="Classes">Number of classes.</param>
/// <param name="Device">Device.</param>
/// <param name="Dtype">float32 or float64.</param>
/// <param name="Resize">Shorter side after resizing.</param>
/// <param name="Crop">Centre-crop side.</param>
/// <param name="Mean">Normalisation mean (R,G,B).</param>
/// <param name="Std">Normalisation std (R,G,B).</param>
public sealed record ModelEntry(string Architecture, string? Weights, int Classes, string Device, string Dtype, int Resize, int Crop, IReadOnlyList<float> Mean, IReadOnlyList<float> Std);

/// <summary>The rule of one graph node.</summary>
/// <param name="Layer">Node name (module path).</param>
/// <param name="Rule">Rule description.</param>
public sealed record RuleEntry(string Layer, string Rule);

/// <summary>One layer map.</summary>
/// <param name="Name">Module path.</param>
/// <param name="File">PNG file name, or <c>null</c> when the layer has no spatial map (e.g. a dense layer).</param>
/// <param name="Shape">Shape of the layer relevance of this image.</param>
/// <param name="RelevanceSum">Σ relevance at the layer's output.</param>
public sealed record LayerEntry(string Name, string? File, IReadOnlyList<long> Shape, double RelevanceSum);

/// <summary>Files of one image.</summary>
/// <param name="Heatmap">Heatmap PNG.</param>
/// <param name="Overlay">Overlay PNG.</param>
/// <param name="Report">This JSON.</param>
/// <param name="LayerFigure">Input, heatmap and layer maps side by side (with <c>--layers</c>).</param>
public sealed record OutputFiles(string Heatmap, string Overlay, string Report, string? LayerFigure);

/// <summary>Timings in milliseconds.</summary>
/// <param name="Load">Decoding, resizing and normalising the image.</param>
/// <param name="Explain">This image's share of the batch's explanation time.</param>
/// <param name="Render">Rendering and writing the PNGs.</param>
/// <param name="BatchExplain">The whole batch's explanation time.</param>
/// <param name="BatchSize">Images in the batch.</param>
public sealed record TimingEntry(double Load, double Explain, double Render, double BatchExplain, int BatchSize);

/// <summary>Diagnostics of one unit for this image.</summary>
/// <param name="Unit">Module path.</param>
/// <param name="Rule">Rule.</param>
/// <param name="Domain">Input domain.</param>
/// <param name="Values">Values by name for this image.</param>
/// <param name="Milliseconds">Time of the unit's rule (whole batch).</param>
public sealed record DiagnosticsEntry(string Unit, string Rule, string Domain, IReadOnlyDictionary<string, double> Values, double Milliseconds);

/// <summary>The run summary <c>index.json</c> of an <c>explain</c> run.</summary>
/// <param name="MethodSpec">The <c>--method</c> text.</param>
/// <param name="Method">Catalog name.</param>
/// <param name="Architecture">Architecture.</param>
/// <param name="Weights">Weights file, or <c>null</c>.</param>
/// <param name="Images">Images given.</param>
/// <param name="Explained">Images explained and written.</param>
/// <param name="Failed">Images that failed.</param>
/// <param name="Seconds">Wall-clock seconds of the run.</param>
/// <param name="Entries">One entry per explained image, in input order.</param>
/// <param name="RootdtdVersion">The rootdtd version.</param>
public sealed record RunSummary(string MethodSpec, string Method, string Architecture, string? Weights, int Images, int Explained, IReadOnlyList<string> Failed,
    double Seconds, IReadOnlyList<RunImageEntry> Entries, string RootdtdVersion);

/// <summary>One image of <see cref="RunSummary"/>.</summary>
/// <param name="Image">The image path as given.</param>
/// <param name="Stem">Output name stem.</param>
/// <param name="Explained">The explained class.</param>
/// <param name="ConservationRelativeError">Relative conservation error.</param>
/// <param name="ConservationExpected"><c>conserves</c>, <c>approximately</c> or <c>not_expected</c>.</param>
/// <param name="ConservationLost">Whether a conservation warning was printed.</param>
/// <param name="Files">The image's files.</param>
public sealed record RunImageEntry(string Image, string Stem, ClassScore Explained, double ConservationRelativeError, string ConservationExpected, bool ConservationLost, OutputFiles Files);
