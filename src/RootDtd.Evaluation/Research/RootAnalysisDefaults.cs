namespace RootDtd.Evaluation.Research;

/// <summary>The fixed choices of the root-inference research (issue 14; docs/research/).</summary>
public static class RootAnalysisDefaults
{
    /// <summary>
    /// Generator seed of the validation stream on which the analysis is measured and the variants are selected: used
    /// nowhere else (training 1000–1002, the benchmark's test stream 4242, the demo 7).
    /// </summary>
    public const int ValidationSeed = 5151;

    /// <summary>Generator seed of the test stream the selected variant is reported on (the benchmark's).</summary>
    public const int TestSeed = 4242;
}
