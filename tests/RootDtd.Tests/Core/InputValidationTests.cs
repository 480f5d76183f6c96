using FluentAssertions;
using RootDtd.Graph;
using RootDtd.Rules;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;
using C = RootDtd.Composites.Composites;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Tests.Core;

/// <summary>
/// Bad input gives a clear exception that names what is wrong, before any work is done: the model keeps its modes,
/// no tensors leak, and the same explainer works on the next good input. (A model on another device than the input
/// cannot be provoked on a CPU-only host; that path is the device comparison at the top of Explainer.Explain.)
/// </summary>
public class InputValidationTests
{
    private sealed class TimesTwoRelu : nn.Module<Tensor, Tensor>
    {
        private readonly Linear lin;

        public TimesTwoRelu() : base("TimesTwoRelu")
        {
            lin = nn.Linear(4, 4);
            RegisterComponents();
        }

        public override Tensor forward(Tensor input) => F.relu(lin.forward(input)) * 2;
    }

    private sealed class NoAdapter : nn.Module<Tensor, Tensor>
    {
        public NoAdapter() : base("NoAdapter") { }

        public override Tensor forward(Tensor input) => input.alias();
    }

    private sealed class RnnHead : nn.Module<Tensor, Tensor>
    {
        private readonly LSTM rnn;

        public RnnHead() : base("RnnHead")
        {
            rnn = nn.LSTM(4, 4);
            RegisterComponents();
        }

        public override Tensor forward(Tensor input) => rnn.call(input).Item1;
    }

    private static void AssertStillUsable(Explainer explainer, Tensor good, long liveBefore)
    {
        using (var e = explainer.Explain(good)) e.InputRelevance.shape.Should().Equal(good.shape);
        DisposeScopeManager.Statistics.ThreadTotalLiveCount.Should().BeLessThanOrEqualTo(liveBefore, "a failed call must not leave tensors behind");
    }

    private static (Sequential Model, Explainer Explainer, Tensor Good) Cnn()
    {
        var model = TestNets.CnnWithBatchNorm();
        return (model, new Explainer(model, C.EpsilonPlusFlat()), torch.randn(2, 3, 8, 8, float64).DetachFromDisposeScope());
    }

    public static IEnumerable<object[]> BadCnnInputs() => new[]
    {
        new object[] { "rank 3", new long[] { 3, 8, 8 }, "*conv1*[B, 3, H, W]*[3, 8, 8]*" },
        new object[] { "rank 1", new long[] { 8 }, "*batched*" },
        new object[] { "rank 5", new long[] { 1, 1, 3, 8, 8 }, "*conv1*[B, 3, H, W]*" },
        new object[] { "channels", new long[] { 2, 4, 8, 8 }, "*conv1*[B, 3, H, W]*[2, 4, 8, 8]*" },
        new object[] { "empty batch", new long[] { 0, 3, 8, 8 }, "*empty*" },
    };

    [Theory]
    [MemberData(nameof(BadCnnInputs))]
    public void WrongShapesAreRejectedWithTheExpectedShape(string what, long[] shape, string message)
    {
        using var scope = torch.NewDisposeScope();
        var (model, explainer, good) = Cnn();
        using var _m = model;
        using var _e = explainer;
        using var _g = good;
        explainer.Explain(good).Dispose(); // fills the units' parameter caches
        var live = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var bad = torch.randn(shape, float64);
        var act = () => explainer.Explain(bad);
        act.Should().Throw<ArgumentException>(what).WithMessage(message);
        AssertStillUsable(explainer, good, live + 1);
    }

    [Fact]
    public void TooSmallImagesFailWithTheLayerName()
    {
        using var scope = torch.NewDisposeScope();
        var (model, explainer, good) = Cnn();
        using var _m = model;
        using var _e = explainer;
        using var _g = good;
        // 1×1 images cannot go through the 2×2 max pool
        var act = () => explainer.Explain(torch.randn(1, 3, 1, 1, float64));
        act.Should().Throw<ExplanationException>().WithMessage("*pool1*");
        AssertStillUsable(explainer, good, long.MaxValue);
    }

    [Fact]
    public void WrongFeatureCountOfAnMlpIsRejected()
    {
        using var scope = torch.NewDisposeScope();
        using var model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3));
        using var explainer = new Explainer(model, C.EpsilonPlusFlat());
        var act = () => explainer.Explain(torch.randn(2, 7));
        act.Should().Throw<ArgumentException>().WithMessage("*'0' expects input [B, 5]*[2, 7]*");
        // behind a Flatten the unit's own check reports it
        using var flat = nn.Sequential(nn.Flatten(), nn.Linear(12, 3));
        using var flatExplainer = new Explainer(flat, C.EpsilonPlusFlat());
        var act2 = () => flatExplainer.Explain(torch.randn(2, 3, 2, 3));
        act2.Should().Throw<ExplanationException>().WithMessage("*last dimension must be 12*");
        using var ok = flatExplainer.Explain(torch.randn(2, 3, 2, 2));
    }

    [Theory]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    [InlineData(double.NegativeInfinity)]
    public void NonFiniteInputIsRejected(double value)
    {
        using var scope = torch.NewDisposeScope();
        var (model, explainer, good) = Cnn();
        using var _m = model;
        using var _e = explainer;
        using var _g = good;
        var bad = torch.randn(2, 3, 8, 8, float64);
        bad[1, 2, 3, 4] = torch.tensor(value, float64);
        var act = () => explainer.Explain(bad);
        act.Should().Throw<ArgumentException>().WithMessage("*NaN or infinite*");
        AssertStillUsable(explainer, good, long.MaxValue);
    }

    [Fact]
    public void TargetsOutOfRangeOrOfTheWrongCountAreRejected()
    {
        using var scope = torch.NewDisposeScope();
        var (model, explainer, good) = Cnn();
        using var _m = model;
        using var _e = explainer;
        using var _g = good;
        explainer.Invoking(x => x.Explain(good, new long[] { 0, 5 })).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Target 1 is 5*5 classes*");
        explainer.Invoking(x => x.Explain(good, new long[] { -1, 0 })).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Target 0 is -1*");
        explainer.Invoking(x => x.Explain(good, new long[] { 0 })).Should().Throw<ArgumentException>().WithMessage("*1 targets*batch of 2*");
        AssertStillUsable(explainer, good, long.MaxValue);
    }

    [Fact]
    public void DtypeMismatchAndNonFloatInputsAreRejected()
    {
        using var scope = torch.NewDisposeScope();
        var (model, explainer, good) = Cnn();
        using var _m = model;
        using var _e = explainer;
        using var _g = good;
        explainer.Invoking(x => x.Explain(torch.randn(2, 3, 8, 8, float32))).Should().Throw<ArgumentException>().WithMessage("*Float32*Float64*");
        explainer.Invoking(x => x.Explain(torch.ones(2, 3, 8, 8, int64))).Should().Throw<ArgumentException>().WithMessage("*floating-point*Int64*");
        AssertStillUsable(explainer, good, long.MaxValue);
    }

    [Fact]
    public void DisposedInputIsRejected()
    {
        using var scope = torch.NewDisposeScope();
        var (model, explainer, good) = Cnn();
        using var _m = model;
        using var _e = explainer;
        using var _g = good;
        var x = torch.randn(2, 3, 8, 8, float64);
        x.Dispose();
        explainer.Invoking(e => e.Explain(x)).Should().Throw<ArgumentException>().WithMessage("*disposed*");
        explainer.Invoking(e => e.Explain(null!)).Should().Throw<ArgumentNullException>();
        AssertStillUsable(explainer, good, long.MaxValue);
    }

    [Fact]
    public void UnsupportedModulesNameTheirPathAndTheAdapterRegistry()
    {
        using var scope = torch.NewDisposeScope();
        using var lstm = nn.Sequential(("embed", nn.Linear(4, 4)), ("head", new RnnHead()));
        // an adapter for the wrapper that walks its children reaches the LSTM, which has none
        var adapters = ModuleAdapters.CreateBuiltIn().Register<RnnHead>((b, path, m, x) => b.AddChildrenInOrder(path, m, x));
        var act = () => new Explainer(lstm, C.EpsilonPlusFlat(), new ExplainerOptions { Adapters = adapters });
        act.Should().Throw<NotSupportedException>().WithMessage("*'head.rnn'*LSTM*ModuleAdapters.Default.Register<LSTM>*");
        // a wrapper with children but no adapter: the probe forward (on the first Explain) finds no chain of known modules
        using var wrapped = new Explainer(lstm, C.EpsilonPlusFlat());
        var act1 = () => wrapped.Explain(torch.randn(2, 3, 4));
        act1.Should().Throw<NotSupportedException>().WithMessage("*'head'*RnnHead*not a chain of known modules*ModuleAdapters.Default.Register<RnnHead>*");
        using var custom = nn.Sequential(("fc", nn.Linear(4, 4)), ("mystery", new NoAdapter()));
        var act2 = () => new Explainer(custom, C.EpsilonPlusFlat());
        act2.Should().Throw<NotSupportedException>().WithMessage("*'mystery'*NoAdapter*ModuleAdapters.Default.Register<NoAdapter>*");
    }

    [Fact]
    public void AnAdapterThatOmitsAFunctionalOperationIsCaughtByTheForwardCheck()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(31);
        using var model = nn.Sequential(("fc", nn.Linear(3, 4)), ("block", new TimesTwoRelu()), ("head", nn.Linear(4, 2)));
        // the adapter describes only the inner Linear: it forgets relu(...) * 2
        var adapters = ModuleAdapters.CreateBuiltIn().Register<TimesTwoRelu>((b, path, m, x) => b.AddChildren(path, m, x, "lin"));
        using var explainer = new Explainer(model, C.EpsilonPlusFlat(), new ExplainerOptions { Adapters = adapters });
        var act = () => explainer.Explain(torch.randn(2, 3) + 3);
        act.Should().Throw<ExplanationException>().WithMessage("*does not reproduce*'block'*ModuleAdapters.Default.Register<T>(...)*");
    }

    [Fact]
    public void ANormRuleOnANonDifferentiableOperationFailsCleanly()
    {
        // a custom node whose forward leaves autograd (here .detach()): autograd.grad would terminate the process
        using var scope = torch.NewDisposeScope();
        using var model = nn.Sequential(("fc", nn.Linear(3, 4)), ("odd", new NoAdapter()), ("head", nn.Linear(4, 2)));
        var adapters = ModuleAdapters.CreateBuiltIn().Register<NoAdapter>((b, path, m, x) =>
            b.Add(new OperationNode(path, NodeKind.Other, x, t => t.detach()) { Module = m }));
        var composite = C.EpsilonPlusFlat().ForKind(NodeKind.Other, new NormRule());
        using var explainer = new Explainer(model, composite, new ExplainerOptions { Adapters = adapters });
        var act = () => explainer.Explain(torch.randn(2, 3));
        act.Should().Throw<ExplanationException>().WithMessage("*'odd'*");
    }

    /// <summary>A custom two-input node whose forward reads only its first input.</summary>
    private sealed class FirstOfTwo(int a, int b) : GraphNode("first-of-two", NodeKind.Other, new[] { a, b })
    {
        public override Tensor Forward(IReadOnlyList<Tensor> inputs) => inputs[0] * 3.0;
    }

    [Fact]
    public void NormAndGradientRulesGiveZeroRelevanceToAnInputTheNodeIgnores()
    {
        // autograd.grad without allow_unused would abort the whole process on the unused second input
        using var scope = torch.NewDisposeScope();
        var node = new FirstOfTwo(0, 1);
        var inputs = new[] { torch.tensor(new[] { 1.0, -2.0, 4.0 }, float64), torch.tensor(new[] { 5.0, 6.0, 7.0 }, float64) };
        var r = torch.tensor(new[] { 0.5, 1.0, -3.0 }, float64);
        foreach (var rule in new Rule[] { new NormRule(new Stabilizer(1e-15)), GradientRule.Instance })
        {
            var first = TestNets.Propagate(rule, node, inputs, r, which: 0);
            var second = TestNets.Propagate(rule, node, inputs, r, which: 1);
            second.Should().Equal(new[] { 0.0, 0.0, 0.0 }, $"{rule} must give the unused input nothing");
            // Norm: x·3·R/(3x) = R; Gradient: 3·R
            var expected = rule is NormRule ? new[] { 0.5, 1.0, -3.0 } : new[] { 1.5, 3.0, -9.0 };
            first.Zip(expected).Should().OnlyContain(p => Math.Abs(p.First - p.Second) < 1e-12, rule.ToString());
        }
    }

    [Fact]
    public void MismatchedInputBoundsAreRejected()
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.CnnWithBatchNorm();
        using var explainer = new Explainer(model, C.EpsilonGammaBox(),
            new ExplainerOptions { InputLow = torch.zeros(5, float64), InputHigh = torch.ones(5, float64) });
        explainer.Invoking(e => e.Explain(torch.randn(2, 3, 8, 8, float64))).Should().Throw<ArgumentException>().WithMessage("*InputLow*[5]*");
        using var swapped = new Explainer(model, C.EpsilonGammaBox(),
            new ExplainerOptions { InputLow = torch.tensor(1.0, float64), InputHigh = torch.tensor(-1.0, float64) });
        swapped.Invoking(e => e.Explain(torch.randn(2, 3, 8, 8, float64))).Should().Throw<ArgumentException>().WithMessage("*InputLow must be ≤ InputHigh*");
        var act = () => new Explainer(model, C.EpsilonGammaBox(), new ExplainerOptions { InputLow = torch.tensor(0.0) });
        act.Should().Throw<ArgumentException>().WithMessage("*both InputLow and InputHigh*");
    }
}
