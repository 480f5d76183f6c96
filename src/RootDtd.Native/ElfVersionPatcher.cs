using System.Buffers.Binary;
using System.Text;

namespace RootDtd.Native;

/// <summary>What <see cref="ElfVersionPatcher.MarkWeak"/> found and did.</summary>
public enum ElfPatchResult
{
    /// <summary>The file does not require the version: nothing changed.</summary>
    NotRequired,

    /// <summary>The requirement was strong and is now marked weak.</summary>
    Patched,

    /// <summary>The requirement was already weak: nothing changed.</summary>
    AlreadyWeak,
}

/// <summary>
/// Reads and edits the symbol-version tables of ELF64 little-endian shared libraries (x86-64, aarch64):
/// the version requirements (<c>.gnu.version_r</c>, SHT_GNU_verneed) and definitions (<c>.gnu.version_d</c>, SHT_GNU_verdef).
/// <see cref="MarkWeak"/> sets <c>VER_FLG_WEAK</c> (0x2) on a version requirement, which makes the dynamic loader accept
/// the library when the providing library lacks that version (symbols that do need it still fail to bind, lazily).
/// Exactly the two bytes of the affected <c>vna_flags</c> fields can change; everything else stays byte-identical.
/// </summary>
public static class ElfVersionPatcher
{
    /// <summary>VER_FLG_WEAK of an <c>Elf64_Vernaux</c> entry.</summary>
    public const ushort WeakFlag = 0x2;

    private const uint ShtGnuVerdef = 0x6ffffffd;
    private const uint ShtGnuVerneed = 0x6ffffffe;

    /// <summary>Marks every requirement of <paramref name="version"/> (e.g. <c>GLIBCXX_3.4.32</c>) weak, in place.</summary>
    /// <exception cref="InvalidDataException">The bytes are not a well-formed ELF64 little-endian file.</exception>
    public static ElfPatchResult MarkWeak(Span<byte> elf, string version)
    {
        ArgumentException.ThrowIfNullOrEmpty(version);
        var offsets = RequirementFlagOffsets(elf, version);
        if (offsets.Count == 0) return ElfPatchResult.NotRequired;
        var changed = false;
        foreach (var o in offsets)
        {
            var flags = BinaryPrimitives.ReadUInt16LittleEndian(elf[o..]);
            if ((flags & WeakFlag) != 0) continue;
            BinaryPrimitives.WriteUInt16LittleEndian(elf[o..], (ushort)(flags | WeakFlag));
            changed = true;
        }
        return changed ? ElfPatchResult.Patched : ElfPatchResult.AlreadyWeak;
    }

    /// <summary>
    /// The <c>vna_flags</c> of each requirement of <paramref name="version"/> (usually one); empty when the file does
    /// not require it.
    /// </summary>
    /// <exception cref="InvalidDataException">The bytes are not a well-formed ELF64 little-endian file.</exception>
    public static IReadOnlyList<ushort> RequirementFlags(ReadOnlySpan<byte> elf, string version)
    {
        var offsets = RequirementFlagOffsets(elf, version);
        var flags = new ushort[offsets.Count];
        for (var i = 0; i < flags.Length; i++) flags[i] = BinaryPrimitives.ReadUInt16LittleEndian(elf[offsets[i]..]);
        return flags;
    }

    /// <summary>True when the file requires <paramref name="version"/> and at least one such requirement is not weak.</summary>
    public static bool RequiresStrongly(ReadOnlySpan<byte> elf, string version) =>
        RequirementFlags(elf, version).Any(f => (f & WeakFlag) == 0);

    /// <summary>True when the library defines (provides) <paramref name="version"/> (e.g. libstdc++ and <c>GLIBCXX_3.4.32</c>).</summary>
    /// <exception cref="InvalidDataException">The bytes are not a well-formed ELF64 little-endian file.</exception>
    public static bool DefinesVersion(ReadOnlySpan<byte> elf, string version)
    {
        ArgumentException.ThrowIfNullOrEmpty(version);
        var header = ReadHeader(elf);
        for (var s = 0; s < header.Count; s++)
        {
            var sh = header.SectionOffset(s);
            if (U32(elf, sh + 4) != ShtGnuVerdef) continue;
            var strtab = StringTable(elf, header, (int)U32(elf, sh + 0x28));
            long vd = (long)U64(elf, sh + 0x18);
            var count = U32(elf, sh + 0x2C);
            for (var n = 0u; n < count; n++)
            {
                var auxCount = U16(elf, vd + 6);
                var aux = vd + U32(elf, vd + 12);
                for (var a = 0; a < auxCount; a++)
                {
                    if (NameEquals(elf, strtab + U32(elf, aux), version)) return true;
                    var nextAux = U32(elf, aux + 4);
                    if (nextAux == 0) break;
                    aux += nextAux;
                }
                var next = U32(elf, vd + 16);
                if (next == 0) break;
                vd += next;
            }
        }
        return false;
    }

    private static List<int> RequirementFlagOffsets(ReadOnlySpan<byte> elf, string version)
    {
        ArgumentException.ThrowIfNullOrEmpty(version);
        var header = ReadHeader(elf);
        var result = new List<int>();
        for (var s = 0; s < header.Count; s++)
        {
            var sh = header.SectionOffset(s);
            if (U32(elf, sh + 4) != ShtGnuVerneed) continue;
            var strtab = StringTable(elf, header, (int)U32(elf, sh + 0x28));
            long vn = (long)U64(elf, sh + 0x18);
            var count = U32(elf, sh + 0x2C);
            for (var n = 0u; n < count; n++)
            {
                var auxCount = U16(elf, vn + 2);
                var aux = vn + U32(elf, vn + 8);
                for (var a = 0; a < auxCount; a++)
                {
                    // Elf64_Vernaux: vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32
                    if (NameEquals(elf, strtab + U32(elf, aux + 8), version))
                    {
                        Check(elf, aux + 4, 2);
                        result.Add((int)(aux + 4));
                    }
                    var nextAux = U32(elf, aux + 12);
                    if (nextAux == 0) break;
                    aux += nextAux;
                }
                var next = U32(elf, vn + 12);
                if (next == 0) break;
                vn += next;
            }
        }
        return result;
    }

    private readonly record struct Header(long SectionTable, int EntrySize, int Count)
    {
        public long SectionOffset(int index) => SectionTable + (long)index * EntrySize;
    }

    private static Header ReadHeader(ReadOnlySpan<byte> elf)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("Not an ELF file (missing the \\x7fELF magic).");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException($"Only ELF64 little-endian files are supported (class {elf[4]}, data encoding {elf[5]}).");
        var shoff = (long)U64(elf, 0x28);
        var entsize = U16(elf, 0x3A);
        var count = U16(elf, 0x3C);
        if (count > 0 && entsize < 64) throw new InvalidDataException($"Bad ELF section header size {entsize}.");
        Check(elf, shoff, (long)count * entsize);
        return new Header(shoff, entsize, count);
    }

    private static long StringTable(ReadOnlySpan<byte> elf, Header header, int index)
    {
        if (index <= 0 || index >= header.Count) throw new InvalidDataException($"Bad ELF string table index {index}.");
        return (long)U64(elf, header.SectionOffset(index) + 0x18);
    }

    private static bool NameEquals(ReadOnlySpan<byte> elf, long offset, string name)
    {
        Check(elf, offset, name.Length + 1);
        var bytes = elf.Slice((int)offset, name.Length);
        return elf[(int)offset + name.Length] == 0 && Encoding.ASCII.GetString(bytes) == name;
    }

    private static void Check(ReadOnlySpan<byte> elf, long offset, long length)
    {
        if (offset < 0 || length < 0 || offset + length > elf.Length)
            throw new InvalidDataException($"Truncated or malformed ELF file: {length} bytes at offset {offset} lie outside the {elf.Length}-byte file.");
    }

    private static ushort U16(ReadOnlySpan<byte> elf, long offset)
    {
        Check(elf, offset, 2);
        return BinaryPrimitives.ReadUInt16LittleEndian(elf[(int)offset..]);
    }

    private static uint U32(ReadOnlySpan<byte> elf, long offset)
    {
        Check(elf, offset, 4);
        return BinaryPrimitives.ReadUInt32LittleEndian(elf[(int)offset..]);
    }

    private static ulong U64(ReadOnlySpan<byte> elf, long offset)
    {
        Check(elf, offset, 8);
        return BinaryPrimitives.ReadUInt64LittleEndian(elf[(int)offset..]);
    }
}
