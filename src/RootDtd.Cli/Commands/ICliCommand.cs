using System.CommandLine;

namespace RootDtd.Cli.Commands;

/// <summary>One <c>rootdtd</c> subcommand. Register new ones in <see cref="CommandRegistry.Commands"/>.</summary>
public interface ICliCommand
{
    /// <summary>Creates the System.CommandLine command (name, options, arguments, action).</summary>
    /// <param name="environment">Where the command writes.</param>
    Command Build(CliEnvironment environment);
}
