using MpiNative = MPI.Unsafe;

namespace Microsoft.ML.Llm;

/// <summary>
/// MPI's world communicator for this process: initialised once (MPI.NET's <see cref="MPI.Environment"/>, with
/// <c>MPI_THREAD_MULTIPLE</c> so the deadline thread may abort), finalised at process exit. Every collective runs
/// under a deadline: when it does not complete in time (a rank died or hangs), this rank writes what it was waiting for
/// to the standard error and aborts the whole job, so no rank waits forever.
/// </summary>
internal sealed class MpiWorld
{
    // MPICH's (and MS-MPI's) handle values, as mpi.h defines them.
    private const int CommWorld = 0x44000000;
    private const int MpiFloat = 0x4c00040a;
    private const int MpiDouble = 0x4c00080b;
    private const int MpiLongLong = 0x4c000809;
    private const int MpiSum = 0x58000003;
    private const int MpiMax = 0x58000001;
    private static readonly IntPtr InPlace = new(-1);

    /// <summary>Exit code of a job aborted by a collective's deadline.</summary>
    public const int TimeoutExitCode = 70;

    private static readonly Lock Gate = new();
    private static MpiWorld? _instance;

    private readonly MPI.Environment _environment;
    private readonly Timer _deadline;
    private string _waitingFor = "";
    private TimeSpan _timeout;

    private MpiWorld()
    {
        MpiLibrary.EnsureResolver();
        var args = Array.Empty<string>();
        _environment = new MPI.Environment(ref args, MPI.Threading.Multiple);
        Rank = MPI.Communicator.world.Rank;
        Size = MPI.Communicator.world.Size;
        _deadline = new Timer(_ => Expire());
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Finish();
    }

    /// <summary>The world of this process, initialising MPI on first use.</summary>
    public static MpiWorld Instance
    {
        get
        {
            lock (Gate)
                return _instance ??= new MpiWorld();
        }
    }

    /// <summary>This process's rank.</summary>
    public int Rank { get; }

    /// <summary>The number of ranks.</summary>
    public int Size { get; }

    /// <summary>How long one collective may take (<see cref="DistributedOptions.CollectiveTimeout"/>).</summary>
    public TimeSpan Timeout
    {
        get => _timeout;
        set => _timeout = value;
    }

    /// <summary>Sums <paramref name="count"/> fp32 values at <paramref name="data"/> over all ranks, in place.</summary>
    public void SumFloats(IntPtr data, int count, string what) =>
        Run(what, () => MpiNative.MPI_Allreduce(InPlace, data, count, MpiFloat, MpiSum, CommWorld));

    /// <summary>Sums <paramref name="values"/> over all ranks, in place.</summary>
    public unsafe void Sum(Span<double> values, string what)
    {
        fixed (double* p = values)
        {
            var ptr = (IntPtr)p;
            int n = values.Length;
            Run(what, () => MpiNative.MPI_Allreduce(InPlace, ptr, n, MpiDouble, MpiSum, CommWorld));
        }
    }

    /// <summary>The maximum of <paramref name="values"/> over all ranks, in place.</summary>
    public unsafe void Max(Span<double> values, string what)
    {
        fixed (double* p = values)
        {
            var ptr = (IntPtr)p;
            int n = values.Length;
            Run(what, () => MpiNative.MPI_Allreduce(InPlace, ptr, n, MpiDouble, MpiMax, CommWorld));
        }
    }

    /// <summary>Every rank's <paramref name="mine"/>, rank by rank (length <see cref="Size"/> × mine.Length).</summary>
    public unsafe long[] Gather(long[] mine, string what)
    {
        var all = new long[mine.Length * Size];
        fixed (long* send = mine)
        fixed (long* receive = all)
        {
            var s = (IntPtr)send;
            var r = (IntPtr)receive;
            Run(what, () => MpiNative.MPI_Allgather(s, mine.Length, MpiLongLong, r, mine.Length, MpiLongLong, CommWorld));
        }

        return all;
    }

    /// <summary>Copies rank 0's <paramref name="count"/> fp32 values at <paramref name="data"/> to every rank.</summary>
    public void BroadcastFloats(IntPtr data, int count, string what) =>
        Run(what, () => MpiNative.MPI_Bcast(data, count, MpiFloat, 0, CommWorld));

    private void Run(string what, Func<int> call)
    {
        _waitingFor = what;
        _deadline.Change(_timeout, System.Threading.Timeout.InfiniteTimeSpan);
        int rc;
        try
        {
            rc = call();
        }
        finally
        {
            _deadline.Change(System.Threading.Timeout.Infinite, System.Threading.Timeout.Infinite);
        }

        if (rc != 0)
            throw new InvalidOperationException($"MPI {what} failed on rank {Rank} of {Size} (MPI error code {rc}); another rank may have died.");
    }

    /// <summary>The deadline passed: say so and end the whole job (MPI_Abort makes the launcher kill every rank).</summary>
    private void Expire()
    {
        string message = string.Create(CultureInfo.InvariantCulture,
            $"Data-parallel training: rank {Rank} of {Size} waited more than {_timeout.TotalSeconds:F0} s (DistributedOptions.CollectiveTimeout) for the {_waitingFor}; " +
            $"another rank has died or stopped responding. Aborting the MPI job.");
        Console.Error.WriteLine(message);
        Console.Error.Flush();
        MpiNative.MPI_Abort(CommWorld, TimeoutExitCode);
        Thread.Sleep(TimeSpan.FromSeconds(10));
        Environment.FailFast(message);   // MPI_Abort did not end this process
    }

    private void Finish()
    {
        if (!MPI.Environment.Finalized)
            _environment.Dispose();
    }
}
