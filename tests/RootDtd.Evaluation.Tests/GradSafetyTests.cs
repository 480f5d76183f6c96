using FluentAssertions;
using RootDtd.Imaging;
using RootDtd.Evaluation.Metrics;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Tests;

public class GradSafetyTests
{
    [Fact]
    public void ModelThatIgnoresItsInputIsRejectedNotFatal()
    {
        using var p = torch.ones(1, 3).requires_grad_(true);
        Func<Tensor, Tensor> model = x => p.expand(x.shape[0], 3) * 1.0;
        using var x = torch.zeros(2, 3, 4, 4);
        using var y = torch.tensor(new long[] { 0, 0 });
        FluentActions.Invoking(() => RelevanceGuidedPgd.Attack(model, (xx, t) => torch.rand(2, 4, 4), x, y,
                new PgdOptions { Normalization = ImageNormalization.Identity, TopK = 2 }))
            .Should().Throw<InvalidOperationException>().WithMessage("*does not depend on the input*");
    }

    [Fact]
    public void ModelRunUnderNoGradIsRejected()
    {
        using var w = torch.randn(3, 48);
        Func<Tensor, Tensor> model = x => { using var _ = torch.no_grad(); return x.reshape(x.shape[0], -1).matmul(w.t()); };
        using var x = torch.zeros(2, 3, 4, 4);
        using var y = torch.tensor(new long[] { 0, 0 });
        // With zero input all logits tie, argmax = 0 = label, so the samples are attacked.
        FluentActions.Invoking(() => RelevanceGuidedPgd.Attack(model, (xx, t) => torch.rand(2, 4, 4), x, y,
                new PgdOptions { Normalization = ImageNormalization.Identity, TopK = 2 }))
            .Should().Throw<InvalidOperationException>().WithMessage("*differentiable*");
    }
}
