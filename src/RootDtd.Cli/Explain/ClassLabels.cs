namespace RootDtd.Cli.Explain;

/// <summary>Class names from a labels file: one name per line, line i = class i (trailing empty lines are ignored).</summary>
public sealed class ClassLabels
{
    private readonly string[] _names;

    /// <summary>Creates labels from names.</summary>
    public ClassLabels(IEnumerable<string> names) => _names = names.ToArray();

    /// <summary>Number of names.</summary>
    public int Count => _names.Length;

    /// <summary>The name of a class, or <c>null</c> when the index is outside the file or the line is empty.</summary>
    public string? this[long index] => index >= 0 && index < _names.Length && _names[index].Length > 0 ? _names[index] : null;

    /// <summary>The class whose name equals <paramref name="name"/> (case-insensitive), or −1.</summary>
    public int IndexOf(string name) => Array.FindIndex(_names, n => string.Equals(n, name.Trim(), StringComparison.OrdinalIgnoreCase));

    /// <summary>Reads a labels file.</summary>
    /// <exception cref="UsageException">The file is missing or has no names.</exception>
    public static ClassLabels Load(string path)
    {
        if (!File.Exists(path)) throw new UsageException($"The labels file '{path}' does not exist.");
        var lines = File.ReadAllLines(path).Select(l => l.Trim()).ToList();
        while (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        if (lines.Count == 0) throw new UsageException($"The labels file '{path}' contains no class names (expected one name per line).");
        return new ClassLabels(lines);
    }
}
