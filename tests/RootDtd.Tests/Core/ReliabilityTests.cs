using FluentAssertions;
using RootDtd.Composites;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using C = RootDtd.Composites.Composites;

namespace RootDtd.Tests.Core;

/// <summary>
/// No silent zeros or hidden NaN, the caller's model and input are never modified, and the forward-check diagnosis
/// names the right module and the real cause.
/// </summary>
public sealed class ReliabilityTests
{
    private static Dictionary<string, Tensor> Snapshot(nn.Module model) =>
        model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());

    [Fact]
    public void MaxRelativeError_does_not_skip_a_NaN_sample()
    {
        var report = new ConservationReport(new[] { ("fc", new[] { 1.0, double.NaN, 3.0 }) }, new[] { 1.0, 2.0, 3.0 }, new[] { 1.0, double.NaN, 3.3 });
        double.IsNaN(report.MaxRelativeError).Should().BeTrue();
        report.NonFiniteSamples.Should().Equal(1);
        var clean = new ConservationReport(new[] { ("fc", new[] { 1.0, 2.0 }) }, new[] { 1.0, 2.0 }, new[] { 1.0, 2.2 });
        clean.MaxRelativeError.Should().BeApproximately(0.1, 1e-12);
        clean.NonFiniteSamples.Should().BeEmpty();
    }

    [Fact]
    public void RelativeError_is_per_sample_and_survives_a_zero_start()
    {
        // sample 0: |2.2 − 2| / 2 = 0.1; sample 1: start −4, input −3 → 0.25; sample 2: start 0, input 1e-31 → 0.1 (floor 1e-30)
        var report = new ConservationReport(new[] { ("fc", new[] { 2.0, -4.0, 0.0 }) }, new[] { 2.0, -4.0, 0.0 }, new[] { 2.2, -3.0, 1e-31 });
        report.RelativeError(0).Should().BeApproximately(0.1, 1e-12);
        report.RelativeError(1).Should().BeApproximately(0.25, 1e-12);
        report.RelativeError(2).Should().BeApproximately(0.1, 1e-12);
        report.MaxRelativeError.Should().BeApproximately(0.25, 1e-12);
        var act = () => report.RelativeError(3);
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*sample 3*batch of 3*");
    }

    [Fact]
    public void NonFiniteOrigin_is_the_node_whose_rule_sent_non_finite_relevance()
    {
        // forward order a → b → c; sample 1: c received finite relevance and sent ∞ (absorbed −∞), so b and a are ∞
        var layers = new[] { ("a", new[] { 1.0, double.PositiveInfinity }), ("b", new[] { 1.0, double.PositiveInfinity }), ("c", new[] { 1.0, 2.0 }) };
        var absorbed = new[] { ("a", new[] { 0.0, double.NaN }), ("b", new[] { 0.0, double.NaN }), ("c", new[] { 0.0, double.NegativeInfinity }) };
        var report = new ConservationReport(layers, new[] { 1.0, 2.0 }, new[] { 1.0, double.PositiveInfinity }, absorbed);
        report.NonFiniteOrigin(0).Should().BeNull();
        report.NonFiniteOrigin(1).Should().Be("c");
        report.DescribeNonFinite(firstIndex: 10).Should().Contain("sample 11 at 'c'").And.NotContain("sample 10");
        var start = new ConservationReport(layers, new[] { 1.0, double.NaN }, new[] { 1.0, double.NaN }, absorbed);
        start.NonFiniteOrigin(1).Should().Be("the start relevance");
        new ConservationReport(new[] { ("fc", new[] { 1.0 }) }, new[] { 1.0 }, new[] { 1.0 }).DescribeNonFinite().Should().BeNull();
        var act = () => report.NonFiniteOrigin(2);
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*sample 2*batch of 2*");
    }

    [Fact]
    public void An_overflowing_rule_is_named_in_the_conservation_report()
    {
        // float32: fc1 makes h₀ = x₀ − x₁ and h₁ = x₃, the head 10·h₀ − 10·h₁ + 1; for x = (3e38, 2.7e38, 0, 3e37) the
        // forward is finite (h = (3e37, 3e37), logit 1), the head sends ±3e38 to h (finite), and fc1's ε-rule sends
        // x₀·R₀/h₀ = 3e39 = ∞ to its inputs
        using var scope = torch.NewDisposeScope();
        var fc1 = nn.Linear(4, 2);
        var head = nn.Linear(2, 1);
        using (torch.no_grad())
        {
            fc1.weight!.copy_(torch.tensor(new float[,] { { 1, -1, 0, 0 }, { 0, 0, 0, 1 } }));
            fc1.bias!.zero_();
            head.weight!.copy_(torch.tensor(new float[,] { { 10, -10 } }));
            head.bias!.fill_(1f);
        }
        using var model = nn.Sequential(("fc1", fc1), ("head", head));
        model.eval();
        var x = torch.tensor(new float[,] { { 0.5f, -0.25f, 1f, 0.75f }, { 3e38f, 2.7e38f, 0f, 3e37f } });
        using var explainer = new Explainer(model, C.Epsilon());
        using var e = explainer.Explain(x, new long[] { 0, 0 });
        torch.isfinite(e.Logits).all().item<bool>().Should().BeTrue();
        e.Conservation.NonFiniteSamples.Should().Equal(1);
        e.Conservation.NonFiniteOrigin(1).Should().Be("fc1");
        e.Conservation.NonFiniteOrigin(0).Should().BeNull();
        e.Conservation.DescribeNonFinite().Should().Contain("sample 1 at 'fc1'");
    }

    public static IEnumerable<object[]> Modes() => new[] { "inference_mode", "no_grad", "inference-input" }.Select(m => new object[] { m });

    [Theory]
    [MemberData(nameof(Modes))]
    public void Inference_mode_and_no_grad_give_the_same_explanation(string mode)
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.CnnWithBatchNorm();
        torch.manual_seed(4);
        var x = torch.randn(2, 3, 8, 8, float64);
        using var explainer = new Explainer(model, C.EpsilonPlusFlat());
        using var reference = explainer.Explain(x);
        reference.InputRelevance.abs().sum().item<double>().Should().BeGreaterThan(0);

        Explanation e;
        switch (mode)
        {
            case "inference_mode":
                using (torch.inference_mode()) e = explainer.Explain(x);
                break;
            case "no_grad":
                using (torch.no_grad()) e = explainer.Explain(x);
                break;
            default:
                Tensor made;
                using (torch.inference_mode()) made = x * 1.0; // an inference tensor, used outside inference mode
                e = explainer.Explain(made);
                break;
        }
        using (e)
            TestNets.RelativeDifference(e.InputRelevance, reference.InputRelevance).Should().BeLessThan(1e-12, "never zeros or a different map");
    }

    [Fact]
    public void A_first_layer_in_place_relu_does_not_modify_the_callers_input()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(8);
        using var model = nn.Sequential(("relu", nn.ReLU(inplace: true)), ("fc", nn.Linear(6, 3)), ("leaky", nn.LeakyReLU(0.1, inplace: true)), ("fc2", nn.Linear(3, 2)));
        model.to(float64).eval();
        var x = torch.randn(4, 6, float64);
        var before = x.clone();
        using var explainer = new Explainer(model, C.EpsilonPlusFlat());
        using var e = explainer.Explain(x);
        x.allclose(before, 0, 0).Should().BeTrue("the input must be left as it was");
        e.Input.allclose(before, 0, 0).Should().BeTrue();
    }

    [Fact]
    public void A_stale_graph_on_a_zoo_resnet_names_the_changed_module_not_the_first_merged_one()
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.SmallResNet();
        torch.manual_seed(2);
        var x = torch.randn(2, 3, 16, 16, float64);
        using var explainer = new Explainer(model, C.EpsilonPlusFlat()); // merges BatchNorm into the convolutions
        using (torch.no_grad()) model.state_dict()["fc.weight"].mul_(2);
        var error = FluentActions.Invoking(() => explainer.Explain(x)).Should().Throw<ExplanationException>().Which;
        error.Message.Should().Contain("first difference at 'fc'").And.Contain("call Refresh()")
            .And.NotContain("empty handle").And.NotContain("'conv1'").And.NotContain("adapter");
        explainer.Refresh();
        using var e = explainer.Explain(x);
    }

    [Fact]
    public void An_adapter_mismatch_on_a_zoo_resnet_with_merged_batchnorm_names_the_module()
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.SmallResNet();
        torch.manual_seed(3);
        var x = torch.randn(2, 3, 64, 64, float64); // layer4's output is 2×2, so average ≠ max
        // A wrong adapter: the average pooling described as max pooling.
        var adapters = RootDtd.Graph.ModuleAdapters.CreateBuiltIn().Register<TorchSharp.Modules.AdaptiveAvgPool2d>((b, path, m, input) =>
            b.Add(new RootDtd.Graph.OperationNode(path, RootDtd.Graph.NodeKind.AvgPool, input, t => nn.functional.adaptive_max_pool2d(t, new long[] { 1, 1 })) { Module = m }));
        using var explainer = new Explainer(model, C.EpsilonPlusFlat(), new ExplainerOptions { Adapters = adapters });
        var error = FluentActions.Invoking(() => explainer.Explain(x)).Should().Throw<ExplanationException>().Which;
        error.Message.Should().Contain("First difference at module 'avgpool'").And.NotContain("empty handle").And.NotContain("Refresh");
    }

    [Theory]
    [InlineData("fc1.weight", "parameter 'fc1.weight'")]
    [InlineData("bn1.running_var", "buffer 'bn1.running_var'")]
    public void Non_finite_weights_are_named_as_the_cause(string key, string expected)
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.CnnWithBatchNorm();
        using (torch.no_grad()) model.state_dict()[key].view(-1)[0] = torch.tensor(double.NaN, float64);
        using var explainer = new Explainer(model, C.EpsilonPlusFlat());
        var error = FluentActions.Invoking(() => explainer.Explain(torch.randn(2, 3, 8, 8, float64))).Should().Throw<ExplanationException>().Which;
        error.Message.Should().Contain(expected).And.Contain("NaN or infinite").And.NotContain("adapter");
    }

    [Fact]
    public void Negative_batchnorm_variance_is_named_as_the_cause()
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.CnnWithBatchNorm();
        using (torch.no_grad()) model.state_dict()["bn2.running_var"].fill_(-4.0);
        using var explainer = new Explainer(model, C.EpsilonPlusFlat());
        FluentActions.Invoking(() => explainer.Explain(torch.randn(2, 3, 8, 8, float64))).Should().Throw<ExplanationException>()
            .WithMessage("*bn2.running_var' (negative variance)*");
    }

    [Fact]
    public void Threads_never_modify_a_training_mode_model_and_get_the_single_thread_result()
    {
        using var scope = torch.NewDisposeScope();
        using var model = TestNets.CnnWithBatchNorm();
        model.train();
        var modes = model.named_modules().Select(m => (m.name, m.module.training)).ToList();
        var before = Snapshot(model);
        torch.manual_seed(12);
        var x = torch.randn(8, 3, 32, 32, float64); // large enough for the calls of different threads to overlap
        Tensor reference;
        using (var single = new Explainer(model, C.EpsilonPlusFlat()))
        using (var e = single.Explain(x))
            reference = e.InputRelevance.clone();

        const int threads = 4, calls = 8;
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        var busy = 0;
        var shared = new Explainer(model, C.EpsilonPlusFlat());
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            using var own = new Explainer(model, C.EpsilonPlusFlat());
            for (int i = 0; i < calls; i++)
            {
                using var ts = torch.NewDisposeScope();
                using (var e = own.Explain(x))
                    if (TestNets.RelativeDifference(e.InputRelevance, reference) > 1e-12) failures.Add($"own explainer, thread {t} call {i}");
                try
                {
                    using var e = shared.Explain(x);
                    if (TestNets.RelativeDifference(e.InputRelevance, reference) > 1e-12) failures.Add($"shared explainer, thread {t} call {i}");
                }
                catch (InvalidOperationException ex) when (ex.Message.Contains("not thread-safe", StringComparison.Ordinal))
                {
                    Interlocked.Increment(ref busy);
                }
            }
        })).ToArray();
        foreach (var w in workers) w.Start();
        foreach (var w in workers) w.Join();
        shared.Dispose();

        failures.Should().BeEmpty();
        foreach (var (key, value) in model.state_dict())
            value.allclose(before[key], 0, 0).Should().BeTrue($"{key} must be unchanged (BatchNorm running statistics)");
        model.named_modules().Select(m => (m.name, m.module.training)).Should().Equal(modes);
    }

    [Fact]
    public void Training_mode_on_deep_nesting_is_not_exponential()
    {
        using var scope = torch.NewDisposeScope();
        // 25 nested Sequentials around Linear-BN-ReLU-Linear; TorchSharp's recursive train()/eval() takes ~2^depth calls.
        nn.Module<Tensor, Tensor> inner = nn.Sequential(("fc", nn.Linear(4, 4)), ("bn", nn.BatchNorm1d(4)), ("relu", nn.ReLU()), ("out", nn.Linear(4, 2)));
        for (int d = 0; d < 25; d++) inner = nn.Sequential(("n", inner));
        using var model = inner;
        model.to(float64);
        model.train();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        using var explainer = new Explainer(model, C.EpsilonPlusFlat());
        using var e = explainer.Explain(torch.randn(3, 4, float64));
        watch.Elapsed.TotalSeconds.Should().BeLessThan(10);
        model.modules().Should().OnlyContain(m => m.training);
    }
}
