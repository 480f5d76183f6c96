using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd;

/// <summary>Per-unit diagnostics reported by rules that solve an optimisation (root inference).</summary>
public sealed class UnitDiagnostics
{
    /// <summary>Module path of the unit.</summary>
    public required string Unit { get; init; }

    /// <summary>The rule that produced the values.</summary>
    public required string Rule { get; init; }

    /// <summary>Input domain used (Relu, PixelBox, Free).</summary>
    public required string Domain { get; init; }

    /// <summary>Per-sample values by name (e.g. <c>initial_loss</c>, <c>final_loss</c>, <c>relative_residual</c>, <c>accepted_steps</c>, <c>relevance_in</c>, <c>relevance_out</c>).</summary>
    public required IReadOnlyDictionary<string, double[]> Values { get; init; }

    /// <summary>Elapsed wall-clock time of the unit's rule, in milliseconds (synchronised with the device only when diagnostics are on).</summary>
    public double Milliseconds { get; init; }
}

/// <summary>
/// Collects optional outputs of rules during one explanation: diagnostics and named tensors (signal/root).
/// Rules check <see cref="CollectDiagnostics"/> / <see cref="RecordRoots"/> before computing anything extra.
/// </summary>
public sealed class ExplanationRecorder
{
    internal ExplanationRecorder(bool collectDiagnostics, bool recordRoots)
    {
        CollectDiagnostics = collectDiagnostics;
        RecordRoots = recordRoots;
    }

    /// <summary>Whether diagnostics are wanted.</summary>
    public bool CollectDiagnostics { get; }

    /// <summary>Whether signal/root tensors are wanted.</summary>
    public bool RecordRoots { get; }

    internal List<UnitDiagnostics> Diagnostics { get; } = new();

    internal Dictionary<string, Tensor> Tensors { get; } = new(StringComparer.Ordinal);

    /// <summary>Adds one unit's diagnostics.</summary>
    public void Add(UnitDiagnostics diagnostics) => Diagnostics.Add(diagnostics);

    /// <summary>
    /// Keeps a tensor under <paramref name="key"/> (e.g. <c>conv1/root</c>); the explanation owns it afterwards. The kept
    /// copy belongs to no dispose scope (a rule or procedure may call this inside scopes of its own, which would dispose
    /// a tensor only moved one scope out: agf-root's roots were); a tensor kept again under the same key replaces and
    /// disposes the previous one.
    /// </summary>
    public void Keep(string key, Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        var kept = tensor.detach().DetachFromDisposeScope();
        if (Tensors.TryGetValue(key, out var previous) && !ReferenceEquals(previous, kept)) previous.Dispose();
        Tensors[key] = kept;
    }
}

/// <summary>Σ relevance of every graph node (per sample) compared with the explained logit.</summary>
public sealed class ConservationReport
{
    internal ConservationReport(IReadOnlyList<(string Layer, double[] Sums)> layers, double[] startRelevance, double[] inputSum,
        IReadOnlyList<(string Layer, double[] Sums)>? absorbed = null)
    {
        Layers = layers;
        Absorbed = absorbed ?? Array.Empty<(string, double[])>();
        StartRelevance = startRelevance;
        InputSum = inputSum;
    }

    /// <summary>For each node in forward order: its name and Σ of its output relevance per sample.</summary>
    public IReadOnlyList<(string Layer, double[] Sums)> Layers { get; }

    /// <summary>
    /// For each node in forward order: the relevance it absorbed per sample (Σ of its output relevance minus Σ of what
    /// its rule sent to its inputs): biases and stabilisers of the ε-rules, parameters such as the class token and the
    /// position embedding (everything that reaches them), the non-conservative softmax rule.
    /// </summary>
    public IReadOnlyList<(string Layer, double[] Sums)> Absorbed { get; }

    /// <summary>Σ of the start relevance per sample (the explained logit, or 1 for gradients).</summary>
    public double[] StartRelevance { get; }

    /// <summary>Σ of the input relevance per sample.</summary>
    public double[] InputSum { get; }

    /// <summary>
    /// Largest |Σ input relevance − start relevance| / |start relevance| over the batch; NaN when any sample's relevance
    /// is not finite (see <see cref="NonFiniteSamples"/>), never a clean number that hides it.
    /// </summary>
    public double MaxRelativeError
    {
        get
        {
            double max = 0;
            for (int i = 0; i < InputSum.Length; i++)
            {
                double e = RelativeError(i);
                if (double.IsNaN(e)) return double.NaN;
                max = Math.Max(max, e);
            }
            return max;
        }
    }

    /// <summary>
    /// |Σ input relevance − start relevance| / |start relevance| of one sample (the denominator floored at 1e-30, so a
    /// zero start gives the absolute error scaled up rather than a division by zero); NaN when either sum is NaN. Every
    /// report of the library (CLI, benchmark, formatting) uses this one definition.
    /// </summary>
    /// <param name="sample">Batch index.</param>
    public double RelativeError(int sample)
    {
        if (sample < 0 || sample >= InputSum.Length)
            throw new ArgumentOutOfRangeException(nameof(sample), $"sample {sample} is outside the batch of {InputSum.Length}.");
        return Math.Abs(InputSum[sample] - StartRelevance[sample]) / Math.Max(Math.Abs(StartRelevance[sample]), RelativeErrorFloor);
    }

    private const double RelativeErrorFloor = 1e-30;

    /// <summary>Samples (batch indices) whose relevance is NaN or ±∞ at the input, the start or any node.</summary>
    public IReadOnlyList<int> NonFiniteSamples =>
        Enumerable.Range(0, InputSum.Length)
            .Where(i => !double.IsFinite(InputSum[i]) || !double.IsFinite(StartRelevance[i]) || Layers.Any(l => !double.IsFinite(l.Sums[i])))
            .ToList();

    /// <summary>
    /// Where the backward walk first made <paramref name="sample"/>'s relevance non-finite: the node, closest to the
    /// output, whose own output relevance is finite but whose rule sent NaN or ±∞ to its inputs (its absorbed relevance
    /// is then not finite); <c>"the start relevance"</c> when the start itself is not finite; the first node (in the walk)
    /// with a non-finite Σ when no absorbed row pins it down; <c>null</c> when the sample is finite throughout.
    /// </summary>
    /// <param name="sample">Batch index.</param>
    public string? NonFiniteOrigin(int sample)
    {
        if (sample < 0 || sample >= InputSum.Length)
            throw new ArgumentOutOfRangeException(nameof(sample), $"sample {sample} is outside the batch of {InputSum.Length}.");
        if (!double.IsFinite(StartRelevance[sample])) return "the start relevance";
        var absorbed = Absorbed.ToDictionary(a => a.Layer, a => a.Sums, StringComparer.Ordinal);
        for (var k = Layers.Count - 1; k >= 0; k--)
        {
            var (layer, sums) = Layers[k];
            if (double.IsFinite(sums[sample]) && absorbed.TryGetValue(layer, out var a) && !double.IsFinite(a[sample])) return layer;
        }
        for (var k = Layers.Count - 1; k >= 0; k--)
            if (!double.IsFinite(Layers[k].Sums[sample])) return Layers[k].Layer;
        return double.IsFinite(InputSum[sample]) ? null : "the input relevance";
    }

    /// <summary>
    /// One sentence naming every sample whose relevance is not finite and the node where it became so
    /// (<see cref="NonFiniteOrigin"/>), e.g. for an error message; <c>null</c> when every sample is finite.
    /// </summary>
    /// <param name="firstIndex">Added to the batch index in the text (the batch's position in a data set).</param>
    public string? DescribeNonFinite(int firstIndex = 0)
    {
        var samples = NonFiniteSamples;
        if (samples.Count == 0) return null;
        var parts = samples.GroupBy(NonFiniteOrigin).Select(g => $"sample{(g.Count() > 1 ? "s" : "")} {string.Join(", ", g.Select(i => i + firstIndex))} at '{g.Key}'");
        return $"relevance became non-finite (NaN or ±∞) for {string.Join("; ", parts)} (the node whose rule sent non-finite relevance to its inputs, found walking back from the output)";
    }

    /// <summary>Readable table: one line per node.</summary>
    public override string ToString()
    {
        var sb = new System.Text.StringBuilder();
        sb.AppendLine(FormattableString.Invariant($"start relevance: {string.Join(", ", StartRelevance.Select(v => v.ToString("g6", System.Globalization.CultureInfo.InvariantCulture)))}"));
        foreach (var (layer, sums) in Layers)
            sb.AppendLine(FormattableString.Invariant($"{layer,-40} {string.Join(", ", sums.Select(v => v.ToString("g6", System.Globalization.CultureInfo.InvariantCulture)))}"));
        sb.Append(FormattableString.Invariant($"input: {string.Join(", ", InputSum.Select(v => v.ToString("g6", System.Globalization.CultureInfo.InvariantCulture)))} (max relative error {MaxRelativeError:g3})"));
        return sb.ToString();
    }
}

/// <summary>
/// How well-conditioned root inference was for one sample of an explanation, summarised over its root-inferred units
/// from their diagnostics (<see cref="Rules.RootInference.RootInferenceRule.DiagnosticsKeys"/>; needs
/// <see cref="ExplainerOptions.CollectDiagnostics"/>). Read it as: a sample is <see cref="IllConditioned"/> when some unit
/// could not pass on part of its relevance (<see cref="UnresponsiveFraction"/> &gt; 0: that relevance is lost, and the
/// conservation error shows it) or redistributed it through a ratio R/F(S) above <see cref="AmplificationLimit"/>
/// (a fitted contribution below a thousandth of the relevance it carries: the map then follows every change of that
/// near-zero F, which is where a batch and a single sample, or two nearly equal inputs, can part).
/// </summary>
/// <param name="Sample">Batch index.</param>
/// <param name="WorstRelativeResidual">Largest relative residual ‖F(S) − R‖/‖R‖ over the units (how far the fit is from R).</param>
/// <param name="WorstResidualUnit">The unit with that residual.</param>
/// <param name="UnresponsiveFraction">Largest fraction of a unit's relevance on outputs whose fitted F_j(S) is 0.</param>
/// <param name="UnresponsiveUnit">The unit with that fraction (<see langword="null"/> when it is 0).</param>
/// <param name="MaxAmplification">Largest |R_j| / |F_j(S)| over the units' outputs with both non-zero.</param>
/// <param name="AmplifyingUnit">The unit with that ratio.</param>
public sealed record RootConditioning(int Sample, double WorstRelativeResidual, string? WorstResidualUnit, double UnresponsiveFraction, string? UnresponsiveUnit,
    double MaxAmplification, string? AmplifyingUnit)
{
    /// <summary>The ratio R/F(S) above which a unit's redistribution counts as ill-conditioned (1000).</summary>
    public const double AmplificationLimit = 1e3;

    /// <summary>True when some unit lost relevance it could not pass on, or amplified it above <see cref="AmplificationLimit"/>; also for NaN figures.</summary>
    public bool IllConditioned => !(UnresponsiveFraction <= 0) || !(MaxAmplification <= AmplificationLimit);

    /// <summary>
    /// One summary per sample from the root-inference units' diagnostics, or an empty list when there are none
    /// (diagnostics off, or no unit used the root rule).
    /// </summary>
    /// <param name="diagnostics">An explanation's <see cref="Explanation.Diagnostics"/>.</param>
    public static IReadOnlyList<RootConditioning> From(IReadOnlyList<UnitDiagnostics> diagnostics)
    {
        ArgumentNullException.ThrowIfNull(diagnostics);
        var units = diagnostics.Where(d => d.Values.ContainsKey("unresponsive_fraction") && d.Values.ContainsKey("max_amplification") && d.Values.ContainsKey("relative_residual")).ToList();
        if (units.Count == 0) return Array.Empty<RootConditioning>();
        var batch = units[0].Values["relative_residual"].Length;
        var result = new List<RootConditioning>(batch);
        for (var i = 0; i < batch; i++)
        {
            (double Value, string? Unit) Worst(string key) =>
                units.Select(u => (Value: u.Values[key][i], Unit: (string?)u.Unit)).Aggregate((0.0, (string?)null), (best, next) => double.IsNaN(next.Value) || next.Value > best.Item1 ? next : best);
            var residual = Worst("relative_residual");
            var unresponsive = Worst("unresponsive_fraction");
            var amplification = Worst("max_amplification");
            result.Add(new RootConditioning(i, residual.Value, residual.Unit, unresponsive.Value, unresponsive.Unit, amplification.Value, amplification.Unit));
        }
        return result;
    }
}

/// <summary>The result of <see cref="Explainer.Explain(Tensor, long[])"/>. Owns its tensors: dispose it when done.</summary>
[Display.TypeFormatterSource(typeof(Display.ExplanationFormatterSource), PreferredMimeTypes = new[] { "text/html", "text/plain" })]
public sealed class Explanation : IDisposable
{
    internal Explanation(string method, Tensor input, Tensor relevance, Tensor logits, long[] targets, IReadOnlyDictionary<string, Tensor> layers,
        ConservationReport conservation, IReadOnlyList<UnitDiagnostics> diagnostics, IReadOnlyDictionary<string, Tensor> roots, Tensor? tokenMap = null)
    {
        TokenMap = tokenMap;
        Method = method;
        Input = input;
        InputRelevance = relevance;
        Heatmap = relevance.dim() == 4 ? relevance.sum(1).MoveToOuterDisposeScope() : relevance.alias().MoveToOuterDisposeScope();
        Logits = logits;
        Targets = targets;
        LayerRelevance = layers;
        Conservation = conservation;
        Diagnostics = diagnostics;
        Tensors = roots;
    }

    /// <summary>Name of the composite that produced the explanation.</summary>
    public string Method { get; }

    /// <summary>The explained input (detached).</summary>
    public Tensor Input { get; }

    /// <summary>Relevance of every input element (the input's shape).</summary>
    public Tensor InputRelevance { get; }

    /// <summary>Per-pixel heatmap [B,H,W] (channels summed); for [B,F] inputs the relevance itself.</summary>
    public Tensor Heatmap { get; }

    /// <summary>
    /// For token-map methods (rollout, raw attention, Chefer): the class-token map over the patch tokens [B, N_patches]
    /// (patch = row·grid + column); <see cref="Heatmap"/> is its bilinear upsampling to the image and
    /// <see cref="InputRelevance"/> that heatmap spread evenly over the channels. <c>null</c> for other methods.
    /// </summary>
    public Tensor? TokenMap { get; }

    /// <summary>The model's logits [B,K].</summary>
    public Tensor Logits { get; }

    /// <summary>The explained class of each sample.</summary>
    public long[] Targets { get; }

    /// <summary>Relevance at the output of the requested modules (<see cref="ExplainerOptions.RecordLayers"/>).</summary>
    public IReadOnlyDictionary<string, Tensor> LayerRelevance { get; }

    /// <summary>Σ relevance per layer vs the explained logit.</summary>
    public ConservationReport Conservation { get; }

    /// <summary>Per-unit diagnostics (when <see cref="ExplainerOptions.CollectDiagnostics"/> is set and the rules report any).</summary>
    public IReadOnlyList<UnitDiagnostics> Diagnostics { get; }

    /// <summary>
    /// Per sample, how well-conditioned root inference was (<see cref="RootDtd.RootConditioning"/>: worst residual,
    /// relevance lost at unresponsive outputs, largest ratio R/F(S), and a flag); empty without diagnostics or root units.
    /// </summary>
    public IReadOnlyList<RootConditioning> RootConditioning => RootDtd.RootConditioning.From(Diagnostics);

    /// <summary>Tensors kept by rules, e.g. <c>&lt;unit&gt;/signal</c> and <c>&lt;unit&gt;/root</c> (when <see cref="ExplainerOptions.RecordRoots"/> is set).</summary>
    public IReadOnlyDictionary<string, Tensor> Tensors { get; }

    /// <summary>Releases every tensor of the explanation.</summary>
    public void Dispose()
    {
        Input.Dispose();
        InputRelevance.Dispose();
        Heatmap.Dispose();
        Logits.Dispose();
        TokenMap?.Dispose();
        foreach (var t in LayerRelevance.Values) t.Dispose();
        foreach (var t in Tensors.Values) t.Dispose();
    }
}
