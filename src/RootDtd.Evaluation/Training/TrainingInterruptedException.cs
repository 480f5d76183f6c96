namespace RootDtd.Evaluation.Training;

/// <summary>
/// A training was cancelled (<see cref="SyntheticTrainer.Train"/>, <see cref="SyntheticTrainer.TrainAndSave"/>): it
/// stopped after the optimiser step in progress. It carries the model as it was then (from <c>Train</c>; the catcher
/// owns and disposes it) or the file it was written to (from <c>TrainAndSave</c>), and the report of that state.
/// </summary>
public sealed class TrainingInterruptedException : OperationCanceledException
{
    /// <summary>An interruption of <see cref="SyntheticTrainer.Train"/>: the model and its report.</summary>
    /// <param name="result">The model after the last completed step and its report.</param>
    /// <param name="token">The cancelled token.</param>
    public TrainingInterruptedException(TrainingResult result, CancellationToken token)
        : base($"The training was interrupted: {result?.Report.StopReason}.", null, token)
    {
        Result = result ?? throw new ArgumentNullException(nameof(result));
        Report = result.Report;
    }

    /// <summary>An interruption of <see cref="SyntheticTrainer.TrainAndSave"/>: the weights were written to <paramref name="weightsPath"/>.</summary>
    /// <param name="report">The report of the weights written.</param>
    /// <param name="weightsPath">Where the weights of the interrupted training were written.</param>
    /// <param name="inner">The interruption of the training.</param>
    public TrainingInterruptedException(TrainingReport report, string weightsPath, TrainingInterruptedException inner)
        : base($"The training was interrupted: {report?.StopReason}; its weights were written to {weightsPath}.", inner, inner?.CancellationToken ?? default)
    {
        Report = report ?? throw new ArgumentNullException(nameof(report));
        WeightsPath = weightsPath;
    }

    /// <summary>The model and its report (from <see cref="SyntheticTrainer.Train"/>), or null once they were written to <see cref="WeightsPath"/>.</summary>
    public TrainingResult? Result { get; }

    /// <summary>The report of the interrupted training (its <see cref="TrainingReport.StopReason"/> says where it stopped).</summary>
    public TrainingReport Report { get; }

    /// <summary>The weights file written by <see cref="SyntheticTrainer.TrainAndSave"/>, or null.</summary>
    public string? WeightsPath { get; }
}
