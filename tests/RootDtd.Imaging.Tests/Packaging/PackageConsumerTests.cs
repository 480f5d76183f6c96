using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using System.Xml.Linq;
using FluentAssertions;
using RootDtd.Native;
using Xunit;
using Xunit.Abstractions;

namespace RootDtd.Imaging.Tests.Packaging;

/// <summary>
/// Runs the commands of docs/getting-started.md §1 — the shell block after the <c>packaging-test</c> marker, parsed
/// from the document itself, so doc and test cannot drift — once for the class: pack the libraries into a local feed,
/// <c>dotnet new console</c>, <c>dotnet new nugetconfig</c>, <c>dotnet nuget add source</c>, <c>dotnet add package
/// RootDtd.Imaging --version …</c> and the backend. Then it builds that app with a small program for one runtime and
/// runs it: what a user who follows the guide gets.
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
    public void TheGuidesCommandsRanAndMadeTheProject()
    {
        // the block of docs/getting-started.md §1, as the guide writes it
        _consumer.Commands.Should().Contain(new[]
        {
            "dotnet pack src/RootDtd -c Release -o " + PackedConsumer.DocFeed,
            "dotnet new nugetconfig",
            "dotnet nuget add source " + PackedConsumer.DocFeed + " --name rootdtd-local --configfile nuget.config",
        }).And.Contain(c => c.StartsWith("dotnet add package RootDtd.Imaging --version ", StringComparison.Ordinal));
        // what the commands made: a nuget.config with the local feed, a project with the package and the backend
        var config = File.ReadAllText(Path.Combine(Path.GetDirectoryName(_consumer.ProjectFile)!, "nuget.config"));
        config.Should().Contain("rootdtd-local").And.Contain(_consumer.Feed);
        var references = XDocument.Load(_consumer.ProjectFile).Descendants().Where(e => e.Name.LocalName == "PackageReference")
            .Select(e => $"{e.Attribute("Include")?.Value} {e.Attribute("Version")?.Value}").ToList();
        references.Should().Contain(new[] { $"RootDtd.Imaging {_consumer.Version}", "TorchSharp-cpu 0.107.0" });
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

        /// <summary>The marker in docs/getting-started.md before the block this test runs.</summary>
        public const string DocMarker = "<!-- packaging-test:";

        /// <summary>The comment line of the block after which the commands run in the application's folder.</summary>
        public const string ApplicationPart = "# your application";

        /// <summary>The feed folder as the guide writes it; the test gives each run a fresh one.</summary>
        public const string DocFeed = "~/rootdtd-feed";

        public PackedConsumer()
        {
            var watch = Stopwatch.StartNew();
            var repo = RepositoryRoot();
            // a unique pre-release version, so that the NuGet cache never serves a stale copy of the packages
            Version = DocumentedVersion(repo) + "-test" + DateTime.UtcNow.ToString("yyyyMMddHHmmss", CultureInfo.InvariantCulture) + Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
            _root = Directory.CreateTempSubdirectory("rootdtd-pack-").FullName;
            Feed = Path.Combine(_root, "feed");
            var artifacts = Path.Combine(_root, "artifacts");   // the repository's bin/obj folders stay untouched
            var home = Path.Combine(_root, "home");
            Directory.CreateDirectory(home);

            var (checkoutPart, applicationPart) = DocumentedCommands(repo);
            Commands = checkoutPart.Concat(applicationPart).Select(c => string.Join(' ', c)).ToList();
            var directory = repo;
            foreach (var command in checkoutPart) directory = Execute(command, directory, artifacts);
            directory = home;
            foreach (var command in applicationPart) directory = Execute(command, directory, artifacts);
            var app = directory;
            ProjectFile = Directory.GetFiles(app, "*.csproj").Single();

            File.WriteAllText(Path.Combine(app, "Program.cs"), ProgramSource);
            // outside the repository: no Directory.Build.props/targets, no central package versions apply; one runtime (guide §2)
            BuildOutput = Step("build", app, new[] { "build", "-c", "Release", "-r", RuntimeInformation.RuntimeIdentifier, "-nologo", "-v", "n" });
            var dll = Path.GetFileNameWithoutExtension(ProjectFile) + ".dll";
            OutputDirectory = Directory.GetFiles(Path.Combine(app, "bin", "Release"), dll, SearchOption.AllDirectories).Select(Path.GetDirectoryName).Single()!;
            PngPath = Path.Combine(_root, "heatmap.png");
            (RunExitCode, RunOutput) = Run(app, new[] { Path.Combine(OutputDirectory, dll), PngPath }, TimeSpan.FromMinutes(3));
            _log.AppendLine(CultureInfo.InvariantCulture, $"run: exit {RunExitCode}, {watch.Elapsed.TotalSeconds:F0} s in all\n{RunOutput}");
        }

        /// <summary>The commands of the guide's block, as the guide writes them.</summary>
        public IReadOnlyList<string> Commands { get; }

        /// <summary>The project file that <c>dotnet new console</c> made and <c>dotnet add package</c> edited.</summary>
        public string ProjectFile { get; }

        /// <summary>
        /// Runs one command of the guide. What the test changes, and only that: the feed folder (<see cref="DocFeed"/>)
        /// is this run's; <c>dotnet pack</c> also gets the unique version and an artifacts folder outside the checkout;
        /// <c>dotnet add package RootDtd…</c> asks for the unique version instead of the documented one.
        /// </summary>
        private string Execute(IReadOnlyList<string> command, string directory, string artifacts)
        {
            var name = string.Join(' ', command);
            if (command[0] == "cd")
            {
                var target = Path.GetFullPath(Path.Combine(directory, command[1]));
                if (!Directory.Exists(target)) throw new InvalidOperationException($"'{name}': the folder {target} does not exist.");
                return target;
            }
            if (command[0] != "dotnet") throw new InvalidOperationException($"The guide's command '{name}' is not one the packaging test knows how to run (dotnet …, cd …).");
            var args = command.Skip(1).Select(a => a == DocFeed ? Feed : a).ToList();
            if (args[0] == "pack") args.AddRange(new[] { "--artifacts-path", artifacts, "-p:Version=" + Version, "-nologo", "-v", "q" });
            if (args.Count >= 3 && args[0] == "add" && args[1] == "package" && args[2].StartsWith("RootDtd", StringComparison.Ordinal))
            {
                var k = args.IndexOf("--version");
                if (k < 0) throw new InvalidOperationException($"The guide's '{name}' gives no --version.");
                args[k + 1] = Version;
            }
            Step(name, directory, args);
            return directory;
        }

        /// <summary>The version the guide asks for in <c>dotnet add package RootDtd.Imaging --version V</c>; it must be the repository's.</summary>
        private static string DocumentedVersion(string repo)
        {
            var props = XDocument.Load(Path.Combine(repo, "Directory.Build.props"));
            var version = props.Descendants().First(e => e.Name.LocalName == "Version").Value.Trim();
            var documented = DocumentedCommands(repo).Application.Where(c => c.Count > 3 && c[1] == "add" && c[2] == "package" && c[3].StartsWith("RootDtd", StringComparison.Ordinal))
                .Select(c => c[c.ToList().IndexOf("--version") + 1]).ToList();
            if (documented.Count == 0) throw new InvalidOperationException("docs/getting-started.md: the packaging-test block adds no RootDtd package.");
            if (documented.Any(v => v != version))
                throw new InvalidOperationException($"docs/getting-started.md asks for version {string.Join(", ", documented)}, the packages are {version} (Directory.Build.props).");
            return version;
        }

        /// <summary>
        /// The shell block after <see cref="DocMarker"/> in docs/getting-started.md, as commands (a line without its
        /// trailing comment, split at <c>&amp;&amp;</c>, split at spaces): those before <see cref="ApplicationPart"/>
        /// run in the checkout, those after it in the application's folder.
        /// </summary>
        public static (List<IReadOnlyList<string>> Checkout, List<IReadOnlyList<string>> Application) DocumentedCommands(string repo)
        {
            var doc = File.ReadAllText(Path.Combine(repo, "docs", "getting-started.md"));
            var marker = doc.IndexOf(DocMarker, StringComparison.Ordinal);
            if (marker < 0) throw new InvalidOperationException($"docs/getting-started.md has no '{DocMarker}' marker before the commands the packaging test runs.");
            var open = doc.IndexOf("```sh\n", marker, StringComparison.Ordinal);
            var close = open < 0 ? -1 : doc.IndexOf("\n```", open + 6, StringComparison.Ordinal);
            if (open < 0 || close < 0) throw new InvalidOperationException("docs/getting-started.md: no ```sh block after the packaging-test marker.");
            var checkout = new List<IReadOnlyList<string>>();
            var application = new List<IReadOnlyList<string>>();
            var target = checkout;
            foreach (var raw in doc[(open + 6)..close].Split('\n'))
            {
                var line = raw.Trim();
                if (line.StartsWith(ApplicationPart, StringComparison.Ordinal)) target = application;
                var comment = line.IndexOf(" #", StringComparison.Ordinal);
                if (line.StartsWith('#')) line = "";
                else if (comment >= 0) line = line[..comment].Trim();
                if (line.Length == 0) continue;
                foreach (var part in line.Split("&&"))
                    target.Add(part.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            }
            if (application.Count == 0) throw new InvalidOperationException($"docs/getting-started.md: the packaging-test block has no '{ApplicationPart}' part.");
            return (checkout, application);
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
