namespace Microsoft.ML.Llm;

/// <summary>How <see cref="CausalLmTrainer"/> decides whether it is one replica of a data-parallel job.</summary>
public enum DistributedMode
{
    /// <summary>Data-parallel over MPI when the process was started by an MPI launcher with more than one rank
    /// (<c>mpirun -np N</c>: MPICH's/Intel MPI's <c>PMI_SIZE</c>, MS-MPI's <c>PMI_SIZE</c>); otherwise one process.</summary>
    Auto,

    /// <summary>One process, whatever the launcher says.</summary>
    None,

    /// <summary>Data-parallel over MPI, always (a world of one rank when started without a launcher).</summary>
    Mpi,
}
