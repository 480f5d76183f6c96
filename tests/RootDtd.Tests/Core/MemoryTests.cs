using FluentAssertions;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using C = RootDtd.Composites.Composites;

namespace RootDtd.Tests.Core;

/// <summary>Repeated explanations do not leak tensors: the thread's live tensor count returns to the same value.</summary>
public class MemoryTests
{
    [Theory]
    [InlineData("epsilon-plus-flat")]
    [InlineData("epsilon-gamma-box")]
    [InlineData("gradient")]
    public void RepeatedExplainCallsKeepTheLiveTensorCountStable(string method)
    {
        using var model = TestNets.SmallResNet(ScalarType.Float32);
        using var x = torch.randn(2, 3, 32, 32);
        using var low = torch.tensor(-4f);
        using var high = torch.tensor(4f);
        using var explainer = new Explainer(model, RootDtd.Composites.MethodCatalog.Parse(method),
            new ExplainerOptions { InputLow = low, InputHigh = high, RecordLayers = new[] { "layer1", "fc" } });
        // warm-up: parameter caches of the units are filled on the first call
        for (var i = 0; i < 2; i++) explainer.Explain(x).Dispose();
        LiveTensorCounts.AfterRepeatedExplanations(explainer, x, 20, 2, 32, 32).ShouldNotDrift();
    }

    [Fact]
    public void AnUndisposedExplanationIsTheOnlyThingThatKeepsTensors()
    {
        using var model = TestNets.CnnWithBatchNorm(ScalarType.Float32);
        using var x = torch.randn(2, 3, 8, 8);
        using var explainer = new Explainer(model, C.EpsilonPlusFlat());
        explainer.Explain(x).Dispose();
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var e = explainer.Explain(x);
        var held = DisposeScopeManager.Statistics.ThreadTotalLiveCount - before;
        held.Should().BeInRange(1, 8, "input, relevance, heatmap, logits");
        e.Dispose();
        DisposeScopeManager.Statistics.ThreadTotalLiveCount.Should().Be(before);
    }
}
