using FluentAssertions;
using RootDtd.Composites;
using RootDtd.Graph;
using RootDtd.Models;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace RootDtd.Tests.Core;

/// <summary>TorchSharp's own nn.MultiheadAttention, described by AttentionAdapters: the same weights as timm's layout give the same relevance.</summary>
public class AttentionAdapterTests
{
    private const int Dim = 12, Heads = 3, Tokens = 5, Classes = 4;

    /// <summary>x + attn(norm(x)) with timm's attention, head on token 0.</summary>
    private sealed class TimmNet : nn.Module<Tensor, Tensor>
    {
        public readonly LayerNorm norm;
        public readonly VitAttention attn;
        public readonly Linear head;

        public TimmNet() : base("TimmNet")
        {
            norm = nn.LayerNorm(new long[] { Dim }, 1e-6);
            attn = new VitAttention(Dim, Heads, qkvBias: true);
            head = nn.Linear(Dim, Classes);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x) => head.forward((x + attn.forward(norm.forward(x))).select(1, 0));
    }

    /// <summary>The same with TorchSharp's MultiheadAttention (sequence first).</summary>
    private sealed class TorchNet : nn.Module<Tensor, Tensor>
    {
        public readonly LayerNorm norm;
        public readonly MultiheadAttention attn;
        public readonly Linear head;

        public TorchNet() : base("TorchNet")
        {
            norm = nn.LayerNorm(new long[] { Dim }, 1e-6);
            attn = nn.MultiheadAttention(Dim, Heads);
            head = nn.Linear(Dim, Classes);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            var y = norm.forward(x).transpose(0, 1);
            var a = attn.call(y, y, y, null, false, null).Item1.transpose(0, 1);
            return head.forward((x + a).select(1, 0));
        }
    }

    private static ModuleAdapters Adapters()
    {
        var r = ModuleAdapters.CreateBuiltIn();
        int Tail(GraphBuilder b, string path, nn.Module head, int x, int attention)
        {
            var sum = b.AddNamed(new SumNode("add", new[] { x, attention }));
            var cls = b.AddNamed(new OperationNode("pool", NodeKind.Select, sum, t => t.select(1, 0)));
            return b.AddModule("head", head, cls);
        }
        r.Register<TimmNet>((b, path, m, x) =>
        {
            var net = (TimmNet)m;
            var y = b.AddModule("norm", net.norm, x);
            return Tail(b, path, net.head, x, b.NameOutput("attn", TransformerAdapters.AddAttention(b, "attn", net.attn, y)));
        });
        r.Register<TorchNet>((b, path, m, x) =>
        {
            var net = (TorchNet)m;
            var y = b.AddModule("norm", net.norm, x);
            return Tail(b, path, net.head, x, AttentionAdapters.AddSelfAttention(b, "attn", net.attn, y, Heads));
        });
        return r;
    }

    [Theory]
    [InlineData("cp-lrp:epsilon=0")]
    [InlineData("attn-lrp")]
    [InlineData("gradient")]
    public void SameWeightsInBothLayoutsGiveTheSameRelevance(string method)
    {
        using var _ = torch.NewDisposeScope();
        torch.manual_seed(21);
        using var timm = new TimmNet();
        using var torchNet = new TorchNet();
        using (torch.no_grad())
        {
            foreach (var (name, p) in timm.named_parameters()) p.copy_(torch.randn_like(p) * 0.5);
            var t = timm.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            var o = torchNet.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            o["norm.weight"].copy_(t["norm.weight"]);
            o["norm.bias"].copy_(t["norm.bias"]);
            o["attn.in_proj_weight"].copy_(t["attn.qkv.weight"]);
            o["attn.in_proj_bias"].copy_(t["attn.qkv.bias"]);
            o["attn.out_proj.weight"].copy_(t["attn.proj.weight"]);
            o["attn.out_proj.bias"].copy_(t["attn.proj.bias"]);
            o["head.weight"].copy_(t["head.weight"]);
            o["head.bias"].copy_(t["head.bias"]);
        }
        timm.to(float64).eval();
        torchNet.to(float64).eval();
        var x = torch.randn(2, Tokens, Dim, dtype: float64);
        var options = new ExplainerOptions { Adapters = Adapters(), RecordLayers = new[] { "attn.softmax" } };
        using var a = new Explainer(timm, MethodCatalog.Parse(method), options);
        using var b = new Explainer(torchNet, MethodCatalog.Parse(method), options);
        using var ea = a.Explain(x, new long[] { 1, 3 });
        using var eb = b.Explain(x, new long[] { 1, 3 });   // the forward check compares the graph with the native module
        TestNets.RelativeDifference(eb.Logits, ea.Logits).Should().BeLessThan(1e-12);
        TestNets.RelativeDifference(eb.InputRelevance, ea.InputRelevance).Should().BeLessThan(1e-10);
        TestNets.RelativeDifference(eb.LayerRelevance["attn.softmax"], ea.LayerRelevance["attn.softmax"]).Should().BeLessThan(1e-10);
        ea.InputRelevance.abs().max().item<double>().Should().BeGreaterThan(0);
    }

    [Fact]
    public void AHeadCountThatDoesNotDivideTheWidthIsRefused()
    {
        using var net = new TorchNet();
        var r = ModuleAdapters.CreateBuiltIn();
        r.Register<TorchNet>((b, path, m, x) => AttentionAdapters.AddSelfAttention(b, "attn", ((TorchNet)m).attn, x, 5));
        var act = () => new Explainer(net, MethodCatalog.Parse("cp-lrp"), new ExplainerOptions { Adapters = r });
        act.Should().Throw<ArgumentException>().WithMessage("*MultiheadAttention 'attn'*5 heads*width 12*");
    }
}
