namespace RootDtd.Cli;

/// <summary>Where a command writes: standard output (results), standard error (progress, warnings, errors).</summary>
/// <param name="Out">Results and summaries.</param>
/// <param name="Error">Progress, warnings and error messages.</param>
/// <param name="ErrorIsTerminal">True when <paramref name="Error"/> is an interactive terminal (the progress bar redraws in place).</param>
public sealed record CliEnvironment(TextWriter Out, TextWriter Error, bool ErrorIsTerminal = false)
{
    /// <summary>The process console.</summary>
    public static CliEnvironment FromConsole() => new(Console.Out, Console.Error, !Console.IsErrorRedirected);

    /// <summary>Writes <c>error: message</c> to <see cref="Error"/>.</summary>
    public void WriteError(string message) => Error.WriteLine("error: " + message);

    /// <summary>Writes <c>warning: message</c> to <see cref="Error"/>.</summary>
    public void WriteWarning(string message) => Error.WriteLine("warning: " + message);
}
