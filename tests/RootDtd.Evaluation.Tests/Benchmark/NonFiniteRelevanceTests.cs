using FluentAssertions;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Training;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests.Benchmark;

/// <summary>
/// A method whose relevance overflows (root:positive=0 on the trained ViT did) fails with a message that names the
/// images and the node, not with the conservation accumulator's internal "Only finite values can be summed exactly".
/// </summary>
public sealed class NonFiniteRelevanceTests
{
    /// <summary>
    /// Flatten → fc1 (h₀ = x₀ − x₁, h₁ = x₃) → head (every class 10·h₀ − 10·h₁ + 1), float32. For an image with
    /// x₀ = 3·10³⁸, x₁ = 2.7·10³⁸, x₃ = 3·10³⁷ the forward is finite (h = (3·10³⁷, 3·10³⁷), logits 1), the head's ε-rule
    /// sends ±3·10³⁸ to h (finite), and fc1's sends x₀·R₀/h₀ = 3·10³⁹ = +∞ (and −∞) to its inputs: the relevance becomes
    /// non-finite at fc1.
    /// </summary>
    internal static nn.Module<Tensor, Tensor> CraftedModel(int pixels, int classes)
    {
        var fc1 = nn.Linear(pixels, 2);
        var head = nn.Linear(2, classes);
        using (torch.no_grad())
        {
            fc1.weight!.zero_();
            fc1.bias!.zero_();
            fc1.weight[0, 0] = torch.tensor(1f);
            fc1.weight[0, 1] = torch.tensor(-1f);
            fc1.weight[1, 3] = torch.tensor(1f);
            head.weight!.zero_();
            head.weight[.., 0] = torch.tensor(10f);
            head.weight[.., 1] = torch.tensor(-10f);
            head.bias!.fill_(1f);
        }
        var model = nn.Sequential(("flatten", nn.Flatten()), ("fc1", fc1), ("head", head));
        model.eval();
        return model;
    }

    [Fact]
    public void The_failed_row_names_the_images_and_the_node_where_relevance_became_non_finite()
    {
        const int size = 16, count = 4;
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 5, count: count, size: size);
        using (images)
        using (masks)
        using (labels)
        using (var model = CraftedModel(3 * size * size, SyntheticModels.ClassCount))
        {
            using (torch.no_grad())
            {
                // image 2 (the first of the second batch) overflows; 0, 1 and 3 stay ordinary
                images[2, 0, 0, 0] = torch.tensor(3e38f);
                images[2, 0, 0, 1] = torch.tensor(2.7e38f);
                images[2, 0, 0, 3] = torch.tensor(3e37f);
            }
            var options = new BenchmarkOptions
            {
                ModelName = "crafted",
                Methods = new[] { BenchmarkMethod.Of("epsilon") },
                Protocols = BenchmarkProtocols.Localization,
                BatchSize = 2,
                GallerySamples = 0,
            };
            var result = new BenchmarkRunner(model, options).Run(images, masks, labels);
            var error = result.Methods.Should().ContainSingle().Which.Error;
            error.Should().NotBeNull();
            error.Should().Contain("non-finite").And.Contain("sample 2 at 'fc1'").And.Contain("'epsilon'");
            error.Should().NotContain("summed exactly").And.NotContain("sample 0").And.NotContain("sample 3");
        }
    }
}
