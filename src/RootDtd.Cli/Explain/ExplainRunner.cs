using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using RootDtd.Composites;
using RootDtd.Imaging;
using RootDtd.IO;
using RootDtd.Models;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace RootDtd.Cli.Explain;

/// <summary>
/// Runs <c>rootdtd explain</c>: builds the model, loads the weights, explains the images batch by batch and writes
/// the heatmap, overlay, layer maps and JSON report of every image. An image that cannot be loaded or written is
/// reported (naming the file) and skipped; the run then ends with exit code 1.
/// </summary>
public sealed class ExplainRunner
{
    private readonly ExplainSettings _settings;
    private readonly CliEnvironment _env;
    private readonly List<RunImageEntry> _summary = new();

    /// <summary>Creates a runner.</summary>
    public ExplainRunner(ExplainSettings settings, CliEnvironment environment)
    {
        _settings = settings ?? throw new ArgumentNullException(nameof(settings));
        _env = environment ?? throw new ArgumentNullException(nameof(environment));
    }

    /// <summary>The version written into reports.</summary>
    public static string Version { get; } = ReadVersion();

    private int _written;

    /// <summary>Runs; returns the exit code. Usage problems found late (e.g. an unknown <c>--layers</c> module) throw <see cref="UsageException"/>.</summary>
    public int Run()
    {
        var s = _settings;
        var total = Stopwatch.StartNew();
        var device = ResolveDevice(s.Device);

        var model = ModelZoo.Create(s.Architecture, s.Classes);
        if (s.WeightsPath is null)
        {
            _env.WriteWarning(string.Equals(s.Architecture, CntkResNet18.ModelName, StringComparison.OrdinalIgnoreCase)
                ? $"no --weights given: {s.Architecture} has its pretrained backbone but an untrained head (train one with 'rootdtd train --backbone {CntkResNet18.ModelName}'), so the explanations show nothing meaningful."
                : $"no --weights given: {s.Architecture} has random weights, so the explanations show nothing meaningful.");
        }
        else
        {
            var loaded = ModelWeights.Load(model, s.WeightsPath);
            if (!s.Quiet && loaded.StrippedPrefix.Length > 0)
                _env.Out.WriteLine($"Removed the prefix '{loaded.StrippedPrefix}' from the keys of {s.WeightsPath}.");
            if (loaded.NonFiniteKeys.Count > 0)
                _env.WriteWarning($"{s.WeightsPath} has NaN or infinite values in {string.Join(", ", loaded.NonFiniteKeys.Take(5))}" +
                                  $"{(loaded.NonFiniteKeys.Count > 5 ? $" and {loaded.NonFiniteKeys.Count - 5} more" : string.Empty)}; the model's outputs will not be finite.");
        }
        model.eval();
        if (s.DType != ScalarType.Float32) model.to(s.DType);
        if (device.type != DeviceType.CPU) model.to(device);

        var loader = new ImageLoader(new ImageLoadOptions { ResizeShorterSide = s.Resize, CropSize = s.Size, Normalization = s.Normalization });
        using var low = s.Normalization.LowerBound();
        using var high = s.Normalization.UpperBound();
        var progress = s.Quiet ? null : new ProgressBar(_env.Error, s.Images.Count, _env.ErrorIsTerminal);
        var done = 0;
        var batchCount = 0;
        var work = Stopwatch.StartNew();
        // within a batch the explainer reports per graph unit: the bar moves while a long root-inference batch runs
        var unitProgress = progress is null ? null : new SyncProgress<ExplanationProgress>(p => progress.Report(done + p.Fraction * batchCount, work.Elapsed));
        var options = new ExplainerOptions
        {
            InputLow = low, InputHigh = high, RecordLayers = s.Layers, CollectDiagnostics = s.Diagnostics, Progress = unitProgress,
        };
        using var explainer = new Explainer(model, s.Method.CreateComposite(), options);
        CheckLayers(explainer);
        var rules = explainer.RuleAssignment.Select(r => new RuleEntry(r.Node, r.Rule)).ToList();

        Commands.CommandAction.RequireWritableFolder(s.OutputDirectory);
        var stems = UniqueStems(s.Images);
        RefuseOverwritingInputs(stems);
        var cancel = _env.Cancellation;
        var interrupted = false;
        var failures = new List<string>();
        progress?.Report(0, work.Elapsed);
        for (var start = 0; start < s.Images.Count; start += s.BatchSize)
        {
            if (cancel.IsCancellationRequested)
            {
                interrupted = true;
                break;
            }
            var chunk = Enumerable.Range(start, Math.Min(s.BatchSize, s.Images.Count - start)).ToList();
            var images = new List<(int Index, LoadedImage Image, double LoadMs)>();
            try
            {
                foreach (var i in chunk)
                {
                    var watch = Stopwatch.StartNew();
                    try
                    {
                        images.Add((i, loader.Load(s.Images[i]), watch.Elapsed.TotalMilliseconds));
                    }
                    catch (ImageLoadException e)
                    {
                        progress?.Clear();
                        _env.WriteError(e.Message);
                        failures.Add(s.Images[i]);
                    }
                }
                batchCount = images.Count;
                if (images.Count > 0) ExplainBatch(explainer, images, stems, rules, device, failures, progress);
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested)
            {
                interrupted = true; // the batch being explained is discarded: none of its files were written
                break;
            }
            finally
            {
                foreach (var image in images) image.Image.Dispose();
            }
            done += chunk.Count;
            progress?.Report(done, work.Elapsed);
        }
        progress?.Finish();

        if (interrupted)
        {
            var written = _written;
            _env.WriteError($"interrupted: {written} of {s.Images.Count} image(s) explained and written to {s.OutputDirectory}; the other {s.Images.Count - written - failures.Count} were not started or were discarded.");
            return ExitCodes.Interrupted;
        }
        var succeeded = s.Images.Count - failures.Count;
        WriteSummary(failures, total.Elapsed.TotalSeconds);
        if (!s.Quiet)
        {
            _env.Out.WriteLine(FormattableString.Invariant(
                $"Explained {succeeded} of {s.Images.Count} image(s) with {s.Method.Method.Name} in {total.Elapsed.TotalSeconds:0.0} s; results in {s.OutputDirectory}"));
        }
        if (failures.Count == 0) return ExitCodes.Ok;
        _env.WriteError($"{failures.Count} of {s.Images.Count} image(s) failed: {string.Join(", ", failures)}");
        return ExitCodes.Failure;
    }

    private void ExplainBatch(Explainer explainer, List<(int Index, LoadedImage Image, double LoadMs)> images, string[] stems,
        List<RuleEntry> rules, Device device, List<string> failures, ProgressBar? progress)
    {
        var s = _settings;
        using var scope = torch.NewDisposeScope();
        var batch = torch.stack(images.Select(i => i.Image.Normalized).ToArray()).to(s.DType).to(device);
        var targets = s.Target is int t ? Enumerable.Repeat((long)t, images.Count).ToArray() : null;
        var watch = Stopwatch.StartNew();
        var explanation = explainer.Explain(batch, targets, _env.Cancellation);
        var batchMs = watch.Elapsed.TotalMilliseconds;

        var classes = (int)explanation.Logits.shape[1];
        var logits = explanation.Logits.to(float64).cpu().data<double>().ToArray();
        var probabilities = torch.softmax(explanation.Logits.to(float64), 1).cpu().data<double>().ToArray();
        var heatmaps = explanation.Heatmap.to(float32).cpu();
        var reference = explainer.Composite.StartRelevance switch
        {
            StartRelevance.TargetLogit => "logit",
            StartRelevance.AbsoluteTargetLogit => "absolute-logit",
            _ => "one-hot",
        };
        var traits = MethodTraits.Of(explainer.Composite).On(explainer.Graph);

        for (var k = 0; k < images.Count; k++)
        {
            var (index, image, loadMs) = images[k];
            var path = s.Images[index];
            var stem = stems[index];
            try
            {
                var renderWatch = Stopwatch.StartNew();
                ClassScore Score(int c) => new(c, s.Labels?[c], logits[k * classes + c], probabilities[k * classes + c]);
                var order = Enumerable.Range(0, classes).OrderByDescending(c => logits[k * classes + c]).ToList();
                var explained = Score((int)explanation.Targets[k]);

                var files = new OutputFiles(stem + ".heatmap.png", stem + ".overlay.png", stem + ".json", s.Layers.Count > 0 ? stem + ".layers.png" : null);
                var heatmap = heatmaps[k];
                var scale = HeatmapRenderer.ComputeScale(heatmap, s.Heatmap);
                using (var rendered = HeatmapRenderer.Render(heatmap, s.Heatmap)) rendered.SavePng(Out(files.Heatmap));
                using (var overlay = HeatmapRenderer.Overlay(image.DisplayImage, heatmap, s.Heatmap)) overlay.SavePng(Out(files.Overlay));
                var layers = WriteLayers(explanation, k, stem, image, heatmap, files.LayerFigure);
                var renderMs = renderWatch.Elapsed.TotalMilliseconds;

                var inputSum = explanation.Conservation.InputSum[k];
                var startRelevance = explanation.Conservation.StartRelevance[k];
                var absolute = Math.Abs(inputSum - startRelevance);
                var relative = explanation.Conservation.RelativeError(k);
                var lost = traits.LostConservation(relative);
                var report = new ImageReport
                {
                    Image = path,
                    Width = image.Width,
                    Height = image.Height,
                    TargetMode = s.Target is null ? "predicted" : "given",
                    Explained = explained,
                    Predicted = Score(order[0]),
                    Top = order.Take(5).Select(Score).ToList(),
                    Conservation = new ConservationEntry(reference, startRelevance, explained.Logit, inputSum, absolute, relative,
                        ExpectationId(traits.Conservation), traits.ConservationText, lost),
                    Heatmap = new HeatmapEntry(ModeId(s.Heatmap.Mode), s.Heatmap.ClipPercentile, s.Heatmap.MeanCropping, scale.Low, scale.High,
                        s.Heatmap.ResolvedColorMap.Name, s.Heatmap.ColorBar, s.Heatmap.OverlayAlpha == OverlayAlphaMode.Relevance ? "relevance" : "constant", Math.Round((double)s.Heatmap.OverlayOpacity, 4)),
                    Method = new MethodEntry(s.Method.Text, s.Method.Method.Name, s.Method.Method.Description, explainer.Composite.Name, s.Method.Values),
                    Model = new ModelEntry(s.Architecture, s.WeightsPath, s.Classes, device.ToString(), s.DType == ScalarType.Float64 ? "float64" : "float32",
                        s.Resize, s.Size, s.Normalization.Mean, s.Normalization.Std),
                    Rules = rules,
                    Layers = layers,
                    Files = files,
                    TimingsMs = new TimingEntry(Round(loadMs), Round(batchMs / images.Count), Round(renderMs), Round(batchMs), images.Count),
                    Diagnostics = s.Diagnostics ? explanation.Diagnostics.Select(d => new DiagnosticsEntry(d.Unit, d.Rule, d.Domain,
                        d.Values.Where(v => v.Value.Length > k).ToDictionary(v => v.Key, v => v.Value[k]), Round(d.Milliseconds))).ToList() : null,
                    RootdtdVersion = Version,
                };
                AtomicFile.WriteAllText(Out(files.Report), JsonSerializer.Serialize(report, ImageReport.JsonOptions));
                _summary.Add(new RunImageEntry(path, stem, explained, report.Conservation.RelativeError, report.Conservation.Expected, report.Conservation.Lost, files));
                _written++;

                if (!s.Quiet)
                {
                    progress?.Clear();
                    var name = explained.ClassName is null ? string.Empty : $" \"{explained.ClassName}\"";
                    var predicted = s.Target is null || order[0] == explained.ClassIndex ? string.Empty
                        : $"; predicted {order[0]}{(s.Labels?[order[0]] is { } p ? $" \"{p}\"" : string.Empty)}";
                    _env.Out.WriteLine(FormattableString.Invariant(
                        $"{path}: class {explained.ClassIndex}{name} (logit {explained.Logit:g4}, p {explained.Probability:0.###}){predicted}; {ConservationText(traits, inputSum, startRelevance, relative)}"));
                }
                if (lost)
                {
                    progress?.Clear();
                    _env.WriteWarning(FormattableString.Invariant(
                        $"{path}: {s.Method.Method.Name} {traits.ConservationText}, but Σ input relevance is {inputSum:g4} for a start of {startRelevance:g4} (relative error {relative:0.##e+0}, more than {traits.WarningThreshold:g2}). The map may be dominated by absorbed or exploding relevance; compare the per-layer sums (--diagnostics) or try --dtype float64."));
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
            {
                progress?.Clear();
                _env.WriteError($"Cannot write the results of '{path}': {e.Message}");
                failures.Add(path);
            }
        }
    }

    /// <summary>
    /// The run summary beside the per-image reports: <c>index.json</c> (the run and one entry per image, with stable
    /// keys) and <c>index.html</c> (every image's overlay and heatmap with its class and conservation, linking the files).
    /// </summary>
    private void WriteSummary(List<string> failures, double seconds)
    {
        var s = _settings;
        var summary = new RunSummary(s.Method.Text, s.Method.Method.Name, s.Architecture, s.WeightsPath, s.Images.Count, _summary.Count, failures,
            Math.Round(seconds, 3), _summary, Version);
        try
        {
            RootDtd.IO.AtomicFile.WriteAllText(Out("index.json"), JsonSerializer.Serialize(summary, ImageReport.JsonOptions));
            RootDtd.IO.AtomicFile.WriteAllText(Out("index.html"), SummaryHtml(summary));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _env.WriteError($"Cannot write the run summary (index.json, index.html) in '{s.OutputDirectory}': {e.Message}");
        }
    }

    internal static string SummaryHtml(RunSummary summary)
    {
        static string H(string? text) => System.Net.WebUtility.HtmlEncode(text ?? string.Empty);
        static string U(string file) => Uri.EscapeDataString(file);
        var sb = new System.Text.StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>rootdtd: ").Append(H(summary.Method)).Append(" on ").Append(summary.Explained.ToString(CultureInfo.InvariantCulture))
          .Append(" images</title><style>body{font-family:sans-serif}td,th{padding:4px 8px;text-align:left;vertical-align:top}img{max-width:300px}</style></head><body>\n");
        sb.Append("<h1>").Append(H(summary.Method)).Append("</h1>\n<p>")
          .Append(H(FormattableString.Invariant($"{summary.Architecture}, weights {summary.Weights ?? "none (random)"}; {summary.Explained} of {summary.Images} image(s) explained in {summary.Seconds:0.#} s; rootdtd {summary.RootdtdVersion}")))
          .Append("</p>\n");
        if (summary.Failed.Count > 0) sb.Append("<p>Failed: ").Append(H(string.Join(", ", summary.Failed))).Append("</p>\n");
        sb.Append("<table><thead><tr><th>image</th><th>overlay</th><th>heatmap</th><th>class</th><th>logit</th><th>conservation</th></tr></thead><tbody>\n");
        foreach (var e in summary.Entries)
        {
            var name = e.Explained.ClassName is null ? e.Explained.ClassIndex.ToString(CultureInfo.InvariantCulture) : FormattableString.Invariant($"{e.Explained.ClassIndex} ({e.Explained.ClassName})");
            var conservation = e.ConservationExpected == "not_expected" ? "not compared" : FormattableString.Invariant($"{e.ConservationRelativeError:0.##e+0}") + (e.ConservationLost ? " (lost)" : string.Empty);
            sb.Append("<tr><td><a href=\"").Append(U(e.Files.Report)).Append("\">").Append(H(e.Image)).Append("</a></td>")
              .Append("<td><img alt=\"overlay\" src=\"").Append(U(e.Files.Overlay)).Append("\"></td>")
              .Append("<td><img alt=\"heatmap\" src=\"").Append(U(e.Files.Heatmap)).Append("\"></td>")
              .Append("<td>").Append(H(name)).Append("</td><td>").Append(e.Explained.Logit.ToString("g4", CultureInfo.InvariantCulture)).Append("</td><td>").Append(H(conservation)).Append("</td></tr>\n");
        }
        sb.Append("</tbody></table>\n</body></html>\n");
        return sb.ToString();
    }

    private List<LayerEntry> WriteLayers(Explanation explanation, int k, string stem, LoadedImage image, Tensor heatmap, string? figureName)
    {
        var s = _settings;
        var entries = new List<LayerEntry>();
        if (s.Layers.Count == 0) return entries;
        var maps = new List<(string Name, Image<Rgb24> Map)>();
        try
        {
            foreach (var layer in s.Layers)
            {
                using var scope = torch.NewDisposeScope();
                var relevance = explanation.LayerRelevance[layer][k];
                var sum = relevance.sum().to(float64).cpu().item<double>();
                if (relevance.dim() != 3)
                {
                    entries.Add(new LayerEntry(layer, null, relevance.shape, sum));
                    continue;
                }
                var file = $"{stem}.layer-{Sanitize(layer)}.png";
                var map = LayerMaps.Render(relevance, image.Height, image.Width, s.Heatmap with { ColorBar = false });
                maps.Add((layer, map));
                map.SavePng(Out(file));
                entries.Add(new LayerEntry(layer, file, relevance.shape, sum));
            }
            if (figureName is not null)
            {
                using var rendered = HeatmapRenderer.Render(heatmap, s.Heatmap with { ColorBar = false });
                var grid = new ImageGrid(Math.Min(2 + maps.Count, 6)).Add(image.DisplayImage, "input").Add(rendered, "input relevance");
                foreach (var (name, map) in maps) grid.Add(map, name);
                using var figure = grid.Render();
                figure.SavePng(Out(figureName));
            }
        }
        finally
        {
            foreach (var (_, map) in maps) map.Dispose();
        }
        return entries;
    }

    private void CheckLayers(Explainer explainer)
    {
        var known = explainer.Graph.ModuleOutputs;
        var unknown = _settings.Layers.Where(l => l != "*" && !known.ContainsKey(l)).ToList();
        if (unknown.Count == 0) return;
        var names = known.Keys.ToList();
        var top = names.Where(n => !n.Contains('.', StringComparison.Ordinal)).ToList();
        throw new UsageException($"--layers: {_settings.Architecture} has no module {string.Join(", ", unknown.Select(u => $"'{u}'"))}. " +
            $"Top-level modules: {string.Join(", ", top)}; nested ones are written with dots (e.g. {names.FirstOrDefault(n => n.Count(c => c == '.') == 1) ?? names.FirstOrDefault() ?? "-"}).");
    }

    private static Device ResolveDevice(string text)
    {
        if (text == "cpu") return torch.CPU;
        if (!torch.cuda.is_available())
            throw new CliFailureException($"CUDA was requested (--device {text}) but is not available: this rootdtd uses TorchSharp's CPU backend or no CUDA GPU/driver was found. Use --device cpu, or build rootdtd with a CUDA backend package (see docs/cli.md).");
        var device = torch.device(text);
        if (device.index >= torch.cuda.device_count())
            throw new CliFailureException($"--device {text}: there are only {torch.cuda.device_count()} CUDA device(s).");
        return device;
    }

    private string Out(string file) => Path.Combine(_settings.OutputDirectory, file);

    /// <summary>Refuses, before any work, an output name that is one of the input files (e.g. --out is the input folder).</summary>
    private void RefuseOverwritingInputs(string[] stems)
    {
        var inputs = new HashSet<string>(_settings.Images.Select(Path.GetFullPath), OperatingSystem.IsWindows() ? StringComparer.OrdinalIgnoreCase : StringComparer.Ordinal);
        foreach (var stem in stems)
        {
            var names = new List<string> { stem + ".heatmap.png", stem + ".overlay.png", stem + ".json" };
            if (_settings.Layers.Count > 0) names.Add(stem + ".layers.png");
            names.AddRange(_settings.Layers.Select(l => $"{stem}.layer-{Sanitize(l)}.png"));
            foreach (var name in names)
            {
                var path = Path.GetFullPath(Out(name));
                if (inputs.Contains(path))
                    throw new UsageException($"--out {_settings.OutputDirectory}: the result '{name}' would overwrite the input image '{path}'; choose another output folder.");
            }
        }
    }

    /// <summary>Output names: the file name without extension, made unique with -2, -3 … when names repeat.</summary>
    internal static string[] UniqueStems(IReadOnlyList<string> paths)
    {
        var used = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        var stems = new string[paths.Count];
        for (var i = 0; i < paths.Count; i++)
        {
            var stem = Sanitize(Path.GetFileNameWithoutExtension(paths[i]));
            if (stem.Length == 0) stem = "image";
            var candidate = stem;
            for (var n = 2; !used.Add(candidate); n++) candidate = $"{stem}-{n}";
            stems[i] = candidate;
        }
        return stems;
    }

    private static string Sanitize(string name)
    {
        var invalid = Path.GetInvalidFileNameChars();
        return new string(name.Select(c => invalid.Contains(c) || c == ' ' ? '_' : c).ToArray());
    }

    private static double Round(double ms) => Math.Round(ms, 3);

    /// <summary>The per-image conservation phrase: compared with the start only where conservation is expected.</summary>
    internal static string ConservationText(MethodTraits traits, double inputSum, double start, double relative) =>
        traits.Conservation == ConservationExpectation.NotExpected
            ? FormattableString.Invariant($"Σ relevance {inputSum:g6} ({traits.ConservationText}: not compared with {start:g6})")
            : FormattableString.Invariant($"Σ relevance {inputSum:g6} vs {start:g6} (relative error {relative:0.##e+0}; the method {traits.ConservationText})");

    /// <summary>Stable identifier of a conservation expectation in the JSON.</summary>
    internal static string ExpectationId(ConservationExpectation expectation) => expectation switch
    {
        ConservationExpectation.Conserves => "conserves",
        ConservationExpectation.Approximately => "approximately",
        _ => "not_expected",
    };

    /// <summary>Stable identifier of a heatmap mode in the JSON (the <c>--heatmap</c> value).</summary>
    internal static string ModeId(HeatmapMode mode) => mode switch
    {
        HeatmapMode.Absolute => "absolute",
        HeatmapMode.Raw => "raw",
        HeatmapMode.Positive => "positive",
        _ => "signed",
    };

    private static string ReadVersion()
    {
        var assembly = typeof(ExplainRunner).Assembly;
        var informational = assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        if (informational is not null) return informational.Split('+')[0];
        return assembly.GetName().Version?.ToString(3) ?? "0.0.0";
    }
}

/// <summary>An <see cref="IProgress{T}"/> that runs its action synchronously on the reporting thread (<see cref="Progress{T}"/> posts to the thread pool).</summary>
/// <typeparam name="T">The report type.</typeparam>
internal sealed class SyncProgress<T> : IProgress<T>
{
    private readonly Action<T> _action;

    public SyncProgress(Action<T> action) => _action = action;

    public void Report(T value) => _action(value);
}
