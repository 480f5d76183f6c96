using System.Text.RegularExpressions;
using FluentAssertions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Xunit;

namespace RootDtd.Imaging.Tests.Docs;

/// <summary>The README's C# snippet compiles as written (a top-level program against RootDtd and RootDtd.Imaging).</summary>
public sealed class ReadmeSnippetTests
{
    private static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "RootDtd.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("RootDtd.sln not found above " + AppContext.BaseDirectory);
    }

    [Fact]
    public void The_readme_snippet_compiles_as_written()
    {
        var readme = File.ReadAllText(Path.Combine(RepositoryRoot(), "README.md"));
        var match = Regex.Match(readme, "```csharp\n(?<code>.*?)```", RegexOptions.Singleline);
        match.Success.Should().BeTrue("the README has a C# snippet");
        var code = match.Groups["code"].Value;

        // what a console application has: the platform, implicit usings, and the packages it references
        _ = typeof(RootDtd.Explainer);
        _ = typeof(HeatmapRenderer);
        var platform = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator);
        var references = platform.Concat(AppDomain.CurrentDomain.GetAssemblies().Where(a => !a.IsDynamic && a.Location.Length > 0).Select(a => a.Location))
            .Distinct(StringComparer.Ordinal).Where(File.Exists).Select(p => MetadataReference.CreateFromFile(p));
        const string implicitUsings = "global using System; global using System.IO; global using System.Linq; global using System.Collections.Generic; global using System.Threading.Tasks;\n";
        var compilation = CSharpCompilation.Create("ReadmeSnippet",
            new[] { CSharpSyntaxTree.ParseText(implicitUsings), CSharpSyntaxTree.ParseText(code, new CSharpParseOptions(LanguageVersion.Latest)) },
            references, new CSharpCompilationOptions(OutputKind.ConsoleApplication, nullableContextOptions: NullableContextOptions.Enable));
        using var output = new MemoryStream();
        var emitted = compilation.Emit(output);
        var errors = emitted.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).Select(d => d.ToString()).ToList();
        errors.Should().BeEmpty("the README snippet must compile as written:\n" + code);
    }
}
