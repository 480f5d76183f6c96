using System.Globalization;
using System.Text.RegularExpressions;
using RootDtd.Composites;
using RootDtd.Models;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace RootDtd.Tests.Golden;

/// <summary>
/// The ViT reference file (ROOTDTD_GOLDEN_DIR/vit/vit.safetensors, see its MANIFEST.md): every key recomputed with
/// RootDtd and compared. Nothing seed-specific is assumed: the model shape comes from the state dict, targets from
/// the file, every expected tensor from the file.
/// </summary>
public static class VitGolden
{
    public static string DefaultPath => Path.Combine(GoldenCases.Directory, "vit", "vit.safetensors");

    /// <summary>Loads the file; fails (FileNotFoundException) when it is missing.</summary>
    public static Dictionary<string, Tensor> Load(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"ViT golden file {path} is missing (set ROOTDTD_GOLDEN_DIR to a folder with vit/vit.safetensors).", path);
        return Safetensors.LoadStateDict(path);
    }

    /// <summary>The ViT shape read from the state dict (model.* keys) of a golden file.</summary>
    public static VisionTransformer BuildModel(IReadOnlyDictionary<string, Tensor> tensors, double layerNormEpsilon = 1e-6)
    {
        var conv = tensors["model.patch_embed.proj.weight"];
        var pos = tensors["model.pos_embed"];
        var embed = (int)conv.shape[0];
        var patch = (int)conv.shape[2];
        var grid = (int)Math.Round(Math.Sqrt(pos.shape[1] - 1));
        var depth = tensors.Keys.Where(k => k.StartsWith("model.blocks.", StringComparison.Ordinal)).Select(k => int.Parse(k.Split('.')[2], CultureInfo.InvariantCulture)).Max() + 1;
        var hidden = (int)tensors["model.blocks.0.mlp.fc1.weight"].shape[0];
        var heads = (int)tensors["attn.blocks.0"].shape[1];
        var classes = (int)tensors["model.head.weight"].shape[0];
        return new VisionTransformer(new VisionTransformerOptions
        {
            ImageSize = grid * patch, PatchSize = patch, InChannels = (int)conv.shape[1], NumClasses = classes, EmbedDim = embed, Depth = depth,
            NumHeads = heads, MlpRatio = (double)hidden / embed, QkvBias = tensors.ContainsKey("model.blocks.0.attn.qkv.bias"), LayerNormEpsilon = layerNormEpsilon,
        });
    }

    /// <summary>The model of the file with its weights (eval mode, in <paramref name="dtype"/>).</summary>
    public static VisionTransformer OpenModel(IReadOnlyDictionary<string, Tensor> tensors, ScalarType dtype)
    {
        var model = BuildModel(tensors);
        var state = tensors.Where(kv => kv.Key.StartsWith("model.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value);
        ModelWeights.LoadStateDict(model, state, strict: true, sourceName: "vit golden");
        model.eval();
        model.to(dtype);
        return model;
    }

    /// <summary>The float32-vs-float64 spread per key from vit/MANIFEST.md next to the file (empty when absent).</summary>
    public static Dictionary<string, double> Spread(string path)
    {
        var result = new Dictionary<string, double>(StringComparer.Ordinal);
        var manifest = Path.Combine(Path.GetDirectoryName(path)!, "MANIFEST.md");
        if (!File.Exists(manifest)) return result;
        var inSection = false;
        foreach (var line in File.ReadLines(manifest))
        {
            if (line.StartsWith("## ", StringComparison.Ordinal)) inSection = line.StartsWith("## float32 vs float64", StringComparison.Ordinal);
            var m = Regex.Match(line, @"^\| ([a-z_0-9.]+) \| ([0-9.eE+-]+) \|$");
            if (inSection && m.Success) result[m.Groups[1].Value] = double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
        }
        return result;
    }

    /// <summary>The float64 twin of a key: <c>attr.cp_lrp</c> → <c>attr64.cp_lrp</c>, <c>logits</c> → <c>logits64</c>.</summary>
    public static string Twin64(string key)
    {
        var dot = key.IndexOf('.');
        return dot < 0 ? key + "64" : key[..dot] + "64" + key[dot..];
    }

    private static readonly (string Key, Func<Composite> Composite)[] LrpMethods =
    {
        ("cp_lrp", () => TransformerComposites.ConservativePropagation()),
        ("cp_lrp_eps0", () => TransformerComposites.ConservativePropagation(0)),
        ("attn_lrp", () => TransformerComposites.AttnLrp()),
        ("attn_lrp_eps0", () => TransformerComposites.AttnLrp(0)),
        ("chefer", TransformerComposites.Chefer),
    };

    /// <summary>Every quantity of the golden layout computed by RootDtd (float32 key names), in the model's dtype.</summary>
    public static Dictionary<string, Tensor> Compute(VisionTransformer model, Tensor input, long[] targets)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var depth = model.Options.Depth;
        var softmax = Enumerable.Range(0, depth).Select(i => $"blocks.{i}.attn.softmax").ToArray();
        using (torch.no_grad()) result["logits"] = model.forward(input).detach();

        var positions = new[] { "add_pos_embed", "cat_cls_token" }.Concat(Enumerable.Range(0, depth).Select(i => $"blocks.{i}")).Concat(softmax).ToArray();
        foreach (var (key, composite) in LrpMethods)
        {
            using var explainer = new Explainer(model, composite(), new ExplainerOptions { RecordLayers = positions, RecordRoots = true });
            if (key == "cp_lrp")
            {
                using var _ = torch.no_grad();
                var outputs = explainer.Graph.Forward(input);
                for (var i = 0; i < depth; i++) result[$"attn.blocks.{i}"] = outputs[explainer.Graph.ModuleOutputs[softmax[i]]].clone();
            }
            using var e = explainer.Explain(input, targets);
            if (e.TokenMap is null) result[$"attr.{key}"] = e.InputRelevance.clone();
            else result[$"map.{key}"] = e.TokenMap.clone();
            result[$"rel.{key}.patch_embed"] = e.LayerRelevance["cat_cls_token"].clone();
            result[$"rel.{key}.blocks.0"] = e.LayerRelevance["add_pos_embed"].clone();
            for (var i = 1; i < depth; i++) result[$"rel.{key}.blocks.{i}"] = e.LayerRelevance[$"blocks.{i - 1}"].clone();
            result[$"rel.{key}.norm"] = e.LayerRelevance[$"blocks.{depth - 1}"].clone();
            for (var i = 0; i < depth; i++)
            {
                result[$"attn_rel.{key}.blocks.{i}"] = e.LayerRelevance[softmax[i]].clone();
                if (e.Tensors.TryGetValue(softmax[i] + "/cam", out var cam)) result[$"cam.{key}.blocks.{i}"] = cam.clone();
            }
        }
        foreach (var (key, composite) in new (string, Func<Composite>)[] { ("gradient", () => Composites.Composites.Gradient()), ("gradient_x_input", Composites.Composites.GradientTimesInput) })
        {
            using var explainer = new Explainer(model, composite(), new ExplainerOptions { RecordLayers = softmax });
            using var e = explainer.Explain(input, targets);
            result[$"attr.{key}"] = e.InputRelevance.clone();
            if (key == "gradient")
                for (var i = 0; i < depth; i++) result[$"attn_grad.blocks.{i}"] = e.LayerRelevance[softmax[i]].clone();
        }
        foreach (var (key, composite) in new (string, Func<Composite>)[] { ("rollout", TransformerComposites.Rollout), ("raw_attention", TransformerComposites.RawAttention) })
        {
            using var explainer = new Explainer(model, composite());
            using var e = explainer.Explain(input, targets);
            result[$"map.{key}"] = e.TokenMap!.clone();
        }
        return result;
    }

    /// <summary>
    /// Compares every float key of the file (float64: the <c>*64</c> twins within <paramref name="tolerance64"/>;
    /// float32: the plain keys within <paramref name="spreadFactor"/> × the manifest spread, at least 1e-6). Returns
    /// one line per key (<c>OK</c> or <c>FAIL</c>) and whether all passed.
    /// </summary>
    public static (bool Passed, List<string> Lines) Verify(string path, ScalarType dtype, double tolerance64 = 1e-12, double spreadFactor = 10)
    {
        using var scope = torch.NewDisposeScope();
        var tensors = Load(path);
        var spread = Spread(path);
        using var model = OpenModel(tensors, dtype);
        var input = tensors["input"].to(dtype);
        var targets = tensors["target"].data<long>().ToArray();
        var computed = Compute(model, input, targets);
        var lines = new List<string>();
        var passed = true;
        var keys = tensors.Keys.Where(k => !k.StartsWith("model.", StringComparison.Ordinal) && k is not "input" and not "target" && !k.Split('.')[0].EndsWith("64", StringComparison.Ordinal)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (keys.Count == 0) return (false, new List<string> { "FAIL: the file has no reference keys" });
        foreach (var key in keys)
        {
            var expectedKey = dtype == float64 ? Twin64(key) : key;
            if (!tensors.TryGetValue(expectedKey, out var expected))
            {
                passed = false;
                lines.Add($"FAIL {expectedKey}: missing in the file");
                continue;
            }
            if (!computed.TryGetValue(key, out var actual))
            {
                passed = false;
                lines.Add($"FAIL {expectedKey}: RootDtd computes no such quantity");
                continue;
            }
            if (!actual.shape.SequenceEqual(expected.shape))
            {
                passed = false;
                lines.Add($"FAIL {expectedKey}: shape [{string.Join(", ", actual.shape)}] vs [{string.Join(", ", expected.shape)}]");
                continue;
            }
            var err = GoldenCases.RelativeError(actual, expected);
            var tol = dtype == float64 ? tolerance64 : Math.Max(1e-6, spreadFactor * spread.GetValueOrDefault(key, 1e-6));
            var ok = err <= tol;
            passed &= ok;
            lines.Add(FormattableString.Invariant($"{(ok ? "OK  " : "FAIL")} {expectedKey}: relative error {err:e2} (tolerance {tol:e1})"));
        }
        return (passed, lines);
    }
}
