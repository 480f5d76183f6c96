using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Metrics;
using RootDtd.Evaluation.Training;
using RootDtd.Models;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;

namespace RootDtd.Evaluation.Tests.Benchmark;

public class VitBenchmarkTests
{
    private readonly ITestOutputHelper _out;

    public VitBenchmarkTests(ITestOutputHelper output) => _out = output;

    /// <summary>A tiny ViT on the 64² synthetic images: patch 16 (4×4 patches), width 16, 2 blocks, 2 heads.</summary>
    private static VisionTransformer TinyVit()
    {
        torch.random.manual_seed(21);
        var model = new VisionTransformer(new VisionTransformerOptions { ImageSize = 64, PatchSize = 16, EmbedDim = 16, Depth = 2, NumHeads = 2, MlpRatio = 2, NumClasses = 6 });
        model.eval();
        return model;
    }

    private static BenchmarkResult Run(IReadOnlyList<BenchmarkMethod> methods, BenchmarkProtocols protocols, IReadOnlyList<RootAblation>? ablations = null, TextWriter? log = null)
    {
        using var model = TinyVit();
        var (images, masks, labels) = SyntheticModels.GenerateSplit(seed: 99, count: 2);
        using (images)
        using (masks)
        using (labels)
        {
            var options = new BenchmarkOptions
            {
                ModelName = "tiny-vit",
                Methods = methods,
                Ablations = ablations ?? Array.Empty<RootAblation>(),
                Protocols = protocols,
                BatchSize = 2,
                PgdSamples = 2,
                Pgd = new PgdOptions { MaxIterations = 1 },
                GallerySamples = 2,
                SanitySamples = 1,
                Sanity = new SanityCheckOptions { Groups = 2 },
            };
            return new BenchmarkRunner(model, options, log: log).Run(images, masks, labels);
        }
    }

    [Fact]
    public void RootOnAVitIsJudgedByTheTransformerTraitsNotByTheCnnConservationWarning()
    {
        // root conserves on a CNN (warning above 0.5 relative error) but only approximately on a transformer
        // (MethodTraits.On: warning above 1000); the run's end-of-method warning must use the graph's traits
        var log = new StringWriter();
        var result = Run(new[] { BenchmarkMethod.Of("root:steps=5") }, BenchmarkProtocols.Perturbation, log: log);
        var root = result.Methods.Single();
        root.Error.Should().BeNull();
        root.ConservationError.Should().BeInRange(0.5, 1000, "this tiny ViT's root error lies where the CNN threshold would warn and the transformer one does not");
        log.ToString().Should().NotContain("warning: 'root:steps=5'", log.ToString());
    }

    [Fact]
    public void VitListsAreWhatFullDemoAndAblationsMeanOnATransformer()
    {
        BenchmarkMethods.Vit.Select(m => m.Spec).Should().Equal("rollout", "raw-attention", "chefer", "chefer-root", "cp-lrp", "attn-lrp", "root", "gradient-x-input", "gradcam",
            "smoothgrad", "integrated-gradients", "occlusion");
        BenchmarkMethods.ParseList("full", transformer: true).Should().BeSameAs(BenchmarkMethods.Vit);
        BenchmarkMethods.ParseList("all", transformer: true).Should().BeSameAs(BenchmarkMethods.Vit);
        BenchmarkMethods.ParseList("demo", transformer: true).Should().BeSameAs(BenchmarkMethods.VitDemo);
        BenchmarkMethods.ParseList("full").Should().BeSameAs(BenchmarkMethods.Full);
        BenchmarkMethods.AblationsFor(true).Should().BeSameAs(BenchmarkMethods.VitAblations);
        BenchmarkMethods.AblationsFor(false).Should().BeSameAs(BenchmarkMethods.Ablations);
        BenchmarkMethods.VitAblations.Select(a => a.Spec).Should().Equal(
            "root", "root:steps=0", "root:steps=5", "root:steps=20", "root:positive=0", "root:gelu=taylor2",
            "chefer-root", "chefer-root:steps=0", "chefer-root:steps=5", "chefer-root:steps=20");

        // every method resolves, or the catalog lacks it (chefer-root before it lands) and the skip says so
        var ok = BenchmarkMethods.Resolve(BenchmarkMethods.Vit, out var skipped);
        foreach (var s in skipped)
        {
            MethodCatalog.TryGet(s.Spec).Should().BeNull();
            s.Reason.Should().Contain(s.Spec);
        }
        ok.Select(m => m.Spec).Concat(skipped.Select(s => s.Spec)).Should().BeEquivalentTo(BenchmarkMethods.Vit.Select(m => m.Spec));
        ok.Select(m => m.Spec).Should().Contain(new[] { "rollout", "raw-attention", "chefer", "cp-lrp", "attn-lrp", "root", "gradient-x-input", "gradcam", "smoothgrad", "integrated-gradients", "occlusion" });

        var ablations = BenchmarkMethods.ResolveAblations(BenchmarkMethods.VitAblations, out var skippedAblations);
        ablations.Select(a => a.Label).Should().Contain(new[] { "root (default)", "root steps = 0", "root steps = 5", "root steps = 20", "root positive constraint off" });
        ablations.Single(a => a.Label == "root steps = 0").Method!.Options.Should().BeOfType<RootDtd.Rules.RootInference.RootInferenceOptions>().Which.Steps.Should().Be(0);
        foreach (var s in skippedAblations) s.Reason.Should().MatchRegex("chefer-root|gelu");
    }

    [Fact]
    public void EveryProtocolRunsOnAViTAndTheLinearRegionCheckIsMarkedNotApplicable()
    {
        var methods = new[] { BenchmarkMethod.Of("rollout"), BenchmarkMethod.Of("chefer"), BenchmarkMethod.Of("root:steps=2"), BenchmarkMethod.Of("gradient-x-input"), BenchmarkMethod.Of("gradcam") };
        var ablations = new[] { RootAblation.OfSpec("root steps = 0", "root:steps=0"), RootAblation.OfSpec("no such parameter", "root:nosuch=1") };
        var result = Run(methods, BenchmarkProtocols.All, ablations);

        result.Methods.Select(m => m.Label).Should().Equal("rollout", "chefer", "root:steps=2", "gradient-x-input", "gradcam");
        result.Methods.Should().OnlyContain(m => m.Error == null);
        foreach (var m in result.Methods)
        {
            m.Curves.Should().HaveCount(4, "{0}: coarse and fine, both orders", m.Label);
            m.Localization.Should().NotBeNull();
            m.Pgd.Should().NotBeNull();
            m.Sanity.Should().NotBeNull();
            m.LinearRegions.Should().BeEmpty("{0}: ReLU's linear-region check does not apply to a transformer", m.Label);
            m.MillisecondsPerImage.Should().BePositive();
        }

        // f(N) applies where root inference runs on the input layer, the patch convolution
        result.Methods.Single(m => m.Label == "root:steps=2").RootScores.Should().NotBeNull();
        result.Methods.Single(m => m.Label == "root:steps=2").RootUnit.Should().Be("patch_embed.proj");
        result.Methods.Single(m => m.Label == "chefer").RootScores.Should().BeNull();
        result.Ablations.Select(a => a.Label).Should().Equal("root steps = 0");
        result.Ablations[0].Error.Should().BeNull();
        result.Skipped.Should().ContainSingle(s => s.Label == "no such parameter");

        var md = BenchmarkReport.ToMarkdown(result);
        md.Should().Contain("| chefer |").And.Contain("| rollout |").And.Contain("Input-layer unit: `patch_embed.proj`");
        md.Should().Contain("on a transformer the check does not apply");
        md.Should().Contain("| root steps = 0 (`root:steps=0`) |");
    }
}
