using FluentAssertions;
using Xunit;

namespace RootDtd.Cli.Tests;

/// <summary><c>rootdtd compare REPORT.json</c> on hand-made report files (no model runs).</summary>
[Collection("cli")]
public sealed class CompareCommandTests
{
    private readonly CliFixture _f;

    public CompareCommandTests(CliFixture fixture) => _f = fixture;

    private static string Row(string method, string spec, string kind, double[] mass, double[] aucPlus) =>
        $"{{\"method\": \"{method}\", \"spec\": \"{spec}\", \"kind\": \"{kind}\", \"samples\": {mass.Length}, \"columns\": [\"mass\", \"auc_plus_coarse\"], " +
        $"\"values\": [[{string.Join(",", mass.Select(v => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture)))}],[{string.Join(",", aucPlus.Select(v => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture)))}]]}}";

    private string Report(params string[] rows)
    {
        var path = Path.Combine(_f.Root, "report-" + Guid.NewGuid().ToString("N")[..8] + ".json");
        File.WriteAllText(path, "{\"model\": \"m\", \"samples\": 4, \"tables\": [], \"curves\": [], \"perImage\": {\"rows\": [" + string.Join(",", rows) + "]}}");
        return path;
    }

    [Fact]
    public void Compare_prints_intervals_and_paired_differences_to_baselines_given_by_label_or_spec()
    {
        var path = Report(
            Row("zplus", "zplus", "method", new[] { 0.5, 0.6, 0.7, 0.8 }, new[] { 20.0, 30, 25, 35 }),
            Row("V1", "root-gated", "method", new[] { 0.5, 0.6, 0.7, 0.8 }, new[] { 20.0, 30, 25, 35 }),
            Row("random (reference)", "random", "reference", new[] { 0.1, 0.2, 0.1, 0.2 }, new[] { 40.0, 40, 40, 40 }));
        var r = CliFixture.Run("compare", path, "--baseline", "zplus", "--baseline", "root-gated", "--resamples", "200");
        r.ExitCode.Should().Be(0, r.ToString());
        r.Out.Should().Contain("95 % bootstrap intervals and paired differences").And.Contain("200 resamples of 4 images")
            .And.Contain("| zplus | 0.650 [").And.Contain("Paired difference to `zplus`").And.Contain("Paired difference to `V1`")
            .And.NotContain("random (reference)", "reference rows are not methods");
        // V1 has the same per-image values as zplus: its paired difference is exactly 0 with a zero-width interval
        r.Out.Should().Contain("| V1 | 0.000 [0.000, 0.000] | 0.0 [0.0, 0.0] |");

        var file = Path.Combine(_f.NewOutputDir() + ".md");
        var w = CliFixture.Run("compare", path, "--metrics", "auc_plus_coarse", "--out", file);
        w.ExitCode.Should().Be(0, w.ToString());
        File.ReadAllText(file).Should().Contain("| method | AUC+ coarse ↓ |").And.NotContain("mass |");
    }

    [Fact]
    public void Compare_names_the_problem_with_unknown_methods_metrics_and_reports_without_per_image_values()
    {
        var path = Report(Row("zplus", "zplus", "method", new[] { 0.5, 0.6 }, new[] { 20.0, 30 }));
        var unknown = CliFixture.Run("compare", path, "--baseline", "epsilon");
        unknown.ExitCode.Should().Be(2);
        unknown.Error.Should().Contain("--baseline: the report has no method 'epsilon'; its methods with per-image values are zplus");
        var metric = CliFixture.Run("compare", path, "--metrics", "mIoU2");
        metric.ExitCode.Should().Be(2);
        metric.Error.Should().Contain("Unknown metric 'mIoU2'");
        var old = Path.Combine(_f.Root, "old.json");
        File.WriteAllText(old, "{\"model\": \"m\", \"tables\": [], \"curves\": []}");
        var none = CliFixture.Run("compare", old);
        none.ExitCode.Should().Be(1);
        none.Error.Should().Contain("has no per-image values").And.Contain("Run 'rootdtd evaluate' again");
        CliFixture.Run("compare", Path.Combine(_f.Root, "missing.json")).Error.Should().Contain("does not exist");
    }
}
