using System.Buffers.Binary;
using System.Collections;
using System.Globalization;
using TorchSharp;
using RootDtd.Models.WeightsFiles;
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
        IReadOnlyList<string> missing, IReadOnlyList<string> unexpected, IReadOnlyList<WeightShapeMismatch> shapes,
        IReadOnlyList<string> nonFinite)
    {
        NonFiniteKeys = nonFinite;
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

    /// <summary>
    /// Loaded keys whose values contain NaN or ±∞. They were loaded as they are; a model with such weights produces
    /// non-finite outputs, which explanations refuse. Show this to the user as a warning.
    /// </summary>
    public IReadOnlyList<string> NonFiniteKeys { get; }
}

/// <summary>
/// Loads PyTorch-exported <c>state_dict</c>s into TorchSharp modules: the <c>torch.save</c> zip format
/// (<c>.pt</c>/<c>.pth</c>, read with TorchSharp.PyBridge's unpickler, no Python needed) and safetensors. The format is
/// detected from the file's content. A <c>module.</c> (DataParallel) or <c>model.</c> (wrapper) prefix on every key is
/// removed. Keys are compared before anything is copied; a strict load that does not fit throws a
/// <see cref="WeightsMismatchException"/> listing the missing keys, the unexpected keys and the shape mismatches, and
/// leaves the model unchanged. Values are converted to the model's dtype and device.
/// Files are untrusted input: both formats are read by RootDtd's own readers, which execute nothing from the file
/// (a pickle may only build dictionaries and tensors), check every declared length and byte range against the file,
/// refuse duplicate keys and overlapping ranges, and compare the declared keys and shapes with the model before any
/// tensor data is read, so a small file cannot make the loader allocate gigabytes.
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
        var (records, format, lifetime) = ReadIndex(path);
        using (lifetime)
        {
            var shapes = records.ToDictionary(r => r.Key, r => r.Shape, StringComparer.Ordinal);
            var byKey = records.ToDictionary(r => r.Key, StringComparer.Ordinal);
            var plan = Plan(module, shapes, path, strict);
            var needed = plan.Loadable.Select(k => byKey[plan.SourceKey[k]]).ToList();
            CheckStorageBudget(needed, path);
            var values = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            try
            {
                foreach (var key in plan.Loadable) values[key] = ReadRecord(byKey[plan.SourceKey[key]], path, format);
                return Apply(plan, values, path, format);
            }
            finally
            {
                foreach (var t in values.Values) t.Dispose();
            }
        }
    }

    /// <summary>
    /// The declared sizes of the storages the model's tensors are read from must be in proportion to what the model
    /// needs (a view may use part of a storage, e.g. tied or sliced weights): at most 4 times the bytes of the tensors
    /// plus 1 MiB. A file whose small tensor sits on a storage of gigabytes is refused before anything is read.
    /// </summary>
    private static void CheckStorageBudget(IReadOnlyList<TensorRecord> needed, string path)
    {
        long tensorBytes = needed.Sum(r => r.ElementCount * TensorRecord.ElementSize(r.DType));
        var storages = needed.GroupBy(r => r.StorageName).Select(g => g.First()).ToList();
        long storageBytes = storages.Sum(r => r.StorageBytes);
        long budget = 4 * tensorBytes + (1L << 20);
        if (storageBytes <= budget) return;
        var largest = needed.OrderByDescending(r => r.StorageBytes - r.ElementCount * TensorRecord.ElementSize(r.DType)).First();
        throw new ModelWeightsException(path, string.Create(CultureInfo.InvariantCulture,
            $"Cannot read the weights file '{path}': the model's tensors need {tensorBytes} bytes, but the storages they are read from declare {storageBytes} bytes " +
            $"(e.g. '{largest.Key}' {FormatShape(largest.Shape)} is a view of '{largest.StorageName}' with {largest.StorageBytes} bytes). The file is corrupt or hostile; nothing was read."));
    }

    private static Tensor ReadRecord(TensorRecord record, string path, WeightsFormat format)
    {
        try
        {
            return record.Read();
        }
        catch (ModelWeightsException)
        {
            throw;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            throw new ModelWeightsException(path, $"Cannot read '{record.Key}' from the {(format == WeightsFormat.Safetensors ? "safetensors" : "PyTorch")} weights file '{path}': {e.Message}", e);
        }
    }

    /// <summary>The tensor descriptions of a file (nothing read yet) and what keeps the file open while they are read.</summary>
    private static (List<TensorRecord> Records, WeightsFormat Format, IDisposable Lifetime) ReadIndex(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (Directory.Exists(path)) throw new ModelWeightsException(path, $"The weights path '{path}' is a directory; give the .pth/.pt or .safetensors file.");
        if (!File.Exists(path)) throw new FileNotFoundException($"The weights file '{path}' does not exist.", path);
        var format = DetectFormat(path);
        try
        {
            if (format == WeightsFormat.Safetensors) return (SafetensorsReader.ReadIndex(path), format, new NoLifetime());
            var records = TorchZipReader.ReadIndex(path, out var lifetime);
            return (records, format, lifetime);
        }
        catch (ModelWeightsException)
        {
            throw;
        }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            throw new ModelWeightsException(path, $"Cannot read the {(format == WeightsFormat.Safetensors ? "safetensors" : "PyTorch")} weights file '{path}': {e.Message}", e);
        }
    }

    private sealed class NoLifetime : IDisposable
    {
        public void Dispose() { }
    }

    /// <summary>
    /// Loads an in-memory state dict into <paramref name="module"/> with the same checks, prefix handling and
    /// conversions as <see cref="Load"/>. The dictionary's tensors are not disposed.
    /// </summary>
    /// <param name="module">The model.</param>
    /// <param name="stateDict">Key → tensor.</param>
    /// <param name="strict">See <see cref="Load"/>.</param>
    /// <param name="sourceName">Name of the source in messages.</param>
    public static WeightsLoadResult LoadStateDict(nn.Module module, IReadOnlyDictionary<string, Tensor> stateDict, bool strict = true, string sourceName = "state dict")
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(stateDict);
        var plan = Plan(module, stateDict.ToDictionary(kv => kv.Key, kv => kv.Value.shape, StringComparer.Ordinal), sourceName, strict);
        return Apply(plan, plan.Loadable.ToDictionary(k => k, k => stateDict[plan.SourceKey[k]], StringComparer.Ordinal), sourceName, WeightsFormat.Safetensors);
    }

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
        var (records, format, lifetime) = ReadIndex(path);
        using (lifetime)
        {
            var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            try
            {
                foreach (var record in records) result[record.Key] = ReadRecord(record, path, format);
            }
            catch
            {
                foreach (var t in result.Values) t.Dispose();
                throw;
            }
            return (result, format);
        }
    }

    /// <summary>
    /// Writes the model's state dict: <c>.safetensors</c> as safetensors, anything else (<c>.pt</c>, <c>.pth</c>) in
    /// PyTorch's zip format, loadable with <c>model.load_state_dict(torch.load(path))</c>.
    /// </summary>
    /// <param name="module">The model.</param>
    /// <param name="path">The file to create or overwrite; written through <see cref="RootDtd.IO.AtomicFile"/> (complete or absent, never truncated).</param>
    public static void Save(nn.Module module, string path)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) RootDtd.IO.AtomicFile.Write(path, stream => module.save_safetensors(stream, leaveOpen: true));
        else RootDtd.IO.AtomicFile.Write(path, stream => module.save_py(stream, leaveOpen: true));
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
            if (headerLength > 0 && head[8] == (byte)'{') return WeightsFormat.Safetensors; // the reader checks the length
        }
        if (head[0] == 0x80)
            throw new ModelWeightsException(path,
                $"'{path}' is a legacy (pre-1.6, non-zip) torch.save file, which cannot be read. Re-save it in PyTorch with torch.save(model.state_dict(), \"w.pth\") (PyTorch ≥ 1.6) or as safetensors.");
        throw new ModelWeightsException(path,
            $"'{path}' is neither a PyTorch state dict (torch.save zip format) nor a safetensors file. Export the weights in PyTorch with torch.save(model.state_dict(), \"w.pth\") or safetensors.torch.save_file(model.state_dict(), \"w.safetensors\").");
    }

    /// <summary>What a load will do: which model keys get which file keys; computed from shapes alone.</summary>
    private sealed record LoadPlan(string Prefix, List<string> Loadable, Dictionary<string, string> SourceKey, List<string> Missing,
        List<string> Unexpected, List<WeightShapeMismatch> Shapes, Dictionary<string, Tensor> Target);

    private static LoadPlan Plan(nn.Module module, IReadOnlyDictionary<string, long[]> source, string path, bool strict)
    {
        var target = module.state_dict();
        var (renamed, prefix) = StripPrefixes(source, target.Keys);

        var missing = target.Keys.Where(k => !renamed.ContainsKey(k))
            // PyTorch tolerates state dicts from before BatchNorm counted its batches; so do we.
            .Where(k => !k.EndsWith(".num_batches_tracked", StringComparison.Ordinal))
            .ToList();
        var unexpected = renamed.Keys.Where(k => !target.ContainsKey(k)).ToList();
        var shapes = new List<WeightShapeMismatch>();
        var loadable = new List<string>();
        foreach (var (key, shape) in renamed)
        {
            if (!target.TryGetValue(key, out var destination)) continue;
            if (!destination.shape.SequenceEqual(shape)) shapes.Add(new WeightShapeMismatch(key, destination.shape, shape));
            else loadable.Add(key);
        }
        if (strict && (missing.Count > 0 || unexpected.Count > 0 || shapes.Count > 0))
            throw new WeightsMismatchException(path, module.GetName() is { Length: > 0 } n && !n.Contains("::", StringComparison.Ordinal) ? n : module.GetType().Name, missing, unexpected, shapes, prefix);
        return new LoadPlan(prefix, loadable, loadable.ToDictionary(k => k, k => prefix + k, StringComparer.Ordinal), missing, unexpected, shapes, target);
    }

    /// <summary>Copies the planned values (all read already, so a read error cannot leave the model half loaded).</summary>
    private static WeightsLoadResult Apply(LoadPlan plan, IReadOnlyDictionary<string, Tensor> values, string path, WeightsFormat format)
    {
        var nonFinite = new List<string>();
        using (torch.no_grad())
        {
            foreach (var key in plan.Loadable)
            {
                var value = values[key];
                using var scope = torch.NewDisposeScope();
                if (value.is_floating_point() && !value.isfinite().all().item<bool>()) nonFinite.Add(key);
                plan.Target[key].copy_(value);
            }
        }
        return new WeightsLoadResult(path, format, plan.Prefix, plan.Loadable, plan.Missing, plan.Unexpected, plan.Shapes, nonFinite);
    }

    private static (Dictionary<string, T> Renamed, string Prefix) StripPrefixes<T>(IReadOnlyDictionary<string, T> source, ICollection<string> targetKeys)
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
