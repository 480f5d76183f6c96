namespace RootDtd.Cli;

/// <summary>Where a command writes: standard output (results), standard error (progress, warnings, errors).</summary>
/// <param name="Out">Results and summaries.</param>
/// <param name="Error">Progress, warnings and error messages.</param>
/// <param name="ErrorIsTerminal">True when <paramref name="Error"/> is an interactive terminal (the progress bar redraws in place).</param>
public sealed record CliEnvironment(TextWriter Out, TextWriter Error, bool ErrorIsTerminal = false)
{
    /// <summary>
    /// <c>--verbose</c> (or <c>ROOTDTD_DEBUG=1</c>): failures are reported with libtorch's native backtrace kept in the
    /// message and the .NET stack trace after it.
    /// </summary>
    public bool Verbose { get; init; } = Environment.GetEnvironmentVariable("ROOTDTD_DEBUG") is "1" or "true";

    /// <summary>Signalled when the user interrupts (Ctrl-C); commands stop at the next safe point and exit with <see cref="ExitCodes.Interrupted"/>.</summary>
    public CancellationToken Cancellation { get; init; }

    /// <summary>
    /// The process console. The first Ctrl-C signals <see cref="Cancellation"/> (the command finishes what it can write
    /// consistently); a second one ends the process at once.
    /// </summary>
    public static CliEnvironment FromConsole()
    {
        var interrupt = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            if (interrupt.IsCancellationRequested) return; // second Ctrl-C: default handling terminates the process
            e.Cancel = true;
            Console.Error.WriteLine("interrupted: finishing the current batch (Ctrl-C again to stop at once)");
            interrupt.Cancel();
        };
        return new(Console.Out, Console.Error, !Console.IsErrorRedirected) { Cancellation = interrupt.Token };
    }

    /// <summary>Writes <c>error: message</c> to <see cref="Error"/>.</summary>
    public void WriteError(string message) => Error.WriteLine("error: " + message);

    /// <summary>Writes <c>warning: message</c> to <see cref="Error"/>.</summary>
    public void WriteWarning(string message) => Error.WriteLine("warning: " + message);
}
