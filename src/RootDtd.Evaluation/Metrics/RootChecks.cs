using RootDtd.Evaluation.Results;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Metrics;

/// <summary>Target logits and probabilities at the input x, the signal S and the root N (paper §4.3, f(N) ≈ 0).</summary>
/// <param name="LogitInput">f_t(x) per sample.</param>
/// <param name="LogitSignal">f_t(S) per sample.</param>
/// <param name="LogitRoot">f_t(N) per sample.</param>
/// <param name="ProbabilityInput">softmax_t(f(x)) per sample.</param>
/// <param name="ProbabilitySignal">softmax_t(f(S)) per sample.</param>
/// <param name="ProbabilityRoot">softmax_t(f(N)) per sample.</param>
public sealed record RootScoreResult(
    IReadOnlyList<double> LogitInput, IReadOnlyList<double> LogitSignal, IReadOnlyList<double> LogitRoot,
    IReadOnlyList<double> ProbabilityInput, IReadOnlyList<double> ProbabilitySignal, IReadOnlyList<double> ProbabilityRoot)
{
    /// <summary>Column names of <see cref="ToValues"/>.</summary>
    public static IReadOnlyList<string> Columns { get; } = new[] { "f(x)", "f(S)", "f(N)", "p(x)", "p(S)", "p(N)" };

    /// <summary>Means over samples keyed by <see cref="Columns"/>.</summary>
    /// <returns>Name → mean value.</returns>
    public IReadOnlyDictionary<string, double> ToValues() => new Dictionary<string, double>
    {
        ["f(x)"] = LogitInput.Average(), ["f(S)"] = LogitSignal.Average(), ["f(N)"] = LogitRoot.Average(),
        ["p(x)"] = ProbabilityInput.Average(), ["p(S)"] = ProbabilitySignal.Average(), ["p(N)"] = ProbabilityRoot.Average(),
    };

    /// <summary>A one-row table of the means.</summary>
    /// <param name="method">Method name.</param>
    /// <returns>The table.</returns>
    public ResultTable ToTable(string method) => new ResultTable("Target score at input, signal and root", Columns).AddRow(method, ToValues());
}

/// <summary>Derivative agreement of an activation stage at x and at the root N (paper Table 6).</summary>
/// <param name="MeanSquaredDifference">Per sample: mean over elements of (f′(z_x) − f′(z_N))².</param>
/// <param name="SameStateFraction">Per sample: fraction of elements whose on/off state (f′ ≠ 0) agrees.</param>
/// <param name="IdenticalPattern">Per sample: all on/off states agree.</param>
public sealed record LinearRegionResult(IReadOnlyList<double> MeanSquaredDifference, IReadOnlyList<double> SameStateFraction, IReadOnlyList<bool> IdenticalPattern)
{
    /// <summary>Mean of <see cref="MeanSquaredDifference"/>.</summary>
    public double MeanMeanSquaredDifference => MeanSquaredDifference.Average();

    /// <summary>Mean of <see cref="SameStateFraction"/>.</summary>
    public double MeanSameStateFraction => SameStateFraction.Average();

    /// <summary>Fraction of samples with identical on/off patterns.</summary>
    public double IdenticalPatternRate => IdenticalPattern.Count(p => p) / (double)IdenticalPattern.Count;
}

/// <summary>Checks of DTD roots: f(N) ≈ 0 and same-linear-region derivatives.</summary>
public static class RootChecks
{
    /// <summary>Target logits/probabilities at x, S and N (no gradients).</summary>
    /// <param name="model">Normalised batch → logits [B,K].</param>
    /// <param name="input">x [B,…].</param>
    /// <param name="signal">S, same shape as x.</param>
    /// <param name="root">N, same shape as x.</param>
    /// <param name="targets">Target classes int64 [B].</param>
    /// <returns>Per-sample values.</returns>
    public static RootScoreResult TargetScores(Func<Tensor, Tensor> model, Tensor input, Tensor signal, Tensor root, Tensor targets)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(input);
        SameShape(input, signal, nameof(signal));
        SameShape(input, root, nameof(root));
        Check.Labels(targets, input.shape[0], nameof(targets));
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var t = targets.to(ScalarType.Int64, input.device).unsqueeze(1);
        var rows = new List<Tensor>();
        foreach (var z in new[] { input, signal.to(input.device), root.to(input.device) })
        {
            var logits = Ops.Logits(model, z.detach()).to(ScalarType.Float64);
            rows.Add(logits.gather(1, t).squeeze(1));
            rows.Add(logits.softmax(1).gather(1, t).squeeze(1));
        }

        var all = torch.stack(rows).cpu().data<double>().ToArray(); // one transfer for reporting
        long b = input.shape[0];
        double[] Row(int i) => all.Skip((int)(i * b)).Take((int)b).ToArray();
        return new RootScoreResult(Row(0), Row(2), Row(4), Row(1), Row(3), Row(5));
    }

    /// <summary>
    /// Mean squared difference of the elementwise derivatives of <paramref name="activation"/> at two points, computed
    /// with autograd as ∇_z Σ f(z) (equal to f′(z) for elementwise functions such as ReLU), plus on/off agreement.
    /// </summary>
    /// <param name="activation">Elementwise, differentiable map (for example pre-activation → ReLU); output shape = input shape.</param>
    /// <param name="atInput">Pre-activations at x, [B,…].</param>
    /// <param name="atRoot">Pre-activations at the root N, same shape.</param>
    /// <returns>Per-sample values.</returns>
    public static LinearRegionResult LinearRegion(Func<Tensor, Tensor> activation, Tensor atInput, Tensor atRoot)
    {
        ArgumentNullException.ThrowIfNull(activation);
        ArgumentNullException.ThrowIfNull(atInput);
        SameShape(atInput, atRoot, nameof(atRoot));
        if (atInput.dim() < 1 || atInput.shape[0] == 0) throw new ArgumentException("Expected a batch dimension with at least one sample.", nameof(atInput));
        if (!atInput.is_floating_point()) throw new ArgumentException($"Expected floating-point pre-activations, got {atInput.dtype}.", nameof(atInput));
        using var scope = torch.NewDisposeScope();
        long b = atInput.shape[0];
        var dx = Derivative(activation, atInput).reshape(b, -1).to(ScalarType.Float64);
        var dn = Derivative(activation, atRoot.to(atInput.device)).reshape(b, -1).to(ScalarType.Float64);
        var msd = (dx - dn).pow(2).mean(new long[] { 1 });
        var same = dx.ne(0).eq(dn.ne(0));
        var frac = same.to(ScalarType.Float64).mean(new long[] { 1 });
        var identical = same.all(1).to(ScalarType.Float64);
        var all = torch.stack(new[] { msd, frac, identical }).cpu().data<double>().ToArray();
        return new LinearRegionResult(all.Take((int)b).ToArray(), all.Skip((int)b).Take((int)b).ToArray(), all.Skip(2 * (int)b).Select(v => v > 0.5).ToArray());
    }

    private static Tensor Derivative(Func<Tensor, Tensor> activation, Tensor z)
    {
        using var enable = torch.enable_grad();
        var zi = z.detach().clone().requires_grad_(true);
        var a = activation(zi) ?? throw new InvalidOperationException("The activation returned null.");
        if (!a.shape.SequenceEqual(zi.shape))
            throw new InvalidOperationException($"The activation must be elementwise: input [{string.Join(",", zi.shape)}] gave output [{string.Join(",", a.shape)}].");
        return Grad.Of(a.sum(), zi, "activation output");
    }

    private static void SameShape(Tensor reference, Tensor other, string name)
    {
        ArgumentNullException.ThrowIfNull(other, name);
        if (!reference.shape.SequenceEqual(other.shape))
            throw new ArgumentException($"Expected shape [{string.Join(",", reference.shape)}], got [{string.Join(",", other.shape)}].", name);
    }
}
