namespace Microsoft.ML.Llm;

/// <summary>
/// Data-parallel training over MPI (<see cref="CausalLmTrainerOptions.Distributed"/>): launched as
/// <c>mpirun -np N dotnet app.dll</c>, each of the N processes (ranks) holds a replica of the model, reads its own rows of
/// every batch, and the gradients are averaged across ranks (all-reduce) before clipping and the optimizer step, so every
/// replica takes the same step (PyTorch's DistributedDataParallel, Horovod).
/// </summary>
/// <remarks>
/// <para>
/// Each rank reads <see cref="CausalLmTrainerOptions.BatchSize"/> rows per micro-batch, so the global batch is
/// BatchSize × world size; rank r takes rows r, r + N, r + 2N, … of the global batch at each data position (rank-strided,
/// disjoint), so 2 ranks × batch B train exactly as 1 rank × batch 2B. <see cref="GlobalBatchSize"/> fixes the global
/// batch instead, whatever the world size.
/// </para>
/// <para>
/// Every rank starts from the same weights (same seed; rank 0's weights are then broadcast), checks at start that all
/// ranks were given the same options and data (a fingerprint of the options, the model, the row count, block length,
/// vocabulary and first and last blocks), and fails with an exception naming what differs. Rank 0 alone writes
/// checkpoints and logs (metrics.csv, TensorBoard, loss.png, the channel's messages); <see cref="CausalLmTrainerOptions.Progress"/>
/// is called on every rank with the same report, and every rank's Fit returns the same model (let rank 0 save it:
/// <see cref="DistributedEnvironment.IsMainProcess"/>). Every rank can resume from rank 0's checkpoints. Cancellation
/// must be requested on every rank (a rank that stops alone leaves the others to the collective timeout). Validation is split across ranks and reduced; the reported training loss is the mean over all ranks.
/// With a loss mask or document masking, each rank's loss is the mean over its own targets and the ranks' gradients and
/// losses are averaged with equal weights (as DDP does), which equals one process's token-weighted mean only when every
/// rank's rows hold as many targets; without masks (pretraining) they are the same.
/// </para>
/// <para>
/// The engine is MPI: MPI.NET over MPICH's <c>libmpich.so.12</c> on Linux (<c>apt-get install mpich</c>), MS-MPI on Windows.
/// </para>
/// </remarks>
public sealed class DistributedOptions
{
    /// <summary>Default values, written once.</summary>
    public static class Defaults
    {
        public const DistributedMode Mode = DistributedMode.Auto;

        /// <summary>PyTorch DDP's <c>bucket_cap_mb</c>: 25 MiB of fp32 gradients per all-reduce.</summary>
        public const double BucketSizeMegabytes = 25;

        /// <summary>How long one collective may take before the job is aborted (a dead or hung rank).</summary>
        public const int CollectiveTimeoutSeconds = 300;
    }

    /// <summary>Whether to train data-parallel (<see cref="DistributedMode.Auto"/>: when launched by mpirun with more than one rank).</summary>
    public DistributedMode Mode { get; set; } = Defaults.Mode;

    /// <summary>
    /// The rows of one micro-batch over all ranks. Null (the default): <see cref="CausalLmTrainerOptions.BatchSize"/>
    /// per rank (global batch = BatchSize × world size). When set, each rank reads GlobalBatchSize / world size rows
    /// (BatchSize is then not used), and the world size must divide it.
    /// </summary>
    public int? GlobalBatchSize { get; set; }

    /// <summary>Gradients are all-reduced in flat buckets of this many MiB (fp32), one MPI call per bucket.</summary>
    public double BucketSizeMegabytes { get; set; } = Defaults.BucketSizeMegabytes;

    /// <summary>
    /// The longest one collective (gradient all-reduce, validation reduce, start-up check) may take. Past it, the rank
    /// writes an error naming the collective, the step and the timeout to the standard error and aborts the MPI job
    /// (<c>MPI_Abort</c>), so a rank that died or hangs never leaves the others waiting forever. MPICH's launcher already
    /// ends the job when a rank exits abnormally; this covers hangs and launchers started with <c>-disable-auto-cleanup</c>.
    /// </summary>
    public TimeSpan CollectiveTimeout { get; set; } = TimeSpan.FromSeconds(Defaults.CollectiveTimeoutSeconds);
}
