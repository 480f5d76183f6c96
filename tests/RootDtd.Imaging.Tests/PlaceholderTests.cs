using FluentAssertions;
using Xunit;

namespace RootDtd.Imaging.Tests;

public class PlaceholderTests
{
    [Fact]
    public void TorchSharpLoads() => TorchSharp.torch.ones(2).sum().item<float>().Should().Be(2f);
}
