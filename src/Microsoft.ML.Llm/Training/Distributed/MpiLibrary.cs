using System.Reflection;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Llm;

/// <summary>
/// Points MPI.NET at the system's MPI. MPI.NET 1.4.0 imports <c>msmpi.dll</c> (MS-MPI); MS-MPI derives from MPICH and
/// shares its handle ABI (integer handles, the same constants), so on Linux a <see cref="NativeLibrary.SetDllImportResolver"/>
/// on MPI.NET's assembly maps <c>msmpi*</c> to MPICH's <c>libmpich.so.12</c>. Open MPI has another ABI and is not supported.
/// </summary>
internal static class MpiLibrary
{
    /// <summary>Names the MPI library is looked for under, in order, on Linux and macOS: MPICH, then the MPICH-ABI
    /// libraries (Intel MPI, MVAPICH), then Debian's path. The environment variable <see cref="OverrideVariable"/>
    /// names another file.</summary>
    public static readonly string[] UnixCandidates =
        ["libmpich.so.12", "libmpi.so.12", "/usr/lib/x86_64-linux-gnu/libmpich.so.12", "/usr/lib/aarch64-linux-gnu/libmpich.so.12", "libmpich.dylib"];

    /// <summary>An explicit path to an MPICH-ABI library, tried before <see cref="UnixCandidates"/>.</summary>
    public const string OverrideVariable = "LLM_MPI_LIBRARY";

    private static readonly Lock Gate = new();
    private static bool _installed;
    private static IntPtr _handle;

    /// <summary>Installs the resolver (once per process), before MPI.NET's first native call. On Windows MPI.NET
    /// finds MS-MPI's <c>msmpi.dll</c> itself.</summary>
    public static void EnsureResolver()
    {
        lock (Gate)
        {
            if (_installed)
                return;
            if (!OperatingSystem.IsWindows())
            {
                _handle = Load(Candidates());
                NativeLibrary.SetDllImportResolver(typeof(MPI.Communicator).Assembly, Resolve);
            }

            _installed = true;
        }
    }

    /// <summary>The names tried: <see cref="OverrideVariable"/> when set, then <see cref="UnixCandidates"/>.</summary>
    public static IReadOnlyList<string> Candidates() =>
        Environment.GetEnvironmentVariable(OverrideVariable) is { Length: > 0 } path ? [path, .. UnixCandidates] : UnixCandidates;

    /// <summary>The name the MPI library was loaded under, once loaded.</summary>
    public static string? LoadedLibrary { get; private set; }

    /// <summary>Loads the first of <paramref name="candidates"/> that loads, or throws naming every one tried and how
    /// to install MPICH.</summary>
    public static IntPtr Load(IReadOnlyList<string> candidates)
    {
        foreach (var name in candidates)
        {
            if (NativeLibrary.TryLoad(name, out var handle))
            {
                LoadedLibrary = name;
                return handle;
            }
        }

        throw new DllNotFoundException(
            $"Data-parallel training needs an MPI library with MPICH's ABI, and none was found: looked for {string.Join(", ", candidates.Select(c => $"'{c}'"))}. " +
            $"Install MPICH (Debian/Ubuntu: apt-get install mpich libmpich-dev; Fedora: dnf install mpich-devel), or set {OverrideVariable} to the path of libmpich.so.12. " +
            "Open MPI is not supported (another ABI); on Windows install MS-MPI.");
    }

    private static IntPtr Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath) =>
        libraryName.StartsWith("msmpi", StringComparison.OrdinalIgnoreCase) ? _handle : IntPtr.Zero;
}
