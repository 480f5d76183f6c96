using FluentAssertions;
using RootDtd.IO;
using Xunit;

namespace RootDtd.Tests.IO;

public sealed class AtomicFileTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("rootdtd-atomic-").FullName;

    public void Dispose()
    {
        foreach (var f in Directory.EnumerateFiles(_dir, "*", SearchOption.AllDirectories)) File.SetAttributes(f, FileAttributes.Normal);
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    [Fact]
    public void A_failed_write_leaves_the_previous_file_and_no_temporary()
    {
        var path = Path.Combine(_dir, "report.json");
        File.WriteAllText(path, "old");
        FluentActions.Invoking(() => AtomicFile.Write(path, s =>
        {
            s.Write("new, half"u8);
            throw new OperationCanceledException("interrupted");
        })).Should().Throw<OperationCanceledException>();
        File.ReadAllText(path).Should().Be("old");
        Directory.GetFiles(_dir).Should().ContainSingle();
    }

    [Fact]
    public void A_write_replaces_the_file_completely()
    {
        var path = Path.Combine(_dir, "a.txt");
        File.WriteAllText(path, "a much longer previous content");
        AtomicFile.WriteAllText(path, "short");
        File.ReadAllText(path).Should().Be("short");
        AtomicFile.WriteAllBytes(path, new byte[] { 1, 2, 3 });
        File.ReadAllBytes(path).Should().Equal(1, 2, 3);
        Directory.GetFiles(_dir).Should().ContainSingle();
    }

    [Fact]
    public void A_folder_that_cannot_be_created_is_refused_with_its_name()
    {
        var file = Path.Combine(_dir, "plain-file");
        File.WriteAllText(file, "x");
        var below = Path.Combine(file, "out");
        FluentActions.Invoking(() => AtomicFile.EnsureWritableFolder(below)).Should().Throw<IOException>().WithMessage($"*{below}*not writable*");
        FluentActions.Invoking(() => AtomicFile.WriteAllText(Path.Combine(below, "r.json"), "{}")).Should().Throw<IOException>().WithMessage("*Cannot write*r.json*");
    }

    [Fact]
    public void A_read_only_folder_is_refused_with_its_name()
    {
        if (OperatingSystem.IsWindows() || Environment.UserName == "root") return; // root ignores permission bits; see the test above
        var folder = Path.Combine(_dir, "locked");
        Directory.CreateDirectory(folder);
        File.SetUnixFileMode(folder, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        try
        {
            FluentActions.Invoking(() => AtomicFile.EnsureWritableFolder(folder)).Should().Throw<IOException>().WithMessage($"*{folder}*not writable*");
        }
        finally
        {
            File.SetUnixFileMode(folder, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
    }

    [Fact]
    public void A_folder_that_is_a_file_is_refused_and_a_missing_one_is_created()
    {
        var file = Path.Combine(_dir, "file");
        File.WriteAllText(file, "x");
        FluentActions.Invoking(() => AtomicFile.EnsureWritableFolder(file)).Should().Throw<IOException>().WithMessage("*is a file*");
        var fresh = Path.Combine(_dir, "new", "deeper");
        AtomicFile.EnsureWritableFolder(fresh);
        Directory.Exists(fresh).Should().BeTrue();
        Directory.GetFiles(fresh).Should().BeEmpty();
    }
}
