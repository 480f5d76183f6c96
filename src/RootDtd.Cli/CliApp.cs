using System.CommandLine;
using RootDtd.Cli.Commands;

namespace RootDtd.Cli;

/// <summary>
/// Builds the <c>rootdtd</c> command tree from <see cref="CommandRegistry"/> and runs it. Used by <see cref="Program"/>
/// and, in-process, by tests (with string writers).
/// </summary>
public static class CliApp
{
    /// <summary>The root command with every registered subcommand.</summary>
    public static RootCommand BuildRootCommand(CliEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var root = new RootCommand("rootdtd: explain image classifiers with Deep Taylor Decomposition / LRP (heatmaps, overlays, JSON reports).");
        foreach (var command in CommandRegistry.Commands) root.Subcommands.Add(command.Build(environment));
        return root;
    }

    /// <summary>Parses and runs a command line; returns the exit code (see <see cref="ExitCodes"/>).</summary>
    /// <param name="args">The arguments (without the program name).</param>
    /// <param name="environment">Where output goes.</param>
    public static int Run(string[] args, CliEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(environment);
        var root = BuildRootCommand(environment);
        var configuration = new InvocationConfiguration { Output = environment.Out, Error = environment.Error, EnableDefaultExceptionHandler = false };
        if (args.Length == 0)
        {
            root.Parse(new[] { "--help" }).Invoke(configuration);
            return ExitCodes.Usage;
        }
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var error in parsed.Errors) environment.WriteError(error.Message);
            var command = parsed.CommandResult.Command;
            var name = command is RootCommand ? "rootdtd" : "rootdtd " + command.Name;
            environment.Error.WriteLine($"Run '{name} --help' for the options.");
            return ExitCodes.Usage;
        }
        try
        {
            return parsed.Invoke(configuration);
        }
        catch (Exception e)
        {
            // Commands report their own errors; this is the last line of defence.
            environment.WriteError($"{e.GetType().Name}: {e.Message}");
            return ExitCodes.Failure;
        }
    }

    /// <summary>Parses and runs a command line on the console.</summary>
    public static int Run(params string[] args) => Run(args, CliEnvironment.FromConsole());
}
