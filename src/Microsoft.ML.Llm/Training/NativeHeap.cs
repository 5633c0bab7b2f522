using System.Runtime.InteropServices;

namespace Microsoft.ML.Llm;

/// <summary>
/// Keeps the memory libtorch frees inside the process while a training run lasts (<see
/// cref="CausalLmTrainerOptions.RetainNativeMemory"/>) or a generation batch decodes (<see cref="DecodingBatch"/>), instead
/// of glibc returning it to the operating system after every step or call and taking it back, page fault by page fault,
/// in the next.
/// </summary>
/// <remarks>
/// <para>
/// Why: on the CPU libtorch allocates every activation, cast and gradient with glibc's <c>malloc</c>. glibc serves a
/// block over its mmap threshold (at most 32 MiB) with a fresh <c>mmap</c> and unmaps it on <c>free</c>, and gives the top
/// of its heap back once more than the trim threshold is free there. A Bf16Mixed step of GPT-2 124M makes several such
/// blocks (the bf16 copy of the 50304 × 768 output weight, the logits and their casts: about 0.26 GB at context 64 and
/// 0.57 GB at context 256), and the kernel zeroes every page of them again on first touch. With mmap off and the heap
/// kept, one thread: GPT-2 batch 4 × 64 Bf16Mixed 1473-1520 → 1195-1344 ms per step, at context 256 4211-6037 →
/// 3469-3800 ms; system time falls by half or more (benchmarks/README.md, "The heap kept during training").
/// </para>
/// <para>
/// How: <c>mallopt(M_MMAP_MAX, 0)</c> (every block from the heap) and a trim threshold of 2 GiB (nothing given back short
/// of that) from the first step to the end of the run, then values close to glibc's own for large
/// allocations again (mmap on; trim threshold 64 MiB, twice the largest dynamic mmap threshold). The model, the optimizer's
/// flat buffers and the data are allocated before it starts, as usual. mallopt is process-wide: runs that overlap share one
/// setting, restored when the last ends. glibc on Linux only (elsewhere, and on musl, nothing happens). What it costs:
/// the heap holds its high-water mark through the run, a little above the peak an unchanged heap reaches (Bf16Mixed GPT-2
/// at context 64: 2.9 → 3.0 GB peak resident set).
/// </para>
/// </remarks>
internal static class NativeHeap
{
    private const int MTrimThreshold = -1;   // glibc malloc.h
    private const int MMmapMax = -4;
    private const int DefaultMmapMax = 65536;                 // glibc's DEFAULT_MMAP_MAX
    private const int RestoredTrimThreshold = 64 << 20;       // 2 × DEFAULT_MMAP_THRESHOLD_MAX, where glibc's dynamic threshold ends up

    private static readonly Lazy<bool> Glibc = new(IsGlibc);

    private static readonly SharedSetting Kept = new(
        () =>
        {
            _ = mallopt(MMmapMax, 0);
            _ = mallopt(MTrimThreshold, int.MaxValue);
            return true;
        },
        () =>
        {
            _ = mallopt(MMmapMax, DefaultMmapMax);
            _ = mallopt(MTrimThreshold, RestoredTrimThreshold);
        });

    /// <summary>Whether this process's allocator is glibc's (Linux): the only one <see cref="Retain"/> changes.</summary>
    public static bool IsSupported => Glibc.Value;

    /// <summary>Runs that currently keep the heap (for tests).</summary>
    internal static int Holders => Kept.Holders;

    /// <summary>Keeps freed memory in the process until the returned handle is disposed; null where the allocator is
    /// not glibc's.</summary>
    public static IDisposable? Retain() => IsSupported ? Kept.Hold() : null;

    private static bool IsGlibc()
    {
        if (!OperatingSystem.IsLinux())
            return false;
        try
        {
            return gnu_get_libc_version() != IntPtr.Zero;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;   // musl (Alpine) has neither
        }
    }

    [DllImport("libc", ExactSpelling = true)]
    private static extern int mallopt(int param, int value);

    [DllImport("libc", ExactSpelling = true)]
    private static extern IntPtr gnu_get_libc_version();
}
