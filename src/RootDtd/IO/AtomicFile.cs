namespace RootDtd.IO;

/// <summary>
/// Writes files so that a reader never sees a partial one: the content goes to a temporary file in the same folder,
/// is flushed to disk, then renamed over the final name (an atomic replace on the same volume). If writing fails or
/// is interrupted, the temporary file is removed and any previous file of that name is left as it was.
/// </summary>
public static class AtomicFile
{
    /// <summary>The suffix of temporary files (<c>.name.&lt;random&gt;.partial</c>); a crash can leave one behind.</summary>
    public const string PartialSuffix = ".partial";

    /// <summary>Writes a file through <paramref name="write"/>, then renames it into place.</summary>
    /// <param name="path">The final file path.</param>
    /// <param name="write">Writes the whole content to the stream it is given.</param>
    /// <exception cref="IOException">The folder cannot be written or the disk is full (the message names the file).</exception>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(write);
        var full = Path.GetFullPath(path);
        var folder = Path.GetDirectoryName(full) ?? throw new ArgumentException($"'{path}' has no folder.", nameof(path));
        var temp = Path.Combine(folder, "." + Path.GetFileName(full) + "." + Guid.NewGuid().ToString("N")[..8] + PartialSuffix);
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch (Exception e)
        {
            TryDelete(temp);
            if (e is IOException or UnauthorizedAccessException)
                throw new IOException($"Cannot write '{full}': {e.Message}", e);
            throw;
        }
    }

    /// <summary>Writes bytes atomically (see <see cref="Write"/>).</summary>
    /// <param name="path">The final file path.</param>
    /// <param name="bytes">The content.</param>
    public static void WriteAllBytes(string path, byte[] bytes)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        Write(path, s => s.Write(bytes));
    }

    /// <summary>Writes UTF-8 text (no byte-order mark) atomically (see <see cref="Write"/>).</summary>
    /// <param name="path">The final file path.</param>
    /// <param name="text">The content.</param>
    public static void WriteAllText(string path, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        Write(path, s =>
        {
            using var writer = new StreamWriter(s, new System.Text.UTF8Encoding(false), leaveOpen: true);
            writer.Write(text);
        });
    }

    /// <summary>
    /// Creates <paramref name="folder"/> if needed and checks that a file can be created in it (by creating and
    /// removing a probe file), so a command can refuse an unwritable output folder before doing any work.
    /// </summary>
    /// <param name="folder">The output folder.</param>
    /// <exception cref="IOException">The folder cannot be created or written; the message names it and the reason.</exception>
    public static void EnsureWritableFolder(string folder)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        var full = Path.GetFullPath(folder);
        if (File.Exists(full)) throw new IOException($"The output folder '{full}' is a file.");
        var probe = Path.Combine(full, ".rootdtd-write-test." + Guid.NewGuid().ToString("N")[..8] + PartialSuffix);
        try
        {
            Directory.CreateDirectory(full);
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose)) { }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(probe);
            throw new IOException($"The output folder '{full}' is not writable: {e.Message}", e);
        }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
