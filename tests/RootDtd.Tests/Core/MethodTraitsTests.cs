using FluentAssertions;
using RootDtd.Composites;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

public sealed class MethodTraitsTests
{
    [Fact]
    public void Every_catalog_method_says_whether_it_conserves()
    {
        // methods that other tests register at run time ("test-…") are applications' methods: Other is right for them
        foreach (var method in MethodCatalog.All.Where(m => !m.Name.StartsWith("test-", StringComparison.Ordinal)))
            MethodTraits.Of(method.Name).Family.Should().NotBe(MethodFamily.Other,
                $"'{method.Name}' needs a family and a conservation expectation in MethodTraits.Of (src/RootDtd/Composites/MethodFamily.cs)");
    }

    [Fact]
    public void Families_and_expectations_follow_the_rules()
    {
        MethodTraits.Of("root").Should().Be(new MethodTraits(MethodFamily.RootInference, ConservationExpectation.Conserves));
        MethodTraits.Of("root-upper-half:fraction=0.25").Family.Should().Be(MethodFamily.RootInference);
        // chefer-root is a token map (Chefer's rollout of attention relevances), not a relevance sum
        MethodTraits.Of("chefer-root:steps=5").Should().Be(new MethodTraits(MethodFamily.TokenMap, ConservationExpectation.NotExpected));
        MethodTraits.Of(MethodCatalog.Parse("chefer-root")).Family.Should().Be(MethodFamily.TokenMap);
        MethodTraits.Of("root-published").Should().Be(new MethodTraits(MethodFamily.PublishedRootInference, ConservationExpectation.NotExpected));
        MethodTraits.Of("epsilon-plus-flat").Conservation.Should().Be(ConservationExpectation.Approximately);
        // flat's relevance sent to inactive units is dropped at pooling, w²'s denominator holds the bias²: approximately
        MethodTraits.Of("flat").Conservation.Should().Be(ConservationExpectation.Approximately);
        MethodTraits.Of("wsquare").Conservation.Should().Be(ConservationExpectation.Approximately);
        MethodTraits.Of("root").MayAbsorbAt(RootDtd.Graph.NodeKind.LinearUnit).Should().BeTrue("a unit that cannot respond loses its relevance");
        MethodTraits.Of("root").MayAbsorbAt(RootDtd.Graph.NodeKind.AvgPool).Should().BeFalse();
        MethodTraits.Of("epsilon").MayAbsorbAt(RootDtd.Graph.NodeKind.AvgPool).Should().BeTrue();
        MethodTraits.Of("gradient").ConservationTolerance.Should().Be(double.PositiveInfinity);
        MethodTraits.Of("gradient-x-input").Should().Be(new MethodTraits(MethodFamily.Gradient, ConservationExpectation.NotExpected));
        MethodTraits.Of("my-own-method").Should().Be(new MethodTraits(MethodFamily.Other, ConservationExpectation.NotExpected));
        // a composite that starts from 1 at the target is a gradient method, whatever its name
        MethodTraits.Of(new Composite("custom") { StartRelevance = StartRelevance.OneHot }).Family.Should().Be(MethodFamily.Gradient);
    }

    [Fact]
    public void Root_conserves_on_a_cnn_graph_and_only_approximately_on_a_transformer_graph()
    {
        using var cnn = TestNets.CnnWithBatchNorm();
        using var vit = TestNets.SmallVit(false);
        using var onCnn = new Explainer(cnn, MethodCatalog.Parse("root:steps=2"));
        using var onVit = new Explainer(vit, MethodCatalog.Parse("root:steps=2"));
        MethodTraits.Of(onCnn.Composite).On(onCnn.Graph).Conservation.Should().Be(ConservationExpectation.Conserves);
        MethodTraits.Of(onVit.Composite).On(onVit.Graph).Conservation.Should().Be(ConservationExpectation.Approximately,
            "LayerNorm, attention and the class token/position embedding absorb relevance (root: relative error 1…10 on a small ViT)");
        MethodTraits.Of("epsilon").On(onVit.Graph).Should().Be(MethodTraits.Of("epsilon"));
    }

    [Fact]
    public void Lost_conservation_is_judged_against_the_expectation()
    {
        var root = MethodTraits.Of("root");
        root.LostConservation(1e-3).Should().BeFalse();
        root.LostConservation(0.6).Should().BeTrue();
        root.LostConservation(double.NaN).Should().BeTrue("NaN is never conservation");
        var epsilon = MethodTraits.Of("epsilon");
        epsilon.LostConservation(20).Should().BeFalse("bias relevance over a logit near 0 gives large relative errors");
        epsilon.LostConservation(1e4).Should().BeTrue();
        MethodTraits.Of("gradient").LostConservation(1e16).Should().BeFalse("gradients make no claim");
        MethodTraits.Of("root-published").LostConservation(double.PositiveInfinity).Should().BeFalse();
    }

    [Fact]
    public void Root_conserves_on_a_bias_free_net_within_its_warning_threshold()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var net = nn.Sequential(("0", nn.Conv2d(3, 6, 3, bias: false)), ("1", nn.ReLU()), ("2", nn.Flatten()), ("3", nn.Linear(6 * 6 * 6, 4, hasBias: false)));
        net.eval();
        var x = rand(2, 3, 8, 8);
        using var explainer = new Explainer(net, MethodCatalog.Parse("root:steps=5"), new ExplainerOptions { InputLow = zeros(1), InputHigh = ones(1) });
        using var e = explainer.Explain(x);
        var traits = MethodTraits.Of(e.Method);
        for (var i = 0; i < 2; i++)
        {
            var relative = Math.Abs(e.Conservation.InputSum[i] - e.Conservation.StartRelevance[i]) / Math.Abs(e.Conservation.StartRelevance[i]);
            traits.LostConservation(relative).Should().BeFalse($"sample {i}: relative error {relative}");
        }
    }
}
