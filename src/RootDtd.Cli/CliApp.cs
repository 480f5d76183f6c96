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
        root.Options.Add(VerboseOption);
        foreach (var command in CommandRegistry.Commands) root.Subcommands.Add(command.Build(environment));
        return root;
    }

    /// <summary>
    /// <c>--verbose</c>, accepted by every command: failures keep libtorch's native backtrace and add the .NET stack
    /// trace (<see cref="CliEnvironment.Verbose"/>).
    /// </summary>
    public static Option<bool> VerboseOption { get; } = new("--verbose")
    {
        Description = "On a failure, also print libtorch's native backtrace and the .NET stack trace (for bug reports).",
        Recursive = true,
    };

    /// <summary>Parses and runs a command line; returns the exit code (see <see cref="ExitCodes"/>).</summary>
    /// <param name="args">The arguments (without the program name).</param>
    /// <param name="environment">Where output goes.</param>
    public static int Run(string[] args, CliEnvironment environment)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(environment);
        // --verbose is read before the commands are built: they capture the environment
        if (args.TakeWhile(a => a != "--").Contains(VerboseOption.Name)) environment = environment with { Verbose = true };
        var root = BuildRootCommand(environment);
        var configuration = new InvocationConfiguration { Output = environment.Out, Error = environment.Error, EnableDefaultExceptionHandler = false };
        if (args.Length == 0)
        {
            var help = new StringWriter();
            root.Parse(new[] { "--help" }).Invoke(new InvocationConfiguration { Output = help, Error = environment.Error, EnableDefaultExceptionHandler = false });
            environment.Out.Write(ToolName(help.ToString()));
            return ExitCodes.Usage;
        }
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            var command = parsed.CommandResult.Command;
            if (command is RootCommand && parsed.UnmatchedTokens.Count > 0)
            {
                // a typo'd command: say that, not "Required command was not provided" first
                var typed = parsed.UnmatchedTokens[0];
                var names = root.Subcommands.Select(c => c.Name).ToList();
                var closest = names.OrderBy(n => EditDistance(n, typed)).First();
                var hint = EditDistance(closest, typed) <= Math.Max(2, typed.Length / 3) ? $" Did you mean '{closest}'?" : string.Empty;
                environment.WriteError($"'{typed}' is not a rootdtd command.{hint} Commands: {string.Join(", ", names)}.");
                environment.Error.WriteLine("Run 'rootdtd --help' for the commands.");
                return ExitCodes.Usage;
            }
            foreach (var error in parsed.Errors) environment.WriteError(error.Message);
            var name = command is RootCommand ? "rootdtd" : "rootdtd " + command.Name;
            environment.Error.WriteLine($"Run '{name} --help' for the options.");
            return ExitCodes.Usage;
        }
        try
        {
            if (parsed.Action is System.CommandLine.Help.HelpAction)
            {
                // the help names the tool as it is installed ('rootdtd'), also under 'dotnet run' (RootDtd.Cli)
                var help = new StringWriter();
                var code = parsed.Invoke(new InvocationConfiguration { Output = help, Error = environment.Error, EnableDefaultExceptionHandler = false });
                environment.Out.Write(ToolName(help.ToString()));
                return code;
            }
            return parsed.Invoke(configuration);
        }
        catch (Exception e)
        {
            // Commands report their own errors; this is the last line of defence.
            environment.WriteError($"{e.GetType().Name}: {(environment.Verbose ? e.Message : CommandAction.WithoutNativeBacktrace(e.Message))}");
            if (environment.Verbose) environment.Error.WriteLine(e.ToString());
            return ExitCodes.Failure;
        }
    }

    /// <summary>Help text with the executable name of a checkout run (<c>RootDtd.Cli</c>) replaced by the tool's name.</summary>
    internal static string ToolName(string help) =>
        System.Text.RegularExpressions.Regex.Replace(help, @"(?<![\w.])" + System.Text.RegularExpressions.Regex.Escape(RootCommand.ExecutableName) + @"(?![\w.])", "rootdtd");

    private static int EditDistance(string a, string b)
    {
        a = a.ToLowerInvariant();
        b = b.ToLowerInvariant();
        var d = new int[a.Length + 1, b.Length + 1];
        for (var i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (var j = 0; j <= b.Length; j++) d[0, j] = j;
        for (var i = 1; i <= a.Length; i++)
            for (var j = 1; j <= b.Length; j++)
            {
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
            }
        return d[a.Length, b.Length];
    }

    /// <summary>Parses and runs a command line on the console.</summary>
    public static int Run(params string[] args) => Run(args, CliEnvironment.FromConsole());
}
