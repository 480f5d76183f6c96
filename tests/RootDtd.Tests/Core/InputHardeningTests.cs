using FluentAssertions;
using RootDtd.Rules;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;
using C = RootDtd.Composites.Composites;

namespace RootDtd.Tests.Core;

/// <summary>Odd parameters and bounds are refused with a message that says what is wrong, or stabilised: never silent NaN.</summary>
public sealed class InputHardeningTests
{
    private static Sequential SmallCnn()
    {
        torch.manual_seed(6);
        var net = nn.Sequential(("conv", nn.Conv2d(3, 4, 3, padding: 1)), ("relu", nn.ReLU()), ("flatten", nn.Flatten()), ("fc", nn.Linear(4 * 6 * 6, 3)));
        net.to(float64).eval();
        return net;
    }

    [Theory]
    [InlineData(double.NaN, "InputLow contains NaN")]
    [InlineData(double.NegativeInfinity, "InputLow contains ±∞")]
    public void Non_finite_input_bounds_are_refused_by_name(double value, string message)
    {
        using var scope = torch.NewDisposeScope();
        using var model = SmallCnn();
        var low = torch.full(new long[] { 3 }, value, float64);
        var high = torch.full(new long[] { 3 }, 2.0, float64);
        using var explainer = new Explainer(model, C.EpsilonGammaBox(), new ExplainerOptions { InputLow = low, InputHigh = high });
        FluentActions.Invoking(() => explainer.Explain(torch.randn(2, 3, 6, 6, float64))).Should().Throw<ArgumentException>().WithMessage($"*{message}*");
    }

    [Fact]
    public void ZBox_with_infinite_or_NaN_bounds_is_refused()
    {
        FluentActions.Invoking(() => new ZBoxRule(double.NegativeInfinity, 1)).Should().Throw<ArgumentException>().WithMessage("*low bound contains ±∞*");
        FluentActions.Invoking(() => new ZBoxRule(0, double.NaN)).Should().Throw<ArgumentException>().WithMessage("*high bound contains NaN*");
    }

    [Fact]
    public void AlphaBeta_with_NaN_is_refused()
    {
        FluentActions.Invoking(() => new AlphaBetaRule(double.NaN, 1)).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => new AlphaBetaRule(double.PositiveInfinity, double.PositiveInfinity)).Should().Throw<ArgumentException>();
        FluentActions.Invoking(() => new Stabilizer(double.NaN)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*finite number*");
    }

    [Fact]
    public void Epsilon_zero_on_dead_units_gives_finite_relevance()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(9);
        using var model = nn.Sequential(("fc1", nn.Linear(4, 5)), ("relu", nn.ReLU()), ("fc2", nn.Linear(5, 2)));
        model.to(float64).eval();
        using (torch.no_grad())
        {
            // Units 0 and 1 of fc1 are dead: zero weights and bias, so z = 0 exactly.
            var w = model.state_dict()["fc1.weight"];
            w[0].zero_();
            w[1].zero_();
            model.state_dict()["fc1.bias"][..2].zero_();
        }
        using var explainer = new Explainer(model, C.Epsilon(0.0));
        using var e = explainer.Explain(torch.randn(3, 4, float64));
        torch.isfinite(e.InputRelevance).all().item<bool>().Should().BeTrue("0/0 of dead units must be dropped, not NaN");
        e.Conservation.NonFiniteSamples.Should().BeEmpty();
    }

    [Fact]
    public void ZBox_after_BatchNorm_says_the_bounds_do_not_reach_the_first_conv()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(10);
        using var model = nn.Sequential(("bn", nn.BatchNorm2d(3)), ("conv", nn.Conv2d(3, 4, 3, padding: 1)), ("relu", nn.ReLU()), ("flatten", nn.Flatten()), ("fc", nn.Linear(4 * 6 * 6, 3)));
        model.to(float64).eval();
        var low = torch.full(new long[] { 3 }, -2.0, float64);
        var high = torch.full(new long[] { 3 }, 2.0, float64);
        using var explainer = new Explainer(model, C.EpsilonGammaBox(), new ExplainerOptions { InputLow = low, InputHigh = high });
        FluentActions.Invoking(() => explainer.Explain(torch.randn(2, 3, 6, 6, float64))).Should().Throw<ExplanationException>()
            .WithMessage("*InputLow/InputHigh were given*'bn'*do not bound this layer's input*");
    }

    [Fact]
    public void Root_inference_in_half_precision_is_refused()
    {
        using var scope = torch.NewDisposeScope();
        using var model = SmallCnn();
        model.to(float16);
        using var explainer = new Explainer(model, RootDtd.Composites.RootComposites.Root());
        FluentActions.Invoking(() => explainer.Explain(torch.randn(2, 3, 6, 6, float64).to(float16))).Should().Throw<ArgumentException>()
            .WithMessage("*Root inference needs float32 or float64*");
    }

    [Fact]
    public void A_shape_error_inside_the_graph_names_the_module()
    {
        using var scope = torch.NewDisposeScope();
        using var model = nn.Sequential(("fc1", nn.Linear(4, 384)), ("relu", nn.ReLU()), ("head", nn.Linear(300, 2)));
        model.to(float64).eval();
        using var explainer = new Explainer(model, C.EpsilonPlusFlat());
        FluentActions.Invoking(() => explainer.Explain(torch.randn(2, 4, float64))).Should().Throw<ExplanationException>()
            .WithMessage("'head': Dense(300→2) received an input of shape [2, 384]*");
    }
}
