using RootDtd.Graph;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Rules.RootInference;

/// <summary>
/// What <c>RootInferenceSolver.Solve</c> found for one unit. Every per-sample quantity has the batch as its
/// first dimension. The tensors belong to the dispose scope that was current when <c>Solve</c> was called.
/// </summary>
public sealed class RootInferenceResult
{
    internal RootInferenceResult(Tensor signal, Tensor root, Tensor inputRelevance, Tensor contribution, Tensor initialLoss, Tensor finalLoss,
        Tensor acceptedSteps, Tensor? lossTrace)
    {
        Signal = signal;
        Root = root;
        InputRelevance = inputRelevance;
        Contribution = contribution;
        InitialLoss = initialLoss;
        FinalLoss = finalLoss;
        AcceptedSteps = acceptedSteps;
        LossTrace = lossTrace;
    }

    /// <summary>The signal <c>S = T_steps</c> (input shape).</summary>
    public Tensor Signal { get; }

    /// <summary>The root <c>N = x − S</c> (input shape).</summary>
    public Tensor Root { get; }

    /// <summary>The relevance of the unit's inputs (input shape).</summary>
    public Tensor InputRelevance { get; }

    /// <summary><c>F(S)</c>, the evidence of every output under the signal (output shape).</summary>
    public Tensor Contribution { get; }

    /// <summary><c>L(x)</c> per sample [B].</summary>
    public Tensor InitialLoss { get; }

    /// <summary><c>L(S)</c> per sample [B].</summary>
    public Tensor FinalLoss { get; }

    /// <summary>Number of accepted steps per sample [B] (the unit's dtype).</summary>
    public Tensor AcceptedSteps { get; }

    /// <summary><c>L(T_k)</c> for k = 0 … steps, shape [steps + 1, B]; only when requested.</summary>
    public Tensor? LossTrace { get; }
}

/// <summary>
/// The constrained root inference of one conv/linear unit (docs/root-inference.md, spec "Iteration" and
/// "Redistribution"): projected gradient descent on <c>L(T) = Σ_j (F_j(T) − R_j)²</c> from <c>T₀ = x</c> with an exact
/// line search, per-sample step scales and acceptance, then redistribution of <c>R</c> along <c>F</c> at the signal.
/// Every step costs four layer evaluations (the transposed map for the gradient, J·g, the change ΔF of a candidate that
/// decides its acceptance, F at the candidate); off the ReLU domain the positive map evaluates W⁺ and W⁻ halves as one
/// stacked layer. In the free domain (no box: every Linear of a ViT) ΔF comes from J·g and a product of |W| with the
/// sign flips instead (a single-width evaluation for a double-width one), and a dense layer at least twice as wide as its
/// input (a ViT's fc1) runs the whole step in its stacked input space with the Gram matrix of [W⁺|W⁻] (about a third of
/// the multiply-adds); both compute the same iteration in exact arithmetic (docs/speed.md). A step's decisions (acceptance, the sign mask) are taken on quantities accurate relative to their
/// own size, so that a batch and each sample alone give the same result to ~1e-13 in float64 (docs/reliability.md).
/// On the CPU one number per step is read from the tensors: how many samples accept it. A step that no sample accepts
/// leaves the state as it was, so the next step's direction is this one's and F at the rejected candidate is not needed:
/// both are skipped; when every sample accepts, the candidate becomes the state without a per-sample selection (exactly
/// the same values). On a GPU nothing leaves the device inside the loop (a read per step would stall it).
/// </summary>
public static class RootInferenceSolver
{
    /// <summary>Solves one unit for a batch of independent samples.</summary>
    /// <param name="unit">The layer (weight; the bias is never part of F).</param>
    /// <param name="input">The unit's input x [B, …].</param>
    /// <param name="relevance">The relevance R of the unit's outputs [B, …].</param>
    /// <param name="domain">Where x lives (decides the box and lets the ReLU domain use <c>F(T) = W⁺T</c>).</param>
    /// <param name="low">Lower input bound at the unit's input (required for <see cref="InputDomain.PixelBox"/>).</param>
    /// <param name="high">Upper input bound at the unit's input (required for <see cref="InputDomain.PixelBox"/>).</param>
    /// <param name="options">Rule options (default: the spec's).</param>
    /// <param name="traceLoss">Also return <see cref="RootInferenceResult.LossTrace"/>.</param>
    public static RootInferenceResult Solve(LinearUnit unit, Tensor input, Tensor relevance, InputDomain domain, Tensor? low = null, Tensor? high = null,
        RootInferenceOptions? options = null, bool traceLoss = false) =>
        Solve(unit, input, relevance, domain, low, high, options, traceLoss,
            input is not null && input.device_type == DeviceType.CPU ? SolverPath.Fastest : SolverPath.FastestWithoutHostReads);

    /// <summary>
    /// <see cref="Solve(LinearUnit, Tensor, Tensor, InputDomain, Tensor?, Tensor?, RootInferenceOptions?, bool)"/> with the
    /// evaluation scheme chosen (tests compare the schemes: they compute the same iteration in exact arithmetic).
    /// </summary>
    internal static RootInferenceResult Solve(LinearUnit unit, Tensor input, Tensor relevance, InputDomain domain, Tensor? low, Tensor? high,
        RootInferenceOptions? options, bool traceLoss, SolverPath path)
    {
        ArgumentNullException.ThrowIfNull(unit);
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(relevance);
        options ??= RootInferenceOptions.Default;
        if (!options.DomainConstraint) domain = InputDomain.Free;
        if (domain == InputDomain.PixelBox && (low is null || high is null))
            throw new ExplanationException("Root inference on the input layer (PixelBox domain) needs both input bounds.");
        if (input.shape[0] != relevance.shape[0])
            throw new ExplanationException($"Root inference: the input batch ({input.shape[0]}) and the relevance batch ({relevance.shape[0]}) differ.");

        using var outer = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var x = input.detach();
        var r = relevance.detach().to(x.dtype);
        var batch = x.shape[0];
        var map = new ContributionMap(unit, x, domain, options.PositiveConstraint);
        var (lo, hi) = Box(x, domain, options.GradientConstraint, low, high);

        var inShape = BatchView(x.dim(), batch);
        var outShape = BatchView(r.dim(), batch);
        // gradient components within rounding of 0 are 0 (see below); 64 machine epsilons of the sample's largest |h|
        var negligible = 64 * Epsilon(x.dtype);

        // carried state: T, its mask, F(T), L(T), step scale s, accepted count
        // Off the ReLU domain without a box (every Linear of a ViT) T' = T − c·h exactly (no projection), so the change of F
        // follows from the linearity of F on the current mask: ΔF = −c·J·h + |W|·(T' ⊙ (m' − m)), the second term only
        // where a sign flipped (see ContributionMap.FlipChange); where the layer is at least twice as wide as its input
        // (fc1), the whole step runs in the stacked input space with the Gram matrix [W⁺|W⁻]ᵀ[W⁺|W⁻] (SolveGram).
        var linearChange = path != SolverPath.Reference && lo is null && hi is null && map.IsStacked;
        if (linearChange && options.Steps > 0 && map.GramIsCheaper(x.shape))
            return SolveGram(map, x, r, options, traceLoss, inShape, outShape, negligible, path == SolverPath.Fastest);

        var t = x.clone();
        var mask = map.Mask(t);
        var f = map.Apply(t, mask);
        var loss = SquaredNorm(f - r);
        var initialLoss = loss.clone();
        var scale = torch.full(new[] { batch }, options.Gamma, dtype: x.dtype, device: x.device);
        var accepted = torch.zeros(batch, dtype: x.dtype, device: x.device);
        var trace = traceLoss ? new List<Tensor> { loss.clone() } : null;
        // A step that no sample accepts leaves T, its mask and F(T) as they were: the next step's direction h, J·h and
        // line-search step α are this step's (the same values recomputed from the same state), and F at a candidate
        // nobody takes is not needed. The fastest scheme keeps them across such a step (one host read per step says
        // how many samples accepted) and skips the candidate's F; the reference scheme, and the fastest one on a GPU
        // (where a host read per step would stall the queue of kernels), compute every step in full.
        var reuse = path == SolverPath.Fastest;
        // the CPU's free-domain step decides acceptance from F(T') − F(T) where that is certain (see below)
        var bounded = reuse && linearChange;
        var termBound = 4.0 * map.TermsPerOutput * Epsilon(x.dtype);
        var sumBound = 4.0 * (r.numel() / Math.Max(batch, 1)) * Epsilon(x.dtype);
        Direction? direction = null;

        for (var k = 0; k < options.Steps; k++)
        {
            using var step = torch.NewDisposeScope();
            var made = direction is null;
            if (direction is null)
            {
                // The spec's gradient is g = 2·Jᵀ(F − r) and its step α·g with α = ‖g‖²/(2‖Jg‖²). With h = Jᵀ(F − r) the
                // step is (‖h‖²/‖Jh‖²)·h: the factors of 2 cancel exactly (powers of two scale floats without rounding),
                // which saves one pass over the output per step.
                var residual = f - r;
                var h = map.ApplyTransposed(residual, mask, x.shape);
                // Where the sign mask [T ≥ 0] chooses the half of the map, a component of h that is rounding noise must not
                // move T across 0: at a box edge T = 0 the exact component is often 0 (the map's column is 0 on that side)
                // and its rounded value (1e-18) would flip the mask, making the Jacobian jump by a whole column of W; a
                // batch and a single sample, whose layer evaluations round differently, then took different paths.
                if (map.HasMask)
                {
                    var magnitude = h.abs();
                    h.masked_fill_(magnitude.le(magnitude.reshape(batch, -1).amax(new long[] { 1 }).mul_(negligible).view(inShape)), 0);
                }
                var jh = map.Apply(h, mask);
                direction = new Direction(residual, h, jh, StepLength(SquaredNorm(h), SquaredNorm(jh)));
            }
            var (e, hk, jhk, alpha) = direction;
            var c = (scale * alpha).view(inShape);
            var candidate = Project(t.addcmul(c, hk, -1), lo, hi);
            var candidateMask = map.Mask(candidate);
            // Acceptance on the change of the loss, ΔL = L(T') − L(T) = ‖ΔF‖² + 2⟨ΔF, F(T) − R⟩, with ΔF = F(T') − F(T)
            // evaluated from the change of the signal (exact for the piecewise-linear F). Comparing L(T') with L(T)
            // decides on the difference of two rounded sums: where the descent stagnates (steps against the box) that
            // difference is pure rounding, and a batch and a single sample, whose layer evaluations round differently,
            // accepted different steps and parted (docs/reliability.md). ΔL is accurate relative to its own size, so
            // its sign is the exact arithmetic's except on true ties. It costs a fourth layer evaluation per step.
            // F(T') evaluated afresh (not F + ΔF: in float32 that sum drifts by ε·|F(x)|, far above R when F(x) ≫ R);
            // ΔF and F(T') share the split of the candidate into its halves
            Tensor? candidateF = null;
            Tensor? accept = null;
            long moving = -1;
            if (bounded)
            {
                // The CPU's free-domain step decides on ΔF = F(T') − F(T) from F at the candidate, which is needed anyway
                // where the step is accepted, when that decision is certain: every F_j is a sum of non-negative terms
                // (W⁺ on the non-negative part, W⁻ on the negative one), so its rounding error is at most γ·F_j with
                // γ = n·ε (n terms), for any order of summation; with β = γ·(F(T') + F(T)) the computed ΔL is within
                // Σ β·(2|ΔF + e| + β) (+ the rounding of that sum) of the exact one. Where |ΔL| exceeds that bound for
                // every sample its sign is the exact arithmetic's, and the flips' product is not needed; otherwise the
                // step takes the exact ΔF below. One host read gives both counts.
                candidateF = map.Apply(candidate, candidateMask);
                var change = candidateF - f;
                var toward = change + e;
                // ΔL = ⟨ΔF, ΔF + 2e⟩: its second factor once, for ΔL and (as |·|) for the bound's rounding term
                var secondFactor = toward + e;
                var deltaLossBySubtraction = Dot(change, secondFactor);
                var beta = (candidateF + f).mul_(termBound);
                var bound = Dot(beta, toward.abs().mul_(2).add_(beta)).add_(Dot(change.abs(), secondFactor.abs_()).mul_(sumBound));
                var byBound = deltaLossBySubtraction.le(0);
                var counts = torch.stack(new[] { byBound.sum(), deltaLossBySubtraction.abs().le(bound).sum() }).cpu().data<long>().ToArray();
                if (counts[1] == 0)
                {
                    accept = byBound;
                    moving = counts[0];
                }
            }
            if (accept is null)
            {
                Tensor deltaF;
                Tensor? candidateHalves = null;
                if (linearChange)
                    deltaF = jhk.mul(c.neg().view(outShape)).add_(map.FlipChange(map.Flipped(candidate, candidateMask!, mask!)));
                else (deltaF, candidateHalves) = map.Change(t, mask, candidate, candidateMask);
                var deltaLoss = Dot(deltaF, deltaF + 2 * e);
                accept = deltaLoss.le(0);
                // how many samples accept (one host read; the reference scheme does not look)
                moving = reuse ? accept.sum().item<long>() : -1;
                if (moving != 0)
                    candidateF ??= linearChange ? map.Apply(candidate, candidateMask) : map.Value(candidate, candidateMask, candidateHalves);
            }
            if (moving == 0)
            {
                // nobody moves: keep the direction for the next step, and F at the candidate is not needed
                if (made) direction.MoveToOuter();
                Advance(accept, loss, ref loss, ref scale, ref accepted, trace);
                continue;
            }
            var valueAtCandidate = candidateF!;
            // the loss of an accepted candidate, never above the previous one (the two differ by rounding at most there)
            var candidateLoss = torch.minimum(SquaredNorm(valueAtCandidate - r), loss);

            // every sample moves: the candidate is the next state as it is (the selection would return exactly it)
            var all = moving == batch;
            var acceptIn = all ? null : accept.to(x.dtype).view(inShape);
            var nextT = (all ? candidate : Select(acceptIn!, candidate, t)).MoveToOuterDisposeScope();
            var nextMask = mask is null ? null : (all ? candidateMask! : Select(acceptIn!, candidateMask!, mask)).MoveToOuterDisposeScope();
            var nextF = (all ? valueAtCandidate : Select(acceptIn!.view(outShape), valueAtCandidate, f)).MoveToOuterDisposeScope();
            Replace(ref t, nextT);
            ReplaceMask(ref mask, nextMask);
            Replace(ref f, nextF);
            Advance(accept, candidateLoss, ref loss, ref scale, ref accepted, trace);
            // some sample moved: the direction is computed afresh
            direction.Dispose();
            direction = null;
        }
        direction?.Dispose();

        return Finish(map, x, r, t, mask, f, initialLoss, loss, accepted, trace, options);
    }

    /// <summary>
    /// The free-domain iteration of a dense layer at least twice as wide as its input, in the stacked input space
    /// (u = [T⊙m | T⊙(1−m)], F(T) = Ws·u with Ws = [W⁺|W⁻], G = WsᵀWs): the gradient's two halves are
    /// <c>WsᵀF(T) − Wsᵀr = G·u − Wsᵀr</c>, <c>‖J·h‖² = u_hᵀG·u_h</c> and
    /// <c>ΔL = ⟨Δu, G·Δu + 2·(G·u − Wsᵀr)⟩</c> with <c>Δu = −c·u_h + [d | −d]</c> (d: the candidate at its flipped
    /// entries): the same iteration as the output-space one in exact arithmetic, at (2·in)² multiply-adds per token for
    /// each product with G instead of 2·in·out for each stacked layer evaluation — two and a half products with G per
    /// step against four double-width evaluations. F itself is evaluated afresh at x and at the signal only; the loss
    /// in between follows L(T') = L(T) + ΔL (it decides nothing: acceptance is on ΔL).
    /// </summary>
    private static RootInferenceResult SolveGram(ContributionMap map, Tensor x, Tensor r, RootInferenceOptions options, bool traceLoss,
        long[] inShape, long[] outShape, double negligible, bool reuse)
    {
        var batch = x.shape[0];
        var t = x.clone();
        var mask = map.Mask(t)!;
        var u = map.Split(t, mask);
        var loss = SquaredNorm(map.ApplyStacked(u) - r);
        var initialLoss = loss.clone();
        var rb = map.TransposedHalves(r, x.shape);
        var gu = map.Gram(u);
        u.Dispose();
        var scale = torch.full(new[] { batch }, options.Gamma, dtype: x.dtype, device: x.device);
        var accepted = torch.zeros(batch, dtype: x.dtype, device: x.device);
        var trace = traceLoss ? new List<Tensor> { loss.clone() } : null;

        // as in the output-space loop: a step that no sample accepts keeps its direction for the next one
        GramDirection? direction = null;
        for (var k = 0; k < options.Steps; k++)
        {
            using var step = torch.NewDisposeScope();
            var made = direction is null;
            if (direction is null)
            {
                // Ws·(F − r) in both halves, and h = Jᵀ(F − r) (the half chosen by the mask), as in the output-space loop
                var both = gu - rb;
                var h = map.CombineHalves(both * mask);
                var magnitude = h.abs();
                h.masked_fill_(magnitude.le(magnitude.reshape(batch, -1).amax(new long[] { 1 }).mul_(negligible).view(inShape)), 0);
                var uh = map.Split(h, mask);
                var guh = map.Gram(uh);
                direction = new GramDirection(both, h, uh, guh, StepLength(SquaredNorm(h), Dot(uh, guh)));
            }
            var (bothK, hK, uhK, guhK, alpha) = direction;
            var c = (scale * alpha).view(inShape);
            var candidate = t.addcmul(c, hK, -1);
            var candidateMask = map.Mask(candidate)!;
            var flipped = map.Flipped(candidate, candidateMask, mask);
            var du = uhK.mul(c.neg()).add_(map.Signed(flipped));
            var gdu = guhK.mul(c.neg()).add_(map.GramFlip(flipped));
            var deltaLoss = Dot(du, gdu.add_(bothK, alpha: 2));
            var accept = deltaLoss.le(0);
            var moving = reuse ? accept.sum().item<long>() : -1;
            if (moving == 0)
            {
                if (made) direction.MoveToOuter();
                Advance(accept, loss, ref loss, ref scale, ref accepted, trace);
                continue;
            }
            var candidateGu = map.Gram(map.Split(candidate, candidateMask));

            var all = moving == batch;
            var acceptIn = all ? null : accept.to(x.dtype).view(inShape);
            var nextT = (all ? candidate : Select(acceptIn!, candidate, t)).MoveToOuterDisposeScope();
            var nextMask = (all ? candidateMask : Select(acceptIn!, candidateMask, mask)).MoveToOuterDisposeScope();
            var nextGu = (all ? candidateGu : Select(acceptIn!, candidateGu, gu)).MoveToOuterDisposeScope();
            Replace(ref t, nextT);
            Replace(ref mask, nextMask);
            Replace(ref gu, nextGu);
            Advance(accept, torch.minimum(loss + deltaLoss, loss), ref loss, ref scale, ref accepted, trace);
            direction.Dispose();
            direction = null;
        }
        direction?.Dispose();

        // F at the signal afresh (the redistribution and the reported loss use it, not the recursion)
        var f = map.Apply(t, mask);
        if (options.Steps > 0)
        {
            var fresh = SquaredNorm(f - r);
            var final = torch.minimum(fresh, loss);
            if (trace is null) Replace(ref loss, final);
            else
            {
                loss = final;
                trace[^1] = loss;
            }
        }
        return Finish(map, x, r, t, mask, f, initialLoss, loss, accepted, trace, options);
    }

    private static RootInferenceResult Finish(ContributionMap map, Tensor x, Tensor r, Tensor t, Tensor? mask, Tensor f, Tensor initialLoss, Tensor loss,
        Tensor accepted, List<Tensor>? trace, RootInferenceOptions options)
    {
        var q = options.Redistribution == RootRedistribution.Normalized ? options.Stabilizer.Divide(r, f) : torch.ones_like(f);
        var rIn = t * map.ApplyTransposed(q, mask, x.shape);
        var root = x - t;
        var result = new RootInferenceResult(t, root, rIn, f, initialLoss, loss, accepted, trace is null ? null : torch.stack(trace));
        foreach (var tensor in new[] { t, root, rIn, f, initialLoss, loss, accepted, result.LossTrace })
            tensor?.MoveToOuterDisposeScope();
        return result;
    }

    private static double Epsilon(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 => 2.220446049250313e-16,
        ScalarType.Float32 => 1.1920928955078125e-07,
        ScalarType.BFloat16 => 0.0078125,
        _ => 0.0009765625,
    };

    /// <summary>
    /// Per sample, <paramref name="whenAccepted"/> where <paramref name="accepted"/> (0 or 1, broadcast over the sample)
    /// is 1, else <paramref name="otherwise"/>: exactly one of the two values (lerp with a weight of exactly 0 or 1 adds
    /// a zero product to one of them), in one vectorised pass where torch.where walks element by element. Bool tensors
    /// (the sign mask of a grouped layer) take torch.where.
    /// </summary>
    private static Tensor Select(Tensor accepted, Tensor whenAccepted, Tensor otherwise) =>
        otherwise.dtype == ScalarType.Bool
            ? torch.where(accepted.to(ScalarType.Bool), whenAccepted, otherwise)
            : otherwise.lerp(whenAccepted, accepted);

    /// <summary>The spec's step length ‖h‖²/‖Jh‖² per sample (0 where ‖Jh‖² = 0), shared by both schemes.</summary>
    private static Tensor StepLength(Tensor hh, Tensor jj)
    {
        var positive = jj.gt(0);
        return torch.where(positive, hh / torch.where(positive, jj, torch.ones_like(jj)), torch.zeros_like(jj));
    }

    /// <summary>
    /// The end of one step, shared by both schemes (call inside the step's dispose scope): per sample, the loss becomes
    /// <paramref name="acceptedLoss"/> where the step was accepted, the step scale halves where it was not, and the count
    /// of accepted steps grows. With a trace, the trace owns each loss (the previous one is kept, not disposed).
    /// </summary>
    private static void Advance(Tensor accept, Tensor acceptedLoss, ref Tensor loss, ref Tensor scale, ref Tensor accepted, List<Tensor>? trace)
    {
        var nextLoss = torch.where(accept, acceptedLoss, loss).MoveToOuterDisposeScope();
        var nextScale = torch.where(accept, scale, scale * 0.5).MoveToOuterDisposeScope();
        var nextAccepted = (accepted + accept.to(accepted.dtype)).MoveToOuterDisposeScope();
        if (trace is null) Replace(ref loss, nextLoss);
        else
        {
            loss = nextLoss;
            trace.Add(loss);
        }
        Replace(ref scale, nextScale);
        Replace(ref accepted, nextAccepted);
    }

    private static void Replace(ref Tensor current, Tensor next)
    {
        var old = current;
        current = next;
        old.Dispose();
    }

    private static void ReplaceMask(ref Tensor? current, Tensor? next)
    {
        var old = current;
        current = next;
        old?.Dispose();
    }

    private static long[] BatchView(long dims, long batch)
    {
        var shape = new long[dims];
        Array.Fill(shape, 1L);
        shape[0] = batch;
        return shape;
    }

    /// <summary>Σ of squares per sample [B], as a batched dot product (one read of <paramref name="t"/>, no squared copy).</summary>
    private static Tensor SquaredNorm(Tensor t)
    {
        var flat = t.reshape(t.shape[0], 1, -1);
        return flat.bmm(flat.transpose(1, 2)).reshape(t.shape[0]);
    }

    /// <summary>⟨a, b⟩ per sample [B], as a batched dot product.</summary>
    private static Tensor Dot(Tensor a, Tensor b) =>
        a.reshape(a.shape[0], 1, -1).bmm(b.reshape(b.shape[0], 1, -1).transpose(1, 2)).reshape(a.shape[0]);

    private static (Tensor? Lo, Tensor? Hi) Box(Tensor x, InputDomain domain, bool gradientConstraint, Tensor? low, Tensor? high) => domain switch
    {
        InputDomain.Relu => (torch.zeros_like(x), gradientConstraint ? x : null),
        InputDomain.PixelBox => (x - high!.to(x.dtype).expand(x.shape), x - low!.to(x.dtype).expand(x.shape)),
        _ => (null, null),
    };

    private static Tensor Project(Tensor t, Tensor? lo, Tensor? hi)
    {
        // t is the step's fresh candidate: clip it in place
        if (lo is null && hi is null) return t;
        return t.clamp_(lo, hi);
    }

    /// <summary>
    /// F and its Jacobian. Linear (no mask) for the plain map and for the positive map on the ReLU domain
    /// (<c>F(T) = W⁺T</c>); otherwise <c>W⁺·(v⊙m) + W⁻·(v⊙(1−m))</c> with the mask <c>m = [T ≥ 0]</c> held constant.
    /// </summary>
    private sealed class ContributionMap
    {
        private readonly LinearUnit _unit;
        private readonly Tensor _weight;
        private readonly Tensor? _negative;
        // [W⁺ | W⁻] along the input-feature axis: the masked map as ONE layer evaluation on [v⊙m | v⊙(1−m)] and its
        // transpose as one transposed evaluation split in two halves (about half the time of two evaluations on
        // thin inputs such as the 3-channel image). Only for ungrouped layers.
        private readonly Tensor? _stacked;
        private readonly long _featureDim;
        // whether the weight is the unit's own (dtype and device): derived parameters are then cached on the unit
        private readonly bool _own;
        private Tensor? _absolute;
        private Tensor? _gram;
        private Tensor? _gramFlip;

        public ContributionMap(LinearUnit unit, Tensor x, InputDomain domain, bool positive)
        {
            _unit = unit;
            _featureDim = unit.Kind == LinearUnitKind.Dense ? x.dim() - 1 : 1;
            var own = unit.Weight.dtype == x.dtype && unit.Weight.device_type == x.device_type && unit.Weight.device_index == x.device_index;
            _own = own;
            var w = own ? unit.Weight : unit.Weight.to(x.dtype).to(x.device);
            if (!positive)
            {
                _weight = w;
                return;
            }
            _weight = own ? unit.GetParameter("w:+", () => unit.Weight.clamp(min: 0)) : w.clamp(min: 0);
            if (domain == InputDomain.Relu) return;
            _negative = own ? unit.GetParameter("w:-", () => unit.Weight.clamp(max: 0)) : w.clamp(max: 0);
            if (unit.Groups == 1)
                _stacked = own ? unit.GetParameter("w:+|-", () => torch.cat(new[] { unit.Weight.clamp(min: 0), unit.Weight.clamp(max: 0) }, 1))
                    : torch.cat(new[] { _weight, _negative }, 1);
        }

        /// <summary>True when F has two halves chosen by the sign mask of T (the positive map off the ReLU domain).</summary>
        public bool HasMask => _negative is not null;

        /// <summary>True when the masked map is the stacked layer [W⁺ | W⁻] (ungrouped).</summary>
        public bool IsStacked => _stacked is not null;

        /// <summary>The number of products summed into one output of the map (2·in·kernel for the stacked map).</summary>
        public long TermsPerOutput => (_stacked ?? _weight).numel() / (_stacked ?? _weight).shape[0];

        /// <summary>
        /// Whether the Gram form pays: a dense layer whose outputs are at least twice its inputs (a product with the
        /// [2·in, 2·in] Gram matrix costs at most a stacked evaluation's 2·in·out per token). Shape only, never the
        /// batch, so that a batch and each sample alone take the same path.
        /// </summary>
        public bool GramIsCheaper(long[] inputShape) =>
            _stacked is not null && _unit.Kind == LinearUnitKind.Dense && 2 * inputShape[_featureDim] <= _stacked.shape[0];

        /// <summary>|W| = W⁺ − W⁻, the map of the sign flips.</summary>
        private Tensor Absolute => _absolute ??= _own
            ? _unit.GetParameter("w:|.|", () => _unit.Weight.abs())
            : _weight - _negative!;

        /// <summary>G = [W⁺|W⁻]ᵀ[W⁺|W⁻] ([2·in, 2·in], symmetric).</summary>
        private Tensor GramMatrix => _gram ??= _own
            ? _unit.GetParameter("gram:+|-", () => StackedGram(_unit.Weight.clamp(min: 0), _unit.Weight.clamp(max: 0)))
            : StackedGram(_weight, _negative!);

        /// <summary>G's top half minus its bottom half ([in, 2·in]): d ↦ G·[d | −d] for the flips.</summary>
        private Tensor GramFlipMatrix => _gramFlip ??= _own
            ? _unit.GetParameter("gram:+|- flip", () => FlipRows(StackedGram(_unit.Weight.clamp(min: 0), _unit.Weight.clamp(max: 0))))
            : FlipRows(GramMatrix);

        private static Tensor StackedGram(Tensor positive, Tensor negative)
        {
            var stacked = torch.cat(new[] { positive, negative }, 1);
            return stacked.t().matmul(stacked);
        }

        private static Tensor FlipRows(Tensor gram)
        {
            var half = gram.shape[0] / 2;
            return gram.narrow(0, 0, half) - gram.narrow(0, half, half);
        }

        /// <summary>G applied to a stacked-space tensor [.., 2·in] (G is symmetric).</summary>
        public Tensor Gram(Tensor u) => u.matmul(GramMatrix);

        /// <summary>G·[d | −d] for an input-shaped d.</summary>
        public Tensor GramFlip(Tensor d) => d.matmul(GramFlipMatrix);

        /// <summary>[d | −d] along the feature axis.</summary>
        public Tensor Signed(Tensor d) => torch.cat(new[] { d, d.neg() }, _featureDim);

        /// <summary>The stacked layer applied to a stacked-space tensor.</summary>
        public Tensor ApplyStacked(Tensor u) => _unit.Forward(u, _stacked!, null);

        /// <summary>Both halves [W⁺ᵀr | W⁻ᵀr] of the transposed stacked map.</summary>
        public Tensor TransposedHalves(Tensor r, long[] inputShape)
        {
            var doubled = (long[])inputShape.Clone();
            doubled[_featureDim] = 2 * inputShape[_featureDim];
            return _unit.Transpose(r, _stacked!, doubled);
        }

        /// <summary>The first half plus the second half along the feature axis.</summary>
        public Tensor CombineHalves(Tensor both)
        {
            var features = both.shape[_featureDim] / 2;
            return both.narrow(_featureDim, 0, features).add(both.narrow(_featureDim, features, features));
        }

        /// <summary>
        /// <c>d = T' ⊙ (m' − m)</c>: the candidate's value where its sign differs from the current one (with the opposite
        /// sign where it went from non-negative to negative), 0 elsewhere. Then
        /// <c>F(T') = F(T) + J·(T' − T) + |W|·d</c> exactly, J taken at the current mask.
        /// </summary>
        public Tensor Flipped(Tensor candidate, Tensor candidateMask, Tensor mask)
        {
            var features = candidate.shape[_featureDim];
            return candidateMask.narrow(_featureDim, 0, features).sub(mask.narrow(_featureDim, 0, features)).mul_(candidate);
        }

        /// <summary>|W|·d, the part of ΔF that the sign flips add to the change along the current linear piece.</summary>
        public Tensor FlipChange(Tensor flipped) => _unit.Forward(flipped, Absolute, null);

        /// <summary>
        /// The sign mask of <paramref name="t"/>: for the stacked map the selector <c>[m | 1 − m]</c> along the feature
        /// axis in t's dtype (m = [T ≥ 0]), which splits and recombines by multiplication; for a grouped layer the bool m.
        /// </summary>
        public Tensor? Mask(Tensor t)
        {
            if (_negative is null) return null;
            var positive = t.ge(0);
            if (_stacked is null) return positive;
            return torch.cat(new[] { positive, positive.logical_not() }, _featureDim).to(t.dtype);
        }

        /// <summary>
        /// <c>[v⊙m | v⊙(1−m)]</c>, the input of the stacked layer: the same values as selecting v or 0 (a product with
        /// 0 or 1 is exact; only the sign of a zero may differ, which no later operation reads).
        /// </summary>
        public Tensor Split(Tensor v, Tensor selector) => torch.cat(new[] { v, v }, _featureDim).mul_(selector);

        public Tensor Apply(Tensor v, Tensor? mask)
        {
            if (mask is null) return _unit.Forward(v, _weight, null);
            if (_stacked is not null) return _unit.Forward(Split(v, mask), _stacked, null);
            var vp = torch.where(mask, v, torch.zeros_like(v));
            return _unit.Forward(vp, _weight, null) + _unit.Forward(v - vp, _negative!, null);
        }

        /// <summary>
        /// <c>ΔF = F(T') − F(T)</c> from the change of the signal: the map applied to <c>T' − T</c>, or, masked, W⁺
        /// applied to the change of the positive part and W⁻ to the change of the negative part (F is continuous, so
        /// this is exact also where the mask changes). One layer evaluation; for the stacked map it also returns the
        /// split of T' into its halves, which <see cref="Value"/> reuses.
        /// </summary>
        public (Tensor Change, Tensor? CandidateHalves) Change(Tensor t, Tensor? mask, Tensor candidate, Tensor? candidateMask)
        {
            if (mask is null) return (_unit.Forward(candidate - t, _weight, null), null);
            if (_stacked is not null)
            {
                var candidateHalves = Split(candidate, candidateMask!);
                var change = candidateHalves - Split(t, mask);
                return (_unit.Forward(change, _stacked, null), candidateHalves);
            }
            var tp = torch.where(mask, t, torch.zeros_like(t));
            var cp = torch.where(candidateMask!, candidate, torch.zeros_like(candidate));
            var positive = cp - tp;
            var negative = (candidate - cp).sub_(t - tp);
            return (_unit.Forward(positive, _weight, null) + _unit.Forward(negative, _negative!, null), null);
        }

        /// <summary><c>F(T')</c>, from the halves <see cref="Change"/> made where it made them.</summary>
        public Tensor Value(Tensor candidate, Tensor? candidateMask, Tensor? candidateHalves) =>
            candidateHalves is not null ? _unit.Forward(candidateHalves, _stacked!, null) : Apply(candidate, candidateMask);

        public Tensor ApplyTransposed(Tensor r, Tensor? mask, long[] inputShape)
        {
            if (mask is null) return _unit.Transpose(r, _weight, inputShape);
            if (_stacked is not null)
            {
                // W⁺ᵀr where m, W⁻ᵀr elsewhere: the two halves times [m | 1 − m], added (one of each pair is 0)
                var features = inputShape[_featureDim];
                var doubled = (long[])inputShape.Clone();
                doubled[_featureDim] = 2 * features;
                var both = _unit.Transpose(r, _stacked, doubled).mul_(mask);
                return both.narrow(_featureDim, 0, features).add(both.narrow(_featureDim, features, features));
            }
            var p = _unit.Transpose(r, _weight, inputShape);
            var n = _unit.Transpose(r, _negative!, inputShape);
            return torch.where(mask, p, n);
        }
    }
}

/// <summary>
/// The descent direction of the output-space loop at the current state: F(T) − R, h = Jᵀ(F(T) − R), J·h and the
/// line-search step ‖h‖²/‖J·h‖² (per sample).
/// </summary>
internal sealed record Direction(Tensor Residual, Tensor H, Tensor JH, Tensor Alpha) : IDisposable
{
    /// <summary>Moves the tensors to the dispose scope around the current one (kept across a step).</summary>
    public void MoveToOuter()
    {
        foreach (var t in new[] { Residual, H, JH, Alpha }) t.MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in new[] { Residual, H, JH, Alpha }) t.Dispose();
    }
}

/// <summary>The descent direction of the Gram loop: Ws·(F − R) in both halves, h, its stacked u_h, G·u_h and the step.</summary>
internal sealed record GramDirection(Tensor Both, Tensor H, Tensor UH, Tensor GUH, Tensor Alpha) : IDisposable
{
    /// <summary>Moves the tensors to the dispose scope around the current one (kept across a step).</summary>
    public void MoveToOuter()
    {
        foreach (var t in new[] { Both, H, UH, GUH, Alpha }) t.MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in new[] { Both, H, UH, GUH, Alpha }) t.Dispose();
    }
}

/// <summary>How <see cref="RootInferenceSolver"/> evaluates a step (the same iteration in exact arithmetic).</summary>
internal enum SolverPath
{
    /// <summary>
    /// The cheapest scheme for the layer and domain (linear change of F in the free domain, Gram form for wide dense
    /// layers), reading per step how many samples accept to skip what a step nobody accepts does not need (the CPU's).
    /// </summary>
    Fastest,

    /// <summary><see cref="Fastest"/> without the per-step host read: every step in full (the GPU's; the same values).</summary>
    FastestWithoutHostReads,

    /// <summary>Every step evaluates the change of F and F at the candidate as two stacked layer evaluations.</summary>
    Reference,
}
