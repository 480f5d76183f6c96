using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Rules;
using RootDtd.Rules.RootInference;
using Xunit;

namespace RootDtd.Tests.Core;

/// <summary>The one method-spec reader: defaults of every catalog method, round trips, typed options and error messages.</summary>
public sealed class MethodSpecTests
{
    /// <summary>The documented defaults (docs/rules-and-composites.md, zennit 1.0, the root-inference spec), written here independently of the code.</summary>
    public static TheoryData<string, string> DocumentedDefaults() => new()
    {
        { "lrp0", "" },
        { "epsilon", "epsilon=0.25" },
        { "gamma", "gamma=0.25" },
        { "zplus", "" },
        { "alpha-beta", "alpha=2,beta=1" },
        { "wsquare", "" },
        { "flat", "" },
        { "zbox", "" },
        { "epsilon-gamma-box", "epsilon=1E-06,gamma=0.25" },
        { "epsilon-plus-flat", "epsilon=1E-06" },
        { "epsilon-alpha2-beta1", "epsilon=1E-06" },
        { "combination", "epsilon=0.25,gamma=0.25" },
        { "gradient", "" },
        { "gradient-x-input", "" },
        { "root", "steps=20,gamma=1,positive=1,gradient=1,domain=1,normalized=1,epsilon=1E-09,gelu=pass" },
        { "root-upper-half", "steps=20,gamma=1,positive=1,gradient=1,domain=1,normalized=1,epsilon=1E-09,gelu=pass,fraction=0.5" },
        { "root-flat-input", "steps=20,gamma=1,positive=1,gradient=1,domain=1,normalized=1,epsilon=1E-09,gelu=pass" },
        { "root-gated", "steps=20,gamma=1,positive=1,gradient=1,domain=1,normalized=1,epsilon=1E-09,gelu=pass,tau=1" },
        { "root-shape", "steps=20,gamma=1,positive=1,gradient=1,domain=1,normalized=1,epsilon=1E-09,gelu=pass" },
        { "root-channel", "steps=20,gamma=1,positive=1,normalized=1,epsilon=1E-09,gelu=pass,shape=1" },
        { "chefer-root", "steps=20,gamma=1,positive=1,gradient=1,domain=1,normalized=1,epsilon=1E-09" },
        { "root-published", "" },
    };

    [Theory]
    [MemberData(nameof(DocumentedDefaults))]
    public void EveryCatalogMethodHasItsDocumentedDefaults(string name, string defaults)
    {
        var method = MethodCatalog.Get(name);
        string.Join(",", method.Parameters.Select(p => p.Name + "=" + p.TextIn(method.DefaultOptions))).Should().Be(defaults);
        var spec = MethodSpec.Parse(name);
        spec.Text.Should().Be(name, "a spec with every default is written as the bare name");
        spec.Values.Should().Equal(method.Defaults);
        spec.Options.Should().Be(method.DefaultOptions);
        // writing every default explicitly gives the same spec
        if (defaults.Length > 0) MethodSpec.Parse(name + ":" + defaults).Should().Be(spec);
    }

    [Fact]
    public void TheDocumentedTableCoversTheBuiltInMethods()
    {
        var documented = DocumentedDefaults().Select(row => (string)row[0]).ToList();
        MethodCatalog.All.Select(m => m.Name).Should().Contain(documented);
    }

    [Fact]
    public void DefaultsReachTheRules()
    {
        using var graph = GraphBuilder.Build(TestNets.BiasFreeCnn());
        string RuleOf(string spec, string unit) => MethodSpec.Parse(spec).CreateComposite().Resolve(graph)[graph.ModuleOutputs[unit]]!.ToString();
        RuleOf("epsilon", "conv1").Should().Be("Epsilon(0.25)");
        RuleOf("gamma", "conv2").Should().Be("Gamma(0.25)");
        RuleOf("alpha-beta", "fc1").Should().Be("AlphaBeta(2, 1)");
        RuleOf("epsilon-gamma-box", "conv2").Should().Be("Gamma(0.25)");
        RuleOf("epsilon-gamma-box", "fc1").Should().Be("Epsilon(1e-06)");
        RuleOf("epsilon-plus-flat", "fc2").Should().Be("Epsilon(1e-06)");
        RuleOf("combination", "fc2").Should().Be("Epsilon(1e-06)");
        RuleOf("root", "conv2").Should().Be("RootInference(steps=20, γ=1, positive, gc, normalized)");
        RuleOf("root-upper-half:fraction=1,steps=3", "conv1").Should().Be("RootInference(steps=3, γ=1, positive, gc, normalized)");
        RuleOf("epsilon:epsilon=0.5", "conv1").Should().Be("Epsilon(0.5)");
    }

    public static TheoryData<string, string> Canonical() => new()
    {
        { "epsilon:epsilon=0.1", "epsilon:epsilon=0.1" },
        { " EPSILON : Epsilon = 1e-3 ", "epsilon:epsilon=0.001" },
        { "epsilon:epsilon=0.25", "epsilon" },
        { "alpha-beta:beta=2,alpha=3", "alpha-beta:alpha=3,beta=2" },
        { "root:normalized=0,steps=5", "root:steps=5,normalized=0" },
        { "root:positive=false,domain=off,gradient=true", "root:positive=0,domain=0" },
        { "root:gamma=0.5", "root:gamma=0.5" },
        { "root-upper-half:fraction=0.25,steps=0", "root-upper-half:steps=0,fraction=0.25" },
        { "root-flat-input:gradient=0", "root-flat-input:gradient=0" },
        { "combination:gamma=0.1,epsilon=1", "combination:epsilon=1,gamma=0.1" },
        { "epsilon-gamma-box:epsilon=0.01", "epsilon-gamma-box:epsilon=0.01" },
        { "epsilon-plus-flat:epsilon=1e-9", "epsilon-plus-flat:epsilon=1E-09" },
        { "epsilon-alpha2-beta1:epsilon=0", "epsilon-alpha2-beta1:epsilon=0" },
        { "gamma:gamma=1,", "gamma:gamma=1" },
        { "zplus:", "zplus" },
    };

    [Theory]
    [MemberData(nameof(Canonical))]
    public void SpecsRoundTripThroughTheirCanonicalText(string given, string canonical)
    {
        var spec = MethodSpec.Parse(given);
        spec.Text.Should().Be(canonical);
        spec.ToString().Should().Be(canonical);
        var again = MethodSpec.Parse(spec.Text);
        again.Should().Be(spec);
        again.Values.Should().Equal(spec.Values);
        again.GetHashCode().Should().Be(spec.GetHashCode());
        MethodSpec.Of(spec.Method, spec.Options).Should().Be(spec);
        MethodSpec.Of(spec.Method, spec.Values).Should().Be(spec);
    }

    [Fact]
    public void EveryParameterOfEveryMethodRoundTripsWhenChanged()
    {
        foreach (var method in MethodCatalog.All)
        {
            MethodSpec.Parse(MethodSpec.Default(method.Name).Text).Should().Be(MethodSpec.Default(method.Name), method.Name);
            foreach (var p in method.Parameters)
            {
                if (p.Kind == MethodParameterKind.Text) continue; // names: EveryNameParameterRoundTrips
                var d = p.ValueIn(method.DefaultOptions);
                var changed = p.Kind switch
                {
                    MethodParameterKind.Switch => 1 - d,
                    MethodParameterKind.Count => d + 3,
                    _ => d + 0.125,
                };
                MethodSpec spec;
                try
                {
                    spec = MethodSpec.Of(method, new Dictionary<string, double> { [p.Name] = changed });
                }
                catch (MethodSpecException) when (method.Name == "alpha-beta")
                {
                    continue; // α − β = 1 couples the two; covered by the canonical cases
                }
                spec.Values[p.Name].Should().Be(changed, $"{method.Name}:{p.Name}");
                spec.Text.Should().Contain(p.Name + "=", method.Name);
                var back = MethodSpec.Parse(spec.Text);
                back.Should().Be(spec, spec.Text);
                back.Values.Should().Equal(spec.Values);
            }
        }
    }

    [Fact]
    public void EveryNameParameterRoundTrips()
    {
        var spec = MethodSpec.Parse("smoothgrad:base=epsilon-plus-flat,n=4");
        spec.Text.Should().Be("smoothgrad:n=4,base=epsilon-plus-flat");
        spec.TextValues["base"].Should().Be("epsilon-plus-flat");
        spec.Values.Keys.Should().NotContain("base");
        MethodSpec.Parse(spec.Text).Should().Be(spec);
        MethodSpec.Parse("gradcam:layer=layer3").OptionsAs<RootDtd.Attribution.GradCamOptions>().Layer.Should().Be("layer3");
        MethodSpec.Default("gradcam").Text.Should().Be("gradcam");
        MethodSpec.Parse("integrated-gradients:baseline=blurred").Text.Should().Be("integrated-gradients:baseline=blurred");
        FluentActions.Invoking(() => MethodSpec.Parse("gradcam:layer=a b")).Should().Throw<MethodSpecException>().WithMessage("*'layer' must be a name*");
        MethodCatalog.Get("gradcam").DescribeParameters().Should().Contain("layer (a name, default automatic)");
    }

    [Fact]
    public void TypedOptionsAreTheRecords()
    {
        MethodSpec.Parse("root:steps=3,normalized=0").OptionsAs<RootInferenceOptions>()
            .Should().Be(new RootInferenceOptions { Steps = 3, Redistribution = RootRedistribution.Direct });
        MethodSpec.Parse("root-upper-half:fraction=0.75,domain=0").OptionsAs<RootUpperOptions>()
            .Should().Be(new RootUpperOptions { Fraction = 0.75, Root = new RootInferenceOptions { DomainConstraint = false } });
        MethodSpec.Parse("alpha-beta:alpha=3,beta=2").OptionsAs<AlphaBetaOptions>().Should().Be(new AlphaBetaOptions { Alpha = 3, Beta = 2 });
        MethodSpec.Parse("zbox").Options.Should().Be(NoOptions.Instance);
        var typed = (ExplanationMethod<EpsilonOptions>)MethodCatalog.Get("epsilon");
        MethodSpec.Of(typed, new EpsilonOptions { Epsilon = 0.5 }).Text.Should().Be("epsilon:epsilon=0.5");
        FluentActions.Invoking(() => MethodSpec.Parse("epsilon").OptionsAs<GammaOptions>()).Should().Throw<InvalidOperationException>().WithMessage("*EpsilonOptions*");
        FluentActions.Invoking(() => MethodSpec.Of(MethodCatalog.Get("epsilon"), new GammaOptions())).Should().Throw<MethodSpecException>().WithMessage("*takes EpsilonOptions*");
    }

    [Fact]
    public void MethodsCarryTheirStartRelevanceAndCanonizers()
    {
        MethodCatalog.Get("gradient").StartRelevance.Should().Be(StartRelevance.OneHot);
        MethodCatalog.Get("gradient-x-input").StartRelevance.Should().Be(StartRelevance.OneHot);
        MethodCatalog.Get("root-published").StartRelevance.Should().Be(StartRelevance.AbsoluteTargetLogit);
        MethodCatalog.Get("root-published").Canonizers.Should().BeEmpty();
        // Chefer's attribution starts from one-hot (their generate_LRP); rollout and raw attention have no walk
        foreach (var name in new[] { "chefer", "chefer-root", "rollout", "raw-attention" }) MethodCatalog.Get(name).StartRelevance.Should().Be(StartRelevance.OneHot, name);
        MethodCatalog.Get("agf").Canonizers.Should().BeEmpty();
        MethodCatalog.Get("agf-root").Canonizers.Should().BeEmpty();
        foreach (var m in MethodCatalog.All.Where(m => m.CreateDefault().Procedure is not null && !m.Name.StartsWith("agf", StringComparison.Ordinal)))
            m.Canonizers.Select(c => c.Name).Should().Equal(new[] { "merge-batchnorm" }, m.Name);
        foreach (var m in MethodCatalog.All.Where(m => m.Name is not ("gradient" or "gradient-x-input" or "root-published" or "chefer" or "chefer-root" or "rollout" or "raw-attention") && m.CreateDefault().Procedure is null))
        {
            m.StartRelevance.Should().Be(StartRelevance.TargetLogit, m.Name);
            m.Canonizers.Select(c => c.Name).Should().Equal(new[] { "merge-batchnorm" }, m.Name);
        }
    }

    public static TheoryData<string, string[]> Errors() => new()
    {
        { "", new[] { "empty", "Known methods: lrp0, epsilon" } },
        { "no-such-method", new[] { "Unknown method 'no-such-method'", "Known methods:", "root-published" } },
        { "epsilon:gamma=1", new[] { "Method 'epsilon' has no parameter 'gamma'", "Valid parameters: epsilon (a number, default 0.25)" } },
        { "root:stepz=3", new[] { "no parameter 'stepz'", "steps (a whole number ≥ 0, default 20)", "positive (a switch (0 or 1), default 1)", "normalized" } },
        { "zplus:epsilon=1", new[] { "Method 'zplus' has no parameter 'epsilon': it takes no parameters" } },
        { "epsilon:epsilon", new[] { "Cannot read 'epsilon' in 'epsilon:epsilon': expected key=value", "epsilon (a number, default 0.25)" } },
        { "epsilon:=1", new[] { "expected key=value" } },
        { "epsilon:epsilon=abc", new[] { "'epsilon' must be a number (default 0.25)" } },
        { "epsilon:epsilon=NaN", new[] { "'epsilon' must be a number" } },
        { "epsilon:epsilon=1,epsilon=2", new[] { "'epsilon' is given twice" } },
        { "root:steps=1.5", new[] { "'steps' must be a whole number ≥ 0 (default 20)" } },
        { "root:steps=-1", new[] { "'steps' must be a whole number ≥ 0" } },
        { "root:positive=2", new[] { "'positive' must be a switch (0 or 1) (default 1)" } },
        { "root:gamma=0", new[] { "Invalid value 0 for 'gamma' of method 'root'", "γ must be a finite number > 0" } },
        { "root-upper-half:fraction=2", new[] { "Invalid parameters for method 'root-upper-half' (root-upper-half:fraction=2)", "The root fraction must lie in [0, 1]" } },
        { "epsilon:epsilon=-1", new[] { "Invalid parameters for method 'epsilon'", "ε must be a finite number ≥ 0" } },
        { "alpha-beta:alpha=3", new[] { "α − β = 1" } },
    };

    [Theory]
    [MemberData(nameof(Errors))]
    public void BadSpecsSayWhatIsValid(string spec, string[] fragments)
    {
        var e = FluentActions.Invoking(() => MethodSpec.Parse(spec)).Should().Throw<MethodSpecException>().Which;
        foreach (var f in fragments) e.Message.Should().Contain(f);
        e.Message.Should().NotContain("(Parameter '").And.NotContain("Actual value was");
        // the catalog's shortcut reads the same way
        FluentActions.Invoking(() => MethodCatalog.Parse(spec)).Should().Throw<MethodSpecException>().WithMessage(e.Message);
    }

    [Fact]
    public void OverridesByDictionaryAreCheckedByKind()
    {
        var root = MethodCatalog.Get("root");
        FluentActions.Invoking(() => root.Create(new Dictionary<string, double> { ["positive"] = 0.5 })).Should().Throw<MethodSpecException>().WithMessage("*'positive' of method 'root' must be a switch (0 or 1)*");
        FluentActions.Invoking(() => root.Create(new Dictionary<string, double> { ["nope"] = 1 })).Should().Throw<MethodSpecException>().WithMessage("*Valid parameters: steps*");
        root.Create(new Dictionary<string, double> { ["STEPS"] = 2 }).Name.Should().Be("root");
    }

    [Fact]
    public void PlainNumberMethodsStillRegisterAndParse()
    {
        var name = "test-plain-" + Guid.NewGuid().ToString("N")[..8];
        MethodCatalog.Add(name, "test: ε from a plain parameter map", new Dictionary<string, double> { ["epsilon"] = 0.5 }, p => Composites.Composites.Epsilon(p["epsilon"]));
        var spec = MethodSpec.Parse(name + ":epsilon=0.75");
        spec.Text.Should().Be(name + ":epsilon=0.75");
        MethodSpec.Parse(spec.Text).Should().Be(spec);
        MethodSpec.Parse(name).Values["epsilon"].Should().Be(0.5);
        using var graph = GraphBuilder.Build(TestNets.BiasFreeCnn());
        spec.CreateComposite().Resolve(graph)[graph.ModuleOutputs["conv1"]].Should().BeOfType<EpsilonRule>().Which.Epsilon.Should().Be(0.75);
        FluentActions.Invoking(() => MethodCatalog.Add(name.ToUpperInvariant(), "dup", new(), _ => Composites.Composites.Lrp0())).Should().Throw<ArgumentException>().WithMessage("*already registered*");
    }
}
