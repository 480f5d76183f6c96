using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Xml.Linq;
using FluentAssertions;
using RootDtd.Native;
using Xunit;
using Xunit.Abstractions;

namespace RootDtd.Imaging.Tests.Packaging;

/// <summary>
/// Packs RootDtd and RootDtd.Imaging into a temporary feed (once for the class, with a unique pre-release version so
/// the NuGet cache never serves a stale copy), builds a throw-away net10.0 console app against that feed and
/// TorchSharp-cpu with an <em>offline</em> restore, and runs it: what a user of the packages gets.
/// </summary>
public sealed class PackageConsumerTests : IClassFixture<PackageConsumerTests.PackedConsumer>
{
    private readonly PackedConsumer _consumer;
    private readonly ITestOutputHelper _output;

    public PackageConsumerTests(PackedConsumer consumer, ITestOutputHelper output)
    {
        _consumer = consumer;
        _output = output;
        _output.WriteLine(consumer.Log);
    }

    [Fact]
    public void CorePackageHasReadmeLicenceXmlDocsAndTheNativeFixTargets()
    {
        var (entries, nuspec) = _consumer.ReadPackage("RootDtd");
        entries.Should().Contain(new[] { "README.md", "buildTransitive/RootDtd.targets", "lib/net8.0/RootDtd.dll", "lib/net8.0/RootDtd.xml" });
        entries.Should().Contain(new[] { "lib/net8.0/RootDtd.Native.dll", "lib/net8.0/RootDtd.Native.xml" }, "the native-library fix is its own assembly, shipped in the core package");
        Metadata(nuspec, "license").Should().Be("MIT");
        Metadata(nuspec, "readme").Should().Be("README.md");
        Dependencies(nuspec).Should().Contain(new[] { "TorchSharp 0.107.0", "TorchVision 0.107.0" })
            .And.NotContain(d => d.StartsWith("TorchSharp-cpu", StringComparison.Ordinal) || d.StartsWith("libtorch", StringComparison.Ordinal),
                "the application chooses the libtorch backend");
    }

    [Fact]
    public void ImagingPackageDependsOnTheCorePackageOfTheSameVersion()
    {
        var (entries, nuspec) = _consumer.ReadPackage("RootDtd.Imaging");
        entries.Should().Contain(new[] { "README.md", "lib/net8.0/RootDtd.Imaging.dll", "lib/net8.0/RootDtd.Imaging.xml" });
        Metadata(nuspec, "license").Should().Be("MIT");
        Dependencies(nuspec).Should().Contain($"RootDtd {_consumer.Version}").And.Contain(d => d.StartsWith("SixLabors.ImageSharp ", StringComparison.Ordinal));
    }

    [Fact]
    public void ConsumerAppExplainsRendersAndConservesRelevance()
    {
        _consumer.RunExitCode.Should().Be(0, _consumer.RunOutput);
        File.Exists(_consumer.PngPath).Should().BeTrue(_consumer.RunOutput);
        new FileInfo(_consumer.PngPath).Length.Should().BeGreaterThan(100);
        var line = _consumer.RunOutput.Split('\n').Single(l => l.StartsWith("conservation-error ", StringComparison.Ordinal));
        var error = double.Parse(line["conservation-error ".Length..].Trim(), CultureInfo.InvariantCulture);
        error.Should().BeLessThan(1e-3, _consumer.RunOutput);
        _consumer.RunOutput.Should().Contain("html-images 4", "the notebook HTML of the explanation has input, overlay, heatmap and colour bar");
        var native = _consumer.RunOutput.Split('\n').Single(l => l.StartsWith("native-fix ", StringComparison.Ordinal))["native-fix ".Length..].Trim();
        Enum.TryParse<NativeFixResult>(native, out var fix).Should().BeTrue(_consumer.RunOutput);
        fix.Should().NotBe(NativeFixResult.AlreadyLoaded, "the application reaches TorchSharpNative before TorchSharp loads");
    }

    [Fact]
    public void ConsumerOutputHasTheNativeLibraryMarkedWeakByTheBuildTransitiveTargets()
    {
        var copies = Directory.GetFiles(_consumer.OutputDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories);
        copies.Should().NotBeEmpty();
        foreach (var copy in copies)
        {
            var flags = ElfVersionPatcher.RequirementFlags(File.ReadAllBytes(copy), TorchSharpNative.RequiredVersion);
            if (SystemProvidesRequiredVersion())
                flags.Should().NotBeNull(); // nothing to patch on this system: the targets leave the copy alone
            else
                flags.Should().NotBeEmpty().And.OnlyContain(f => (f & 0x2) != 0, $"{copy} must require {TorchSharpNative.RequiredVersion} only weakly");
        }
        _consumer.BuildOutput.Should().ContainAny("marked " + TorchSharpNative.RequiredVersion + " weak", "no patch needed");
    }

    private static bool SystemProvidesRequiredVersion()
    {
        var lib = new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6" }.FirstOrDefault(File.Exists);
        return lib is not null && ElfVersionPatcher.DefinesVersion(File.ReadAllBytes(lib), TorchSharpNative.RequiredVersion);
    }

    private static string? Metadata(XDocument nuspec, string name) =>
        nuspec.Descendants().FirstOrDefault(e => e.Name.LocalName == name && e.Parent?.Name.LocalName == "metadata")?.Value;

    private static List<string> Dependencies(XDocument nuspec) =>
        nuspec.Descendants().Where(e => e.Name.LocalName == "dependency").Select(e => $"{e.Attribute("id")?.Value} {e.Attribute("version")?.Value}").ToList();

    /// <summary>The packed feed and the consumer app, built and run once for the test class.</summary>
    public sealed class PackedConsumer : IDisposable
    {
        private const string ProgramSource = """
            using RootDtd;
            using RootDtd.Composites;
            using RootDtd.Display;
            using RootDtd.Imaging;
            using TorchSharp;
            using static TorchSharp.torch;

            Console.WriteLine($"native-fix {RootDtd.Native.TorchSharpNative.EnsureLoadable()}");
            torch.manual_seed(1);
            // Bias-free ReLU net: LRP-0 conserves relevance exactly up to float rounding and the tiny stabiliser.
            var net = nn.Sequential(
                ("conv1", nn.Conv2d(3, 8, 3, padding: 1, bias: false)), ("relu1", nn.ReLU()),
                ("conv2", nn.Conv2d(8, 8, 3, padding: 1, bias: false)), ("relu2", nn.ReLU()),
                ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(8, 4, hasBias: false)));
            net.eval();
            using var x = torch.rand(1, 3, 32, 32);
            using var explainer = new Explainer(net, MethodCatalog.Parse("lrp0"));
            using var explanation = explainer.Explain(x);
            using var heat = HeatmapRenderer.Render(explanation.Heatmap[0], HeatmapOptions.Paper);
            heat.SavePng(args[0]);
            var html = ExplanationFormatting.ToHtml(explanation);
            Console.WriteLine($"html-images {System.Text.RegularExpressions.Regex.Matches(html, "data:image/png").Count}");
            Console.WriteLine(FormattableString.Invariant($"conservation-error {explanation.Conservation.MaxRelativeError:R}"));
            """;

        private readonly string _root;
        private readonly StringBuilder _log = new();

        public PackedConsumer()
        {
            var watch = Stopwatch.StartNew();
            Version = "0.1.0-test" + DateTime.UtcNow.ToString("yyyyMMddHHmmss", CultureInfo.InvariantCulture) + Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
            _root = Directory.CreateTempSubdirectory("rootdtd-pack-").FullName;
            Feed = Path.Combine(_root, "feed");
            var repo = RepositoryRoot();
            var artifacts = Path.Combine(_root, "artifacts");   // the repository's bin/obj folders stay untouched
            string[] common = { "-c", "Release", "-o", Feed, "--artifacts-path", artifacts, "-p:Version=" + Version, "-nologo", "-v", "q" };
            // Packing Imaging builds the core too; the core is then packed without building it again.
            Step("pack RootDtd.Imaging", repo, new[] { "pack", Path.Combine(repo, "src", "RootDtd.Imaging", "RootDtd.Imaging.csproj") }.Concat(common));
            Step("pack RootDtd", repo, new[] { "pack", Path.Combine(repo, "src", "RootDtd", "RootDtd.csproj"), "--no-build", "--no-restore" }.Concat(common));

            var app = Path.Combine(_root, "app");
            Directory.CreateDirectory(app);
            var globalPackages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } gp
                ? gp
                : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
            File.WriteAllText(Path.Combine(app, "NuGet.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <clear />
                    <add key="packed" value="{Feed}" />
                    <add key="global-packages" value="{globalPackages}" />
                  </packageSources>
                </configuration>
                """);
            File.WriteAllText(Path.Combine(app, "Consumer.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <OutputType>Exe</OutputType>
                    <TargetFramework>net10.0</TargetFramework>
                    <Nullable>enable</Nullable>
                    <ImplicitUsings>enable</ImplicitUsings>
                    <RuntimeIdentifier>$(NETCoreSdkRuntimeIdentifier)</RuntimeIdentifier>
                    <SelfContained>false</SelfContained>
                    <NuGetAudit>false</NuGetAudit>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="RootDtd" Version="{Version}" />
                    <PackageReference Include="RootDtd.Imaging" Version="{Version}" />
                    <PackageReference Include="TorchSharp-cpu" Version="0.107.0" />
                  </ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(app, "Program.cs"), ProgramSource);
            // Outside the repository: no Directory.Build.props/targets, no central package versions apply.
            Step("restore (offline)", app, new[] { "restore", "--configfile", Path.Combine(app, "NuGet.config"), "-nologo" });
            BuildOutput = Step("build", app, new[] { "build", "--no-restore", "-c", "Release", "-nologo", "-v", "n" });
            OutputDirectory = Directory.GetFiles(Path.Combine(app, "bin", "Release"), "Consumer.dll", SearchOption.AllDirectories).Select(Path.GetDirectoryName).Single()!;
            PngPath = Path.Combine(_root, "heatmap.png");
            (RunExitCode, RunOutput) = Run(app, new[] { Path.Combine(OutputDirectory, "Consumer.dll"), PngPath }, TimeSpan.FromMinutes(3));
            _log.AppendLine(CultureInfo.InvariantCulture, $"run: exit {RunExitCode}, {watch.Elapsed.TotalSeconds:F0} s in all\n{RunOutput}");
        }

        public string Version { get; }

        public string Feed { get; }

        public string BuildOutput { get; }

        public string OutputDirectory { get; }

        public string PngPath { get; }

        public int RunExitCode { get; }

        public string RunOutput { get; }

        public string Log => _log.ToString();

        public (List<string> Entries, XDocument Nuspec) ReadPackage(string id)
        {
            using var zip = ZipFile.OpenRead(Path.Combine(Feed, $"{id}.{Version}.nupkg"));
            var entries = zip.Entries.Select(e => e.FullName).ToList();
            using var nuspec = zip.GetEntry($"{id}.nuspec")!.Open();
            return (entries, XDocument.Load(nuspec));
        }

        private string Step(string name, string workingDirectory, IEnumerable<string> args)
        {
            var watch = Stopwatch.StartNew();
            var (code, output) = Run(workingDirectory, args, TimeSpan.FromMinutes(8));
            _log.AppendLine(CultureInfo.InvariantCulture, $"{name}: exit {code}, {watch.Elapsed.TotalSeconds:F0} s");
            if (code != 0) throw new InvalidOperationException($"'{name}' failed with exit code {code}:\n{output}");
            return output;
        }

        private static (int ExitCode, string Output) Run(string workingDirectory, IEnumerable<string> args, TimeSpan timeout)
        {
            var info = new ProcessStartInfo("dotnet") { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in args) info.ArgumentList.Add(a);
            // The child must not inherit the test host's MSBuild/runtime settings.
            foreach (var key in new[] { "MSBuildSDKsPath", "MSBuildExtensionsPath", "MSBUILD_EXE_PATH", "DOTNET_HOST_PATH" }) info.Environment.Remove(key);
            info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
            info.Environment["DOTNET_NOLOGO"] = "1";
            info.Environment["MSBUILDDISABLENODEREUSE"] = "1";
            using var process = Process.Start(info)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(timeout))
            {
                process.Kill(entireProcessTree: true);
                return (-1, $"timed out after {timeout}\n{stdout.Result}{stderr.Result}");
            }
            process.WaitForExit();
            return (process.ExitCode, stdout.Result + stderr.Result);
        }

        private static string RepositoryRoot()
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "RootDtd.sln"))) return dir.FullName;
            throw new InvalidOperationException("RootDtd.sln not found above " + AppContext.BaseDirectory);
        }

        public void Dispose()
        {
            try
            {
                Directory.Delete(_root, recursive: true);
            }
            catch (IOException)
            {
            }
            // The unique test version was extracted into the global packages folder: remove exactly that version.
            var globalPackages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } gp
                ? gp
                : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
            foreach (var id in new[] { "rootdtd", "rootdtd.imaging" })
            {
                var dir = Path.Combine(globalPackages, id, Version.ToLowerInvariant());
                try
                {
                    if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
                }
                catch (IOException)
                {
                }
            }
        }
    }
}
