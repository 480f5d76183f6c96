using RootDtd.Composites;
using RootDtd.Rules;
using RootDtd.Rules.RootInference;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Research;

/// <summary>
/// What the root-inference fit did on one unit for one sample at one number of steps (docs/research/root-inference-analysis.md).
/// Every value is computed from the solver's own result on the relevance <c>R</c> that reached the unit.
/// </summary>
/// <param name="Unit">Graph node name of the unit.</param>
/// <param name="Domain">The unit's input domain (<c>Relu</c>, <c>PixelBox</c>, <c>Free</c>).</param>
/// <param name="Steps">Descent steps of this fit (0: S = x).</param>
/// <param name="Sample">Sample index in the batch.</param>
/// <param name="Inputs">Input elements of the unit (per sample).</param>
/// <param name="Outputs">Output elements of the unit (per sample).</param>
/// <param name="InputZeroFraction">Fraction of exact zeros of x.</param>
/// <param name="SignalZeroFraction">Fraction of exact zeros of S.</param>
/// <param name="NewZeroFraction">Fraction of the nonzero elements of x whose signal is exactly 0.</param>
/// <param name="FaceFraction">Fraction of the elements with a proper box (lo &lt; hi) whose S sits on a face (S = lo or S = hi); NaN without a box.</param>
/// <param name="InputGini">Gini of |x|.</param>
/// <param name="SignalGini">Gini of |S|.</param>
/// <param name="RelevanceInZeroFraction">Fraction of exact zeros of the unit's input relevance.</param>
/// <param name="RelevanceInGini">Gini of |R_in|.</param>
/// <param name="InitialLoss">L(x).</param>
/// <param name="FinalLoss">L(S).</param>
/// <param name="TotalShare">Share of L(S) due to the wrong total: <c>(ΣF(S) − ΣR)²/n / L(S)</c>.</param>
/// <param name="InitialTotalShare">The same at S = x.</param>
/// <param name="RelevanceSum">ΣR of the unit's outputs.</param>
/// <param name="ContributionSum">ΣF(S).</param>
/// <param name="InitialContributionSum">ΣF(x).</param>
/// <param name="RelativeResidual">‖F(S) − R‖ / ‖R‖ (NaN when R = 0).</param>
/// <param name="AcceptedSteps">Accepted steps of the descent.</param>
/// <param name="SignalInputSpearman">Spearman's ρ between x and S over the elements with x ≠ 0 (1: S keeps x's order, as a threshold of x would).</param>
public sealed record UnitFitRecord(string Unit, string Domain, int Steps, int Sample, long Inputs, long Outputs,
    double InputZeroFraction, double SignalZeroFraction, double NewZeroFraction, double FaceFraction, double InputGini, double SignalGini,
    double RelevanceInZeroFraction, double RelevanceInGini, double InitialLoss, double FinalLoss, double TotalShare, double InitialTotalShare,
    double RelevanceSum, double ContributionSum, double InitialContributionSum, double RelativeResidual, double AcceptedSteps,
    double SignalInputSpearman);

/// <summary>
/// A measuring copy of the <c>root</c> composite: on every conv/linear unit it propagates exactly as
/// <see cref="RootInferenceRule"/> with <see cref="Options"/> does, and in addition solves the same unit, on the same input
/// and incoming relevance, with each of <see cref="ProbeSteps"/> steps and records a <see cref="UnitFitRecord"/> per
/// sample and step count. The probe fits never change the propagated relevance. Not thread-safe; one explainer at a time.
/// </summary>
public sealed class RootFitProbe
{
    private readonly List<UnitFitRecord> _records = new();

    /// <summary>Creates the probe.</summary>
    /// <param name="options">Options of the propagated rule and of every probe fit (default: the spec's).</param>
    /// <param name="probeSteps">Step counts to measure (default 0, 1, 5, 20).</param>
    public RootFitProbe(RootInferenceOptions? options = null, IReadOnlyList<int>? probeSteps = null)
    {
        Options = options ?? RootInferenceOptions.Default;
        ProbeSteps = probeSteps ?? new[] { 0, 1, 5, 20 };
        if (ProbeSteps.Any(s => s < 0)) throw new ArgumentOutOfRangeException(nameof(probeSteps), "Probe step counts must be ≥ 0.");
        Incoming = new RelevanceRecorder(new ProbeRule(this));
    }

    /// <summary>Options of the propagated rule.</summary>
    public RootInferenceOptions Options { get; }

    /// <summary>The step counts measured on every unit.</summary>
    public IReadOnlyList<int> ProbeSteps { get; }

    /// <summary>Records of every explanation since the last <see cref="Clear"/>, in the order the units were solved.</summary>
    public IReadOnlyList<UnitFitRecord> Records => _records;

    /// <summary>The relevance entering each unit (the unit rule wrapped in a <see cref="RelevanceRecorder"/>).</summary>
    public RelevanceRecorder Incoming { get; }

    /// <summary>The <c>root</c> composite (spec layers) with the measuring rule on every unit.</summary>
    /// <param name="name">Composite name.</param>
    public Composite CreateComposite(string name = "root-probe")
    {
        if (Options.Gelu != GeluTreatment.Pass || Options.Stabilizer != Stabilizer.Spec)
            throw new NotSupportedException("RootFitProbe measures the spec's layer rules only (gelu=pass, epsilon=1e-9).");
        return new Composite(name) { Variant = BundleVariant.RootInference }.ForAllUnits(Incoming.Rule);
    }

    /// <summary>Forgets the records and the recorded relevances.</summary>
    public void Clear()
    {
        _records.Clear();
        Incoming.Clear();
    }

    private sealed class ProbeRule : Rule
    {
        private readonly RootFitProbe _probe;
        private readonly RootInferenceRule _rule;

        public ProbeRule(RootFitProbe probe)
        {
            _probe = probe;
            _rule = new RootInferenceRule(probe.Options);
        }

        public override Tensor[] Propagate(RuleContext context)
        {
            using (var scope = torch.NewDisposeScope())
            {
                var x = context.Input.detach();
                var r = context.Relevance.detach().to(x.dtype);
                var domain = _probe.Options.DomainConstraint ? context.Domain : InputDomain.Free;
                var batch = (int)x.shape[0];
                var (lo, hi) = Box(x, domain, _probe.Options.GradientConstraint, context.Low, context.High);
                var xs = Rows(x, batch);
                var rs = Rows(r, batch);
                var los = lo is null ? null : Rows(lo, batch);
                var his = hi is null ? null : Rows(hi, batch);
                double[]? initialF = null;
                foreach (var steps in _probe.ProbeSteps.Prepend(0).Distinct())
                {
                    using var inner = torch.NewDisposeScope();
                    var result = RootInferenceSolver.Solve(context.Unit, x, r, context.Domain, context.Low, context.High, _probe.Options with { Steps = steps });
                    var s = Rows(result.Signal, batch);
                    var f = Rows(result.Contribution, batch);
                    var rin = Rows(result.InputRelevance, batch);
                    var accepted = result.AcceptedSteps.to(float64).cpu().data<double>().ToArray();
                    if (steps == 0) initialF = f.SelectMany(v => v).ToArray();
                    if (!_probe.ProbeSteps.Contains(steps)) continue;
                    for (var b = 0; b < batch; b++)
                    {
                        var n = rs[b].Length;
                        var f0 = initialF.AsSpan(b * n, n);
                        var split = DistributionStatistics.SplitLoss(f[b], rs[b]);
                        var split0 = DistributionStatistics.SplitLoss(f0, rs[b]);
                        double rNorm = 0;
                        foreach (var v in rs[b]) rNorm += v * v;
                        _probe._records.Add(new UnitFitRecord(context.Node.Name, domain.ToString(), steps, b, xs[b].Length, n,
                            DistributionStatistics.ZeroFraction(xs[b]), DistributionStatistics.ZeroFraction(s[b]), NewZeros(xs[b], s[b]),
                            los is null || his is null ? double.NaN : OnFaces(s[b], los[b], his[b]),
                            DistributionStatistics.Gini(xs[b]), DistributionStatistics.Gini(s[b]),
                            DistributionStatistics.ZeroFraction(rin[b]), DistributionStatistics.Gini(rin[b]),
                            split0.Loss, split.Loss, split.TotalShare, split0.TotalShare, rs[b].Sum(), f[b].Sum(), f0.ToArray().Sum(),
                            rNorm > 0 ? Math.Sqrt(split.Loss / rNorm) : double.NaN, accepted[b], NonzeroSpearman(xs[b], s[b])));
                    }
                }
            }
            return _rule.Propagate(context);
        }

        public override string ToString() => $"RootFitProbe({_rule})";

        private static double[][] Rows(Tensor t, int batch)
        {
            var flat = t.detach().reshape(batch, -1).to(float64).cpu();
            var n = (int)flat.shape[1];
            var all = flat.data<double>().ToArray();
            return Enumerable.Range(0, batch).Select(b => all.AsSpan(b * n, n).ToArray()).ToArray();
        }

        private static (Tensor? Lo, Tensor? Hi) Box(Tensor x, InputDomain domain, bool gradient, Tensor? low, Tensor? high) => domain switch
        {
            InputDomain.Relu => (torch.zeros_like(x), gradient ? x : null),
            InputDomain.PixelBox when low is not null && high is not null => (x - high.to(x.dtype).expand(x.shape), x - low.to(x.dtype).expand(x.shape)),
            _ => (null, null),
        };

        private static double NewZeros(double[] x, double[] s)
        {
            int nonzero = 0, zeroed = 0;
            for (var i = 0; i < x.Length; i++)
            {
                if (x[i] == 0) continue;
                nonzero++;
                if (s[i] == 0) zeroed++;
            }
            return nonzero > 0 ? (double)zeroed / nonzero : 0;
        }

        private static double NonzeroSpearman(double[] x, double[] s)
        {
            var keep = Enumerable.Range(0, x.Length).Where(i => x[i] != 0).ToArray();
            return DistributionStatistics.Spearman(keep.Select(i => x[i]).ToArray(), keep.Select(i => s[i]).ToArray());
        }

        private static double OnFaces(double[] s, double[] lo, double[] hi)
        {
            int boxed = 0, faces = 0;
            for (var i = 0; i < s.Length; i++)
            {
                if (!(lo[i] < hi[i])) continue;
                boxed++;
                if (s[i] <= lo[i] || s[i] >= hi[i]) faces++;
            }
            return boxed > 0 ? (double)faces / boxed : double.NaN;
        }
    }
}

/// <summary>
/// Wraps a unit rule and keeps, per unit (graph node name), the relevance that entered it in the last explanation, one
/// flattened row per sample; the wrapped rule's result is returned unchanged. Used to compare where two methods send
/// relevance layer by layer (e.g. root against z⁺).
/// </summary>
public sealed class RelevanceRecorder
{
    private readonly Dictionary<string, double[][]> _incoming = new(StringComparer.Ordinal);

    /// <summary>Wraps <paramref name="inner"/>.</summary>
    /// <param name="inner">The rule that propagates.</param>
    public RelevanceRecorder(Rule inner)
    {
        ArgumentNullException.ThrowIfNull(inner);
        Rule = new RecordingRule(this, inner);
    }

    /// <summary>The recording rule (assign it to the units).</summary>
    public Rule Rule { get; }

    /// <summary>Unit name → the incoming relevance of the last explanation, [sample][output element].</summary>
    public IReadOnlyDictionary<string, double[][]> Incoming => _incoming;

    /// <summary>Forgets the recorded relevances.</summary>
    public void Clear() => _incoming.Clear();

    private sealed class RecordingRule : Rule
    {
        private readonly RelevanceRecorder _owner;
        private readonly Rule _inner;

        public RecordingRule(RelevanceRecorder owner, Rule inner)
        {
            _owner = owner;
            _inner = inner;
        }

        public override Tensor[] Propagate(RuleContext context)
        {
            var batch = (int)context.Relevance.shape[0];
            using (var scope = torch.NewDisposeScope())
            {
                var flat = context.Relevance.detach().reshape(batch, -1).to(float64).cpu();
                var n = (int)flat.shape[1];
                var all = flat.data<double>().ToArray();
                _owner._incoming[context.Node.Name] = Enumerable.Range(0, batch).Select(b => all.AsSpan(b * n, n).ToArray()).ToArray();
            }
            return _inner.Propagate(context);
        }

        public override string ToString() => _inner.ToString();
    }
}
