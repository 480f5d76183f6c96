using System.Diagnostics;
using System.Globalization;
using System.Text;
using RootDtd;
using RootDtd.Composites;
using RootDtd.Models;
using RootDtd.Native;
using TorchSharp;
using static TorchSharp.torch;

// RootDtd one-shot CUDA check (see docs/gpu-check.md): device report, float64 CUDA-vs-CPU equality of every method of
// MethodCatalog.All on two small models, and float32 resnet18 throughput on CUDA. Built to run once, unattended, on a
// GPU machine through ../shared/tools/gpu-bundle.sh.
//   dotnet RootDtd.GpuCheck.dll [--out results.md] [--allow-cpu] [--quick] [--skip-equality] [--skip-throughput]
//       [--batch 32,64] [--size 224] [--warmup 1] [--repeats 3] [--budget-s 330] [--slow-run-s 30] [--hard-limit-s 420] [--tolerance 1e-9]
// Exit codes: 0 all good; 1 a spec/classic method differs between CUDA and CPU (or fails on one side);
// 2 bad arguments; 3 CUDA unavailable (without --allow-cpu); 4 a throughput configuration failed other than by OOM;
// 5 stopped by the hard time limit (the report so far is printed and written).
// Time: the throughput part starts nothing expected to end after --budget-s; a watchdog exits at --hard-limit-s.

var total = Stopwatch.StartNew();
var options = CheckOptions.Parse(args);
if (options is null) return 2;

var report = new StringBuilder();
var current = "start-up";
void Out(string line = "")
{
    lock (report)
    {
        Console.WriteLine(line);
        report.AppendLine(line);
    }
}
void Progress(string line) => Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{total.Elapsed.TotalSeconds,6:F1} s] {line}"));
string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
void WriteReport()
{
    if (options.OutFile is not { } path) return;
    try
    {
        string text;
        lock (report) text = report.ToString();
        File.WriteAllText(path, text);
        Progress($"wrote {path}");
    }
    catch (Exception e) when (e is IOException or UnauthorizedAccessException)
    {
        Console.Error.WriteLine($"could not write {path}: {e.Message}");
    }
}

// the watchdog: whatever happens (a hung kernel, a run far slower than expected), stop at the hard limit with the
// figures gathered so far printed and written
using var watchdog = new Timer(_ =>
{
    Out();
    Out(F($"**ABORTED by the hard limit of {options.HardLimitSeconds} s** while running: {current}. The figures above are complete; the rest did not run. Exit code 5."));
    WriteReport();
    Console.Out.Flush();
    Console.Error.Flush();
    // _exit, not Environment.Exit: the main thread is inside libtorch, and running the runtime's shutdown under it crashes
    ImmediateExit(5);
}, null, TimeSpan.FromSeconds(options.HardLimitSeconds), Timeout.InfiniteTimeSpan);

var nativeFix = TorchSharpNative.EnsureLoadable();
Out("# RootDtd CUDA check");
Out();
Out($"- started {DateTime.UtcNow:yyyy-MM-dd HH:mm:ss} UTC; arguments: `{(args.Length == 0 ? "(none)" : string.Join(' ', args))}`{(options.Quick ? " (quick: tiny sizes, for a dry run)" : "")}");
Out($"- host: {Environment.ProcessorCount} logical CPUs, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}");
Out($"- TorchSharp native: {nativeFix}: {TorchSharpNative.Description}");
Out($"- LD_LIBRARY_PATH: `{Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") ?? "(unset)"}`");

// ---------------------------------------------------------------- 1. device
bool cudaAvailable = false;
string? cudaError = null;
try
{
    cudaAvailable = torch.cuda.is_available();
}
catch (Exception e)
{
    cudaError = FirstLine(e) + (e.GetBaseException() is { } inner && inner != e ? " ← " + FirstLine(inner) : "");
}
Out($"- torch.cuda.is_available(): {cudaAvailable}{(cudaError is null ? "" : $" (error: {cudaError})")}");
if (cudaAvailable)
{
    try
    {
        Out($"- torch.cuda.device_count(): {torch.cuda.device_count()}; cuDNN available: {torch.cuda.is_cudnn_available()}");
    }
    catch (Exception e)
    {
        Out($"- device count: error {FirstLine(e)}");
    }
}
var smi = NvidiaSmi("--query-gpu=index,name,driver_version,memory.total,memory.used", "--format=csv,noheader");
Out($"- nvidia-smi: {(smi is null ? "not available (TorchSharp exposes no device name)" : string.Join("; ", smi))}");
Out();

if (!cudaAvailable && !options.AllowCpu)
{
    Out("**CUDA is not available**: TorchSharp did not find a CUDA libtorch. On the GPU machine run the bundle with " +
        "`bash .gpu/run.sh RootDtd.GpuCheck.dll` (it puts PyTorch's CUDA libtorch on LD_LIBRARY_PATH); " +
        "use `--allow-cpu` for a CPU dry run. Exit code 3.");
    WriteReport();
    return 3;
}
var device = cudaAvailable ? torch.CUDA : torch.CPU;
var deviceName = cudaAvailable ? "CUDA" : "CPU";
Out($"Target device: **{deviceName}**{(cudaAvailable ? "" : " (--allow-cpu dry run: both sides of the comparison run on the CPU, so the differences are 0 by construction)")}");
Out();
// a copy also on the CPU, so that the two sides never share a tensor
Tensor ToDevice(Tensor t) => cudaAvailable ? t.to(device) : t.clone();
void Sync()
{
    if (cudaAvailable) torch.cuda.synchronize();
}

var exitCode = 0;

// ---------------------------------------------------------------- 2. equality CUDA vs CPU (float64)
if (!options.SkipEquality)
{
    var size = options.Quick ? 16 : 32;
    const int batch = 2;
    Out($"## Equality: {deviceName} vs CPU, float64");
    Out();
    Out(F($"Two seeded random models, {batch} random inputs {size}×{size} within the bounds [-2, 2.5]; every method of MethodCatalog.All with default parameters. ") +
        F($"Relative difference = max |device − CPU| / max |CPU| of the input relevance (and of the logits); the spec requires ≤ {options.Tolerance:G3}. ") +
        "`root-published` (optimisation-sensitive solvers) is reported but does not decide the exit code.");
    Out();
    var failures = new List<string>();
    var publishedNotes = new List<string>();
    foreach (var (modelName, factory) in new (string, Func<nn.Module<Tensor, Tensor>>)[] { ("cnn-bn", SmallCnn), ("resnet-mini", () => new ResNet(new[] { 1, 1, 1, 1 }, new[] { 8, 16, 16, 16 }, false, 10)) })
    {
        torch.manual_seed(11);
        using var model = factory();
        RandomiseBatchNorm(model);
        model.to(ScalarType.Float64).eval();
        torch.manual_seed(12);
        using var lowCpu = torch.full(new long[] { 1, 3, 1, 1 }, -2.0, ScalarType.Float64);
        using var highCpu = torch.full(new long[] { 1, 3, 1, 1 }, 2.5, ScalarType.Float64);
        using var xCpu = torch.randn(batch, 3, size, size, ScalarType.Float64).clamp(-2.0, 2.5);

        var methods = MethodCatalog.All;
        var reference = new Dictionary<string, (Tensor? Relevance, Tensor? Logits, double Ms, string? Error)>();
        foreach (var m in methods) reference[m.Name] = Run(model, m, xCpu, lowCpu, highCpu, $"{modelName} CPU");

        model.to(device);
        using var lowDev = ToDevice(lowCpu);
        using var highDev = ToDevice(highCpu);
        using var xDev = ToDevice(xCpu);
        Out($"### {modelName} ({model.parameters().Sum(p => p.numel())} parameters)");
        Out();
        Out("| method | rel. diff relevance | rel. diff logits | CPU ms | device ms | result |");
        Out("|---|---:|---:|---:|---:|---|");
        foreach (var m in methods)
        {
            var (refRel, refLogits, cpuMs, cpuErr) = reference[m.Name];
            var (devRel, devLogits, devMs, devErr) = Run(model, m, xDev, lowDev, highDev, $"{modelName} {(cudaAvailable ? "CUDA" : "CPU#2")}");
            string result;
            double relDiff = double.NaN, logitDiff = double.NaN;
            if (cpuErr is not null || devErr is not null)
                result = $"FAIL (error: {(cpuErr is not null ? "CPU: " + cpuErr : "")}{(cpuErr is not null && devErr is not null ? "; " : "")}{(devErr is not null ? "device: " + devErr : "")})";
            else
            {
                relDiff = RelativeDifference(devRel!, refRel!);
                logitDiff = RelativeDifference(devLogits!, refLogits!);
                result = relDiff <= options.Tolerance && logitDiff <= options.Tolerance ? "PASS" : "FAIL";
            }
            var published = m.Name == "root-published";
            if (!result.StartsWith("PASS", StringComparison.Ordinal))
            {
                if (published) publishedNotes.Add($"{modelName}/{m.Name}");
                else failures.Add($"{modelName}/{m.Name}");
            }
            if (published) result += " (reported separately)";
            Out(F($"| {m.Name} | {Sci(relDiff)} | {Sci(logitDiff)} | {cpuMs:F0} | {devMs:F0} | {result} |"));
            foreach (var t in new[] { refRel, refLogits, devRel, devLogits }) t?.Dispose();
        }
        Out();
        model.to(torch.CPU);
    }
    if (failures.Count == 0)
        Out(F($"**Equality: PASS** — every spec/classic method agrees to {options.Tolerance:G3} on both models."));
    else
    {
        Out(F($"**Equality: FAIL** — {failures.Count} method/model pair(s) above {options.Tolerance:G3} or failing: {string.Join(", ", failures)}."));
        exitCode = 1;
    }
    Out(publishedNotes.Count == 0 ? "root-published: PASS on both models." : $"root-published: FAIL on {string.Join(", ", publishedNotes)} (reported separately; not in the exit code).");
    Out();
    Progress($"equality done ({total.Elapsed.TotalSeconds:F0} s so far)");
}

// ---------------------------------------------------------------- 3. throughput (float32, resnet18)
if (!options.SkipThroughput)
{
    var size = options.Quick ? 64 : options.Size;
    var batches = options.Quick ? new[] { 2 } : options.Batches;
    var warmup = options.Quick ? 1 : options.Warmup;
    var repeats = options.Quick ? 1 : options.Repeats;
    Out($"## Throughput: resnet18 on {deviceName}, float32");
    Out();
    Out(F($"Random weights (seed 0), eval, {size}×{size}, bounds [-3, 3]; {warmup} warm-up run(s), then the median of {repeats} timed run(s) ") +
        F($"with a device synchronise before each clock read. A configuration whose warm-up takes over {options.SlowRunSeconds} s is timed once; ") +
        F($"no configuration or timed run starts that is expected to end after {options.BudgetSeconds} s of total run time (predicted from the warm-up, or from the same method at a smaller batch). ") +
        "GPU memory = nvidia-smi's memory.used after the configuration (includes the caching allocator's reserve, so it is a running peak).");
    Out();
    Out("| batch | what | ms/batch | images/s | GPU memory used | note |");
    Out("|---:|---|---:|---:|---:|---|");
    torch.manual_seed(0);
    using var model = ModelZoo.Create("resnet18", 1000);
    model.to(device).eval();
    var hadError = false;
    var firstRunSeconds = new Dictionary<(string Name, int Batch), double>();
    foreach (var batch in batches)
    {
        torch.manual_seed(1);
        Tensor? x = null, low = null, high = null;
        try
        {
            x = torch.randn(batch, 3, size, size, device: device);
            low = torch.full(new long[] { 1, 3, 1, 1 }, -3f, device: device);
            high = torch.full(new long[] { 1, 3, 1, 1 }, 3f, device: device);
        }
        catch (Exception e)
        {
            Out($"| {batch} | (input) | – | – | {GpuMemory()} | {(IsOom(e) ? "OOM" : "error")}: {FirstLine(e)} |");
            hadError |= !IsOom(e);
            x?.Dispose();
            low?.Dispose();
            continue;
        }
        var configs = new List<(string Name, Func<(Action Run, IDisposable? Owner)> Prepare)>
        {
            ("forward (no_grad)", () => (() =>
            {
                using var scope = torch.NewDisposeScope();
                using var _ = torch.no_grad();
                model.call(x).sum().item<float>();
            }, null)),
            ("forward + input gradient", () => (() =>
            {
                using var scope = torch.NewDisposeScope();
                var xi = x.detach().requires_grad_(true);
                var logits = model.call(xi);
                var score = logits.gather(1, logits.argmax(1, keepdim: true)).sum();
                torch.autograd.grad(new[] { score }, new[] { xi })[0].sum().item<float>();
            }, null)),
        };
        foreach (var methodName in new[] { "epsilon-plus-flat", "root", "root-upper-half" })
        {
            configs.Add((methodName, () =>
            {
                var explainer = new Explainer(model, MethodCatalog.Get(methodName).CreateDefault(), new ExplainerOptions { InputLow = low, InputHigh = high });
                return (() =>
                {
                    using var e = explainer.Explain(x);
                }, explainer);
            }));
        }
        foreach (var (name, prepare) in configs)
        {
            var label = $"resnet18 b={batch} {name}";
            var left = options.BudgetSeconds - total.Elapsed.TotalSeconds;
            // predicted cost of warm-up + one timed run, scaled from the same method at the largest smaller batch
            var known = firstRunSeconds.Where(k => k.Key.Name == name && k.Key.Batch < batch).OrderByDescending(k => k.Key.Batch).Select(k => (double?)(k.Value * batch / k.Key.Batch)).FirstOrDefault();
            var predicted = known is { } one ? 2 * one : 0;
            if (left <= 0 || predicted > left)
            {
                var why = left <= 0 ? F($"time budget of {options.BudgetSeconds} s used up") : F($"predicted {predicted:F0} s for warm-up + one run exceeds the {left:F0} s left of the budget");
                Out($"| {batch} | {name} | – | – | – | skipped: {why} |");
                Progress($"{label}: skipped ({why})");
                continue;
            }
            current = label;
            IDisposable? owner = null;
            try
            {
                (var run, owner) = prepare();
                var (ms, timed, note, first) = Time(label, run, warmup, repeats);
                firstRunSeconds[(name, batch)] = first;
                Out(F($"| {batch} | {name} | {ms:F1} | {batch / (ms / 1000.0):F1} | {GpuMemory()} | median of {timed}{note} |"));
            }
            catch (Exception e)
            {
                var oom = IsOom(e);
                hadError |= !oom;
                Out($"| {batch} | {name} | – | – | {GpuMemory()} | {(oom ? "OOM" : "error")}: {FirstLine(e)} |");
                Progress($"{label}: {(oom ? "OOM" : "error")}: {FirstLine(e)}");
                GC.Collect();
                GC.WaitForPendingFinalizers();
            }
            finally
            {
                owner?.Dispose();
            }
        }
        x.Dispose();
        low.Dispose();
        high!.Dispose();
    }
    Out();
    if (hadError && exitCode == 0) exitCode = 4;
}

Out(F($"Total wall time {total.Elapsed.TotalSeconds:F1} s; exit code {exitCode}."));
WriteReport();
return exitCode;

// ---------------------------------------------------------------- helpers
[System.Runtime.InteropServices.DllImport("libc", EntryPoint = "_exit")]
static extern void ImmediateExit(int status);

(Tensor? Relevance, Tensor? Logits, double Ms, string? Error) Run(nn.Module<Tensor, Tensor> model, ExplanationMethod method, Tensor x, Tensor low, Tensor high, string label)
{
    current = $"equality {label} {method.Name}";
    var sw = Stopwatch.StartNew();
    try
    {
        using var scope = torch.NewDisposeScope();
        using var explainer = new Explainer(model, method.CreateDefault(), new ExplainerOptions { InputLow = low, InputHigh = high });
        using var e = explainer.Explain(x);
        var rel = e.InputRelevance.detach().cpu().clone().MoveToOuterDisposeScope();
        var logits = e.Logits.detach().cpu().clone().MoveToOuterDisposeScope();
        Sync();
        Progress(F($"{label} {method.Name}: {sw.Elapsed.TotalMilliseconds:F0} ms"));
        return (rel, logits, sw.Elapsed.TotalMilliseconds, null);
    }
    catch (Exception e)
    {
        Progress($"{label} {method.Name}: error {FirstLine(e)}");
        return (null, null, sw.Elapsed.TotalMilliseconds, FirstLine(e));
    }
}

// returns the median, the number of timed runs, a note and the duration of the first run (seconds, for predictions)
(double Ms, int Timed, string Note, double FirstSeconds) Time(string label, Action run, int warmup, int repeats)
{
    var slow = false;
    double? firstSeconds = null, lastMs = null;
    for (var i = 0; i < warmup; i++)
    {
        Sync();
        var w = Stopwatch.StartNew();
        run();
        Sync();
        lastMs = w.Elapsed.TotalMilliseconds;
        firstSeconds ??= w.Elapsed.TotalSeconds;
        Progress(F($"{label}: warm-up {i + 1}/{warmup} {lastMs:F0} ms"));
        if (w.Elapsed.TotalSeconds > options.SlowRunSeconds)
        {
            slow = true;
            break;
        }
    }
    var n = slow ? 1 : repeats;
    var times = new List<double>();
    var note = slow ? F($" (warm-up over {options.SlowRunSeconds} s: timed once)") : "";
    for (var i = 0; i < n; i++)
    {
        if (lastMs is { } last && total.Elapsed.TotalSeconds + last / 1000 > options.BudgetSeconds)
        {
            note += " (stopped early: the next run would end after the time budget)";
            break;
        }
        Sync();
        var sw = Stopwatch.StartNew();
        run();
        Sync();
        times.Add(sw.Elapsed.TotalMilliseconds);
        lastMs = times[^1];
        firstSeconds ??= sw.Elapsed.TotalSeconds;
        Progress(F($"{label}: run {i + 1}/{n} {times[^1]:F0} ms"));
    }
    if (times.Count == 0)
        return (lastMs ?? double.NaN, 0, note + " (no timed run fitted: the figure is the warm-up run, including first-call overheads)", firstSeconds ?? 0);
    times.Sort();
    var median = times.Count % 2 == 1 ? times[times.Count / 2] : (times[times.Count / 2 - 1] + times[times.Count / 2]) / 2;
    return (median, times.Count, note, firstSeconds ?? 0);
}

static double RelativeDifference(Tensor actual, Tensor expected)
{
    using var scope = torch.NewDisposeScope();
    var a = actual.to(ScalarType.Float64);
    var b = expected.to(ScalarType.Float64);
    if (!a.shape.SequenceEqual(b.shape)) return double.PositiveInfinity;
    var diff = (a - b).abs().max().item<double>();
    var scale = b.abs().max().item<double>();
    if (double.IsNaN(diff)) return double.NaN;
    return scale > 0 ? diff / scale : diff;
}

static string Sci(double v) => double.IsNaN(v) ? "–" : v == 0 ? "0" : v.ToString("0.00e+00", CultureInfo.InvariantCulture);

static string FirstLine(Exception e) => (e.Message.Split('\n')[0].Trim() is { Length: > 0 } m ? m : e.GetType().Name).Replace("|", "/", StringComparison.Ordinal);

static bool IsOom(Exception e) => e.ToString().Contains("out of memory", StringComparison.OrdinalIgnoreCase);

string GpuMemory()
{
    if (!cudaAvailable) return "–";
    var used = NvidiaSmi("--query-gpu=memory.used", "--format=csv,noheader", "-i", "0");
    return used is { Count: > 0 } ? used[0] : "–";
}

static List<string>? NvidiaSmi(params string[] arguments)
{
    try
    {
        var psi = new ProcessStartInfo("nvidia-smi") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi);
        if (p is null) return null;
        var output = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(10_000))
        {
            p.Kill();
            return null;
        }
        var lines = output.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
        return p.ExitCode == 0 && lines.Count > 0 ? lines : null;
    }
    catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException or IOException)
    {
        return null;
    }
}

static nn.Module<Tensor, Tensor> SmallCnn() => nn.Sequential(
    ("conv1", nn.Conv2d(3, 8, 3, padding: 1)), ("bn1", nn.BatchNorm2d(8)), ("relu1", nn.ReLU()),
    ("pool1", nn.MaxPool2d(2)),
    ("conv2", nn.Conv2d(8, 16, 3, padding: 1)), ("bn2", nn.BatchNorm2d(16)), ("relu2", nn.ReLU()),
    ("pool2", nn.AdaptiveAvgPool2d(2)), ("flatten", nn.Flatten()),
    ("fc1", nn.Linear(64, 32)), ("relu3", nn.ReLU()), ("fc2", nn.Linear(32, 10)));

// non-trivial eval statistics and affine parameters, so that BatchNorm merging is exercised
static void RandomiseBatchNorm(nn.Module model)
{
    using var _ = torch.no_grad();
    foreach (var m in model.modules())
    {
        if (m is not TorchSharp.Modules.BatchNorm2d bn) continue;
        var c = bn.running_mean!.shape[0];
        bn.running_mean!.copy_(torch.randn(c) * 0.2);
        bn.running_var!.copy_(torch.rand(c) + 0.5);
        bn.weight!.copy_(torch.rand(c) + 0.5);
        bn.bias!.copy_(torch.randn(c) * 0.1);
    }
}

internal sealed record CheckOptions(bool AllowCpu, bool Quick, bool SkipEquality, bool SkipThroughput, int[] Batches, int Size,
    int Warmup, int Repeats, double BudgetSeconds, double SlowRunSeconds, double HardLimitSeconds, double Tolerance, string? OutFile)
{
    private const string Usage = "dotnet RootDtd.GpuCheck.dll [--out results.md] [--allow-cpu] [--quick] [--skip-equality] [--skip-throughput] " +
        "[--batch 32,64] [--size 224] [--warmup 1] [--repeats 3] [--budget-s 330] [--slow-run-s 30] [--hard-limit-s 420] [--tolerance 1e-9]";

    public static CheckOptions? Parse(string[] args)
    {
        var o = new CheckOptions(false, false, false, false, new[] { 32, 64 }, 224, 1, 3, 330, 30, 420, 1e-9, null);
        try
        {
            for (var i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
                double Num(string s) => double.Parse(s, NumberStyles.Float, CultureInfo.InvariantCulture);
                switch (args[i])
                {
                    case "--allow-cpu": o = o with { AllowCpu = true }; break;
                    case "--quick": o = o with { Quick = true }; break;
                    case "--skip-equality": o = o with { SkipEquality = true }; break;
                    case "--skip-throughput": o = o with { SkipThroughput = true }; break;
                    case "--batch": o = o with { Batches = Next().Split(',', StringSplitOptions.RemoveEmptyEntries).Select(v => int.Parse(v, CultureInfo.InvariantCulture)).ToArray() }; break;
                    case "--size": o = o with { Size = (int)Num(Next()) }; break;
                    case "--warmup": o = o with { Warmup = Math.Max(0, (int)Num(Next())) }; break;
                    case "--repeats": o = o with { Repeats = Math.Max(1, (int)Num(Next())) }; break;
                    case "--budget-s": o = o with { BudgetSeconds = Num(Next()) }; break;
                    case "--slow-run-s": o = o with { SlowRunSeconds = Num(Next()) }; break;
                    case "--hard-limit-s": o = o with { HardLimitSeconds = Num(Next()) }; break;
                    case "--tolerance": o = o with { Tolerance = Num(Next()) }; break;
                    case "--out": o = o with { OutFile = Next() }; break;
                    case "-h" or "--help":
                        Console.WriteLine(Usage);
                        return null;
                    default:
                        throw new ArgumentException($"Unknown argument '{args[i]}'.");
                }
            }
        }
        catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
        {
            Console.Error.WriteLine($"{e.Message} Usage: {Usage}");
            return null;
        }
        return o;
    }
}
