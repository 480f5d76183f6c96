using System.Diagnostics;
using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Models;
using RootDtd.Rules;
using RootDtd.Rules.RootInference;
using RootDtd.Tests.Core;
using RootDtd.Tests.Golden;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace RootDtd.Tests.RootInference;

/// <summary>
/// Root inference inside Vision Transformers (docs/transformers.md, D7–D10): <c>root</c> and <c>chefer-root</c> against
/// the ViT golden and conservation laws, q/k/v as separate units, zero-relevance units, the second-order Taylor rule at
/// GELU by hand-worked values, batch = each sample alone, monotone losses, flat memory.
/// </summary>
public class VitRootInferenceTests
{
    private readonly ITestOutputHelper _output;

    public VitRootInferenceTests(ITestOutputHelper output) => _output = output;

    [Fact]
    public void CheferRootWithZeroStepsReproducesTheGoldenCheferMap()
    {
        using var scope = torch.NewDisposeScope();
        var tensors = VitGolden.Load(VitGolden.DefaultPath);
        var targets = tensors["target"].data<long>().ToArray();
        foreach (var (dtype, key, tolerance) in new[] { (float64, "map64.chefer", 1e-12), (float32, "map.chefer", 1e-5) })
        {
            using var model = VitGolden.OpenModel(tensors, dtype);
            using var explainer = new Explainer(model, MethodCatalog.Parse("chefer-root:steps=0"));
            using var e = explainer.Explain(tensors["input"].to(dtype), targets);
            var difference = TestNets.RelativeDifference(e.TokenMap!, tensors[key]);
            _output.WriteLine($"chefer-root:steps=0 vs {key} ({dtype}): max |Δ| / max |map| = {difference:e2}");
            difference.Should().BeLessThan(tolerance, $"{key} in {dtype}");
            // and the walk did run the root rule on every Linear (qkv as three units)
            explainer.RuleAssignment.Where(a => a.Node.EndsWith("qkv", StringComparison.Ordinal) || a.Node == "head").Should().OnlyContain(a => a.Rule.StartsWith("RootInference", StringComparison.Ordinal));
            explainer.RuleAssignment.Single(a => a.Node == "patch_embed.proj").Rule.Should().Be("CheferAlpha1Beta0");
        }
    }

    [Fact]
    public void CheferRootWithStepsDiffersFromChefer()
    {
        using var scope = torch.NewDisposeScope();
        var tensors = VitGolden.Load(VitGolden.DefaultPath);
        using var model = VitGolden.OpenModel(tensors, float64);
        using var explainer = new Explainer(model, MethodCatalog.Parse("chefer-root"));
        using var e = explainer.Explain(tensors["input"].to(float64), tensors["target"].data<long>().ToArray());
        var difference = TestNets.RelativeDifference(e.TokenMap!, tensors["map64.chefer"]);
        _output.WriteLine($"chefer-root (20 steps) vs map64.chefer: {difference:e2}");
        difference.Should().BeGreaterThan(1e-6, "20 descent steps change the signals and with them the attention relevances");
        torch.isfinite(e.TokenMap!).all().item<bool>().Should().BeTrue();
    }

    [Fact]
    public void RootWithZeroStepsOnABiasFreeVitConservesAtEveryBlockInput()
    {
        using var scope = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: true);
        torch.manual_seed(3);
        var x = torch.rand(3, 3, 16, 16, dtype: float64) * 2 - 1;
        var positions = new[] { "add_pos_embed", "blocks.0", "blocks.1", "norm", "pool" };
        using var explainer = new Explainer(vit, MethodCatalog.Parse("root:steps=0,epsilon=0"), new ExplainerOptions { RecordLayers = positions });
        using var e = explainer.Explain(x);
        var logit = e.Conservation.StartRelevance;
        var worst = 0.0;
        foreach (var p in positions)
        {
            var sums = e.LayerRelevance[p].reshape(3, -1).sum(1).data<double>().ToArray();
            for (var b = 0; b < 3; b++)
            {
                worst = Math.Max(worst, Math.Abs(sums[b] - logit[b]) / Math.Max(1, Math.Abs(logit[b])));
                sums[b].Should().BeApproximately(logit[b], 1e-9 * Math.Max(1, Math.Abs(logit[b])), $"at {p}, sample {b}");
            }
        }
        _output.WriteLine($"largest relative conservation error at a block input: {worst:e2}");
        var cls = e.Conservation.Absorbed.Single(a => a.Layer == "cls_token").Sums;
        for (var b = 0; b < 3; b++) (e.Conservation.InputSum[b] + cls[b]).Should().BeApproximately(logit[b], 1e-9 * Math.Max(1, Math.Abs(logit[b])));
    }

    [Fact]
    public void RootWithStepsReportsWhatEveryNodeAbsorbs()
    {
        // With steps the positive map cannot produce a negative R_j: the fit drives F_j(S) to exactly 0 there, and
        // normalized redistribution drops that R_j (Σ R_in = Σ_{j: F_j(S) ≠ 0} R_j). Nothing is lost silently: the
        // input relevance plus what every node absorbed is the logit, and only units and the class token absorb more
        // than stabiliser-sized amounts on a bias-free ViT.
        using var scope = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: true);
        torch.manual_seed(4);
        var x = torch.rand(2, 3, 16, 16, dtype: float64) * 2 - 1;
        using var explainer = new Explainer(vit, MethodCatalog.Parse("root"));
        using var e = explainer.Explain(x);
        var report = e.Conservation;
        var units = explainer.Graph.Units.Select(u => u.Name).ToHashSet();
        for (var b = 0; b < 2; b++)
        {
            var start = report.StartRelevance[b];
            (report.InputSum[b] + report.Absorbed.Sum(a => a.Sums[b])).Should().BeApproximately(start, 1e-9 * Math.Max(1, Math.Abs(start)));
            foreach (var (layer, sums) in report.Absorbed.Where(a => !units.Contains(a.Layer) && a.Layer != "cls_token"))
                Math.Abs(sums[b]).Should().BeLessThan(1e-5 * Math.Max(1, Math.Abs(start)), $"{layer} (sample {b}) is no unit and has no bias");
            var dropped = report.Absorbed.Where(a => units.Contains(a.Layer)).Sum(a => a.Sums[b]);
            _output.WriteLine($"sample {b}: logit {start:g6}, dropped by units {dropped:g4}, class token {report.Absorbed.Single(a => a.Layer == "cls_token").Sums[b]:g4}, pixels {report.InputSum[b]:g6}");
        }
    }

    [Fact]
    public void QkvIsThreeUnitsAndZeroRelevanceUnitsAreNotFitted()
    {
        using var scope = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: false);
        torch.manual_seed(5);
        var x = torch.rand(2, 3, 16, 16, dtype: float64) * 2 - 1;
        using var low = torch.tensor(-1.0, dtype: float64);
        using var high = torch.tensor(1.0, dtype: float64);
        var options = new ExplainerOptions { CollectDiagnostics = true, InputLow = low, InputHigh = high };

        using var root = new Explainer(vit, MethodCatalog.Parse("root"), options);
        using var e = root.Explain(x);
        var units = e.Diagnostics.Select(d => d.Unit).ToList();
        units.Should().Contain(new[] { "blocks.0.attn.qkv/q", "blocks.0.attn.qkv/k", "blocks.0.attn.qkv/v", "blocks.1.attn.proj", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2", "head", "patch_embed.proj" });
        units.Should().NotContain("blocks.0.attn.qkv");
        foreach (var d in e.Diagnostics)
        {
            var qk = d.Unit.EndsWith("/q", StringComparison.Ordinal) || d.Unit.EndsWith("/k", StringComparison.Ordinal);
            // D8 holds the attention: q and k receive nothing and are not fitted
            d.Values["fitted"].Should().OnlyContain(v => v == (qk ? 0 : 1), d.Unit);
            if (qk) d.Values["accepted_steps"].Should().OnlyContain(v => v == 0);
            else d.Values["accepted_steps"].Should().Contain(v => v > 0, d.Unit);
            _output.WriteLine($"{d.Unit}: Σ in {string.Join(", ", d.Values["relevance_in"])} / Σ out {string.Join(", ", d.Values["relevance_out"])}; residual {string.Join(", ", d.Values["relative_residual"])}");
            d.Domain.Should().Be(d.Unit == "patch_embed.proj" ? "PixelBox" : "Free", d.Unit);
        }

        // with S = x and ε = 0 (F_j(x) > 0 almost surely) every unit passes on exactly what it receives
        using var exact = new Explainer(vit, MethodCatalog.Parse("root:steps=0,epsilon=0"), options);
        using var z = exact.Explain(x);
        foreach (var d in z.Diagnostics)
            d.Values["relevance_in"].Zip(d.Values["relevance_out"]).Should().OnlyContain(p => Math.Abs(p.First - p.Second) <= 1e-10 * Math.Max(1, Math.Abs(p.Second)), d.Unit);

        using var cheferRoot = new Explainer(vit, MethodCatalog.Parse("chefer-root"), options);
        using var c = cheferRoot.Explain(x);
        var qkv = c.Diagnostics.Where(d => d.Unit.Contains("qkv/", StringComparison.Ordinal)).ToList();
        qkv.Select(d => d.Unit).Should().Equal("blocks.1.attn.qkv/q", "blocks.1.attn.qkv/k", "blocks.1.attn.qkv/v", "blocks.0.attn.qkv/q", "blocks.0.attn.qkv/k", "blocks.0.attn.qkv/v");
        qkv.Should().OnlyContain(d => d.Values["fitted"].All(v => v == 1), "chefer's uniform matmul rule sends relevance to q and k");
        c.Diagnostics.Should().NotContain(d => d.Unit == "patch_embed.proj", "the patch conv keeps α1β0 in chefer-root");
    }

    [Fact]
    public void QkvSolvedAsThreeUnitsEqualsThreeSeparateLinearLayers()
    {
        // the root rule on qkv = the rule on three Linear units holding the q, k and v rows, relevances summed
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(6);
        var weight = torch.randn(12, 4, dtype: float64);
        var x = torch.randn(2, 5, 4, dtype: float64);
        var r = torch.randn(2, 5, 12, dtype: float64);
        var options = new RootInferenceOptions { Steps = 7 };
        var node = new LinearUnitNode("qkv", LinearUnit.Dense(weight, null), 0) { OutputParts = LinearUnitNode.QkvParts };
        var recorder = new ExplanationRecorder(true, false);
        var packed = new RootInferenceRule(options).Propagate(new RuleContext(node, new[] { x }, node.Forward(new[] { x }), r, InputDomain.Free, null, null, recorder))[0];
        var sum = torch.zeros_like(x);
        for (var p = 0; p < 3; p++)
        {
            var part = LinearUnit.Dense(weight.narrow(0, 4 * p, 4), null);
            sum += RootInferenceSolver.Solve(part, x, r.narrow(2, 4 * p, 4), InputDomain.Free, options: options).InputRelevance;
        }
        TestNets.RelativeDifference(packed, sum).Should().BeLessThan(1e-14);
        recorder.Diagnostics.Select(d => d.Unit).Should().Equal("qkv/q", "qkv/k", "qkv/v");
        // a single solve over all 12 outputs is a different problem (one step size for all three)
        var whole = RootInferenceSolver.Solve(LinearUnit.Dense(weight, null), x, r, InputDomain.Free, options: options).InputRelevance;
        TestNets.RelativeDifference(packed, whole).Should().BeGreaterThan(1e-6);
    }

    // chefer-root is batch-independent to rounding; root (pixel box at the patch conv, target-logit start) within 1e-6 —
    // the solver's accept/reject and sign-mask decisions amplify rounding differences of batched kernels (docs/reliability.md)
    public static IEnumerable<object[]> RootMethods() => new (string, double)[]
    {
        ("root", 1e-5), ("root:steps=3,gamma=0.5", 1e-5), ("root:positive=0,normalized=0", 1e-5), ("root:gelu=taylor2", 1e-5), ("chefer-root", 1e-12), ("chefer-root:steps=5", 1e-12),
    }.Select(m => new object[] { m.Item1, m.Item2 });

    [Theory]
    [MemberData(nameof(RootMethods))]
    public void BatchEqualsEachSampleAlone(string method, double tolerance)
    {
        using var scope = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: false);
        torch.manual_seed(7);
        var x = torch.rand(3, 3, 16, 16, dtype: float64) * 2 - 1;
        var targets = new long[] { 1, 4, 2 };
        using var low = torch.tensor(-1.0, dtype: float64);
        using var high = torch.tensor(1.0, dtype: float64);
        using var explainer = new Explainer(vit, MethodCatalog.Parse(method), new ExplainerOptions { InputLow = low, InputHigh = high });
        using var all = explainer.Explain(x, targets);
        for (var b = 0; b < 3; b++)
        {
            using var one = explainer.Explain(x.narrow(0, b, 1), new[] { targets[b] });
            var difference = TestNets.RelativeDifference(one.Heatmap, all.Heatmap.narrow(0, b, 1));
            _output.WriteLine($"{method}, sample {b}: batch vs alone {difference:e2}");
            difference.Should().BeLessThan(tolerance, $"{method}, sample {b}");
            if (all.TokenMap is not null) TestNets.RelativeDifference(one.TokenMap!, all.TokenMap.narrow(0, b, 1)).Should().BeLessThan(tolerance);
        }
        torch.isfinite(all.InputRelevance).all().item<bool>().Should().BeTrue();
        all.InputRelevance.abs().max().item<double>().Should().BeGreaterThan(0);
    }

    [Theory]
    [InlineData("root")]
    [InlineData("chefer-root")]
    public void TheLossNeverIncreasesPerUnitAndSample(string method)
    {
        using var scope = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: false);
        torch.manual_seed(8);
        var x = torch.rand(3, 3, 16, 16, dtype: float64) * 2 - 1;
        using var explainer = new Explainer(vit, MethodCatalog.Parse(method), new ExplainerOptions { CollectDiagnostics = true });
        using var e = explainer.Explain(x);
        e.Diagnostics.Should().NotBeEmpty();
        foreach (var d in e.Diagnostics)
            for (var b = 0; b < 3; b++)
                d.Values["final_loss"][b].Should().BeLessThanOrEqualTo(d.Values["initial_loss"][b], $"{d.Unit}, sample {b}");
        // and step by step, on the recorded input and relevance of every Linear of block 0 (q, k, v on their own)
        var graph = explainer.Graph;
        using var layers = new Explainer(vit, MethodCatalog.Parse(method), new ExplainerOptions { RecordLayers = new[] { "blocks.0.attn.qkv", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "blocks.0.attn.proj" } });
        using var r = layers.Explain(x);
        Tensor[] outputs;
        using (torch.no_grad()) outputs = graph.Forward(x);
        foreach (var name in new[] { "blocks.0.attn.qkv", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "blocks.0.attn.proj" })
        {
            var node = (LinearUnitNode)graph.Nodes[graph.ModuleOutputs[name]];
            var relevance = r.LayerRelevance[name];
            var parts = node.OutputParts.Count == 0 ? 1 : node.OutputParts.Count;
            var size = node.Unit.OutputFeatures / parts;
            for (var p = 0; p < parts; p++)
            {
                var rp = relevance.narrow(2, p * size, size);
                if (rp.abs().max().item<double>() == 0) continue;
                var result = RootInferenceSolver.Solve(node.Unit.OutputSlice(p * size, size), outputs[node.Inputs[0]], rp, InputDomain.Free, traceLoss: true);
                var trace = result.LossTrace!.data<double>().ToArray();
                for (var k = 1; k < trace.Length / 3; k++)
                    for (var b = 0; b < 3; b++)
                        trace[k * 3 + b].Should().BeLessThanOrEqualTo(trace[(k - 1) * 3 + b], $"{name} part {p}, step {k}, sample {b}");
            }
        }
    }

    // --- D10: second-order Taylor at the activation, by hand ---

    private static double[] Taylor(ElementwiseFunction f, double[] a, double[] r) =>
        TaylorActivationRule.Apply(f, torch.tensor(a, dtype: float64), torch.tensor(r, dtype: float64)).data<double>().ToArray();

    [Fact]
    public void TaylorAtReluIsTheIdentity()
    {
        // σ' = 1 on (0, a]; at the grid's last point n = 0, σ'(0) = 0 breaks the constraint: t* = 31/32, n = a/32,
        // d = 31a/32, R·(1·d + 0)/stab(a − a/32) = R·d/(d + 1e-9) (the spec stabiliser), = R exactly with ε = 0
        var a = new[] { 0.5, 1.0, 3.0, 1e-3 };
        var r = new[] { 1.0, -2.0, 0.25, 7.0 };
        var expected = a.Zip(r, (ai, ri) => ri * (31 * ai / 32) / (31 * ai / 32 + 1e-9)).ToArray();
        Taylor(ElementwiseFunction.Relu, a, r).Should().Equal(expected, (p, q) => Math.Abs(p - q) <= 1e-15 * Math.Abs(q));
        TaylorActivationRule.Apply(ElementwiseFunction.Relu, torch.tensor(a, dtype: float64), torch.tensor(r, dtype: float64), stabilizer: new Stabilizer(0, DropZeros: true))
            .data<double>().ToArray().Should().Equal(r, (p, q) => Math.Abs(p - q) <= 1e-15 * Math.Abs(q));
    }

    [Fact]
    public void TaylorAtAQuadraticConservesExactly()
    {
        // σ(a) = a² + a: σ' = 2a + 1, σ'' = 2. The second-order expansion of a quadratic is exact:
        // σ'(n)d + ½σ''(n)d² = σ(a) − σ(n), so R_in = R wherever σ moves. With τ = 0.15 the constraint
        // |2n − 2a| ≤ 0.15 gives |t·a| ≤ 0.075: for a = 2, t* = 1/32 (d = 1/16 ≤ 0.075 < 2/16).
        var quadratic = new ElementwiseFunction("quadratic", t => t * t + t, t => t * 2 + 1, t => torch.full_like(t, 2.0));
        var a = new[] { 2.0, -3.0, 0.5, 0.01 };
        var r = new[] { 1.5, -1.0, 2.0, 3.0 };
        var result = Taylor(quadratic, a, r);
        result.Should().Equal(r, (p, q) => Math.Abs(p - q) <= 1e-7 * Math.Abs(q));
        // exact up to the spec stabiliser 1e-9 in the denominator: for a = 2, σ(a) − σ(n) = 6 − (1.9375² + 1.9375)
        var change = 6 - (1.9375 * 1.9375 + 1.9375);
        result[0].Should().BeApproximately(1.5 * change / (change + 1e-9), 1e-15);
        // a = 0.01: the whole segment to 0 keeps |σ' − σ'(a)| ≤ 0.15, t* = 1, n = 0, still exact
        result[3].Should().BeApproximately(3.0 * 0.0101 / (0.0101 + 1e-9), 1e-12);
    }

    [Fact]
    public void TaylorAtGeluMatchesTheHandValues()
    {
        // GELU σ(a) = a·Φ(a), σ' = Φ + aφ, σ'' = φ(2 − a²); τ = 0.15 on the grid n = (1 − k/32)·a
        // a = 1: σ'(1) = 1.0833155; σ'(0.625) = 0.93911 (|Δ| = 0.1442 ≤ τ), σ'(0.59375) = 0.92231 (|Δ| > τ) → t* = 12/32,
        //   n = 0.625, d = 0.375: (σ'(n)d + ½σ''(n)d²) / (σ(1) − σ(0.625)) = 0.38930258 / 0.38258570 = 1.0175565288
        // a = −0.5: σ'(−0.5) = 0.1325049; t* = 14/32, n = −0.28125, d = −0.21875:
        //   −0.04393400 / −0.04478958 = 0.9808977179
        var result = Taylor(ElementwiseFunction.Gelu, new[] { 1.0, -0.5 }, new[] { 1.0, 2.0 });
        result[0].Should().BeApproximately(1.017556528760858, 1e-9);
        result[1].Should().BeApproximately(2 * 0.9808977178925985, 1e-9);
        // the module GELU of the graph is the exact one (same numbers through the rule on a node)
        var node = new OperationNode("act", NodeKind.Activation, 0, t => nn.functional.gelu(t)) { Module = nn.GELU() };
        TestNets.Propagate(new TaylorActivationRule(), node, new[] { torch.tensor(new[] { 1.0, -0.5 }, dtype: float64) }, torch.tensor(new[] { 1.0, 2.0 }, dtype: float64))
            .Should().Equal(result, (p, q) => Math.Abs(p - q) < 1e-15);
        // a = 0: σ'(n) = σ'(0) for every t, t* = 1, n = 0 = a, σ(a) = σ(n): the relevance is dropped (spec stabiliser)
        Taylor(ElementwiseFunction.Gelu, new[] { 0.0 }, new[] { 1.0 })[0].Should().Be(0);
    }

    [Fact]
    public void GeluTaylor2IsAnOptionOfRootAndOnlyTouchesGelus()
    {
        using var scope = torch.NewDisposeScope();
        using var vit = TestNets.SmallVit(biasFree: false);
        using var taylor = new Explainer(vit, MethodCatalog.Parse("root:gelu=taylor2"));
        taylor.RuleAssignment.Where(a => a.Node.EndsWith("mlp.act", StringComparison.Ordinal)).Should().OnlyContain(a => a.Rule.StartsWith("Taylor2(GELU", StringComparison.Ordinal)).And.HaveCount(2);
        using var pass = new Explainer(vit, MethodCatalog.Parse("root"));
        pass.RuleAssignment.Where(a => a.Node.EndsWith("mlp.act", StringComparison.Ordinal)).Should().OnlyContain(a => a.Rule == "Pass");
        torch.manual_seed(9);
        var x = torch.rand(2, 3, 16, 16, dtype: float64) * 2 - 1;
        using var a = taylor.Explain(x);
        using var b = pass.Explain(x);
        TestNets.RelativeDifference(a.InputRelevance, b.InputRelevance).Should().BeGreaterThan(1e-6);
        MethodSpec.Parse("root:gelu=taylor2").OptionsAs<RootInferenceOptions>().Gelu.Should().Be(GeluTreatment.Taylor2);
        MethodSpec.Parse("root").OptionsAs<RootInferenceOptions>().Gelu.Should().Be(GeluTreatment.Pass);
        var bad = () => MethodSpec.Parse("root:gelu=cubic");
        bad.Should().Throw<MethodSpecException>().WithMessage("*gelu*pass*taylor2*");
        var notForChefer = () => MethodSpec.Parse("chefer-root:gelu=taylor2");
        notForChefer.Should().Throw<MethodSpecException>().WithMessage("*gelu*");
        // a CNN has no GELU: the option changes nothing there
        using var cnn = TestNets.BiasFreeCnn();
        using var onCnn = new Explainer(cnn, MethodCatalog.Parse("root:gelu=taylor2"));
        onCnn.RuleAssignment.Should().NotContain(r => r.Rule.StartsWith("Taylor2", StringComparison.Ordinal));
    }

    [Fact]
    public void RootOnAVitKeepsMemoryFlatOverFiveHundredExplanations()
    {
        using var vit = TestNets.SmallVit(biasFree: false, imageSize: 8, patch: 4, embed: 8, depth: 1, heads: 2);
        vit.to(float32);
        torch.manual_seed(10);
        using var x = torch.rand(50, 3, 8, 8) * 2 - 1;
        using var explainer = new Explainer(vit, MethodCatalog.Parse("root"), new ExplainerOptions { CollectDiagnostics = true });
        var clock = Stopwatch.StartNew();
        explainer.Explain(x).Dispose(); // explanations 1–50 (the warm-up fills the unit caches)
        var rss50 = RssMiB();
        var counts = LiveTensorCounts.AfterRepeatedExplanations(explainer, x, 9, 50, 8, 8); // batches 2–10 of 50: explanations 51–500
        var rss500 = RssMiB();
        _output.WriteLine($"RSS after 50 explanations {rss50:F1} MiB, after 500 {rss500:F1} MiB ({clock.Elapsed.TotalSeconds:F1} s)");
        counts.ShouldNotDrift();
        (rss500 - rss50).Should().BeLessThan(30, "RSS may move with the allocator, not grow with the number of explanations");
    }

    private static double RssMiB()
    {
        using var p = Process.GetCurrentProcess();
        p.Refresh();
        return p.WorkingSet64 / (1024.0 * 1024.0);
    }
}
