using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using RootDtd.Evaluation.Synthetic;
using RootDtd.Models;
using TorchSharp;
using TorchSharp.PyBridge;
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

    /// <summary>
    /// Random translation during training: each image is shifted by up to this many pixels in x and y (edge pixels
    /// repeated). Default 0 (off).
    /// </summary>
    public int ShiftPixels { get; init; }

    /// <summary>Linear learning-rate warm-up over this many epochs (per step), then the cosine schedule over the rest. Default 0.</summary>
    public int WarmupEpochs { get; init; }

    /// <summary>Decoupled weight decay (AdamW) instead of Adam's L2 penalty. Default off.</summary>
    public bool DecoupledWeightDecay { get; init; }

    /// <summary>
    /// Wall-clock budget in seconds: no new epoch starts once the training has run this long (the schedule is not
    /// shortened; the sidecar records the stop). Default <see langword="null"/> (no limit).
    /// </summary>
    public double? TimeLimitSeconds { get; init; }

    /// <summary>
    /// Weights (<c>.safetensors</c> of the same architecture) to start from instead of a random initialisation — a second
    /// stage of training with its own schedule (a warm restart). Its JSON sidecar, if present, is kept in the new
    /// sidecar (<see cref="TrainingReport.InitializedFrom"/>). Default <see langword="null"/>.
    /// </summary>
    public string? InitialWeights { get; init; }

    /// <summary>Clip the gradient's global L2 norm to this value (0 = off). Default 0.</summary>
    public double GradientClip { get; init; }

    /// <summary>
    /// Fresh training images every epoch: epoch e (0-based) trains on images e·<see cref="TrainImages"/> …
    /// (e+1)·<see cref="TrainImages"/> − 1 of the same training stream (seed <see cref="DataSeed"/>; the validation and
    /// test streams are untouched), so no image is seen twice. Default off (the same <see cref="TrainImages"/> images every epoch).
    /// </summary>
    public bool FreshImagesPerEpoch { get; init; }

    /// <summary>
    /// The ViT's shape when <see cref="Architecture"/> is <see cref="SyntheticArchitecture.Vit"/>; <see langword="null"/> =
    /// <see cref="SyntheticModels.VitOptions"/> (the committed model's shape). Its class count and image size must match
    /// <see cref="ClassCount"/> and <see cref="ImageSize"/>. Default <see langword="null"/>.
    /// </summary>
    public VisionTransformerOptions? VitShape { get; init; }

    /// <summary>
    /// Initialise the ViT as timm's <c>init_weights_vit_timm</c> does (every Linear weight truncated normal σ 0.02 cut at ±2σ,
    /// biases zero; LayerNorms 1 and 0; the patch convolution and the tokens as constructed) instead of TorchSharp's default
    /// Linear initialisation. Ignored for the CNNs and with <see cref="InitialWeights"/>. Default off.
    /// </summary>
    public bool TimmInit { get; init; }

    /// <summary>
    /// Start the ViT's (learned) position embedding from the fixed 2D sine-cosine embedding of MAE / Beyer et al. 2022
    /// (<see cref="SyntheticTrainer.SinCosPositionEmbedding"/>; class token position 0) instead of N(0, 0.02²). Ignored for the CNNs and with
    /// <see cref="InitialWeights"/>. Default off.
    /// </summary>
    public bool SinCosPositions { get; init; }

    /// <summary>
    /// Train on randomly permuted labels (the data-randomisation test of Adebayo et al. 2018): the training labels are
    /// shuffled once with a generator seeded by this value (<see cref="SyntheticTrainer.PermuteLabels"/>; class counts kept), validation and
    /// test labels stay true, so their accuracy measures what a model that memorised noise knows (about chance). Needs
    /// <see cref="FreshImagesPerEpoch"/> off (memorising needs the same images every epoch). Default <see langword="null"/> (true labels).
    /// </summary>
    public int? PermutedLabelSeed { get; init; }

    /// <summary>
    /// The training recipe of the committed model of <paramref name="architecture"/>: the CNNs use the defaults above;
    /// the ViT uses AdamW (lr 1.5e-3, weight decay 0.01), batch 32, 2 warm-up epochs, gradient clipping at 1 and fresh
    /// images every epoch (no shifts).
    /// </summary>
    /// <param name="architecture">Architecture.</param>
    /// <returns>The options.</returns>
    public static TrainingOptions For(SyntheticArchitecture architecture) => architecture == SyntheticArchitecture.Vit
        ? new TrainingOptions
        {
            Architecture = architecture,
            LearningRate = 1.5e-3,
            WeightDecay = 0.01,
            DecoupledWeightDecay = true,
            WarmupEpochs = 2,
            BatchSize = 32,
            GradientClip = 1,
            FreshImagesPerEpoch = true,
        }
        : new TrainingOptions { Architecture = architecture };

    /// <summary>Learning rate of epoch <paramref name="epoch"/> (0-based) at fraction <paramref name="progress"/> ∈ (0,1] of its steps.</summary>
    /// <param name="epoch">0-based epoch.</param>
    /// <param name="progress">Fraction of the epoch's steps done, this one included.</param>
    /// <returns>The learning rate: linear warm-up, then cosine annealing per epoch (as <c>CosineAnnealingLR</c>).</returns>
    public double LearningRateAt(int epoch, double progress)
    {
        if (epoch < WarmupEpochs) return LearningRate * Math.Min(1, (epoch + progress) / WarmupEpochs);
        var span = Math.Max(1, MaxEpochs - WarmupEpochs);
        return LearningRate * (1 + Math.Cos(Math.PI * (epoch - WarmupEpochs) / span)) / 2;
    }

    internal void Validate()
    {
        if (TrainImages < 1 || ValidationImages < 1 || TestImages < 1) throw new ArgumentOutOfRangeException(nameof(TrainImages), "Every split needs at least one image.");
        if (ImageSize < 16) throw new ArgumentOutOfRangeException(nameof(ImageSize), ImageSize, "Images must be at least 16 pixels wide.");
        if (MaxEpochs < 1) throw new ArgumentOutOfRangeException(nameof(MaxEpochs), MaxEpochs, "At least one epoch is needed.");
        if (BatchSize < 2) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchNorm needs batches of at least 2.");
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "Must be > 0.");
        if (!(WeightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "Must be ≥ 0.");
        if (ShiftPixels < 0 || ShiftPixels >= ImageSize / 2) throw new ArgumentOutOfRangeException(nameof(ShiftPixels), ShiftPixels, "Must be ≥ 0 and below half the image side.");
        if (WarmupEpochs < 0) throw new ArgumentOutOfRangeException(nameof(WarmupEpochs), WarmupEpochs, "Must be ≥ 0 (a warm-up as long as the training never reaches the peak rate).");
        if (InitialWeights is not null && !File.Exists(InitialWeights)) throw new FileNotFoundException($"The initial weights '{InitialWeights}' do not exist.", InitialWeights);
        if (TimeLimitSeconds is { } limit && !(limit > 0)) throw new ArgumentOutOfRangeException(nameof(TimeLimitSeconds), limit, "Must be > 0 seconds.");
        if (!(GradientClip >= 0)) throw new ArgumentOutOfRangeException(nameof(GradientClip), GradientClip, "Must be ≥ 0.");
        if (PermutedLabelSeed is not null && FreshImagesPerEpoch)
            throw new ArgumentException("TrainingOptions.PermutedLabelSeed needs FreshImagesPerEpoch off: a model can memorise permuted labels only of images it sees again.", nameof(PermutedLabelSeed));
        if (VitShape is { } shape)
        {
            shape.Validate();
            if (shape.NumClasses != ClassCount || shape.ImageSize != ImageSize)
                throw new ArgumentException($"TrainingOptions.VitShape is for {shape.NumClasses} classes at {shape.ImageSize}²; the training has {ClassCount} classes at {ImageSize}².", nameof(VitShape));
        }
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

    /// <summary>Why the training stopped: the validation target, the epoch count or the time limit.</summary>
    public string? StopReason { get; init; }

    /// <summary>The initial weights' file name, when the training started from trained weights (<see cref="TrainingOptions.InitialWeights"/>).</summary>
    public string? InitialWeights { get; init; }

    /// <summary>The sidecar of the initial weights (the earlier stage), when it was present.</summary>
    public TrainingReport? InitializedFrom { get; init; }

    /// <summary>
    /// The seed of the training-label permutation (<see cref="TrainingOptions.PermutedLabelSeed"/>) when the model was
    /// trained on randomly permuted labels (the data-randomisation model of the sanity checks); <see langword="null"/> for
    /// a model trained on the true labels.
    /// </summary>
    public int? PermutedLabelSeed { get; init; }

    /// <summary>
    /// Final training accuracy (train mode, augmented batches, the running value of the last epoch); for a
    /// label-permuted model, how far it fitted the permuted labels. <see langword="null"/> when no epoch completed.
    /// </summary>
    public double? TrainAccuracy { get; init; }

    /// <summary>Writes the report as indented JSON.</summary>
    /// <param name="path">File path.</param>
    public void Save(string path) => RootDtd.IO.AtomicFile.WriteAllText(path, JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true }) + "\n");
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
    /// <param name="cancellationToken">
    /// Checked before every optimiser step: when it is cancelled the training stops after the step in progress, measures
    /// the test accuracy of the weights it has and throws <see cref="TrainingInterruptedException"/> with that model and
    /// a report that says where it stopped (the partial epoch is not in <see cref="TrainingReport.History"/>).
    /// </param>
    /// <returns>The trained model and its report.</returns>
    /// <exception cref="TrainingInterruptedException"><paramref name="cancellationToken"/> was cancelled (it holds the model as it was).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before the first step (no model).</exception>
    public static TrainingResult Train(TrainingOptions? options = null, IProgress<EpochReport>? progress = null, TextWriter? log = null, CancellationToken cancellationToken = default)
    {
        options ??= new TrainingOptions();
        options.Validate();
        var total = Stopwatch.StartNew();
        var dataOptions = SyntheticModels.DataOptions(options.ImageSize, options.ClassCount);
        var generator = new SyntheticDatasetGenerator(dataOptions);
        log?.WriteLine($"generating {options.TrainImages} train / {options.ValidationImages} validation / {options.TestImages} test images ({options.ImageSize}×{options.ImageSize}) …");
        var (trainX, trainY) = Split(generator, options.DataSeed, options.TrainImages);
        var (valX, valY) = Split(generator, options.DataSeed + 1, options.ValidationImages);
        if (options.PermutedLabelSeed is { } labelSeed)
        {
            var permuted = PermuteLabels(trainY, labelSeed);
            trainY.Dispose();
            trainY = permuted;
        }
        log?.WriteLine($"  done in {total.Elapsed.TotalSeconds:F1} s");
        if (cancellationToken.IsCancellationRequested)
        {
            foreach (var t in new[] { trainX, trainY, valX, valY }) t.Dispose();
            cancellationToken.ThrowIfCancellationRequested();
        }

        torch.random.manual_seed(options.Seed);
        var model = options.Architecture == SyntheticArchitecture.Vit && options.VitShape is { } vitShape
            ? new VisionTransformer(vitShape)
            : SyntheticModels.Create(options.Architecture, options.ClassCount, options.ImageSize);
        if (options.TimmInit && options.InitialWeights is null && model is VisionTransformer vit) InitializeLikeTimm(vit);
        if (options.SinCosPositions && options.InitialWeights is null && model is VisionTransformer v2)
        {
            using var noGrad = torch.no_grad();
            using var table = SinCosPositionEmbedding(v2.Options.GridSize, v2.Options.EmbedDim);
            v2.PositionEmbedding.copy_(table.unsqueeze(0));
        }
        TrainingReport? initialReport = null;
        if (options.InitialWeights is { } init)
        {
            model.load_safetensors(init);
            var sidecar = Path.ChangeExtension(init, ".json");
            if (File.Exists(sidecar)) initialReport = JsonSerializer.Deserialize<TrainingReport>(File.ReadAllText(sidecar));
            log?.WriteLine($"starting from {init}{(initialReport is null ? "" : string.Create(CultureInfo.InvariantCulture, $" ({initialReport.Epochs} epochs, validation {initialReport.ValidationAccuracy:P1}, test {initialReport.TestAccuracy:P1})"))}");
        }
        var parameters = model.parameters().Sum(p => p.numel());
        log?.WriteLine($"{SyntheticModels.NameOf(options.Architecture)}: {parameters:N0} parameters");
        using var optimizer = options.DecoupledWeightDecay
            ? (torch.optim.Optimizer)torch.optim.AdamW(model.parameters(), lr: options.LearningRate, weight_decay: options.WeightDecay)
            : torch.optim.Adam(model.parameters(), lr: options.LearningRate, weight_decay: options.WeightDecay);
        var group = optimizer.ParamGroups.First();
        var stepsPerEpoch = Math.Max(1, (options.TrainImages - 1 + options.BatchSize - 1) / options.BatchSize);
        var shuffle = new torch.Generator((ulong)options.Seed);
        var history = new List<EpochReport>();
        double valAcc = 0;
        var stopReason = string.Create(CultureInfo.InvariantCulture, $"ran all {options.MaxEpochs} epochs");
        var interrupted = false;
        try
        {
            for (var epoch = 1; epoch <= options.MaxEpochs; epoch++)
            {
                var clock = Stopwatch.StartNew();
                if (options.FreshImagesPerEpoch && epoch > 1)
                {
                    trainX.Dispose();
                    trainY.Dispose();
                    (trainX, trainY) = Split(generator, options.DataSeed, options.TrainImages, (epoch - 1) * options.TrainImages);
                }
                var lr = options.LearningRateAt(epoch - 1, 1.0 / stepsPerEpoch);
                model.train();
                double lossSum = 0;
                long correct = 0, seen = 0;
                using (var order = torch.randperm(options.TrainImages, generator: shuffle))
                {
                    var step = 0;
                    for (long s = 0; s + 1 < options.TrainImages; s += options.BatchSize, step++)
                    {
                        var len = Math.Min(options.BatchSize, options.TrainImages - s);
                        if (len < 2) break; // BatchNorm cannot train on a single sample
                        if (cancellationToken.IsCancellationRequested)
                        {
                            interrupted = true;
                            stopReason = string.Create(CultureInfo.InvariantCulture,
                                $"interrupted during epoch {epoch} after {step} of {stepsPerEpoch} steps ({history.Count} complete epochs): the weights are those after that step");
                            break;
                        }
                        using var scope = torch.NewDisposeScope();
                        var idx = order.narrow(0, s, len);
                        var x = trainX.index_select(0, idx);
                        var y = trainY.index_select(0, idx);
                        if (options.Augment)
                        {
                            var flip = torch.rand(new[] { len }, generator: shuffle).lt(0.5).view(len, 1, 1, 1);
                            x = torch.where(flip, x.flip(3), x);
                        }

                        if (options.ShiftPixels > 0) x = RandomShift(x, options.ShiftPixels, shuffle);
                        group.LearningRate = options.LearningRateAt(epoch - 1, (step + 1.0) / stepsPerEpoch);
                        optimizer.zero_grad();
                        var logits = model.forward(x);
                        var loss = torch.nn.functional.cross_entropy(logits, y);
                        loss.backward();
                        if (options.GradientClip > 0) torch.nn.utils.clip_grad_norm_(model.parameters(), options.GradientClip);
                        optimizer.step();
                        lossSum += loss.item<float>() * len;
                        correct += logits.argmax(1).eq(y).sum().item<long>();
                        seen += len;
                    }
                }

                if (interrupted)
                {
                    log?.WriteLine(stopReason);
                    break;
                }

                valAcc = Accuracy(model, valX, valY, 256);
                var report = new EpochReport(epoch, lossSum / seen, (double)correct / seen, valAcc, lr, clock.Elapsed.TotalSeconds);
                history.Add(report);
                progress?.Report(report);
                log?.WriteLine(report.ToString());
                if (valAcc >= options.TargetAccuracy)
                {
                    stopReason = string.Create(CultureInfo.InvariantCulture, $"validation accuracy {valAcc:P1} ≥ target {options.TargetAccuracy:P1} after epoch {epoch}");
                    log?.WriteLine(stopReason + ": stopping");
                    break;
                }

                if (options.TimeLimitSeconds is { } limit && total.Elapsed.TotalSeconds >= limit && epoch < options.MaxEpochs)
                {
                    stopReason = string.Create(CultureInfo.InvariantCulture, $"time limit of {limit:F0} s reached after epoch {epoch} of {options.MaxEpochs} (learning rate still {options.LearningRateAt(epoch, 0):g3})");
                    log?.WriteLine(stopReason + ": stopping");
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
            Name = SyntheticModels.NameOf(options.Architecture) + (options.PermutedLabelSeed is null ? "" : SyntheticModels.RandomLabelSuffix),
            Architecture = options.Architecture,
            Constructor = options.Architecture == SyntheticArchitecture.Vit && options.VitShape is { } shape
                ? SyntheticModels.VitConstructorText(shape)
                : SyntheticModels.ConstructorText(options.Architecture, options.ClassCount),
            Classes = generator.Classes.Select(c => c.Name).ToArray(),
            ImageSize = options.ImageSize,
            NormalizationMean = norm.Mean.Select(v => (double)v).ToArray(),
            NormalizationStd = norm.Std.Select(v => (double)v).ToArray(),
            Data = $"{SyntheticModels.DataDescription}; {options.ImageSize}×{options.ImageSize}, {options.ClassCount} classes; labels balanced (index mod classes)",
            Seed = options.Seed,
            DataSeeds = new[] { options.DataSeed, options.DataSeed + 1, options.DataSeed + 2 },
            SplitSizes = new[] { options.TrainImages, options.ValidationImages, options.TestImages },
            Optimizer = Describe(options),
            Epochs = history.Count,
            ValidationAccuracy = valAcc,
            TestAccuracy = testAcc,
            Parameters = parameters,
            Seconds = Math.Round(total.Elapsed.TotalSeconds, 1),
            History = history,
            StopReason = stopReason,
            InitialWeights = options.InitialWeights is null ? null : Path.GetFileName(options.InitialWeights),
            InitializedFrom = initialReport,
            PermutedLabelSeed = options.PermutedLabelSeed,
            TrainAccuracy = history.Count == 0 ? null : history[^1].TrainAccuracy,
        };
        if (interrupted) throw new TrainingInterruptedException(new TrainingResult(model, reportAll), cancellationToken);
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
    /// <param name="cancellationToken">
    /// See <see cref="Train"/>. An interrupted training leaves <paramref name="outputPath"/> as it was and writes the
    /// weights it has to <see cref="InterruptedPath"/> (plus its sidecar, whose stop reason says where it stopped).
    /// </param>
    /// <returns>The report.</returns>
    /// <exception cref="TrainingInterruptedException">Interrupted; <see cref="TrainingInterruptedException.WeightsPath"/> names the weights written.</exception>
    public static TrainingReport TrainAndSave(TrainingOptions options, string outputPath, TextWriter? log = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrWhiteSpace(outputPath);
        TrainingResult result;
        try
        {
            result = Train(options, null, log, cancellationToken);
        }
        catch (TrainingInterruptedException e) when (e.Result is { } partial)
        {
            var path = InterruptedPath(outputPath);
            using (partial.Model) SaveWithSidecar(partial, path, log);
            throw new TrainingInterruptedException(partial.Report, path, e);
        }
        using (result.Model) SaveWithSidecar(result, outputPath, log);
        return result.Report;
    }

    /// <summary>Where <see cref="TrainAndSave"/> writes the weights of an interrupted training: <c>&lt;stem&gt;.interrupted.safetensors</c> next to the output.</summary>
    /// <param name="outputPath">The output weights path.</param>
    public static string InterruptedPath(string outputPath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputPath);
        var full = Path.GetFullPath(outputPath);
        return Path.Combine(Path.GetDirectoryName(full)!, Path.GetFileNameWithoutExtension(full) + ".interrupted" + Path.GetExtension(full));
    }

    private static void SaveWithSidecar(TrainingResult result, string path, TextWriter? log)
    {
        SyntheticModels.Save(result.Model, path);
        result.Report.Save(Path.ChangeExtension(path, ".json"));
        log?.WriteLine($"saved {path} ({new FileInfo(path).Length / 1024.0:F0} KiB) and {Path.ChangeExtension(path, ".json")}");
    }

    /// <summary>The optimiser, schedule and augmentation of <paramref name="options"/> as one line (the sidecar's <c>Optimizer</c>).</summary>
    /// <param name="options">Options.</param>
    /// <returns>Text.</returns>
    public static string Describe(TrainingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var o = options;
        var text = string.Create(CultureInfo.InvariantCulture,
            $"{(o.DecoupledWeightDecay ? "AdamW" : "Adam")}(lr={o.LearningRate:g3}, weight_decay={o.WeightDecay:g3}), ");
        if (o.WarmupEpochs > 0) text += string.Create(CultureInfo.InvariantCulture, $"linear warm-up over {o.WarmupEpochs} epochs, cosine annealing over the remaining {o.MaxEpochs - o.WarmupEpochs}");
        else text += string.Create(CultureInfo.InvariantCulture, $"cosine annealing over {o.MaxEpochs} epochs");
        if (o.WarmupEpochs >= o.MaxEpochs) text = text.Replace(string.Create(CultureInfo.InvariantCulture, $", cosine annealing over the remaining {o.MaxEpochs - o.WarmupEpochs}"), "", StringComparison.Ordinal);
        text += string.Create(CultureInfo.InvariantCulture, $", batch {o.BatchSize}, flips={(o.Augment ? "on" : "off")}");
        if (o.ShiftPixels > 0) text += string.Create(CultureInfo.InvariantCulture, $", shifts ±{o.ShiftPixels} px");
        if (o.GradientClip > 0) text += string.Create(CultureInfo.InvariantCulture, $", gradient norm clipped at {o.GradientClip:g3}");
        if (o.FreshImagesPerEpoch) text += string.Create(CultureInfo.InvariantCulture, $", fresh images every epoch (epoch e: images e·{o.TrainImages} … (e+1)·{o.TrainImages} − 1 of the training stream)");
        if (o.TimmInit && o.Architecture == SyntheticArchitecture.Vit) text += ", timm initialisation (Linear weights truncated normal σ 0.02, biases 0)";
        if (o.SinCosPositions && o.Architecture == SyntheticArchitecture.Vit) text += ", position embedding started from the 2D sine-cosine table";
        if (o.PermutedLabelSeed is { } ls) text += string.Create(CultureInfo.InvariantCulture, $", TRAINING LABELS RANDOMLY PERMUTED (seed {ls}; validation and test labels true)");
        return text + string.Create(CultureInfo.InvariantCulture, $", early stop at validation accuracy ≥ {o.TargetAccuracy:g3}");
    }

    /// <summary>
    /// Shifts each image of a batch by its own random offset (dy, dx) ∈ [−max, max]²: output pixel (i, j) is input pixel
    /// (i + dy, j + dx), clamped to the image (edge pixels repeated).
    /// </summary>
    /// <param name="x">Images [N, C, H, W].</param>
    /// <param name="max">Largest shift in pixels.</param>
    /// <param name="generator">Random generator of the offsets.</param>
    /// <returns>The shifted images (same shape).</returns>
    public static Tensor RandomShift(Tensor x, int max, torch.Generator? generator = null)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dim() != 4) throw new ArgumentException($"RandomShift expects images [N, C, H, W]; got [{string.Join(", ", x.shape)}].", nameof(x));
        if (max < 0) throw new ArgumentOutOfRangeException(nameof(max), max, "Must be ≥ 0.");
        long n = x.shape[0], h = x.shape[2], w = x.shape[3];
        var padded = torch.nn.functional.pad(x, new long[] { max, max, max, max }, PaddingModes.Replicate);
        var offsets = torch.randint(0, 2 * max + 1, new[] { n, 2 }, generator: generator, device: x.device);
        var rows = torch.arange(h, device: x.device).view(1, h) + offsets.select(1, 0).view(n, 1); // [n, h]
        var cols = torch.arange(w, device: x.device).view(1, w) + offsets.select(1, 1).view(n, 1); // [n, w]
        var c = x.shape[1];
        var byRow = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * max));
        return byRow.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w));
    }

    /// <summary>
    /// timm's <c>init_weights_vit_timm</c> on <paramref name="model"/>: every Linear weight truncated normal (σ 0.02, cut at
    /// ±2σ), every Linear bias 0, LayerNorm weight 1 and bias 0; the patch convolution, class token and position embedding
    /// keep the constructor's initialisation. Uses the current torch seed.
    /// </summary>
    /// <param name="model">The ViT.</param>
    public static void InitializeLikeTimm(VisionTransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var noGrad = torch.no_grad();
        foreach (var (_, module) in model.named_modules())
        {
            switch (module)
            {
                case TorchSharp.Modules.Linear linear:
                    TruncatedNormal(linear.weight!, 0.02);
                    if (linear.bias is { } bias) torch.nn.init.zeros_(bias);
                    break;
                case TorchSharp.Modules.LayerNorm norm:
                    if (norm.weight is { } w) torch.nn.init.ones_(w);
                    if (norm.bias is { } b) torch.nn.init.zeros_(b);
                    break;
            }
        }
    }

    /// <summary>
    /// The labels <paramref name="labels"/> [N] in a random order: <c>labels[π]</c> with π a permutation drawn from a CPU
    /// generator seeded with <paramref name="seed"/> (the same on every device; the multiset of labels is kept).
    /// </summary>
    /// <param name="labels">Labels [N] (int64).</param>
    /// <param name="seed">Seed of the permutation.</param>
    /// <returns>The permuted labels (a new tensor on the labels' device).</returns>
    public static Tensor PermuteLabels(Tensor labels, int seed)
    {
        ArgumentNullException.ThrowIfNull(labels);
        if (labels.dim() != 1) throw new ArgumentException($"PermuteLabels expects labels [N]; got [{string.Join(", ", labels.shape)}].", nameof(labels));
        using var generator = new torch.Generator((ulong)seed, torch.CPU);
        using var order = torch.randperm(labels.shape[0], generator: generator).to(labels.device);
        return labels.index_select(0, order);
    }

    /// <summary>Fills <paramref name="t"/> with N(0, σ²) cut at ±2σ (values outside are drawn again).</summary>
    private static void TruncatedNormal(Tensor t, double sigma)
    {
        using var scope = torch.NewDisposeScope();
        var values = torch.randn(t.shape, dtype: t.dtype, device: t.device) * sigma;
        for (var round = 0; round < 100; round++)
        {
            var outside = values.abs().gt(2 * sigma);
            if (!outside.any().item<bool>()) break;
            values = torch.where(outside, torch.randn_like(values) * sigma, values);
        }
        t.copy_(values.clamp(-2 * sigma, 2 * sigma));
    }

    /// <summary>
    /// The 2D sine-cosine position table [1 + g², D] (row 0, the class token: zeros): for patch (row r, column c) the first
    /// D/2 features encode c and the last D/2 encode r, each as [sin(p·ω_k), cos(p·ω_k)] with ω_k = 10000^(−k/(D/4)),
    /// k = 0 … D/4 − 1 (MAE's <c>get_2d_sincos_pos_embed</c> layout).
    /// </summary>
    /// <param name="grid">Patches per side.</param>
    /// <param name="dim">Embedding width, a multiple of 4.</param>
    /// <returns>The table (float32, CPU).</returns>
    public static Tensor SinCosPositionEmbedding(int grid, int dim)
    {
        if (grid < 1) throw new ArgumentOutOfRangeException(nameof(grid), grid, "Must be ≥ 1.");
        if (dim < 4 || dim % 4 != 0) throw new ArgumentOutOfRangeException(nameof(dim), dim, "The width must be a positive multiple of 4.");
        var quarter = dim / 4;
        var table = new float[(1 + grid * grid) * dim];
        for (var r = 0; r < grid; r++)
        for (var c = 0; c < grid; c++)
        {
            var row = (1 + r * grid + c) * dim;
            for (var k = 0; k < quarter; k++)
            {
                var omega = Math.Pow(10000, -(double)k / quarter);
                table[row + k] = (float)Math.Sin(c * omega);
                table[row + quarter + k] = (float)Math.Cos(c * omega);
                table[row + 2 * quarter + k] = (float)Math.Sin(r * omega);
                table[row + 3 * quarter + k] = (float)Math.Cos(r * omega);
            }
        }
        return torch.tensor(table, new long[] { 1 + grid * grid, dim });
    }

    private static (Tensor Images, Tensor Labels) Split(SyntheticDatasetGenerator generator, int seed, int count, int start = 0)
    {
        var (x, m, y) = SyntheticDatasetGenerator.ToTensors(generator.GenerateMany(seed, count, start));
        m.Dispose();
        using (x)
            return (SyntheticModels.Normalization.Normalize(x), y);
    }
}
