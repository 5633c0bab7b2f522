namespace Microsoft.ML.Llm;

/// <summary>
/// Where this process stands in an MPI job, as the launcher set it (<c>PMI_RANK</c>/<c>PMI_SIZE</c> from
/// <c>mpirun</c>), before or without MPI being initialised: application code uses it to let rank 0 alone save the model
/// or print results.
/// </summary>
public static class DistributedEnvironment
{
    /// <summary>This process's rank in the job (0 when not launched by mpirun).</summary>
    public static int Rank => Read("PMI_RANK") ?? Read("OMPI_COMM_WORLD_RANK") ?? 0;

    /// <summary>The number of processes in the job (1 when not launched by mpirun).</summary>
    public static int WorldSize => Read("PMI_SIZE") ?? Read("OMPI_COMM_WORLD_SIZE") ?? 1;

    /// <summary>Whether this process is rank 0, the one that writes checkpoints, logs and the model.</summary>
    public static bool IsMainProcess => Rank == 0;

    private static int? Read(string variable) =>
        int.TryParse(Environment.GetEnvironmentVariable(variable), NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) ? value : null;
}
