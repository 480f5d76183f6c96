using RootDtd.Composites;

namespace RootDtd.Attribution;

/// <summary>
/// Composites that carry an attribution procedure: Grad-CAM(++), SmoothGrad over any composite, Integrated Gradients
/// and occlusion. Their rule assignment is that of the gradient (or of SmoothGrad's base); the procedure computes the map.
/// </summary>
public static class AttributionComposites
{
    /// <summary>Grad-CAM at <paramref name="layer"/> (<see langword="null"/> = <see cref="GradCam.DefaultLayer"/>).</summary>
    public static Composite GradCam(string? layer = null) =>
        Composites.Composites.Gradient().WithProcedure("gradcam", new GradCam(layer, GradCamWeighting.Mean));

    /// <summary>Grad-CAM++ at <paramref name="layer"/> (<see langword="null"/> = <see cref="GradCam.DefaultLayer"/>).</summary>
    public static Composite GradCamPlusPlus(string? layer = null) =>
        Composites.Composites.Gradient().WithProcedure("gradcam-plus-plus", new GradCam(layer, GradCamWeighting.PlusPlus));

    /// <summary>SmoothGrad over <paramref name="baseComposite"/> (default: the gradient, i.e. SmoothGrad proper).</summary>
    public static Composite SmoothGrad(Composite? baseComposite = null, int samples = Attribution.SmoothGrad.DefaultSamples,
        double noiseLevel = Attribution.SmoothGrad.DefaultNoiseLevel, long seed = 0)
    {
        var b = baseComposite ?? Composites.Composites.Gradient();
        var name = baseComposite is null || b.Name == "gradient" ? "smoothgrad" : $"smoothgrad({b.Name})";
        return b.WithProcedure(name, new Attribution.SmoothGrad(samples, noiseLevel, seed, b.Procedure));
    }

    /// <summary>Integrated Gradients from the zero or blurred baseline.</summary>
    public static Composite IntegratedGradients(int steps = Attribution.IntegratedGradients.DefaultSteps,
        IntegratedGradientsBaseline baseline = IntegratedGradientsBaseline.Zero, double blurSigma = Attribution.IntegratedGradients.DefaultBlurSigma) =>
        Composites.Composites.Gradient().WithProcedure("integrated-gradients", new Attribution.IntegratedGradients(steps, baseline, blurSigma));

    /// <summary>Integrated Gradients from a given baseline tensor.</summary>
    public static Composite IntegratedGradients(TorchSharp.torch.Tensor baseline, int steps = Attribution.IntegratedGradients.DefaultSteps) =>
        Composites.Composites.Gradient().WithProcedure("integrated-gradients", new Attribution.IntegratedGradients(baseline, steps));

    /// <summary>
    /// AGF (Gur et al. 2021), or with <paramref name="rootInference"/> AGF with root inference in its DTD part. Runs on
    /// the unmerged graph (no canonizers): the authors' AGF passes relevance through BatchNorm and applies its rules to
    /// the convolution's own weights.
    /// </summary>
    public static Composite Agf(RootDtd.Rules.RootInference.RootInferenceOptions? rootInference = null)
    {
        return new Composite(rootInference is null ? "agf" : "agf-root")
        {
            StartRelevance = StartRelevance.OneHot,
            Variant = BundleVariant.Gradient,
            Canonizers = Array.Empty<RootDtd.Canonizers.ICanonizer>(),
            Procedure = new Agf(rootInference),
        }.ForAllUnits(RootDtd.Rules.GradientRule.Instance);
    }

    /// <summary>Occlusion with a square window.</summary>
    public static Composite Occlusion(int window = Attribution.Occlusion.DefaultWindow, int? stride = null, double fill = 0) =>
        Composites.Composites.Gradient().WithProcedure("occlusion", new Attribution.Occlusion(window, stride, fill));
}
