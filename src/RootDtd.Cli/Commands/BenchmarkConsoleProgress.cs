using RootDtd.Cli.Explain;
using RootDtd.Evaluation.Benchmark;

namespace RootDtd.Cli.Commands;

/// <summary>
/// Progress of <c>evaluate</c> and <c>demo</c> on standard error: one header line per method stage
/// (<c>[2/7] root  explain+perturb+localise</c>) followed by a <see cref="ProgressBar"/> over its samples with an ETA,
/// moving within a batch (the explainer reports per graph unit).
/// </summary>
internal sealed class BenchmarkConsoleProgress : IProgress<BenchmarkProgress>
{
    private readonly CliEnvironment _env;
    private string _key = "";
    private ProgressBar? _bar;
    private System.Diagnostics.Stopwatch _clock = new();

    public BenchmarkConsoleProgress(CliEnvironment environment) => _env = environment;

    public void Report(BenchmarkProgress p)
    {
        var key = p.Method + "/" + p.Stage;
        if (key != _key)
        {
            _bar?.Finish();
            _key = key;
            _env.Error.WriteLine($"[{p.MethodIndex}/{p.MethodCount - 1}] {p.Method}  {p.Stage}");
            _bar = new ProgressBar(_env.Error, p.SamplesTotal, _env.ErrorIsTerminal, unit: "samples");
            _clock = System.Diagnostics.Stopwatch.StartNew();
        }
        _bar!.Report(p.SamplesDone, _clock.Elapsed);
    }

    /// <summary>Ends the last bar's line.</summary>
    public void Finish() => _bar?.Finish();
}
