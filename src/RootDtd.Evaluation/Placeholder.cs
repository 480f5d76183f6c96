namespace RootDtd.Evaluation;

/// <summary>Placeholder until the first real type lands.</summary>
public static class Placeholder { }
