using System.Globalization;
using System.Text;

namespace RootDtd.Models;

/// <summary>A weights file could not be read (unknown or legacy format, corrupt content, not a state dict).</summary>
public class ModelWeightsException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="path">The weights file.</param>
    /// <param name="message">What went wrong (should name the file).</param>
    /// <param name="inner">The underlying cause, if any.</param>
    public ModelWeightsException(string path, string message, Exception? inner = null) : base(message, inner) => FilePath = path;

    /// <summary>The weights file.</summary>
    public string FilePath { get; }
}

/// <summary>A parameter or buffer whose shape in the file differs from the model's.</summary>
/// <param name="Key">The state-dict key (after prefix stripping), e.g. <c>fc.weight</c>.</param>
/// <param name="Expected">The shape the model has.</param>
/// <param name="Found">The shape in the file.</param>
public sealed record WeightShapeMismatch(string Key, long[] Expected, long[] Found)
{
    /// <summary><c>key: expected [a, b] vs found [c, d]</c>.</summary>
    public override string ToString() => $"{Key}: expected {ModelWeights.FormatShape(Expected)} vs found {ModelWeights.FormatShape(Found)}";
}

/// <summary>
/// A state dict does not fit a model: the message lists every missing key (in the model, not in the file), every
/// unexpected key (in the file, not in the model) and every shape mismatch (key: expected vs found shape).
/// </summary>
public sealed class WeightsMismatchException : ModelWeightsException
{
    /// <summary>Creates the exception; the message is built from the lists.</summary>
    /// <param name="path">The weights file.</param>
    /// <param name="modelName">A name for the model in the message (e.g. its type).</param>
    /// <param name="missingKeys">Keys of the model that the file lacks.</param>
    /// <param name="unexpectedKeys">Keys of the file that the model lacks.</param>
    /// <param name="shapeMismatches">Keys present in both with different shapes.</param>
    /// <param name="strippedPrefix">The prefix removed from the file's keys (e.g. <c>module.</c>), or empty.</param>
    public WeightsMismatchException(string path, string modelName, IReadOnlyList<string> missingKeys, IReadOnlyList<string> unexpectedKeys,
        IReadOnlyList<WeightShapeMismatch> shapeMismatches, string strippedPrefix = "")
        : base(path, BuildMessage(path, modelName, missingKeys, unexpectedKeys, shapeMismatches, strippedPrefix))
    {
        MissingKeys = missingKeys;
        UnexpectedKeys = unexpectedKeys;
        ShapeMismatches = shapeMismatches;
    }

    /// <summary>Keys of the model that the file lacks.</summary>
    public IReadOnlyList<string> MissingKeys { get; }

    /// <summary>Keys of the file that the model lacks.</summary>
    public IReadOnlyList<string> UnexpectedKeys { get; }

    /// <summary>Keys present in both with different shapes.</summary>
    public IReadOnlyList<WeightShapeMismatch> ShapeMismatches { get; }

    /// <summary>How many entries of each list the message shows.</summary>
    public const int ListedPerKind = 40;

    private static string BuildMessage(string path, string modelName, IReadOnlyList<string> missing, IReadOnlyList<string> unexpected,
        IReadOnlyList<WeightShapeMismatch> shapes, string strippedPrefix)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture,
            $"The weights in '{path}' do not fit the model ({modelName}): {missing.Count} missing key(s), {unexpected.Count} unexpected key(s), {shapes.Count} shape mismatch(es).");
        if (strippedPrefix.Length > 0) sb.Append(CultureInfo.InvariantCulture, $" (The prefix '{strippedPrefix}' was removed from the file's keys.)");
        void List<T>(string title, IReadOnlyList<T> items)
        {
            if (items.Count == 0) return;
            sb.AppendLine().Append(title);
            foreach (var item in items.Take(ListedPerKind)) sb.AppendLine().Append("  ").Append(item);
            if (items.Count > ListedPerKind) sb.AppendLine().Append(CultureInfo.InvariantCulture, $"  … and {items.Count - ListedPerKind} more");
        }
        List("Missing keys (in the model, not in the file):", missing);
        List("Unexpected keys (in the file, not in the model):", unexpected);
        List("Shape mismatches (key: expected = model vs found = file):", shapes);
        if (shapes.Count > 0 && shapes.All(s => s.Expected.Length > 0 && s.Found.Length > 0 && s.Expected[0] != s.Found[0]) && missing.Count == 0 && unexpected.Count == 0)
            sb.AppendLine().Append("Hint: when only the last layer differs in its first dimension, the number of classes probably differs from the model's.");
        return sb.ToString();
    }
}
