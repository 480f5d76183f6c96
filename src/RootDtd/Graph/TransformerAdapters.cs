using RootDtd.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

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
        var tokens = b.AddNamed(new OperationNode(J(path, "patch_embed"), NodeKind.Rearrange, conv, t => t.flatten(2).transpose(1, 2)) { Module = vit.PatchEmbedding });
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
        int Part(string name, int which) =>
            b.AddNamed(new OperationNode(J(path, name), NodeKind.Rearrange, qkv, t => VitAttention.Split(t, heads, which)));
        var q = Part("q", 0);
        var k = Part("k", 1);
        var v = Part("v", 2);
        var scores = b.AddNamed(new ProductNode(J(path, "q_kT"), q, k, ProductKind.MatMulTransposed));
        var scaled = b.AddNamed(new ScaleNode(J(path, "scale"), scores, attn.Scale));
        var probabilities = b.AddNamed(new SoftmaxNode(J(path, "softmax"), scaled));
        var weighted = b.AddNamed(new ProductNode(J(path, "attn_v"), probabilities, v, ProductKind.MatMul));
        var merged = b.AddNamed(new OperationNode(J(path, "merge_heads"), NodeKind.Rearrange, weighted, VitAttention.Merge));
        return b.AddModule(J(path, "proj"), attn.Proj, merged);
    }

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
        var dim = inWeight.shape[1];
        if (heads < 1 || dim % heads != 0 || inWeight.shape[0] != 3 * dim)
            throw new ArgumentException($"MultiheadAttention '{path}': {heads} heads do not divide the width {dim} (in_proj_weight [{string.Join(", ", inWeight.shape)}]).", nameof(heads));
        parameters.TryGetValue("in_proj_bias", out var inBias);
        parameters.TryGetValue("out_proj.bias", out var outBias);
        string J(string name) => GraphBuilder.Join(path, name);
        var qkv = builder.AddNamed(new LinearUnitNode(J("qkv"), LinearUnit.Dense(inWeight, inBias), tokens) { Module = attention, OutputParts = LinearUnitNode.QkvParts });
        int Part(string name, int which) => builder.AddNamed(new OperationNode(J(name), NodeKind.Rearrange, qkv, t => VitAttention.Split(t, heads, which)));
        var q = Part("q", 0);
        var k = Part("k", 1);
        var v = Part("v", 2);
        var scores = builder.AddNamed(new ProductNode(J("q_kT"), q, k, ProductKind.MatMulTransposed));
        var scaled = builder.AddNamed(new ScaleNode(J("scale"), scores, Math.Pow(dim / heads, -0.5)));
        var probabilities = builder.AddNamed(new SoftmaxNode(J("softmax"), scaled));
        var weighted = builder.AddNamed(new ProductNode(J("attn_v"), probabilities, v, ProductKind.MatMul));
        var merged = builder.AddNamed(new OperationNode(J("merge_heads"), NodeKind.Rearrange, weighted, VitAttention.Merge));
        var output = builder.AddNamed(new LinearUnitNode(J("out_proj"), LinearUnit.Dense(outWeight, outBias), merged));
        return builder.NameOutput(path, output);
    }
}
