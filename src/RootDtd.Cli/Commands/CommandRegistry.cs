namespace RootDtd.Cli.Commands;

/// <summary>
/// Every subcommand of <c>rootdtd</c>, in the order <c>--help</c> lists them. To add a command (e.g. <c>evaluate</c>,
/// <c>train</c>, <c>demo</c>): implement <see cref="ICliCommand"/> in this folder (see <see cref="MethodsCommand"/> for a
/// small one; use <see cref="CommandAction.Run"/> so that exit codes and error messages stay uniform) and add an
/// instance to the list below.
/// </summary>
public static class CommandRegistry
{
    /// <summary>The registered commands.</summary>
    public static IReadOnlyList<ICliCommand> Commands { get; } = new ICliCommand[]
    {
        new ExplainCommand(),
        new MethodsCommand(),
        new ModelsCommand(),
        new EvaluateCommand(),
        new TrainCommand(),
        new DemoCommand(),
        new MergeCommand(),
        new CompareCommand(),
    };
}
