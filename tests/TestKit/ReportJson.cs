using System.Text.Json.Nodes;

namespace RootDtd.TestKit;

/// <summary>Benchmark report JSON as the shard/merge tests compare it (one copy, linked into the test projects that need it).</summary>
internal static class ReportJson
{
    /// <summary>The report JSON without the measured times (ms/img and seconds of the cost table), which no two runs share.</summary>
    public static string WithoutTimes(string json)
    {
        var root = JsonNode.Parse(json)!;
        foreach (var table in root["tables"]!.AsArray())
            foreach (var row in table!["rows"]!.AsArray())
            {
                var values = row!["values"]!.AsObject();
                values.Remove("ms_img");
                values.Remove("seconds");
            }
        return root.ToJsonString();
    }
}
