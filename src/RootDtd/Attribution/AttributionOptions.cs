namespace RootDtd.Attribution;

/// <summary>Options of <c>gradcam</c> and <c>gradcam-plus-plus</c>.</summary>
public sealed record GradCamOptions
{
    /// <summary>Module path of the target layer; empty = <see cref="GradCam.DefaultLayer"/> (ResNet <c>layer4</c>, else the last conv's ReLU; a ViT: the last block's <c>norm1</c> patch tokens).</summary>
    public string Layer { get; init; } = "";
}

/// <summary>Options of <c>smoothgrad</c>.</summary>
public sealed record SmoothGradOptions
{
    /// <summary>Noisy samples n (default 20).</summary>
    public int Samples { get; init; } = SmoothGrad.DefaultSamples;

    /// <summary>σ as a fraction of each sample's value range (default 0.1).</summary>
    public double Noise { get; init; } = SmoothGrad.DefaultNoiseLevel;

    /// <summary>Seed of the noise (default 0).</summary>
    public int Seed { get; init; }

    /// <summary>Catalog name of the smoothed method (default <c>gradient</c>: SmoothGrad proper); its own defaults are used.</summary>
    public string Base { get; init; } = "gradient";
}

/// <summary>Options of <c>integrated-gradients</c>.</summary>
public sealed record IntegratedGradientsOptions
{
    /// <summary>Steps m (default 32).</summary>
    public int Steps { get; init; } = IntegratedGradients.DefaultSteps;

    /// <summary><c>zero</c> or <c>blurred</c> (a tensor baseline through <see cref="AttributionComposites.IntegratedGradients(TorchSharp.torch.Tensor, int)"/>).</summary>
    public string Baseline { get; init; } = "zero";

    /// <summary>σ of the blurred baseline in pixels (default 5).</summary>
    public double Blur { get; init; } = IntegratedGradients.DefaultBlurSigma;

    /// <summary>The baseline kind named by <see cref="Baseline"/>.</summary>
    public IntegratedGradientsBaseline BaselineKind => Baseline.ToLowerInvariant() switch
    {
        "zero" or "zeros" => IntegratedGradientsBaseline.Zero,
        "blur" or "blurred" => IntegratedGradientsBaseline.Blurred,
        _ => throw new ArgumentException($"integrated-gradients: unknown baseline '{Baseline}' (zero or blurred; a tensor baseline through AttributionComposites.IntegratedGradients(Tensor))."),
    };
}

/// <summary>Options of <c>occlusion</c>.</summary>
public sealed record OcclusionOptions
{
    /// <summary>Window side in pixels (default 8).</summary>
    public int Window { get; init; } = Occlusion.DefaultWindow;

    /// <summary>Stride in pixels; 0 = the window (default).</summary>
    public int Stride { get; init; }

    /// <summary>Fill value in the model's input space (default 0).</summary>
    public double Fill { get; init; }
}
