namespace RootDtd.Evaluation.Benchmark;

/// <summary>
/// A benchmark run was cancelled (<see cref="ShardedBenchmark.Run"/>, <see cref="SyntheticBenchmark.Run"/>,
/// <see cref="FolderBenchmark.Run"/>): no report was written; the state file holds every batch completed before the
/// interruption, and a run with the same settings and <c>Resume</c> continues from it.
/// </summary>
public sealed class BenchmarkInterruptedException : OperationCanceledException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="statePath">The state file holding the completed batches, or null when none is kept.</param>
    /// <param name="kept">What the state file holds, in words (<see cref="Sharding.BenchmarkRunState.DescribeProgress"/>).</param>
    /// <param name="inner">The cancellation.</param>
    /// <param name="token">The cancelled token.</param>
    public BenchmarkInterruptedException(string? statePath, string kept, Exception? inner, CancellationToken token)
        : base($"The benchmark was interrupted; {kept}{(statePath is null ? string.Empty : $" (kept in {statePath})")}.", inner, token)
    {
        StatePath = statePath;
        Kept = kept;
    }

    /// <summary>The state file holding the completed batches, or null when none is kept.</summary>
    public string? StatePath { get; }

    /// <summary>What the state file holds, in words.</summary>
    public string Kept { get; }
}
