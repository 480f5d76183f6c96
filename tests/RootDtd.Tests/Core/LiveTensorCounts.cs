using FluentAssertions;
using TorchSharp;

namespace RootDtd.Tests.Core;

/// <summary>The memory tests' one loop: explain the same batch again and again and watch the thread's live tensor count.</summary>
internal static class LiveTensorCounts
{
    /// <summary>
    /// Explains <paramref name="input"/> <paramref name="calls"/> times (each explanation checked for its heatmap shape
    /// and disposed) and returns the thread's live tensor count after each call. Warm-up is the caller's.
    /// </summary>
    public static List<long> AfterRepeatedExplanations(Explainer explainer, torch.Tensor input, int calls, params long[] heatmapShape)
    {
        var counts = new List<long>();
        for (var i = 0; i < calls; i++)
        {
            using (var e = explainer.Explain(input)) e.Heatmap.shape.Should().Equal(heatmapShape);
            counts.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        }
        return counts;
    }

    /// <summary>Asserts that every count is the same: nothing an explanation made outlives it.</summary>
    public static void ShouldNotDrift(this IReadOnlyCollection<long> counts) =>
        counts.Distinct().Should().ContainSingle($"the live tensor count must not drift: {string.Join(", ", counts.Distinct())}");
}
