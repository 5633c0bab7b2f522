using System.Runtime.InteropServices;

namespace Microsoft.ML.Llm;

/// <summary>
/// The compute capability of a CUDA device, read through the CUDA driver API (libcuda), which every CUDA machine has:
/// TorchSharp 0.107 has no <c>torch.cuda.get_device_capability</c>. <see cref="PrecisionSupport.Preferred"/> uses it to
/// tell bf16-capable GPUs (8.0 on) from fp16-only ones.
/// </summary>
internal static class CudaCapability
{
    private const int ComputeCapabilityMajor = 75;   // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR (cuda.h)

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int CuInit(uint flags);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int CuDeviceGet(out int device, int ordinal);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    private delegate int CuDeviceGetAttribute(out int value, int attribute, int device);

    /// <summary>The major compute capability of CUDA device <paramref name="ordinal"/>, or null when there is no driver
    /// or the driver cannot answer (every CUDA call returning an error is treated as "unknown").</summary>
    public static int? Major(int ordinal)
    {
        // The driver stays loaded: libtorch's CUDA build has it open anyway.
        if (!NativeLibrary.TryLoad(OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1", out var driver))
            return null;
        if (!NativeLibrary.TryGetExport(driver, "cuInit", out var init)
            || !NativeLibrary.TryGetExport(driver, "cuDeviceGet", out var get)
            || !NativeLibrary.TryGetExport(driver, "cuDeviceGetAttribute", out var attribute))
        {
            return null;
        }

        if (Marshal.GetDelegateForFunctionPointer<CuInit>(init)(0) != 0
            || Marshal.GetDelegateForFunctionPointer<CuDeviceGet>(get)(out int device, ordinal) != 0
            || Marshal.GetDelegateForFunctionPointer<CuDeviceGetAttribute>(attribute)(out int major, ComputeCapabilityMajor, device) != 0)
        {
            return null;
        }

        return major;
    }
}
