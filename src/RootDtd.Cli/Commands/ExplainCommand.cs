using System.CommandLine;
using System.Globalization;
using RootDtd.Cli.Explain;
using RootDtd.Composites;
using RootDtd.Imaging;
using RootDtd.Models;
using static TorchSharp.torch;

namespace RootDtd.Cli.Commands;

/// <summary>
/// <c>rootdtd explain &lt;images…&gt; --arch A --weights W --method M --out DIR …</c>: explains every image and writes
/// <c>&lt;name&gt;.heatmap.png</c>, <c>&lt;name&gt;.overlay.png</c>, <c>&lt;name&gt;.json</c> and, with <c>--layers</c>,
/// one layer map per layer plus a <c>&lt;name&gt;.layers.png</c> figure. The work is done by <see cref="ExplainRunner"/>.
/// </summary>
public sealed class ExplainCommand : ICliCommand
{
    private static readonly string[] ImageExtensions = { ".png", ".jpg", ".jpeg", ".bmp" };

    private readonly Argument<string[]> _images = new("images")
    {
        Description = "Image files (PNG, JPEG, BMP) or folders (their images, not recursive).",
        Arity = ArgumentArity.OneOrMore,
    };

    private readonly Option<string> _arch = new("--arch", "-a")
    {
        Description = "Architecture: resnet18/34/50, vgg11/13/16/19, vgg11_bn/… (see 'rootdtd models').",
        Required = true,
        HelpName = "name",
    };

    private readonly Option<string?> _weights = new("--weights", "-w")
    {
        Description = "PyTorch state dict: .pth/.pt (torch.save zip format) or .safetensors. Without it the model has random weights.",
        HelpName = "file",
    };

    private readonly Option<string> _method = new("--method", "-m")
    {
        Description = "Explanation method, optionally with parameters: NAME or NAME:key=value,... (see 'rootdtd methods').",
        DefaultValueFactory = _ => "epsilon-plus-flat",
        HelpName = "spec",
    };

    private readonly Option<string> _target = new("--target", "-t")
    {
        Description = "Class to explain: 'predicted' (each image's top class), a class index, or a class name from --labels.",
        DefaultValueFactory = _ => "predicted",
        HelpName = "predicted|index|name",
    };

    private readonly Option<string> _out = new("--out", "-o")
    {
        Description = "Output folder (created if needed).",
        Required = true,
        HelpName = "dir",
    };

    private readonly Option<string[]> _layers = new("--layers", "-l")
    {
        Description = "Module paths whose relevance maps are written, comma-separated or repeated (e.g. conv1,layer2,layer4).",
        HelpName = "names",
    };

    private readonly Option<string> _device = new("--device")
    {
        Description = "cpu, cuda or cuda:N.",
        DefaultValueFactory = _ => "cpu",
        HelpName = "device",
    };

    private readonly Option<string?> _labels = new("--labels")
    {
        Description = "Class names, one per line (line i = class i); sets --classes when that is not given.",
        HelpName = "file",
    };

    private readonly Option<int?> _classes = new("--classes")
    {
        Description = "Number of classes of the model (default: lines of --labels, else 1000).",
        HelpName = "N",
    };

    private readonly Option<int> _size = new("--size")
    {
        Description = "Side of the square centre crop fed to the model.",
        DefaultValueFactory = _ => 224,
        HelpName = "pixels",
    };

    private readonly Option<int?> _resize = new("--resize")
    {
        Description = "Shorter image side after resizing, before the crop (default: size × 256/224, i.e. 256 for 224).",
        HelpName = "pixels",
    };

    private readonly Option<int> _batch = new("--batch", "-b")
    {
        Description = "Images per forward/backward pass.",
        DefaultValueFactory = _ => 8,
        HelpName = "N",
    };

    private readonly Option<string> _dtype = new("--dtype")
    {
        Description = "float32 or float64.",
        DefaultValueFactory = _ => "float32",
        HelpName = "type",
    };

    private readonly Option<string?> _mean = new("--mean")
    {
        Description = "Per-channel mean of the [0,1] pixels, R,G,B (default ImageNet 0.485,0.456,0.406).",
        HelpName = "r,g,b",
    };

    private readonly Option<string?> _std = new("--std")
    {
        Description = "Per-channel standard deviation, R,G,B (default ImageNet 0.229,0.224,0.225).",
        HelpName = "r,g,b",
    };

    private readonly Option<string> _heatmap = new("--heatmap")
    {
        Description = "Heatmap intensity: absolute (|R|), raw (signed R, min-max), positive (max(R,0)) or signed (blue-white-red).",
        DefaultValueFactory = _ => "absolute",
        HelpName = "mode",
    };

    private readonly Option<string?> _clip = new("--clip")
    {
        Description = "Clip values above this percentile of the map before scaling (e.g. 99), or 'none'. Default: the method family's (root 95, LRP 98, flat/wsquare 95, gradients 98; see docs/imaging.md).",
        HelpName = "percentile|none",
    };

    private readonly Option<bool> _meanCropping = new("--mean-cropping")
    {
        Description = "Set every intensity not above the map's mean to 0 (the paper's figures).",
    };

    private readonly Option<double?> _opacity = new("--opacity")
    {
        Description = "Largest heatmap opacity in the overlay, 0..1 (default 0.7).",
        HelpName = "alpha",
    };

    private readonly Option<string> _overlayAlpha = new("--overlay-alpha")
    {
        Description = "relevance (opacity follows |R|: unimportant pixels show the photo) or constant (the same opacity everywhere).",
        DefaultValueFactory = _ => "relevance",
        HelpName = "mode",
    };

    private readonly Option<bool> _noColorBar = new("--no-colorbar")
    {
        Description = "Write heatmaps and overlays without the colour bar (images then have exactly the input's size).",
    };

    private readonly Option<bool> _diagnostics = new("--diagnostics")
    {
        Description = "Add per-unit diagnostics of root-inference rules (losses, residuals, timings) to the JSON.",
    };

    private readonly Option<bool> _quiet = new("--quiet", "-q")
    {
        Description = "No progress bar and no per-image lines (errors and warnings are still printed).",
    };

    /// <inheritdoc />
    public Command Build(CliEnvironment environment)
    {
        var command = new Command("explain", "Explain images: write a heatmap, an overlay and a JSON report per image (and layer maps with --layers).")
        {
            _images, _arch, _weights, _method, _target, _out, _layers, _device, _labels, _classes, _size, _resize, _batch, _dtype,
            _mean, _std, _heatmap, _clip, _meanCropping, _opacity, _overlayAlpha, _noColorBar, _diagnostics, _quiet,
        };
        command.SetAction(parse => CommandAction.Run(environment, () => new ExplainRunner(ReadSettings(parse), environment).Run()));
        return command;
    }

    /// <summary>Validates the parsed values; every problem is a <see cref="UsageException"/>.</summary>
    internal ExplainSettings ReadSettings(ParseResult parse)
    {
        var images = ExpandImages(parse.GetValue(_images) ?? Array.Empty<string>());

        var arch = parse.GetRequiredValue(_arch).Trim();
        if (!ModelZoo.Contains(arch))
            throw new UsageException($"Unknown architecture '{arch}'. Known architectures: {string.Join(", ", ModelZoo.Names)}.");

        var weights = parse.GetValue(_weights);
        if (weights is not null)
        {
            if (Directory.Exists(weights)) throw new UsageException($"--weights '{weights}' is a folder; give the .pth/.pt or .safetensors file.");
            if (!File.Exists(weights)) throw new UsageException($"The weights file '{weights}' does not exist.");
        }

        MethodSpec method;
        try
        {
            method = MethodSpec.Parse(parse.GetValue(_method) ?? "epsilon-plus-flat");
        }
        catch (MethodSpecException e)
        {
            throw new UsageException($"--method: {e.Message} Run 'rootdtd methods' for descriptions and parameters.");
        }

        var labelsPath = parse.GetValue(_labels);
        var labels = labelsPath is null ? null : ClassLabels.Load(labelsPath);
        var classes = parse.GetValue(_classes) ?? labels?.Count ?? 1000;
        if (classes < 1) throw new UsageException($"--classes must be at least 1, was {classes}.");
        if (labels is not null && labels.Count != classes)
            throw new UsageException($"The labels file '{labelsPath}' has {labels.Count} names but the model has {classes} classes (--classes).");

        var target = ReadTarget(parse.GetValue(_target) ?? "predicted", classes, labels);

        var size = parse.GetValue(_size);
        if (size < 8 || size > 4096) throw new UsageException($"--size must be between 8 and 4096 pixels, was {size}.");
        var resize = parse.GetValue(_resize) ?? (int)Math.Round(size * 256.0 / 224.0);
        if (resize < size) throw new UsageException($"--resize ({resize}) must be at least --size ({size}): the crop is taken from the resized image.");
        var batch = parse.GetValue(_batch);
        if (batch < 1) throw new UsageException($"--batch must be at least 1, was {batch}.");

        var dtype = (parse.GetValue(_dtype) ?? "float32").Trim().ToLowerInvariant() switch
        {
            "float32" or "float" or "f32" => ScalarType.Float32,
            "float64" or "double" or "f64" => ScalarType.Float64,
            var other => throw new UsageException($"--dtype must be float32 or float64, was '{other}'."),
        };

        var device = (parse.GetValue(_device) ?? "cpu").Trim().ToLowerInvariant();
        if (!(device == "cpu" || device == "cuda" || (device.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(device[5..], NumberStyles.None, CultureInfo.InvariantCulture, out _))))
            throw new UsageException($"--device must be cpu, cuda or cuda:N, was '{device}'.");

        var normalization = ImageNormalization.ImageNet;
        var mean = parse.GetValue(_mean);
        var std = parse.GetValue(_std);
        if (string.Equals(arch, CntkResNet18.ModelName, StringComparison.OrdinalIgnoreCase))
        {
            // The model's own preprocessing (0-255 minus the package's 224x224 mean image) is the only one that fits it.
            if (mean is not null || std is not null) throw new UsageException($"{CntkResNet18.ModelName} subtracts its own mean image; --mean/--std do not apply to it.");
            if (size != CntkResNet18.InputSize) throw new UsageException($"{CntkResNet18.ModelName} takes {CntkResNet18.InputSize}x{CntkResNet18.InputSize} images (its mean image's size); --size was {size}.");
            normalization = ImageNormalization.CntkResNet18();
        }
        else if (mean is not null || std is not null)
        {
            var meanValues = ReadTriple(mean, "--mean") ?? ImageNormalization.ImageNet.Mean.ToArray();
            var stdValues = ReadTriple(std, "--std") ?? ImageNormalization.ImageNet.Std.ToArray();
            if (meanValues.Any(v => !float.IsFinite(v))) throw new UsageException($"--mean must be three finite numbers, was '{mean}'.");
            if (stdValues.Any(v => !float.IsFinite(v) || v <= 0)) throw new UsageException($"--std must be three positive numbers, was '{std}'.");
            normalization = new ImageNormalization(meanValues, stdValues);
        }

        var mode = (parse.GetValue(_heatmap) ?? "absolute").Trim().ToLowerInvariant() switch
        {
            "absolute" or "abs" => HeatmapMode.Absolute,
            "raw" => HeatmapMode.Raw,
            "positive" or "pos" => HeatmapMode.Positive,
            "signed" => HeatmapMode.Signed,
            var other => throw new UsageException($"--heatmap must be absolute, raw, positive or signed, was '{other}'."),
        };
        var meanCropping = parse.GetValue(_meanCropping);
        if (meanCropping && mode == HeatmapMode.Signed)
            throw new UsageException("--mean-cropping works on unsigned intensities; it cannot be combined with --heatmap signed (use absolute, raw or positive).");
        var defaults = HeatmapDefaults.For(method.CreateComposite());
        var clip = defaults.ClipPercentile;
        if (parse.GetValue(_clip) is { } clipText)
        {
            clipText = clipText.Trim();
            if (string.Equals(clipText, "none", StringComparison.OrdinalIgnoreCase) || clipText == "100") clip = null;
            else if (double.TryParse(clipText.TrimEnd('%'), NumberStyles.Float, CultureInfo.InvariantCulture, out var p) && p > 0 && p < 100) clip = p;
            else throw new UsageException($"--clip must be a percentile between 0 and 100 (e.g. 99) or 'none', was '{clipText}'.");
        }
        var opacity = parse.GetValue(_opacity) ?? defaults.OverlayOpacity;
        if (!(opacity >= 0 && opacity <= 1)) throw new UsageException($"--opacity must be between 0 and 1, was {opacity.ToString(CultureInfo.InvariantCulture)}.");
        var overlayAlpha = (parse.GetValue(_overlayAlpha) ?? "relevance").Trim().ToLowerInvariant() switch
        {
            "relevance" or "scaled" => OverlayAlphaMode.Relevance,
            "constant" => OverlayAlphaMode.Constant,
            var other => throw new UsageException($"--overlay-alpha must be relevance or constant, was '{other}'."),
        };
        var heatmap = defaults with
        {
            Mode = mode,
            MeanCropping = meanCropping,
            ClipPercentile = clip,
            OverlayOpacity = (float)opacity,
            OverlayAlpha = overlayAlpha,
            ColorBar = !parse.GetValue(_noColorBar),
        };

        var layers = (parse.GetValue(_layers) ?? Array.Empty<string>())
            .SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            .Distinct(StringComparer.Ordinal).ToList();

        var outDir = parse.GetRequiredValue(_out);
        if (File.Exists(outDir)) throw new UsageException($"--out '{outDir}' is a file; give a folder.");

        return new ExplainSettings
        {
            Images = images,
            Architecture = arch,
            WeightsPath = weights,
            Method = method,
            Target = target,
            OutputDirectory = outDir,
            Layers = layers,
            Device = device,
            Labels = labels,
            LabelsPath = labelsPath,
            Classes = classes,
            Size = size,
            Resize = resize,
            BatchSize = batch,
            DType = dtype,
            Normalization = normalization,
            Heatmap = heatmap,
            Diagnostics = parse.GetValue(_diagnostics),
            Quiet = parse.GetValue(_quiet),
        };
    }

    private static List<string> ExpandImages(IEnumerable<string> inputs)
    {
        var images = new List<string>();
        foreach (var input in inputs)
        {
            if (Directory.Exists(input))
            {
                var found = Directory.EnumerateFiles(input)
                    .Where(f => ImageExtensions.Contains(Path.GetExtension(f), StringComparer.OrdinalIgnoreCase))
                    .Order(StringComparer.Ordinal).ToList();
                if (found.Count == 0) throw new UsageException($"The folder '{input}' contains no .png, .jpg, .jpeg or .bmp files.");
                images.AddRange(found);
            }
            else if (File.Exists(input))
            {
                images.Add(input);
            }
            else if (input.StartsWith('-'))
            {
                throw new UsageException($"Unknown option '{input}'. Run 'rootdtd explain --help' for the options.");
            }
            else if (Path.EndsInDirectorySeparator(input) || Path.GetExtension(input).Length == 0)
            {
                throw new UsageException($"The folder '{input}' does not exist (give image files or folders of images).");
            }
            else
            {
                throw new UsageException($"The image file '{input}' does not exist.");
            }
        }
        if (images.Count == 0) throw new UsageException("No images were given.");
        return images;
    }

    private static int? ReadTarget(string text, int classes, ClassLabels? labels)
    {
        text = text.Trim();
        if (string.Equals(text, "predicted", StringComparison.OrdinalIgnoreCase)) return null;
        if (int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var index))
        {
            if (index < 0 || index >= classes)
                throw new UsageException($"--target {index} is not a class of the model: it has {classes} classes (0…{classes - 1}).");
            return index;
        }
        if (labels is not null && labels.IndexOf(text) is var i and >= 0) return i;
        throw new UsageException(labels is null
            ? $"--target must be 'predicted' or a class index, was '{text}' (class names need --labels)."
            : $"--target '{text}' is neither 'predicted', a class index nor a name in the labels file.");
    }

    private static float[]? ReadTriple(string? text, string option)
    {
        if (text is null) return null;
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var values = new float[parts.Length];
        for (var i = 0; i < parts.Length; i++)
            if (!float.TryParse(parts[i], NumberStyles.Float, CultureInfo.InvariantCulture, out values[i]))
                throw new UsageException($"{option} must be three numbers R,G,B; cannot read '{parts[i]}'.");
        if (values.Length != 3) throw new UsageException($"{option} must be three numbers R,G,B, got {values.Length}.");
        return values;
    }
}
