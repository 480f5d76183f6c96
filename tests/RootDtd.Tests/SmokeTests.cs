using FluentAssertions;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests;

public class SmokeTests
{
    [Fact]
    public void TorchSharpLoadsAndComputesAnInputGradient()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(1);
        var net = nn.Sequential(nn.Conv2d(3, 4, 3, padding: 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2));
        var x = torch.randn(1, 3, 8, 8).requires_grad_(true);
        var g = torch.autograd.grad(new[] { net.call(x)[0, 1] }, new[] { x })[0];
        g.shape.Should().Equal(1, 3, 8, 8);
        g.abs().sum().item<float>().Should().BeGreaterThan(0);
    }
}
