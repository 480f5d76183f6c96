using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Rules.RootInference;

/// <summary>
/// Constrained root inference (Zhang, Zhong and Jiang, ACM MM 2024) as specified in docs/root-inference.md: the unit's
/// input is split into a signal S, found by projected gradient descent so that the layer fed with S reproduces the
/// relevance R it must explain, and a root N = x − S; R is then redistributed along the contributions of S.
/// Reports per-unit diagnostics (<see cref="ExplanationRecorder.CollectDiagnostics"/>) and keeps
/// <c>&lt;unit&gt;/signal</c> and <c>&lt;unit&gt;/root</c> on request (<see cref="ExplanationRecorder.RecordRoots"/>).
/// </summary>
public sealed class RootInferenceRule : Rule
{
    /// <summary>Creates the rule (default: the spec's options).</summary>
    public RootInferenceRule(RootInferenceOptions? options = null) => Options = options ?? RootInferenceOptions.Default;

    /// <summary>The rule's options.</summary>
    public RootInferenceOptions Options { get; }

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var recorder = context.Recorder;
        var unit = context.Unit;
        var x = context.Input;
        var diagnostics = recorder.CollectDiagnostics;
        var clock = diagnostics ? Stopwatch.StartNew() : null;
        if (diagnostics) Synchronize(x);
        clock?.Restart();

        using var scope = torch.NewDisposeScope();
        var result = RootInferenceSolver.Solve(unit, x, context.Relevance, context.Domain, context.Low, context.High, Options);
        var name = context.Node.Name;
        if (recorder.RecordRoots)
        {
            recorder.Keep($"{name}/signal", result.Signal);
            recorder.Keep($"{name}/root", result.Root);
        }
        if (diagnostics)
        {
            var batch = x.shape[0];
            var r = context.Relevance.to(x.dtype);
            var relevanceNorm = r.reshape(batch, -1).norm(1);
            var residualNorm = (result.Contribution - r).reshape(batch, -1).norm(1);
            var relativeResidual = torch.where(relevanceNorm.gt(0), residualNorm / torch.where(relevanceNorm.gt(0), relevanceNorm, torch.ones_like(relevanceNorm)),
                torch.where(residualNorm.gt(0), torch.full_like(residualNorm, double.PositiveInfinity), torch.zeros_like(residualNorm)));
            var rows = torch.stack(new[]
            {
                result.InitialLoss, result.FinalLoss, relativeResidual, result.AcceptedSteps,
                result.InputRelevance.reshape(batch, -1).sum(1), r.reshape(batch, -1).sum(1),
            }).to(float64).cpu();
            clock!.Stop();
            var values = rows.data<double>().ToArray();
            string[] keys = { "initial_loss", "final_loss", "relative_residual", "accepted_steps", "relevance_in", "relevance_out" };
            var table = new Dictionary<string, double[]>(StringComparer.Ordinal);
            for (var k = 0; k < keys.Length; k++) table[keys[k]] = values.Skip(k * (int)batch).Take((int)batch).ToArray();
            recorder.Add(new UnitDiagnostics
            {
                Unit = name,
                Rule = ToString(),
                Domain = (Options.DomainConstraint ? context.Domain : InputDomain.Free).ToString(),
                Values = table,
                Milliseconds = clock.Elapsed.TotalMilliseconds,
            });
        }
        return new[] { result.InputRelevance.MoveToOuterDisposeScope() };
    }

    private static void Synchronize(Tensor x)
    {
        if (x.device_type == DeviceType.CUDA) torch.cuda.synchronize(x.device);
    }

    /// <inheritdoc />
    public override string ToString() => $"RootInference({Options})";
}
