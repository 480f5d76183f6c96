using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Training;

namespace RootDtd.Evaluation.Benchmark;

/// <summary>Evaluation protocols of a benchmark run.</summary>
[Flags]
public enum BenchmarkProtocols
{
    /// <summary>Nothing.</summary>
    None = 0,

    /// <summary>Pixel perturbation (positive/negative, coarse and fine schedules).</summary>
    Perturbation = 1,

    /// <summary>Localisation against the exact masks (mIoU, FG-IoU, pixel accuracy, mAP, mass, pointing, paper variants).</summary>
    Localization = 2,

    /// <summary>Relevance-guided PGD.</summary>
    Pgd = 4,

    /// <summary>Root checks of root-inference methods: f(N) at the input root and the linear-region table.</summary>
    RootChecks = 8,

    /// <summary>Sanity checks (Adebayo et al. 2018): map similarity under model-parameter (and, with a random-label model, data) randomisation.</summary>
    Sanity = 16,

    /// <summary>All protocols.</summary>
    All = Perturbation | Localization | Pgd | RootChecks | Sanity,
}

/// <summary>Options of <see cref="BenchmarkRunner"/>.</summary>
public sealed record BenchmarkOptions
{
    /// <summary>Model name shown in the report. Default "model".</summary>
    public string ModelName { get; init; } = "model";

    /// <summary>Methods of the main tables. Default <see cref="BenchmarkMethods.Full"/>.</summary>
    public IReadOnlyList<BenchmarkMethod> Methods { get; init; } = BenchmarkMethods.Full;

    /// <summary>Root-rule ablations (empty = no ablation table). Default none.</summary>
    public IReadOnlyList<RootAblation> Ablations { get; init; } = Array.Empty<RootAblation>();

    /// <summary>Protocols to run. Default all.</summary>
    public BenchmarkProtocols Protocols { get; init; } = BenchmarkProtocols.All;

    /// <summary>Samples per batch. Default 25.</summary>
    public int BatchSize { get; init; } = 25;

    /// <summary>PGD is run on the first this-many samples (null = all). Default 100.</summary>
    public int? PgdSamples { get; init; } = 100;

    /// <summary>Ablations are run on the first this-many samples (null = all); they cost as much as the root rule each. Default null.</summary>
    public int? AblationSamples { get; init; }

    /// <summary>PGD settings (ε, steps, k; the normalisation is replaced by <see cref="Normalization"/>).</summary>
    public PgdOptions Pgd { get; init; } = new();

    /// <summary>Perturbation settings (the normalisation is replaced by <see cref="Normalization"/>).</summary>
    public PixelPerturbationOptions Perturbation { get; init; } = new();

    /// <summary>Normalisation of the model inputs. Default the synthetic models' (mean = std = 0.5).</summary>
    public ImageNormalization Normalization { get; init; } = SyntheticModels.Normalization;

    /// <summary>Samples shown in the heatmap gallery (0 = no gallery). Default 4.</summary>
    public int GallerySamples { get; init; } = 4;

    /// <summary>Description of the data for the report (e.g. generator seed and size).</summary>
    public string DataDescription { get; init; } = "";

    /// <summary>What the data loading skipped or noticed (images without masks, one-image classes, …), one line each in the report.</summary>
    public IReadOnlyList<string> DataNotes { get; init; } = Array.Empty<string>();

    /// <summary>The sanity checks run on the first this-many samples. Default 16.</summary>
    public int SanitySamples { get; init; } = 16;

    /// <summary>Settings of the sanity checks (groups, top-k fraction, seed, flag threshold; the batch size is <see cref="BatchSize"/>).</summary>
    public SanityCheckOptions Sanity { get; init; } = new();

    /// <summary>A model of the same architecture trained on randomly permuted labels, for the data-randomisation test (null = not run).</summary>
    public TorchSharp.torch.nn.Module<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor>? RandomLabelModel { get; init; }

    /// <summary>
    /// What <see cref="RandomLabelModel"/> is (file, label seed, training and test accuracy), shown under the sanity
    /// table; <see langword="null"/> when no description is known.
    /// </summary>
    public string? RandomLabelModelDescription { get; init; }

    /// <summary>
    /// How the report describes <see cref="Normalization"/>; <see langword="null"/> (the default) describes it itself.
    /// Set when the options are rebuilt from a state file (<c>rootdtd merge</c>), which keeps the description but not a
    /// mean image.
    /// </summary>
    public string? NormalizationDescription { get; init; }

    /// <summary>Seed of the random reference maps. Default 0.</summary>
    public int RandomSeed { get; init; }

    internal void Validate()
    {
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "Must be ≥ 1.");
        if (PgdSamples is < 1) throw new ArgumentOutOfRangeException(nameof(PgdSamples), PgdSamples, "Must be ≥ 1.");
        if (AblationSamples is < 1) throw new ArgumentOutOfRangeException(nameof(AblationSamples), AblationSamples, "Must be ≥ 1.");
        if (SanitySamples < 1) throw new ArgumentOutOfRangeException(nameof(SanitySamples), SanitySamples, "Must be ≥ 1.");
        ArgumentNullException.ThrowIfNull(Sanity);
        Sanity.Validate();
        if (GallerySamples < 0) throw new ArgumentOutOfRangeException(nameof(GallerySamples), GallerySamples, "Must be ≥ 0.");
        ArgumentNullException.ThrowIfNull(Methods);
        ArgumentNullException.ThrowIfNull(Ablations);
    }
}

/// <summary>Progress of a benchmark run.</summary>
/// <param name="Method">Method label (or "references").</param>
/// <param name="Stage">Stage (e.g. "explain+perturb+localise", "pgd").</param>
/// <param name="MethodIndex">0-based index of the method.</param>
/// <param name="MethodCount">Number of methods.</param>
/// <param name="SamplesDone">Samples done in this stage.</param>
/// <param name="SamplesTotal">Samples of this stage.</param>
public readonly record struct BenchmarkProgress(string Method, string Stage, int MethodIndex, int MethodCount, int SamplesDone, int SamplesTotal);
