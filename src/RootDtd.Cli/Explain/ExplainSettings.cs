using RootDtd.Composites;
using RootDtd.Imaging;
using static TorchSharp.torch;

namespace RootDtd.Cli.Explain;

/// <summary>Validated settings of one <c>rootdtd explain</c> run.</summary>
public sealed record ExplainSettings
{
    /// <summary>Image files (directories already expanded), in command-line order.</summary>
    public required IReadOnlyList<string> Images { get; init; }

    /// <summary>Architecture name (<see cref="Models.ModelZoo"/>).</summary>
    public required string Architecture { get; init; }

    /// <summary>State dict file, or <c>null</c> for random weights.</summary>
    public string? WeightsPath { get; init; }

    /// <summary>The method and its parameters.</summary>
    public required MethodSpec Method { get; init; }

    /// <summary>The class to explain for every image; <c>null</c> explains each image's predicted class.</summary>
    public int? Target { get; init; }

    /// <summary>Output folder (created if needed).</summary>
    public required string OutputDirectory { get; init; }

    /// <summary>Modules whose relevance maps are written (module paths such as <c>layer2</c>).</summary>
    public IReadOnlyList<string> Layers { get; init; } = Array.Empty<string>();

    /// <summary><c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>Class names, if a labels file was given.</summary>
    public ClassLabels? Labels { get; init; }

    /// <summary>Labels file path.</summary>
    public string? LabelsPath { get; init; }

    /// <summary>Number of classes of the model.</summary>
    public int Classes { get; init; } = 1000;

    /// <summary>Side of the centre crop (the model's input size).</summary>
    public int Size { get; init; } = 224;

    /// <summary>Length of the shorter side after resizing, before the crop.</summary>
    public int Resize { get; init; } = 256;

    /// <summary>Images per forward/backward pass.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>Float32 or Float64.</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;

    /// <summary>Per-channel normalisation of the [0,1] pixels; also defines the input bounds (pixel box).</summary>
    public ImageNormalization Normalization { get; init; } = ImageNormalization.ImageNet;

    /// <summary>How heatmaps, overlays and layer maps are rendered.</summary>
    public HeatmapOptions Heatmap { get; init; } = HeatmapOptions.Default;

    /// <summary>Collect per-unit diagnostics of root-inference rules into the JSON.</summary>
    public bool Diagnostics { get; init; }

    /// <summary>No progress bar and no per-image lines.</summary>
    public bool Quiet { get; init; }
}
