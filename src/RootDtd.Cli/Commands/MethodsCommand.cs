using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using RootDtd.Composites;

namespace RootDtd.Cli.Commands;

/// <summary><c>rootdtd methods [--json]</c>: every explanation method of <see cref="MethodCatalog"/> with its description and parameters.</summary>
public sealed class MethodsCommand : ICliCommand
{
    /// <inheritdoc />
    public Command Build(CliEnvironment environment)
    {
        var json = new Option<bool>("--json") { Description = "Print the list as JSON (name, description, parameters with defaults)." };
        var command = new Command("methods", "List every explanation method usable with 'explain --method', with its parameters and their defaults.") { json };
        command.SetAction(parse => CommandAction.Run(environment, () =>
        {
            Write(environment.Out, parse.GetValue(json));
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>Writes the method list as text or JSON.</summary>
    public static void Write(TextWriter output, bool asJson)
    {
        var methods = MethodCatalog.All;
        if (asJson)
        {
            var list = methods.Select(m =>
            {
                var composite = m.CreateDefault();
                return new
                {
                    name = m.Name,
                    description = m.Description,
                    parameters = m.Defaults,
                    text_parameters = m.Parameters.Where(p => p.Kind == MethodParameterKind.Text).ToDictionary(p => p.Name, p => p.TextIn(m.DefaultOptions)),
                    parameter_kinds = m.Parameters.ToDictionary(p => p.Name, p => KindName(p.Kind)),
                    start_relevance = StartName(composite.StartRelevance),
                    canonizers = composite.Canonizers.Select(c => c.Name).ToArray(),
                };
            });
            output.WriteLine(JsonSerializer.Serialize(list, new JsonSerializerOptions { WriteIndented = true }));
            return;
        }
        output.WriteLine("Explanation methods (use: --method NAME or --method NAME:key=value,key=value):");
        output.WriteLine();
        var width = Math.Max(12, methods.Count == 0 ? 0 : methods.Max(m => m.Name.Length)) + 2;
        foreach (var m in methods)
        {
            output.WriteLine($"  {m.Name.PadRight(width)}{m.Description}");
            var parameters = m.Parameters.Count == 0 ? "none" : FormatParameters(m);
            output.WriteLine($"  {new string(' ', width)}parameters: {parameters}");
        }
    }

    /// <summary><c>key=value, key=value</c>: every parameter with its default, as a spec writes it.</summary>
    public static string FormatParameters(ExplanationMethod method) =>
        string.Join(", ", method.Parameters.Select(p => p.Name + "=" + (p.Kind == MethodParameterKind.Text && p.TextIn(method.DefaultOptions).Length == 0 ? "(automatic)" : p.TextIn(method.DefaultOptions)) + (p.Kind == MethodParameterKind.Switch ? " (0/1)" : "")));

    private static string KindName(MethodParameterKind kind) => kind switch
    {
        MethodParameterKind.Count => "count",
        MethodParameterKind.Switch => "switch",
        MethodParameterKind.Text => "name",
        _ => "number",
    };

    private static string StartName(StartRelevance start) => start switch
    {
        StartRelevance.OneHot => "one-hot",
        StartRelevance.AbsoluteTargetLogit => "absolute-logit",
        _ => "logit",
    };
}
