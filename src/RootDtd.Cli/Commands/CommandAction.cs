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
    /// (set <c>ROOTDTD_DEBUG=1</c> for the stack trace).
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
        catch (Exception e) when (e is CliFailureException or InvalidDataException or ImageLoadException or ModelWeightsException or ExplanationException or IOException or UnauthorizedAccessException)
        {
            environment.WriteError(e.Message);
            WriteDebug(environment, e);
            return ExitCodes.Failure;
        }
        catch (Exception e)
        {
            environment.WriteError($"{e.GetType().Name}: {e.Message}");
            WriteDebug(environment, e);
            return ExitCodes.Failure;
        }
    }

    private static void WriteDebug(CliEnvironment environment, Exception e)
    {
        if (Environment.GetEnvironmentVariable("ROOTDTD_DEBUG") is "1" or "true") environment.Error.WriteLine(e.ToString());
    }
}
