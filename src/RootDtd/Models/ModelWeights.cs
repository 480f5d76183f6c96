using System.Buffers.Binary;
using System.Collections;
using System.Globalization;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace RootDtd.Models;

/// <summary>File formats of <see cref="ModelWeights"/>.</summary>
public enum WeightsFormat
{
    /// <summary>PyTorch's <c>torch.save(model.state_dict(), path)</c> zip format (PyTorch ≥ 1.6), usually <c>.pt</c>/<c>.pth</c>.</summary>
    PyTorch,

    /// <summary>Hugging Face safetensors (<c>safetensors.torch.save_file(model.state_dict(), path)</c>).</summary>
    Safetensors,
}

/// <summary>What <see cref="ModelWeights.Load"/> did.</summary>
public sealed class WeightsLoadResult
{
    internal WeightsLoadResult(string path, WeightsFormat format, string strippedPrefix, IReadOnlyList<string> loaded,
        IReadOnlyList<string> missing, IReadOnlyList<string> unexpected, IReadOnlyList<WeightShapeMismatch> shapes)
    {
        FilePath = path;
        Format = format;
        StrippedPrefix = strippedPrefix;
        LoadedKeys = loaded;
        MissingKeys = missing;
        UnexpectedKeys = unexpected;
        ShapeMismatches = shapes;
    }

    /// <summary>The weights file.</summary>
    public string FilePath { get; }

    /// <summary>The format the file was read as (detected from its content).</summary>
    public WeightsFormat Format { get; }

    /// <summary>The prefix removed from every key of the file (<c>module.</c>, <c>model.</c>, both, or empty).</summary>
    public string StrippedPrefix { get; }

    /// <summary>Keys copied into the model.</summary>
    public IReadOnlyList<string> LoadedKeys { get; }

    /// <summary>Keys of the model not in the file (always empty after a strict load).</summary>
    public IReadOnlyList<string> MissingKeys { get; }

    /// <summary>Keys of the file not in the model (always empty after a strict load).</summary>
    public IReadOnlyList<string> UnexpectedKeys { get; }

    /// <summary>Keys whose shapes differ; they were not loaded (always empty after a strict load).</summary>
    public IReadOnlyList<WeightShapeMismatch> ShapeMismatches { get; }
}

/// <summary>
/// Loads PyTorch-exported <c>state_dict</c>s into TorchSharp modules: the <c>torch.save</c> zip format
/// (<c>.pt</c>/<c>.pth</c>, read with TorchSharp.PyBridge's unpickler, no Python needed) and safetensors. The format is
/// detected from the file's content. A <c>module.</c> (DataParallel) or <c>model.</c> (wrapper) prefix on every key is
/// removed. Keys are compared before anything is copied; a strict load that does not fit throws a
/// <see cref="WeightsMismatchException"/> listing the missing keys, the unexpected keys and the shape mismatches, and
/// leaves the model unchanged. Values are converted to the model's dtype and device.
/// </summary>
public static class ModelWeights
{
    private static readonly string[] Prefixes = { "module.", "model." };

    /// <summary>Loads a state dict file into <paramref name="module"/>.</summary>
    /// <param name="module">The model (any device and dtype).</param>
    /// <param name="path">A <c>.pt</c>/<c>.pth</c> (PyTorch zip) or <c>.safetensors</c> file.</param>
    /// <param name="strict">
    /// True (default): every key must be present on both sides with equal shapes, otherwise nothing is loaded and a
    /// <see cref="WeightsMismatchException"/> is thrown. False: the fitting entries are loaded and the rest reported in the result.
    /// </param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="WeightsMismatchException">Strict load of a file that does not fit (the message lists the keys).</exception>
    /// <exception cref="ModelWeightsException">The file is not a readable state dict.</exception>
    public static WeightsLoadResult Load(nn.Module module, string path, bool strict = true)
    {
        ArgumentNullException.ThrowIfNull(module);
        var (source, format) = ReadStateDict(path);
        try
        {
            return LoadStateDict(module, source, path, format, strict);
        }
        finally
        {
            foreach (var t in source.Values) t.Dispose();
        }
    }

    /// <summary>
    /// Loads an in-memory state dict into <paramref name="module"/> with the same checks, prefix handling and
    /// conversions as <see cref="Load"/>. The dictionary's tensors are not disposed.
    /// </summary>
    /// <param name="module">The model.</param>
    /// <param name="stateDict">Key → tensor.</param>
    /// <param name="strict">See <see cref="Load"/>.</param>
    /// <param name="sourceName">Name of the source in messages.</param>
    public static WeightsLoadResult LoadStateDict(nn.Module module, IReadOnlyDictionary<string, Tensor> stateDict, bool strict = true, string sourceName = "state dict") =>
        LoadStateDict(module, stateDict, sourceName, WeightsFormat.Safetensors, strict);

    /// <summary>
    /// Reads a state dict file (format detected from the content) into CPU tensors; the caller disposes them.
    /// A checkpoint dictionary whose tensors sit under <c>state_dict</c>, <c>model_state_dict</c> or <c>model</c> is unwrapped.
    /// </summary>
    /// <param name="path">The file.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="ModelWeightsException">The file is not a readable state dict.</exception>
    public static (Dictionary<string, Tensor> StateDict, WeightsFormat Format) ReadStateDict(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (Directory.Exists(path)) throw new ModelWeightsException(path, $"The weights path '{path}' is a directory; give the .pth/.pt or .safetensors file.");
        if (!File.Exists(path)) throw new FileNotFoundException($"The weights file '{path}' does not exist.", path);
        var format = DetectFormat(path);
        try
        {
            if (format == WeightsFormat.Safetensors) return (Safetensors.LoadStateDict(path), format);
            var table = PyTorchUnpickler.UnpickleStateDict(path);
            return (ToTensorDictionary(table, path), format);
        }
        catch (ModelWeightsException)
        {
            throw;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new ModelWeightsException(path, $"Cannot read the {(format == WeightsFormat.Safetensors ? "safetensors" : "PyTorch")} weights file '{path}': {e.Message}", e);
        }
    }

    /// <summary>
    /// Writes the model's state dict: <c>.safetensors</c> as safetensors, anything else (<c>.pt</c>, <c>.pth</c>) in
    /// PyTorch's zip format, loadable with <c>model.load_state_dict(torch.load(path))</c>.
    /// </summary>
    /// <param name="module">The model.</param>
    /// <param name="path">The file to create or overwrite.</param>
    public static void Save(nn.Module module, string path)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) module.save_safetensors(path);
        else module.save_py(path);
    }

    /// <summary>Formats a shape like PyTorch's lists: <c>[64, 3, 7, 7]</c>.</summary>
    /// <param name="shape">The shape.</param>
    public static string FormatShape(IReadOnlyList<long> shape) => "[" + string.Join(", ", shape.Select(s => s.ToString(CultureInfo.InvariantCulture))) + "]";

    private static WeightsFormat DetectFormat(string path)
    {
        Span<byte> head = stackalloc byte[16];
        long length;
        int read;
        try
        {
            using var stream = File.OpenRead(path);
            length = stream.Length;
            read = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelWeightsException(path, $"Cannot read the weights file '{path}': {e.Message}", e);
        }
        head = head[..read];
        if (read == 0) throw new ModelWeightsException(path, $"The weights file '{path}' is empty.");
        if (read >= 4 && head[0] == (byte)'P' && head[1] == (byte)'K' && head[2] == 3 && head[3] == 4) return WeightsFormat.PyTorch;
        if (read >= 9)
        {
            var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(head);
            if (headerLength > 0 && headerLength <= (ulong)(length - 8) && head[8] == (byte)'{') return WeightsFormat.Safetensors;
        }
        if (head[0] == 0x80)
            throw new ModelWeightsException(path,
                $"'{path}' is a legacy (pre-1.6, non-zip) torch.save file, which cannot be read. Re-save it in PyTorch with torch.save(model.state_dict(), \"w.pth\") (PyTorch ≥ 1.6) or as safetensors.");
        throw new ModelWeightsException(path,
            $"'{path}' is neither a PyTorch state dict (torch.save zip format) nor a safetensors file. Export the weights in PyTorch with torch.save(model.state_dict(), \"w.pth\") or safetensors.torch.save_file(model.state_dict(), \"w.safetensors\").");
    }

    private static Dictionary<string, Tensor> ToTensorDictionary(Hashtable table, string path)
    {
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var nested = new Dictionary<string, IDictionary>(StringComparer.Ordinal);
        foreach (DictionaryEntry entry in table)
        {
            var key = entry.Key?.ToString() ?? string.Empty;
            if (entry.Value is Tensor t) tensors[key] = t;
            else if (entry.Value is IDictionary d) nested[key] = d;
        }
        if (tensors.Count == 0)
        {
            foreach (var name in new[] { "state_dict", "model_state_dict", "model" })
            {
                if (!nested.TryGetValue(name, out var inner)) continue;
                foreach (DictionaryEntry entry in inner)
                    if (entry.Value is Tensor t) tensors[entry.Key?.ToString() ?? string.Empty] = t;
                if (tensors.Count > 0) return tensors;
            }
            throw new ModelWeightsException(path, $"'{path}' contains no tensors at its top level{(nested.Count > 0 ? $" (it holds the dictionaries {string.Join(", ", nested.Keys)})" : string.Empty)}; save model.state_dict() itself.");
        }
        return tensors;
    }

    private static WeightsLoadResult LoadStateDict(nn.Module module, IReadOnlyDictionary<string, Tensor> source, string path, WeightsFormat format, bool strict)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(source);
        var target = module.state_dict();
        var (renamed, prefix) = StripPrefixes(source, target.Keys);

        var missing = target.Keys.Where(k => !renamed.ContainsKey(k))
            // PyTorch tolerates state dicts from before BatchNorm counted its batches; so do we.
            .Where(k => !k.EndsWith(".num_batches_tracked", StringComparison.Ordinal))
            .ToList();
        var unexpected = renamed.Keys.Where(k => !target.ContainsKey(k)).ToList();
        var shapes = new List<WeightShapeMismatch>();
        var loadable = new List<string>();
        foreach (var (key, tensor) in renamed)
        {
            if (!target.TryGetValue(key, out var destination)) continue;
            if (!destination.shape.SequenceEqual(tensor.shape)) shapes.Add(new WeightShapeMismatch(key, destination.shape, tensor.shape));
            else loadable.Add(key);
        }
        if (strict && (missing.Count > 0 || unexpected.Count > 0 || shapes.Count > 0))
            throw new WeightsMismatchException(path, module.GetName() is { Length: > 0 } n ? n : module.GetType().Name, missing, unexpected, shapes, prefix);

        using (torch.no_grad())
        {
            foreach (var key in loadable) target[key].copy_(renamed[key]);
        }
        return new WeightsLoadResult(path, format, prefix, loadable, missing, unexpected, shapes);
    }

    private static (Dictionary<string, Tensor> Renamed, string Prefix) StripPrefixes(IReadOnlyDictionary<string, Tensor> source, ICollection<string> targetKeys)
    {
        var current = source.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        var stripped = string.Empty;
        var changed = true;
        while (changed && current.Count > 0)
        {
            changed = false;
            foreach (var p in Prefixes)
            {
                if (!current.Keys.All(k => k.StartsWith(p, StringComparison.Ordinal)) || targetKeys.Any(k => k.StartsWith(p, StringComparison.Ordinal))) continue;
                current = current.ToDictionary(kv => kv.Key[p.Length..], kv => kv.Value, StringComparer.Ordinal);
                stripped += p;
                changed = true;
            }
        }
        return (current, stripped);
    }
}
