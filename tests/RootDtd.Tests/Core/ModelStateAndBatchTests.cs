using FluentAssertions;
using RootDtd.Composites;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using C = RootDtd.Composites.Composites;

namespace RootDtd.Tests.Core;

/// <summary>The explainer leaves the model exactly as it found it, uses eval semantics, and treats samples independently.</summary>
public class ModelStateAndBatchTests
{
    private static Dictionary<string, Tensor> Snapshot(nn.Module model) =>
        model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());

    [Fact]
    public void ParametersBuffersAndModesAreUnchangedAndEvalSemanticsAreUsed()
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.CnnWithBatchNorm();
        model.train();
        // mixed modes: one submodule already in eval while the rest trains
        var named = model.named_modules().ToDictionary(m => m.name, m => m.module);
        named["bn2"].eval();
        var modes = model.named_modules().Select(m => (m.name, m.module.training)).ToList();
        modes.Should().Contain(("bn1", true)).And.Contain(("bn2", false)).And.Contain(("drop", true));
        var before = Snapshot(model);
        var gradsBefore = model.parameters().Select(p => p.grad is null).ToList();

        torch.manual_seed(21);
        var x = torch.randn(4, 3, 8, 8, float64);
        using var explainer = new Explainer(model, C.EpsilonPlusFlat());
        using var e1 = explainer.Explain(x);
        using var e2 = explainer.Explain(x);

        foreach (var (key, value) in model.state_dict())
            value.allclose(before[key], 0, 0).Should().BeTrue($"{key} must be unchanged (BatchNorm statistics, num_batches_tracked, weights)");
        model.named_modules().Select(m => (m.name, m.module.training)).Should().Equal(modes);
        model.parameters().Select(p => p.grad is null).Should().Equal(gradsBefore, "no gradients are accumulated into the model");

        // eval semantics: the logits are the eval-mode forward (no dropout noise, running statistics), deterministic
        e1.InputRelevance.allclose(e2.InputRelevance, 0, 0).Should().BeTrue("dropout must be off");
        model.eval();
        Tensor expected;
        using (torch.no_grad()) expected = model.call(x);
        TestNets.RelativeDifference(e1.Logits, expected).Should().BeLessThan(1e-12);
    }

    [Fact]
    public void ModesAreRestoredWhenTheExplanationFails()
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.CnnWithBatchNorm();
        model.train();
        var before = Snapshot(model);
        using var explainer = new Explainer(model, C.EpsilonPlusFlat());
        var act = () => explainer.Explain(torch.randn(2, 3, 8, 8, float64), new long[] { 0, 99 });
        act.Should().Throw<ArgumentOutOfRangeException>();
        model.named_modules().Should().OnlyContain(m => m.module.training);
        foreach (var (key, value) in model.state_dict()) value.allclose(before[key], 0, 0).Should().BeTrue(key);
    }

    public static IEnumerable<object[]> CompositeNames() =>
        new[] { "epsilon-plus-flat", "epsilon-gamma-box", "epsilon-alpha2-beta1", "combination", "zplus", "gradient-x-input" }.Select(n => new object[] { n });

    [Theory]
    [MemberData(nameof(CompositeNames))]
    public void BatchEqualsEachSampleAloneOnACnnWithBatchNorm(string method)
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.CnnWithBatchNorm();
        torch.manual_seed(22);
        AssertBatchEqualsSingles(model, MethodCatalog.Parse(method), torch.randn(4, 3, 8, 8, float64));
    }

    [Theory]
    [MemberData(nameof(CompositeNames))]
    public void BatchEqualsEachSampleAloneOnASmallResNet(string method)
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.SmallResNet();
        torch.manual_seed(23);
        AssertBatchEqualsSingles(model, MethodCatalog.Parse(method), torch.randn(3, 3, 32, 32, float64));
    }

    private static void AssertBatchEqualsSingles(nn.Module model, Composite composite, Tensor x)
    {
        var options = new ExplainerOptions { InputLow = torch.tensor(-4.0, float64), InputHigh = torch.tensor(4.0, float64) };
        using var explainer = new Explainer(model, composite, options);
        var targets = Enumerable.Range(0, (int)x.shape[0]).Select(i => (long)(i * 2 % 5)).ToArray();
        using var batch = explainer.Explain(x, targets);
        for (var i = 0; i < x.shape[0]; i++)
        {
            using var single = explainer.Explain(x[i..(i + 1)], new[] { targets[i] });
            var diff = (batch.InputRelevance[i] - single.InputRelevance[0]).abs().max().item<double>();
            var scale = Math.Max(1.0, single.InputRelevance.abs().max().item<double>());
            diff.Should().BeLessThanOrEqualTo(1e-10 * scale, $"{composite.Name}, sample {i}");
            batch.Conservation.InputSum[i].Should().BeApproximately(single.Conservation.InputSum[0], 1e-10 * Math.Max(1, Math.Abs(single.Conservation.InputSum[0])));
        }
    }
}
