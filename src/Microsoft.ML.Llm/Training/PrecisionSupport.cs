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

    private static HashSet<string>? CpuFlags()
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
