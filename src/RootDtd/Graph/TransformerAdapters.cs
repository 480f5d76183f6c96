using RootDtd.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Graph;

/// <summary>
/// Graph adapters of the transformer family: LayerNorm modules and RootDtd's timm-layout <see cref="VisionTransformer"/>.
/// Every operation whose rule differs is its own node (see docs/transformers.md for the list and the node names).
/// </summary>
internal static class TransformerAdapters
{
    public static void Register(ModuleAdapters r)
    {
        r.Register<LayerNorm>((b, path, m, x) => AddLayerNorm(b, path, (LayerNorm)m, x));
        r.Register<VitMlp>((b, path, m, x) => AddMlp(b, path, m, x));
        r.Register<VisionTransformer>((b, path, m, x) => AddVisionTransformer(b, path, (VisionTransformer)m, x));
        r.Register<TransformerEncoderLayer>((b, path, m, x) =>
        {
            var (heads, activation) = AttentionAdapters.RecogniseEncoder(path, m, layers: 1);
            return AttentionAdapters.AddEncoderLayer(b, path, (TransformerEncoderLayer)m, x, heads, activation);
        });
        r.Register<TransformerEncoder>((b, path, m, x) => AttentionAdapters.AddEncoder(b, path, (TransformerEncoder)m, x));
    }

    public static int AddLayerNorm(GraphBuilder b, string path, LayerNorm ln, int x)
    {
        var shape = ln.normalized_shape;
        if (shape.Length != 1)
            throw new NotSupportedException($"LayerNorm '{path}' normalises over {shape.Length} axes ([{string.Join(", ", shape)}]); the relevance graph describes LayerNorm over the last axis only.");
        return b.Add(new LayerNormNode(path, x, ln.weight, ln.bias, ln.eps) { Module = ln });
    }

    private static string J(string path, string name) => GraphBuilder.Join(path, name);

    /// <summary>
    /// patch conv → tokens → [class token; tokens] → + position embedding → blocks → norm → class token → head.
    /// </summary>
    public static int AddVisionTransformer(GraphBuilder b, string path, VisionTransformer vit, int input)
    {
        var o = vit.Options;
        b.TokenLayout = new TokenLayout(1, o.GridSize, o.GridSize);
        b.InputValidator = vit.ValidateInputShape;
        var conv = b.AddModule(J(path, "patch_embed.proj"), vit.PatchEmbedding.Projection, input);
        var tokens = b.AddNamed(new OperationNode(J(path, "patch_embed"), NodeKind.Rearrange, conv, t => t.flatten(2).transpose(1, 2))
        {
            Module = vit.PatchEmbedding,
            VectorJacobianProduct = (g, grid) => g.transpose(1, 2).reshape(grid.shape),
        });
        var cls = b.AddNamed(new ParameterNode(J(path, "cls_token"), vit.ClassToken));
        var t0 = b.AddNamed(new ConcatNode(J(path, "cat_cls_token"), new[] { cls, tokens }, 1));
        var pos = b.AddNamed(new ParameterNode(J(path, "pos_embed"), vit.PositionEmbedding));
        var h = b.AddNamed(new SumNode(J(path, "add_pos_embed"), new[] { t0, pos }));
        var blocks = vit.Blocks;
        for (var i = 0; i < blocks.Count; i++)
            h = b.NameOutput(J(path, $"blocks.{i}"), AddBlock(b, J(path, $"blocks.{i}"), blocks[i], h));
        h = b.AddModule(J(path, "norm"), vit.Norm, h);
        var pooled = b.AddNamed(new OperationNode(J(path, "pool"), NodeKind.Select, h, t => t.select(1, 0)));
        return b.AddModule(J(path, "head"), vit.Head, pooled);
    }

    private static int AddBlock(GraphBuilder b, string path, VitBlock block, int h)
    {
        var children = block.named_children().ToDictionary(c => c.name, c => c.module);
        var y1 = b.AddModule(J(path, "norm1"), children["norm1"], h);
        var attn = b.NameOutput(J(path, "attn"), AddAttention(b, J(path, "attn"), (VitAttention)children["attn"], y1));
        var mid = b.AddNamed(new SumNode(J(path, "add_attn"), new[] { h, attn }));
        var y2 = b.AddModule(J(path, "norm2"), children["norm2"], mid);
        var mlp = b.AddModule(J(path, "mlp"), children["mlp"], y2);
        return b.AddNamed(new SumNode(J(path, "add_mlp"), new[] { mid, mlp }));
    }

    /// <summary>qkv → q, k, v (heads split) → q·kᵀ → ·scale → softmax → A·v → heads merged → proj.</summary>
    public static int AddAttention(GraphBuilder b, string path, VitAttention attn, int y)
    {
        var heads = attn.Heads;
        // one graph node, three root units (q, k, v: D7)
        var qkv = b.AddNamed(new LinearUnitNode(J(path, "qkv"), LinearUnit.Dense(attn.Qkv.weight, attn.Qkv.bias), y)
        {
            Module = attn.Qkv,
            OutputParts = LinearUnitNode.QkvParts,
        });
        int Part(string name, int which) => b.AddNamed(SplitNode(J(path, name), qkv, heads, which));
        var q = Part("q", 0);
        var k = Part("k", 1);
        var v = Part("v", 2);
        var scores = b.AddNamed(new ProductNode(J(path, "q_kT"), q, k, ProductKind.MatMulTransposed));
        var scaled = b.AddNamed(new ScaleNode(J(path, "scale"), scores, attn.Scale));
        var probabilities = b.AddNamed(new SoftmaxNode(J(path, "softmax"), scaled));
        var weighted = b.AddNamed(new ProductNode(J(path, "attn_v"), probabilities, v, ProductKind.MatMul));
        var merged = b.AddNamed(MergeNode(J(path, "merge_heads"), weighted));
        return b.AddModule(J(path, "proj"), attn.Proj, merged);
    }

    /// <summary>Part <paramref name="which"/> (0 q, 1 k, 2 v) of a packed qkv output, heads split, with its closed-form transpose.</summary>
    internal static OperationNode SplitNode(string name, int qkv, int heads, int which) =>
        new(name, NodeKind.Rearrange, qkv, t => VitAttention.Split(t, heads, which))
        {
            VectorJacobianProduct = (g, packed) => VitAttention.SplitTranspose(g, packed, heads, which),
        };

    /// <summary>Heads [B, H, N, d] merged into tokens, with its closed-form transpose.</summary>
    internal static OperationNode MergeNode(string name, int weighted) =>
        new(name, NodeKind.Rearrange, weighted, VitAttention.Merge) { VectorJacobianProduct = VitAttention.MergeTranspose };

    /// <summary>The MLP: fc1 → act → fc2 (children in registration order).</summary>
    public static int AddMlp(GraphBuilder b, string path, nn.Module mlp, int x) => b.AddChildren(path, mlp, x, "fc1", "act", "fc2");
}

/// <summary>
/// Graph helpers for attention built from TorchSharp's own modules, for adapters of custom transformer blocks.
/// TorchSharp's <c>nn.MultiheadAttention</c> is a native module whose forward takes (query, key, value, masks) in
/// sequence-first layout and does not expose its head count; a block that calls it as self-attention on its tokens
/// describes that call with <see cref="AddSelfAttention"/>.
/// </summary>
public static class AttentionAdapters
{
    /// <summary>
    /// Self-attention <c>mha(x, x, x)</c> without masks on tokens <paramref name="tokens"/> [B, N, D] (batch first in the
    /// graph, whatever layout the block transposes to): in_proj (a unit: q, k, v rows as timm's qkv), heads split,
    /// q·kᵀ, scale d^(−1/2), softmax, A·v, heads merged, out_proj. Node names as the ViT's (<c>&lt;path&gt;.qkv</c>,
    /// <c>&lt;path&gt;.softmax</c>, …). Returns the node of the attention output [B, N, D].
    /// </summary>
    /// <param name="builder">The graph builder.</param>
    /// <param name="path">The module path of the attention.</param>
    /// <param name="attention">The module (its <c>in_proj_weight</c>, <c>in_proj_bias</c>, <c>out_proj</c> are read).</param>
    /// <param name="tokens">The node of the tokens.</param>
    /// <param name="heads">The head count the module was created with (TorchSharp does not expose it).</param>
    public static int AddSelfAttention(GraphBuilder builder, string path, MultiheadAttention attention, int tokens, int heads)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(attention);
        var parameters = attention.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        if (!parameters.TryGetValue("in_proj_weight", out var inWeight) || !parameters.TryGetValue("out_proj.weight", out var outWeight))
            throw new NotSupportedException($"MultiheadAttention '{path}' has no packed in_proj_weight (separate key/value sizes or bias_k/bias_v are not described by the graph); its parameters: {string.Join(", ", parameters.Keys)}.");
        if (parameters.Keys.Any(k => k is "bias_k" or "bias_v" or "q_proj_weight" or "k_proj_weight" or "v_proj_weight"))
            throw new NotSupportedException($"MultiheadAttention '{path}': add_bias_kv and separate q/k/v projections are not described by the relevance graph.");
        parameters.TryGetValue("in_proj_bias", out var inBias);
        parameters.TryGetValue("out_proj.bias", out var outBias);
        var output = AddPackedSelfAttention(builder, path, "MultiheadAttention", attention, inWeight, inBias, outWeight, outBias, tokens, heads);
        return builder.NameOutput(path, output);
    }

    /// <summary>in_proj (packed q, k, v rows) → heads → q·kᵀ → scale → softmax → A·v → heads merged → out_proj, on batch-first tokens.</summary>
    private static int AddPackedSelfAttention(GraphBuilder builder, string path, string kind, nn.Module module, Tensor inWeight, Tensor? inBias,
        Tensor outWeight, Tensor? outBias, int tokens, int heads)
    {
        var dim = inWeight.shape[1];
        if (heads < 1 || dim % heads != 0 || inWeight.shape[0] != 3 * dim)
            throw new ArgumentException($"{kind} '{path}': {heads} heads do not divide the width {dim} (in_proj_weight [{string.Join(", ", inWeight.shape)}]).", nameof(heads));
        string J(string name) => GraphBuilder.Join(path, name);
        var qkv = builder.AddNamed(new LinearUnitNode(J("qkv"), LinearUnit.Dense(inWeight, inBias), tokens) { Module = module, OutputParts = LinearUnitNode.QkvParts });
        int Part(string name, int which) => builder.AddNamed(TransformerAdapters.SplitNode(J(name), qkv, heads, which));
        var q = Part("q", 0);
        var k = Part("k", 1);
        var v = Part("v", 2);
        var scores = builder.AddNamed(new ProductNode(J("q_kT"), q, k, ProductKind.MatMulTransposed));
        var scaled = builder.AddNamed(new ScaleNode(J("scale"), scores, Math.Pow(dim / heads, -0.5)));
        var probabilities = builder.AddNamed(new SoftmaxNode(J("softmax"), scaled));
        var weighted = builder.AddNamed(new ProductNode(J("attn_v"), probabilities, v, ProductKind.MatMul));
        var merged = builder.AddNamed(TransformerAdapters.MergeNode(J("merge_heads"), weighted));
        return builder.AddNamed(new LinearUnitNode(J("out_proj"), LinearUnit.Dense(outWeight, outBias), merged));
    }

    /// <summary>The LayerNorm epsilon of TorchSharp's (libtorch's) TransformerEncoderLayer, which is not configurable there.</summary>
    public const double EncoderLayerNormEpsilon = 1e-5;

    /// <summary>
    /// TorchSharp's <c>nn.TransformerEncoderLayer</c> called as <c>layer.forward(src)</c> (no masks) on sequence-first
    /// tokens <paramref name="tokens"/> [N, B, D], as libtorch computes it (post-norm; TorchSharp 0.107 has no
    /// <c>norm_first</c>): <c>r = norm1(src + self_attn(src))</c>, <c>out = norm2(r + linear2(act(linear1(r))))</c>, dropout
    /// off (explanations have eval semantics). Nodes: <c>&lt;path&gt;.to_batch_first</c>, <c>&lt;path&gt;.self_attn.qkv</c>
    /// … <c>.softmax</c> … <c>.out_proj</c> (as <see cref="AddSelfAttention"/>), <c>.add_attn</c>, <c>.norm1</c>,
    /// <c>.linear1</c>, <c>.act</c>, <c>.linear2</c>, <c>.add_ff</c>, <c>.norm2</c>, <c>.to_sequence_first</c>.
    /// Returns the node of the layer's output [N, B, D]. The built-in adapter calls this with the head count and
    /// activation recognised from the module (TorchSharp exposes neither).
    /// </summary>
    /// <param name="builder">The graph builder.</param>
    /// <param name="path">The module path of the layer.</param>
    /// <param name="layer">The layer (its parameters are read).</param>
    /// <param name="tokens">The node of the sequence-first tokens [N, B, D].</param>
    /// <param name="heads">The head count the layer was created with.</param>
    /// <param name="activation">The activation the layer was created with.</param>
    public static int AddEncoderLayer(GraphBuilder builder, string path, TransformerEncoderLayer layer, int tokens, int heads, nn.Activations activation)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(layer);
        var parameters = layer.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        var output = AddEncoderLayerCore(builder, path, layer, parameters, string.Empty, tokens, heads, activation);
        return builder.NameOutput(path, output);
    }

    /// <summary>TorchSharp's <c>nn.TransformerEncoder</c> (a stack of encoder layers, <c>layers.0</c>, <c>layers.1</c>, …; no final norm in TorchSharp 0.107) on sequence-first tokens, each layer as in <see cref="AddEncoderLayer"/>.</summary>
    internal static int AddEncoder(GraphBuilder builder, string path, TransformerEncoder encoder, int tokens)
    {
        var parameters = encoder.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        var layers = parameters.Keys.Where(k => k.StartsWith("layers.", StringComparison.Ordinal))
            .Select(k => int.Parse(k.Split('.')[1], System.Globalization.CultureInfo.InvariantCulture)).Distinct().Count();
        if (layers == 0 || parameters.Keys.Any(k => !k.StartsWith("layers.", StringComparison.Ordinal)))
            throw new NotSupportedException($"TransformerEncoder '{path}': expected only parameters 'layers.<i>.…' (TorchSharp 0.107's encoder has no final norm); got {string.Join(", ", parameters.Keys.Take(8))}.");
        var (heads, activation) = RecogniseEncoder(path, encoder, layers);
        var h = tokens;
        for (var i = 0; i < layers; i++)
        {
            var layerPath = GraphBuilder.Join(path, $"layers.{i}");
            h = builder.NameOutput(layerPath, AddEncoderLayerCore(builder, layerPath, encoder, parameters, $"layers.{i}.", h, heads, activation));
        }
        return h;
    }

    private static readonly string[] EncoderLayerParameters =
    {
        "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
        "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
    };

    private static int AddEncoderLayerCore(GraphBuilder builder, string path, nn.Module module, IReadOnlyDictionary<string, Tensor> parameters, string prefix,
        int tokens, int heads, nn.Activations activation)
    {
        Tensor P(string name) => parameters.TryGetValue(prefix + name, out var t) ? t
            : throw new NotSupportedException($"TransformerEncoderLayer '{path}' has no parameter '{prefix + name}'; expected {string.Join(", ", EncoderLayerParameters)}.");
        string J(string name) => GraphBuilder.Join(path, name);
        var x = builder.AddNamed(new OperationNode(J("to_batch_first"), NodeKind.Rearrange, tokens, t => t.transpose(0, 1)) { Module = module });
        var attention = AddPackedSelfAttention(builder, J("self_attn"), "TransformerEncoderLayer", module,
            P("self_attn.in_proj_weight"), P("self_attn.in_proj_bias"), P("self_attn.out_proj.weight"), P("self_attn.out_proj.bias"), x, heads);
        builder.NameOutput(J("self_attn"), attention);
        var mid = builder.AddNamed(new SumNode(J("add_attn"), new[] { x, attention }));
        var r = builder.AddNamed(new LayerNormNode(J("norm1"), mid, P("norm1.weight"), P("norm1.bias"), EncoderLayerNormEpsilon));
        var hidden = builder.AddNamed(new LinearUnitNode(J("linear1"), LinearUnit.Dense(P("linear1.weight"), P("linear1.bias")), r));
        var act = activation switch
        {
            nn.Activations.ReLU => builder.AddNamed(new OperationNode(J("act"), NodeKind.Activation, hidden, t => F.relu(t)) { ClampsToNonNegative = true }),
            nn.Activations.GELU => builder.AddNamed(new OperationNode(J("act"), NodeKind.Activation, hidden, t => F.gelu(t))),
            _ => throw new NotSupportedException($"TransformerEncoderLayer '{path}': activation {activation} is not described by the relevance graph (ReLU or GELU)."),
        };
        var ff = builder.AddNamed(new LinearUnitNode(J("linear2"), LinearUnit.Dense(P("linear2.weight"), P("linear2.bias")), act));
        var sum = builder.AddNamed(new SumNode(J("add_ff"), new[] { r, ff }));
        var y = builder.AddNamed(new LayerNormNode(J("norm2"), sum, P("norm2.weight"), P("norm2.bias"), EncoderLayerNormEpsilon));
        return builder.AddNamed(new OperationNode(J("to_sequence_first"), NodeKind.Rearrange, y, t => t.transpose(0, 1)));
    }

    /// <summary>
    /// The head count and activation of a native encoder layer (or a stack of <paramref name="layers"/>), which TorchSharp
    /// does not expose: the module runs once on a small random sequence (eval semantics, no gradient) and its output is
    /// compared with the post-norm layer for every head count that divides the width and both activations. Exactly one
    /// must match; otherwise the module does something the graph does not describe, and the error names it.
    /// </summary>
    internal static (int Heads, nn.Activations Activation) RecogniseEncoder(string path, nn.Module module, int layers)
    {
        var kind = module is TransformerEncoder ? "TransformerEncoder" : "TransformerEncoderLayer";
        var parameters = module.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
        var prefix = module is TransformerEncoder ? "layers.0." : string.Empty;
        if (!parameters.TryGetValue(prefix + "self_attn.in_proj_weight", out var inWeight))
            throw new NotSupportedException($"{kind} '{path}' has no parameter '{prefix}self_attn.in_proj_weight'; its parameters: {string.Join(", ", parameters.Keys.Take(12))}.");
        var dim = inWeight.shape[1];
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var wasTraining = module.training;
        Tensor expected;
        var src = torch.randn(new long[] { 5, 2, dim }, dtype: ScalarType.Float64, generator: torch.manual_seed(20260101)).to(inWeight.dtype).to(inWeight.device);
        try
        {
            if (wasTraining) module.train(false);   // dropout off: the graph describes eval semantics
            expected = module is TransformerEncoder encoder ? encoder.call(src) : ((nn.Module<Tensor, Tensor>)module).forward(src);
        }
        finally
        {
            if (wasTraining) module.train(true);
        }
        var tolerance = inWeight.dtype == ScalarType.Float64 ? 1e-9 : 1e-3;
        var scale = Math.Max(1.0, expected.abs().max().ToDouble());
        var matches = new List<(int, nn.Activations, double)>();
        var best = double.PositiveInfinity;
        foreach (var activation in new[] { nn.Activations.ReLU, nn.Activations.GELU })
            for (var heads = 1; heads <= dim; heads++)
            {
                if (dim % heads != 0) continue;
                var h = src;
                for (var i = 0; i < layers; i++) h = ReferenceLayer(parameters, module is TransformerEncoder ? $"layers.{i}." : string.Empty, h, heads, activation);
                var diff = (h - expected).abs().max().ToDouble() / scale;
                best = Math.Min(best, diff);
                if (diff <= tolerance) matches.Add((heads, activation, diff));
            }
        if (matches.Count == 0)
            throw new NotSupportedException(
                $"{kind} '{path}' does not compute a post-norm encoder layer with ReLU or GELU and any head count dividing {dim} (closest relative difference {best:g3}): " +
                "a variant the relevance graph does not describe. Describe the block with your own adapter (AttentionAdapters.AddSelfAttention).");
        var ordered = matches.OrderBy(m => m.Item3).ToList();
        // several configurations fit (weights that make every head alike): only a clearly best fit is taken
        if (ordered.Count > 1 && ordered[1].Item3 < 1e3 * ordered[0].Item3 + 1e-15)
            throw new NotSupportedException(
                $"{kind} '{path}': its output fits several configurations ({string.Join(", ", ordered.Select(m => $"{m.Item1} heads {m.Item2}"))}); register an adapter that calls AttentionAdapters.AddEncoderLayer with the head count and activation.");
        return (ordered[0].Item1, ordered[0].Item2);
    }

    /// <summary>The post-norm encoder layer in plain tensor operations (sequence first), for <see cref="RecogniseEncoder"/>.</summary>
    private static Tensor ReferenceLayer(IReadOnlyDictionary<string, Tensor> p, string prefix, Tensor src, int heads, nn.Activations activation)
    {
        var dim = src.shape[2];
        var x = src.transpose(0, 1);
        var qkv = F.linear(x, p[prefix + "self_attn.in_proj_weight"], p[prefix + "self_attn.in_proj_bias"]);
        var q = VitAttention.Split(qkv, heads, 0);
        var k = VitAttention.Split(qkv, heads, 1);
        var v = VitAttention.Split(qkv, heads, 2);
        var a = F.softmax(q.matmul(k.transpose(-2, -1)) * Math.Pow(dim / heads, -0.5), -1);
        var attention = F.linear(VitAttention.Merge(a.matmul(v)), p[prefix + "self_attn.out_proj.weight"], p[prefix + "self_attn.out_proj.bias"]);
        var r = F.layer_norm(x + attention, new[] { dim }, p[prefix + "norm1.weight"], p[prefix + "norm1.bias"], EncoderLayerNormEpsilon);
        var hidden = F.linear(r, p[prefix + "linear1.weight"], p[prefix + "linear1.bias"]);
        hidden = activation == nn.Activations.GELU ? F.gelu(hidden) : F.relu(hidden);
        var y = F.layer_norm(r + F.linear(hidden, p[prefix + "linear2.weight"], p[prefix + "linear2.bias"]), new[] { dim }, p[prefix + "norm2.weight"], p[prefix + "norm2.bias"], EncoderLayerNormEpsilon);
        return y.transpose(0, 1);
    }
}
