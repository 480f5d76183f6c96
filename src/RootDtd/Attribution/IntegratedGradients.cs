using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Attribution;

/// <summary>The reference point of Integrated Gradients.</summary>
public enum IntegratedGradientsBaseline
{
    /// <summary>The zero tensor of the model's input space (for normalised images: the normalisation mean).</summary>
    Zero,

    /// <summary>The input blurred by a Gaussian of σ = <see cref="IntegratedGradients.BlurSigma"/> pixels (Sturmfels et al. 2020).</summary>
    Blurred,

    /// <summary>A tensor given by the caller (broadcast to the input's shape).</summary>
    Given,
}

/// <summary>
/// Integrated Gradients (Sundararajan et al. 2017): (x − x̄) ⊙ (1/m) Σ_k ∇f(x̄ + α_k (x − x̄)) with the midpoint rule
/// α_k = (k + ½)/m, f the target logit through the relevance graph. The m interpolants of a batch are evaluated in
/// chunks of at most <see cref="AttributionProcedure.MaxImagesPerPass"/> images (forward + backward each). The
/// completeness error Σ attribution − (f(x) − f(x̄)) of every sample is in the explanation's conservation report
/// (<see cref="ConservationReport.StartRelevance"/> holds f(x) − f(x̄), <see cref="ConservationReport.InputSum"/> the
/// sum), and in its diagnostics (unit <c>input</c>, values <c>completeness_error</c>, <c>logit_difference</c>,
/// <c>attribution_sum</c>) when diagnostics are collected.
/// </summary>
public sealed class IntegratedGradients : AttributionProcedure
{
    /// <summary>Default number of steps m.</summary>
    public const int DefaultSteps = 32;

    /// <summary>Default σ of the blurred baseline, in pixels.</summary>
    public const double DefaultBlurSigma = 5;

    private readonly Tensor? _given;

    /// <summary>Integrated Gradients from the zero or the blurred baseline.</summary>
    /// <param name="steps">Steps m (≥ 1).</param>
    /// <param name="baseline"><see cref="IntegratedGradientsBaseline.Zero"/> or <see cref="IntegratedGradientsBaseline.Blurred"/>.</param>
    /// <param name="blurSigma">σ of the blur in pixels (&gt; 0).</param>
    public IntegratedGradients(int steps = DefaultSteps, IntegratedGradientsBaseline baseline = IntegratedGradientsBaseline.Zero, double blurSigma = DefaultBlurSigma)
    {
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(steps), steps, "Integrated Gradients needs steps ≥ 1.");
        if (baseline == IntegratedGradientsBaseline.Given) throw new ArgumentException("Pass the baseline tensor to the other constructor.", nameof(baseline));
        if (!(blurSigma > 0) || double.IsInfinity(blurSigma)) throw new ArgumentOutOfRangeException(nameof(blurSigma), blurSigma, "The blur σ must be a finite number of pixels > 0.");
        Steps = steps;
        Baseline = baseline;
        BlurSigma = blurSigma;
    }

    /// <summary>Integrated Gradients from a given baseline tensor (broadcast to the input's shape; copied).</summary>
    /// <param name="baseline">The baseline, e.g. [C,H,W], [1,C,H,W] or the input's shape.</param>
    /// <param name="steps">Steps m (≥ 1).</param>
    public IntegratedGradients(Tensor baseline, int steps = DefaultSteps) : this(steps)
    {
        ArgumentNullException.ThrowIfNull(baseline);
        if (baseline.IsInvalid) throw new ArgumentException("The baseline tensor has been disposed.", nameof(baseline));
        if (!baseline.is_floating_point()) throw new ArgumentException($"The baseline must be floating point; got {baseline.dtype}.", nameof(baseline));
        _given = baseline.detach().clone().DetachFromDisposeScope();
        Baseline = IntegratedGradientsBaseline.Given;
    }

    /// <summary>Steps m.</summary>
    public int Steps { get; }

    /// <summary>Kind of baseline.</summary>
    public IntegratedGradientsBaseline Baseline { get; }

    /// <summary>σ of the blurred baseline in pixels.</summary>
    public double BlurSigma { get; }

    /// <summary>The baseline for input <paramref name="x"/>.</summary>
    public Tensor BaselineFor(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        switch (Baseline)
        {
            case IntegratedGradientsBaseline.Zero:
                return torch.zeros_like(x);
            case IntegratedGradientsBaseline.Blurred:
                return GaussianBlur(x, BlurSigma);
            default:
                var b = _given!.to(x.dtype).to(x.device);
                try
                {
                    return b.expand(x.shape).contiguous();
                }
                catch (Exception e)
                {
                    throw new ArgumentException($"The Integrated Gradients baseline [{string.Join(", ", _given.shape)}] does not broadcast to the input [{string.Join(", ", x.shape)}].", e);
                }
        }
    }

    /// <summary>Gaussian blur of images [B,C,H,W] per channel (kernel radius ⌈3σ⌉, border replicated).</summary>
    public static Tensor GaussianBlur(Tensor x, double sigma)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dim() != 4) throw new ArgumentException($"A blurred baseline needs images [B,C,H,W]; got [{string.Join(", ", x.shape)}].", nameof(x));
        using var scope = torch.NewDisposeScope();
        var radius = (long)Math.Ceiling(3 * sigma);
        var offsets = torch.arange(-radius, radius + 1, dtype: x.dtype, device: x.device);
        var kernel = torch.exp(-offsets.pow(2) / (2 * sigma * sigma));
        kernel = kernel / kernel.sum();
        var channels = x.shape[1];
        var kh = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1).contiguous();
        var kw = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1).contiguous();
        var padded = torch.nn.functional.pad(x, new[] { radius, radius, radius, radius }, PaddingModes.Replicate);
        var y = torch.nn.functional.conv2d(torch.nn.functional.conv2d(padded, kh, groups: channels), kw, groups: channels);
        return y.MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public override AttributionResult Attribute(AttributionContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        using var scope = torch.NewDisposeScope();
        var x = context.Input;
        var b = context.Batch;
        var baseline = BaselineFor(x);
        var delta = x - baseline;
        var gradientSum = torch.zeros_like(x);
        var perPass = Math.Max(1, MaxImagesPerPass / b);
        var shape = new long[] { -1 }.Concat(Enumerable.Repeat(1L, (int)x.dim() - 1)).ToArray();
        for (var first = 0; first < Steps; first += perPass)
        {
            using var step = torch.NewDisposeScope();
            var count = Math.Min(perPass, Steps - first);
            var alphas = (torch.arange(first, first + count, dtype: x.dtype, device: x.device) + 0.5) / Steps;
            // copy-major: interpolant j of every sample, then interpolant j + 1, …
            var points = (baseline.unsqueeze(0) + alphas.view(shape).unsqueeze(1) * delta.unsqueeze(0)).reshape(new long[] { count * b }.Concat(x.shape.Skip(1)).ToArray());
            Tensor leaf, score;
            using (torch.enable_grad())
            {
                leaf = points.detach().requires_grad_(true);
                score = context.TargetScore(leaf).sum();
            }
            if (!score.requires_grad) throw new ExplanationException("Integrated Gradients: the target logit does not depend on the input through autograd.");
            var g = torch.autograd.grad(new[] { score }, new[] { leaf })[0];
            gradientSum.add_(g.reshape(new long[] { count }.Concat(x.shape).ToArray()).sum(new long[] { 0 }));
        }
        var attribution = delta * gradientSum / Steps;
        Tensor reference;
        using (torch.no_grad()) reference = context.TargetScore(x) - context.TargetScore(baseline);
        if (context.Recorder.CollectDiagnostics)
        {
            var sums = attribution.reshape(b, -1).sum(1);
            var table = torch.stack(new[] { sums - reference, reference, sums }).to(ScalarType.Float64).cpu().data<double>().ToArray();
            context.Recorder.Add(new UnitDiagnostics
            {
                Unit = "input",
                Rule = "integrated-gradients",
                Domain = Baseline.ToString(),
                Values = new Dictionary<string, double[]>(StringComparer.Ordinal)
                {
                    ["completeness_error"] = table.Take(b).ToArray(),
                    ["logit_difference"] = table.Skip(b).Take(b).ToArray(),
                    ["attribution_sum"] = table.Skip(2 * b).ToArray(),
                },
            });
        }
        return new AttributionResult(attribution.MoveToOuterDisposeScope(), reference.MoveToOuterDisposeScope());
    }

    /// <inheritdoc />
    public override string ToString() => $"IntegratedGradients(steps={Steps}, baseline={Baseline}{(Baseline == IntegratedGradientsBaseline.Blurred ? $", σ={BlurSigma}px" : "")})";
}
