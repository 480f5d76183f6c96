using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Attribution;

/// <summary>
/// SmoothGrad (Smilkov et al. 2017) over any method: the mean of the base method's input relevance at
/// <see cref="Samples"/> noisy copies x + ε_k, ε_k ~ N(0, σ²) with σ = <see cref="NoiseLevel"/> · (max x − min x) per
/// sample. The base is the composite's own rule walk (the gradient for <c>smoothgrad</c>, any composite with
/// <c>base=…</c>) or another procedure (e.g. Grad-CAM). Noise k is drawn from a CPU generator seeded with
/// <see cref="Seed"/> + k (so every device sees the same noise) and has the shape of one sample, shared by every sample of
/// the batch: a sample's map does not depend on the batch it is in. When the explainer has input bounds, noisy inputs
/// are clamped to them (they stay valid images, which the root rule's pixel box needs).
/// </summary>
public sealed class SmoothGrad : AttributionProcedure
{
    /// <summary>Default number of noisy samples (zennit's and Smilkov et al.'s choice range; one value for all callers).</summary>
    public const int DefaultSamples = 20;

    /// <summary>Default noise level σ / (max − min) (Smilkov et al. recommend 10–20 %).</summary>
    public const double DefaultNoiseLevel = 0.1;

    /// <summary>Creates the procedure.</summary>
    /// <param name="samples">Noisy samples (≥ 1).</param>
    /// <param name="noiseLevel">σ as a fraction of each sample's value range (≥ 0).</param>
    /// <param name="seed">Seed of the noise.</param>
    /// <param name="inner">A procedure to smooth, or <see langword="null"/> for the composite's rule walk.</param>
    public SmoothGrad(int samples = DefaultSamples, double noiseLevel = DefaultNoiseLevel, long seed = 0, AttributionProcedure? inner = null)
    {
        if (samples < 1) throw new ArgumentOutOfRangeException(nameof(samples), samples, "SmoothGrad needs n ≥ 1 samples.");
        if (!(noiseLevel >= 0) || double.IsInfinity(noiseLevel)) throw new ArgumentOutOfRangeException(nameof(noiseLevel), noiseLevel, "SmoothGrad's noise level must be a finite number ≥ 0.");
        Samples = samples;
        NoiseLevel = noiseLevel;
        Seed = seed;
        Inner = inner;
    }

    /// <summary>Number of noisy samples.</summary>
    public int Samples { get; }

    /// <summary>σ as a fraction of the value range of each sample.</summary>
    public double NoiseLevel { get; }

    /// <summary>Seed of the noise.</summary>
    public long Seed { get; }

    /// <summary>The smoothed procedure (<see langword="null"/> = the composite's rule walk).</summary>
    public AttributionProcedure? Inner { get; }

    /// <inheritdoc />
    public override AttributionResult Attribute(AttributionContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        using var scope = torch.NewDisposeScope();
        var x = context.Input;
        var b = context.Batch;
        var flat = x.reshape(b, -1);
        var range = (flat.amax(1) - flat.amin(1)).view(new long[] { b }.Concat(Enumerable.Repeat(1L, (int)x.dim() - 1)).ToArray());
        var sigma = range * NoiseLevel;
        var sampleShape = x.shape.Skip(1).Prepend(1L).ToArray();
        Tensor? sum = null;
        for (var k = 0; k < Samples; k++)
        {
            using var step = torch.NewDisposeScope();
            using var generator = new torch.Generator((ulong)(Seed + k), torch.CPU);
            var noise = torch.randn(sampleShape, dtype: x.dtype, generator: generator).to(x.device);
            var noisy = x + sigma * noise;
            if (context.InputLow is not null && context.InputHigh is not null) noisy = torch.minimum(torch.maximum(noisy, context.InputLow), context.InputHigh);
            var r = Inner is null ? context.Walk(noisy) : Inner.Attribute(context.WithInput(noisy)).InputRelevance;
            if (sum is null) sum = r.detach().clone().MoveToOuterDisposeScope();
            else sum.add_(r.detach());
        }
        return new AttributionResult((sum! / Samples).MoveToOuterDisposeScope());
    }

    /// <inheritdoc />
    public override string ToString() => $"SmoothGrad(n={Samples}, σ={NoiseLevel}·range, seed={Seed}{(Inner is null ? "" : ", " + Inner)})";
}
