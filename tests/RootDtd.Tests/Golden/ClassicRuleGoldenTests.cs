using FluentAssertions;
using RootDtd.Tests.Golden;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace RootDtd.Tests.Golden;

/// <summary>Every attr64.* (float64, 1e-9 relative), attr.* (float32, manifest tolerance) and rel.* tensor of the zennit reference cases.</summary>
public class ClassicRuleGoldenTests
{
    private readonly ITestOutputHelper _output;

    public ClassicRuleGoldenTests(ITestOutputHelper output) => _output = output;

    public static IEnumerable<object[]> Cases() => GoldenCases.Names.Select(n => new object[] { n });

    [Theory]
    [MemberData(nameof(Cases))]
    public void Float64AttributionsMatchZennit(string name)
    {
        using var scope = torch.NewDisposeScope();
        using var c = GoldenCases.Open(name, float64);
        var conditioning = GoldenCases.ManifestConditioning().GetValueOrDefault(name) ?? new();
        var failures = new List<string>();
        foreach (var (key, composite) in GoldenCases.Methods)
        {
            var children = GoldenCases.RelChildren.GetValueOrDefault(name) ?? Array.Empty<string>();
            using var explainer = new Explainer(c.Model, composite(), new ExplainerOptions { InputLow = c.Low, InputHigh = c.High, RecordLayers = children });
            using var e = explainer.Explain(c.Input, c.Targets);
            var err = GoldenCases.RelativeError(e.InputRelevance, c.Reference("attr64." + key));
            _output.WriteLine($"{name} {key}: float64 relative error {err:e2}");
            if (!(err <= 1e-9)) failures.Add($"{key}: {err:e2}");
            if (key.StartsWith("gradient", StringComparison.Ordinal)) continue;
            foreach (var child in children)
            {
                var relErr = GoldenCases.RelativeError(e.LayerRelevance[child], c.Reference($"rel.{key}.{child}"));
                // rel.* are float32 tensors: allow 20× the method's float32-vs-float64 conditioning, at least 1e-5
                var relTol = Math.Max(1e-5, 20 * conditioning.GetValueOrDefault(key, 1e-6));
                if (!(relErr <= relTol)) failures.Add($"rel.{key}.{child}: {relErr:e2}");
            }
        }
        failures.Should().BeEmpty();
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Float32AttributionsMatchZennitWithinManifestTolerance(string name)
    {
        using var scope = torch.NewDisposeScope();
        using var c = GoldenCases.Open(name, float32);
        var conditioning = GoldenCases.ManifestConditioning().GetValueOrDefault(name) ?? new();
        var failures = new List<string>();
        foreach (var (key, composite) in GoldenCases.Methods)
        {
            using var explainer = new Explainer(c.Model, composite(), new ExplainerOptions { InputLow = c.Low, InputHigh = c.High });
            using var e = explainer.Explain(c.Input, c.Targets);
            // tolerance: 20× the manifest's float32-vs-float64 conditioning number of this method, at least 2e-5
            var tol = Math.Max(2e-5, 20 * conditioning.GetValueOrDefault(key, 1e-6));
            var err = GoldenCases.RelativeError(e.InputRelevance, c.Reference("attr." + key));
            _output.WriteLine($"{name} {key}: float32 relative error {err:e2} (tolerance {tol:e1})");
            if (!(err <= tol)) failures.Add($"{key}: {err:e2} > {tol:e1}");
        }
        failures.Should().BeEmpty();
    }
}
