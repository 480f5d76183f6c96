using FluentAssertions;
using RootDtd.Attribution;
using RootDtd.Composites;
using RootDtd.Models;
using RootDtd.Tests.Core;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Attribution;

/// <summary>
/// Grad-CAM on a ViT: the patch tokens of the last block's <c>norm1</c> (class token dropped) reshaped to the patch grid,
/// checked against the definition computed with autograd outside the relevance graph.
/// </summary>
public class VitGradCamTests
{
    private static double[] Values(Tensor t) => t.to(float64).contiguous().data<double>().ToArray();

    /// <summary>
    /// Grad-CAM by its definition, independent of the relevance graph: the ViT's own modules up to the last block's
    /// input, A = norm1 of it as a leaf, the rest of the last block, the final norm and the head by hand; α_d = mean over
    /// the patch tokens of ∂y/∂A_d; cam[t] = ReLU(Σ_d α_d A[1 + t, d]) written cell by cell (patch t = row·w + column),
    /// upsampled bilinearly (corners not aligned).
    /// </summary>
    private static Tensor GradCamByDefinition(VisionTransformer vit, Tensor x, long[] targets, bool plusPlus = false)
    {
        var o = vit.Options;
        var grid = o.GridSize;
        var b = x.shape[0];
        Tensor a, g;
        using (torch.enable_grad())
        {
            var h = torch.cat(new[] { vit.ClassToken.expand(b, -1, -1), vit.PatchEmbedding.forward(x) }, 1) + vit.PositionEmbedding;
            var blocks = vit.Blocks;
            for (var i = 0; i < blocks.Count - 1; i++) h = blocks[i].forward(h);
            var last = blocks[^1].named_children().ToDictionary(c => c.name, c => (nn.Module<Tensor, Tensor>)c.module);
            a = last["norm1"].forward(h).detach().requires_grad_(true);
            var mid = h + last["attn"].forward(a);
            var outTokens = mid + last["mlp"].forward(last["norm2"].forward(mid));
            var logits = vit.Head.forward(vit.Norm.forward(outTokens).select(1, 0));
            var score = logits.gather(1, torch.tensor(targets).view(b, 1)).sum();
            g = torch.autograd.grad(new[] { score }, new[] { a })[0];
        }
        var cam = torch.zeros(new long[] { b, 1, grid, grid }, float64);
        var patches = grid * grid;
        var gp = g.narrow(1, 1, patches);
        var ap = a.detach().narrow(1, 1, patches);
        Tensor alpha; // [B, D]
        if (!plusPlus)
        {
            alpha = gp.mean(new long[] { 1 });
        }
        else
        {
            var g2 = gp.pow(2);
            var den = 2 * g2 + ap.sum(new long[] { 1 }, keepdim: true) * g2 * gp;
            var coef = torch.where(den.ne(0), g2 / torch.where(den.ne(0), den, torch.ones_like(den)), torch.zeros_like(den));
            alpha = (coef * torch.nn.functional.relu(gp)).sum(new long[] { 1 });
        }
        for (var s = 0; s < b; s++)
        {
            for (var t = 0; t < patches; t++)
            {
                var value = Math.Max(0, (alpha[s] * ap[s, t]).sum().item<double>());
                cam[s, 0, t / grid, t % grid] = value;
            }
        }
        return torch.nn.functional.interpolate(cam, new[] { x.shape[2], x.shape[3] }, mode: InterpolationMode.Bilinear, align_corners: false).squeeze(1);
    }

    [Theory]
    [InlineData("gradcam", false)]
    [InlineData("gradcam-plus-plus", true)]
    public void GradCamOnAVitIsItsDefinitionAtTheLastBlocksNorm1PatchTokens(string method, bool plusPlus)
    {
        using var scope = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: false, seed: 21, depth: 2);
        torch.manual_seed(3);
        var x = torch.randn(new long[] { 2, 3, 16, 16 }, float64);
        var targets = new long[] { 1, 3 };
        using var explainer = new Explainer(vit, MethodCatalog.Parse(method));
        GradCam.DefaultLayer(explainer.Graph).Name.Should().Be("blocks.1.norm1");
        using var e = explainer.Explain(x, targets);
        var expected = GradCamByDefinition(vit, x, targets, plusPlus);
        e.Heatmap.shape.Should().Equal(2, 16, 16);
        expected.abs().max().item<double>().Should().BeGreaterThan(0, "the test must not compare two empty maps");
        Values(e.Heatmap).Should().Equal(Values(expected), (p, q) => Math.Abs(p - q) <= 1e-12 * Math.Max(1, Math.Abs(q)));
        e.InputRelevance.shape.Should().Equal(2, 3, 16, 16);
    }

    [Theory]
    [InlineData("gradcam")]
    [InlineData("gradcam-plus-plus")]
    [InlineData("gradcam:layer=blocks.0")]
    public void ABatchGivesEachSamplesMapAloneOnAVit(string spec)
    {
        using var scope = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: false, seed: 22, depth: 2);
        torch.manual_seed(4);
        var x = torch.randn(new long[] { 3, 3, 16, 16 }, float64);
        var targets = new long[] { 0, 4, 2 };
        using var explainer = new Explainer(vit, MethodCatalog.Parse(spec));
        using var all = explainer.Explain(x, targets);
        Values(all.Heatmap).Should().OnlyContain(v => double.IsFinite(v) && v >= 0);
        all.Heatmap.abs().max().item<double>().Should().BeGreaterThan(0);
        for (var i = 0; i < 3; i++)
        {
            using var one = explainer.Explain(x.narrow(0, i, 1), new[] { targets[i] });
            TestNets.RelativeDifference(all.InputRelevance.narrow(0, i, 1), one.InputRelevance).Should().BeLessThan(1e-9, $"sample {i} of {spec}");
        }
    }

    [Fact]
    public void TheLastBlocksOutputAndNonTokenLayersAreRefusedByName()
    {
        using var vit = TestNets.SmallVit(biasFree: false, seed: 23, depth: 2);
        using var x = torch.randn(new long[] { 1, 3, 16, 16 }, float64);
        // after the last block only the class token reaches the logit: its patch tokens have zero gradient
        var lastOutput = () => new Explainer(vit, MethodCatalog.Parse("gradcam:layer=blocks.1")).Explain(x);
        lastOutput.Should().Throw<ExplanationException>().WithMessage("*patch tokens of 'blocks.1'*class token*'blocks.1.norm1'*");
        var head = () => new Explainer(vit, MethodCatalog.Parse("gradcam:layer=head")).Explain(x);
        head.Should().Throw<ArgumentException>().WithMessage("*'head'*[1, 5]*token layer*");
        var unknown = () => new Explainer(vit, MethodCatalog.Parse("gradcam:layer=blocks.9.norm1")).Explain(x);
        unknown.Should().Throw<ArgumentException>().WithMessage("*no module 'blocks.9.norm1'*");
    }
}
