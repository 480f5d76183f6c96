using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;
using System.Security.Cryptography;

namespace RootDtd.Native;

/// <summary>What <see cref="TorchSharpNative.EnsureLoadable"/> found and did.</summary>
public enum NativeFixResult
{
    /// <summary>Not Linux: nothing to do.</summary>
    NotLinux,

    /// <summary>TorchSharp's native library loads as it is (the system libstdc++ provides the version, or the copy was already patched at build time).</summary>
    NotNeeded,

    /// <summary>libLibTorchSharp.so was already loaded in this process (too late to change anything, and nothing to change).</summary>
    AlreadyLoaded,

    /// <summary>libLibTorchSharp.so was not found next to TorchSharp or in the NuGet cache; TorchSharp's own loader decides.</summary>
    LibraryNotFound,

    /// <summary>A patched copy was written to (or found in) the cache and will be used when TorchSharp loads its native library.</summary>
    Installed,
}

/// <summary>
/// Runtime fallback for Linux hosts whose libstdc++ is older than the one TorchSharp 0.107's <c>libLibTorchSharp.so</c>
/// was linked against (Debian 12, Ubuntu 22.04: no <c>GLIBCXX_3.4.32</c>), where no build step patched the native
/// library — notebooks (<c>#r "nuget: ..."</c>), scripts, hosts that load the package from the NuGet cache.
/// Call <see cref="EnsureLoadable"/> once, before the first use of TorchSharp (the first notebook cell, the start of
/// <c>Main</c>): when the library would fail to load, it writes a copy with that version requirement marked weak
/// into a per-user cache folder (<c>$XDG_CACHE_HOME/rootdtd-torchsharp-native/&lt;hash&gt;/</c>, default
/// <c>~/.cache</c>), loads libc10/libtorch_cpu/libtorch by path, and resolves <c>LibTorchSharp</c> to the copy through
/// <see cref="AssemblyLoadContext.ResolvingUnmanagedDll"/> (raised only after normal probing failed). It never changes
/// the NuGet cache or the output folder, and does nothing where the library loads normally. Applications built with
/// the RootDtd package are already patched at build time (see docs/torchsharp-on-older-linux.md).
/// </summary>
public static class TorchSharpNative
{
    /// <summary>The libstdc++ symbol version that TorchSharp 0.107.0's native library requires (for one unused symbol).</summary>
    public const string RequiredVersion = "GLIBCXX_3.4.32";

    private const string LibraryFile = "libLibTorchSharp.so";
    private static readonly object Gate = new();
    private static NativeFixResult? _result;
    private static IntPtr _handle;

    /// <summary>The patched copy in use, when <see cref="EnsureLoadable"/> returned <see cref="NativeFixResult.Installed"/>.</summary>
    public static string? PatchedLibraryPath { get; private set; }

    /// <summary>The libLibTorchSharp.so that was inspected (null before the first call or when none was found).</summary>
    public static string? OriginalLibraryPath { get; private set; }

    /// <summary>A one-line account of the last decision, for logs and bug reports.</summary>
    public static string Description { get; private set; } = "EnsureLoadable has not run.";

    /// <summary>
    /// Makes TorchSharp's native library loadable on this host if it is not (see the class remarks). Idempotent and
    /// thread-safe; later calls return the first result. Must run before the first TorchSharp call, because a failed
    /// native load is permanent for the process.
    /// </summary>
    public static NativeFixResult EnsureLoadable()
    {
        lock (Gate)
        {
            return _result ??= Decide();
        }
    }

    private static NativeFixResult Decide()
    {
        if (!OperatingSystem.IsLinux())
        {
            Description = "Not Linux: nothing to do.";
            return NativeFixResult.NotLinux;
        }
        if (LoadedLibraries().Any(p => Path.GetFileName(p) == LibraryFile))
        {
            Description = $"{LibraryFile} is already loaded in this process.";
            return NativeFixResult.AlreadyLoaded;
        }
        // typeof(...).Assembly does not run TorchSharp's static constructor (which loads the natives).
        var torchSharp = typeof(TorchSharp.torch).Assembly;
        var original = FindLibrary(torchSharp);
        OriginalLibraryPath = original;
        if (original is null)
        {
            Description = $"{LibraryFile} was not found next to {torchSharp.Location} or in the NuGet cache.";
            return NativeFixResult.LibraryNotFound;
        }
        var bytes = File.ReadAllBytes(original);
        if (!ElfVersionPatcher.RequiresStrongly(bytes, RequiredVersion))
        {
            Description = $"{original} does not require {RequiredVersion} (or marks it weak already): nothing to do.";
            return NativeFixResult.NotNeeded;
        }
        var stdcxx = SystemLibStdCxx();
        if (stdcxx is null || ElfVersionPatcher.DefinesVersion(File.ReadAllBytes(stdcxx), RequiredVersion))
        {
            Description = stdcxx is null
                ? "No libstdc++.so.6 found to inspect: left TorchSharp's loader alone."
                : $"{stdcxx} provides {RequiredVersion}: nothing to do.";
            return NativeFixResult.NotNeeded;
        }
        ElfVersionPatcher.MarkWeak(bytes, RequiredVersion);
        var patched = WritePatchedCopy(bytes, CacheRoot());
        PreloadDependencies(Path.GetDirectoryName(original)!);
        PatchedLibraryPath = patched;
        AssemblyLoadContext.Default.ResolvingUnmanagedDll += Resolve;
        Description = $"{stdcxx} lacks {RequiredVersion}: LibTorchSharp resolves to the patched copy {patched}.";
        return NativeFixResult.Installed;
    }

    private static IntPtr Resolve(Assembly assembly, string name)
    {
        if (name is not ("LibTorchSharp" or "libLibTorchSharp" or LibraryFile) || PatchedLibraryPath is null) return IntPtr.Zero;
        lock (Gate)
        {
            if (_handle == IntPtr.Zero && !NativeLibrary.TryLoad(PatchedLibraryPath, out _handle)) _handle = IntPtr.Zero;
            return _handle;
        }
    }

    /// <summary>
    /// Writes <paramref name="patchedBytes"/> to <c>&lt;cacheRoot&gt;/&lt;sha256 prefix&gt;/libLibTorchSharp.so</c> unless an identical
    /// file is there (atomically: temporary file + rename, so concurrent processes never see a partial file) and returns its path.
    /// </summary>
    internal static string WritePatchedCopy(byte[] patchedBytes, string cacheRoot)
    {
        var hash = Convert.ToHexString(SHA256.HashData(patchedBytes))[..16].ToLowerInvariant();
        var dir = Path.Combine(cacheRoot, hash);
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, LibraryFile);
        if (File.Exists(path) && new FileInfo(path).Length == patchedBytes.Length
            && SHA256.HashData(File.ReadAllBytes(path)).AsSpan().SequenceEqual(SHA256.HashData(patchedBytes)))
            return path;
        var tmp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        File.WriteAllBytes(tmp, patchedBytes);
        File.Move(tmp, path, overwrite: true);
        return path;
    }

    /// <summary>The per-user cache folder of patched copies.</summary>
    internal static string CacheRoot()
    {
        var cache = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x
            ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(cache, "rootdtd-torchsharp-native");
    }

    /// <summary>Where libLibTorchSharp.so may be: the app folder (build output), next to TorchSharp.dll, the NuGet package.</summary>
    internal static string? FindLibrary(Assembly torchSharp)
    {
        var asmDir = Path.GetDirectoryName(torchSharp.Location);
        var dirs = new List<string> { AppContext.BaseDirectory, Path.Combine(AppContext.BaseDirectory, "runtimes", Rid(), "native") };
        if (!string.IsNullOrEmpty(asmDir))
        {
            dirs.Add(asmDir);
            dirs.Add(Path.Combine(asmDir, "runtimes", Rid(), "native"));
            // NuGet cache layout: torchsharp/<v>/lib/net8.0/TorchSharp.dll and torchsharp/<v>/runtimes/<rid>/native/
            dirs.Add(Path.GetFullPath(Path.Combine(asmDir, "..", "..", "runtimes", Rid(), "native")));
        }
        return dirs.Select(d => Path.Combine(d, LibraryFile)).FirstOrDefault(File.Exists);
    }

    /// <summary>
    /// The copy lives outside the natives folder, so its $ORIGIN RUNPATH finds nothing: load libc10, libtorch_cpu and
    /// libtorch by path first (eagerly — loading them inside the resolving callback is too late for some hosts), from
    /// the original's folder or, in the NuGet-cache layout, from the libtorch-cpu-&lt;rid&gt; package.
    /// </summary>
    private static void PreloadDependencies(string nativeDir)
    {
        var dirs = new List<string> { nativeDir };
        var packages = Path.GetFullPath(Path.Combine(nativeDir, "..", "..", "..", "..", ".."));
        var backend = Path.Combine(packages, "libtorch-cpu-" + Rid());
        if (Directory.Exists(backend))
            dirs.AddRange(Directory.GetDirectories(backend).OrderByDescending(d => d, StringComparer.Ordinal)
                .Select(d => Path.Combine(d, "runtimes", Rid(), "native")).Where(Directory.Exists));
        foreach (var lib in new[] { "libc10.so", "libtorch_cpu.so", "libtorch.so" })
            foreach (var d in dirs)
            {
                var p = Path.Combine(d, lib);
                if (File.Exists(p) && NativeLibrary.TryLoad(p, out _)) break;
            }
    }

    /// <summary>The libstdc++ this process uses (already mapped, e.g. by the runtime) or the system's.</summary>
    private static string? SystemLibStdCxx()
    {
        var loaded = LoadedLibraries().FirstOrDefault(p => Path.GetFileName(p).StartsWith("libstdc++.so", StringComparison.Ordinal));
        if (loaded is not null && File.Exists(loaded)) return loaded;
        var arch = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? "aarch64" : "x86_64";
        return new[]
        {
            $"/usr/lib/{arch}-linux-gnu/libstdc++.so.6", $"/lib/{arch}-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
        }.FirstOrDefault(File.Exists);
    }

    private static IEnumerable<string> LoadedLibraries()
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines("/proc/self/maps");
        }
        catch (IOException)
        {
            return Array.Empty<string>();
        }
        catch (UnauthorizedAccessException)
        {
            return Array.Empty<string>();
        }
        return lines.Select(l => l.IndexOf('/') is var i and >= 0 ? l[i..].Trim() : "").Where(p => p.Length > 0).Distinct();
    }

    private static string Rid() => RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? "linux-arm64" : "linux-x64";
}
