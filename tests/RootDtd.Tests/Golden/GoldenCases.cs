using System.Globalization;
using System.Text.RegularExpressions;
using RootDtd.Composites;
using RootDtd.Models;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace RootDtd.Tests.Golden;

/// <summary>
/// The reference cases of ROOTDTD_GOLDEN_DIR (default: ../shared/golden next to the repository): model architectures
/// rebuilt with the manifest's module names, their state dicts, inputs, bounds, targets and reference tensors.
/// Missing files fail the tests (never skip).
/// </summary>
public static class GoldenCases
{
    public static readonly string[] Names = { "mlp", "cnn", "cnn_bn", "resnet", "vgg" };

    /// <summary>The zennit methods stored as attr.* and the RootDtd composite that computes each.</summary>
    public static readonly (string Key, Func<Composite> Composite)[] Methods =
    {
        ("lrp0", Composites.Composites.Lrp0),
        ("epsilon_0p25", () => Composites.Composites.Epsilon(0.25)),
        ("gamma_0p25", () => Composites.Composites.Gamma(0.25)),
        ("zplus", Composites.Composites.ZPlus),
        ("alpha2beta1", () => Composites.Composites.AlphaBeta(2, 1)),
        ("wsquare", Composites.Composites.WSquare),
        ("flat", Composites.Composites.Flat),
        ("zbox", Composites.Composites.ZBox),
        ("epsilon_gamma_box", () => Composites.Composites.EpsilonGammaBox()),
        ("epsilon_plus_flat", () => Composites.Composites.EpsilonPlusFlat()),
        ("epsilon_alpha2_beta1", () => Composites.Composites.EpsilonAlpha2Beta1()),
        ("gradient", () => Composites.Composites.Gradient()),
        ("gradient_x_input", Composites.Composites.GradientTimesInput),
        ("gradient_logit_scaled", () => Composites.Composites.Gradient(StartRelevance.TargetLogit)),
    };

    /// <summary>Top-level children whose output relevance is stored as rel.&lt;method&gt;.&lt;child&gt; (cnn, cnn_bn, resnet).</summary>
    public static readonly Dictionary<string, string[]> RelChildren = new()
    {
        ["cnn"] = new[] { "0", "1", "2", "3", "4", "5", "6", "7" },
        ["cnn_bn"] = new[] { "0", "1", "2", "3", "4", "5", "6", "7", "8", "9" },
        ["resnet"] = new[] { "conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc" },
    };

    public static string Directory
    {
        get
        {
            var env = Environment.GetEnvironmentVariable("ROOTDTD_GOLDEN_DIR");
            if (!string.IsNullOrWhiteSpace(env)) return Path.GetFullPath(env);
            return Path.GetFullPath(Path.Combine(RepositoryRoot(), "..", "shared", "golden"));
        }
    }

    public static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "RootDtd.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("RootDtd.sln not found above " + AppContext.BaseDirectory);
    }

    /// <summary>Loads a safetensors file of the golden folder; fails (not skips) when it is missing.</summary>
    public static Dictionary<string, Tensor> Load(string file)
    {
        var path = Path.Combine(Directory, file);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Golden file {path} is missing (set ROOTDTD_GOLDEN_DIR to a folder of reference cases).", path);
        return Safetensors.LoadStateDict(path);
    }

    public static nn.Module<Tensor, Tensor> BuildModel(string name) => name switch
    {
        "mlp" => nn.Sequential(("0", nn.Linear(20, 32)), ("1", nn.ReLU()), ("2", nn.Linear(32, 16)), ("3", nn.ReLU()), ("4", nn.Linear(16, 5))),
        "cnn" => nn.Sequential(("0", nn.Conv2d(3, 8, 3, padding: 1)), ("1", nn.ReLU()), ("2", nn.MaxPool2d(2)), ("3", nn.Conv2d(8, 16, 3, padding: 1)),
            ("4", nn.ReLU()), ("5", nn.AvgPool2d(2)), ("6", nn.Flatten()), ("7", nn.Linear(256, 10))),
        "cnn_bn" => nn.Sequential(("0", nn.Conv2d(3, 8, 3, padding: 1)), ("1", nn.BatchNorm2d(8)), ("2", nn.ReLU()), ("3", nn.MaxPool2d(2)),
            ("4", nn.Conv2d(8, 16, 3, padding: 1)), ("5", nn.BatchNorm2d(16)), ("6", nn.ReLU()), ("7", nn.AvgPool2d(2)), ("8", nn.Flatten()), ("9", nn.Linear(256, 10))),
        "resnet" => new ResNet(new[] { 2, 2, 2, 2 }, new[] { 16, 32, 64, 128 }, bottleneck: false, numClasses: 10),
        "vgg" => new Vgg(new[] { 8, 0, 16, 0, 32, 0 }, batchNorm: false, hidden: new[] { 64 }, numClasses: 10, pooledSize: 0, flattenedFeatures: 512, dropout: 0),
        _ => throw new ArgumentException("unknown case " + name),
    };

    /// <summary>A golden case: model with loaded weights (eval mode), tensors in the requested dtype.</summary>
    public sealed class Case : IDisposable
    {
        public required string Name { get; init; }
        public required nn.Module<Tensor, Tensor> Model { get; init; }
        public required Dictionary<string, Tensor> Tensors { get; init; }
        public required ScalarType DType { get; init; }
        public Tensor Input => Tensors["input"].to(DType);
        public Tensor Low => Tensors["low"].to(DType);
        public Tensor High => Tensors["high"].to(DType);
        public long[] Targets => Tensors["target"].data<long>().ToArray();

        public Tensor Reference(string key) => Tensors.TryGetValue(key, out var t)
            ? t
            : throw new KeyNotFoundException($"Golden case {Name} has no tensor '{key}'.");

        public void Dispose()
        {
            Model.Dispose();
            foreach (var t in Tensors.Values) t.Dispose();
        }
    }

    public static Case Open(string name, ScalarType dtype)
    {
        var tensors = Load(name + ".safetensors");
        var model = BuildModel(name);
        var state = tensors.Where(kv => kv.Key.StartsWith("model.", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key["model.".Length..], kv => kv.Value);
        model.load_state_dict(state, strict: true);
        model.eval();
        if (dtype == ScalarType.Float64) model.to(float64);
        return new Case { Name = name, Model = model, Tensors = tensors, DType = dtype };
    }

    /// <summary>max |a − b| / max |b|.</summary>
    public static double RelativeError(Tensor actual, Tensor expected)
    {
        using var _ = torch.NewDisposeScope();
        var a = actual.to(float64).cpu();
        var e = expected.to(float64).cpu();
        var scale = e.abs().max().item<double>();
        var diff = (a - e).abs().max().item<double>();
        return scale == 0 ? diff : diff / scale;
    }

    /// <summary>The per-method float32-vs-float64 conditioning numbers of the golden MANIFEST.md (case → method → value).</summary>
    public static Dictionary<string, Dictionary<string, double>> ManifestConditioning()
    {
        var result = new Dictionary<string, Dictionary<string, double>>();
        var path = Path.Combine(Directory, "MANIFEST.md");
        if (!File.Exists(path)) return result;
        string? current = null;
        foreach (var line in File.ReadLines(path))
        {
            var h = Regex.Match(line, @"^### (\w+)\.safetensors");
            if (h.Success) { current = h.Groups[1].Value; result[current] = new(); continue; }
            var m = Regex.Match(line, @"^- `attr\.(\w+)`:.*f32-vs-f64: ([0-9.eE+-]+)\.");
            if (current is not null && m.Success)
                result[current][m.Groups[1].Value] = double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
        }
        return result;
    }
}
