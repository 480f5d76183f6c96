using System.Globalization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Models;

/// <summary>
/// The shape of a <see cref="VisionTransformer"/> (timm's <c>VisionTransformer</c> arguments of the same names).
/// </summary>
public sealed record VisionTransformerOptions
{
    /// <summary>Input height and width in pixels (square images; timm <c>img_size</c>).</summary>
    public int ImageSize { get; init; } = 224;

    /// <summary>Patch height and width (timm <c>patch_size</c>); <see cref="ImageSize"/> must be a multiple of it.</summary>
    public int PatchSize { get; init; } = 16;

    /// <summary>Input channels (timm <c>in_chans</c>).</summary>
    public int InChannels { get; init; } = 3;

    /// <summary>Number of classes of the head (timm <c>num_classes</c>).</summary>
    public int NumClasses { get; init; } = 1000;

    /// <summary>Token width (timm <c>embed_dim</c>).</summary>
    public int EmbedDim { get; init; } = 768;

    /// <summary>Number of transformer blocks (timm <c>depth</c>).</summary>
    public int Depth { get; init; } = 12;

    /// <summary>Attention heads per block (timm <c>num_heads</c>); must divide <see cref="EmbedDim"/>.</summary>
    public int NumHeads { get; init; } = 12;

    /// <summary>Hidden width of the MLP as a multiple of <see cref="EmbedDim"/> (timm <c>mlp_ratio</c>).</summary>
    public double MlpRatio { get; init; } = 4.0;

    /// <summary>Whether the qkv projection has a bias (timm <c>qkv_bias</c>).</summary>
    public bool QkvBias { get; init; } = true;

    /// <summary>ε of every LayerNorm (timm uses 1e-6).</summary>
    public double LayerNormEpsilon { get; init; } = 1e-6;

    /// <summary>Patches per side.</summary>
    public int GridSize => ImageSize / PatchSize;

    /// <summary>Number of tokens: one class token plus one per patch.</summary>
    public int Tokens => GridSize * GridSize + 1;

    /// <summary>Width of one head.</summary>
    public int HeadDim => EmbedDim / NumHeads;

    /// <summary>Hidden width of the MLP.</summary>
    public int MlpHidden => (int)(EmbedDim * MlpRatio);

    /// <summary>Throws <see cref="ArgumentException"/> when the shape is inconsistent.</summary>
    public void Validate()
    {
        void Positive(int v, string name)
        {
            if (v < 1) throw new ArgumentException($"VisionTransformerOptions.{name} must be ≥ 1; got {v}.");
        }
        Positive(ImageSize, nameof(ImageSize));
        Positive(PatchSize, nameof(PatchSize));
        Positive(InChannels, nameof(InChannels));
        Positive(NumClasses, nameof(NumClasses));
        Positive(EmbedDim, nameof(EmbedDim));
        Positive(Depth, nameof(Depth));
        Positive(NumHeads, nameof(NumHeads));
        if (ImageSize % PatchSize != 0)
            throw new ArgumentException($"VisionTransformerOptions: the image size {ImageSize} is not a multiple of the patch size {PatchSize}.");
        if (EmbedDim % NumHeads != 0)
            throw new ArgumentException($"VisionTransformerOptions: the embedding width {EmbedDim} is not divisible by the {NumHeads} heads.");
        if (!(MlpRatio > 0) || MlpHidden < 1) throw new ArgumentException($"VisionTransformerOptions.MlpRatio must give a hidden width ≥ 1; got {MlpRatio.ToString(CultureInfo.InvariantCulture)}.");
        if (!(LayerNormEpsilon >= 0)) throw new ArgumentException($"VisionTransformerOptions.LayerNormEpsilon must be ≥ 0; got {LayerNormEpsilon.ToString(CultureInfo.InvariantCulture)}.");
    }
}

/// <summary>timm's <c>PatchEmbed</c>: a convolution with kernel = stride = the patch size (<c>proj</c>).</summary>
public sealed class PatchEmbed : Module<Tensor, Tensor>
{
    private readonly Conv2d proj;

    /// <summary>Creates the patch embedding.</summary>
    public PatchEmbed(int inChannels, int embedDim, int patchSize) : base("PatchEmbed")
    {
        proj = Conv2d(inChannels, embedDim, patchSize, stride: patchSize);
        RegisterComponents();
    }

    /// <summary>The patch convolution.</summary>
    public Conv2d Projection => proj;

    /// <summary>[B, C, H, W] → [B, N, D] (patch t = row·grid + column).</summary>
    public override Tensor forward(Tensor input) => proj.forward(input).flatten(2).transpose(1, 2);
}

/// <summary>timm's <c>Attention</c>: <c>qkv</c> (one Linear for q, k and v), scaled dot-product attention, <c>proj</c>.</summary>
public sealed class VitAttention : Module<Tensor, Tensor>
{
    private readonly Linear qkv;
    private readonly Linear proj;

    /// <summary>Creates the attention.</summary>
    public VitAttention(int dim, int heads, bool qkvBias) : base("Attention")
    {
        Heads = heads;
        HeadDim = dim / heads;
        Scale = Math.Pow(HeadDim, -0.5);
        qkv = Linear(dim, dim * 3, hasBias: qkvBias);
        proj = Linear(dim, dim);
        RegisterComponents();
    }

    /// <summary>Number of heads.</summary>
    public int Heads { get; }

    /// <summary>Width of one head.</summary>
    public int HeadDim { get; }

    /// <summary>The score scale d_head^(−1/2), applied after q·kᵀ.</summary>
    public double Scale { get; }

    /// <summary>The qkv projection (output columns s·D + head·d_head + j, s = 0 q, 1 k, 2 v).</summary>
    public Linear Qkv => qkv;

    /// <summary>The output projection.</summary>
    public Linear Proj => proj;

    /// <summary>Splits a qkv output [B, N, 3D] into part <paramref name="which"/> (0 q, 1 k, 2 v) as [B, H, N, d].</summary>
    public static Tensor Split(Tensor qkvOut, int heads, int which)
    {
        var b = qkvOut.shape[0];
        var n = qkvOut.shape[1];
        var d = qkvOut.shape[2] / 3 / heads;
        return qkvOut.reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)[which];
    }

    /// <summary>
    /// The transpose of <see cref="Split"/>: <paramref name="part"/> [B, H, N, d] placed at part <paramref name="which"/>
    /// of a zero tensor shaped like the packed <paramref name="qkvOut"/> [B, N, 3·H·d] (what autograd gives, without it).
    /// </summary>
    internal static Tensor SplitTranspose(Tensor part, Tensor qkvOut, int heads, int which)
    {
        var b = qkvOut.shape[0];
        var n = qkvOut.shape[1];
        var d = qkvOut.shape[2] / 3 / heads;
        var full = torch.zeros(qkvOut.shape, dtype: part.dtype, device: part.device);
        full.view(b, n, 3, heads, d).select(2, which).copy_(part.permute(0, 2, 1, 3));
        return full;
    }

    /// <summary>Merges heads [B, H, N, d] into tokens [B, N, H·d].</summary>
    public static Tensor Merge(Tensor heads) => heads.transpose(1, 2).flatten(2);

    /// <summary>The transpose of <see cref="Merge"/>: tokens [B, N, H·d] back to heads shaped like <paramref name="heads"/> [B, H, N, d].</summary>
    internal static Tensor MergeTranspose(Tensor tokens, Tensor heads) =>
        tokens.reshape(heads.shape[0], heads.shape[2], heads.shape[1], heads.shape[3]).transpose(1, 2);

    /// <summary>The attention probabilities softmax(q·kᵀ·scale) [B, H, N, N] of a normalised input [B, N, D].</summary>
    public Tensor Probabilities(Tensor x)
    {
        var t = qkv.forward(x);
        return F.softmax(Split(t, Heads, 0).matmul(Split(t, Heads, 1).transpose(-2, -1)) * Scale, -1);
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var t = qkv.forward(x);
        var a = F.softmax(Split(t, Heads, 0).matmul(Split(t, Heads, 1).transpose(-2, -1)) * Scale, -1);
        return proj.forward(Merge(a.matmul(Split(t, Heads, 2)))).MoveToOuterDisposeScope();
    }
}

/// <summary>timm's <c>Mlp</c>: <c>fc1</c>, exact (erf) GELU <c>act</c>, <c>fc2</c>.</summary>
public sealed class VitMlp : Module<Tensor, Tensor>
{
    private readonly Linear fc1;
    private readonly GELU act;
    private readonly Linear fc2;

    /// <summary>Creates the MLP.</summary>
    public VitMlp(int dim, int hidden) : base("Mlp")
    {
        fc1 = Linear(dim, hidden);
        act = GELU();
        fc2 = Linear(hidden, dim);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return fc2.forward(act.forward(fc1.forward(x))).MoveToOuterDisposeScope();
    }
}

/// <summary>timm's pre-LN <c>Block</c>: <c>x + attn(norm1(x))</c>, then <c>x + mlp(norm2(x))</c>.</summary>
public sealed class VitBlock : Module<Tensor, Tensor>
{
    private readonly LayerNorm norm1;
    private readonly VitAttention attn;
    private readonly LayerNorm norm2;
    private readonly VitMlp mlp;

    /// <summary>Creates the block.</summary>
    public VitBlock(VisionTransformerOptions o) : base("Block")
    {
        norm1 = LayerNorm(new long[] { o.EmbedDim }, o.LayerNormEpsilon);
        attn = new VitAttention(o.EmbedDim, o.NumHeads, o.QkvBias);
        norm2 = LayerNorm(new long[] { o.EmbedDim }, o.LayerNormEpsilon);
        mlp = new VitMlp(o.EmbedDim, o.MlpHidden);
        RegisterComponents();
    }

    /// <summary>The attention of the block.</summary>
    public VitAttention Attention => attn;

    /// <summary>The first LayerNorm.</summary>
    public LayerNorm Norm1 => norm1;

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x + attn.forward(norm1.forward(x));
        return (h + mlp.forward(norm2.forward(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A Vision Transformer in timm's layout (<c>VisionTransformer</c> with a class token, learned position embedding,
/// pre-LN blocks, token pooling and the head on the class token; no dropout, layer scale, <c>norm_pre</c> or
/// <c>fc_norm</c>). Module names and state-dict keys are timm's (<c>patch_embed.proj.*</c>, <c>cls_token</c>,
/// <c>pos_embed</c>, <c>blocks.{i}.norm1.*</c>, <c>blocks.{i}.attn.qkv.*</c>, <c>blocks.{i}.attn.proj.*</c>,
/// <c>blocks.{i}.norm2.*</c>, <c>blocks.{i}.mlp.fc1.*</c>, <c>blocks.{i}.mlp.fc2.*</c>, <c>norm.*</c>, <c>head.*</c>), so a
/// state dict of timm's <c>vit_*_patch16_224</c> loads unchanged with <see cref="ModelWeights.Load"/>. Scores are
/// <c>(q·kᵀ)·d_head^(−1/2)</c> (scale after the product), softmax over keys, exact GELU.
/// </summary>
public sealed class VisionTransformer : Module<Tensor, Tensor>
{
    private readonly PatchEmbed patch_embed;
    private readonly Parameter cls_token;
    private readonly Parameter pos_embed;
    private readonly ModuleList<VitBlock> blocks;
    private readonly LayerNorm norm;
    private readonly Linear head;

    /// <summary>Creates a randomly initialised ViT (truncated-normal-like N(0, 0.02) tokens, default layer init).</summary>
    public VisionTransformer(VisionTransformerOptions options) : base("VisionTransformer")
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        Options = options;
        patch_embed = new PatchEmbed(options.InChannels, options.EmbedDim, options.PatchSize);
        using (torch.no_grad())
        {
            cls_token = new Parameter(torch.randn(1, 1, options.EmbedDim) * 0.02);
            pos_embed = new Parameter(torch.randn(1, options.Tokens, options.EmbedDim) * 0.02);
        }
        blocks = new ModuleList<VitBlock>(Enumerable.Range(0, options.Depth).Select(_ => new VitBlock(options)).ToArray());
        norm = LayerNorm(new long[] { options.EmbedDim }, options.LayerNormEpsilon);
        head = Linear(options.EmbedDim, options.NumClasses);
        RegisterComponents();
    }

    /// <summary>The model's shape.</summary>
    public VisionTransformerOptions Options { get; }

    /// <summary>The patch embedding.</summary>
    public PatchEmbed PatchEmbedding => patch_embed;

    /// <summary>The class token [1, 1, D].</summary>
    public Parameter ClassToken => cls_token;

    /// <summary>The position embedding [1, N, D].</summary>
    public Parameter PositionEmbedding => pos_embed;

    /// <summary>The transformer blocks.</summary>
    public IReadOnlyList<VitBlock> Blocks => blocks.ToList();

    /// <summary>The final LayerNorm.</summary>
    public LayerNorm Norm => norm;

    /// <summary>The classification head.</summary>
    public Linear Head => head;

    /// <summary>
    /// Checks an input shape against the patch size and the position embedding; throws an
    /// <see cref="ArgumentException"/> naming the module otherwise.
    /// </summary>
    public void ValidateInputShape(long[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        var o = Options;
        var text = "[" + string.Join(", ", shape) + "]";
        if (shape.Length != 4 || shape[1] != o.InChannels)
            throw new ArgumentException($"VisionTransformer 'patch_embed.proj' expects images [B, {o.InChannels}, {o.ImageSize}, {o.ImageSize}]; got {text}.");
        if (shape[2] % o.PatchSize != 0 || shape[3] % o.PatchSize != 0)
            throw new ArgumentException($"VisionTransformer 'patch_embed.proj': the image size {shape[2]}×{shape[3]} is not divisible by the patch size {o.PatchSize}.");
        var tokens = shape[2] / o.PatchSize * (shape[3] / o.PatchSize) + 1;
        if (tokens != pos_embed.shape[1])
            throw new ArgumentException($"VisionTransformer 'pos_embed' has {pos_embed.shape[1]} tokens ({o.GridSize}×{o.GridSize} patches + class token, images of {o.ImageSize}×{o.ImageSize}); an input of {shape[2]}×{shape[3]} makes {tokens}.");
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        ValidateInputShape(x.shape);
        using var scope = NewDisposeScope();
        var p = patch_embed.forward(x);
        var h = torch.cat(new[] { cls_token.expand(x.shape[0], -1, -1), p }, 1) + pos_embed;
        foreach (var block in blocks) h = block.forward(h);
        return head.forward(norm.forward(h).select(1, 0)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The shape of the synthetic benchmark's ViT (<c>models/synthetic-vit.safetensors</c>, zoo name
    /// <c>vit-synthetic-patch8-64</c>): patch 8 on 64² images (8×8 patches + class token = 65 tokens), width 64, 4 blocks,
    /// 4 heads (head width 16), MLP ratio 2 (hidden 128).
    /// </summary>
    /// <param name="numClasses">Number of classes (the committed model: 6).</param>
    /// <param name="imageSize">Image side, a multiple of 8 (the committed model: 64).</param>
    public static VisionTransformerOptions SyntheticPatch8Options(int numClasses = 6, int imageSize = 64) => new()
    {
        ImageSize = imageSize, PatchSize = 8, EmbedDim = 64, Depth = 4, NumHeads = 4, MlpRatio = 2, NumClasses = numClasses,
    };

    /// <summary>ViT-Ti/16 at 224 px (timm <c>vit_tiny_patch16_224</c>: width 192, 12 blocks, 3 heads).</summary>
    public static VisionTransformer TinyPatch16(int numClasses = 1000) => new(new() { EmbedDim = 192, Depth = 12, NumHeads = 3, NumClasses = numClasses });

    /// <summary>ViT-S/16 at 224 px (timm <c>vit_small_patch16_224</c>: width 384, 12 blocks, 6 heads).</summary>
    public static VisionTransformer SmallPatch16(int numClasses = 1000) => new(new() { EmbedDim = 384, Depth = 12, NumHeads = 6, NumClasses = numClasses });

    /// <summary>ViT-B/16 at 224 px (timm <c>vit_base_patch16_224</c>: width 768, 12 blocks, 12 heads).</summary>
    public static VisionTransformer BasePatch16(int numClasses = 1000) => new(new() { EmbedDim = 768, Depth = 12, NumHeads = 12, NumClasses = numClasses });
}
