using FluentAssertions;
using Xunit;
using Xunit.Abstractions;

namespace RootDtd.Cli.Tests.Hostile;

/// <summary>
/// Small hostile files (generated here) are refused with a clear error, or loaded, within a memory and time budget:
/// each file is loaded by a fresh child process (this assembly run as a program, see <see cref="ChildProbe"/>) that
/// reports its peak resident memory, so one file's allocations cannot hide behind another's.
/// </summary>
public sealed class HostileFileTests : IDisposable
{
    /// <summary>Peak resident memory of the whole child process (runtime, libraries, the file) allowed per file.</summary>
    public const long PeakBudgetBytes = 300L * 1024 * 1024;

    /// <summary>Time allowed for loading (or refusing) one file, after the process has started.</summary>
    public const double SecondsBudget = 5;

    private static readonly TimeSpan ChildTimeout = TimeSpan.FromSeconds(120);
    private readonly string _dir = Directory.CreateTempSubdirectory("rootdtd-hostile-").FullName;
    private readonly ITestOutputHelper _output;

    public HostileFileTests(ITestOutputHelper output) => _output = output;

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    /// <summary>name → (file content, expected error fragment or null when the file must load).</summary>
    private static readonly Dictionary<string, (Func<byte[]> Make, string? Refusal)> Images = new()
    {
        ["strip-16384x1.png"] = (() => HostileCorpus.Png(16384, 1), "aspect ratio of 16384:1"),
        ["strip-16384x2.png"] = (() => HostileCorpus.Png(16384, 2), "aspect ratio of 8192:1"),
        ["panorama-16384x256.png"] = (() => HostileCorpus.Png(16384, 256), null),
        ["ztxt-200MB.png"] = (() => HostileCorpus.Png(8, 8, HostileCorpus.CompressedText(200L << 20)), null),
        ["itxt-200MB.png"] = (() => HostileCorpus.Png(8, 8, HostileCorpus.CompressedInternationalText(200L << 20)), null),
        ["header-16384x16384.png"] = (() => HostileCorpus.Png(16384, 16384), "more than the limit of 40000000"),
        ["header-65000x65000.jpg"] = (() => HostileCorpus.JpegHeaderOnly(65000, 65000), "largest accepted side is 16384"),
        ["largest-6000x6000.png"] = (() => HostileCorpus.Png(6000, 6000), null),
    };

    public static IEnumerable<object[]> ImageNames => Images.Keys.Select(k => new object[] { k });

    [Theory]
    [MemberData(nameof(ImageNames))]
    public void Hostile_image_is_refused_or_loaded_within_budget(string name)
    {
        var (make, refusal) = Images[name];
        var path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, make());
        var outcome = ChildProbe.Run(ChildTimeout, "probe", "image", path);
        _output.WriteLine($"{name} ({new FileInfo(path).Length} bytes): loaded={outcome.Loaded}, peak {outcome.PeakBytes / 1048576.0:F0} MB " +
                          $"(baseline {outcome.BaselineBytes / 1048576.0:F0} MB), {outcome.Seconds:F2} s {outcome.Error}");
        if (refusal is null) outcome.Loaded.Should().BeTrue($"{name} is a valid image: {outcome.Error}");
        else
        {
            outcome.Loaded.Should().BeFalse($"{name} must be refused");
            outcome.Error.Should().StartWith("ImageLoadException").And.Contain(path).And.Contain(refusal);
        }
        outcome.PeakBytes.Should().BeLessThan(PeakBudgetBytes, $"{name} must not cost more than 300 MB of memory");
        outcome.Seconds.Should().BeLessThan(SecondsBudget, $"{name} must be handled within 5 s");
    }

    [Fact]
    public void A_model_nested_50000_deep_is_refused_not_a_stack_overflow()
    {
        var outcome = ChildProbe.Run(ChildTimeout, "probe", "nesting", "50000");
        _output.WriteLine($"nesting 50000: loaded={outcome.Loaded}, {outcome.Seconds:F2} s {outcome.Error}");
        outcome.Loaded.Should().BeFalse();
        outcome.Error.Should().StartWith("ArgumentException").And.Contain("50001 levels deep").And.Contain("at most 256");
        outcome.Seconds.Should().BeLessThan(SecondsBudget);
    }
}
