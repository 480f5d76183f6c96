using System.CommandLine;
using System.Globalization;
using RootDtd.Evaluation.Benchmark;
using RootDtd.Evaluation.Sharding;

namespace RootDtd.Cli.Commands;

/// <summary>
/// <c>rootdtd merge RUN_DIRS… --out DIR</c>: combines the state files of <c>rootdtd evaluate --shard i/n</c> runs into
/// the report one unsharded run writes (same tables, same numbers, same order; measured times are summed).
/// </summary>
public sealed class MergeCommand : ICliCommand
{
    /// <inheritdoc />
    public Command Build(CliEnvironment environment)
    {
        var dirs = new Argument<string[]>("run-dirs") { Description = "Output folders of the shards (or their .state.json files).", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--out", "-o") { Description = "Folder of the merged report.", Required = true, HelpName = "dir" };
        var prefix = new Option<string?>("--prefix") { Description = "File-name prefix of the report (default: the model name).", HelpName = "name" };
        var command = new Command("merge", "Merge the shards of 'rootdtd evaluate --shard i/n' into the report of one run.") { dirs, output, prefix };
        command.SetAction(parse => CommandAction.Run(environment, () =>
        {
            var files = new List<string>();
            foreach (var item in parse.GetValue(dirs) ?? Array.Empty<string>())
            {
                if (File.Exists(item)) files.Add(item);
                else if (Directory.Exists(item))
                {
                    var found = Directory.EnumerateFiles(item, "*.state.json").Order(StringComparer.Ordinal).ToList();
                    if (found.Count == 0) throw new UsageException($"The folder '{item}' has no *.state.json file (run 'rootdtd evaluate --shard i/n --out {item}' first).");
                    files.AddRange(found);
                }
                else throw new UsageException($"'{item}' is neither a folder nor a state file.");
            }
            var states = files.Select(f => BenchmarkRunState.FromJson(File.ReadAllText(f), f)).ToList();
            BenchmarkResult result;
            try
            {
                result = BenchmarkResult.FromStates(states);
            }
            catch (ArgumentException e)
            {
                throw new CliFailureException($"Cannot merge {files.Count} state file(s): {e.Message}");
            }
            var dir = parse.GetValue(output)!;
            var written = BenchmarkReport.Write(result, dir, parse.GetValue(prefix) ?? result.Options.ModelName);
            environment.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{result.Options.ModelName}: merged {states.Count} shard(s), {result.Samples} samples, {result.Methods.Count} methods"));
            environment.Out.WriteLine($"report:  {Path.GetFullPath(written.Markdown)}");
            foreach (var image in written.Images) environment.Out.WriteLine($"figure:  {Path.GetFullPath(image)}");
            environment.Out.WriteLine($"data:    {Path.GetFullPath(written.Json)}");
            return ExitCodes.Ok;
        }));
        return command;
    }
}
