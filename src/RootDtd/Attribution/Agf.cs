using RootDtd.Graph;
using RootDtd.Rules;
using RootDtd.Rules.RootInference;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Attribution;

/// <summary>
/// Attribution-Guided Factorization (Gur, Ali and Wolf, AAAI 2021), written from the description in the paper and the
/// authors' code (<c>shirgur/AGFVisualization</c>, <c>modules/layers.py</c>), on RootDtd's relevance graph. Two streams
/// go backwards together: a relevance stream (the "cam") and a gradient stream. The start is at the output unit:
/// g = ∂⟨onehot_t, softmax(y_t·exp(−½((y − y_t)/σ)²))⟩/∂x with σ = max_k |y_k − y_t|, cam = x ⊙ g. Then per node:
/// <list type="bullet">
/// <item>conv units: C = the |x|,|W| rule (z-rule with absolute inputs and weights, no bias); M = ReLU(mean_c(x ⊙ ∂⟨y, g⟩/∂x))
/// scaled to max 1; the factorisations F_x, F_∇x of x and of the cam-masked gradient (sigmoid(10·v) against the positive
/// and negative parts of mean_c C, a 2×2 ridge solve per sample); A = the |W| rule at an all-ones input;
/// R = (F_x + M)/(1 + e^(−C)) + F_∇x + A on the support of C; result = C + R − mean(R over that support) ("delta shift").
/// In a residual block, a convolution that feeds the residual sum (the authors' <c>conv2</c> and <c>downsample</c>) gets
/// C alone, as in the authors' ResNet.</item>
/// <item>the input conv: z^B with L/H the per-sample minimum/maximum of the whole input, no bias (the authors' final_backward).</item>
/// <item>dense units below the output: C; when the unit reads a flattened feature map, M of that map is delta-shifted in.</item>
/// <item>ReLU, pooling, residual sums: the z-rule x ⊙ ∂⟨z, cam/z⟩/∂x on the support of cam; reshapes, dropout and
/// unmerged BatchNorm pass the cam; fan-out sums (the authors' Clone).</item>
/// </list>
/// The gradient stream is the plain vector-Jacobian product at every node. The input map is divided by its per-sample
/// maximum (the authors' final normalisation); the heatmap is its channel sum. With <see cref="RootInference"/> set
/// (<c>agf-root</c>), C — the DTD part of every conv and dense unit below the output — is computed by constrained root
/// inference on the absolute-weight layer at |x| instead of the |x|,|W| z-rule. See docs/agf.md for every choice.
/// </summary>
public sealed class Agf : AttributionProcedure
{
    /// <summary>Creates plain AGF, or AGF with root inference in its DTD part.</summary>
    /// <param name="rootInference">Options of the root rule for C (<see langword="null"/> = the authors' |x|,|W| rule).</param>
    public Agf(RootInferenceOptions? rootInference = null)
    {
        RootInference = rootInference;
        _root = rootInference is null ? null : new RootInferenceRule(rootInference);
    }

    private readonly RootInferenceRule? _root;

    /// <summary>Root-inference options of C, or <see langword="null"/> for plain AGF.</summary>
    public RootInferenceOptions? RootInference { get; }

    /// <inheritdoc />
    public override AttributionResult Attribute(AttributionContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var graph = context.Graph;
        var x = context.Input;
        if (x.dim() != 4) throw new ArgumentException($"AGF needs image inputs [B,C,H,W]; got [{string.Join(", ", x.shape)}].");
        if (graph.Nodes[graph.OutputIndex] is not LinearUnitNode output || output.Unit.Kind != LinearUnitKind.Dense)
            throw new ArgumentException($"AGF starts at a dense output layer; the model's output node '{graph.Nodes[graph.OutputIndex].Name}' is {graph.Nodes[graph.OutputIndex].Kind}.");
        using var scope = torch.NewDisposeScope();
        Tensor[] outputs;
        using (torch.no_grad()) outputs = graph.Forward(x);
        var n = graph.Nodes.Count;
        var cam = new Tensor?[n];
        var grad = new Tensor?[n];

        // start: the output unit
        {
            var input = outputs[output.Inputs[0]];
            var leaf = input.detach().requires_grad_(true);
            Tensor start;
            using (torch.enable_grad())
            {
                var y = output.Forward(new[] { leaf });
                var yt = y.gather(1, context.TargetIndex.unsqueeze(1));
                var sigma = (y - yt).abs().amax(new long[] { 1 }, keepdim: true);
                var s = torch.softmax(yt * torch.exp(-0.5 * SafeDivide(y - yt, sigma).pow(2)), 1);
                var onehot = torch.nn.functional.one_hot(context.TargetIndex, y.shape[1]).to(y.dtype);
                start = (s * onehot).sum();
            }
            var g = torch.autograd.grad(new[] { start }, new[] { leaf })[0];
            Accumulate(cam, output.Inputs[0], input * g);
            Accumulate(grad, output.Inputs[0], g);
        }

        for (var i = n - 1; i >= 1; i--)
        {
            if (i == graph.OutputIndex) continue;
            var node = graph.Nodes[i];
            var r = cam[i];
            var g = grad[i];
            if (r is null || g is null) continue;
            var inputs = node.Inputs.Select(j => outputs[j]).ToArray();
            var gradIn = Vjp(node, inputs, g);
            var camIn = node switch
            {
                LinearUnitNode u when IsInputLayer(graph, u) => new[] { InputZBox(u, inputs[0], r) },
                LinearUnitNode u when u.Unit.Kind == LinearUnitKind.Convolution2d => new[] { Convolution(graph, u, inputs[0], r, g, context.Recorder) },
                LinearUnitNode u => new[] { Dense(graph, outputs, u, inputs[0], r, g, context.Recorder) },
                _ when node.Kind is NodeKind.Shape or NodeKind.BatchNorm => new[] { r.reshape(inputs[0].shape) },
                _ => Simple(node, inputs, r),
            };
            for (var k = 0; k < node.Inputs.Count; k++)
            {
                Accumulate(cam, node.Inputs[k], camIn[k]);
                Accumulate(grad, node.Inputs[k], gradIn[k]);
            }
            cam[i] = null;
            grad[i] = null;
        }
        var result = cam[0] ?? torch.zeros_like(x);
        result = SafeDivide(result, result.amax(new long[] { 1, 2, 3 }, keepdim: true));
        return new AttributionResult(result.detach().MoveToOuterDisposeScope());
    }

    /// <inheritdoc />
    public override string ToString() => RootInference is null ? "AGF" : "AGF+root";

    private static void Accumulate(Tensor?[] store, int index, Tensor value) => store[index] = store[index] is null ? value : store[index]! + value;

    /// <summary>The authors' safe_divide: a / b with |b| pushed to ≥ 1e-9, and 0 where b = 0.</summary>
    internal static Tensor SafeDivide(Tensor a, Tensor b)
    {
        var den = b.clamp(min: 1e-9) + b.clamp(max: 1e-9);
        den = den + den.eq(0).to(den.dtype) * 1e-9;
        return a / den * b.ne(0).to(b.dtype);
    }

    private static Tensor MaxPerSample(Tensor t) => t.amax(Enumerable.Range(1, (int)t.dim() - 1).Select(d => (long)d).ToArray(), keepdim: true);

    /// <summary>
    /// C + R − (Σ R / |support of C|) on the support of C, per sample. A sample whose C has no support (no relevance
    /// reached the unit: every unit above it dead for that sample) has nothing to shift: its result is C + R, and R is 0
    /// there in both callers (they keep R on the support of C). The count is taken as at least 1 for that case only; the
    /// plain quotient was 0/0 = NaN, which the map carried to the input wherever a ReLU below was open.
    /// </summary>
    internal static Tensor DeltaShift(Tensor c, Tensor r)
    {
        var dims = Enumerable.Range(1, (int)r.dim() - 1).Select(d => (long)d).ToArray();
        var support = c.ne(0).to(c.dtype);
        return c + r - r.sum(dims, keepdim: true) / support.sum(dims, keepdim: true).clamp(min: 1) * support;
    }

    private static Tensor[] Vjp(GraphNode node, Tensor[] inputs, Tensor v)
    {
        Tensor[] leaves;
        Tensor z;
        using (torch.enable_grad())
        {
            leaves = inputs.Select(t => t.detach().requires_grad_(true)).ToArray();
            z = node.Forward(leaves);
        }
        if (!z.requires_grad) return leaves.Select(l => torch.zeros_like(l)).ToArray();
        return VectorJacobian.Grad(z, leaves, v);
    }

    /// <summary>x ⊙ ∂⟨z·[cam ≠ 0], cam / z⟩/∂x for every input (the authors' AGFPropSimple).</summary>
    private static Tensor[] Simple(GraphNode node, Tensor[] inputs, Tensor r)
    {
        Tensor[] leaves;
        Tensor z;
        using (torch.enable_grad())
        {
            leaves = inputs.Select(t => t.detach().requires_grad_(true)).ToArray();
            z = node.Forward(leaves) * r.ne(0).to(r.dtype);
        }
        if (!z.requires_grad) return inputs.Select(t => torch.zeros_like(t)).ToArray();
        var grads = VectorJacobian.Grad(z, leaves, SafeDivide(r, z.detach()));
        return leaves.Select((l, k) => l.detach() * grads[k]).ToArray();
    }

    private static bool IsInputLayer(RelevanceGraph graph, LinearUnitNode unit) =>
        unit.Unit.Kind == LinearUnitKind.Convolution2d && graph.PathFromInput(unit) is { Count: 0 };

    /// <summary>z^B without bias, L/H = per-sample min/max of the whole input (the authors' final_backward).</summary>
    private static Tensor InputZBox(LinearUnitNode unit, Tensor x, Tensor r)
    {
        var u = unit.Unit;
        var w = u.Weight;
        var wp = u.GetParameter("agf/w+", () => w.clamp(min: 0));
        var wn = u.GetParameter("agf/w-", () => w.clamp(max: 0));
        var low = MaxPerSample(-x).neg().expand(x.shape);
        var high = MaxPerSample(x).expand(x.shape);
        var z = u.Forward(x, w, null) - u.Forward(low, wp, null) - u.Forward(high, wn, null);
        var s = SafeDivide(r, z);
        return x * u.Transpose(s, w, x.shape) - low * u.Transpose(s, wp, x.shape) - high * u.Transpose(s, wn, x.shape);
    }

    /// <summary>C: |x| ⊙ |W|ᵀ(cam / (|W||x|·[cam ≠ 0])), or root inference on the |W| layer at |x| (agf-root).</summary>
    private Tensor Dtd(LinearUnitNode unit, Tensor x, Tensor r, ExplanationRecorder recorder)
    {
        var u = unit.Unit;
        var wabs = u.GetParameter("agf/|w|", () => u.Weight.abs());
        var xabs = x.abs();
        if (_root is null) return AbsoluteRule(u, wabs, xabs, r);
        using var absUnit = u.WithParameters(wabs, null);
        var node = new LinearUnitNode(unit.Name, absUnit, 0);
        Tensor z;
        using (torch.no_grad()) z = absUnit.Forward(xabs);
        var context = new RuleContext(node, new[] { xabs }, z, r * z.ne(0).to(r.dtype), InputDomain.Relu, null, null, recorder);
        return _root.Propagate(context)[0].detach().clone();
    }

    private static Tensor AbsoluteRule(LinearUnit u, Tensor wabs, Tensor xabs, Tensor r)
    {
        var z = u.Forward(xabs, wabs, null) * r.ne(0).to(r.dtype);
        return xabs * u.Transpose(SafeDivide(r, z), wabs, xabs.shape);
    }

    private static Tensor Gradient(LinearUnit u, Tensor x, Tensor g, Tensor? mask)
    {
        var v = mask is null ? g : g * mask;
        return u.Transpose(v, u.Weight, x.shape);
    }

    private Tensor Convolution(RelevanceGraph graph, LinearUnitNode unit, Tensor x, Tensor r, Tensor g, ExplanationRecorder recorder)
    {
        var u = unit.Unit;
        var c = Dtd(unit, x, r, recorder);
        if (FeedsResidualSum(graph, unit)) return c;
        var support = r.ne(0).to(r.dtype);
        var m = torch.nn.functional.relu((x * Gradient(u, x, g, null)).mean(new long[] { 1 }, keepdim: true).expand(x.shape));
        m = SafeDivide(m, MaxPerSample(m));
        var maskedGradient = Gradient(u, x, g, support);
        var (fx, fdx) = Factorization(x, maskedGradient, c.mean(new long[] { 1 }, keepdim: true));
        fx = torch.nn.functional.relu(fx);
        fdx = torch.nn.functional.relu(fdx);
        var ones = torch.ones_like(x);
        var a = AbsoluteRule(u, u.GetParameter("agf/|w|", () => u.Weight.abs()), ones, r);
        var residual = SafeDivide(fx + m, 1 + torch.exp(-c)) + fdx + a;
        residual = residual * c.ne(0).to(c.dtype);
        return DeltaShift(c, residual);
    }

    private Tensor Dense(RelevanceGraph graph, Tensor[] outputs, LinearUnitNode unit, Tensor x, Tensor r, Tensor g, ExplanationRecorder recorder)
    {
        var c = Dtd(unit, x, r, recorder);
        var source = graph.Nodes[unit.Inputs[0]];
        if (source.Kind != NodeKind.Shape || source.Inputs.Count != 1 || outputs[source.Inputs[0]].dim() != 4) return c;
        var map = outputs[source.Inputs[0]];
        var g4 = Gradient(unit.Unit, x, g, null).reshape(map.shape);
        var m = (map * g4).mean(new long[] { 1 }, keepdim: true).expand(map.shape).reshape(x.shape);
        m = torch.nn.functional.relu(m) * c.ne(0).to(c.dtype);
        m = SafeDivide(m, MaxPerSample(m));
        return DeltaShift(c, m);
    }

    /// <summary>A convolution whose output reaches a residual sum directly or through BatchNorm only.</summary>
    private static bool FeedsResidualSum(RelevanceGraph graph, LinearUnitNode unit)
    {
        var index = unit.Index;
        while (true)
        {
            var consumers = graph.Nodes.Where(n => n.Inputs.Contains(index)).ToList();
            if (consumers.Count != 1) return false;
            if (consumers[0].Kind == NodeKind.Sum) return true;
            if (consumers[0].Kind != NodeKind.BatchNorm) return false;
            index = consumers[0].Index;
        }
    }

    /// <summary>
    /// The authors' get_factorization: for v ∈ {x, ∇}, scaled to max 1, H = sigmoid(10·v); representatives of the
    /// positive and negative parts of φ (mean over positions of H on each part's support, per channel); weights
    /// W = ReLU((RᵀR + I)⁻¹ Rᵀ H) per position; F = W_pos − W_neg.
    /// </summary>
    internal static (Tensor Fx, Tensor Fdx) Factorization(Tensor x, Tensor gradient, Tensor phi)
    {
        var positive = phi.clamp(min: 0).ne(0).to(phi.dtype);
        var negative = phi.clamp(max: 0).ne(0).to(phi.dtype);
        Tensor Factor(Tensor v)
        {
            var h = torch.sigmoid(10 * v);
            Tensor Representative(Tensor support) =>
                SafeDivide((h * support).sum(new long[] { 2, 3 }, keepdim: true), support.sum(new long[] { 1, 2, 3 }, keepdim: true)).squeeze(3);
            var rep = torch.cat(new[] { Representative(negative), Representative(positive) }, -1); // [B,C,2]
            var flat = h.reshape(h.shape[0], h.shape[1], -1); // [B,C,HW]
            var rt = rep.transpose(1, 2); // [B,2,C]
            var gram = rt.matmul(rep) + torch.eye(2, dtype: h.dtype, device: h.device).unsqueeze(0);
            var w = torch.linalg.inv(gram).matmul(rt.matmul(flat)); // [B,2,HW]
            w = torch.nn.functional.relu(w.reshape(w.shape[0], 2, h.shape[2], h.shape[3]));
            return (w.narrow(1, 1, 1) - w.narrow(1, 0, 1)).expand(v.shape);
        }
        var fdx = Factor(SafeDivide(gradient, MaxPerSample(gradient)));
        var fx = Factor(SafeDivide(x, MaxPerSample(x)));
        return (fx, fdx);
    }
}
