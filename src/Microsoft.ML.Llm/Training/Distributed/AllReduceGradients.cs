using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Averages gradients across the ranks of an MPI job, as PyTorch's DistributedDataParallel does: the flat gradient
/// buffer (every <c>.grad</c> is a view of it, see <see cref="FusedAdamW"/>) is summed in place in buckets of
/// <see cref="DistributedOptions.BucketSizeMegabytes"/> (one <c>MPI_Allreduce</c> each, straight on the tensor's memory:
/// nothing is copied on the CPU), then divided by the world size. The step's loss is averaged the same way, so every
/// rank reports the global mean.
/// </summary>
/// <remarks>
/// The all-reduce runs after the backward pass, not overlapped with it. DDP overlaps because on a GPU the backward
/// kernels and NCCL use different engines; on the CPU both need the same cores (backward uses every core through torch's
/// thread pool, and MPICH's shared-memory all-reduce is memory copies by the CPU), so overlapping only makes them compete,
/// and the flat buffer gives one large message per bucket, which is what loopback and network bandwidth want.
/// A CUDA run stages each bucket through host memory; NCCL is the GPU path (README, "Data-parallel training").
/// </remarks>
internal sealed class AllReduceGradients(MpiWorld world, long bucketElements) : IGradientSynchronizer
{
    public unsafe void Synchronize(Tensor gradients, Tensor loss, long step)
    {
        using var scope = NewDisposeScope();
        var host = gradients.device.type == DeviceType.CPU ? gradients : gradients.cpu();
        long total = host.numel();
        for (long offset = 0, bucket = 1; offset < total; offset += bucketElements, bucket++)
        {
            long n = Math.Min(bucketElements, total - offset);
            var view = host.narrow(0, offset, n);
            fixed (byte* p = view.bytes)
                world.SumFloats((IntPtr)p, checked((int)n), $"gradient all-reduce of step {step + 1} (bucket {bucket})");
        }

        host.div_(world.Size);
        if (!ReferenceEquals(host, gradients))
            gradients.copy_(host);

        Span<double> sum = [loss.to(ScalarType.Float64).item<double>()];
        world.Sum(sum, $"loss all-reduce of step {step + 1}");
        loss.fill_(sum[0] / world.Size);
    }
}
