using FluentAssertions;
using RootDtd.Canonizers;
using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Models;
using RootDtd.Rules;
using RootDtd.Rules.RootInference.Published;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

/// <summary>
/// Model bundles: every node kind of every built-in model family has an explicit rule in every catalog method (no
/// silent defaults), the gradient baselines are gradients everywhere, and the CNN bundle holds the documented rules.
/// </summary>
public sealed class ModelBundleTests
{
    /// <summary>The built-in models of the CNN family, small: Sequential CNNs, both ResNet block kinds, VGG with and without BatchNorm, the zoo's resnet18.</summary>
    private static IEnumerable<(string Name, nn.Module<Tensor, Tensor> Model)> CnnFamilyModels()
    {
        torch.manual_seed(11);
        yield return ("sequential", TestNets.CnnWithBatchNorm());
        yield return ("sequential-bias-free", TestNets.BiasFreeCnn());
        yield return ("resnet-basic", TestNets.SmallResNet());
        yield return ("resnet-bottleneck", new ResNet(new[] { 1, 1, 1, 1 }, new[] { 2, 2, 4, 4 }, true, 3));
        yield return ("vgg", new Vgg(new[] { 4, 0, 8, 0 }, false, new[] { 16 }, 5, pooledSize: 2));
        yield return ("vgg-bn", new Vgg(new[] { 4, 0, 8, 0 }, true, new[] { 16 }, 5, pooledSize: 2));
        yield return ("resnet18", ModelZoo.Create("resnet18", 10));
    }

    [Fact]
    public void EveryNodeKindOfEveryFamilyHasAnExplicitRuleInEveryCatalogMethod()
    {
        foreach (var method in MethodCatalog.All)
        {
            var composite = method.CreateDefault();
            foreach (var bundle in ModelBundles.All)
                foreach (var kind in bundle.NodeKinds)
                    composite.KindRule(kind).Should().NotBeNull($"method '{method.Name}' (variant '{composite.Variant}') needs a rule for {kind} of the {bundle.Family} family");
        }
    }

    [Fact]
    public void EveryBuiltInCnnGraphResolvesInEveryMethodWithinTheBundlesKinds()
    {
        var known = ModelBundles.All.SelectMany(b => b.NodeKinds).Append(NodeKind.Input).Append(NodeKind.LinearUnit).ToHashSet();
        var seen = new HashSet<NodeKind>();
        using var scope = torch.NewDisposeScope();
        foreach (var (name, model) in CnnFamilyModels())
        {
            // with BatchNorm merged and without (then the BatchNorm nodes stay and need their rule too)
            foreach (var canonizers in new[] { new ICanonizer[] { new BatchNormMerger() }, Array.Empty<ICanonizer>() })
            {
                using var graph = GraphBuilder.Build((nn.Module)model);
                foreach (var c in canonizers) c.Apply(graph);
                graph.Nodes.Select(n => n.Kind).Should().OnlyContain(k => known.Contains(k), $"{name}: every node kind belongs to a bundle");
                seen.UnionWith(graph.Nodes.Select(n => n.Kind));
                foreach (var method in MethodCatalog.All)
                {
                    var composite = method.CreateDefault();
                    var rules = composite.Resolve(graph);
                    for (var i = 1; i < rules.Length; i++)
                        rules[i].Should().NotBeNull($"{name}, {method.Name}: {graph.Nodes[i]}");
                    if (composite.Variant == BundleVariant.Gradient)
                        rules.Skip(1).Should().AllBeOfType<GradientRule>($"the gradient baseline '{method.Name}' is a gradient at every node of {name}");
                }
            }
        }
        // the models above really exercise every kind the CNN bundle declares
        seen.Should().Contain(ModelBundles.Cnn.NodeKinds);
    }

    [Fact]
    public void EveryNodeKindHasAGradientRuleSoANewKindCannotSilentlyBreakTheBaselines()
    {
        foreach (var kind in Enum.GetValues<NodeKind>().Where(k => k is not (NodeKind.Input or NodeKind.LinearUnit)))
            ModelBundles.KindRule(BundleVariant.Gradient, kind).Should().BeOfType<GradientRule>($"{kind} in the gradient variant");
        foreach (var name in new[] { "gradient", "gradient-x-input" })
            MethodCatalog.Get(name).CreateDefault().Variant.Should().Be(BundleVariant.Gradient);
    }

    [Fact]
    public void TheCnnBundleHoldsTheDocumentedRules()
    {
        // docs/rules-and-composites.md and docs/root-inference*.md, written here independently
        var expected = new Dictionary<BundleVariant, Dictionary<NodeKind, Type>>
        {
            [BundleVariant.Lrp] = new()
            {
                [NodeKind.Activation] = typeof(PassRule), [NodeKind.Shape] = typeof(PassRule), [NodeKind.BatchNorm] = typeof(PassRule),
                [NodeKind.AvgPool] = typeof(NormRule), [NodeKind.Sum] = typeof(NormRule), [NodeKind.MaxPool] = typeof(GradientRule),
            },
            [BundleVariant.RootInference] = new()
            {
                [NodeKind.Activation] = typeof(PassRule), [NodeKind.Shape] = typeof(PassRule), [NodeKind.BatchNorm] = typeof(PassRule),
                [NodeKind.AvgPool] = typeof(NormRule), [NodeKind.Sum] = typeof(NormRule), [NodeKind.MaxPool] = typeof(NormRule),
            },
            [BundleVariant.PublishedRootInference] = new()
            {
                [NodeKind.Activation] = typeof(PublishedReluRule), [NodeKind.Shape] = typeof(PassRule), [NodeKind.BatchNorm] = typeof(PassRule),
                [NodeKind.AvgPool] = typeof(PublishedAvgPoolRule), [NodeKind.Sum] = typeof(PublishedSkipRule), [NodeKind.MaxPool] = typeof(PublishedMaxPoolRule),
            },
        };
        foreach (var (variant, kinds) in expected)
            foreach (var (kind, type) in kinds)
                ModelBundles.KindRule(variant, kind).Should().BeOfType(type, $"{variant}/{kind}");
        // the spec's stabiliser on the root composites' pooling and sums, zennit's on the LRP ones
        ((NormRule)ModelBundles.KindRule(BundleVariant.RootInference, NodeKind.Sum)!).ToString().Should().Be(new NormRule(Stabilizer.Spec).ToString());
        ((NormRule)ModelBundles.KindRule(BundleVariant.Lrp, NodeKind.Sum)!).ToString().Should().Be(new NormRule().ToString());
        ModelBundles.Canonizers(BundleVariant.Lrp).Select(c => c.Name).Should().Equal("merge-batchnorm");
        ModelBundles.Canonizers(BundleVariant.PublishedRootInference).Should().BeEmpty();
    }

    [Fact]
    public void AKindSharedByTwoFamiliesMeansTheSameInEach()
    {
        var bundles = ModelBundles.All;
        foreach (var a in bundles)
            foreach (var b in bundles.Where(b => !ReferenceEquals(a, b)))
                foreach (var (variant, rules) in a.Variants)
                    if (b.Variants.TryGetValue(variant, out var other))
                        foreach (var kind in rules.KindRules.Keys.Intersect(other.KindRules.Keys))
                            other.KindRules[kind]().ToString().Should().Be(rules.KindRules[kind]().ToString(), $"{kind} in {a.Family} and {b.Family}, variant {variant}");
    }

    [Fact]
    public void ExplicitMappingsStillWinAndAMissingKindIsAnErrorNotADefault()
    {
        using var scope = torch.NewDisposeScope();
        using var graph = GraphBuilder.Build(TestNets.SmallResNet());
        var custom = new Composite("custom").ForAllUnits(new EpsilonRule(0.1)).ForKind(NodeKind.Sum, PassRule.Instance);
        var rules = custom.Resolve(graph);
        graph.Nodes.Where(n => n.Kind == NodeKind.Sum).Should().OnlyContain(n => rules[n.Index] is PassRule);
        graph.Nodes.Where(n => n.Kind == NodeKind.AvgPool).Should().OnlyContain(n => rules[n.Index] is NormRule);

        var unknownVariant = new Composite("new-family-method") { Variant = new BundleVariant("no-bundle-defines-this") }.ForAllUnits(new EpsilonRule(0.1));
        FluentActions.Invoking(() => unknownVariant.Resolve(graph)).Should().Throw<ExplanationException>()
            .WithMessage("*'new-family-method' has no rule for 'bn1' (BatchNorm)*variant 'no-bundle-defines-this'*ForKind(NodeKind.BatchNorm*");
        unknownVariant.Canonizers.Should().BeEmpty("no bundle gives canonizers to an unknown variant");
    }

    [Fact]
    public void ABundleMustGiveEveryVariantARuleForEachOfItsKinds()
    {
        var rules = new BundleRules(new Dictionary<NodeKind, Func<Rule>> { [NodeKind.Activation] = () => PassRule.Instance }, () => Array.Empty<ICanonizer>());
        FluentActions.Invoking(() => new ModelBundle("Toy", "test", new[] { NodeKind.Activation, NodeKind.Sum },
                new Dictionary<BundleVariant, BundleRules> { [BundleVariant.Lrp] = rules }))
            .Should().Throw<ArgumentException>().WithMessage("*'Toy'*'lrp'*no rule for Sum*");
        FluentActions.Invoking(() => ModelBundles.Register(new ModelBundle("cnn", "duplicate", Array.Empty<NodeKind>(), new Dictionary<BundleVariant, BundleRules>())))
            .Should().Throw<ArgumentException>().WithMessage("*already registered*");
    }
}
