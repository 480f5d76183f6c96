using FluentAssertions;
using RootDtd.Attribution;
using RootDtd.Composites;
using RootDtd.Tests.Core;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Attribution;

/// <summary>Hand-worked cases of Grad-CAM(++), SmoothGrad, Integrated Gradients and occlusion on tiny nets.</summary>
public class AttributionMethodTests
{
    private static Sequential LinearModel(long seed = 11)
    {
        torch.manual_seed(seed);
        var net = nn.Sequential(("flatten", nn.Flatten()), ("fc", nn.Linear(2 * 4 * 4, 3)));
        net.to(float64);
        net.eval();
        return net;
    }

    private static double[] Values(Tensor t) => t.to(float64).contiguous().data<double>().ToArray();

    [Fact]
    public void IntegratedGradientsOnALinearModelIsTheGradientTimesTheInputMinusTheBaseline()
    {
        using var scope = torch.NewDisposeScope();
        using var model = LinearModel();
        torch.manual_seed(1);
        var x = torch.randn(new long[] { 2, 2, 4, 4 }, float64);
        var baseline = torch.randn(new long[] { 2, 4, 4 }, float64);
        var w = ((Linear)model[1]).weight!.detach();
        var targets = new long[] { 2, 0 };
        foreach (var (composite, b) in new[] { (AttributionComposites.IntegratedGradients(steps: 3), torch.zeros_like(x)), (AttributionComposites.IntegratedGradients(baseline, steps: 1), baseline.expand(x.shape)) })
        {
            using var explainer = new Explainer(model, composite, new ExplainerOptions { CollectDiagnostics = true });
            using var e = explainer.Explain(x, targets);
            for (var i = 0; i < 2; i++)
            {
                var expected = w[targets[i]].view(2, 4, 4) * (x[i] - b[i]);
                Values(e.InputRelevance[i]).Should().Equal(Values(expected), (p, q) => Math.Abs(p - q) < 1e-12);
                // completeness is exact on a linear model: Σ attr = f(x) − f(baseline)
                var fx = e.Logits[i, targets[i]].item<double>();
                using (torch.no_grad())
                {
                    var fb = model.forward(b[i].unsqueeze(0))[0, targets[i]].item<double>();
                    e.Conservation.StartRelevance[i].Should().BeApproximately(fx - fb, 1e-12);
                }
                e.Conservation.InputSum[i].Should().BeApproximately(e.Conservation.StartRelevance[i], 1e-12);
            }
            var d = e.Diagnostics.Should().ContainSingle(u => u.Rule == "integrated-gradients").Subject;
            d.Values["completeness_error"].Should().OnlyContain(v => Math.Abs(v) < 1e-12);
        }
    }

    [Fact]
    public void IntegratedGradientsOnAReluNetIsNearlyComplete()
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.CnnWithBatchNorm();
        torch.manual_seed(2);
        var x = torch.randn(new long[] { 3, 3, 8, 8 }, float64);
        using var explainer = new Explainer(model, MethodCatalog.Parse("integrated-gradients:steps=256"));
        using var e = explainer.Explain(x);
        for (var i = 0; i < 3; i++)
            (e.Conservation.InputSum[i] - e.Conservation.StartRelevance[i]).Should().BeLessThan(2e-2 * Math.Max(1, Math.Abs(e.Conservation.StartRelevance[i])));
    }

    [Fact]
    public void TheBlurredBaselineIsANormalisedGaussianBlur()
    {
        using var scope = torch.NewDisposeScope();
        var constant = torch.full(new long[] { 1, 2, 5, 7 }, 3.5, float64);
        Values(IntegratedGradients.GaussianBlur(constant, 1.5)).Should().OnlyContain(v => Math.Abs(v - 3.5) < 1e-12, "a blur of a constant image is that image");
        var impulse = torch.zeros(new long[] { 1, 1, 15, 15 }, float64);
        impulse[0, 0, 7, 7] = torch.tensor(1.0, float64);
        var blurred = IntegratedGradients.GaussianBlur(impulse, 1.0);
        blurred.sum().item<double>().Should().BeApproximately(1, 1e-12);
        // the separable kernel: value at offset (1, 0) / value at (0, 0) = exp(−1/2)
        (blurred[0, 0, 8, 7].item<double>() / blurred[0, 0, 7, 7].item<double>()).Should().BeApproximately(Math.Exp(-0.5), 1e-12);
    }

    private static Sequential OnePixelModel(int row, int column)
    {
        var net = nn.Sequential(("flatten", nn.Flatten()), ("fc", nn.Linear(2 * 6 * 6, 2)));
        using (torch.no_grad())
        {
            var fc = (Linear)net[1];
            fc.weight!.zero_();
            fc.bias!.zero_();
            fc.weight[0, row * 6 + column] = torch.tensor(1f); // class 0 reads channel 0 at (row, column)
        }
        net.eval();
        return net;
    }

    [Fact]
    public void OcclusionOnAModelThatReadsOnePixelFindsThatPixel()
    {
        using var scope = torch.NewDisposeScope();
        using var model = OnePixelModel(2, 4);
        torch.manual_seed(3);
        var x = torch.rand(1, 2, 6, 6) + 0.5f;
        using (var e = new Explainer(model, MethodCatalog.Parse("occlusion:window=1")).Explain(x, new long[] { 0 }))
        {
            var expected = torch.zeros(6, 6);
            expected[2, 4] = x[0, 0, 2, 4];
            Values(e.Heatmap[0]).Should().Equal(Values(expected), (p, q) => Math.Abs(p - q) < 1e-6);
        }
        using (var e = new Explainer(model, MethodCatalog.Parse("occlusion:window=3,stride=1")).Explain(x, new long[] { 0 }))
        {
            var heat = e.Heatmap[0];
            // the maximum is at the pixel (windows near it that all contain it tie with it)
            heat.max().item<float>().Should().BeApproximately(heat[2, 4].item<float>(), 1e-6f);
            // every window covering (2, 4) contains it: the mean drop there is the pixel's value
            heat[2, 4].item<float>().Should().BeApproximately(x[0, 0, 2, 4].item<float>(), 1e-6f);
            // (0, 0) is only covered by the window at (0, 0), which misses (2, 4)
            heat[0, 0].item<float>().Should().Be(0);
        }
    }

    [Fact]
    public void OcclusionCoversTheBorderWhenTheStrideDoesNotReachIt()
    {
        new Occlusion(4, 3).Positions(10).Should().Equal(0, 3, 6);
        new Occlusion(4, 4).Positions(10).Should().Equal(0, 4, 6);
        new Occlusion(8).Positions(5).Should().Equal(0);
    }

    private static Sequential OneActiveChannelNet()
    {
        torch.manual_seed(4);
        var net = nn.Sequential(("conv", nn.Conv2d(2, 4, 3, stride: 2, padding: 1)), ("relu", nn.ReLU()), ("pool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten()), ("fc", nn.Linear(4, 2)));
        using (torch.no_grad())
        {
            var conv = (Conv2d)net[0];
            conv.weight![TensorIndex.Slice(1, 4)].zero_();
            conv.bias![TensorIndex.Slice(1, 4)].zero_();
            conv.bias[0] = torch.tensor(0.3f);
            var fc = (Linear)net[4];
            fc.weight![1, 0] = torch.tensor(2f);
        }
        net.to(float64);
        net.eval();
        return net;
    }

    [Fact]
    public void GradCamOnANetWithOneActiveChannelIsThatChannelsUpsampledMap()
    {
        using var scope = torch.NewDisposeScope();
        using var model = OneActiveChannelNet();
        torch.manual_seed(5);
        var x = torch.randn(new long[] { 2, 2, 8, 8 }, float64);
        Tensor a0;
        using (torch.no_grad()) a0 = ((nn.Module<Tensor, Tensor>)model[1]).forward(((nn.Module<Tensor, Tensor>)model[0]).forward(x))[TensorIndex.Colon, TensorIndex.Slice(0, 1)];
        a0.shape.Should().Equal(2, 1, 4, 4);
        // y = Σ_k w_k mean(A_k) + b: ∂y/∂A_0 = w_0 / 16 everywhere → α_0 = 2/16
        var expected = torch.nn.functional.interpolate(a0 * (2.0 / 16), new long[] { 8, 8 }, mode: InterpolationMode.Bilinear, align_corners: false).squeeze(1);
        using var e = new Explainer(model, MethodCatalog.Parse("gradcam:layer=relu")).Explain(x, new long[] { 1, 1 });
        Values(e.Heatmap).Should().Equal(Values(expected), (p, q) => Math.Abs(p - q) < 1e-12);
        e.InputRelevance.shape.Should().Equal(2, 2, 8, 8);

        // Grad-CAM++ with a constant gradient g = 1/8: a = g²/(2g² + ΣA·g³) = 1/(2 + ΣA/8), α = Σ_ij a·g = 16·a/8
        using var pp = new Explainer(model, MethodCatalog.Parse("gradcam-plus-plus:layer=relu")).Explain(x, new long[] { 1, 1 });
        var sumA = a0.sum(new long[] { 1, 2, 3 });
        var alpha = (2.0 / (2 + sumA / 8)).view(2, 1, 1, 1);
        var expectedPp = torch.nn.functional.interpolate(a0 * alpha, new long[] { 8, 8 }, mode: InterpolationMode.Bilinear, align_corners: false).squeeze(1);
        Values(pp.Heatmap).Should().Equal(Values(expectedPp), (p, q) => Math.Abs(p - q) < 1e-12);
    }

    [Fact]
    public void GradCamDefaultsToLayer4OnAResNetAndToTheLastConvolutionsReluOnAVgg()
    {
        using var resnet = TestNets.SmallResNet();
        using (var explainer = new Explainer(resnet, AttributionComposites.GradCam()))
            GradCam.DefaultLayer(explainer.Graph).Name.Should().Be("layer4");
        using var vgg = new RootDtd.Models.Vgg(new[] { 4, 0, 6, 6 }, false, new[] { 8 }, 3, pooledSize: 1, dropout: 0);
        using (var explainer = new Explainer(vgg, AttributionComposites.GradCam()))
            GradCam.DefaultLayer(explainer.Graph).Name.Should().Be("features.6");
        using var x = torch.randn(1, 3, 8, 8);
        var bad = () => new Explainer(vgg, MethodCatalog.Parse("gradcam:layer=nope")).Explain(x);
        bad.Should().Throw<ArgumentException>().WithMessage("*no module 'nope'*features.6*");
        var dense = () => new Explainer(vgg, MethodCatalog.Parse("gradcam:layer=classifier.0")).Explain(x);
        dense.Should().Throw<ArgumentException>().WithMessage("*'classifier.0'*feature map*");
    }

    [Fact]
    public void SmoothGradOfTheGradientOfALinearModelIsTheWeightRow()
    {
        using var scope = torch.NewDisposeScope();
        using var model = LinearModel();
        torch.manual_seed(6);
        var x = torch.randn(new long[] { 2, 2, 4, 4 }, float64);
        var w = ((Linear)model[1]).weight!.detach();
        using var e = new Explainer(model, MethodCatalog.Parse("smoothgrad:n=5,noise=0.3")).Explain(x, new long[] { 1, 2 });
        Values(e.InputRelevance[0]).Should().Equal(Values(w[1].view(2, 4, 4)), (p, q) => Math.Abs(p - q) < 1e-12);
        Values(e.InputRelevance[1]).Should().Equal(Values(w[2].view(2, 4, 4)), (p, q) => Math.Abs(p - q) < 1e-12);
    }

    [Fact]
    public void SmoothGradWithoutNoiseIsItsBaseAndItsNoiseIsSeeded()
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.CnnWithBatchNorm();
        torch.manual_seed(7);
        var x = torch.randn(new long[] { 2, 3, 8, 8 }, float64);
        Tensor Heat(string spec)
        {
            using var e = new Explainer(model, MethodCatalog.Parse(spec)).Explain(x, new long[] { 0, 3 });
            return e.InputRelevance.clone();
        }
        TestNets.RelativeDifference(Heat("smoothgrad:base=epsilon-plus-flat,n=1,noise=0"), Heat("epsilon-plus-flat")).Should().BeLessThan(1e-12);
        TestNets.RelativeDifference(Heat("smoothgrad:base=gradcam,n=2,noise=0"), Heat("gradcam")).Should().BeLessThan(1e-12);
        TestNets.RelativeDifference(Heat("smoothgrad:n=4,seed=3"), Heat("smoothgrad:n=4,seed=3")).Should().Be(0);
        TestNets.RelativeDifference(Heat("smoothgrad:n=4,seed=3"), Heat("smoothgrad:n=4,seed=4")).Should().BeGreaterThan(1e-3);
        // the mean of n noisy gradients, by hand
        var manual = torch.zeros_like(x);
        using (var g = new Explainer(model, MethodCatalog.Parse("gradient")))
        {
            var range = (x.reshape(2, -1).amax(1) - x.reshape(2, -1).amin(1)).view(2, 1, 1, 1);
            for (var k = 0; k < 3; k++)
            {
                using var gen = new torch.Generator((ulong)(9 + k), torch.CPU);
                var noise = torch.randn(new long[] { 1, 3, 8, 8 }, float64, generator: gen);
                using var e = g.Explain(x + 0.2 * range * noise, new long[] { 0, 3 });
                manual += e.InputRelevance / 3;
            }
        }
        TestNets.RelativeDifference(Heat("smoothgrad:n=3,noise=0.2,seed=9"), manual).Should().BeLessThan(1e-12);
    }

    [Theory]
    [InlineData("gradcam")]
    [InlineData("gradcam-plus-plus")]
    [InlineData("smoothgrad:n=3")]
    [InlineData("smoothgrad:base=epsilon-plus-flat,n=2")]
    [InlineData("integrated-gradients:steps=5")]
    [InlineData("integrated-gradients:steps=4,baseline=blurred,blur=2")]
    [InlineData("occlusion:window=6,stride=4")]
    public void ABatchGivesEachSamplesMapAlone(string spec)
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.SmallResNet();
        torch.manual_seed(8);
        var x = torch.randn(new long[] { 3, 3, 16, 16 }, float64);
        var targets = new long[] { 1, 4, 0 };
        using var explainer = new Explainer(model, MethodCatalog.Parse(spec));
        using var all = explainer.Explain(x, targets);
        for (var i = 0; i < 3; i++)
        {
            using var one = explainer.Explain(x.narrow(0, i, 1), new[] { targets[i] });
            TestNets.RelativeDifference(all.InputRelevance.narrow(0, i, 1), one.InputRelevance).Should().BeLessThan(1e-9, $"sample {i} of {spec}");
            all.Conservation.StartRelevance[i].Should().BeApproximately(one.Conservation.StartRelevance[0], 1e-9);
        }
        Values(all.Heatmap).Should().OnlyContain(v => double.IsFinite(v));
    }

    [Theory]
    [InlineData("smoothgrad:n=0", "n ≥ 1")]
    [InlineData("smoothgrad:n=2.5", "whole number")]
    [InlineData("smoothgrad:base=nope", "Unknown method 'nope'")]
    [InlineData("integrated-gradients:baseline=mean", "unknown baseline 'mean'")]
    [InlineData("integrated-gradients:steps=0", "steps ≥ 1")]
    [InlineData("occlusion:window=0", "window must be ≥ 1")]
    [InlineData("gradcam:size=3", "no parameter 'size'*layer")]
    public void BadParametersAreRejectedWithTheirName(string spec, string message)
    {
        var act = () => MethodCatalog.Parse(spec);
        act.Should().Throw<ArgumentException>().WithMessage($"*{message}*");
    }

    [Fact]
    public void SmoothGradOverAnyCompositeKeepsTheBasesRules()
    {
        var c = MethodCatalog.Parse("smoothgrad:base=epsilon-plus-flat,n=4,noise=0.2");
        c.Name.Should().Be("smoothgrad(epsilon-plus-flat)");
        c.Procedure.Should().BeOfType<SmoothGrad>().Which.Samples.Should().Be(4);
        using var model = TestNets.CnnWithBatchNorm();
        using var explainer = new Explainer(model, c);
        explainer.RuleAssignment.First(r => r.Node == "conv1").Rule.Should().Be("Flat");
        MethodCatalog.Parse("smoothgrad").Name.Should().Be("smoothgrad");
    }
}
