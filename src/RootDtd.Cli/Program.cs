using System.Text;

namespace RootDtd.Cli;

/// <summary>Entry point of the <c>rootdtd</c> tool: everything happens in <see cref="CliApp"/>.</summary>
public static class Program
{
    /// <summary>Runs the command line and returns its exit code (0 ok, 1 failure, 2 usage error).</summary>
    public static int Main(string[] args)
    {
        Console.OutputEncoding = Encoding.UTF8;
        return CliApp.Run(args, CliEnvironment.FromConsole());
    }
}
