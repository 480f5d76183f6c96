namespace RootDtd.Cli;

/// <summary>Exit codes of every rootdtd command.</summary>
public static class ExitCodes
{
    /// <summary>Everything worked.</summary>
    public const int Ok = 0;

    /// <summary>The work failed (unreadable image, weights that do not fit, CUDA unavailable, explanation error).</summary>
    public const int Failure = 1;

    /// <summary>The command line is wrong (unknown option or command, bad value, unknown method or architecture, a named file is missing).</summary>
    public const int Usage = 2;

    /// <summary>Interrupted (Ctrl-C): the images completed before the interruption were written, the rest were not (128 + SIGINT).</summary>
    public const int Interrupted = 130;
}

/// <summary>The command line is wrong; the command exits with <see cref="ExitCodes.Usage"/> and prints the message.</summary>
public sealed class UsageException : Exception
{
    /// <summary>Creates the exception.</summary>
    public UsageException(string message) : base(message) { }
}

/// <summary>The work failed; the command exits with <see cref="ExitCodes.Failure"/> and prints the message.</summary>
public sealed class CliFailureException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CliFailureException(string message, Exception? inner = null) : base(message, inner) { }
}
