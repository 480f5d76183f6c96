using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Models;
using RootDtd.Rules;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

/// <summary>
/// The n-ary core: the linear-map abstraction (Conv1d, Conv3d, Linear on tokens) against hand-worked values, the
/// multi-input engine on products, parameters in the conservation report, and the ViT-wide properties (bias-free
/// conservation, batch = each sample alone, clear errors for bad input).
/// </summary>
public class TransformerCoreTests
{
    private static Tensor T(double[] values, params long[] shape) => torch.tensor(values, dtype: float64).reshape(shape);

    [Fact]
    public void Conv1dEpsilonRuleMatchesTheHandValue()
    {
        // x = [1, 2, 4], kernel [1, 1]: z = [3, 6]; R = [1, 1] → s = [1/3, 1/6]; R_in = [1·1/3, 2·(1/3 + 1/6), 4·1/6]
        using var _ = torch.NewDisposeScope();
        var unit = LinearUnit.Convolution(T(new[] { 1.0, 1.0 }, 1, 1, 2), null, new long[] { 1 }, new long[] { 0 }, new long[] { 1 }, 1);
        unit.Kind.Should().Be(LinearUnitKind.Convolution1d);
        var node = new LinearUnitNode("conv1d", unit, 0);
        var r = TestNets.Propagate(new EpsilonRule(0), node, new[] { T(new[] { 1.0, 2.0, 4.0 }, 1, 1, 3) }, T(new[] { 1.0, 1.0 }, 1, 1, 2));
        r.Should().Equal(new[] { 1.0 / 3, 1.0, 2.0 / 3 }, (a, b) => Math.Abs(a - b) < 1e-15);
    }

    [Fact]
    public void Conv3dEpsilonRuleMatchesTheHandValue()
    {
        // x[d, w] = [[1, 2], [3, 4]] (H = 1), kernel along depth [1, 2]: z[w] = [1 + 6, 2 + 8] = [7, 10]; R = [1, 1]
        using var _ = torch.NewDisposeScope();
        var unit = LinearUnit.Convolution(T(new[] { 1.0, 2.0 }, 1, 1, 2, 1, 1), null, new long[] { 1, 1, 1 }, new long[] { 0, 0, 0 }, new long[] { 1, 1, 1 }, 1);
        unit.Kind.Should().Be(LinearUnitKind.Convolution3d);
        var node = new LinearUnitNode("conv3d", unit, 0);
        var r = TestNets.Propagate(new EpsilonRule(0), node, new[] { T(new[] { 1.0, 2.0, 3.0, 4.0 }, 1, 1, 2, 1, 2) }, T(new[] { 1.0, 1.0 }, 1, 1, 1, 1, 2));
        r.Should().Equal(new[] { 1.0 / 7, 0.2, 6.0 / 7, 0.8 }, (a, b) => Math.Abs(a - b) < 1e-15);
    }

    [Fact]
    public void PatchifyTransposeEqualsConvTranspose()
    {
        // a patch embedding (stride = kernel, no padding) takes its transpose as one matrix product; other geometries
        // keep conv_transpose2d; both give the vector-Jacobian product of the convolution (autograd's, float64)
        using var _ = torch.NewDisposeScope();
        torch.manual_seed(41);
        foreach (var (kernel, stride, padding, size) in new[] { (new long[] { 4, 2 }, new long[] { 4, 2 }, 0L, new long[] { 12, 10 }), (new long[] { 4, 4 }, new long[] { 4, 4 }, 0L, new long[] { 14, 16 }),
                     (new long[] { 3, 3 }, new long[] { 3, 3 }, 1L, new long[] { 9, 9 }), (new long[] { 1, 1 }, new long[] { 1, 1 }, 0L, new long[] { 5, 6 }) })
        {
            var w = torch.randn(new[] { 5L, 3, kernel[0], kernel[1] }, float64);
            var unit = LinearUnit.Convolution(w, null, stride, new[] { padding, padding }, new long[] { 1, 1 }, 1);
            var x = torch.randn(new[] { 2L, 3, size[0], size[1] }, float64).requires_grad_(true);
            var y = unit.Forward(x);
            var g = torch.randn(y.shape, float64);
            var expected = torch.autograd.grad(new[] { y }, new[] { x }, new[] { g })[0];
            var transposed = unit.Transpose(g, x.shape);
            transposed.shape.Should().Equal(x.shape);
            ((transposed - expected).abs().max() / expected.abs().max()).item<double>().Should().BeLessThan(1e-14, $"kernel {kernel[0]}×{kernel[1]}, input {size[0]}×{size[1]}");
            var t32 = unit.Transpose(g.to(float32), w.to(float32), x.shape);
            ((t32.to(float64) - expected).abs().max() / expected.abs().max()).item<double>().Should().BeLessThan(1e-6);
        }
    }

    [Fact]
    public void LinearOnTokensMatchesTheHandValue()
    {
        // W = [[1, 2]], tokens [[1, 1], [1, −2]]: z = [3, −3]; R = [3, 1] → s = [1, −1/3]
        using var _ = torch.NewDisposeScope();
        var node = new LinearUnitNode("fc", LinearUnit.Dense(T(new[] { 1.0, 2.0 }, 1, 2), null), 0);
        var r = TestNets.Propagate(new EpsilonRule(0), node, new[] { T(new[] { 1.0, 1.0, 1.0, -2.0 }, 1, 2, 2) }, T(new[] { 3.0, 1.0 }, 1, 2, 1));
        r.Should().Equal(new[] { 1.0, 2.0, -1.0 / 3, 4.0 / 3 }, (a, b) => Math.Abs(a - b) < 1e-15);
        // the same map through the engine of multi-input nodes
        var p = TestNets.Propagate(new ProportionalRule(new Stabilizer(0)), node, new[] { T(new[] { 1.0, 1.0, 1.0, -2.0 }, 1, 2, 2) }, T(new[] { 3.0, 1.0 }, 1, 2, 1));
        p.Should().Equal(r, (a, b) => Math.Abs(a - b) < 1e-15);
    }

    [Fact]
    public void ABilinearProductNeverDoublesRelevance()
    {
        // a ⊙ b with a = [1, 2], b = [3, −4]: every operand gets half of R (uniform rule); Σ R_a + Σ R_b = Σ R
        using var _ = torch.NewDisposeScope();
        var node = new ProductNode("ab", 1, 2, ProductKind.Elementwise);
        var inputs = new[] { T(new[] { 1.0, 2.0 }, 1, 2), T(new[] { 3.0, -4.0 }, 1, 2) };
        var r = T(new[] { 0.6, -1.0 }, 1, 2);
        var ra = TestNets.Propagate(new ProportionalRule(new Stabilizer(0)), node, inputs, r, which: 0);
        var rb = TestNets.Propagate(new ProportionalRule(new Stabilizer(0)), node, inputs, r, which: 1);
        ra.Should().Equal(new[] { 0.3, -0.5 }, (a, b) => Math.Abs(a - b) < 1e-15);
        rb.Should().Equal(new[] { 0.3, -0.5 }, (a, b) => Math.Abs(a - b) < 1e-15);
        // the gradient-times-input of a bilinear node is 2·z: the Norm rule (right for sums) gives each operand the
        // whole R, doubling the relevance — which is why products have their own rule
        var na = TestNets.Propagate(new NormRule(new Stabilizer(0)), node, inputs, r, which: 0);
        var nb = TestNets.Propagate(new NormRule(new Stabilizer(0)), node, inputs, r, which: 1);
        (na.Sum() + nb.Sum()).Should().BeApproximately(2 * r.sum().item<double>(), 1e-12);

        // matrix products: Σ over both operands equals Σ R (ε = 0), for q·kᵀ and A·v shapes
        torch.manual_seed(1);
        foreach (var kind in new[] { ProductKind.MatMul, ProductKind.MatMulTransposed })
        {
            var m = new ProductNode("mm", 1, 2, kind);
            var a = torch.randn(2, 3, 5, 4, dtype: float64);
            var b = kind == ProductKind.MatMul ? torch.randn(2, 3, 4, 6, dtype: float64) : torch.randn(2, 3, 5, 4, dtype: float64);
            var z = m.Forward(new[] { a, b });
            var rel = torch.randn(z.shape, dtype: float64);
            var sa = TestNets.Propagate(new ProportionalRule(new Stabilizer(0)), m, new[] { a, b }, rel, which: 0).Sum();
            var sb = TestNets.Propagate(new ProportionalRule(new Stabilizer(0)), m, new[] { a, b }, rel, which: 1).Sum();
            (sa + sb).Should().BeApproximately(rel.sum().item<double>(), 1e-10);
            sa.Should().BeApproximately(sb, 1e-10, "the uniform rule gives each operand the same total");
        }
    }

    [Fact]
    public void HeldAttentionGivesTheWholeRelevanceToTheValues()
    {
        using var _ = torch.NewDisposeScope();
        torch.manual_seed(2);
        var m = new ProductNode("attn_v", 1, 2, ProductKind.MatMul);
        var attention = torch.softmax(torch.randn(1, 2, 3, 3, dtype: float64), -1);
        var v = torch.randn(1, 2, 3, 4, dtype: float64);
        var z = m.Forward(new[] { attention, v });
        var rel = torch.randn(z.shape, dtype: float64);
        var rule = new ProportionalRule(new Stabilizer(0), OperandSelection.HoldAttention);
        var context = new RuleContext(m, new[] { attention, v }, z, rel, InputDomain.Free, null, null, new ExplanationRecorder(false, false),
            new[] { NodeKind.Softmax, NodeKind.Rearrange });
        var result = rule.Propagate(context);
        result[0].abs().max().item<double>().Should().Be(0);
        // R(v) = v ⊙ Aᵀ(R / z) by hand
        var expected = v * attention.transpose(-2, -1).matmul(rel / z);
        TestNets.RelativeDifference(result[1], expected).Should().BeLessThan(1e-14);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RearrangementTransposesEqualAutogradExactly(bool float32)
    {
        // patch_embed, q, k, v and merge_heads carry a closed-form transpose that the Gradient rule uses instead of
        // autograd: it must give autograd's values bit for bit (a rearrangement only moves values)
        using var _ = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: false);
        if (float32) vit.to(torch.float32);
        var dtype = float32 ? torch.float32 : float64;
        torch.manual_seed(12);
        var x = torch.rand(2, 3, 16, 16, dtype: dtype) * 2 - 1;
        using var explainer = new Explainer(vit, TransformerComposites.Chefer());
        var graph = explainer.Graph;
        Tensor[] outputs;
        using (torch.no_grad()) outputs = graph.Forward(x);
        var checkedNodes = 0;
        foreach (var node in graph.Nodes.OfType<OperationNode>().Where(n => n.VectorJacobianProduct is not null))
        {
            var input = outputs[node.Inputs[0]];
            var g = torch.randn_like(outputs[node.Index]);
            var closedForm = node.VectorJacobianProduct!(g, input);
            var leaf = input.detach().requires_grad_(true);
            Tensor z;
            using (torch.enable_grad()) z = node.Forward(new[] { leaf });
            var autograd = torch.autograd.grad(new[] { z }, new[] { leaf }, new[] { g })[0];
            closedForm.shape.Should().Equal(input.shape, node.Name);
            (closedForm - autograd).abs().max().to(float64).item<double>().Should().Be(0, $"{node.Name}: the closed-form transpose equals autograd's exactly");
            checkedNodes++;
        }
        // the patch rearrangement, and q, k, v and the merge of both blocks
        checkedNodes.Should().Be(1 + 2 * 4);
    }

    [Fact]
    public void CheferLinearRuleOnTokensEqualsAlpha1Beta0WithoutBias()
    {
        // the fused dense path (one GEMM into the halved output, one GEMM with the stacked halved weights) against the
        // textbook α1β0 without bias: s = R / sd(x⁺W⁺ᵀ + x⁻W⁻ᵀ), R(x) = x⁺ ⊙ W⁺ᵀs + x⁻ ⊙ W⁻ᵀs, sd = safe_divide
        using var _ = torch.NewDisposeScope();
        torch.manual_seed(13);
        var w = torch.randn(6, 4, dtype: float64);
        var b = torch.randn(6, dtype: float64);
        var node = new LinearUnitNode("fc", LinearUnit.Dense(w, b), 0);
        var x = torch.randn(2, 3, 4, dtype: float64);
        x[1, 2] = torch.zeros(4, dtype: float64);            // a token of zeros: z = 0 there, its relevance is dropped (no NaN)
        var relevance = torch.randn(2, 3, 6, dtype: float64);
        var actual = TestNets.Propagate(CheferLinearRule.Instance, node, new[] { x }, relevance);
        var wp = w.clamp(min: 0);
        var wn = w.clamp(max: 0);
        var xp = x.clamp(min: 0);
        var xn = x.clamp(max: 0);
        var z = xp.matmul(wp.t()) + xn.matmul(wn.t());
        var s = (relevance / (z + 1e-9)).masked_fill(z.eq(0), 0);
        var expected = (xp * s.matmul(wp) + xn * s.matmul(wn)).contiguous().data<double>().ToArray();
        actual.Should().Equal(expected, (p, q) => Math.Abs(p - q) <= 1e-12 * Math.Max(1, Math.Abs(q)));
        actual.Skip(5 * 4).Should().OnlyContain(v => v == 0, "the zero token receives nothing");
        actual.Should().OnlyContain(v => double.IsFinite(v));
    }

    [Fact]
    public void BiasFreeVitWithEpsilonZeroConservesTheLogitAtEveryBlockInput()
    {
        using var _ = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: true);
        torch.manual_seed(3);
        var x = torch.rand(3, 3, 16, 16, dtype: float64) * 2 - 1;
        var positions = new[] { "add_pos_embed", "blocks.0", "blocks.1", "norm", "pool" };
        using var explainer = new Explainer(vit, TransformerComposites.ConservativePropagation(0), new ExplainerOptions { RecordLayers = positions });
        using var e = explainer.Explain(x);
        var logit = e.Conservation.StartRelevance;
        foreach (var p in positions)
        {
            var sums = e.LayerRelevance[p].reshape(3, -1).sum(1).data<double>().ToArray();
            for (var b = 0; b < 3; b++) sums[b].Should().BeApproximately(logit[b], 1e-9 * Math.Max(1, Math.Abs(logit[b])), $"at {p}, sample {b}");
        }
        // the class token's share is absorbed by the cls_token parameter node, reported there; pixels get the rest
        var cls = e.Conservation.Absorbed.Single(a => a.Layer == "cls_token").Sums;
        for (var b = 0; b < 3; b++) (e.Conservation.InputSum[b] + cls[b]).Should().BeApproximately(logit[b], 1e-9 * Math.Max(1, Math.Abs(logit[b])));
    }

    [Fact]
    public void ParametersReportTheRelevanceTheyAbsorb()
    {
        using var _ = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: false);
        torch.manual_seed(4);
        var x = torch.rand(2, 3, 16, 16, dtype: float64) * 2 - 1;
        using var explainer = new Explainer(vit, TransformerComposites.ConservativePropagation(0));
        using var e = explainer.Explain(x);
        var report = e.Conservation;
        foreach (var name in new[] { "cls_token", "pos_embed" })
        {
            var absorbed = report.Absorbed.Single(a => a.Layer == name).Sums;
            var received = report.Layers.Single(a => a.Layer == name).Sums;
            absorbed.Should().Equal(received, (a, b) => Math.Abs(a - b) < 1e-12, "a parameter keeps everything it receives");
            absorbed.Should().Contain(v => Math.Abs(v) > 1e-6, "the position embedding and class token take part of the logit");
        }
        // every unit of relevance is either at the input or absorbed by a node (biases, parameters)
        for (var b = 0; b < 2; b++)
        {
            var total = report.InputSum[b] + report.Absorbed.Sum(a => a.Sums[b]);
            total.Should().BeApproximately(report.StartRelevance[b], 1e-9 * Math.Max(1, Math.Abs(report.StartRelevance[b])));
        }
        report.Absorbed.Single(a => a.Layer == "head").Sums.Should().Contain(v => Math.Abs(v) > 1e-9, "the head's bias absorbs relevance");
    }

    public static IEnumerable<object[]> VitMethods() =>
        new[] { "cp-lrp", "cp-lrp:epsilon=0", "attn-lrp", "attn-lrp:epsilon=0", "chefer", "rollout", "raw-attention", "gradient", "gradient-x-input" }.Select(m => new object[] { m });

    [Theory]
    [MemberData(nameof(VitMethods))]
    public void BatchEqualsEachSampleAlone(string method)
    {
        using var _ = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: false);
        torch.manual_seed(5);
        var x = torch.rand(3, 3, 16, 16, dtype: float64) * 2 - 1;
        var targets = new long[] { 1, 4, 2 };
        using var explainer = new Explainer(vit, MethodCatalog.Parse(method));
        using var all = explainer.Explain(x, targets);
        for (var b = 0; b < 3; b++)
        {
            using var one = explainer.Explain(x.narrow(0, b, 1), new[] { targets[b] });
            TestNets.RelativeDifference(one.Heatmap, all.Heatmap.narrow(0, b, 1)).Should().BeLessThan(1e-12, $"{method}, sample {b}");
            if (all.TokenMap is not null) TestNets.RelativeDifference(one.TokenMap!, all.TokenMap.narrow(0, b, 1)).Should().BeLessThan(1e-12);
        }
        all.InputRelevance.shape.Should().Equal(x.shape);
        torch.isfinite(all.InputRelevance).all().item<bool>().Should().BeTrue();
        all.InputRelevance.abs().max().item<double>().Should().BeGreaterThan(0);
    }

    [Fact]
    public void TokenMapsAreUpsampledBilinearlyOntoTheImage()
    {
        using var _ = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: false);
        torch.manual_seed(6);
        var x = torch.rand(2, 3, 16, 16, dtype: float64);
        using var explainer = new Explainer(vit, TransformerComposites.Rollout());
        using var e = explainer.Explain(x);
        e.TokenMap!.shape.Should().Equal(2, 16);
        var expected = torch.nn.functional.interpolate(e.TokenMap.reshape(2, 1, 4, 4), new long[] { 16, 16 }, mode: InterpolationMode.Bilinear, align_corners: false).squeeze(1);
        TestNets.RelativeDifference(e.Heatmap, expected).Should().BeLessThan(1e-14);
        // the rollout rows are probability distributions: the class row over all tokens sums to 1, the patch part to less
        e.TokenMap.sum(1).data<double>().Should().OnlyContain(v => v > 0 && v < 1);
    }

    [Fact]
    public void BadImageSizesNameTheModule()
    {
        using var _ = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: false);
        using var explainer = new Explainer(vit, TransformerComposites.ConservativePropagation());
        var notDivisible = () => explainer.Explain(torch.rand(1, 3, 18, 18, dtype: float64));
        notDivisible.Should().Throw<ArgumentException>().WithMessage("*patch_embed.proj*not divisible by the patch size 4*");
        var wrongSize = () => explainer.Explain(torch.rand(1, 3, 20, 20, dtype: float64));
        wrongSize.Should().Throw<ArgumentException>().WithMessage("*pos_embed*17 tokens*makes 26*");
        var direct = () => vit.forward(torch.rand(1, 3, 20, 20, dtype: float64));
        direct.Should().Throw<ArgumentException>().WithMessage("*pos_embed*");
        var wrongChannels = () => explainer.Explain(torch.rand(1, 1, 16, 16, dtype: float64));
        wrongChannels.Should().Throw<ArgumentException>().WithMessage("*patch_embed.proj*");
    }

    [Fact]
    public void TimmStateDictKeysAndMissingOrUnexpectedKeysAreNamed()
    {
        using var _ = torch.NewDisposeScope();
        using var vit = (VisionTransformer)ModelZoo.Create("vit-test-patch8-32", 10);
        var keys = vit.state_dict().Keys.ToList();
        keys.Should().Contain(new[]
        {
            "patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.0.norm1.bias",
            "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias", "blocks.0.norm2.weight",
            "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias", "blocks.0.mlp.fc2.weight", "blocks.2.mlp.fc2.bias", "norm.weight", "norm.bias", "head.weight", "head.bias",
        });
        keys.Should().HaveCount(4 + 3 * 12 + 4);
        var state = vit.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        state.Remove("blocks.1.attn.qkv.bias");
        state["blocks.1.attn.q_norm.weight"] = torch.ones(16);
        var act = () => ModelWeights.LoadStateDict(vit, state);
        act.Should().Throw<WeightsMismatchException>().WithMessage("*blocks.1.attn.qkv.bias*").WithMessage("*blocks.1.attn.q_norm.weight*");
        foreach (var name in new[] { "vit-tiny-patch16-224", "vit-small-patch16-224", "vit-base-patch16-224" }) ModelZoo.Contains(name).Should().BeTrue();
    }
}
