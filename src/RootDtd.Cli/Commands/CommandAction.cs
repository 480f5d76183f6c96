using RootDtd.Imaging;
using RootDtd.Models;

namespace RootDtd.Cli.Commands;

/// <summary>Runs a command body and maps exceptions to messages and exit codes the same way for every command.</summary>
public static class CommandAction
{
    /// <summary>
    /// Runs <paramref name="body"/>: <see cref="UsageException"/> → exit 2; <see cref="CliFailureException"/>,
    /// <see cref="ImageLoadException"/>, <see cref="ModelWeightsException"/>, <see cref="ExplanationException"/> and I/O
    /// errors → exit 1 with their message; anything else → exit 1 with the exception type and message
    /// (<c>--verbose</c> or <c>ROOTDTD_DEBUG=1</c>: with libtorch's native backtrace and the stack trace).
    /// </summary>
    public static int Run(CliEnvironment environment, Func<int> body)
    {
        ArgumentNullException.ThrowIfNull(environment);
        ArgumentNullException.ThrowIfNull(body);
        try
        {
            return body();
        }
        catch (UsageException e)
        {
            environment.WriteError(e.Message);
            return ExitCodes.Usage;
        }
        catch (OperationCanceledException) when (environment.Cancellation.IsCancellationRequested)
        {
            environment.WriteError("interrupted before any result was complete; nothing was written.");
            return ExitCodes.Interrupted;
        }
        catch (Exception e) when (e is CliFailureException or InvalidDataException or ImageLoadException or ModelWeightsException or ExplanationException or IOException or UnauthorizedAccessException)
        {
            environment.WriteError(Message(environment, e));
            WriteDebug(environment, e);
            return ExitCodes.Failure;
        }
        catch (Exception e)
        {
            environment.WriteError($"{e.GetType().Name}: {Message(environment, e)}");
            WriteDebug(environment, e);
            return ExitCodes.Failure;
        }
    }

    /// <summary>
    /// Refuses an output folder that cannot be created or written, before any work: a <see cref="CliFailureException"/>
    /// (exit 1) naming the option and the folder. Used by every command that writes results (explain, evaluate, train).
    /// </summary>
    /// <param name="folder">The output folder (created when it is missing).</param>
    /// <param name="option">The option that named it.</param>
    public static void RequireWritableFolder(string folder, string option = "--out")
    {
        try
        {
            RootDtd.IO.AtomicFile.EnsureWritableFolder(folder);
        }
        catch (IOException e)
        {
            throw new CliFailureException($"{option}: {e.Message}; nothing was computed.", e);
        }
    }

    /// <summary>
    /// libtorch appends a C++ backtrace of several kilobytes to its messages ("Exception raised from … frame #0: …");
    /// users see the message without it (<c>--verbose</c> or <c>ROOTDTD_DEBUG=1</c> prints everything).
    /// </summary>
    public static string WithoutNativeBacktrace(string message)
    {
        ArgumentNullException.ThrowIfNull(message);
        var cut = message.IndexOf("Exception raised from ", StringComparison.Ordinal);
        var frame = message.IndexOf("frame #0", StringComparison.Ordinal);
        if (frame >= 0 && (cut < 0 || frame < cut)) cut = frame;
        return cut < 0 ? message : message[..cut].TrimEnd() + " (native backtrace omitted; run with --verbose to see it)";
    }

    private static string Message(CliEnvironment environment, Exception e) => environment.Verbose ? e.Message : WithoutNativeBacktrace(e.Message);

    private static void WriteDebug(CliEnvironment environment, Exception e)
    {
        if (environment.Verbose) environment.Error.WriteLine(e.ToString());
    }
}
