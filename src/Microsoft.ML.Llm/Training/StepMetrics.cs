using System.Collections.Concurrent;
using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// The losses and gradient norms of steps whose values are still on the device. Reading a scalar back
/// (<c>item()</c>) makes the host wait until the device has finished everything queued before it; doing that once per
/// log interval instead of once per micro-batch lets a GPU run ahead of the host (nanoGPT reads its loss only when it
/// logs, for the same reason). On the CPU the wait is short, but the rule is the same.
/// </summary>
internal sealed class PendingStepValues : IDisposable
{
    private readonly List<(long Step, Tensor Loss, Tensor GradientNorm, double LearningRate)> _steps = [];

    /// <summary>Steps not read back yet.</summary>
    public int Count => _steps.Count;

    /// <summary>The newest step's number and learning rate.</summary>
    public (long Step, double LearningRate) Last => _steps.Count > 0 ? (_steps[^1].Step, _steps[^1].LearningRate) : (0, double.NaN);

    /// <summary>Keeps a step's (1)-shaped float64 loss and 0-d gradient norm, taking ownership of both.</summary>
    public void Add(long step, Tensor loss, Tensor gradientNorm, double learningRate) => _steps.Add((step, loss, gradientNorm, learningRate));

    /// <summary>Reads every pending value back in one device-to-host transfer, oldest step first, and forgets them.</summary>
    public List<(long Step, double Loss, double GradientNorm, double LearningRate)> ReadBack()
    {
        var result = new List<(long, double, double, double)>(_steps.Count);
        if (_steps.Count == 0)
            return result;
        double[] values;
        using (var scope = NewDisposeScope())
        {
            var losses = cat(_steps.Select(p => p.Loss).ToArray());                                                     // (n)
            var norms = stack(_steps.Select(p => p.GradientNorm.reshape(1)).ToArray()).reshape(-1).to(ScalarType.Float64); // (n)
            values = cat([losses, norms]).cpu().data<double>().ToArray();
        }

        int n = _steps.Count;
        for (int i = 0; i < n; i++)
            result.Add((_steps[i].Step, values[i], values[n + i], _steps[i].LearningRate));
        Dispose();
        return result;
    }

    /// <summary>Releases the pending tensors.</summary>
    public void Dispose()
    {
        foreach (var (_, loss, norm, _) in _steps)
        {
            loss.Dispose();
            norm.Dispose();
        }

        _steps.Clear();
    }
}

/// <summary>
/// Model flops utilisation and peak memory, for progress reports, the history, metrics.csv and TensorBoard.
/// MFU = flops/token (nanoGPT's 6N + 12·L·H·Q·T, <see cref="GptModel.FlopsPerToken"/>) × tokens/s ÷ the matmul peak
/// of the step's compute precision on the model's device (given by the user, or measured once per process by
/// <see cref="MatmulPeak"/>). Recomputation under activation checkpointing is not model flops and does not count, as in
/// the PaLM paper's definition.
/// </summary>
internal sealed class ThroughputMeter(GptModel model, Device device, ScalarType computeType, double? peakFlops)
{
    // Measured here, when the run is built, not at the first report: the probe must not count against the run's
    // clock (a TimeBudget) nor land inside a step's timing.
    private readonly double _peak = peakFlops ?? MatmulPeak.FlopsPerSecond(device, computeType);

    /// <summary>The MFU at <paramref name="tokensPerSecond"/> (a fraction, NaN when the peak is unknown) and the peak
    /// memory so far.</summary>
    public (double Mfu, long PeakMemoryBytes) Measure(double tokensPerSecond)
    {
        double mfu = _peak > 0 ? model.FlopsPerToken * tokensPerSecond / _peak : double.NaN;
        return (mfu, PeakMemory.Bytes());
    }
}

/// <summary>
/// The matmul peak of a dtype on a device: the best of two timed square matmuls after one warm-up, cached per (device,
/// dtype, thread count) for the life of the process, so only the first run in a process pays for it. The size is 2048
/// where the dtype is fast and shrinks (to 256 at least) where one 2048³ product would take long: a dtype without fast
/// kernels on this device (fp16 on most CPUs) must not turn the probe into minutes.
/// </summary>
internal static class MatmulPeak
{
    private const int MaxSize = 2048;
    private const int MinSize = 256;
    private const double SecondsPerProduct = 0.25;
    private static readonly ConcurrentDictionary<(DeviceType, int, ScalarType, int), double> Cache = new();

    /// <summary>FLOP/s of a square matmul of <paramref name="dtype"/> on <paramref name="device"/> at the current thread count.</summary>
    public static double FlopsPerSecond(Device device, ScalarType dtype) =>
        Cache.GetOrAdd((device.type, device.index, dtype, torch.get_num_threads()), _ => Measure(device, dtype));

    private static double Measure(Device device, ScalarType dtype)
    {
        // A first estimate on the smallest size picks the largest size whose product takes about SecondsPerProduct.
        double estimate = Best(device, dtype, MinSize, runs: 2);
        double cube = estimate * SecondsPerProduct / 2;
        int size = (int)Math.Clamp(Math.Floor(Math.Cbrt(cube) / MinSize) * MinSize, MinSize, MaxSize);
        return size == MinSize ? estimate : Best(device, dtype, size, runs: 3);
    }

    private static double Best(Device device, ScalarType dtype, int size, int runs)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();

        // Values from linspace, not randn: the probe must not advance torch's generator (determinism of the run).
        var a = linspace(-1, 1, (long)size * size, dtype: ScalarType.Float32, device: device).view(size, size).to(dtype);
        var b = a.t().contiguous();
        double best = 0;
        for (int i = 0; i < runs; i++)
        {
            var sw = Stopwatch.StartNew();
            var c = a.matmul(b);
            c[0, 0].to(ScalarType.Float32).item<float>();   // waits for the device
            double seconds = sw.Elapsed.TotalSeconds;
            c.Dispose();
            if (i > 0)
                best = Math.Max(best, 2.0 * size * size * size / seconds);  // the first run warms up
        }

        return best;
    }
}

/// <summary>Peak memory: the process's peak resident set (VmHWM) on the CPU.</summary>
/// <remarks>
/// <para>
/// On Linux it is <c>getrusage(RUSAGE_SELF).ru_maxrss</c>, one system call: the trainer reads it after every step, and
/// <see cref="Process.PeakWorkingSet64"/> (a new <see cref="Process"/> that parses <c>/proc/self/status</c>) cost
/// 230-320 µs a call on the 2-core machine, 1% of a 28 ms Tiny Shakespeare step. Elsewhere, or if the call fails, it is
/// <see cref="Process.PeakWorkingSet64"/>.
/// </para>
/// <para>
/// On CUDA, PyTorch reports <c>torch.cuda.max_memory_allocated()</c>; TorchSharp 0.107 exposes no CUDA allocator
/// statistics, so there too this is the process's peak resident set (host memory), not device memory.
/// </para>
/// </remarks>
internal static class PeakMemory
{
    private const int RusageSelf = 0;
    private static bool s_getrusageWorks = OperatingSystem.IsLinux();

    /// <summary>Peak bytes so far.</summary>
    public static long Bytes()
    {
        if (s_getrusageWorks)
        {
            try
            {
                if (getrusage(RusageSelf, out var usage) == 0)
                    return usage.MaxResidentSetKilobytes * 1024;   // Linux reports kilobytes
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
            }

            s_getrusageWorks = false;
        }

        using var process = Process.GetCurrentProcess();
        return process.PeakWorkingSet64;
    }

    [System.Runtime.InteropServices.DllImport("libc", ExactSpelling = true)]
    private static extern int getrusage(int who, out RUsage usage);

    /// <summary>Linux x86-64/arm64 <c>struct rusage</c>: two <c>timeval</c>s, then 14 longs, ru_maxrss first.</summary>
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential, Size = 144)]
    private struct RUsage
    {
        public long UserSeconds;
        public long UserMicroseconds;
        public long SystemSeconds;
        public long SystemMicroseconds;
        public long MaxResidentSetKilobytes;
    }
}
