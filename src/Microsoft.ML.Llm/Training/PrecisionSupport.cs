using System.Runtime.InteropServices;
using Microsoft.ML.Llm.Internal;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Checks, before the first step, that the device can run the chosen precision: a small matmul and attention in the
/// compute dtype must run (libtorch raises on a device without kernels for it), and on the CPU a warning names the
/// precisions that run without fast kernels (bf16 without AVX-512 BF16/AMX, fp16 without AVX-512 FP16/AMX-FP16:
/// correct, but slower than fp32).
/// </summary>
internal static class PrecisionSupport
{
    /// <summary>Throws when <paramref name="device"/> cannot compute in <paramref name="precision"/>; warns when it
    /// can only slowly.</summary>
    /// <param name="precision">The requested precision.</param>
    /// <param name="device">The training device.</param>
    /// <param name="ch">Where warnings go.</param>
    /// <param name="probe">Runs the compute dtype on the device and throws if it cannot (a test replaces it).</param>
    public static void Check(TrainingPrecision precision, Device device, IChannel ch, Action<ScalarType, Device>? probe = null)
    {
        if (Autocast.ComputeTypeOf(precision) is not { } dtype)
            return;
        try
        {
            (probe ?? Probe)(dtype, device);
        }
        catch (Exception e) when (e is ExternalException or NotSupportedException or InvalidOperationException)
        {
            throw new ArgumentException(
                $"Option 'Precision' is {precision}, but device {device} cannot compute in {dtype}: {e.Message.Split('\n')[0]} " +
                $"Accepted on this device: {string.Join(", ", Supported(device, probe))}.",
                nameof(CausalLmTrainerOptions.Precision));
        }

        if (device.type == DeviceType.CPU && SlowOnThisCpu(precision) is { } missing)
        {
            HostAccess.Warning(ch, $"Precision {precision} on this CPU: it lacks {missing}, so libtorch computes {dtype} matmuls without fast " +
                "kernels; training is correct but slower than Fp32" +
                (precision == TrainingPrecision.Fp16Mixed ? " (fp16 matmuls measured 20-70× slower than fp32 on an AVX-512 CPU). Bf16Mixed is the fast low precision on CPUs." : "."));
        }
    }

    /// <summary>
    /// The precision <see cref="CausalLmTrainerOptions.Precision"/> = null trains in on <paramref name="device"/>: the
    /// fastest one that reaches fp32's quality (Bf16Mixed met issue 10's bar: Tiny Shakespeare 1.8881 against 1.8872).
    /// CPU: Bf16Mixed with AVX-512 BF16 or AMX-BF16 (GPT-2 124M steps 1.5-2.6× faster than fp32 on the 2-core EPYC),
    /// else Fp32 (bf16 without those units is emulated, slower than fp32). CUDA: Bf16Mixed from compute capability 8.0
    /// (Ampere), Fp16Mixed on 7.x (tensor cores, no bf16), Fp32 below or when the capability cannot be read.
    /// The choice and its reason go to <paramref name="ch"/>.
    /// </summary>
    public static TrainingPrecision Preferred(Device device, IChannel ch)
    {
        var (precision, reason) = device.type == DeviceType.CUDA
            ? PreferredOnCuda(CudaCapability.Major(device.index < 0 ? 0 : device.index))
            : PreferredOnCpu(CpuFlags());
        HostAccess.Info(ch, $"Precision: {precision}, chosen for this device ({reason}); set CausalLmTrainerOptions.Precision to choose another.");
        return precision;
    }

    /// <summary>The CPU rule of <see cref="Preferred"/> on the flags of /proc/cpuinfo (null: unreadable).</summary>
    internal static (TrainingPrecision Precision, string Reason) PreferredOnCpu(IReadOnlySet<string>? flags) => flags switch
    {
        null => (TrainingPrecision.Fp32, "CPU features unknown"),
        _ when flags.Contains("amx_bf16") => (TrainingPrecision.Bf16Mixed, "CPU with AMX-BF16"),
        _ when flags.Contains("avx512_bf16") => (TrainingPrecision.Bf16Mixed, "CPU with AVX-512 BF16"),
        _ => (TrainingPrecision.Fp32, "CPU without AVX-512 BF16 or AMX-BF16"),
    };

    /// <summary>The CUDA rule of <see cref="Preferred"/> on the compute capability's major version (null: unreadable).</summary>
    internal static (TrainingPrecision Precision, string Reason) PreferredOnCuda(int? major) => major switch
    {
        null => (TrainingPrecision.Fp32, "CUDA GPU of unknown compute capability"),
        >= 8 => (TrainingPrecision.Bf16Mixed, $"CUDA GPU of compute capability {major}.x: bf16 tensor cores"),
        7 => (TrainingPrecision.Fp16Mixed, "CUDA GPU of compute capability 7.x: fp16 tensor cores, no bf16"),
        _ => (TrainingPrecision.Fp32, $"CUDA GPU of compute capability {major}.x: no tensor cores"),
    };

    /// <summary>Runs a matmul and an attention call in <paramref name="dtype"/> on <paramref name="device"/>.</summary>
    private static void Probe(ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var a = ones(8, 8, dtype: dtype, device: device);
        var q = ones(1, 1, 4, 8, dtype: dtype, device: device);
        var y = a.matmul(a).sum() + nn.functional.scaled_dot_product_attention(q, q, q, is_casual: true).sum();
        _ = y.to(ScalarType.Float32).cpu().item<float>();
    }

    private static IEnumerable<TrainingPrecision> Supported(Device device, Action<ScalarType, Device>? probe)
    {
        foreach (var p in Enum.GetValues<TrainingPrecision>())
        {
            bool ok = true;
            if (Autocast.ComputeTypeOf(p) is { } t)
            {
                try
                {
                    (probe ?? Probe)(t, device);
                }
                catch (Exception e) when (e is ExternalException or NotSupportedException or InvalidOperationException)
                {
                    ok = false;
                }
            }

            if (ok)
                yield return p;
        }
    }

    /// <summary>The missing CPU feature that makes <paramref name="precision"/> slow here, or null (fast, or not an x86
    /// Linux CPU whose flags we can read).</summary>
    internal static string? SlowOnThisCpu(TrainingPrecision precision)
    {
        var flags = CpuFlags();
        if (flags is null)
            return null;
        return precision switch
        {
            TrainingPrecision.Bf16Mixed when !flags.Contains("avx512_bf16") && !flags.Contains("amx_bf16") => "AVX-512 BF16 and AMX-BF16",
            TrainingPrecision.Fp16Mixed when !flags.Contains("avx512_fp16") && !flags.Contains("amx_fp16") => "AVX-512 FP16 and AMX-FP16",
            _ => null,
        };
    }

    /// <summary>The flags of /proc/cpuinfo, read once per process (null: not readable, e.g. not Linux).</summary>
    internal static HashSet<string>? CpuFlags() => Flags.Value;

    private static readonly Lazy<HashSet<string>?> Flags = new(ReadCpuFlags);

    private static HashSet<string>? ReadCpuFlags()
    {
        try
        {
            var line = File.Exists("/proc/cpuinfo")
                ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal))
                : null;
            return line is null ? null : [.. line.Split(':', 2)[1].Split(' ', StringSplitOptions.RemoveEmptyEntries)];
        }
        catch (IOException)
        {
            return null;
        }
    }
}
