using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Runs libtorch on one thread while decoding steps are in flight, and gives the torch thread count to
/// <see cref="DecodeLinear"/> instead. (<see cref="DecodeAttention"/> asks libtorch's count, so during a step it keeps
/// every product: libtorch's kernel would run it on one thread too.)
/// </summary>
/// <remarks>
/// A decoding step's libtorch operations are tiny (a few rows), yet several of them open an OpenMP region, after which
/// libgomp's workers spin on the other cores for a while. DecodeLinear's second thread then waits for a core. With two
/// torch threads GPT-2 124M's 8-row step gained nothing from the second core (47 against 44 ms), while with libtorch on
/// one thread during the steps the 8-prompt decode took 1.70-1.77 s instead of 2.71-3.05 s (benchmarks/README.md,
/// "libtorch on one thread during decoding steps"). Prefill keeps every thread: its GEMMs have hundreds of rows.
/// <c>set_num_threads</c> is process-wide (MKL's count is global), so the switch is reference-counted: the first step
/// in flight lowers it, the last restores it; other torch work running at that moment also runs on one thread.
/// </remarks>
internal static class DecodeThreads
{
    private static int saved;   // the thread count before the first step in flight lowered it; 0 when none is

    private static readonly SharedSetting OneThread = new(
        () =>
        {
            int threads = get_num_threads();
            if (threads <= 1)
                return false;                          // one thread already: nothing to switch
            Volatile.Write(ref saved, threads);
            set_num_threads(1);
            return true;
        },
        () =>
        {
            set_num_threads(saved);
            Volatile.Write(ref saved, 0);
        });

    /// <summary>The torch thread count for the decoding kernels: the count set before the steps began, or the current one.</summary>
    public static int Count
    {
        get
        {
            int count = Volatile.Read(ref saved);
            return count > 0 ? count : get_num_threads();
        }
    }

    /// <summary>Puts libtorch on one thread until the returned handle is disposed (null, and nothing changed, with one
    /// thread).</summary>
    public static IDisposable? Serial() => OneThread.Hold();
}
