namespace RootDtd.Imaging;

/// <summary>Placeholder until the first real type lands.</summary>
public static class Placeholder { }
