using System.Text.Json;
using FluentAssertions;
using Xunit;

namespace RootDtd.Cli.Tests;

[Collection("cli")]
public sealed class ScaleOutCommandTests
{
    private readonly CliFixture _f;

    public ScaleOutCommandTests(CliFixture fixture) => _f = fixture;

    private static string[] Evaluate(string outDir, params string[] extra) =>
        new[] { "evaluate", "--samples", "6", "--batch", "2", "--methods", "gradient", "--protocols", "perturbation,localisation", "--gallery", "2", "--out", outDir }
            .Concat(extra).ToArray();

    [Fact]
    public void Sharded_evaluate_then_merge_writes_the_unsharded_report()
    {
        var single = _f.NewOutputDir();
        var r = CliFixture.Run(Evaluate(single));
        r.ExitCode.Should().Be(0, r.ToString());

        var shards = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            var dir = _f.NewOutputDir();
            shards.Add(dir);
            var s = CliFixture.Run(Evaluate(dir, "--shard", $"{i}/3"));
            s.ExitCode.Should().Be(0, s.ToString());
            s.Out.Should().Contain($"shard {i}/3").And.Contain("state:").And.Contain("rootdtd merge");
            File.Exists(Path.Combine(dir, $"synthetic-resnet.shard-{i}-of-3.state.json")).Should().BeTrue();
            File.Exists(Path.Combine(dir, "synthetic-resnet.md")).Should().BeFalse("a shard writes its state, the merge writes the report");
        }

        var merged = _f.NewOutputDir();
        var m = CliFixture.Run(new[] { "merge" }.Concat(shards).Concat(new[] { "--out", merged }).ToArray());
        m.ExitCode.Should().Be(0, m.ToString());
        m.Out.Should().Contain("merged 3 shard(s), 6 samples");
        static string Tables(string dir)
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "synthetic-resnet.json")));
            // Table 1 (perturbation) and Table 2 (localisation): no measured times in them
            return doc.RootElement.GetProperty("tables")[0].GetRawText() + doc.RootElement.GetProperty("tables")[1].GetRawText() + doc.RootElement.GetProperty("curves").GetRawText();
        }
        Tables(merged).Should().Be(Tables(single));
        Tables(single).Should().Contain("\"id\": \"auc_plus_coarse\"").And.Contain("\"auc_plus_coarse\": ");
        File.Exists(Path.Combine(merged, "synthetic-resnet-gallery.png")).Should().BeTrue();

        var missing = CliFixture.Run("merge", shards[0], shards[2], "--out", _f.NewOutputDir());
        missing.ExitCode.Should().Be(1);
        missing.Error.Should().Contain("Samples 2 … 3 are in no shard");
    }

    [Fact]
    public void Bad_shard_values_and_folders_are_usage_errors()
    {
        var r = CliFixture.Run(Evaluate(_f.NewOutputDir(), "--shard", "3/3"));
        r.ExitCode.Should().Be(2);
        r.Error.Should().Contain("--shard must be i/n");
        var m = CliFixture.Run("merge", Path.Combine(_f.Root, "nowhere"), "--out", _f.NewOutputDir());
        m.ExitCode.Should().Be(2);
        m.Error.Should().Contain("neither a folder nor a state file");
        var d = CliFixture.Run(Evaluate(_f.NewOutputDir(), "--models-dir", Path.Combine(_f.Root, "no-models")));
        d.ExitCode.Should().Be(2);
        d.Error.Should().Contain("The --models-dir folder").And.Contain("does not exist");
    }

    [Fact]
    public void Explain_writes_a_run_summary_with_every_image()
    {
        var dir = _f.NewOutputDir();
        var r = _f.Explain(dir, _f.ImageDir, "--method", "epsilon");
        r.ExitCode.Should().Be(0, r.ToString());
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "index.json")));
        var root = doc.RootElement;
        root.GetProperty("method").GetString().Should().Be("epsilon");
        var entries = root.GetProperty("entries").EnumerateArray().ToList();
        entries.Should().HaveCount(root.GetProperty("explained").GetInt32()).And.HaveCountGreaterThan(1);
        var html = File.ReadAllText(Path.Combine(dir, "index.html"));
        foreach (var e in entries)
        {
            var files = e.GetProperty("files");
            File.Exists(Path.Combine(dir, files.GetProperty("heatmap").GetString()!)).Should().BeTrue();
            html.Should().Contain(Uri.EscapeDataString(files.GetProperty("overlay").GetString()!));
            e.GetProperty("conservation_expected").GetString().Should().Be("approximately");
        }
        html.Should().NotContain("base64", "the index links the PNGs instead of embedding them");
    }
}
