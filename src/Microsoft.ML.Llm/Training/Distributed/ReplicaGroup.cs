using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// The data-parallel group a training run belongs to: which replica this process is, how its gradients are made equal
/// to the others', and the few collectives the run needs besides (validation sums, the start-up check, rank 0's weights).
/// <see cref="ReplicaGroups.For"/> picks <see cref="SingleReplica"/> or <see cref="MpiReplicas"/>.
/// </summary>
internal interface IReplicaGroup
{
    /// <summary>This replica's rank (0 for one process).</summary>
    int Rank { get; }

    /// <summary>Replicas in the group.</summary>
    int WorldSize { get; }

    /// <summary>Whether this replica writes checkpoints and logs and reports progress (rank 0).</summary>
    bool IsMain => Rank == 0;

    /// <summary>Averages gradients and the step's loss across replicas.</summary>
    IGradientSynchronizer Gradients { get; }

    /// <summary>Sums <paramref name="values"/> across replicas, in place.</summary>
    void Sum(Span<double> values, string what);

    /// <summary>The largest <paramref name="value"/> across replicas.</summary>
    double Max(double value, string what);

    /// <summary>Copies rank 0's contents of the flat fp32 buffer <paramref name="buffer"/> to every replica.</summary>
    void BroadcastFromMain(Tensor buffer, string what);

    /// <summary>Throws, on every replica, when some replica runs with other options or data (see <see cref="RunFingerprint"/>).</summary>
    void CheckSameRun(RunFingerprint fingerprint);
}

/// <summary>Chooses the replica group of a run from <see cref="CausalLmTrainerOptions.Distributed"/> and the launcher's environment.</summary>
internal static class ReplicaGroups
{
    /// <summary>One process, or this process's place in an MPI job (initialising MPI on first use).</summary>
    public static IReplicaGroup For(DistributedOptions? options)
    {
        options ??= new DistributedOptions();
        bool mpi = options.Mode switch
        {
            DistributedMode.Mpi => true,
            DistributedMode.Auto => DistributedEnvironment.WorldSize > 1,
            _ => false,
        };
        if (!mpi)
            return SingleReplica.Instance;
        var world = MpiWorld.Instance;
        world.Timeout = options.CollectiveTimeout;
        int launched = DistributedEnvironment.WorldSize;
        if (launched > 1 && world.Size != launched)
        {
            // E.g. Open MPI's mpirun starting processes that load MPICH: each would initialise a world of its own and
            // train alone, silently.
            throw new InvalidOperationException(
                $"The launcher started {launched} processes but MPI ({MpiLibrary.LoadedLibrary ?? "msmpi.dll"}) sees a world of {world.Size}: " +
                "the launcher does not belong to the MPI library loaded (Open MPI's mpirun with MPICH?). Launch with MPICH's mpirun.mpich (or mpiexec.hydra).");
        }

        return new MpiReplicas(world, options);
    }

    /// <summary>Rows each replica reads per micro-batch: BatchSize, or GlobalBatchSize / world size.</summary>
    public static int MicroBatch(CausalLmTrainerOptions o, int worldSize)
    {
        if (o.Distributed?.GlobalBatchSize is not { } global)
            return o.BatchSize;
        if (global % worldSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(DistributedOptions.GlobalBatchSize), global,
                $"Option 'Distributed.GlobalBatchSize' is {global}, which the world size {worldSize} (mpirun -np) does not divide; " +
                $"use a multiple of {worldSize} (e.g. {(global / worldSize + 1) * worldSize}) or launch a number of processes that divides {global}.");
        }

        return global / worldSize;
    }
}

/// <summary>One process: nothing to exchange.</summary>
internal sealed class SingleReplica : IReplicaGroup
{
    public static readonly SingleReplica Instance = new();

    public int Rank => 0;

    public int WorldSize => 1;

    public IGradientSynchronizer Gradients => SingleProcess.Instance;

    public void Sum(Span<double> values, string what)
    {
    }

    public double Max(double value, string what) => value;

    public void BroadcastFromMain(Tensor buffer, string what)
    {
    }

    public void CheckSameRun(RunFingerprint fingerprint)
    {
    }
}

/// <summary>A rank of an MPI job (<see cref="MpiWorld"/>).</summary>
internal sealed class MpiReplicas(MpiWorld world, DistributedOptions options) : IReplicaGroup
{
    public int Rank => world.Rank;

    public int WorldSize => world.Size;

    public IGradientSynchronizer Gradients { get; } =
        new AllReduceGradients(world, Math.Max(1, (long)(options.BucketSizeMegabytes * (1 << 20) / sizeof(float))));

    public void Sum(Span<double> values, string what) => world.Sum(values, what);

    public double Max(double value, string what)
    {
        Span<double> v = [value];
        world.Max(v, what);
        return v[0];
    }

    public unsafe void BroadcastFromMain(Tensor buffer, string what)
    {
        using var scope = NewDisposeScope();
        var host = buffer.device.type == DeviceType.CPU ? buffer : buffer.cpu();
        long bucket = int.MaxValue / sizeof(float);
        for (long offset = 0; offset < host.numel(); offset += bucket)
        {
            long n = Math.Min(bucket, host.numel() - offset);
            var view = host.narrow(0, offset, n);
            fixed (byte* p = view.bytes)
                world.BroadcastFloats((IntPtr)p, (int)n, what);
        }

        if (!ReferenceEquals(host, buffer))
            buffer.copy_(host);
    }

    public void CheckSameRun(RunFingerprint fingerprint)
    {
        var mine = fingerprint.Values;
        var all = world.Gather(mine, "start-up check of options and data");
        string? message = null;
        for (int r = 0; r < world.Size && message is null; r++)
        {
            if (r != world.Rank && fingerprint.FirstDifference(all.AsSpan(r * mine.Length, mine.Length), r, world.Rank) is { } difference)
            {
                message = $"Data-parallel training: the ranks were not started with the same options and data: {difference}. " +
                    "Every rank must run the same program with the same options, model and data (the same files, read the same way).";
            }
        }

        if (message is null)
            return;

        // Every rank sees the difference (each gathered all fingerprints). Each writes its own message to stderr before
        // any of them fails: the first rank to exit makes the launcher kill the others, which under load could otherwise
        // die before reporting. The sum is only a barrier.
        Console.Error.WriteLine($"rank {world.Rank}: {message}");
        Console.Error.Flush();
        Span<double> barrier = [1];
        world.Sum(barrier, "start-up check of options and data (reporting the difference)");
        throw new InvalidOperationException(message);
    }
}
