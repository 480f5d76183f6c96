namespace RootDtd;

/// <summary>An explanation could not be computed (unsupported model, bad input, mismatching graph); the message says why and where.</summary>
public sealed class ExplanationException : Exception
{
    /// <summary>Creates the exception.</summary>
    public ExplanationException(string message) : base(message) { }

    /// <summary>Creates the exception with an inner cause.</summary>
    public ExplanationException(string message, Exception inner) : base(message, inner) { }
}
