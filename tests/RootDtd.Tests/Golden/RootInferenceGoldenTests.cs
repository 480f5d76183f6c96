using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Rules.RootInference;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace RootDtd.Tests.Golden;

/// <summary>The root rule of the spec against <c>&lt;model&gt;.root.safetensors</c>: every variant in float64 (1e-7 relative), the default in float32 (loose).</summary>
public class RootInferenceGoldenTests
{
    private readonly ITestOutputHelper _output;

    public RootInferenceGoldenTests(ITestOutputHelper output) => _output = output;

    /// <summary>The golden variants and the options that produce them.</summary>
    public static readonly (string Key, RootInferenceOptions Options)[] Variants =
    {
        ("default", RootInferenceOptions.Default),
        ("steps0", new RootInferenceOptions { Steps = 0 }),
        ("direct", new RootInferenceOptions { Redistribution = RootRedistribution.Direct }),
        ("plain", new RootInferenceOptions { PositiveConstraint = false }),
        ("nogc", new RootInferenceOptions { GradientConstraint = false }),
        ("s5g05", new RootInferenceOptions { Steps = 5, Gamma = 0.5 }),
    };

    /// <summary>Float32 tolerance of the default variant (the golden README: up to ~1e-2 on resnet).</summary>
    private static readonly Dictionary<string, double> Float32Tolerance = new()
    {
        ["mlp"] = 1e-3, ["cnn"] = 1e-3, ["cnn_bn"] = 1e-3, ["resnet"] = 3e-2, ["vgg"] = 1e-3,
    };

    public static IEnumerable<object[]> Cases() => GoldenCases.Names.Select(n => new object[] { n });

    public static IEnumerable<object[]> CasesAndVariants() =>
        from n in GoldenCases.Names from v in Variants select new object[] { n, v.Key };

    private static Dictionary<string, Tensor> LoadRoot(string name) => GoldenCases.Load(name + ".root.safetensors");

    [Theory]
    [MemberData(nameof(CasesAndVariants))]
    public void Float64MatchesReference(string name, string variant)
    {
        using var scope = torch.NewDisposeScope();
        using var c = GoldenCases.Open(name, float64);
        var reference = LoadRoot(name);
        var options = Variants.Single(v => v.Key == variant).Options;
        using var explainer = new Explainer(c.Model, RootComposites.Root(options), new ExplainerOptions { InputLow = c.Low, InputHigh = c.High });
        using var e = explainer.Explain(c.Input, c.Targets);
        reference.Should().ContainKey("root64." + variant);
        var err = GoldenCases.RelativeError(e.InputRelevance, reference["root64." + variant]);
        var tolerance = 1e-7;
        if (variant == "plain")
        {
            // The plain map with normalized redistribution divides by signed F(S) ≈ 0 layer after layer: on vgg and resnet a
            // relative input change of 2^-48 (16 ulp) moves the float64 result by ~1e-6…1e-5, so no float64 implementation
            // with another summation order can agree to 1e-7. Measure that conditioning and allow 10× it (never less than 1e-7).
            using var perturbed = explainer.Explain(c.Input * (1 + Math.Pow(2, -48)), c.Targets);
            var sensitivity = GoldenCases.RelativeError(perturbed.InputRelevance, e.InputRelevance);
            tolerance = Math.Max(tolerance, 10 * sensitivity);
            _output.WriteLine($"{name} plain: sensitivity to a 2^-48 input change {sensitivity:e2}, tolerance {tolerance:e1}");
        }
        _output.WriteLine($"{name} {variant}: float64 relative error {err:e2}");
        err.Should().BeLessThanOrEqualTo(tolerance);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Float32DefaultMatchesLoosely(string name)
    {
        using var scope = torch.NewDisposeScope();
        using var c = GoldenCases.Open(name, float32);
        var reference = LoadRoot(name);
        using var explainer = new Explainer(c.Model, RootComposites.Root(), new ExplainerOptions { InputLow = c.Low, InputHigh = c.High });
        using var e = explainer.Explain(c.Input, c.Targets);
        var err = GoldenCases.RelativeError(e.InputRelevance, reference["root.default"]);
        var err64 = GoldenCases.RelativeError(e.InputRelevance, reference["root64.default"]);
        _output.WriteLine($"{name} default: float32 relative error {err:e2} vs root.default, {err64:e2} vs root64.default");
        err.Should().BeLessThanOrEqualTo(Float32Tolerance[name]);
    }
}
