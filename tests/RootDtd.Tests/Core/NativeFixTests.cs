using System.Diagnostics;
using FluentAssertions;
using RootDtd.Native;
using TorchSharp;
using Xunit;

namespace RootDtd.Tests.Core;

/// <summary>
/// The ELF weak-version patcher on the real libLibTorchSharp.so (the unpatched copy in the NuGet cache), the runtime
/// fallback's cache writer, and the build-time fix of this test project's output folder. Expected values come from
/// the file itself and, where available, from binutils' readelf.
/// </summary>
public class NativeFixTests
{
    private const string Version = TorchSharpNative.RequiredVersion;

    private static string? NuGetOriginal()
    {
        var root = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var path = Path.Combine(root, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        return File.Exists(path) ? path : null;
    }

    private static string? OutputCopy() => new[]
    {
        Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so"),
        Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so"),
    }.FirstOrDefault(File.Exists);

    private static string? SystemLibStdCxx() => new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib64/libstdc++.so.6", "/usr/lib64/libstdc++.so.6" }.FirstOrDefault(File.Exists);

    private static string? ReadElfVersions(string path)
    {
        if (!File.Exists("/usr/bin/readelf")) return null;
        var psi = new ProcessStartInfo("/usr/bin/readelf", $"-V --wide \"{path}\"") { RedirectStandardOutput = true, UseShellExecute = false };
        using var process = Process.Start(psi)!;
        var text = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return text;
    }

    private static string? ReadElfLine(string? text) =>
        text?.Split('\n').FirstOrDefault(l => l.Contains("Name: " + Version, StringComparison.Ordinal))?.Trim();

    [Fact]
    public void MarkWeakSetsExactlyTheWeakFlagOnTheRealLibrary()
    {
        var original = NuGetOriginal();
        if (original is null || !OperatingSystem.IsLinux()) return; // the package is restored on every Linux build of this project
        var bytes = File.ReadAllBytes(original);
        if (ElfVersionPatcher.RequirementFlags(bytes, Version).Count == 0) return; // a TorchSharp release without the requirement
        ElfVersionPatcher.RequirementFlags(bytes, Version).Should().Equal(new ushort[] { 0 }, "the NuGet cache holds the unpatched original");
        ElfVersionPatcher.RequirementFlags(bytes, "GLIBCXX_3.4.30").Should().NotBeEmpty();

        var patched = (byte[])bytes.Clone();
        ElfVersionPatcher.MarkWeak(patched, Version).Should().Be(ElfPatchResult.Patched);
        var differences = Enumerable.Range(0, bytes.Length).Where(i => bytes[i] != patched[i]).ToList();
        differences.Should().ContainSingle("only the low byte of one vna_flags field changes");
        var at = differences[0];
        (patched[at] ^ bytes[at]).Should().Be(ElfVersionPatcher.WeakFlag);
        ElfVersionPatcher.RequirementFlags(patched, Version).Should().Equal(new ushort[] { ElfVersionPatcher.WeakFlag });
        ElfVersionPatcher.RequirementFlags(patched, "GLIBCXX_3.4.30").Should().Equal(ElfVersionPatcher.RequirementFlags(bytes, "GLIBCXX_3.4.30"));

        // independent reading: binutils sees "Flags: none" before and "Flags: WEAK" after
        var dir = Directory.CreateTempSubdirectory("rootdtd-elf-");
        try
        {
            var copy = Path.Combine(dir.FullName, "libLibTorchSharp.so");
            File.WriteAllBytes(copy, patched);
            if (ReadElfLine(ReadElfVersions(original)) is { } before)
            {
                before.Should().Contain("Flags: none");
                ReadElfLine(ReadElfVersions(copy)).Should().Contain("Flags: WEAK");
            }
        }
        finally
        {
            dir.Delete(true);
        }

        // idempotent
        var twice = (byte[])patched.Clone();
        ElfVersionPatcher.MarkWeak(twice, Version).Should().Be(ElfPatchResult.AlreadyWeak);
        twice.Should().Equal(patched);
        ElfVersionPatcher.MarkWeak(twice, "GLIBCXX_9.9.9").Should().Be(ElfPatchResult.NotRequired);
        twice.Should().Equal(patched);
    }

    [Fact]
    public void NonElfAndTruncatedFilesAreRejected()
    {
        var text = System.Text.Encoding.ASCII.GetBytes(new string('x', 200));
        var act = () => ElfVersionPatcher.MarkWeak(text, Version);
        act.Should().Throw<InvalidDataException>().WithMessage("*ELF*");
        var elf32 = new byte[64];
        new byte[] { 0x7f, (byte)'E', (byte)'L', (byte)'F', 1, 1 }.CopyTo(elf32, 0);
        var act32 = () => ElfVersionPatcher.MarkWeak(elf32, Version);
        act32.Should().Throw<InvalidDataException>().WithMessage("*ELF64 little-endian*");
        var act0 = () => ElfVersionPatcher.MarkWeak(Array.Empty<byte>(), Version);
        act0.Should().Throw<InvalidDataException>();

        if (NuGetOriginal() is { } original)
        {
            // the header survives, the section table does not
            var head = File.ReadAllBytes(original).AsSpan(0, 4096).ToArray();
            var actTruncated = () => ElfVersionPatcher.MarkWeak(head, Version);
            actTruncated.Should().Throw<InvalidDataException>().WithMessage("*Truncated*");
        }
    }

    [Fact]
    public void DefinesVersionReadsTheSystemLibStdCxx()
    {
        if (!OperatingSystem.IsLinux() || SystemLibStdCxx() is not { } lib) return;
        var bytes = File.ReadAllBytes(lib);
        ElfVersionPatcher.DefinesVersion(bytes, "GLIBCXX_3.4").Should().BeTrue();
        ElfVersionPatcher.DefinesVersion(bytes, "GLIBCXX_99.0").Should().BeFalse();
        // compare with a plain byte search for the version string (the build-time target's method)
        var needle = System.Text.Encoding.ASCII.GetBytes(Version + "\0");
        ElfVersionPatcher.DefinesVersion(bytes, Version).Should().Be(bytes.AsSpan().IndexOf(needle) >= 0);
    }

    [Fact]
    public void TheBuildTimeFixMarkedThisOutputCopyWeakWhereLibStdCxxLacksTheVersion()
    {
        if (!OperatingSystem.IsLinux() || SystemLibStdCxx() is not { } lib) return;
        var copy = OutputCopy();
        copy.Should().NotBeNull("the test project's output folder holds libLibTorchSharp.so");
        var flags = ElfVersionPatcher.RequirementFlags(File.ReadAllBytes(copy!), Version);
        if (ElfVersionPatcher.DefinesVersion(File.ReadAllBytes(lib), Version))
            return; // a newer libstdc++: the target leaves the copy alone, and it loads as it is
        flags.Should().NotBeEmpty().And.OnlyContain(f => (f & ElfVersionPatcher.WeakFlag) != 0, $"RootDtd.targets must have patched {copy}");
        ElfVersionPatcher.RequiresStrongly(File.ReadAllBytes(copy!), Version).Should().BeFalse();
    }

    [Fact]
    public void ThePatchedCopyIsWrittenOnceAtomicallyIntoTheCache()
    {
        var original = NuGetOriginal();
        if (original is null) return;
        var bytes = File.ReadAllBytes(original);
        ElfVersionPatcher.MarkWeak(bytes, Version);
        var cache = Directory.CreateTempSubdirectory("rootdtd-native-cache-");
        try
        {
            var path = TorchSharpNative.WritePatchedCopy(bytes, cache.FullName);
            File.ReadAllBytes(path).Should().Equal(bytes);
            var written = File.GetLastWriteTimeUtc(path);
            TorchSharpNative.WritePatchedCopy(bytes, cache.FullName).Should().Be(path);
            File.GetLastWriteTimeUtc(path).Should().Be(written, "an identical copy is reused, not rewritten");
            Directory.GetFiles(cache.FullName, "*", SearchOption.AllDirectories).Should().ContainSingle("no temporary files are left");
            ElfVersionPatcher.RequiresStrongly(File.ReadAllBytes(path), Version).Should().BeFalse();
        }
        finally
        {
            cache.Delete(true);
        }
    }

    [Fact]
    public void EnsureLoadableIsANoOpOnceTorchSharpIsLoaded()
    {
        using var t = torch.zeros(1);
        var result = TorchSharpNative.EnsureLoadable();
        if (OperatingSystem.IsLinux())
            result.Should().BeOneOf(NativeFixResult.AlreadyLoaded, NativeFixResult.NotNeeded, NativeFixResult.Installed);
        else
            result.Should().Be(NativeFixResult.NotLinux);
        TorchSharpNative.EnsureLoadable().Should().Be(result, "later calls return the first decision");
        TorchSharpNative.Description.Should().NotBeNullOrEmpty();
    }
}
