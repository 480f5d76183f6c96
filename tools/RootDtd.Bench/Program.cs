using System.Diagnostics;
using System.Globalization;
using System.Text;
using RootDtd;
using RootDtd.Composites;
using RootDtd.Native;
using TorchSharp;
using static TorchSharp.torch;

// RootDtd benchmark: time per image of forward, forward + input gradient and every composite of MethodCatalog.All on
// torchvision-shape models (random weights, eval, CPU), plus an optional memory-stability loop. Usage and recorded results: docs/speed.md.
//   dotnet run -c Release --project tools/RootDtd.Bench -- [--models resnet18,vgg16] [--batch 1,8] [--methods all|a,b]
//       [--repeats N] [--warmup N] [--size 224] [--threads N] [--cpu-time] [--paired] [--memory N] [--memory-size 112] [--out results.md]

TorchSharpNative.EnsureLoadable();
var options = BenchOptions.Parse(args);
if (options is null) return 2;
torch.set_num_threads(options.Threads);
var report = new StringBuilder();
void Out(string line = "")
{
    Console.WriteLine(line);
    report.AppendLine(line);
}
void Progress(string line) => Console.Error.WriteLine(line);

Out($"# RootDtd benchmark");
Out();
Out($"- machine: {Environment.ProcessorCount} logical CPUs, {RuntimeInformationText()}, torch threads {torch.get_num_threads()}");
Out($"- TorchSharp native: {TorchSharpNative.Description}");
Out($"- images {options.Size}×{options.Size}, float32, CPU, random weights (seed 0), eval; median of {options.Repeats} timed runs after {options.Warmup} warm-up run(s)");
Out($"- ratio = method time / (forward + input gradient) of the same model and batch, measured in the same run");
if (options.CpuTime) Out("- CPU columns: process CPU time (user + system, all threads) per run, median of the same runs; on a loaded machine prefer them with --threads 1");
if (options.Paired) Out("- paired column: every timed run of a method directly follows its own timed forward + input gradient run; the ratio of each pair, median (min–max) over the pairs, so a machine that speeds up or slows down between rows does not move it");
Out();

var cpuMs = new Dictionary<string, double>();   // process CPU time (median per timed item) of the current model and batch
var pairedRatios = new Dictionary<string, (double Median, double Min, double Max, int Pairs)>();   // --paired: method / its own forward+gradient run
var methods = options.Methods is null
    ? MethodCatalog.All.ToList()
    : options.Methods.Select(MethodCatalog.Get).ToList();

foreach (var modelName in options.Models)
{
    foreach (var batch in options.Batches)
    {
        using var model = CreateModel(modelName);
        model.eval();
        torch.manual_seed(1);
        // The ImageNet ResNet18 of the NuGet package reads 0-255 pixels minus its mean image: inputs and bounds on that scale.
        var isCntk = modelName.Equals(RootDtd.Models.CntkResNet18.ModelName, StringComparison.OrdinalIgnoreCase);
        using var meanImage = isCntk ? RootDtd.Models.CntkResNet18.MeanImage().unsqueeze(0) : null;
        using var x = isCntk ? torch.rand(batch, 3, options.Size, options.Size).mul(255).sub(meanImage!) : torch.randn(batch, 3, options.Size, options.Size);
        var rows = new List<(string Name, double Ms, string Note)>();
        var uncheckedMs = new Dictionary<string, double>();
        cpuMs.Clear();
        var label = $"{modelName} b={batch}";

        var forward = Time(label, "forward", () =>
        {
            using var scope = torch.NewDisposeScope();
            using var _ = torch.no_grad();
            model.call(x).sum().item<float>();
        });
        void ForwardAndGradient()
        {
            using var scope = torch.NewDisposeScope();
            var xi = x.detach().requires_grad_(true);
            var logits = model.call(xi);
            var score = logits.gather(1, logits.argmax(1, keepdim: true)).sum();
            torch.autograd.grad(new[] { score }, new[] { xi })[0].sum().item<float>();
        }
        var gradient = Time(label, "forward+gradient", ForwardAndGradient);
        pairedRatios.Clear();
        rows.Add(("forward (no_grad)", forward, ""));
        rows.Add(("forward + input gradient", gradient, ""));

        var breakdowns = new List<(string Method, List<(string Unit, double Ms, double Accepted)> Units)>();
        foreach (var method in methods)
        {
            var low = isCntk ? meanImage!.neg() : torch.full(new long[] { 1, 3, 1, 1 }, -3f);
            var high = isCntk ? meanImage!.neg().add(255) : torch.full(new long[] { 1, 3, 1, 1 }, 3f);
            var explainerOptions = new ExplainerOptions { InputLow = low, InputHigh = high };
            double ms;
            string note = "";
            try
            {
                using var explainer = new Explainer(model, method.CreateDefault(), explainerOptions);
                ms = Time(label, method.Name, () =>
                {
                    using var e = explainer.Explain(x);
                }, options.Paired ? ForwardAndGradient : null);
                if (options.AlsoUnchecked)
                {
                    using var fast = new Explainer(model, method.CreateDefault(), new ExplainerOptions { InputLow = low, InputHigh = high, VerifyForward = false });
                    uncheckedMs[method.Name] = Time(label, method.Name + " (unchecked)", () =>
                    {
                        using var e = fast.Explain(x);
                    });
                }
                // root-inference composites report per-unit solver times: one extra run to collect them (other rules
                // record no per-unit time, so they skip it)
                if (options.Breakdown && explainer.RuleAssignment.Any(a => a.Rule.StartsWith("RootInference", StringComparison.Ordinal)))
                {
                    using var diagExplainer = new Explainer(model, method.CreateDefault(),
                        new ExplainerOptions { InputLow = low, InputHigh = high, CollectDiagnostics = true });
                    using var d = diagExplainer.Explain(x);
                    if (d.Diagnostics.Count > 0)
                        breakdowns.Add((method.Name, d.Diagnostics.GroupBy(u => u.Unit)
                            .Select(g => (g.Key, g.Sum(u => u.Milliseconds), g.SelectMany(u => u.Values.GetValueOrDefault("accepted_steps", Array.Empty<double>())).DefaultIfEmpty(double.NaN).Average()))
                            .OrderByDescending(u => u.Item2).ToList()));
                }
            }
            catch (Exception e) when (e is ExplanationException or ArgumentException or NotSupportedException)
            {
                ms = double.NaN;
                note = "failed: " + e.Message.Split('\n')[0];
                Progress($"[{label}] {method.Name}: {note}");
            }
            finally
            {
                low.Dispose();
                high.Dispose();
            }
            rows.Add((method.Name, ms, note));
        }

        Out($"## {modelName}, batch {batch}");
        Out();
        // transformer runs that include chefer also give every method × chefer (chefer-root's goal is ≤ 12×)
        var chefer = rows.FirstOrDefault(r => r.Name == "chefer").Ms;
        var withChefer = chefer > 0 && !double.IsNaN(chefer);
        var cheferHeader = withChefer ? " × chefer |" : "";
        var cheferRule = withChefer ? "---:|" : "";
        var gradientCpu = cpuMs.GetValueOrDefault("forward+gradient", double.NaN);
        if (options.CpuTime)
        {
            cheferHeader += " CPU ms/image | × forward+gradient, CPU |";
            cheferRule += "---:|---:|";
        }
        if (options.Paired)
        {
            cheferHeader += " × forward+gradient, paired: median (min–max) |";
            cheferRule += "---:|";
        }
        Out(options.AlsoUnchecked
            ? $"| method | ms/image | × forward+gradient |{cheferHeader} ms/image, VerifyForward off | × forward+gradient, VerifyForward off | note |"
            : $"| method | ms/image | × forward+gradient |{cheferHeader} note |");
        Out(options.AlsoUnchecked ? $"|---|---:|---:|{cheferRule}---:|---:|---|" : $"|---|---:|---:|{cheferRule}---|");
        foreach (var (name, ms, note) in rows)
        {
            var perImage = ms / batch;
            var ratio = ms / gradient;
            var extra = withChefer ? (double.IsNaN(ms) ? " – |" : string.Create(CultureInfo.InvariantCulture, $" {ms / chefer:F2} |")) : "";
            if (options.CpuTime)
                extra += cpuMs.TryGetValue(CpuKey(name), out var cpu) && !double.IsNaN(ms)
                    ? string.Create(CultureInfo.InvariantCulture, $" {cpu / batch:F1} | {cpu / gradientCpu:F2} |")
                    : " – | – |";
            if (options.Paired)
                extra += pairedRatios.TryGetValue(name, out var pr) && !double.IsNaN(ms)
                    ? string.Create(CultureInfo.InvariantCulture, $" {pr.Median:F2} ({pr.Min:F2}–{pr.Max:F2}, {pr.Pairs} pairs) |")
                    : " – |";
            if (options.AlsoUnchecked)
                extra += uncheckedMs.TryGetValue(name, out var u)
                    ? string.Create(CultureInfo.InvariantCulture, $" {u / batch:F1} | {u / gradient:F2} |")
                    : " | |";
            Out(string.Create(CultureInfo.InvariantCulture, $"| {name} | {(double.IsNaN(ms) ? "–" : perImage.ToString("F1", CultureInfo.InvariantCulture))} | {(double.IsNaN(ms) ? "–" : ratio.ToString("F2", CultureInfo.InvariantCulture))} |{extra} {note} |"));
        }
        Out();
        foreach (var (method, units) in breakdowns)
        {
            var total = units.Sum(u => u.Ms);
            Out($"Per-unit time of {method} (one run with diagnostics; {total:F0} ms in rules over {units.Count} units), top 10:");
            Out();
            Out("| unit | ms | share | accepted steps (mean over samples) |");
            Out("|---|---:|---:|---:|");
            foreach (var (unit, ms, acceptedSteps) in units.Take(10))
                Out(string.Create(CultureInfo.InvariantCulture, $"| {unit} | {ms:F1} | {ms / Math.Max(total, 1e-9):P0} | {acceptedSteps:F1} |"));
            Out();
            // transformers: the same time by kind of unit over all blocks (blocks.{i}.attn.qkv/q → attn.qkv/q)
            var kinds = units.GroupBy(u => System.Text.RegularExpressions.Regex.Replace(u.Unit, @"^(.*\.)?blocks\.\d+\.", ""))
                .Select(g => (Kind: g.Key, Count: g.Count(), Ms: g.Sum(u => u.Ms), Accepted: g.Average(u => u.Accepted))).OrderByDescending(k => k.Ms).ToList();
            if (kinds.Count < units.Count)
            {
                Out($"Per-unit time of {method} by kind of unit (summed over the blocks):");
                Out();
                Out("| unit | units | ms | share | accepted steps (mean) |");
                Out("|---|---:|---:|---:|---:|");
                foreach (var (kind, count, ms, acceptedSteps) in kinds)
                    Out(string.Create(CultureInfo.InvariantCulture, $"| {kind} | {count} | {ms:F1} | {ms / Math.Max(total, 1e-9):P0} | {acceptedSteps:F1} |"));
                Out();
            }
        }
    }
}

if (options.MemoryIterations > 0) MemoryLoop(options.MemoryIterations, options.MemorySize, methods.FirstOrDefault(m => m.Name == "epsilon-plus-flat") ?? methods[0]);

if (options.OutFile is { } outFile)
{
    File.WriteAllText(outFile, report.ToString());
    Progress($"wrote {outFile}");
}
return 0;

// the row names of forward and forward + gradient are not the names they were timed under
static string CpuKey(string row) => row switch
{
    "forward (no_grad)" => "forward",
    "forward + input gradient" => "forward+gradient",
    _ => row,
};

// Median wall-clock ms of `run` over the timed repeats (process CPU time into cpuMs). With a baseline (--paired), every
// timed run directly follows one timed run of the baseline and the per-pair ratios go into pairedRatios.
double Time(string label, string what, Action run, Action? baseline = null)
{
    for (var i = 0; i < options.Warmup; i++)
    {
        Progress($"[{label}] {what}: warm-up {i + 1}/{options.Warmup}");
        run();
    }
    var times = new List<double>();
    var cpuTimes = new List<double>();
    var ratios = new List<double>();
    using var process = Process.GetCurrentProcess();
    for (var i = 0; i < options.Repeats; i++)
    {
        var baselineMs = baseline is null ? double.NaN : ElapsedMs(baseline);
        process.Refresh();
        var cpu0 = process.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        run();
        times.Add(sw.Elapsed.TotalMilliseconds);
        process.Refresh();
        cpuTimes.Add((process.TotalProcessorTime - cpu0).TotalMilliseconds);
        var pair = baseline is null ? "" : string.Create(CultureInfo.InvariantCulture, $", after forward+gradient {baselineMs:F0} ms: {times[^1] / baselineMs:F2}×");
        if (baseline is not null) ratios.Add(times[^1] / baselineMs);
        Progress(string.Create(CultureInfo.InvariantCulture, $"[{label}] {what}: run {i + 1}/{options.Repeats} {times[^1]:F0} ms (CPU {cpuTimes[^1]:F0} ms){pair}"));
    }
    cpuMs[what] = Median(cpuTimes);
    if (ratios.Count > 0) pairedRatios[what] = (Median(ratios), ratios.Min(), ratios.Max(), ratios.Count);
    return Median(times);

    static double ElapsedMs(Action action)
    {
        var watch = Stopwatch.StartNew();
        action();
        return watch.Elapsed.TotalMilliseconds;
    }
}

static double Median(List<double> values)
{
    values = values.Order().ToList();
    return values.Count % 2 == 1 ? values[values.Count / 2] : (values[values.Count / 2 - 1] + values[values.Count / 2]) / 2;
}

void MemoryLoop(int iterations, int size, ExplanationMethod method)
{
    const int batch = 2;
    Out($"## Memory: resnet18 at {size}×{size}, batch {batch}, {method.Name}, {iterations} explanations");
    Out();
    using var model = RootDtd.Models.ResNet.ResNet18();
    model.eval();
    torch.manual_seed(2);
    using var x = torch.randn(batch, 3, size, size);
    using var explainer = new Explainer(model, method.CreateDefault());
    Out("| iteration | VmRSS (MiB) | live tensors (thread) |");
    Out("|---:|---:|---:|");
    var sw = Stopwatch.StartNew();
    for (var i = 1; i <= iterations; i++)
    {
        using (var e = explainer.Explain(x)) { }
        if (i == 1 || i % 100 == 0 || i == iterations)
        {
            var line = string.Create(CultureInfo.InvariantCulture,
                $"| {i} | {VmRssMiB():F0} | {DisposeScopeManager.Statistics.ThreadTotalLiveCount} |");
            if (i == 1 || i == 100 || i == iterations) Out(line);
            Progress($"[memory] {line} ({sw.Elapsed.TotalSeconds:F0} s)");
        }
    }
    Out();
}

static double VmRssMiB()
{
    if (!File.Exists("/proc/self/status")) return double.NaN;
    var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
    return line is null ? double.NaN : double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
}

static nn.Module<Tensor, Tensor> CreateModel(string name)
{
    torch.manual_seed(0);
    return name.ToLowerInvariant() switch
    {
        "resnet18" => RootDtd.Models.ResNet.ResNet18(),
        "resnet34" => RootDtd.Models.ResNet.ResNet34(),
        "resnet50" => RootDtd.Models.ResNet.ResNet50(),
        "vgg11" => RootDtd.Models.Vgg.Vgg11(),
        "vgg16" => RootDtd.Models.Vgg.Vgg16(),
        "vgg19" => RootDtd.Models.Vgg.Vgg19(),
        RootDtd.Models.CntkResNet18.ModelName => RootDtd.Models.CntkResNet18.Create(1000),
        _ when RootDtd.Models.ModelZoo.Contains(name) => RootDtd.Models.ModelZoo.Create(name),
        _ => throw new ArgumentException($"Unknown model '{name}' (resnet18, resnet34, resnet50, vgg11, vgg16, vgg19, {RootDtd.Models.CntkResNet18.ModelName}, or a ModelZoo name such as vit-small-patch16-224)."),
    };
}

static string RuntimeInformationText()
{
    var cpu = File.Exists("/proc/cpuinfo")
        ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim()
        : null;
    return $"{cpu ?? System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString()}, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}";
}

internal sealed record BenchOptions(string[] Models, int[] Batches, string[]? Methods, int Repeats, int Warmup, int Size, int Threads,
    int MemoryIterations, int MemorySize, string? OutFile, bool AlsoUnchecked = false, bool Breakdown = true, bool CpuTime = false,
    bool Paired = false)
{
    public static BenchOptions? Parse(string[] args)
    {
        var o = new BenchOptions(new[] { "resnet18", "vgg16" }, new[] { 1, 8 }, null, 3, 1, 224, Environment.ProcessorCount, 0, 112, null);
        var memoryOnly = false;
        var modelsGiven = false;
        for (var i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            int[] Ints(string s) => s.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(v => int.Parse(v, CultureInfo.InvariantCulture)).ToArray();
            switch (args[i])
            {
                case "--models": o = o with { Models = Next().Split(',', StringSplitOptions.RemoveEmptyEntries) }; modelsGiven = true; break;
                case "--batch": o = o with { Batches = Ints(Next()) }; break;
                case "--methods":
                    var m = Next();
                    o = o with { Methods = m == "all" ? null : m.Split(',', StringSplitOptions.RemoveEmptyEntries) };
                    break;
                case "--repeats": o = o with { Repeats = Math.Max(1, Ints(Next())[0]) }; break;
                case "--warmup": o = o with { Warmup = Math.Max(0, Ints(Next())[0]) }; break;
                case "--size": o = o with { Size = Ints(Next())[0] }; break;
                case "--threads": o = o with { Threads = Ints(Next())[0] }; break;
                case "--memory": o = o with { MemoryIterations = Ints(Next())[0] }; memoryOnly = true; break;
                case "--memory-size": o = o with { MemorySize = Ints(Next())[0] }; break;
                case "--out": o = o with { OutFile = Next() }; break;
                case "--unchecked": o = o with { AlsoUnchecked = true }; break;
                case "--no-breakdown": o = o with { Breakdown = false }; break;
                case "--cpu-time": o = o with { CpuTime = true }; break;
                case "--paired": o = o with { Paired = true }; break;
                case "-h" or "--help":
                    Console.WriteLine("dotnet run -c Release --project tools/RootDtd.Bench -- [--models resnet18,vgg16] [--batch 1,8] [--methods all|name,...] " +
                        "[--repeats N] [--warmup N] [--size 224] [--threads N] [--cpu-time] [--paired] [--memory N] [--memory-size 112] [--unchecked] [--out results.md]");
                    Console.WriteLine("--cpu-time: also give every row's process CPU time (user + system, all threads) and its ratio; on a loaded machine use it with --threads 1");
                    Console.WriteLine("--paired: time every method run right after its own forward + gradient run and also give the median (min–max) of the per-pair ratios (robust to a machine whose speed drifts between rows)");
                    Console.WriteLine("--no-breakdown: skip the extra run with diagnostics that gives root-inference methods their per-unit times");
                    Console.WriteLine("--unchecked: also time every method with ExplainerOptions.VerifyForward = false (no check of the graph against the model's own forward)");
                    Console.WriteLine("methods: " + string.Join(", ", MethodCatalog.All.Select(x => x.Name)));
                    return null;
                default:
                    Console.Error.WriteLine($"Unknown argument '{args[i]}' (see --help).");
                    return null;
            }
        }
        // "--memory N" alone runs only the memory loop
        if (memoryOnly && !modelsGiven) o = o with { Models = Array.Empty<string>() };
        return o;
    }
}
