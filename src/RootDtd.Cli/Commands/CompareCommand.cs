using System.CommandLine;
using System.Globalization;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Results;

namespace RootDtd.Cli.Commands;

/// <summary>
/// <c>rootdtd compare REPORT.json [--baseline zplus]… [--metrics …] [--resamples N] [--seed S] [--out FILE.md]</c>: the
/// bootstrap intervals of every method of an existing benchmark report (from its per-image values) and the paired
/// differences to the given baselines, as the Markdown section the report itself carries.
/// </summary>
public sealed class CompareCommand : ICliCommand
{
    /// <inheritdoc />
    public Command Build(CliEnvironment environment)
    {
        var report = new Argument<string>("report") { Description = "A benchmark report JSON (<model>.json written by 'rootdtd evaluate' or 'rootdtd merge')." };
        var baselines = new Option<string[]>("--baseline", "-b") { Description = "Method (row label or spec) to take paired differences to; repeat for several (default: zplus when the report has it).", HelpName = "method", AllowMultipleArgumentsPerToken = false };
        var metrics = new Option<string?>("--metrics") { Description = "Comma-separated metrics (report column labels or their JSON ids, e.g. mIoU,auc_plus_coarse; default: mIoU, IoU fg, mass, pointing, mAP, AUC+ and AUC− coarse).", HelpName = "list" };
        var resamples = new Option<int>("--resamples") { Description = "Bootstrap resamples.", DefaultValueFactory = _ => BootstrapOptions.DefaultResamples, HelpName = "N" };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the resampling.", DefaultValueFactory = _ => BootstrapOptions.DefaultSeed, HelpName = "S" };
        var output = new Option<string?>("--out", "-o") { Description = "Write the Markdown to this file (default: print it).", HelpName = "file" };
        var command = new Command("compare", "Bootstrap 95 % intervals of a benchmark report's metrics and paired differences to baselines, from the report's per-image values.")
        {
            report, baselines, metrics, resamples, seed, output,
        };
        command.SetAction(parse => CommandAction.Run(environment, () =>
        {
            var path = parse.GetValue(report)!;
            if (!File.Exists(path)) throw new UsageException($"The report '{path}' does not exist.");
            var count = parse.GetValue(resamples);
            if (count < 1) throw new UsageException($"--resamples must be at least 1, was {count}.");
            var rows = BenchmarkReport.ReadPerImage(File.ReadAllText(path), path);
            if (rows.Count == 0) throw new CliFailureException($"'{path}' has per-image values only for reference or ablation rows, none for a method.");
            var specs = ReadSpecs(path);
            var given = parse.GetValue(baselines) ?? Array.Empty<string>();
            var references = given.Length > 0
                ? given.Select(b => Resolve(b, rows, specs)).ToArray()
                : rows.Any(r => r.Method == BenchmarkReport.IntervalReference) ? new[] { BenchmarkReport.IntervalReference } : Array.Empty<string>();
            var metricList = parse.GetValue(metrics) is { } m ? m.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : null;
            if (metricList is not null)
                foreach (var name in metricList)
                {
                    try
                    {
                        PerImageMetrics.Get(name);
                    }
                    catch (ArgumentException e)
                    {
                        throw new UsageException("--metrics: " + e.Message);
                    }
                }
            BootstrapComparison comparison;
            try
            {
                comparison = BootstrapComparison.Compute(rows, references, metricList, new BootstrapOptions { Resamples = count, Seed = parse.GetValue(seed) });
            }
            catch (ArgumentException e)
            {
                throw new CliFailureException($"'{path}': {e.Message}");
            }
            var markdown = comparison.ToMarkdown();
            if (parse.GetValue(output) is { } file)
            {
                RootDtd.IO.AtomicFile.WriteAllText(file, markdown);
                environment.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{comparison.Methods.Count} methods × {comparison.Metrics.Count} metrics, {comparison.Samples} images, {count} resamples: {Path.GetFullPath(file)}"));
            }
            else environment.Out.Write(markdown);
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>Row label → spec of the report's rows (a baseline may be given by either).</summary>
    private static Dictionary<string, string> ReadSpecs(string path)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
        var specs = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var row in doc.RootElement.GetProperty("perImage").GetProperty("rows").EnumerateArray())
            if (row.TryGetProperty("spec", out var s) && s.GetString() is { } spec) specs.TryAdd(row.GetProperty("method").GetString() ?? "", spec);
        return specs;
    }

    private static string Resolve(string baseline, IReadOnlyList<MethodPerImage> rows, IReadOnlyDictionary<string, string> specs)
    {
        var name = baseline.Trim();
        if (rows.Any(r => r.Method == name)) return name;
        var bySpec = rows.Where(r => specs.TryGetValue(r.Method, out var s) && s == name).ToList();
        if (bySpec.Count == 1) return bySpec[0].Method;
        throw new UsageException($"--baseline: the report has no method '{baseline}'; its methods with per-image values are {string.Join(", ", rows.Select(r => r.Method))}.");
    }
}
