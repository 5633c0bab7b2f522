using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// The one place where token ids (and targets, document ids) become tensors for a <see cref="GptModel"/>: training
/// batches, validation, <c>mlContext.Llm().Evaluate</c>, <see cref="CausalLmTransformer"/> scoring and
/// <see cref="TextGenerator"/> all build their inputs here, on the device the caller got from the model
/// (<see cref="GptModel.Device"/>). No other code in this assembly creates an input tensor, so a model trained on CUDA is
/// fed on CUDA everywhere; the tests move a model to the "meta" device to prove no path builds on a fixed device.
/// </summary>
internal static class ModelInputs
{
    /// <summary>A (<paramref name="rows"/>, <paramref name="columns"/>) int64 tensor of <paramref name="values"/> on
    /// <paramref name="device"/> (the model's).</summary>
    public static Tensor Int64(long[] values, long rows, long columns, Device device) =>
        tensor(values, new[] { rows, columns }, device: device);

    /// <summary>A (<paramref name="rows"/>, <paramref name="columns"/>) bool tensor of <paramref name="values"/> (masks) on
    /// <paramref name="device"/> (the model's).</summary>
    public static Tensor Bool(bool[] values, long rows, long columns, Device device) =>
        tensor(values, new[] { rows, columns }, device: device);

    /// <summary>The device a <see cref="GptModel"/> of this process may use: <paramref name="cudaIndex"/> must name one
    /// of the visible CUDA devices.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The index is negative or not below the device count.</exception>
    public static Device Cuda(int cudaIndex, int deviceCount)
    {
        if (cudaIndex < 0 || cudaIndex >= deviceCount)
        {
            throw new ArgumentOutOfRangeException(nameof(MLContext.GpuDeviceId), cudaIndex,
                $"MLContext.GpuDeviceId is {cudaIndex}, but TorchSharp sees {deviceCount} CUDA device(s); expected an index from 0 to {deviceCount - 1}.");
        }

        return new Device(DeviceType.CUDA, cudaIndex);
    }
}
