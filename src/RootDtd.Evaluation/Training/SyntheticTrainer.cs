using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using RootDtd.Evaluation.Synthetic;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Training;

/// <summary>Options of <see cref="SyntheticTrainer"/>.</summary>
public sealed record TrainingOptions
{
    /// <summary>Architecture to train. Default ResNet.</summary>
    public SyntheticArchitecture Architecture { get; init; } = SyntheticArchitecture.ResNet;

    /// <summary>Training images (seed <see cref="DataSeed"/>). Default 5000.</summary>
    public int TrainImages { get; init; } = 5000;

    /// <summary>Validation images used for early stopping (seed <see cref="DataSeed"/> + 1). Default 600.</summary>
    public int ValidationImages { get; init; } = 600;

    /// <summary>Test images, evaluated once after training (seed <see cref="DataSeed"/> + 2). Default 1000.</summary>
    public int TestImages { get; init; } = 1000;

    /// <summary>Image side in pixels. Default 64.</summary>
    public int ImageSize { get; init; } = SyntheticModels.ImageSize;

    /// <summary>Number of classes (2–6). Default 6.</summary>
    public int ClassCount { get; init; } = SyntheticModels.ClassCount;

    /// <summary>Torch seed: parameter initialisation, shuffling and augmentation. Default 1.</summary>
    public int Seed { get; init; } = 1;

    /// <summary>Seed of the training stream of the synthetic generator (validation: +1, test: +2). Default 1000.</summary>
    public int DataSeed { get; init; } = 1000;

    /// <summary>Maximum number of epochs. Default 20.</summary>
    public int MaxEpochs { get; init; } = 20;

    /// <summary>Stop after the first epoch whose validation accuracy reaches this value. Default 0.95.</summary>
    public double TargetAccuracy { get; init; } = 0.95;

    /// <summary>Mini-batch size. Default 64.</summary>
    public int BatchSize { get; init; } = 64;

    /// <summary>Adam learning rate (cosine-annealed over <see cref="MaxEpochs"/>). Default 3e-3.</summary>
    public double LearningRate { get; init; } = 3e-3;

    /// <summary>Adam weight decay. Default 1e-4.</summary>
    public double WeightDecay { get; init; } = 1e-4;

    /// <summary>Random horizontal flips during training. Default on.</summary>
    public bool Augment { get; init; } = true;

    internal void Validate()
    {
        if (TrainImages < 1 || ValidationImages < 1 || TestImages < 1) throw new ArgumentOutOfRangeException(nameof(TrainImages), "Every split needs at least one image.");
        if (ImageSize < 16) throw new ArgumentOutOfRangeException(nameof(ImageSize), ImageSize, "Images must be at least 16 pixels wide.");
        if (MaxEpochs < 1) throw new ArgumentOutOfRangeException(nameof(MaxEpochs), MaxEpochs, "At least one epoch is needed.");
        if (BatchSize < 2) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchNorm needs batches of at least 2.");
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "Must be > 0.");
        if (!(WeightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "Must be ≥ 0.");
    }
}

/// <summary>Statistics of one training epoch.</summary>
/// <param name="Epoch">1-based epoch.</param>
/// <param name="Loss">Mean training cross-entropy.</param>
/// <param name="TrainAccuracy">Running training accuracy (train mode, augmented batches).</param>
/// <param name="ValidationAccuracy">Validation accuracy (eval mode).</param>
/// <param name="LearningRate">Learning rate used in the epoch.</param>
/// <param name="Seconds">Wall-clock time of the epoch including validation.</param>
public sealed record EpochReport(int Epoch, double Loss, double TrainAccuracy, double ValidationAccuracy, double LearningRate, double Seconds)
{
    /// <summary>One console line.</summary>
    /// <returns>Text.</returns>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"epoch {Epoch,3}: loss {Loss:F4}  train acc {TrainAccuracy:P1}  val acc {ValidationAccuracy:P1}  lr {LearningRate:g3}  {Seconds:F1} s");
}

/// <summary>Everything needed to reproduce a trained synthetic model; written as the JSON sidecar of the weights.</summary>
public sealed record TrainingReport
{
    /// <summary>Model name (e.g. <c>synthetic-resnet</c>).</summary>
    public required string Name { get; init; }

    /// <summary>Architecture family.</summary>
    [JsonConverter(typeof(JsonStringEnumConverter))]
    public required SyntheticArchitecture Architecture { get; init; }

    /// <summary>The exact C# constructor.</summary>
    public required string Constructor { get; init; }

    /// <summary>Class names in index order.</summary>
    public required IReadOnlyList<string> Classes { get; init; }

    /// <summary>Image side in pixels.</summary>
    public required int ImageSize { get; init; }

    /// <summary>Normalisation mean per channel (inputs are (x − mean)/std of [0,1] RGB).</summary>
    public required IReadOnlyList<double> NormalizationMean { get; init; }

    /// <summary>Normalisation std per channel.</summary>
    public required IReadOnlyList<double> NormalizationStd { get; init; }

    /// <summary>Data description (generator and options).</summary>
    public required string Data { get; init; }

    /// <summary>Torch seed.</summary>
    public required int Seed { get; init; }

    /// <summary>Generator seeds of the train / validation / test streams.</summary>
    public required IReadOnlyList<int> DataSeeds { get; init; }

    /// <summary>Split sizes: train, validation, test.</summary>
    public required IReadOnlyList<int> SplitSizes { get; init; }

    /// <summary>Optimiser and schedule.</summary>
    public required string Optimizer { get; init; }

    /// <summary>Epochs run.</summary>
    public required int Epochs { get; init; }

    /// <summary>Final validation accuracy.</summary>
    public required double ValidationAccuracy { get; init; }

    /// <summary>Test accuracy of the saved weights.</summary>
    public required double TestAccuracy { get; init; }

    /// <summary>Number of parameters.</summary>
    public required long Parameters { get; init; }

    /// <summary>Total training time in seconds.</summary>
    public required double Seconds { get; init; }

    /// <summary>Per-epoch history.</summary>
    public required IReadOnlyList<EpochReport> History { get; init; }

    /// <summary>Writes the report as indented JSON.</summary>
    /// <param name="path">File path.</param>
    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true }) + "\n");
}

/// <summary>A trained model with its report.</summary>
/// <param name="Model">The model (eval mode).</param>
/// <param name="Report">The report.</param>
public sealed record TrainingResult(nn.Module<Tensor, Tensor> Model, TrainingReport Report);

/// <summary>
/// Trains a <see cref="SyntheticModels"/> architecture on the seeded synthetic data on the CPU (Adam, cosine schedule,
/// cross-entropy, optional flips) with early stopping on validation accuracy, and measures the test accuracy once.
/// </summary>
public static class SyntheticTrainer
{
    /// <summary>Trains a model.</summary>
    /// <param name="options">Options.</param>
    /// <param name="progress">Receives every epoch's statistics.</param>
    /// <param name="log">Optional text log (one line per epoch and stage); e.g. <see cref="Console.Out"/>.</param>
    /// <returns>The trained model and its report.</returns>
    public static TrainingResult Train(TrainingOptions? options = null, IProgress<EpochReport>? progress = null, TextWriter? log = null)
    {
        options ??= new TrainingOptions();
        options.Validate();
        var total = Stopwatch.StartNew();
        var dataOptions = SyntheticModels.DataOptions(options.ImageSize, options.ClassCount);
        var generator = new SyntheticDatasetGenerator(dataOptions);
        log?.WriteLine($"generating {options.TrainImages} train / {options.ValidationImages} validation / {options.TestImages} test images ({options.ImageSize}×{options.ImageSize}) …");
        var (trainX, trainY) = Split(generator, options.DataSeed, options.TrainImages);
        var (valX, valY) = Split(generator, options.DataSeed + 1, options.ValidationImages);
        log?.WriteLine($"  done in {total.Elapsed.TotalSeconds:F1} s");

        torch.random.manual_seed(options.Seed);
        var model = SyntheticModels.Create(options.Architecture, options.ClassCount);
        var parameters = model.parameters().Sum(p => p.numel());
        log?.WriteLine($"{SyntheticModels.NameOf(options.Architecture)}: {parameters:N0} parameters");
        using var optimizer = torch.optim.Adam(model.parameters(), lr: options.LearningRate, weight_decay: options.WeightDecay);
        var scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, options.MaxEpochs);
        var shuffle = new torch.Generator((ulong)options.Seed);
        var history = new List<EpochReport>();
        double valAcc = 0;
        try
        {
            for (var epoch = 1; epoch <= options.MaxEpochs; epoch++)
            {
                var clock = Stopwatch.StartNew();
                var lr = optimizer.ParamGroups.First().LearningRate;
                model.train();
                double lossSum = 0;
                long correct = 0, seen = 0;
                using (var order = torch.randperm(options.TrainImages, generator: shuffle))
                {
                    for (long s = 0; s + 1 < options.TrainImages; s += options.BatchSize)
                    {
                        var len = Math.Min(options.BatchSize, options.TrainImages - s);
                        if (len < 2) break; // BatchNorm cannot train on a single sample
                        using var scope = torch.NewDisposeScope();
                        var idx = order.narrow(0, s, len);
                        var x = trainX.index_select(0, idx);
                        var y = trainY.index_select(0, idx);
                        if (options.Augment)
                        {
                            var flip = torch.rand(new[] { len }, generator: shuffle).lt(0.5).view(len, 1, 1, 1);
                            x = torch.where(flip, x.flip(3), x);
                        }

                        optimizer.zero_grad();
                        var logits = model.forward(x);
                        var loss = torch.nn.functional.cross_entropy(logits, y);
                        loss.backward();
                        optimizer.step();
                        lossSum += loss.item<float>() * len;
                        correct += logits.argmax(1).eq(y).sum().item<long>();
                        seen += len;
                    }
                }

                scheduler.step();
                valAcc = Accuracy(model, valX, valY, 256);
                var report = new EpochReport(epoch, lossSum / seen, (double)correct / seen, valAcc, lr, clock.Elapsed.TotalSeconds);
                history.Add(report);
                progress?.Report(report);
                log?.WriteLine(report.ToString());
                if (valAcc >= options.TargetAccuracy)
                {
                    log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"validation accuracy {valAcc:P1} ≥ target {options.TargetAccuracy:P1}: stopping"));
                    break;
                }
            }
        }
        finally
        {
            shuffle.Dispose();
            trainX.Dispose();
            trainY.Dispose();
            valX.Dispose();
            valY.Dispose();
        }

        model.eval();
        var (testX, testY) = Split(generator, options.DataSeed + 2, options.TestImages);
        double testAcc;
        using (testX)
        using (testY)
            testAcc = Accuracy(model, testX, testY, 256);
        log?.WriteLine(string.Create(CultureInfo.InvariantCulture, $"test accuracy {testAcc:P2} on {options.TestImages} images; total {total.Elapsed.TotalSeconds:F0} s"));
        var norm = SyntheticModels.Normalization;
        var reportAll = new TrainingReport
        {
            Name = SyntheticModels.NameOf(options.Architecture),
            Architecture = options.Architecture,
            Constructor = SyntheticModels.ConstructorText(options.Architecture, options.ClassCount),
            Classes = generator.Classes.Select(c => c.Name).ToArray(),
            ImageSize = options.ImageSize,
            NormalizationMean = norm.Mean.Select(v => (double)v).ToArray(),
            NormalizationStd = norm.Std.Select(v => (double)v).ToArray(),
            Data = $"{SyntheticModels.DataDescription}; {options.ImageSize}×{options.ImageSize}, {options.ClassCount} classes; labels balanced (index mod classes)",
            Seed = options.Seed,
            DataSeeds = new[] { options.DataSeed, options.DataSeed + 1, options.DataSeed + 2 },
            SplitSizes = new[] { options.TrainImages, options.ValidationImages, options.TestImages },
            Optimizer = string.Create(CultureInfo.InvariantCulture,
                $"Adam(lr={options.LearningRate:g3}, weight_decay={options.WeightDecay:g3}), cosine annealing over {options.MaxEpochs} epochs, batch {options.BatchSize}, flips={(options.Augment ? "on" : "off")}, early stop at validation accuracy ≥ {options.TargetAccuracy:g3}"),
            Epochs = history.Count,
            ValidationAccuracy = valAcc,
            TestAccuracy = testAcc,
            Parameters = parameters,
            Seconds = Math.Round(total.Elapsed.TotalSeconds, 1),
            History = history,
        };
        return new TrainingResult(model, reportAll);
    }

    /// <summary>Top-1 accuracy of <paramref name="model"/> (eval mode, no gradients).</summary>
    /// <param name="model">Model.</param>
    /// <param name="images">Normalised images [N,C,H,W].</param>
    /// <param name="labels">Labels [N].</param>
    /// <param name="batchSize">Batch size.</param>
    /// <returns>Accuracy in [0,1].</returns>
    public static double Accuracy(nn.Module<Tensor, Tensor> model, Tensor images, Tensor labels, int batchSize = 256)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(labels);
        var wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            long n = images.shape[0], correct = 0;
            for (long s = 0; s < n; s += batchSize)
            {
                using var scope = torch.NewDisposeScope();
                var len = Math.Min(batchSize, n - s);
                correct += model.forward(images.narrow(0, s, len)).argmax(1).eq(labels.narrow(0, s, len)).sum().item<long>();
            }

            return n == 0 ? double.NaN : (double)correct / n;
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }

    /// <summary>Trains and saves the weights plus the JSON sidecar (<c>&lt;out&gt;.json</c>).</summary>
    /// <param name="options">Options.</param>
    /// <param name="outputPath">The <c>.safetensors</c> path.</param>
    /// <param name="log">Optional text log.</param>
    /// <returns>The report.</returns>
    public static TrainingReport TrainAndSave(TrainingOptions options, string outputPath, TextWriter? log = null)
    {
        var result = Train(options, null, log);
        using (result.Model)
        {
            SyntheticModels.Save(result.Model, outputPath);
        }

        result.Report.Save(Path.ChangeExtension(outputPath, ".json"));
        log?.WriteLine($"saved {outputPath} ({new FileInfo(outputPath).Length / 1024.0:F0} KiB) and {Path.ChangeExtension(outputPath, ".json")}");
        return result.Report;
    }

    private static (Tensor Images, Tensor Labels) Split(SyntheticDatasetGenerator generator, int seed, int count)
    {
        var (x, m, y) = SyntheticDatasetGenerator.ToTensors(generator.GenerateMany(seed, count));
        m.Dispose();
        using (x)
            return (SyntheticModels.Normalization.Normalize(x), y);
    }
}
