using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Rules.RootInference;

/// <summary>
/// Shared plumbing of the issue-14 root variants (docs/root-inference.md "Variants (issue 14)"): a unit whose node names
/// output parts (timm's qkv) is solved part by part, like <see cref="RootInferenceRule"/>; a unit whose relevance is zero
/// for the whole batch returns zero without fitting.
/// </summary>
internal static class RootVariantParts
{
    /// <summary>The result of one part: its input relevance and, per sample, ‖F(S) − R‖² and ‖R‖² of the part.</summary>
    internal readonly record struct PartResult(Tensor InputRelevance, Tensor ResidualSquared, Tensor RelevanceSquared);

    internal static (Tensor InputRelevance, Tensor ResidualSquared, Tensor RelevanceSquared) Solve(RuleContext context, Func<LinearUnit, Tensor, PartResult> solvePart)
    {
        var unit = context.Unit;
        var parts = (context.Node as LinearUnitNode)?.OutputParts ?? Array.Empty<string>();
        var r = context.Relevance.to(context.Input.dtype);
        if (parts.Count <= 1)
        {
            var single = solvePart(unit, r);
            return (single.InputRelevance, single.ResidualSquared, single.RelevanceSquared);
        }
        var outputs = unit.OutputFeatures;
        if (outputs % parts.Count != 0)
            throw new ExplanationException($"'{context.Node.Name}' ({unit}) names {parts.Count} output parts ({string.Join(", ", parts)}), which do not divide its {outputs} outputs.");
        var size = outputs / parts.Count;
        var axis = unit.Kind == LinearUnitKind.Dense ? r.dim() - 1 : 1;
        Tensor? total = null, residual = null, norm = null;
        for (var p = 0; p < parts.Count; p++)
        {
            var part = solvePart(unit.OutputSlice(p * size, size), r.narrow(axis, p * size, size));
            total = total is null ? part.InputRelevance : total.add_(part.InputRelevance);
            residual = residual is null ? part.ResidualSquared : residual.add_(part.ResidualSquared);
            norm = norm is null ? part.RelevanceSquared : norm.add_(part.RelevanceSquared);
        }
        return (total!, residual!, norm!);
    }

    /// <summary>
    /// The frame every variant shares: zero input relevance for a batch whose relevance is all zero (no fit), otherwise
    /// <paramref name="inputRelevance"/> (the variant's fit, which reads the relevance through <see cref="Solve"/>), set
    /// to zero for the samples whose own relevance is zero; all temporaries are disposed.
    /// </summary>
    internal static Tensor[] PropagateLiveSamples(RuleContext context, Tensor x, Func<Tensor> inputRelevance)
    {
        using var scope = torch.NewDisposeScope();
        var batch = x.shape[0];
        var relevance = context.Relevance.to(x.dtype);
        if (!relevance.ne(0).any().item<bool>()) return new[] { torch.zeros_like(x).MoveToOuterDisposeScope() };
        var rIn = inputRelevance();
        var live = relevance.reshape(batch, -1).ne(0).any(1).view(BatchView(x.dim(), batch));
        return new[] { torch.where(live, rIn, torch.zeros_like(x)).MoveToOuterDisposeScope() };
    }

    /// <summary>Σ of squares per sample [B].</summary>
    internal static Tensor SquaredNorm(Tensor t) => t.reshape(t.shape[0], -1).square().sum(new long[] { 1 });

    /// <summary>Shape [B, 1, …, 1] with <paramref name="dims"/> axes.</summary>
    internal static long[] BatchView(long dims, long batch)
    {
        var shape = new long[dims];
        Array.Fill(shape, 1L);
        shape[0] = batch;
        return shape;
    }

    /// <summary>
    /// The shape factor c = ΣF(x) / |ΣR| per sample (1 where ΣR = 0 or ΣF(x) ≤ 0), so that c·R has the total of F(x).
    /// </summary>
    internal static Tensor ShapeFactor(Tensor contributionAtX, Tensor r)
    {
        var batch = r.shape[0];
        var sumF = contributionAtX.reshape(batch, -1).sum(new long[] { 1 });
        var sumR = r.reshape(batch, -1).sum(new long[] { 1 }).abs();
        var valid = sumR.gt(0).logical_and(sumF.gt(0));
        return torch.where(valid, sumF / torch.where(valid, sumR, torch.ones_like(sumR)), torch.ones_like(sumR));
    }
}

/// <summary>
/// <c>root-gated</c> (issue 14, V1/V2 of docs/research/root-variants.md): solves the unit as <see cref="RootInferenceRule"/>
/// does and keeps that redistribution only for the samples whose fit explains the relevance: relative residual
/// <c>‖F(S) − R‖ / ‖R‖ ≤ τ</c> (over the whole unit; τ = 1 is the residual of the trivial root S = 0). For the other
/// samples the unit uses <see cref="Fallback"/> (default z⁺, zennit's, with the positive bias in the denominator).
/// Samples with zero relevance get zero. Conserves only where the fallback does (z⁺ absorbs the bias share).
/// </summary>
public sealed class FitGatedRootRule : Rule
{
    /// <summary>Creates the rule.</summary>
    /// <param name="options">Root options of the fit (default: the spec's).</param>
    /// <param name="tau">Largest relative residual at which the root redistribution is kept (≥ 0; +∞: always root).</param>
    /// <param name="fallback">Rule for the samples whose fit is not kept (default <see cref="ZPlusRule"/>).</param>
    public FitGatedRootRule(RootInferenceOptions? options = null, double tau = 1, Rule? fallback = null)
    {
        if (!(tau >= 0)) throw new ArgumentOutOfRangeException(nameof(tau), tau, "root-gated: tau (the largest relative residual kept) must be ≥ 0.");
        Options = options ?? RootInferenceOptions.Default;
        Tau = tau;
        Fallback = fallback ?? new ZPlusRule();
    }

    /// <summary>Root options of the fit.</summary>
    public RootInferenceOptions Options { get; }

    /// <summary>The residual threshold τ.</summary>
    public double Tau { get; }

    /// <summary>The rule used where the fit is not kept.</summary>
    public Rule Fallback { get; }

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var x = context.Input;
        return RootVariantParts.PropagateLiveSamples(context, x, () =>
        {
            var (rootIn, residual, norm) = RootVariantParts.Solve(context, (unit, r) =>
            {
                var result = RootInferenceSolver.Solve(unit, x, r, context.Domain, context.Low, context.High, Options);
                return new(result.InputRelevance, RootVariantParts.SquaredNorm(result.Contribution - r), RootVariantParts.SquaredNorm(r));
            });
            // keep root where ‖F − R‖ ≤ τ‖R‖ (and where R = 0: both rules give 0 there)
            var keep = residual.le(norm * (Tau * Tau)).logical_or(norm.eq(0));
            var fallback = Fallback.Propagate(context)[0].to(x.dtype);
            return torch.where(keep.view(RootVariantParts.BatchView(x.dim(), x.shape[0])), rootIn, fallback);
        });
    }

    /// <inheritdoc />
    public override string ToString() => FormattableString.Invariant($"FitGatedRoot(tau={Tau:g6}, {Options with { Gelu = GeluTreatment.Pass }}, fallback={Fallback})");
}

/// <summary>
/// <c>root-shape</c> (issue 14, V3): the spec's root fit with the target rescaled per sample to the total of F(x),
/// <c>c·R</c> with <c>c = ΣF(x) / |ΣR|</c>, so that the descent fits the distribution of R and not its 10²–10⁴ times
/// smaller total; the input relevance is divided by c again. With the normalized redistribution this is the spec's formula
/// <c>R_in = S ⊙ ∇(Σ_j R_j F_j(S) / F_j(S))</c> at the shape-fitted S and conserves exactly as <c>root</c> does.
/// </summary>
public sealed class ShapeFitRootRule : Rule
{
    /// <summary>Creates the rule.</summary>
    /// <param name="options">Root options (default: the spec's).</param>
    public ShapeFitRootRule(RootInferenceOptions? options = null) => Options = options ?? RootInferenceOptions.Default;

    /// <summary>Root options.</summary>
    public RootInferenceOptions Options { get; }

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var x = context.Input;
        var batch = x.shape[0];
        return RootVariantParts.PropagateLiveSamples(context, x, () => RootVariantParts.Solve(context, (unit, r) =>
        {
            var atX = RootInferenceSolver.Solve(unit, x, r, context.Domain, context.Low, context.High, Options with { Steps = 0 });
            var c = RootVariantParts.ShapeFactor(atX.Contribution, r);
            var target = r * c.view(RootVariantParts.BatchView(r.dim(), batch));
            var result = RootInferenceSolver.Solve(unit, x, target, context.Domain, context.Low, context.High, Options);
            var inRelevance = result.InputRelevance / c.view(RootVariantParts.BatchView(x.dim(), batch));
            return new(inRelevance, RootVariantParts.SquaredNorm(result.Contribution - target), RootVariantParts.SquaredNorm(target));
        }).InputRelevance);
    }

    /// <inheritdoc />
    public override string ToString() => $"ShapeFitRoot({Options with { Gelu = GeluTreatment.Pass }})";
}

/// <summary>
/// <c>root-channel</c> (issue 14, V4/V5): a multiplicative signal <c>S = m ⊙ x</c> with one <c>m ∈ [0, 1]</c> per sample
/// and input channel (convolutions: constant over the positions; dense units: per input feature), fitted by the spec's
/// projected descent in m (exact line search for the linear map <c>m ↦ F(m ⊙ x)</c>, step scale γ, acceptance on ΔL ≤ 0,
/// halving on rejection), from m = 1 (S = x). With <see cref="Shape"/> the target is <c>c·R</c>, c = ΣF(x)/|ΣR| (as
/// <see cref="ShapeFitRootRule"/>). The redistribution is the spec's (D6) at S with the original R. <c>0 ≤ S ≤ x</c>
/// elementwise (the gradient constraint); on the input layer the root <c>(1 − m) ⊙ x</c> lies between 0 and x, inside
/// the input bounds when they contain 0 (checked). Options used: steps, γ, positive, redistribution, ε.
/// </summary>
public sealed class ChannelRootRule : Rule
{
    /// <summary>Creates the rule.</summary>
    /// <param name="options">Root options (steps, γ, positive map, redistribution, ε; default: the spec's).</param>
    /// <param name="shape">Fit the shape c·R (true, default) or R itself.</param>
    public ChannelRootRule(RootInferenceOptions? options = null, bool shape = true)
    {
        Options = options ?? RootInferenceOptions.Default;
        Shape = shape;
    }

    /// <summary>Root options.</summary>
    public RootInferenceOptions Options { get; }

    /// <summary>Whether the target is the shape c·R.</summary>
    public bool Shape { get; }

    /// <inheritdoc />
    public override Tensor[] Propagate(RuleContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        using var detached = context.Input.detach();
        var x = detached;
        return RootVariantParts.PropagateLiveSamples(context, x, () =>
        {
            if (context.Domain == InputDomain.PixelBox && context.Low is not null && context.High is not null
                && !(context.Low.le(0).all().item<bool>() && context.High.ge(0).all().item<bool>()))
                throw new ExplanationException($"root-channel on '{context.Node.Name}': the root (1 − m)·x stays inside the input bounds only when they contain 0; these do not.");
            return RootVariantParts.Solve(context, (unit, r) =>
            {
                using var noGrad = torch.no_grad();
                var result = ChannelRootSolver.Solve(unit, x, r.detach(), context.Domain, Options, Shape);
                return new(result.InputRelevance, result.ResidualSquared, result.RelevanceSquared);
            }).InputRelevance;
        });
    }

    /// <inheritdoc />
    public override string ToString() => $"ChannelRoot(shape={(Shape ? 1 : 0)}, {Options with { Gelu = GeluTreatment.Pass }})";
}

/// <summary>The channel-mask solver of <see cref="ChannelRootRule"/>.</summary>
public static class ChannelRootSolver
{
    /// <summary>Result of <see cref="Solve"/>.</summary>
    /// <param name="Mask">m [B, C, 1, …] (conv) or [B, 1, …, F] (dense).</param>
    /// <param name="Signal">S = m ⊙ x.</param>
    /// <param name="Contribution">F(S).</param>
    /// <param name="InputRelevance">R_in (with the original R).</param>
    /// <param name="InitialLoss">L at m = 1 against the target [B].</param>
    /// <param name="FinalLoss">L at the final m [B].</param>
    /// <param name="AcceptedSteps">Accepted steps [B].</param>
    /// <param name="ResidualSquared">‖F(S) − target‖² [B].</param>
    /// <param name="RelevanceSquared">‖target‖² [B].</param>
    public sealed record Result(Tensor Mask, Tensor Signal, Tensor Contribution, Tensor InputRelevance, Tensor InitialLoss, Tensor FinalLoss,
        Tensor AcceptedSteps, Tensor ResidualSquared, Tensor RelevanceSquared);

    /// <summary>Fits m for a batch of independent samples (everything per sample).</summary>
    /// <param name="unit">The layer (its bias is never part of F).</param>
    /// <param name="input">x [B, …].</param>
    /// <param name="relevance">R [B, …].</param>
    /// <param name="domain">Where x lives (on the ReLU domain the positive map is W⁺·T).</param>
    /// <param name="options">Root options (steps, γ, positive, redistribution, ε).</param>
    /// <param name="shape">Fit c·R with c = ΣF(x)/|ΣR| instead of R.</param>
    public static Result Solve(LinearUnit unit, Tensor input, Tensor relevance, InputDomain domain, RootInferenceOptions? options = null, bool shape = true)
    {
        ArgumentNullException.ThrowIfNull(unit);
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(relevance);
        options ??= RootInferenceOptions.Default;
        if (input.shape[0] != relevance.shape[0])
            throw new ExplanationException($"root-channel: the input batch ({input.shape[0]}) and the relevance batch ({relevance.shape[0]}) differ.");
        using var outer = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var x = input.detach();
        var r = relevance.detach().to(x.dtype);
        var batch = x.shape[0];
        var inView = RootVariantParts.BatchView(x.dim(), batch);
        var outView = RootVariantParts.BatchView(r.dim(), batch);

        // the map T ↦ F(T): W⁺T on the ReLU domain, W⁺(T⊙[x≥0]) + W⁻(T⊙[x<0]) elsewhere (S = m⊙x keeps the sign of x), or W·T
        var positive = options.PositiveConstraint;
        var masked = positive && domain != InputDomain.Relu;
        var wPlus = positive ? unit.GetParameter("root-variant:w+", () => unit.Weight.clamp_min(0)) : unit.Weight;
        var wMinus = masked ? unit.GetParameter("root-variant:w-", () => unit.Weight.clamp_max(0)) : null;
        var sign = masked ? x.ge(0).to(x.dtype) : null;
        Tensor Apply(Tensor t) => sign is null ? unit.Forward(t, wPlus, null) : unit.Forward(t * sign, wPlus, null) + unit.Forward(t * (1 - sign), wMinus!, null);
        Tensor ApplyTransposed(Tensor g) => sign is null ? unit.Transpose(g, wPlus, x.shape)
            : unit.Transpose(g, wPlus, x.shape) * sign + unit.Transpose(g, wMinus!, x.shape) * (1 - sign);

        // m: one value per sample and channel (conv: axis 1; dense: the last axis)
        var channelAxis = unit.Kind == LinearUnitKind.Dense ? x.dim() - 1 : 1;
        var maskShape = new long[x.dim()];
        Array.Fill(maskShape, 1L);
        maskShape[0] = batch;
        maskShape[channelAxis] = x.shape[channelAxis];
        var reduce = Enumerable.Range(1, (int)x.dim() - 1).Where(a => a != channelAxis).Select(a => (long)a).ToArray();
        Tensor ToMask(Tensor elementwise) => reduce.Length == 0 ? elementwise : elementwise.sum(reduce, keepdim: true);

        var f = Apply(x);
        var c = shape ? RootVariantParts.ShapeFactor(f, r) : torch.ones(batch, dtype: x.dtype, device: x.device);
        var target = r * c.view(outView);
        var m = torch.ones(maskShape, dtype: x.dtype, device: x.device);
        var loss = RootVariantParts.SquaredNorm(f - target);
        var initialLoss = loss.clone();
        var scale = torch.full(new[] { batch }, options.Gamma, dtype: x.dtype, device: x.device);
        var accepted = torch.zeros(batch, dtype: x.dtype, device: x.device);
        for (var k = 0; k < options.Steps; k++)
        {
            using var step = torch.NewDisposeScope();
            // ∂L/∂m = 2·Σ_{other axes} x ⊙ Jᵀ(F − t); the exact line search of the linear map m ↦ F(m⊙x) along h
            var h = ToMask(x * ApplyTransposed(f - target));
            var jh = Apply(h * x);
            var hh = RootVariantParts.SquaredNorm(h);
            var jj = RootVariantParts.SquaredNorm(jh);
            var ok = jj.gt(0);
            var alpha = torch.where(ok, hh / torch.where(ok, jj, torch.ones_like(jj)), torch.zeros_like(jj));
            var candidate = (m - (scale * alpha).view(inView) * h).clamp_(0, 1);
            var deltaF = Apply((candidate - m) * x);
            var deltaLoss = (deltaF * (deltaF + 2 * (f - target))).reshape(batch, -1).sum(new long[] { 1 });
            var accept = deltaLoss.le(0);
            var candidateF = Apply(candidate * x);
            var candidateLoss = torch.minimum(RootVariantParts.SquaredNorm(candidateF - target), loss);
            var nextM = torch.where(accept.view(inView), candidate, m).MoveToOuterDisposeScope();
            var nextF = torch.where(accept.view(outView), candidateF, f).MoveToOuterDisposeScope();
            var nextLoss = torch.where(accept, candidateLoss, loss).MoveToOuterDisposeScope();
            var nextScale = torch.where(accept, scale, scale * 0.5).MoveToOuterDisposeScope();
            var nextAccepted = (accepted + accept.to(x.dtype)).MoveToOuterDisposeScope();
            foreach (var old in new[] { m, f, loss, scale, accepted }) old.Dispose();
            (m, f, loss, scale, accepted) = (nextM, nextF, nextLoss, nextScale, nextAccepted);
        }

        var s = m * x;
        var q = options.Redistribution == RootRedistribution.Normalized ? options.Stabilizer.Divide(r, f) : torch.ones_like(f) / c.view(outView);
        var rIn = s * ApplyTransposed(q);
        var result = new Result(m, s, f, rIn, initialLoss, loss, accepted, RootVariantParts.SquaredNorm(f - target), RootVariantParts.SquaredNorm(target));
        foreach (var t in new[] { result.Mask, result.Signal, result.Contribution, result.InputRelevance, result.InitialLoss, result.FinalLoss, result.AcceptedSteps, result.ResidualSquared, result.RelevanceSquared })
            t.MoveToOuterDisposeScope();
        return result;
    }
}
