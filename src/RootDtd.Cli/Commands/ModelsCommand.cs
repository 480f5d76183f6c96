using System.CommandLine;
using RootDtd.Models;

namespace RootDtd.Cli.Commands;

/// <summary><c>rootdtd models</c>: the architectures usable with <c>explain --arch</c>.</summary>
public sealed class ModelsCommand : ICliCommand
{
    /// <inheritdoc />
    public Command Build(CliEnvironment environment)
    {
        var command = new Command("models", "List the architectures usable with 'explain --arch' (torchvision module names: PyTorch state dicts load unchanged).");
        command.SetAction(_ => CommandAction.Run(environment, () =>
        {
            var all = ModelZoo.All;
            var width = all.Max(a => a.Name.Length) + 2;
            environment.Out.WriteLine("Architectures (use: --arch NAME --classes N --weights FILE):");
            environment.Out.WriteLine();
            foreach (var a in all) environment.Out.WriteLine($"  {a.Name.PadRight(width)}{a.Description}");
            return ExitCodes.Ok;
        }));
        return command;
    }
}
