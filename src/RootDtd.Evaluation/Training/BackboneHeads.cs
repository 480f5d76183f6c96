using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using RootDtd.Evaluation.Data;
using RootDtd.Imaging;
using RootDtd.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Training;

/// <summary>Options of <see cref="BackboneHeads.TrainLinearProbe"/>.</summary>
public sealed record LinearProbeOptions
{
    /// <summary>Fraction of each class's images held out for the accuracy (at least one per class that has two or more). Default 0.2.</summary>
    public double HoldoutFraction { get; init; } = 0.2;

    /// <summary>Full-batch Adam steps on the frozen features. Default 500.</summary>
    public int Steps { get; init; } = 500;

    /// <summary>Adam learning rate. Default 0.01.</summary>
    public double LearningRate { get; init; } = 0.01;

    /// <summary>L2 penalty on the head's weights. Default 1e-3.</summary>
    public double WeightDecay { get; init; } = 1e-3;

    /// <summary>Seed of the held-out split and of the head's initialisation. Default 1.</summary>
    public int Seed { get; init; } = 1;

    /// <summary>Images per forward pass of the backbone. Default 8.</summary>
    public int BatchSize { get; init; } = 8;

    internal void Validate()
    {
        if (!(HoldoutFraction >= 0 && HoldoutFraction < 1)) throw new ArgumentOutOfRangeException(nameof(HoldoutFraction), HoldoutFraction, "Must be in [0, 1).");
        if (Steps < 1) throw new ArgumentOutOfRangeException(nameof(Steps), Steps, "At least one step is needed.");
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "Must be > 0.");
        if (!(WeightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "Must be ≥ 0.");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "Must be ≥ 1.");
    }
}

/// <summary>What a head was built from and how well it does (written next to the weights as JSON).</summary>
public sealed record HeadReport
{
    /// <summary><c>linear</c> or <c>prototypes</c>.</summary>
    public required string Head { get; init; }

    /// <summary>The backbone's zoo name.</summary>
    public required string Backbone { get; init; }

    /// <summary>The image folder.</summary>
    public required string Data { get; init; }

    /// <summary>Class names; index = output of the head.</summary>
    public required IReadOnlyList<string> Classes { get; init; }

    /// <summary>Images the head was fitted on.</summary>
    public required int TrainImages { get; init; }

    /// <summary>Images held out.</summary>
    public required IReadOnlyList<string> HeldOut { get; init; }

    /// <summary>Accuracy on the fitting images.</summary>
    public required double TrainAccuracy { get; init; }

    /// <summary>Accuracy on the held-out images (null when none were held out).</summary>
    public double? HeldOutAccuracy { get; init; }

    /// <summary>What was skipped or not held out, and why.</summary>
    public required IReadOnlyList<string> Notes { get; init; }

    /// <summary>Wall-clock seconds (features and fitting).</summary>
    public double Seconds { get; init; }

    /// <summary>The weights file.</summary>
    public string? WeightsPath { get; init; }

    /// <summary>The class-name file (one per line), usable as <c>rootdtd explain --labels</c>.</summary>
    public string? LabelsPath { get; init; }

    /// <summary>One summary line.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Head} head on {Backbone}: {Classes.Count} classes, {TrainImages} fitting images (accuracy {TrainAccuracy:P1}), {HeldOut.Count} held out{(HeldOutAccuracy is { } a ? $" (accuracy {a:P1})" : string.Empty)}");
}

/// <summary>
/// Heads on a frozen ResNet backbone (e.g. <see cref="CntkResNet18"/>, which ships without a classifier): a linear probe
/// trained on an image folder, or a prototype head whose class vectors are the normalised mean features of example
/// images. The model stays an ordinary <see cref="ResNet"/>, so its weights file loads with <see cref="ModelWeights.Load"/>
/// and explains like any other.
/// </summary>
public static class BackboneHeads
{
    /// <summary>The pooled features [N, F] of images (eval mode, no gradient), in batches.</summary>
    /// <param name="model">The backbone.</param>
    /// <param name="loader">Loads and normalises the images for it.</param>
    /// <param name="paths">Image files.</param>
    /// <param name="batchSize">Images per forward pass.</param>
    /// <param name="cancellationToken">Checked before every batch; a cancelled call throws <see cref="OperationCanceledException"/>.</param>
    /// <exception cref="ImageLoadException">An image cannot be read (names the file).</exception>
    public static Tensor Features(ResNet model, ImageLoader loader, IReadOnlyList<string> paths, int batchSize = 8, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(loader);
        ArgumentNullException.ThrowIfNull(paths);
        if (paths.Count == 0) throw new ArgumentException("No images given.", nameof(paths));
        model.eval();
        var device = model.parameters().First().device;
        var parts = new List<Tensor>();
        using (no_grad())
        {
            for (var start = 0; start < paths.Count; start += batchSize)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    foreach (var p in parts) p.Dispose();
                    cancellationToken.ThrowIfCancellationRequested();
                }
                using var scope = NewDisposeScope();
                var batch = loader.LoadBatch(paths.Skip(start).Take(batchSize)).to(device);
                parts.Add(model.ForwardFeatures(batch).MoveToOuterDisposeScope());
            }
        }
        var all = cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return all;
    }

    /// <summary>
    /// Sets <paramref name="model"/>'s head to class prototypes: row c of <c>fc.weight</c> is the mean feature vector of
    /// class c's images divided by its Euclidean norm, <c>fc.bias</c> is zero; so logit c is the length of the
    /// features' projection on the class's mean direction ("how much does this look like c").
    /// </summary>
    /// <param name="model">A ResNet whose head has <c>data.ClassNames.Count</c> outputs.</param>
    /// <param name="loader">Loads the images for it.</param>
    /// <param name="data">The example images (see <see cref="ImageFolder.Scan"/> with <c>looseImagesAreClasses</c>).</param>
    /// <param name="backboneName">The backbone's name in the report.</param>
    /// <param name="batchSize">Images per forward pass.</param>
    /// <param name="cancellationToken">Checked before every batch of images; a cancelled call throws <see cref="OperationCanceledException"/> and leaves the head as it was.</param>
    public static HeadReport BuildPrototypes(ResNet model, ImageLoader loader, ImageFolder data, string backboneName, int batchSize = 8, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        CheckHead(model, data.ClassNames.Count);
        var watch = Stopwatch.StartNew();
        using var scope = NewDisposeScope();
        var features = Features(model, loader, data.Items.Select(i => i.Path).ToList(), batchSize, cancellationToken);
        var labels = tensor(data.Items.Select(i => (long)i.Label).ToArray(), device: features.device);
        var k = data.ClassNames.Count;
        var sums = zeros(k, features.shape[1], dtype: features.dtype, device: features.device).index_add_(0, labels, features, 1);
        var counts = bincount(labels, minlength: k).to(features.dtype).unsqueeze(1);
        var means = sums / counts;
        var norms = means.norm(1, keepdim: true);
        if (norms.le(0).any().item<bool>())
            throw new ArgumentException($"A class of '{data.Root}' has all-zero mean features; its prototype has no direction.", nameof(data));
        using (no_grad())
        {
            model.Head.weight!.copy_(means / norms);
            model.Head.bias!.zero_();
        }
        var accuracy = Accuracy(model, features, labels);
        return new HeadReport
        {
            Head = "prototypes", Backbone = backboneName, Data = data.Root, Classes = data.ClassNames, TrainImages = data.Items.Count,
            HeldOut = Array.Empty<string>(), TrainAccuracy = accuracy, Notes = data.Notes, Seconds = watch.Elapsed.TotalSeconds,
        };
    }

    /// <summary>
    /// Trains <paramref name="model"/>'s head (a linear layer on the frozen backbone's pooled features) on an image
    /// folder with a stratified held-out split: full-batch Adam on the cross-entropy plus an L2 penalty. The backbone's
    /// weights are not changed.
    /// </summary>
    /// <param name="model">A ResNet whose head has <c>data.ClassNames.Count</c> outputs.</param>
    /// <param name="loader">Loads the images for it.</param>
    /// <param name="data">The images (class subfolders).</param>
    /// <param name="backboneName">The backbone's name in the report.</param>
    /// <param name="options">Options (null: defaults).</param>
    /// <param name="log">Optional progress lines.</param>
    /// <param name="cancellationToken">
    /// Checked before every batch of images and every optimiser step; a cancelled call throws
    /// <see cref="OperationCanceledException"/> and leaves the model's head as it was.
    /// </param>
    public static HeadReport TrainLinearProbe(ResNet model, ImageLoader loader, ImageFolder data, string backboneName, LinearProbeOptions? options = null, TextWriter? log = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        options ??= new LinearProbeOptions();
        options.Validate();
        CheckHead(model, data.ClassNames.Count);
        if (data.ClassNames.Count < 2) throw new ArgumentException($"'{data.Root}' has one class ({data.ClassNames[0]}); a classifier needs at least two class subfolders.", nameof(data));
        var watch = Stopwatch.StartNew();
        var notes = data.Notes.ToList();
        var rng = new Random(options.Seed);
        var heldOut = new List<ImageFolderItem>();
        var fit = new List<ImageFolderItem>();
        for (var c = 0; c < data.ClassNames.Count; c++)
        {
            var items = data.Items.Where(i => i.Label == c).OrderBy(_ => rng.Next()).ToList();
            var n = items.Count < 2 || options.HoldoutFraction == 0 ? 0 : Math.Clamp((int)Math.Round(items.Count * options.HoldoutFraction), 1, items.Count - 1);
            if (items.Count == 1 && options.HoldoutFraction > 0) notes.Add($"class '{data.ClassNames[c]}' has one image: it is used for fitting only, none of it is held out");
            heldOut.AddRange(items.Take(n));
            fit.AddRange(items.Skip(n));
        }
        log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"features of {data.Items.Count} images ({fit.Count} fitting, {heldOut.Count} held out)…"));
        using var scope = NewDisposeScope();
        var fitFeatures = Features(model, loader, fit.Select(i => i.Path).ToList(), options.BatchSize, cancellationToken);
        var device = fitFeatures.device;
        var fitLabels = tensor(fit.Select(i => (long)i.Label).ToArray(), device: device);
        // the held-out features too before the head changes: a cancellation leaves the head as it was
        var heldOutFeatures = heldOut.Count > 0 ? Features(model, loader, heldOut.Select(i => i.Path).ToList(), options.BatchSize, cancellationToken) : null;

        // Fit on features standardised per dimension, then fold the standardisation into the head so the model stays a plain ResNet.
        var mu = fitFeatures.mean(new long[] { 0 }, keepdim: true);
        var sigma = fitFeatures.std(0, keepdim: true).clamp_min(1e-6);
        var z = (fitFeatures - mu) / sigma;
        torch.manual_seed(options.Seed);
        var k = data.ClassNames.Count;
        var weight = new TorchSharp.Modules.Parameter(zeros(k, fitFeatures.shape[1], device: device));
        var bias = new TorchSharp.Modules.Parameter(zeros(k, device: device));
        var optimizer = optim.Adam(new[] { weight, bias }, options.LearningRate);
        for (var step = 0; step < options.Steps; step++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var inner = NewDisposeScope();
            optimizer.zero_grad();
            var loss = nn.functional.cross_entropy(z.matmul(weight.t()) + bias, fitLabels) + options.WeightDecay * weight.pow(2).sum();
            loss.backward();
            optimizer.step();
        }
        using (no_grad())
        {
            var w = weight / sigma;
            model.Head.weight!.copy_(w);
            model.Head.bias!.copy_(bias - w.matmul(mu.squeeze(0)));
        }
        var trainAccuracy = Accuracy(model, fitFeatures, fitLabels);
        double? heldOutAccuracy = null;
        if (heldOutFeatures is not null)
        {
            heldOutAccuracy = Accuracy(model, heldOutFeatures, tensor(heldOut.Select(i => (long)i.Label).ToArray(), device: device));
        }
        else
        {
            notes.Add("no image was held out, so there is no held-out accuracy");
        }
        return new HeadReport
        {
            Head = "linear", Backbone = backboneName, Data = data.Root, Classes = data.ClassNames, TrainImages = fit.Count,
            HeldOut = heldOut.Select(i => i.Path).ToList(), TrainAccuracy = trainAccuracy, HeldOutAccuracy = heldOutAccuracy,
            Notes = notes, Seconds = watch.Elapsed.TotalSeconds,
        };
    }

    /// <summary>
    /// Writes the model (full state dict: <c>.safetensors</c>, or PyTorch zip for other extensions), the class names
    /// (<c>&lt;stem&gt;.labels.txt</c>) and the report (<c>&lt;stem&gt;.json</c>) next to each other.
    /// </summary>
    /// <param name="model">The model with its head.</param>
    /// <param name="report">The report of the head.</param>
    /// <param name="weightsPath">The weights file to write.</param>
    /// <returns>The report with the file paths filled in.</returns>
    public static HeadReport Save(ResNet model, HeadReport report, string weightsPath)
    {
        ArgumentNullException.ThrowIfNull(report);
        ArgumentException.ThrowIfNullOrWhiteSpace(weightsPath);
        var full = Path.GetFullPath(weightsPath);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var stem = Path.Combine(Path.GetDirectoryName(full)!, Path.GetFileNameWithoutExtension(full));
        ModelWeights.Save(model, full);
        var labels = stem + ".labels.txt";
        RootDtd.IO.AtomicFile.WriteAllText(labels, string.Concat(report.Classes.Select(c => c + Environment.NewLine)));
        var written = report with { WeightsPath = full, LabelsPath = labels };
        RootDtd.IO.AtomicFile.WriteAllText(stem + ".json", JsonSerializer.Serialize(written, JsonOptions));
        return written;
    }

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    private static void CheckHead(ResNet model, int classes)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.Head.out_features != classes)
            throw new ArgumentException($"The model's head has {model.Head.out_features} outputs but the data has {classes} classes; build the model with numClasses: {classes}.", nameof(model));
    }

    private static double Accuracy(ResNet model, Tensor features, Tensor labels)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return model.Head.forward(features).argmax(1).eq(labels).to(ScalarType.Float64).mean().item<double>();
    }
}
