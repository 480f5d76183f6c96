using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Models;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

/// <summary>
/// Transformers built from TorchSharp's own modules: a pre-norm ViT of nn.MultiheadAttention / LayerNorm / Linear gives
/// the timm-layout VisionTransformer's relevance with the same weights, and TorchSharp's native
/// nn.TransformerEncoder(Layer) (post-norm; heads and activation recognised from the module) gives the relevance of the
/// same post-norm encoder written with those modules. Float64 throughout; every explanation passes the forward check
/// against the model itself.
/// </summary>
public sealed class EncoderLayerAdapterTests
{
    private const int Image = 16, Patch = 4, Dim = 16, Heads = 2, Depth = 2, Hidden = 32, Classes = 5;
    private const int Tokens = (Image / Patch) * (Image / Patch) + 1;

    /// <summary>image → patch conv → [cls; tokens] + pos → body → class token → head; the body is the subclass's.</summary>
    private abstract class TokenNet : nn.Module<Tensor, Tensor>
    {
        public readonly Conv2d proj;
        public readonly Parameter cls_token;
        public readonly Parameter pos_embed;
        public readonly Linear head;

        protected TokenNet(string name) : base(name)
        {
            proj = nn.Conv2d(3, Dim, Patch, stride: Patch);
            cls_token = new Parameter(torch.zeros(1, 1, Dim));
            pos_embed = new Parameter(torch.zeros(1, Tokens, Dim));
            head = nn.Linear(Dim, Classes);
        }

        protected abstract Tensor Body(Tensor tokens);

        public override Tensor forward(Tensor x)
        {
            var t = proj.forward(x).flatten(2).transpose(1, 2);
            var h = torch.cat(new[] { cls_token.expand(x.shape[0], -1, -1), t }, 1) + pos_embed;
            return head.forward(Body(h).select(1, 0));
        }

        /// <summary>The graph of <see cref="forward"/> with <paramref name="body"/> describing the body (batch-first tokens in and out).</summary>
        public int Describe(GraphBuilder b, int x, Func<int, int> body)
        {
            b.TokenLayout = new TokenLayout(1, Image / Patch, Image / Patch);
            var conv = b.AddModule("proj", proj, x);
            var tokens = b.AddNamed(new OperationNode("tokens", NodeKind.Rearrange, conv, t => t.flatten(2).transpose(1, 2)));
            var cls = b.AddNamed(new ParameterNode("cls_token", cls_token));
            var cat = b.AddNamed(new ConcatNode("cat_cls_token", new[] { cls, tokens }, 1));
            var pos = b.AddNamed(new ParameterNode("pos_embed", pos_embed));
            var h = body(b.AddNamed(new SumNode("add_pos_embed", new[] { cat, pos })));
            var pooled = b.AddNamed(new OperationNode("pool", NodeKind.Select, h, t => t.select(1, 0)));
            return b.AddModule("head", head, pooled);
        }
    }

    /// <summary>A pre-norm ViT (timm's block) of TorchSharp modules: nn.MultiheadAttention, LayerNorm, Linear, GELU.</summary>
    private sealed class ModulePreNormVit : TokenNet
    {
        public readonly ModuleList<LayerNorm> norm1 = new(), norm2 = new();
        public readonly ModuleList<MultiheadAttention> attn = new();
        public readonly ModuleList<Linear> fc1 = new(), fc2 = new();
        public readonly GELU act = nn.GELU();
        public readonly LayerNorm norm = nn.LayerNorm(new long[] { Dim }, 1e-6);

        public ModulePreNormVit() : base(nameof(ModulePreNormVit))
        {
            for (var i = 0; i < Depth; i++)
            {
                norm1.Add(nn.LayerNorm(new long[] { Dim }, 1e-6));
                norm2.Add(nn.LayerNorm(new long[] { Dim }, 1e-6));
                attn.Add(nn.MultiheadAttention(Dim, Heads));
                fc1.Add(nn.Linear(Dim, Hidden));
                fc2.Add(nn.Linear(Hidden, Dim));
            }
            RegisterComponents();
        }

        protected override Tensor Body(Tensor h)
        {
            for (var i = 0; i < Depth; i++)
            {
                var y = norm1[i].forward(h).transpose(0, 1);
                h = h + attn[i].call(y, y, y, null, false, null).Item1.transpose(0, 1);
                h = h + fc2[i].forward(act.forward(fc1[i].forward(norm2[i].forward(h))));
            }
            return norm.forward(h);
        }

        public static ModuleAdapters Adapters()
        {
            var r = ModuleAdapters.CreateBuiltIn();
            r.Register<ModulePreNormVit>((b, path, m, x) =>
            {
                var net = (ModulePreNormVit)m;
                return net.Describe(b, x, h =>
                {
                    for (var i = 0; i < Depth; i++)
                    {
                        var y = b.AddModule($"norm1.{i}", net.norm1[i], h);
                        var a = AttentionAdapters.AddSelfAttention(b, $"attn.{i}", net.attn[i], y, Heads);
                        h = b.AddNamed(new SumNode($"add_attn.{i}", new[] { h, a }));
                        var f = b.AddModule($"fc2.{i}", net.fc2[i], b.AddModule($"act.{i}", net.act, b.AddModule($"fc1.{i}", net.fc1[i], b.AddModule($"norm2.{i}", net.norm2[i], h))));
                        h = b.AddNamed(new SumNode($"add_mlp.{i}", new[] { h, f }));
                    }
                    return b.AddModule("norm", net.norm, h);
                });
            });
            return r;
        }
    }

    /// <summary>TorchSharp's native post-norm encoder on sequence-first tokens; its adapter is built in.</summary>
    private sealed class NativeEncoderVit : TokenNet
    {
        public readonly TransformerEncoder encoder;

        public NativeEncoderVit(nn.Activations activation) : base(nameof(NativeEncoderVit))
        {
            encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(Dim, Heads, Hidden, 0.1, activation), Depth);
            RegisterComponents();
        }

        protected override Tensor Body(Tensor h) => encoder.call(h.transpose(0, 1)).transpose(0, 1);

        public static ModuleAdapters Adapters()
        {
            var r = ModuleAdapters.CreateBuiltIn();
            r.Register<NativeEncoderVit>((b, path, m, x) =>
            {
                var net = (NativeEncoderVit)m;
                return net.Describe(b, x, h =>
                {
                    var s = b.AddNamed(new OperationNode("to_sequence_first", NodeKind.Rearrange, h, t => t.transpose(0, 1)));
                    var e = b.AddModule("encoder", net.encoder, s);   // the built-in TransformerEncoder adapter
                    return b.AddNamed(new OperationNode("to_batch_first", NodeKind.Rearrange, e, t => t.transpose(0, 1)));
                });
            });
            return r;
        }
    }

    /// <summary>The same post-norm encoder written with TorchSharp modules (nn.MultiheadAttention, LayerNorm ε 1e-5, Linear, ReLU/GELU).</summary>
    private sealed class ModulePostNormVit : TokenNet
    {
        public readonly ModuleList<LayerNorm> norm1 = new(), norm2 = new();
        public readonly ModuleList<MultiheadAttention> attn = new();
        public readonly ModuleList<Linear> fc1 = new(), fc2 = new();
        public readonly nn.Module<Tensor, Tensor> act;

        public ModulePostNormVit(nn.Activations activation) : base(nameof(ModulePostNormVit))
        {
            act = activation == nn.Activations.GELU ? nn.GELU() : nn.ReLU();
            for (var i = 0; i < Depth; i++)
            {
                norm1.Add(nn.LayerNorm(new long[] { Dim }, 1e-5));
                norm2.Add(nn.LayerNorm(new long[] { Dim }, 1e-5));
                attn.Add(nn.MultiheadAttention(Dim, Heads));
                fc1.Add(nn.Linear(Dim, Hidden));
                fc2.Add(nn.Linear(Hidden, Dim));
            }
            RegisterComponents();
        }

        protected override Tensor Body(Tensor h)
        {
            for (var i = 0; i < Depth; i++)
            {
                var s = h.transpose(0, 1);
                h = norm1[i].forward(h + attn[i].call(s, s, s, null, false, null).Item1.transpose(0, 1));
                h = norm2[i].forward(h + fc2[i].forward(act.forward(fc1[i].forward(h))));
            }
            return h;
        }

        public static ModuleAdapters Adapters()
        {
            var r = ModuleAdapters.CreateBuiltIn();
            r.Register<ModulePostNormVit>((b, path, m, x) =>
            {
                var net = (ModulePostNormVit)m;
                return net.Describe(b, x, h =>
                {
                    for (var i = 0; i < Depth; i++)
                    {
                        var a = AttentionAdapters.AddSelfAttention(b, $"attn.{i}", net.attn[i], h, Heads);
                        h = b.AddModule($"norm1.{i}", net.norm1[i], b.AddNamed(new SumNode($"add_attn.{i}", new[] { h, a })));
                        var f = b.AddModule($"fc2.{i}", net.fc2[i], b.AddModule($"act.{i}", net.act, b.AddModule($"fc1.{i}", net.fc1[i], h)));
                        h = b.AddModule($"norm2.{i}", net.norm2[i], b.AddNamed(new SumNode($"add_ff.{i}", new[] { h, f })));
                    }
                    return h;
                });
            });
            return r;
        }
    }

    private static Dictionary<string, Parameter> Parameters(nn.Module m) => m.named_parameters().ToDictionary(p => p.name, p => p.parameter);

    private static void Randomize(nn.Module m, long seed)
    {
        torch.manual_seed(seed);
        using var _ = torch.no_grad();
        foreach (var (name, p) in m.named_parameters())
        {
            if (name.Contains("norm", StringComparison.Ordinal) && name.EndsWith("weight", StringComparison.Ordinal)) p.copy_(1 + 0.2 * torch.randn_like(p));
            else if (p.dim() >= 2 && !name.Contains("embed", StringComparison.Ordinal) && !name.Contains("token", StringComparison.Ordinal))
                p.copy_(torch.randn_like(p) / Math.Sqrt(p[0].numel()));
            else p.copy_(0.3 * torch.randn_like(p));
        }
    }

    private static void CopyCommon(Dictionary<string, Parameter> to, Func<string, Tensor> from)
    {
        foreach (var key in new[] { "proj.weight", "proj.bias", "cls_token", "pos_embed", "head.weight", "head.bias" }) to[key].copy_(from(key));
    }

    private static (Explanation A, Explanation B) ExplainBoth(nn.Module a, ModuleAdapters? adaptersA, nn.Module b, ModuleAdapters adaptersB, string method, Tensor x)
    {
        using var ea = new Explainer(a, MethodCatalog.Parse(method), new ExplainerOptions { Adapters = adaptersA });
        using var eb = new Explainer(b, MethodCatalog.Parse(method), new ExplainerOptions { Adapters = adaptersB });
        var targets = new long[] { 1, 3 };
        return (ea.Explain(x, targets), eb.Explain(x, targets));
    }

    private static void ShouldAgree(Explanation a, Explanation b, string because)
    {
        TestNets.RelativeDifference(b.Logits, a.Logits).Should().BeLessThan(1e-12, because);
        TestNets.RelativeDifference(b.InputRelevance, a.InputRelevance).Should().BeLessThan(1e-10, because);
        a.InputRelevance.abs().max().item<double>().Should().BeGreaterThan(0, because);
        (a.TokenMap is null).Should().Be(b.TokenMap is null);
        if (a.TokenMap is not null) TestNets.RelativeDifference(b.TokenMap!, a.TokenMap).Should().BeLessThan(1e-10, because);
    }

    [Theory]
    [InlineData("cp-lrp:epsilon=0")]
    [InlineData("attn-lrp")]
    [InlineData("chefer")]
    [InlineData("gradient")]
    public void APreNormVitOfTorchSharpModulesGivesTheTimmLayoutVitsRelevance(string method)
    {
        using var _ = torch.NewDisposeScope();
        using var timm = new VisionTransformer(new VisionTransformerOptions { ImageSize = Image, PatchSize = Patch, EmbedDim = Dim, Depth = Depth, NumHeads = Heads, MlpRatio = (double)Hidden / Dim, NumClasses = Classes });
        using var net = new ModulePreNormVit();
        Randomize(timm, 61);
        using (torch.no_grad())
        {
            var t = Parameters(timm);
            var o = Parameters(net);
            CopyCommon(o, k => t[k switch { "proj.weight" => "patch_embed.proj.weight", "proj.bias" => "patch_embed.proj.bias", _ => k }]);
            for (var i = 0; i < Depth; i++)
            {
                foreach (var (mine, theirs) in new[]
                {
                    ($"norm1.{i}.weight", $"blocks.{i}.norm1.weight"), ($"norm1.{i}.bias", $"blocks.{i}.norm1.bias"),
                    ($"norm2.{i}.weight", $"blocks.{i}.norm2.weight"), ($"norm2.{i}.bias", $"blocks.{i}.norm2.bias"),
                    ($"attn.{i}.in_proj_weight", $"blocks.{i}.attn.qkv.weight"), ($"attn.{i}.in_proj_bias", $"blocks.{i}.attn.qkv.bias"),
                    ($"attn.{i}.out_proj.weight", $"blocks.{i}.attn.proj.weight"), ($"attn.{i}.out_proj.bias", $"blocks.{i}.attn.proj.bias"),
                    ($"fc1.{i}.weight", $"blocks.{i}.mlp.fc1.weight"), ($"fc1.{i}.bias", $"blocks.{i}.mlp.fc1.bias"),
                    ($"fc2.{i}.weight", $"blocks.{i}.mlp.fc2.weight"), ($"fc2.{i}.bias", $"blocks.{i}.mlp.fc2.bias"),
                })
                    o[mine].copy_(t[theirs]);
            }
            o["norm.weight"].copy_(t["norm.weight"]);
            o["norm.bias"].copy_(t["norm.bias"]);
        }
        timm.to(float64).eval();
        net.to(float64).eval();
        var x = torch.randn(new long[] { 2, 3, Image, Image }, float64, generator: torch.manual_seed(62));
        var (a, b) = ExplainBoth(timm, null, net, ModulePreNormVit.Adapters(), method, x);
        using (a)
        using (b)
            ShouldAgree(a, b, method);
    }

    [Theory]
    [InlineData("cp-lrp:epsilon=0", nn.Activations.ReLU)]
    [InlineData("attn-lrp", nn.Activations.ReLU)]
    [InlineData("chefer", nn.Activations.ReLU)]
    [InlineData("cp-lrp:epsilon=0", nn.Activations.GELU)]
    [InlineData("attn-lrp", nn.Activations.GELU)]
    [InlineData("chefer", nn.Activations.GELU)]
    [InlineData("gradient", nn.Activations.GELU)]
    public void TorchSharpsNativeEncoderGivesTheRelevanceOfTheSameEncoderWrittenWithModules(string method, nn.Activations activation)
    {
        using var _ = torch.NewDisposeScope();
        using var native = new NativeEncoderVit(activation);
        using var modules = new ModulePostNormVit(activation);
        Randomize(native, 71);
        using (torch.no_grad())
        {
            var n = Parameters(native);
            var o = Parameters(modules);
            CopyCommon(o, k => n[k]);
            for (var i = 0; i < Depth; i++)
            {
                foreach (var (mine, theirs) in new[]
                {
                    ("norm1", "norm1"), ("norm2", "norm2"), ("fc1", "linear1"), ("fc2", "linear2"),
                })
                {
                    o[$"{mine}.{i}.weight"].copy_(n[$"encoder.layers.{i}.{theirs}.weight"]);
                    o[$"{mine}.{i}.bias"].copy_(n[$"encoder.layers.{i}.{theirs}.bias"]);
                }
                o[$"attn.{i}.in_proj_weight"].copy_(n[$"encoder.layers.{i}.self_attn.in_proj_weight"]);
                o[$"attn.{i}.in_proj_bias"].copy_(n[$"encoder.layers.{i}.self_attn.in_proj_bias"]);
                o[$"attn.{i}.out_proj.weight"].copy_(n[$"encoder.layers.{i}.self_attn.out_proj.weight"]);
                o[$"attn.{i}.out_proj.bias"].copy_(n[$"encoder.layers.{i}.self_attn.out_proj.bias"]);
            }
        }
        // the native model stays in training mode (dropout 0.1): explanations have eval semantics, as for any model
        native.to(float64);
        modules.to(float64).eval();
        var x = torch.randn(new long[] { 2, 3, Image, Image }, float64, generator: torch.manual_seed(72));
        var (a, b) = ExplainBoth(modules, ModulePostNormVit.Adapters(), native, NativeEncoderVit.Adapters(), method, x);
        using (a)
        using (b)
            ShouldAgree(a, b, $"{method} {activation}");
        native.training.Should().BeTrue("the model's modes are left as they were");
    }

    [Fact]
    public void ANativeEncoderLayerOnItsOwnIsRecognisedWithItsHeadsAndActivation()
    {
        using var _ = torch.NewDisposeScope();
        torch.manual_seed(81);
        foreach (var (heads, activation) in new[] { (1, nn.Activations.ReLU), (4, nn.Activations.GELU), (8, nn.Activations.ReLU) })
        {
            using var layer = nn.TransformerEncoderLayer(8, heads, 12, 0.0, activation);
            layer.to(float64).eval();
            AttentionAdapters.RecogniseEncoder("layer", layer, 1).Should().Be((heads, activation));
            using var graph = GraphBuilder.Build(nn.Sequential(("layer", layer)));
            var src = torch.randn(new long[] { 4, 3, 8 }, float64, generator: torch.manual_seed(82));
            using var noGrad = torch.no_grad();
            var outputs = graph.Forward(src);
            TestNets.RelativeDifference(outputs[graph.OutputIndex], layer.forward(src)).Should().BeLessThan(1e-12, $"{heads} heads {activation}");
            graph.Nodes.Count(n => n.Kind == NodeKind.Softmax).Should().Be(1);
        }
    }

    /// <summary>A model that calls the native encoder with a causal mask: the graph describes unmasked attention only.</summary>
    private sealed class MaskedEncoderVit : TokenNet
    {
        public readonly TransformerEncoder encoder;

        public MaskedEncoderVit() : base(nameof(MaskedEncoderVit))
        {
            encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(Dim, Heads, Hidden, 0.0), 1);
            RegisterComponents();
        }

        protected override Tensor Body(Tensor h)
        {
            var mask = torch.triu(torch.full(new long[] { Tokens, Tokens }, double.NegativeInfinity, dtype: h.dtype), 1);
            return encoder.call(h.transpose(0, 1), mask).transpose(0, 1);
        }
    }

    [Fact]
    public void AnAttentionMaskIsRefusedNamingTheEncoder()
    {
        using var _ = torch.NewDisposeScope();
        using var net = new MaskedEncoderVit();
        Randomize(net, 91);
        net.to(float64).eval();
        var r = ModuleAdapters.CreateBuiltIn();
        r.Register<MaskedEncoderVit>((b, path, m, x) =>
        {
            var n = (MaskedEncoderVit)m;
            return n.Describe(b, x, h =>
            {
                var s = b.AddNamed(new OperationNode("to_sequence_first", NodeKind.Rearrange, h, t => t.transpose(0, 1)));
                return b.AddNamed(new OperationNode("to_batch_first", NodeKind.Rearrange, b.AddModule("encoder", n.encoder, s), t => t.transpose(0, 1)));
            });
        });
        using var explainer = new Explainer(net, MethodCatalog.Parse("attn-lrp"), new ExplainerOptions { Adapters = r });
        var x = torch.randn(new long[] { 1, 3, Image, Image }, float64, generator: torch.manual_seed(92));
        explainer.Invoking(e => e.Explain(x)).Should().Throw<ExplanationException>()
            .WithMessage("*'encoder' (TransformerEncoder)*mask*");
    }

    [Fact]
    public void AHeadCountGivenByHandThatIsWrongFailsTheForwardCheck()
    {
        using var _ = torch.NewDisposeScope();
        torch.manual_seed(93);
        var layer = nn.TransformerEncoderLayer(8, 2, 12, 0.0);
        var model = nn.Sequential(("layer", layer), ("flatten", nn.Flatten()), ("head", nn.Linear(8 * 3, 2)));
        model.to(float64).eval();
        var r = ModuleAdapters.CreateBuiltIn();
        r.Register<TransformerEncoderLayer>((b, path, m, x) => AttentionAdapters.AddEncoderLayer(b, path, (TransformerEncoderLayer)m, x, 4, nn.Activations.ReLU));
        using var explainer = new Explainer(model, MethodCatalog.Parse("cp-lrp"), new ExplainerOptions { Adapters = r });
        // [N = 4, B = 3, D = 8] would be sequence-first; here the model's batch is the layer's sequence axis, which the graph follows
        var x = torch.randn(new long[] { 4, 3, 8 }, float64, generator: torch.manual_seed(94));
        explainer.Invoking(e => e.Explain(x)).Should().Throw<ExplanationException>().WithMessage("*does not reproduce*'layer'*");
    }
}
