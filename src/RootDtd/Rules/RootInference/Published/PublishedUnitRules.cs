using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Rules.RootInference.Published;

/// <summary>Helpers shared by the published-code rules.</summary>
internal static class PublishedWeights
{
    /// <summary>
    /// The layer's own weight, as the reference reads it (<c>module.weight</c>): BatchNorm layers are passed through there,
    /// never folded in. When a canonizer merged a BatchNorm into the unit, the weight is read from the original module,
    /// so the rules give the same result with or without BatchNorm merging.
    /// </summary>
    public static Tensor Raw(RuleContext context)
    {
        var node = context.Node as LinearUnitNode
            ?? throw new ExplanationException($"A published root rule was assigned to '{context.Node.Name}' ({context.Node.Kind}), which is not a conv/linear layer.");
        if (node.MergedModules.Count == 0) return node.Unit.Weight;
        return node.Module switch
        {
            TorchSharp.Modules.Conv2d c => c.weight!,
            TorchSharp.Modules.Linear l => l.weight!,
            _ => throw new ExplanationException(
                $"'{node.Name}' has merged BatchNorm layers ({string.Join(", ", node.MergedModules)}) and its module is not a Conv2d/Linear, so its own weight is unknown; " +
                "use PublishedRootPreset.Options() (no BatchNorm merging)."),
        };
    }

    public static Tensor Positive(RuleContext context) => context.Unit.GetParameter("published/w+", () => Raw(context).clamp_min(0));

    public static Tensor Negative(RuleContext context) => context.Unit.GetParameter("published/w-", () => Raw(context).clamp_max(0));

    public static void Report(RuleContext context, string rule, Tensor signal, Tensor root, Tensor relevanceIn, IReadOnlyDictionary<string, Tensor>? extra = null)
    {
        var recorder = context.Recorder;
        if (recorder.RecordRoots)
        {
            recorder.Keep($"{context.Node.Name}/signal", signal);
            recorder.Keep($"{context.Node.Name}/root", root);
        }
        if (!recorder.CollectDiagnostics) return;
        using var scope = torch.NewDisposeScope();
        var b = relevanceIn.shape[0];
        var values = new Dictionary<string, double[]>
        {
            ["relevance_in"] = PerSample(relevanceIn.reshape(b, -1).sum(1)),
            ["relevance_out"] = PerSample(context.Relevance.reshape(b, -1).sum(1)),
        };
        if (extra is not null)
            foreach (var (k, v) in extra) values[k] = PerSample(v);
        recorder.Add(new UnitDiagnostics { Unit = context.Node.Name, Rule = rule, Domain = context.Domain.ToString(), Values = values });
    }

    private static double[] PerSample(Tensor t) => t.detach().to(ScalarType.Float64).cpu().data<double>().ToArray();
}

/// <summary>
/// The published code's dense-layer rule (<c>DTDOpt.backprop_dense</c>). With <c>W⁺ = max(W, 0)</c>,
/// <c>W⁻ = min(W, 0)</c> (the layer's own weight, bias ignored), <c>x⁺ = max(x, 0)</c>, <c>x⁻ = min(x, 0)</c>:
/// <list type="number">
/// <item><c>z₁ = x⁺·W⁺ᵀ</c>, <c>z₂ = x⁻·W⁻ᵀ</c> (the "activator" pairs; both ≥ 0).</item>
/// <item>The output relevance is split by magnitude: <c>R₁ = R·|z₁|/(|z₁| + |z₂|)</c>, <c>R₂ = R·|z₂|/(|z₁| + |z₂|)</c>.</item>
/// <item>Signals: <c>S₁</c> = <see cref="PublishedSolvers.HingeSignal"/>(x⁺, R₁, ·W⁺ᵀ, <see cref="PositiveSteps"/>),
/// <c>S₂</c> likewise on x⁻, R₂, W⁻ with <see cref="NegativeSteps"/>.</item>
/// <item><c>R_in = S₁ ⊙ (safe(R₁/z₁)·W⁺) + S₂ ⊙ (safe(R₂/z₂)·W⁻)</c> (first-order Taylor at the root with the input's gradient).</item>
/// </list>
/// Deviation: where <c>|z₁| + |z₂| = 0</c> the reference divides 0 by 0 (NaN, which then spreads to every input); here
/// both shares are 0 there.
/// </summary>
public sealed class PublishedDenseRootRule : Rule
{
    /// <summary>Creates the rule (defaults: the reference's 1 and 5 steps, learning rate 1, gradient clamp 1).</summary>
    public PublishedDenseRootRule(int positiveSteps = 1, int negativeSteps = 5, double learningRate = 1, double? gradientClampMax = 1)
    {
        if (positiveSteps < 0) throw new ArgumentOutOfRangeException(nameof(positiveSteps));
        if (negativeSteps < 0) throw new ArgumentOutOfRangeException(nameof(negativeSteps));
        PositiveSteps = positiveSteps;
        NegativeSteps = negativeSteps;
        LearningRate = learningRate;
        GradientClampMax = gradientClampMax;
    }

    /// <summary>Steps of the solver on the (x⁺, W⁺) branch.</summary>
    public int PositiveSteps { get; }

    /// <summary>Steps of the solver on the (x⁻, W⁻) branch.</summary>
    public int NegativeSteps { get; }

    /// <summary>Solver step size.</summary>
    public double LearningRate { get; }

    /// <summary>Upper clamp of the solver gradient (<c>null</c> = none).</summary>
    public double? GradientClampMax { get; }

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var unit = context.Unit;
        if (unit.Kind != LinearUnitKind.Dense)
            throw new ExplanationException($"{this} applies to dense layers; '{context.Node.Name}' is {unit}.");
        using var scope = torch.NewDisposeScope();
        var x = context.Input;
        var r = context.Relevance;
        var wp = PublishedWeights.Positive(context);
        var wn = PublishedWeights.Negative(context);
        var xp = x.clamp_min(0);
        var xn = x.clamp_max(0);
        var z1 = unit.Forward(xp, wp, null);
        var z2 = unit.Forward(xn, wn, null);
        var a1 = z1.abs();
        var a2 = z2.abs();
        var den = a1 + a2;
        var zero = den.eq(0);
        var safeDen = den.masked_fill(zero, 1);
        var r1 = (r * a1 / safeDen).masked_fill(zero, 0);
        var r2 = (r * a2 / safeDen).masked_fill(zero, 0);

        var s1 = PublishedSolvers.HingeSignal(xp, r1, t => unit.Forward(t, wp, null), PositiveSteps, LearningRate, GradientClampMax);
        var s2 = PublishedSolvers.HingeSignal(xn, r2, t => unit.Forward(t, wn, null), NegativeSteps, LearningRate, GradientClampMax);
        var root1 = xp - s1;
        var root2 = xn - s2;
        var signal1 = xp - root1;
        var signal2 = xn - root2;
        var rin = signal1 * unit.Transpose(PublishedSolvers.SafeDivide(r1, z1), wp, x.shape)
                  + signal2 * unit.Transpose(PublishedSolvers.SafeDivide(r2, z2), wn, x.shape);
        PublishedWeights.Report(context, ToString(), signal1 + signal2, root1 + root2, rin);
        return new[] { rin.MoveToOuterDisposeScope() };
    }

    /// <inheritdoc />
    public override string ToString() => $"PublishedDenseRoot(steps={PositiveSteps}/{NegativeSteps}, lr={LearningRate:g3}, clamp={(GradientClampMax is { } c ? c.ToString("g3") : "none")})";
}

/// <summary>
/// The published code's convolution rule (<c>DTDOpt.backprop_conv</c>; with <see cref="StartFromOnes"/>
/// <c>backprop_conv_input</c>, used for the network's first convolution). With <c>W⁺ = max(W, 0)</c> (the layer's own
/// weight, bias and W⁻ ignored) and <c>x</c> the layer input (all ones for the first convolution):
/// <c>S</c> = <see cref="PublishedSolvers.SsimSignal"/>(x, R, conv(·, W⁺), <see cref="Steps"/>), root <c>N = x − S</c>, and
/// <c>R_in = S ⊙ convᵀ(R, W⁺)</c>. The output relevance itself, not <c>R / z</c>, seeds the vector-Jacobian product, so
/// the rule does <b>not</b> conserve relevance: <c>Σ R_in = Σ_j R_j·z_j(S)</c> with <c>z(S) = conv(S, W⁺)</c>.
/// The layer's stride, padding, dilation and groups are used (the reference passes stride and padding only; torchvision
/// VGG/ResNet have no dilation or groups, so the results agree there).
/// </summary>
public sealed class PublishedConvRootRule : Rule
{
    /// <summary>Creates the rule (defaults: the reference's 5 steps, learning rate 1, the layer's input as start).</summary>
    public PublishedConvRootRule(bool startFromOnes = false, int steps = 5, double learningRate = 1)
    {
        if (steps < 0) throw new ArgumentOutOfRangeException(nameof(steps));
        StartFromOnes = startFromOnes;
        Steps = steps;
        LearningRate = learningRate;
    }

    /// <summary>Replace the layer input by an all-ones tensor (the reference's first convolution).</summary>
    public bool StartFromOnes { get; }

    /// <summary>SSIM steps.</summary>
    public int Steps { get; }

    /// <summary>Step size.</summary>
    public double LearningRate { get; }

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var unit = context.Unit;
        if (unit.Kind != LinearUnitKind.Convolution2d)
            throw new ExplanationException($"{this} applies to convolutions; '{context.Node.Name}' is {unit}.");
        using var scope = torch.NewDisposeScope();
        var x = StartFromOnes ? torch.ones_like(context.Input) : context.Input;
        var r = context.Relevance;
        var wp = PublishedWeights.Positive(context);
        var s = PublishedSolvers.SsimSignal(x, r, t => unit.Forward(t, wp, null), Steps, LearningRate);
        var root = x - s;
        var signal = x - root;
        var rin = signal * unit.Transpose(r, wp, x.shape);
        PublishedWeights.Report(context, ToString(), signal, root, rin);
        return new[] { rin.MoveToOuterDisposeScope() };
    }

    /// <inheritdoc />
    public override string ToString() => $"PublishedConvRoot({(StartFromOnes ? "ones, " : "")}steps={Steps}, lr={LearningRate:g3})";
}
