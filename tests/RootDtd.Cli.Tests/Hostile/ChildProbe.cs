using System.Diagnostics;
using System.Text.Json;
using RootDtd.Imaging;
using RootDtd.Models;

namespace RootDtd.Cli.Tests.Hostile;

/// <summary>
/// The entry point of this test assembly when it is run as a program (<c>dotnet exec RootDtd.Cli.Tests.dll probe …</c>):
/// loads one untrusted file in a fresh process and prints one JSON line with the outcome, the process's peak resident
/// memory and the time, so that <see cref="HostileFileTests"/> can measure each file alone.
/// </summary>
public static class ChildProbe
{
    /// <summary>What a probe run printed.</summary>
    public sealed record Outcome(bool Loaded, string Error, long PeakBytes, long BaselineBytes, double Seconds);

    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "cli")
        {
            // the rootdtd command line on the console (Ctrl-C handling included), with the tiny test architecture
            CliFixture.RegisterArch();
            HoldOutputUntilInterrupted();
            var code = CliApp.Run(args[1..]);
            Console.Out.Flush();
            Console.Error.Flush();
            Environment.Exit(code);
        }
        if (args.Length < 3 || args[0] != "probe")
        {
            Console.Error.WriteLine("usage: probe image <file> | probe weights <file>");
            return 2;
        }
        string error = string.Empty;
        long baseline = 0;
        var watch = new Stopwatch();
        try
        {
            switch (args[1])
            {
                case "image":
                {
                    var loader = new ImageLoader();
                    baseline = PeakBytes();
                    watch.Start();
                    using var image = loader.Load(args[2]);
                    break;
                }
                case "weights":
                {
                    using var model = TinyModel();
                    baseline = PeakBytes();
                    watch.Start();
                    ModelWeights.Load(model, args[2]);
                    break;
                }
                case "nesting":
                {
                    // A Linear wrapped in N nested Sequentials, explained (never disposed: the process just exits).
                    int depth = int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture);
                    TorchSharp.torch.nn.Module<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor> model = TorchSharp.torch.nn.Linear(4, 2);
                    for (int d = 0; d < depth; d++) model = TorchSharp.torch.nn.Sequential(("n", model));
                    baseline = PeakBytes();
                    watch.Start();
                    var explainer = new Explainer(model, RootDtd.Composites.Composites.EpsilonPlusFlat());
                    explainer.Explain(TorchSharp.torch.randn(2, 4));
                    break;
                }
                default:
                    Console.Error.WriteLine($"unknown probe kind {args[1]}");
                    return 2;
            }
        }
        catch (Exception e)
        {
            error = $"{e.GetType().Name}: {e.Message}";
        }
        watch.Stop();
        var outcome = new Outcome(error.Length == 0, error, PeakBytes(), baseline, watch.Elapsed.TotalSeconds);
        Console.Out.WriteLine(JsonSerializer.Serialize(outcome));
        Console.Out.Flush();
        Environment.Exit(0); // no finalizers: a deeply nested model must not be torn down recursively
        return 0;
    }

    /// <summary>The model hostile weights files are loaded into: <c>fc.weight</c> [5, 8] and <c>fc.bias</c> [5].</summary>
    public static TorchSharp.Modules.Sequential TinyModel() => TorchSharp.torch.nn.Sequential(("fc", TorchSharp.torch.nn.Linear(8, 5)));

    private static long PeakBytes()
    {
        using var self = Process.GetCurrentProcess();
        self.Refresh();
        return self.PeakWorkingSet64; // Linux: VmHWM of /proc/self/status
    }

    /// <summary>
    /// Environment variable naming a file: once that file exists, the child's next write to standard error waits (at
    /// most a minute) until the process has received Ctrl-C. A test that interrupts a fast run after its first saved
    /// batch then cannot lose the race against the run finishing first.
    /// </summary>
    public const string HoldAfterFileVariable = "ROOTDTD_TEST_HOLD_STDERR_AFTER";

    private static void HoldOutputUntilInterrupted()
    {
        var path = Environment.GetEnvironmentVariable(HoldAfterFileVariable);
        if (string.IsNullOrEmpty(path)) return;
        var interrupted = new ManualResetEventSlim();
        // subscribed before the CLI's own handler, so the hold is released before that handler writes its message
        Console.CancelKeyPress += (_, _) => interrupted.Set();
        Console.SetError(new HoldingWriter(Console.Error, path, interrupted));
    }

    /// <summary>Forwards to <c>inner</c>; a write after <c>path</c> exists waits for <c>interrupted</c> first.</summary>
    private sealed class HoldingWriter(TextWriter inner, string path, ManualResetEventSlim interrupted) : TextWriter
    {
        public override System.Text.Encoding Encoding => inner.Encoding;

        private void Hold()
        {
            if (!interrupted.IsSet && File.Exists(path)) interrupted.Wait(TimeSpan.FromMinutes(1));
        }

        public override void Write(char value) { Hold(); inner.Write(value); }
        public override void Write(string? value) { Hold(); inner.Write(value); }
        public override void WriteLine(string? value) { Hold(); inner.WriteLine(value); }
        public override void Flush() => inner.Flush();
    }

    /// <summary>How to start this assembly as a child process with <paramref name="args"/> (output and error redirected).</summary>
    public static ProcessStartInfo StartInfo(params string[] args)
    {
        var assembly = typeof(ChildProbe).Assembly.Location;
        var start = new ProcessStartInfo(Environment.ProcessPath ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // The test host's process path is dotnet (or testhost); use the dotnet muxer to run the assembly.
        if (!Path.GetFileNameWithoutExtension(start.FileName).Equals("dotnet", StringComparison.OrdinalIgnoreCase))
            start.FileName = "dotnet";
        start.ArgumentList.Add("exec");
        start.ArgumentList.Add(assembly);
        foreach (var a in args) start.ArgumentList.Add(a);
        return start;
    }

    /// <summary>Runs this assembly as a child process with the given probe arguments and parses its JSON line.</summary>
    public static Outcome Run(TimeSpan timeout, params string[] args)
    {
        using var process = Process.Start(StartInfo(args)) ?? throw new InvalidOperationException("could not start the probe process");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"probe {string.Join(' ', args)} ran longer than {timeout.TotalSeconds} s");
        }
        var line = stdout.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault()
                   ?? throw new InvalidOperationException($"probe {string.Join(' ', args)} printed nothing (exit {process.ExitCode}): {stderr.Result}");
        return JsonSerializer.Deserialize<Outcome>(line)
               ?? throw new InvalidOperationException($"probe printed '{line}'");
    }
}
