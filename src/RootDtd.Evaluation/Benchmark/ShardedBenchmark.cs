using System.Globalization;
using RootDtd.Evaluation.Sharding;
using static TorchSharp.torch;

namespace RootDtd.Evaluation.Benchmark;

/// <summary>What a benchmark run (<see cref="SyntheticBenchmark.Run"/>, <see cref="FolderBenchmark.Run"/>) produced.</summary>
/// <param name="Result">The result of the shard (for an unsharded run: of the whole dataset).</param>
/// <param name="Files">The report files (null for a shard of several: <c>rootdtd merge</c> writes the report).</param>
/// <param name="StatePath">The state file (null for an unsharded run that was not asked to be resumable: it removes its state once the report is written).</param>
/// <param name="State">The shard's state.</param>
public sealed record BenchmarkRunOutput(BenchmarkResult Result, BenchmarkFiles? Files, string? StatePath, BenchmarkRunState State)
{
    /// <summary>Deconstructs into result and files (the files of a sharded run are null).</summary>
    public void Deconstruct(out BenchmarkResult result, out BenchmarkFiles? files)
    {
        result = Result;
        files = Files;
    }
}

/// <summary>
/// The part of a benchmark run that sharding and resuming share between the synthetic and the image-folder benchmark:
/// where the state file lives, reading it back for <c>--resume</c>, running the shard with an atomic checkpoint after
/// every batch, and writing the report (unsharded) or leaving it to <c>rootdtd merge</c> (one shard of several).
/// </summary>
public static class ShardedBenchmark
{
    /// <summary>The state file of a shard in its output folder: <c>&lt;prefix&gt;.state.json</c> (whole dataset) or <c>&lt;prefix&gt;.shard-I-of-N.state.json</c>.</summary>
    /// <param name="directory">Output folder.</param>
    /// <param name="prefix">Report prefix.</param>
    /// <param name="shard">(index, count).</param>
    public static string StatePath(string directory, string prefix, (int Index, int Count) shard) =>
        Path.Combine(directory, shard.Count == 1 ? prefix + ".state.json" : string.Create(CultureInfo.InvariantCulture, $"{prefix}.shard-{shard.Index}-of-{shard.Count}.state.json"));

    /// <summary>
    /// Where this run keeps its state (every run keeps one, so that an interrupted run can be resumed), and the state to
    /// resume from (null when <paramref name="resume"/> is false or there is none yet). Creates the output folder and
    /// checks that it can be written, before any model runs.
    /// </summary>
    /// <param name="directory">Output folder.</param>
    /// <param name="prefix">Report prefix.</param>
    /// <param name="shard">(index, count).</param>
    /// <param name="resume">Continue from the state file if there is one.</param>
    /// <param name="log">Log, or null.</param>
    /// <exception cref="InvalidDataException">The state file is not a benchmark state.</exception>
    /// <exception cref="IOException">The output folder cannot be created or written (the message names it).</exception>
    public static (string? StatePath, BenchmarkRunState? Resume) OpenState(string directory, string prefix, (int Index, int Count) shard, bool resume, TextWriter? log)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        ArgumentException.ThrowIfNullOrWhiteSpace(prefix);
        var path = StatePath(directory, prefix, shard);
        BenchmarkRunState? state = null;
        if (resume && File.Exists(path))
        {
            state = BenchmarkRunState.FromJson(File.ReadAllText(path), path);
            log?.WriteLine($"resuming from {path}");
        }
        RootDtd.IO.AtomicFile.EnsureWritableFolder(directory);
        return (path, state);
    }

    /// <summary>
    /// Runs one shard on its samples and writes the report (unsharded) or just the state (one shard of several).
    /// </summary>
    /// <param name="runner">The runner (its options are <paramref name="options"/>).</param>
    /// <param name="options">The options the runner was made with (model name, data description … filled in).</param>
    /// <param name="images">The shard's images.</param>
    /// <param name="masks">Their masks.</param>
    /// <param name="labels">Their labels.</param>
    /// <param name="shard">Which slice of the dataset they are.</param>
    /// <param name="statePath">The state file (rewritten atomically after every batch), or null.</param>
    /// <param name="resume">The state to continue from, or null.</param>
    /// <param name="outputDirectory">Report folder.</param>
    /// <param name="prefix">Report prefix.</param>
    /// <param name="log">Log lines (the removal of a previous report), or null.</param>
    /// <param name="removeStateWhenComplete">
    /// Delete the state file once the report is written (an unsharded run that was not asked to be resumable keeps its
    /// state only while it runs, so that an interruption can be resumed; the output's <see cref="BenchmarkRunOutput.StatePath"/> is then null).
    /// </param>
    /// <param name="cancellationToken">
    /// Passed to <see cref="BenchmarkRunner.RunShard"/>. An interrupted run writes no report; it throws
    /// <see cref="BenchmarkInterruptedException"/>, whose state file holds every completed batch (resume from it).
    /// </param>
    /// <exception cref="BenchmarkInterruptedException"><paramref name="cancellationToken"/> was cancelled during the run.</exception>
    public static BenchmarkRunOutput Run(BenchmarkRunner runner, BenchmarkOptions options, Tensor images, Tensor masks, Tensor labels, BenchmarkShard shard,
        string? statePath, BenchmarkRunState? resume, string outputDirectory, string prefix, TextWriter? log = null, bool removeStateWhenComplete = false,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(runner);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(shard);
        cancellationToken.ThrowIfCancellationRequested();
        if (shard.Count == 1)
        {
            // the report of an earlier run must not stay in place looking like the result of this one
            var removed = BenchmarkReport.RemovePrevious(outputDirectory, prefix);
            if (removed.Count > 0) log?.WriteLine($"removed the previous report ({string.Join(", ", removed.Select(Path.GetFileName))}): this run writes a new one when it is complete");
        }
        BenchmarkRunState? saved = resume;
        Action<BenchmarkRunState> checkpoint = s =>
        {
            if (statePath is not null) RootDtd.IO.AtomicFile.WriteAllText(statePath, s.ToJson());
            saved = s;
        };
        BenchmarkRunState state;
        try
        {
            state = runner.RunShard(images, masks, labels, shard, resume, checkpoint, cancellationToken);
        }
        catch (OperationCanceledException e) when (cancellationToken.IsCancellationRequested)
        {
            throw new BenchmarkInterruptedException(statePath, saved is null ? "no batch was complete" : saved.DescribeProgress(), e, cancellationToken);
        }
        if (shard.Count > 1)
        {
            // the shard's own numbers (the report of the whole dataset comes from rootdtd merge)
            var whole = new BenchmarkRunState
            {
                Fingerprint = state.Fingerprint, Shard = BenchmarkShard.Whole(shard.Length), Settings = state.Settings, Height = state.Height, Width = state.Width,
                CleanCorrect = state.CleanCorrect, Skipped = state.Skipped, Gallery = state.Gallery, References = state.References, Methods = state.Methods,
                Ablations = state.Ablations, Seconds = state.Seconds, Complete = true,
            };
            return new BenchmarkRunOutput(BenchmarkResult.FromStates(options, new[] { whole }), null, statePath, state);
        }
        var result = BenchmarkResult.FromStates(options, new[] { state });
        var files = BenchmarkReport.Write(result, outputDirectory, prefix);
        if (removeStateWhenComplete && statePath is not null)
        {
            File.Delete(statePath);
            statePath = null;
        }
        return new BenchmarkRunOutput(result, files, statePath, state);
    }
}
