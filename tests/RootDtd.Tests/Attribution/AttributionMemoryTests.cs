using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Tests.Core;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Attribution;

/// <summary>500 explanations per attribution method leave the live tensor count where it was.</summary>
public class AttributionMemoryTests
{
    [Theory]
    [InlineData("gradcam")]
    [InlineData("gradcam-plus-plus")]
    [InlineData("smoothgrad:n=3")]
    [InlineData("smoothgrad:base=epsilon-plus-flat,n=2")]
    [InlineData("integrated-gradients:steps=4,baseline=blurred,blur=1")]
    [InlineData("occlusion:window=4")]
    public void FiveHundredExplanationsKeepTheLiveTensorCountFlat(string spec)
    {
        using var model = TestNets.CnnWithBatchNorm(ScalarType.Float32);
        using var x = torch.randn(25, 3, 8, 8);
        using var low = torch.tensor(-4f);
        using var high = torch.tensor(4f);
        using var explainer = new Explainer(model, MethodCatalog.Parse(spec), new ExplainerOptions { InputLow = low, InputHigh = high, CollectDiagnostics = true });
        for (var i = 0; i < 2; i++) explainer.Explain(x).Dispose();
        // 20 batches of 25 = 500 explanations
        LiveTensorCounts.AfterRepeatedExplanations(explainer, x, 20, 25, 8, 8).ShouldNotDrift();
    }
}
