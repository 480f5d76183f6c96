using RootDtd.Evaluation.Metrics;

namespace RootDtd.Evaluation.Benchmark;

/// <summary>Linear-region statistics of one unit (paper Table 6): ReLU derivative of the unit's output at x vs at its root N.</summary>
/// <param name="Unit">Unit (graph node) name.</param>
/// <param name="Samples">Samples.</param>
/// <param name="MeanSquaredDifference">Mean over samples of the mean squared derivative difference.</param>
/// <param name="SameStateFraction">Mean over samples of the fraction of outputs with the same on/off state.</param>
/// <param name="IdenticalPatternRate">Fraction of samples whose on/off pattern is identical.</param>
public sealed record UnitLinearRegion(string Unit, int Samples, double MeanSquaredDifference, double SameStateFraction, double IdenticalPatternRate);

/// <summary>Everything measured for one method.</summary>
public sealed class MethodResult
{
    /// <summary>Creates an empty result.</summary>
    /// <param name="method">The method.</param>
    /// <param name="isAblation">True for a row of the ablation table.</param>
    public MethodResult(BenchmarkMethod method, bool isAblation)
    {
        Method = method;
        IsAblation = isAblation;
    }

    /// <summary>The method.</summary>
    public BenchmarkMethod Method { get; }

    /// <summary>Row label.</summary>
    public string Label => Method.Label;

    /// <summary>True for a row of the ablation table.</summary>
    public bool IsAblation { get; }

    /// <summary>Perturbation curves (empty if not run).</summary>
    public IReadOnlyList<PerturbationCurve> Curves { get; internal set; } = Array.Empty<PerturbationCurve>();

    /// <summary>Localisation result, if run.</summary>
    public LocalizationResult? Localization { get; internal set; }

    /// <summary>PGD result, if run.</summary>
    public PgdResult? Pgd { get; internal set; }

    /// <summary>Target scores at x, S and N of the input-layer root, if the method infers one.</summary>
    public RootScoreResult? RootScores { get; internal set; }

    /// <summary>Name of the input-layer unit whose root was checked.</summary>
    public string? RootUnit { get; internal set; }

    /// <summary>Linear-region statistics per root-inference unit.</summary>
    public IReadOnlyList<UnitLinearRegion> LinearRegions { get; internal set; } = Array.Empty<UnitLinearRegion>();

    /// <summary>Mean over samples of the conservation error |Σ input relevance − logit| / |logit|.</summary>
    public double ConservationError { get; internal set; } = double.NaN;

    /// <summary>Explanation time per image in milliseconds (explanation only, not the metrics).</summary>
    public double MillisecondsPerImage { get; internal set; } = double.NaN;

    /// <summary>Wall-clock seconds of the whole method (all protocols).</summary>
    public double Seconds { get; internal set; }

    /// <summary>Error message if the method failed during the run (its metrics are then missing).</summary>
    public string? Error { get; internal set; }

    /// <summary>Gallery heatmaps [G,H,W] as float arrays (row-major), if collected.</summary>
    public float[][]? GalleryHeatmaps { get; internal set; }

    /// <summary>Value of a perturbation curve's AUC.</summary>
    /// <param name="order">Order.</param>
    /// <param name="schedule">Schedule name.</param>
    /// <returns>AUC or NaN.</returns>
    public double Auc(PerturbationOrder order, string schedule) =>
        Curves.FirstOrDefault(c => c.Order == order && c.Schedule == schedule)?.Auc ?? double.NaN;
}

/// <summary>The outcome of a benchmark run.</summary>
public sealed class BenchmarkResult
{
    internal BenchmarkResult(BenchmarkOptions options) => Options = options;

    /// <summary>Options of the run.</summary>
    public BenchmarkOptions Options { get; }

    /// <summary>Number of test samples.</summary>
    public int Samples { get; internal set; }

    /// <summary>Samples used by PGD.</summary>
    public int PgdSamples { get; internal set; }

    /// <summary>Samples used by the ablations.</summary>
    public int AblationSampleCount { get; internal set; }

    /// <summary>Clean top-1 accuracy of the model on the samples.</summary>
    public double CleanAccuracy { get; internal set; }

    /// <summary>Image height.</summary>
    public int Height { get; internal set; }

    /// <summary>Image width.</summary>
    public int Width { get; internal set; }

    /// <summary>Main methods, in order.</summary>
    public List<MethodResult> Methods { get; } = new();

    /// <summary>Ablations of the root rule, in order.</summary>
    public List<MethodResult> Ablations { get; } = new();

    /// <summary>Reference rows (random map, empty map).</summary>
    public List<MethodResult> References { get; } = new();

    /// <summary>Methods and ablations that could not be run (with reasons).</summary>
    public List<SkippedMethod> Skipped { get; } = new();

    /// <summary>Wall-clock seconds of the run.</summary>
    public double Seconds { get; internal set; }

    /// <summary>Gallery: images [G] as [0,1] RGB arrays (3·H·W, CHW), masks (H·W), labels.</summary>
    public List<(float[] Image, byte[] Mask, int Label)> Gallery { get; } = new();
}
