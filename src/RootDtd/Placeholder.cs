namespace RootDtd;

/// <summary>Placeholder.</summary>
public static class Placeholder { }
