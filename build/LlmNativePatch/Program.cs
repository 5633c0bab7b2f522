// LlmNativePatch <libLibTorchSharp.so>...
//
// TorchSharp 0.107's libLibTorchSharp.so declares a need for GLIBCXX_3.4.32 (GCC 13) although the only symbol behind
// it, _ZSt21ios_base_library_initv, is referenced by no relocation. Debian 12 and Ubuntu 22.04 ship GLIBCXX 3.4.30, so
// the loader refuses the library ("TypeInitializationException" from TorchSharp.torch). Marking that one
// Elf64_Vernaux entry VER_FLG_WEAK (0x2) turns the hard requirement into a soft one. Applied only where the system
// libstdc++ lacks the version, and only to the copy in a build or publish output, never to the NuGet cache: the
// patched file is written under a temporary name and renamed over the copy (a new inode, so a hard link into the
// package cache is never written through). Failures are printed in MSBuild's canonical error format.
using System.Buffers.Binary;
using System.Text;

if (args.Length == 0)
{
    Console.Error.WriteLine("usage: LlmNativePatch <libLibTorchSharp.so>...");
    return 2;
}

int status = 0;
foreach (var library in args)
    status = Math.Max(status, GlibcxxPatch.Run(library));
return status;

static class GlibcxxPatch
{
    const string NeededVersion = "GLIBCXX_3.4.32";
    const uint ShtGnuVerneed = 0x6ffffffe;
    const ushort VerFlgWeak = 0x2;

    public static int Run(string library)
    {
        if (!File.Exists(library))
        {
            Console.WriteLine($"LlmNativePatch: {library} not found; nothing to patch.");
            return 0;
        }
        var system = FindSystemLibStdCxx();
        if (system is not null && FileContains(system, NeededVersion))
        {
            Console.WriteLine($"LlmNativePatch: {system} provides {NeededVersion}; {Path.GetFileName(library)} left as is.");
            return 0;
        }

        try
        {
            return Patch(library, system);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentOutOfRangeException or OverflowException or IndexOutOfRangeException)
        {
            Console.WriteLine($"{library} : error LLMNATIVE1: cannot mark {NeededVersion} weak in '{library}' ({e.GetType().Name}: {e.Message}); TorchSharp will not load here because the system libstdc++ ({system ?? "not found"}) lacks {NeededVersion}. Install libstdc++ from GCC 13 or later, or set LlmPatchTorchNative=false to skip this step.");
            return 1;
        }
    }

    static int Patch(string library, string? system)
    {
        var bytes = File.ReadAllBytes(library);
        switch (MarkWeak(bytes, NeededVersion))
        {
            case PatchResult.AlreadyWeak:
                Console.WriteLine($"LlmNativePatch: {NeededVersion} already weak in {library}.");
                return 0;
            case PatchResult.NotNeeded:
                Console.WriteLine($"LlmNativePatch: {library} does not require {NeededVersion}.");
                return 0;
            case PatchResult.Patched:
                var tmp = library + ".tmp";
                File.WriteAllBytes(tmp, bytes);
                File.Move(tmp, library, overwrite: true); // a new inode: a hard link into a package cache is never written through
                Console.WriteLine($"LlmNativePatch: marked {NeededVersion} weak in {library} (system libstdc++: {system ?? "not found"}).");
                return 0;
            default:
                Console.WriteLine($"{library} : error LLMNATIVE2: cannot mark {NeededVersion} weak in '{library}': it is not a 64-bit little-endian ELF file, and the system libstdc++ ({system ?? "not found"}) lacks {NeededVersion}, so TorchSharp will not load here. Install libstdc++ from GCC 13 or later, or set LlmPatchTorchNative=false to skip this step.");
                return 1;
        }
    }

    enum PatchResult { Patched, AlreadyWeak, NotNeeded, NotElf }

    /// <summary>Sets VER_FLG_WEAK on the Elf64_Vernaux entry named <paramref name="version"/>.</summary>
    static PatchResult MarkWeak(byte[] elf, string version)
    {
        var span = elf.AsSpan();
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F'
            || elf[4] != 2 /* ELFCLASS64 */ || elf[5] != 1 /* little endian */)
        {
            return PatchResult.NotElf;
        }

        ulong shoff = BinaryPrimitives.ReadUInt64LittleEndian(span[0x28..]);
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(span[0x3A..]);
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(span[0x3C..]);
        for (int i = 0; i < shnum; i++)
        {
            var sh = span[(int)(shoff + (ulong)(i * shentsize))..];
            if (BinaryPrimitives.ReadUInt32LittleEndian(sh[4..]) != ShtGnuVerneed)
                continue;
            int offset = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(sh[24..]));
            int link = (int)BinaryPrimitives.ReadUInt32LittleEndian(sh[40..]);   // index of .dynstr
            int count = (int)BinaryPrimitives.ReadUInt32LittleEndian(sh[44..]);  // number of Elf64_Verneed
            var strSh = span[(int)(shoff + (ulong)(link * shentsize))..];
            int strOffset = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(strSh[24..]));

            int vn = offset;
            for (int n = 0; n < count; n++)
            {
                int auxCount = BinaryPrimitives.ReadUInt16LittleEndian(span[(vn + 2)..]);
                int vna = vn + (int)BinaryPrimitives.ReadUInt32LittleEndian(span[(vn + 8)..]);
                for (int a = 0; a < auxCount; a++)
                {
                    int name = strOffset + (int)BinaryPrimitives.ReadUInt32LittleEndian(span[(vna + 8)..]);
                    if (ReadCString(span[name..]) == version)
                    {
                        var flags = span[(vna + 4)..];
                        ushort value = BinaryPrimitives.ReadUInt16LittleEndian(flags);
                        if ((value & VerFlgWeak) != 0)
                            return PatchResult.AlreadyWeak;
                        BinaryPrimitives.WriteUInt16LittleEndian(flags, (ushort)(value | VerFlgWeak));
                        return PatchResult.Patched;
                    }
                    vna += (int)BinaryPrimitives.ReadUInt32LittleEndian(span[(vna + 12)..]);
                }
                vn += (int)BinaryPrimitives.ReadUInt32LittleEndian(span[(vn + 12)..]);
            }
        }
        return PatchResult.NotNeeded;
    }

    static string ReadCString(ReadOnlySpan<byte> s) => Encoding.ASCII.GetString(s[..s.IndexOf((byte)0)]);

    static string? FindSystemLibStdCxx()
    {
        string[] candidates =
        [
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib/aarch64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
        ];
        return candidates.FirstOrDefault(File.Exists);
    }

    static bool FileContains(string path, string text)
    {
        var needle = Encoding.ASCII.GetBytes(text + "\0");
        return File.ReadAllBytes(path).AsSpan().IndexOf(needle) >= 0;
    }
}
