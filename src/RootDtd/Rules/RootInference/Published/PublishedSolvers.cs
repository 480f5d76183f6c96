using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Rules.RootInference.Published;

/// <summary>
/// The signal solvers of the published root-inference code, re-implemented. Each returns the learned signal
/// <c>S</c> (the root is <c>N = x − S</c>). Every loss is taken per sample (mean over the sample's elements) and summed
/// over the batch, so a batch of B gives exactly the per-sample results of the reference, which runs with batch 1 and
/// PyTorch's mean reduction. Inputs are not modified; the results are detached.
/// </summary>
public static class PublishedSolvers
{
    /// <summary>The reference's stabiliser for divisions.</summary>
    public const double Epsilon = 1e-9;

    /// <summary>
    /// The reference's <c>safe_divide(a, b)</c>: <c>a / (b + 1e-9)</c> where <c>b ≠ 0</c> (the shift is always +1e-9,
    /// whatever the sign of b; a denominator that becomes exactly 0 is shifted once more) and 0 where <c>b = 0</c>.
    /// </summary>
    public static Tensor SafeDivide(Tensor a, Tensor b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        using var scope = torch.NewDisposeScope();
        var den = b.clamp_min(Epsilon) + b.clamp_max(Epsilon);
        den = den + den.eq(0).to(den.dtype) * Epsilon;
        return (a / den * b.ne(0).to(b.dtype)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Dense-layer solver (<c>rel_sup_root_linear</c>): from <c>S = x</c>, <paramref name="steps"/> plain gradient steps
    /// <c>S ← S − lr·min(∇_S ℓ, clamp)</c> on the hinge-embedding loss <c>ℓ = hinge(layer(S), R)</c> (margin 1, mean per sample).
    /// The gradient is clamped from above only.
    /// </summary>
    /// <param name="x">The layer input (start of the signal).</param>
    /// <param name="relevance">The relevance the layer output is supervised with (the hinge target).</param>
    /// <param name="layer">The map whose output is compared with <paramref name="relevance"/> (the reference: the layer without bias, one weight sign).</param>
    /// <param name="steps">Number of steps (the reference: 1 for the positive branch, 5 for the negative one).</param>
    /// <param name="learningRate">Step size (the reference: 1).</param>
    /// <param name="gradientClampMax">Upper clamp of the gradient (the reference: 1); <c>null</c> = no clamp.</param>
    /// <param name="margin">Hinge margin (PyTorch default 1).</param>
    public static Tensor HingeSignal(Tensor x, Tensor relevance, Func<Tensor, Tensor> layer, int steps, double learningRate = 1,
        double? gradientClampMax = 1, double margin = HingeEmbeddingLoss.DefaultMargin)
    {
        ArgumentNullException.ThrowIfNull(layer);
        return Descend(x, steps, s =>
        {
            var y = layer(s);
            CheckShape(y, relevance, "hinge");
            var g = Gradient(HingeEmbeddingLoss.PerSample(y, relevance, margin).sum(), s);
            if (gradientClampMax is { } c) g = g.clamp_max(c);
            return g * learningRate;
        });
    }

    /// <summary>
    /// Convolution solver (<c>rel_sup_root_cnn</c>): from <c>S = x</c>, <paramref name="steps"/> steps
    /// <c>S ← S − lr·∇_S SSIM(layer(S), R)</c>. Note the sign: the reference <em>descends</em> the similarity, i.e. it
    /// moves the signal so that the layer's output looks <em>less</em> like the relevance map. No gradient clamp.
    /// </summary>
    /// <param name="x">The layer input (or the all-ones tensor for the first convolution).</param>
    /// <param name="relevance">The relevance of the layer output, [B, C, H, W].</param>
    /// <param name="layer">The map compared with the relevance (the reference: the convolution with W⁺, no bias).</param>
    /// <param name="steps">Number of steps (the reference: 5).</param>
    /// <param name="learningRate">Step size (the reference: 1).</param>
    public static Tensor SsimSignal(Tensor x, Tensor relevance, Func<Tensor, Tensor> layer, int steps, double learningRate = 1)
    {
        ArgumentNullException.ThrowIfNull(layer);
        return Descend(x, steps, s =>
        {
            var y = layer(s);
            CheckShape(y, relevance, "SSIM");
            return Gradient(Ssim.PerSample(y, relevance).sum(), s) * learningRate;
        });
    }

    /// <summary>
    /// The gradient-constraint factor <c>base^max(0, sharpness·(|g_x − g_n| − tolerance))</c> (the reference:
    /// <c>0.1^max(0, 10·(|g_x − g_n| − 0.15))</c>), elementwise. It is 1 where the activation's derivative at the
    /// root equals the one at the input within the tolerance and shrinks fast beyond it (0.1^8.5 ≈ 3.2e-9 for a ReLU
    /// whose derivative flips between 0 and 1).
    /// </summary>
    public static Tensor GradientConstraintDamping(Tensor gradientAtInput, Tensor gradientAtRoot, double tolerance = 0.15, double sharpness = 10, double @base = 0.1)
    {
        ArgumentNullException.ThrowIfNull(gradientAtInput);
        ArgumentNullException.ThrowIfNull(gradientAtRoot);
        using var scope = torch.NewDisposeScope();
        var excess = ((gradientAtInput - gradientAtRoot).abs() - tolerance) * sharpness;
        var exponent = torch.where(excess.gt(0), excess, torch.zeros_like(excess));
        return torch.full_like(gradientAtInput, @base).pow(exponent).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// ReLU solver (<c>rel_sup_root_act</c> with <c>func = relu</c>): from <c>S = 1</c> (all ones) and a per-element step
    /// size <c>lr = learningRate</c>, each of the <paramref name="steps"/> steps first multiplies <c>lr</c> by
    /// <see cref="GradientConstraintDamping"/> of <c>g_x = relu′(x)</c> and <c>g_n = relu′(x − S)</c> (the damping
    /// accumulates over the steps), then takes <c>S ← S − lr ⊙ ∇_S hinge(relu(S), R)</c> (margin 1, mean per sample,
    /// no clamp). <c>relu′(t) = [t &gt; 0]</c> as PyTorch's autograd defines it.
    /// </summary>
    /// <param name="x">The activation's input part (the reference: its positive or negative part).</param>
    /// <param name="relevance">The relevance of the activation's output (the hinge target), same shape.</param>
    /// <param name="steps">Number of steps (the reference: 20).</param>
    /// <param name="learningRate">Initial step size (the reference: 3).</param>
    /// <param name="tolerance">Tolerance of the gradient constraint (0.15).</param>
    /// <param name="sharpness">Sharpness of the gradient constraint (10).</param>
    /// <param name="base">Base of the damping (0.1).</param>
    public static Tensor ReluSignal(Tensor x, Tensor relevance, int steps, double learningRate = 3, double tolerance = 0.15, double sharpness = 10, double @base = 0.1)
    {
        ArgumentNullException.ThrowIfNull(x);
        CheckShape(x, relevance, "ReLU hinge");
        if (steps < 0) throw new ArgumentOutOfRangeException(nameof(steps), steps, "The number of steps must be ≥ 0.");
        using var outer = torch.NewDisposeScope();
        var gx = x.gt(0).to(x.dtype);
        var lr = torch.full_like(x, learningRate);
        var s = torch.ones_like(x);
        for (var k = 0; k < steps; k++)
        {
            using var step = torch.NewDisposeScope();
            var gn = (x - s).gt(0).to(x.dtype);
            var newLr = lr * GradientConstraintDamping(gx, gn, tolerance, sharpness, @base);
            Tensor g;
            using (torch.enable_grad())
            {
                var leaf = s.detach().requires_grad_(true);
                g = Gradient(HingeEmbeddingLoss.PerSample(torch.nn.functional.relu(leaf), relevance).sum(), leaf);
            }
            var next = (s - newLr * g).detach();
            next.MoveToOuterDisposeScope();
            newLr.MoveToOuterDisposeScope();
            s.Dispose();
            lr.Dispose();
            s = next;
            lr = newLr;
        }
        return s.MoveToOuterDisposeScope();
    }

    private static Tensor Descend(Tensor x, int steps, Func<Tensor, Tensor> delta)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (steps < 0) throw new ArgumentOutOfRangeException(nameof(steps), steps, "The number of steps must be ≥ 0.");
        using var outer = torch.NewDisposeScope();
        var s = x.detach().clone();
        for (var k = 0; k < steps; k++)
        {
            using var step = torch.NewDisposeScope();
            Tensor d;
            using (torch.enable_grad())
            {
                var leaf = s.detach().requires_grad_(true);
                d = delta(leaf);
            }
            var next = (s - d).detach();
            next.MoveToOuterDisposeScope();
            s.Dispose();
            s = next;
        }
        return s.MoveToOuterDisposeScope();
    }

    // torch.autograd.grad terminates the process on a libtorch error: make sure the loss depends on the leaf.
    private static Tensor Gradient(Tensor loss, Tensor leaf)
    {
        if (!loss.requires_grad)
            throw new ExplanationException("The published root solver's loss does not depend on the signal (the layer map ignores its input).");
        return torch.autograd.grad(new[] { loss }, new[] { leaf })[0].detach();
    }

    private static void CheckShape(Tensor y, Tensor relevance, string what)
    {
        ArgumentNullException.ThrowIfNull(relevance);
        if (!y.shape.SequenceEqual(relevance.shape))
            throw new ExplanationException($"The {what} target has shape [{string.Join(", ", relevance.shape)}] but the layer produces [{string.Join(", ", y.shape)}].");
    }
}
