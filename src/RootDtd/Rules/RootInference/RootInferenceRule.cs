using System.Diagnostics;
using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Rules.RootInference;

/// <summary>
/// Constrained root inference (Zhang, Zhong and Jiang, ACM MM 2024) as specified in docs/root-inference.md: the unit's
/// input is split into a signal S, found by projected gradient descent so that the layer fed with S reproduces the
/// relevance R it must explain, and a root N = x − S; R is then redistributed along the contributions of S.
/// A unit whose node names <see cref="LinearUnitNode.OutputParts"/> (timm's qkv: q, k, v) is solved as that many units,
/// each on its own slice of the outputs, and the input relevances are summed (docs/transformers.md, D7). A unit (or
/// part) whose relevance is zero for every sample of the batch returns zero without fitting; a sample with zero
/// relevance gets zero relevance in any case.
/// Reports per-unit diagnostics (<see cref="ExplanationRecorder.CollectDiagnostics"/>; parts as <c>&lt;unit&gt;/q</c>, …) and keeps
/// <c>&lt;unit&gt;/signal</c> and <c>&lt;unit&gt;/root</c> on request (<see cref="ExplanationRecorder.RecordRoots"/>).
/// </summary>
public sealed class RootInferenceRule : Rule
{
    /// <summary>Creates the rule (default: the spec's options).</summary>
    public RootInferenceRule(RootInferenceOptions? options = null) => Options = options ?? RootInferenceOptions.Default;

    /// <summary>The rule's options.</summary>
    public RootInferenceOptions Options { get; }

    /// <summary>
    /// The names of the per-sample diagnostics values, in the order they are reported. Besides the fit
    /// (<c>relative_residual</c> = ‖F(S) − R‖/‖R‖ per sample) two figures say how well-conditioned the unit's redistribution is:
    /// <c>unresponsive_fraction</c> = Σ|R_j| over outputs with relevance whose fitted F_j(S) is exactly 0 (they cannot pass
    /// it on: it is lost, e.g. a unit whose active inputs all have negative weights under the positive map), over Σ|R_j|;
    /// <c>max_amplification</c> = the largest |R_j| / |F_j(S)| over outputs with both non-zero — the normalized
    /// redistribution's ratio q = R/F(S): 1 where the fit is good, large where a near-zero F_j(S) carries a large R_j and
    /// the result follows every change of F_j (see <see cref="RootConditioning"/>).
    /// </summary>
    public static IReadOnlyList<string> DiagnosticsKeys { get; } = new[]
    {
        "initial_loss", "final_loss", "relative_residual", "accepted_steps", "relevance_in", "relevance_out", "fitted",
        "unresponsive_fraction", "max_amplification",
    };

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var unit = context.Unit;
        var parts = (context.Node as LinearUnitNode)?.OutputParts ?? Array.Empty<string>();
        if (parts.Count <= 1) return new[] { SolvePart(context, unit, context.Relevance, context.Node.Name) };

        var outputs = unit.OutputFeatures;
        if (outputs % parts.Count != 0)
            throw new ExplanationException($"'{context.Node.Name}' ({unit}) names {parts.Count} output parts ({string.Join(", ", parts)}), which do not divide its {outputs} outputs.");
        var size = outputs / parts.Count;
        var axis = unit.Kind == LinearUnitKind.Dense ? context.Relevance.dim() - 1 : 1;
        Tensor? total = null;
        for (var p = 0; p < parts.Count; p++)
        {
            var part = SolvePart(context, unit.OutputSlice(p * size, size), context.Relevance.narrow(axis, p * size, size), $"{context.Node.Name}/{parts[p]}");
            total = total is null ? part : total.add_(part);
        }
        return new[] { total! };
    }

    private Tensor SolvePart(RuleContext context, LinearUnit unit, Tensor relevance, string name)
    {
        var recorder = context.Recorder;
        var x = context.Input;
        var diagnostics = recorder.CollectDiagnostics;
        var clock = diagnostics ? Stopwatch.StartNew() : null;
        if (diagnostics) Synchronize(x);
        clock?.Restart();

        using var scope = torch.NewDisposeScope();
        var batch = x.shape[0];
        var r = relevance.to(x.dtype);
        // samples with relevance: the others get zero whatever the redistribution (Eq. 8 read literally would not)
        var live = r.reshape(batch, -1).ne(0).any(1);
        var domain = Options.DomainConstraint ? context.Domain : InputDomain.Free;
        if (!live.any().item<bool>())
        {
            // nothing to explain in the whole batch (q and k under held attention): zero, no fit
            var zero = torch.zeros_like(x);
            if (recorder.RecordRoots)
            {
                recorder.Keep($"{name}/signal", zero);
                recorder.Keep($"{name}/root", x);
            }
            if (diagnostics)
            {
                var zeros = new double[batch];
                var table = DiagnosticsKeys.ToDictionary(k => k, _ => (double[])zeros.Clone(), StringComparer.Ordinal);
                clock!.Stop();
                recorder.Add(new UnitDiagnostics { Unit = name, Rule = ToString(), Domain = domain.ToString(), Values = table, Milliseconds = clock.Elapsed.TotalMilliseconds });
            }
            return zero.MoveToOuterDisposeScope();
        }

        var result = RootInferenceSolver.Solve(unit, x, r, context.Domain, context.Low, context.High, Options);
        var inShape = new long[x.dim()];
        Array.Fill(inShape, 1L);
        inShape[0] = batch;
        var liveIn = live.view(inShape);
        var rIn = torch.where(liveIn, result.InputRelevance, torch.zeros_like(result.InputRelevance));
        if (recorder.RecordRoots)
        {
            recorder.Keep($"{name}/signal", torch.where(liveIn, result.Signal, torch.zeros_like(x)));
            recorder.Keep($"{name}/root", torch.where(liveIn, result.Root, x));
        }
        if (diagnostics)
        {
            var relevanceNorm = r.reshape(batch, -1).norm(1);
            var residualNorm = (result.Contribution - r).reshape(batch, -1).norm(1);
            var relativeResidual = torch.where(relevanceNorm.gt(0), residualNorm / torch.where(relevanceNorm.gt(0), relevanceNorm, torch.ones_like(relevanceNorm)),
                torch.where(residualNorm.gt(0), torch.full_like(residualNorm, double.PositiveInfinity), torch.zeros_like(residualNorm)));
            var fitted = live.to(x.dtype);
            var rFlat = r.reshape(batch, -1);
            var fFlat = result.Contribution.reshape(batch, -1);
            var carries = rFlat.ne(0);
            var relevanceL1 = rFlat.abs().sum(1);
            var unresponsive = torch.where(carries & fFlat.eq(0), rFlat.abs(), torch.zeros_like(rFlat)).sum(1)
                / torch.where(relevanceL1.gt(0), relevanceL1, torch.ones_like(relevanceL1));
            var responding = carries & fFlat.ne(0);
            var amplification = torch.where(responding, rFlat.abs() / torch.where(responding, fFlat.abs(), torch.ones_like(fFlat)), torch.zeros_like(rFlat)).amax(1);
            var rows = torch.stack(new[]
            {
                result.InitialLoss * fitted, result.FinalLoss * fitted, relativeResidual * fitted, result.AcceptedSteps * fitted,
                rIn.reshape(batch, -1).sum(1), r.reshape(batch, -1).sum(1), fitted, unresponsive * fitted, amplification * fitted,
            }).to(float64).cpu();
            clock!.Stop();
            var values = rows.data<double>().ToArray();
            var table = new Dictionary<string, double[]>(StringComparer.Ordinal);
            for (var k = 0; k < DiagnosticsKeys.Count; k++) table[DiagnosticsKeys[k]] = values.Skip(k * (int)batch).Take((int)batch).ToArray();
            recorder.Add(new UnitDiagnostics
            {
                Unit = name,
                Rule = ToString(),
                Domain = domain.ToString(),
                Values = table,
                Milliseconds = clock.Elapsed.TotalMilliseconds,
            });
        }
        return rIn.MoveToOuterDisposeScope();
    }

    private static void Synchronize(Tensor x)
    {
        if (x.device_type == DeviceType.CUDA) torch.cuda.synchronize(x.device);
    }

    /// <inheritdoc />
    public override string ToString() => $"RootInference({Options with { Gelu = GeluTreatment.Pass }})";
}
