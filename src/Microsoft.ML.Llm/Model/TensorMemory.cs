using System.Runtime.InteropServices;
using Tensor = TorchSharp.torch.Tensor;

namespace Microsoft.ML.Llm;

/// <summary>The address of a CPU tensor's elements, for the loops that read and write them directly
/// (<see cref="DecodeAttention"/>, <see cref="DecodeLinear"/>, the logits of a decoding step).</summary>
internal static unsafe class TensorMemory
{
    /// <summary>The address of the tensor's first element (its storage offset included). Valid while the tensor lives.</summary>
    public static float* Floats(Tensor tensor) => (float*)THSTensor_data(tensor.Handle);

    /// <summary>As <see cref="Floats"/>, for a bool tensor.</summary>
    public static bool* Bools(Tensor tensor) => (bool*)THSTensor_data(tensor.Handle);

    // LibTorchSharp's export behind TorchSharp's (internal) data pointer.
    [DllImport("LibTorchSharp")]
    private static extern IntPtr THSTensor_data(IntPtr tensor);
}
