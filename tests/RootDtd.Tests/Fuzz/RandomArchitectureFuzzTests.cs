using System.Globalization;
using FluentAssertions;
using RootDtd.Composites;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace RootDtd.Tests.Fuzz;

/// <summary>
/// Random small architectures (seeded) × every method of the catalog: relevance is finite, the conservation report
/// is finite, conservation holds where the method claims it (at <see cref="MethodTraits.ConservationTolerance"/>, with
/// the relevance absorbed where <see cref="MethodTraits.MayAbsorbAt"/> allows counted), and explaining a batch gives each
/// sample's explanation alone (float64, 1e-9 relative, root inference
/// included: its solver decides its steps on quantities accurate relative to their own size, docs/reliability.md). CI runs
/// <see cref="DefaultNets"/> nets and compares one sample per net with its explanation alone (sample seed mod 3, so
/// every position of the batch is checked across the nets); set <c>ROOTDTD_FUZZ_NETS=50</c> (or more) for the long
/// soak, which compares all three samples of every net.
/// </summary>
public sealed class RandomArchitectureFuzzTests
{
    /// <summary>Nets per CI run.</summary>
    public const int DefaultNets = 6;

    /// <summary>Largest relative difference between a batch explanation and the same sample alone.</summary>
    public const double BatchTolerance = 1e-9;

    private readonly ITestOutputHelper _output;

    public RandomArchitectureFuzzTests(ITestOutputHelper output) => _output = output;

    private static int? SoakNets =>
        int.TryParse(Environment.GetEnvironmentVariable("ROOTDTD_FUZZ_NETS"), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && n > 0 ? n : null;

    private static int NetCount => SoakNets ?? DefaultNets;

    /// <summary>The samples of net <paramref name="seed"/> compared with their explanation alone.</summary>
    private static IEnumerable<int> SinglesOf(int seed) => SoakNets is null ? new[] { seed % 3 } : new[] { 0, 1, 2 };

    /// <summary>A random CNN or MLP: conv blocks (optional bias, BatchNorm, max/avg pooling), flatten, dense layers.</summary>
    internal static (Sequential Net, long[] InputShape, string Description) RandomNet(int seed)
    {
        var random = new Random(seed);
        torch.manual_seed(seed);
        var layers = new List<(string, nn.Module<Tensor, Tensor>)>();
        var parts = new List<string>();
        bool mlp = random.Next(5) == 0;
        long channels = 3, size = random.Next(6, 11);
        long[] shape;
        long features;
        if (mlp)
        {
            features = random.Next(4, 12);
            shape = new[] { features };
        }
        else
        {
            shape = new[] { channels, size, size };
            int blocks = random.Next(1, 4);
            for (int b = 0; b < blocks; b++)
            {
                long outChannels = random.Next(2, 7);
                int kernel = random.Next(2) == 0 ? 1 : 3;
                bool bias = random.Next(2) == 0;
                layers.Add(($"conv{b}", nn.Conv2d(channels, outChannels, kernel, padding: kernel / 2, bias: bias)));
                parts.Add($"conv{kernel}x{kernel}({channels}→{outChannels}{(bias ? "" : ",nobias")})");
                if (random.Next(2) == 0)
                {
                    var bn = nn.BatchNorm2d(outChannels);
                    using (torch.no_grad())
                    {
                        bn.running_mean!.copy_(torch.randn(outChannels) * 0.2);
                        bn.running_var!.copy_(torch.rand(outChannels) + 0.5);
                        bn.weight!.copy_(torch.rand(outChannels) + 0.5);
                        bn.bias!.copy_(torch.randn(outChannels) * 0.1);
                    }
                    layers.Add(($"bn{b}", bn));
                    parts.Add("bn");
                }
                layers.Add(($"relu{b}", nn.ReLU()));
                parts.Add("relu");
                if (size >= 4 && random.Next(2) == 0)
                {
                    bool max = random.Next(2) == 0;
                    layers.Add(($"pool{b}", max ? nn.MaxPool2d(2) : nn.AvgPool2d(2)));
                    parts.Add(max ? "maxpool" : "avgpool");
                    size /= 2;
                }
                channels = outChannels;
            }
            layers.Add(("flatten", nn.Flatten()));
            features = channels * size * size;
        }
        int dense = random.Next(0, 3);
        for (int d = 0; d < dense; d++)
        {
            long width = random.Next(3, 10);
            layers.Add(($"fc{d}", nn.Linear(features, width)));
            layers.Add(($"frelu{d}", nn.ReLU()));
            parts.Add($"fc({features}→{width})+relu");
            features = width;
        }
        long classes = random.Next(2, 6);
        layers.Add(("out", nn.Linear(features, classes)));
        parts.Add($"fc({features}→{classes})");
        var net = nn.Sequential(layers.ToArray());
        net.to(float64).eval();
        return (net, shape, string.Join(" ", parts));
    }

    /// <summary>Every pixel-relevance method (token-map methods need a transformer and are tested on the ViT).</summary>
    public static IEnumerable<object[]> Methods() =>
        MethodCatalog.All.Where(m => MethodCatalog.Parse(m.Name).TokenMap is null).Select(m => new object[] { m.Name });

    [Theory]
    [MemberData(nameof(Methods))]
    public void Every_method_on_random_nets_is_finite_and_batch_independent(string method)
    {
        var problems = new List<string>();
        double worst = 0, worstConservation = 0;
        var refused = 0;
        var tolerance = BatchTolerance;
        for (int seed = 0; seed < NetCount; seed++)
        {
            using var scope = torch.NewDisposeScope();
            var (net, shape, description) = RandomNet(seed);
            using var _ = net;
            var x = torch.randn(new long[] { 3 }.Concat(shape).ToArray(), float64).clamp(-2.5, 2.5);
            var low = torch.full(shape.Length == 3 ? new long[] { shape[0] } : shape, -2.5, float64);
            var high = torch.full(shape.Length == 3 ? new long[] { shape[0] } : shape, 2.5, float64);
            using var explainer = new Explainer(net, MethodCatalog.Parse(method), new ExplainerOptions { InputLow = low, InputHigh = high });
            Explanation explained;
            try
            {
                explained = explainer.Explain(x);
            }
            catch (ArgumentException e) when (shape.Length == 1 && e.Message.Contains("needs", StringComparison.Ordinal) && !e.Message.Contains("   at ", StringComparison.Ordinal))
            {
                // image-only procedures (Grad-CAM, occlusion, AGF) refuse an MLP with a clear message: right, nothing to compare
                refused++;
                continue;
            }
            using var batch = explained;
            if (!torch.isfinite(batch.InputRelevance).all().item<bool>() || batch.Conservation.NonFiniteSamples.Count > 0)
                problems.Add($"seed {seed} ({description}): non-finite relevance");
            // conservation where the method claims it, at its traits' tolerance: Σ input + what the nodes the
            // definition lets absorb (MethodTraits.MayAbsorbAt) absorbed, against the start relevance
            var traits = MethodTraits.Of(explainer.Composite).On(explainer.Graph);
            if (traits.Conservation != ConservationExpectation.NotExpected)
            {
                var sites = explainer.Graph.Nodes.Where(n => traits.MayAbsorbAt(n.Kind)).Select(n => n.Name).ToHashSet(StringComparer.Ordinal);
                for (int k = 0; k < 3; k++)
                {
                    var start = batch.Conservation.StartRelevance[k];
                    var absorbed = batch.Conservation.Absorbed.Where(a => sites.Contains(a.Layer)).Sum(a => a.Sums[k]);
                    var scale = Math.Max(Math.Abs(start), batch.InputRelevance[k].abs().sum().item<double>());
                    var error = Math.Abs(batch.Conservation.InputSum[k] + absorbed - start) / Math.Max(scale, 1e-300);
                    worstConservation = Math.Max(worstConservation, error);
                    if (!(error <= traits.ConservationTolerance))
                        problems.Add($"seed {seed} sample {k} ({description}): conservation error {error:g3} (Σ input {batch.Conservation.InputSum[k]:g6} + absorbed at {traits.Conservation} sites {absorbed:g6} vs start {start:g6}) above {traits.ConservationTolerance:g2}");
                }
            }
            foreach (var i in SinglesOf(seed))
            {
                using var single = explainer.Explain(x[i..(i + 1)], new[] { batch.Targets[i] });
                var a = batch.InputRelevance[i];
                var b = single.InputRelevance[0];
                var scale = Math.Max(b.abs().max().item<double>(), 1e-300);
                var difference = (a - b).abs().max().item<double>() / scale;
                worst = Math.Max(worst, difference);
                if (!(difference <= tolerance)) problems.Add($"seed {seed} sample {i} ({description}): batch vs alone {difference:g3}");
            }
        }
        _output.WriteLine($"{method}: {NetCount} nets, worst batch-vs-alone relative difference {worst:g3}, worst conservation error {worstConservation:g3} (tolerance {MethodTraits.Of(method).ConservationTolerance:g2}){(refused > 0 ? $", {refused} MLP nets refused with a clear message" : "")}");
        problems.Should().BeEmpty();
    }
}
