using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Rules.RootInference;
using RootDtd.Tests.Golden;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.RootInference;

/// <summary>The root rule inside the explainer: diagnostics, signal/root tensors, batch independence, composites and catalog.</summary>
public class RootInferenceExplainerTests
{
    [Fact]
    public void DiagnosticsReportEveryUnitOnlyWhenAskedFor()
    {
        using var scope = torch.NewDisposeScope();
        using var c = GoldenCases.Open("cnn", float64);
        using (var plain = new Explainer(c.Model, RootComposites.Root(), new ExplainerOptions { InputLow = c.Low, InputHigh = c.High }))
        using (var e0 = plain.Explain(c.Input, c.Targets))
        {
            e0.Diagnostics.Should().BeEmpty();
            e0.Tensors.Should().BeEmpty();
        }
        var units = new[] { "0", "3", "7" };
        using var explainer = new Explainer(c.Model, RootComposites.Root(), new ExplainerOptions { InputLow = c.Low, InputHigh = c.High, CollectDiagnostics = true, RecordLayers = units });
        using var e = explainer.Explain(c.Input, c.Targets);
        explainer.Graph.Units.Select(u => u.Name).Should().Equal(units);
        var batch = (int)c.Input.shape[0];
        e.Diagnostics.Select(d => d.Unit).Should().BeEquivalentTo(explainer.Graph.Units.Select(u => u.Name));
        e.Diagnostics.Single(d => d.Unit == "0").Domain.Should().Be("PixelBox");
        e.Diagnostics.Where(d => d.Unit != "0").Should().OnlyContain(d => d.Domain == "Relu");
        foreach (var d in e.Diagnostics)
        {
            d.Rule.Should().StartWith("RootInference(steps=20");
            d.Milliseconds.Should().BeGreaterThan(0);
            d.Values.Keys.Should().BeEquivalentTo("initial_loss", "final_loss", "relative_residual", "accepted_steps", "relevance_in", "relevance_out", "fitted", "unresponsive_fraction", "max_amplification");
            d.Values.Values.Should().OnlyContain(v => v.Length == batch);
            for (var i = 0; i < batch; i++)
            {
                d.Values["final_loss"][i].Should().BeLessThanOrEqualTo(d.Values["initial_loss"][i]);
                d.Values["relative_residual"][i].Should().BeApproximately(Math.Sqrt(d.Values["final_loss"][i]) / e.LayerRelevance[d.Unit][i].norm().item<double>(), 1e-9);
                d.Values["accepted_steps"][i].Should().BeInRange(0, 20);
            }
        }
        // the unit's Σ R_out is the conservation report's Σ at that node; Σ R_in of the first unit is Σ of the input relevance
        foreach (var d in e.Diagnostics)
        {
            var sums = e.Conservation.Layers.Single(l => l.Layer == d.Unit).Sums;
            d.Values["relevance_out"].Should().Equal(sums, (a, b) => Math.Abs(a - b) <= 1e-12 * Math.Max(1, Math.Abs(b)));
        }
        e.Diagnostics.Single(d => d.Unit == "0").Values["relevance_in"].Should().Equal(e.Conservation.InputSum, (a, b) => Math.Abs(a - b) <= 1e-12 * Math.Max(1, Math.Abs(b)));
    }

    [Theory]
    [InlineData("cnn")]
    [InlineData("resnet")]
    public void SignalAndRootStayInTheirBoxes(string name)
    {
        using var scope = torch.NewDisposeScope();
        using var c = GoldenCases.Open(name, float64);
        using var explainer = new Explainer(c.Model, RootComposites.Root(), new ExplainerOptions { InputLow = c.Low, InputHigh = c.High, RecordRoots = true, CollectDiagnostics = true });
        using var e = explainer.Explain(c.Input, c.Targets);
        var first = explainer.Graph.Units[0].Name;
        foreach (var u in explainer.Graph.Units)
        {
            e.Tensors.Should().ContainKey(u.Name + "/signal").And.ContainKey(u.Name + "/root");
            var s = e.Tensors[u.Name + "/signal"];
            var n = e.Tensors[u.Name + "/root"];
            if (u.Name == first)
            {
                // pixel level: S + N = x and the root is a valid input
                (s + n - c.Input).abs().max().item<double>().Should().BeLessThan(1e-12);
                (n - c.Low).min().item<double>().Should().BeGreaterThanOrEqualTo(-1e-12);
                (n - c.High).max().item<double>().Should().BeLessThanOrEqualTo(1e-12);
            }
            else
            {
                e.Diagnostics.Single(d => d.Unit == u.Name).Domain.Should().Be("Relu");
                s.min().item<double>().Should().BeGreaterThanOrEqualTo(0, u.Name);
                n.min().item<double>().Should().BeGreaterThanOrEqualTo(0, u.Name + ": S ≤ x");
            }
        }
    }

    [Theory]
    [InlineData("cnn")]
    [InlineData("resnet")]
    [InlineData("mlp")]
    public void BatchEqualsSamplesOneByOne(string name)
    {
        using var scope = torch.NewDisposeScope();
        using var c = GoldenCases.Open(name, float64);
        var composite = RootComposites.Root(new RootInferenceOptions { Gamma = 1.7 });
        var batch = c.Input.shape[0];
        var low = c.Low;
        var high = c.High;
        using var explainer = new Explainer(c.Model, composite, new ExplainerOptions { InputLow = low, InputHigh = high });
        using var all = explainer.Explain(c.Input, c.Targets);
        for (var i = 0; i < batch; i++)
        {
            using var one = new Explainer(c.Model, composite, new ExplainerOptions { InputLow = low[i..(i + 1)], InputHigh = high[i..(i + 1)] });
            using var e = one.Explain(c.Input[i..(i + 1)], new[] { c.Targets[i] });
            GoldenCases.RelativeError(e.InputRelevance, all.InputRelevance[i..(i + 1)]).Should().BeLessThan(1e-10);
        }
    }

    [Fact]
    public void UpperHalfPresetSplitsTheUnitsByForwardIndex()
    {
        using var scope = torch.NewDisposeScope();
        using var c = GoldenCases.Open("resnet", float64);
        using var explainer = new Explainer(c.Model, MethodCatalog.Parse("root-upper-half"), new ExplainerOptions { InputLow = c.Low, InputHigh = c.High });
        var units = explainer.Graph.Units;
        units.Select(u => u.Name).Take(4).Should().Equal("conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1");
        units[^1].Name.Should().Be("fc");
        var rules = explainer.RuleAssignment.ToDictionary(a => a.Node, a => a.Rule);
        var lower = units.Count / 2;
        for (var i = 0; i < units.Count; i++)
            rules[units[i].Name].Should().StartWith(i < lower ? "ZPlus" : "RootInference", $"unit {i} ({units[i].Name}) of {units.Count}");
        explainer.Composite.Name.Should().Be("root-upper-half");

        using var quarter = new Explainer(c.Model, MethodCatalog.Parse("root-upper-half:fraction=0.25"), new ExplainerOptions { InputLow = c.Low, InputHigh = c.High });
        quarter.RuleAssignment.Count(a => a.Rule.StartsWith("ZPlus", StringComparison.Ordinal)).Should().Be((int)Math.Floor(units.Count * 0.75));
        RootComposites.LowerCount(21, 0.5).Should().Be(10);
        RootComposites.LowerCount(10, 0.7).Should().Be(3);
    }

    [Fact]
    public void CatalogParametersSwitchEveryOptionOfTheRule()
    {
        var root = (ExplanationMethod<RootInferenceOptions>)MethodCatalog.Get("root");
        root.Default.Should().Be(RootInferenceOptions.Default);
        MethodSpec.Parse("root").OptionsAs<RootInferenceOptions>().Should().Be(RootInferenceOptions.Default);
        var o = MethodSpec.Parse("root:steps=5,gamma=0.5,positive=0,gradient=0,domain=0,normalized=0").OptionsAs<RootInferenceOptions>();
        (o.Steps, o.Gamma, o.PositiveConstraint, o.GradientConstraint, o.DomainConstraint, o.Redistribution)
            .Should().Be((5, 0.5, false, false, false, RootRedistribution.Direct));
        // the switch reaches the rule through the catalog's name:key=value syntax
        using var scope = torch.NewDisposeScope();
        using var c = GoldenCases.Open("cnn", float64);
        using var off = new Explainer(c.Model, MethodCatalog.Parse("root:domain=0"), new ExplainerOptions { InputLow = c.Low, InputHigh = c.High });
        off.RuleAssignment.Where(a => a.Rule.StartsWith("RootInference", StringComparison.Ordinal)).Should().OnlyContain(a => a.Rule.Contains("no-box"));
    }

    [Fact]
    public void FlatInputPresetPutsFlatOnTheFirstUnitOnly()
    {
        using var scope = torch.NewDisposeScope();
        using var c = GoldenCases.Open("vgg", float64);
        using var explainer = new Explainer(c.Model, MethodCatalog.Parse("root-flat-input"), new ExplainerOptions { InputLow = c.Low, InputHigh = c.High });
        var rules = explainer.RuleAssignment.ToDictionary(a => a.Node, a => a.Rule);
        var units = explainer.Graph.Units;
        rules[units[0].Name].Should().Be("Flat");
        units.Skip(1).Should().OnlyContain(u => rules[u.Name].StartsWith("RootInference", StringComparison.Ordinal));
        using var e = explainer.Explain(c.Input, c.Targets);
        e.InputRelevance.isfinite().all().item<bool>().Should().BeTrue();
    }

    [Fact]
    public void CatalogParametersAreTheAblations()
    {
        using var scope = torch.NewDisposeScope();
        MethodCatalog.Get("root").Defaults.Should().BeEquivalentTo(new Dictionary<string, double>
        {
            ["steps"] = 20, ["gamma"] = 1, ["positive"] = 1, ["gradient"] = 1, ["domain"] = 1, ["normalized"] = 1, ["epsilon"] = 1e-9,
        });
        MethodCatalog.Get("root").FindParameter("gelu")!.TextIn(MethodCatalog.Get("root").DefaultOptions).Should().Be("pass");
        using var c = GoldenCases.Open("cnn", float64);
        var reference = GoldenCases.Load("cnn.root.safetensors");
        foreach (var (spec, key) in new[]
                 {
                     ("root", "default"), ("root:steps=0", "steps0"), ("root:normalized=0", "direct"), ("root:gradient=0", "nogc"),
                     ("root:steps=5,gamma=0.5", "s5g05"), ("root:positive=0", "plain"),
                 })
        {
            using var explainer = new Explainer(c.Model, MethodCatalog.Parse(spec), new ExplainerOptions { InputLow = c.Low, InputHigh = c.High });
            using var e = explainer.Explain(c.Input, c.Targets);
            GoldenCases.RelativeError(e.InputRelevance, reference["root64." + key]).Should().BeLessThan(1e-7, spec);
        }
        FluentActions.Invoking(() => MethodCatalog.Parse("root:positive=2")).Should().Throw<MethodSpecException>().WithMessage("*'positive' must be a switch (0 or 1)*");
        FluentActions.Invoking(() => MethodCatalog.Parse("root:steps=1.5")).Should().Throw<MethodSpecException>().WithMessage("*'steps' must be a whole number ≥ 0*");
        FluentActions.Invoking(() => MethodCatalog.Parse("root:gamma=0")).Should().Throw<MethodSpecException>().WithMessage("*'gamma'*γ must be a finite number > 0*");
        using var graph = Graph.GraphBuilder.Build(c.Model);
        MethodCatalog.Parse("root:steps=3,normalized=0").Resolve(graph).OfType<RootInferenceRule>().First().Options
            .Should().Be(new RootInferenceOptions { Steps = 3, Redistribution = RootRedistribution.Direct });
    }
}
