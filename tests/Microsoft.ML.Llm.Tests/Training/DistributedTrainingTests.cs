using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Llm.Tests;

/// <summary>A fact that needs MPICH's launcher; skipped, saying how to install it, where <c>mpirun.mpich</c> is absent.</summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute()
    {
        if (MpiJob.Launcher is null)
            Skip = "mpirun.mpich not found on PATH: install MPICH (apt-get install -y mpich libmpich-dev) to run the data-parallel tests.";
    }
}

/// <summary>
/// Data-parallel training over MPI, end to end: samples/DistributedTraining launched with <c>mpirun.mpich -np 2</c>
/// (a tiny character GPT on tinyshakespeare, dropout 0, one thread per rank).
/// </summary>
public sealed class DistributedTrainingTests
{
    [MpiFact]
    public void TwoRanksWithBatchBTrainAsOneProcessWithBatch2B()
    {
        // One process (no MPI at all) with 8 rows per step against 2 ranks that share a global batch of 8 (4 rows each),
        // with gradient buckets small enough (10 KB) that the all-reduce runs in several.
        // Fp32: two half batches equal one whole batch to 1e-5 (bf16 matmuls round differently per batch shape).
        var single = MpiJob.Run(0, "--steps 20 --batch 8 --validation --precision Fp32");
        var pair = MpiJob.Run(2, "--steps 20 --global-batch 8 --validation --bucket-mb 0.01 --precision Fp32");
        Assert.True(single.ExitCode == 0, single.Output);
        Assert.True(pair.ExitCode == 0, pair.Output);
        Assert.Contains("rank 1 of 2", pair.Output);

        var expected = MpiJob.Losses(single.Output);
        var actual = MpiJob.Losses(pair.Output);
        Assert.Equal(20, expected.Count);
        Assert.Equal(expected.Keys, actual.Keys);
        foreach (var (step, (loss, val)) in expected)
        {
            Assert.True(Math.Abs(loss - actual[step].Loss) <= 1e-5, $"step {step}: training loss {actual[step].Loss} with 2 ranks, {loss} in one process");
            Assert.Equal(val is null, actual[step].Validation is null);
            if (val is { } v)
                Assert.True(Math.Abs(v - actual[step].Validation!.Value) <= 1e-5, $"step {step}: validation loss {actual[step].Validation} with 2 ranks, {v} in one process");
        }

        Assert.True(expected[1].Loss - expected[20].Loss > 0.3, "the model learns");   // a curve, not a constant
    }

    [MpiFact]
    public void KillingOneRankEndsTheJobQuicklyAndResumingContinuesIdentically()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"llm-mpi-{Guid.NewGuid():N}");
        try
        {
            var reference = MpiJob.Run(2, "--steps 12");
            Assert.True(reference.ExitCode == 0, reference.Output);

            // Rank 1 is killed (SIGKILL) after step 8; rank 0 wrote a checkpoint at step 5. MPICH's launcher ends the job.
            var killed = MpiJob.Run(2, $"--steps 12 --checkpoints {dir} --checkpoint-interval 5 --die-rank 1 --die-at-step 8 --timeout 60");
            Assert.NotEqual(0, killed.ExitCode);
            Assert.Contains("rank 1: dying after step 8", killed.Output);
            Assert.Contains("BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES", killed.Output);
            Assert.True(killed.Elapsed < TimeSpan.FromSeconds(45), $"the job took {killed.Elapsed} to end after a rank died");
            Assert.DoesNotContain("trained 12 steps", killed.Output);
            Assert.Equal(["checkpoint-000000005.ckpt"], Directory.GetFiles(dir).Select(Path.GetFileName));

            // Both ranks resume from rank 0's checkpoint and continue exactly as the uninterrupted run.
            string logs = Path.Combine(dir, "logs");
            var resumed = MpiJob.Run(2, $"--steps 12 --checkpoints {dir} --checkpoint-interval 5 --resume {dir} --logs {logs}");
            Assert.True(resumed.ExitCode == 0, resumed.Output);

            // Rank 0 wrote the logs (one metrics.csv row per step, loss.png) and the checkpoints (the last two kept).
            Assert.Equal(13, File.ReadAllLines(Path.Combine(logs, "metrics.csv")).Length);
            Assert.True(File.Exists(Path.Combine(logs, "loss.png")));
            Assert.Equal(["checkpoint-000000010.ckpt", "checkpoint-000000012.ckpt"], Directory.GetFiles(dir).Select(Path.GetFileName).Order());
            var expected = MpiJob.Losses(reference.Output);
            var actual = MpiJob.Losses(resumed.Output);
            Assert.Equal(12, actual.Count);
            foreach (var (step, (loss, _)) in expected)
                Assert.True(Math.Abs(loss - actual[step].Loss) <= 1e-7, $"step {step}: {actual[step].Loss} after resume, {loss} uninterrupted");
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    [MpiFact]
    public void ARankThatStopsRespondingMakesTheOthersFailAtTheCollectiveTimeout()
    {
        // Rank 1 hangs after step 3 (alive, so the launcher sees nothing wrong); rank 0 waits in the gradient all-reduce
        // of step 4 until DistributedOptions.CollectiveTimeout (5 s), then names what it waited for and aborts the job.
        var hung = MpiJob.Run(2, "--steps 20 --hang-rank 1 --hang-at-step 3 --timeout 5");
        Assert.Equal(MpiWorld.TimeoutExitCode, hung.ExitCode);
        Assert.Contains("rank 1: hanging after step 3", hung.Output);
        Assert.Contains(
            "Data-parallel training: rank 0 of 2 waited more than 5 s (DistributedOptions.CollectiveTimeout) for the gradient all-reduce of step 4 (bucket 1); " +
            "another rank has died or stopped responding. Aborting the MPI job.", hung.Output);
        Assert.True(hung.Elapsed < TimeSpan.FromSeconds(40), $"the job took {hung.Elapsed} to end");
    }

    [MpiFact]
    public void RanksWithDifferentOptionsFailAtStartNamingTheOption()
    {
        var job = MpiJob.Run(2, "--steps 5 --mismatch-rank 1");
        Assert.NotEqual(0, job.ExitCode);
        Assert.Contains(
            "Data-parallel training: the ranks were not started with the same options and data: rank 1's option 'LearningRate' is 0.001 but rank 0's is 0.003.",
            job.Output);
        Assert.Contains(
            "Data-parallel training: the ranks were not started with the same options and data: rank 0's option 'LearningRate' is 0.003 but rank 1's is 0.001.",
            job.Output);
        Assert.DoesNotContain("trained", job.Output);

        var data = MpiJob.Run(2, "--steps 5 --mismatch-data-rank 1");
        Assert.NotEqual(0, data.ExitCode);
        Assert.Matches(@"the ranks were not started with the same options and data: rank 1's training data first block differs from rank 0's \(digest [0-9a-f]{16} against [0-9a-f]{16}\)\.", data.Output);
    }

    [MpiFact]
    public void ALauncherThatIsNotMpichsIsRejectedInsteadOfTrainingAlone()
    {
        // What a foreign launcher (Open MPI's mpirun starting MPICH processes) amounts to: the environment says 2 ranks,
        // MPI initialises a world of 1. Without the check each process would silently train alone.
        var job = MpiJob.Run(0, "--steps 3", environment: new() { ["PMI_SIZE"] = "2", ["PMI_RANK"] = "0" });
        Assert.NotEqual(0, job.ExitCode);
        Assert.Contains(
            "The launcher started 2 processes but MPI (libmpich.so.12) sees a world of 1: the launcher does not belong to the MPI library loaded " +
            "(Open MPI's mpirun with MPICH?). Launch with MPICH's mpirun.mpich (or mpiexec.hydra).", job.Output);
    }

    [Fact]
    public void AWorldSizeThatDoesNotDivideTheGlobalBatchIsRejected()
    {
        var o = new CausalLmTrainerOptions { Distributed = new DistributedOptions { GlobalBatchSize = 6 } };
        Assert.Equal(3, ReplicaGroups.MicroBatch(o, 2));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ReplicaGroups.MicroBatch(o, 4));
        Assert.StartsWith(
            "Option 'Distributed.GlobalBatchSize' is 6, which the world size 4 (mpirun -np) does not divide; use a multiple of 4 (e.g. 8) or launch a number of processes that divides 6.",
            e.Message);
        Assert.Equal(12, ReplicaGroups.MicroBatch(new CausalLmTrainerOptions { BatchSize = 12 }, 4));   // BatchSize is per rank
    }

    [Fact]
    public void AMissingMpiLibraryNamesWhatWasLookedForAndHowToInstallIt()
    {
        var e = Assert.Throws<DllNotFoundException>(() => MpiLibrary.Load(["/nonexistent/libmpich.so.12", "libmpich-not-here.so.12"]));
        Assert.Equal(
            "Data-parallel training needs an MPI library with MPICH's ABI, and none was found: looked for '/nonexistent/libmpich.so.12', 'libmpich-not-here.so.12'. " +
            "Install MPICH (Debian/Ubuntu: apt-get install mpich libmpich-dev; Fedora: dnf install mpich-devel), or set LLM_MPI_LIBRARY to the path of libmpich.so.12. " +
            "Open MPI is not supported (another ABI); on Windows install MS-MPI.",
            e.Message);
    }

    [Fact]
    public void BadDistributedOptionsAreRejectedBeforeTraining()
    {
        var ml = new MLContext(1);
        var bucket = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions { Distributed = new DistributedOptions { BucketSizeMegabytes = 0 } }));
        Assert.StartsWith("Option 'Distributed.BucketSizeMegabytes' must be a positive finite number; got 0.", bucket.Message);
        var timeout = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions { Distributed = new DistributedOptions { CollectiveTimeout = TimeSpan.Zero } }));
        Assert.StartsWith("Option 'Distributed.CollectiveTimeout' must be positive; got 00:00:00.", timeout.Message);
    }

    [Fact]
    public void WithoutALauncherTheProcessIsRankZeroOfOne()
    {
        Assert.Null(Environment.GetEnvironmentVariable("PMI_SIZE"));
        Assert.Equal(0, DistributedEnvironment.Rank);
        Assert.Equal(1, DistributedEnvironment.WorldSize);
        Assert.True(DistributedEnvironment.IsMainProcess);
        Assert.Same(SingleReplica.Instance, ReplicaGroups.For(null));
        Assert.Same(SingleReplica.Instance, ReplicaGroups.For(new DistributedOptions { Mode = DistributedMode.None }));
    }
}

/// <summary>Runs samples/DistributedTraining, alone or under mpirun.mpich, and reads its output.</summary>
internal static class MpiJob
{
    public static string? Launcher { get; } = FindOnPath("mpirun.mpich");

    /// <summary>Runs the sample with <paramref name="ranks"/> processes (0: plain <c>dotnet</c>, no launcher), with
    /// <paramref name="environment"/> added; kills it after <paramref name="limitSeconds"/>.</summary>
    public static (int ExitCode, string Output, TimeSpan Elapsed) Run(int ranks, string arguments, int limitSeconds = 120, Dictionary<string, string>? environment = null)
    {
        string dll = SampleDll();
        var start = ranks == 0
            ? new ProcessStartInfo("dotnet", $"{dll} {arguments}")
            : new ProcessStartInfo(Launcher!, $"-np {ranks} dotnet {dll} {arguments}");
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        start.WorkingDirectory = Path.GetDirectoryName(dll)!;
        foreach (var v in new[] { "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE" })
            start.Environment.Remove(v);
        foreach (var (name, value) in environment ?? [])
            start.Environment[name] = value;
        var output = new StringBuilder();
        var clock = Stopwatch.StartNew();
        using var p = new Process { StartInfo = start };
        p.OutputDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!p.WaitForExit(TimeSpan.FromSeconds(limitSeconds)))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            Assert.Fail($"'{start.FileName} {start.Arguments}' did not end within {limitSeconds} s:\n{output}");
        }

        p.WaitForExit();   // drains the redirected streams
        lock (output)
            return (p.ExitCode, output.ToString(), clock.Elapsed);
    }

    /// <summary>The "step N loss X val V" lines rank 0 prints at the end.</summary>
    public static SortedDictionary<int, (double Loss, double? Validation)> Losses(string output)
    {
        var losses = new SortedDictionary<int, (double, double?)>();
        foreach (Match m in Regex.Matches(output, @"^step (\d+) loss (\S+) val (\S+)", RegexOptions.Multiline))
        {
            double? val = m.Groups[3].Value == "-" ? null : double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture);
            losses[int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)] = (double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture), val);
        }

        return losses;
    }

    private static string SampleDll()
    {
        // tests/Microsoft.ML.Llm.Tests/bin/<Configuration>/net10.0/ → samples/DistributedTraining/bin/<Configuration>/net10.0/
        var testBin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string framework = testBin.Name, configuration = testBin.Parent!.Name;
        var root = testBin;
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "LlmMlNet.sln")))
            root = root.Parent;
        Assert.NotNull(root);
        string dll = Path.Combine(root.FullName, "samples", "DistributedTraining", "bin", configuration, framework, "DistributedTraining.dll");
        Assert.True(File.Exists(dll), $"{dll} not found: build samples/DistributedTraining (the test project builds it).");
        return dll;
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);
}
