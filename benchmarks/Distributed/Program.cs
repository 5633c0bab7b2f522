// Data-parallel training over MPI on this machine: (1) training tokens/s of 1 process × 2 threads against 2 processes
// × 1 thread (mpirun.mpich -np 2) at the same global batch; (2) MPI all-reduce bandwidth and latency, measured with the
// gradient size of GPT-2 124M in the trainer's 25 MiB buckets, and the communication time per step that follows,
// projected to 8 and 64 ranks with the ring all-reduce model.
//
//   dotnet build benchmarks/Distributed -c Release
//   dotnet benchmarks/Distributed/bin/Release/net10.0/DistributedBenchmark.dll [steps]
//
// With no "--worker"/"--allreduce" argument the program is the driver: it launches the runs below as child processes.
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Llm;
using Microsoft.ML.Llm.Data;

CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
if (args.Length > 0 && args[0] == "--worker")
    return Worker.Run(int.Parse(args[1], CultureInfo.InvariantCulture), int.Parse(args[2], CultureInfo.InvariantCulture), int.Parse(args[3], CultureInfo.InvariantCulture));
if (args.Length > 0 && args[0] == "--allreduce")
    return AllReduceProbe.Run();

int steps = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 30;
string self = typeof(Worker).Assembly.Location;
Console.WriteLine($"Machine: {Environment.OSVersion}, {Environment.ProcessorCount} logical cores, .NET {Environment.Version}; load average {Load()} at start");
Console.WriteLine($"Model: GPT-2 style, 4 layers, 128 wide, 4 heads, context 64, global batch 12 blocks (nanoGPT's Shakespeare CPU shape), {steps} steps, tokens/s after step 5");

var single = Launch("dotnet", $"{self} --worker {steps} 12 1");
var one = Launch("dotnet", $"{self} --worker {steps} 12 2");
var two = Launch("mpirun.mpich", $"-np 2 dotnet {self} --worker {steps} 6 1");
double t0 = Result(single, "tokens/s"), t1 = Result(one, "tokens/s"), t2 = Result(two, "tokens/s");
Console.WriteLine($"| run | tokens/s |\n|---|---|\n| 1 process × 1 thread (baseline) | {t0:F0} |\n| 1 process × 2 threads | {t1:F0} ({t1 / t0:F2}×) |\n| 2 processes × 1 thread (MPI) | {t2:F0} ({t2 / t0:F2}×) |");

var probe = Launch("mpirun.mpich", "-np 2 dotnet " + self + " --allreduce");
double bytes = Result(probe, "bytes"), seconds = Result(probe, "seconds"), latency = Result(probe, "latency");
int buckets = (int)Math.Ceiling(bytes / (25 << 20));
// Ring all-reduce of S bytes over N ranks: each rank sends and receives 2(N−1)/N · S; 2(N−1) latency steps per bucket.
double busBandwidth = 2.0 * (2 - 1) / 2 * bytes / seconds;
Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
    $"GPT-2 124M gradients: {bytes / 1e6:F1} MB in {buckets} buckets of 25 MiB; all-reduce over 2 ranks (shared memory) {seconds * 1e3:F0} ms per step " +
    $"= {busBandwidth / 1e9:F2} GB/s bus bandwidth; 8-byte all-reduce latency {latency * 1e6:F1} µs"));
// t(N) = 2(N−1)/N · S / B + 2(N−1) · buckets · α: the bandwidth term barely grows with N, the latency term does.
Console.WriteLine("| ranks | links (bus bandwidth B, per-hop latency α) | communication per step (ring model) |\n|---|---|---|");
var links = new[]
{
    (string.Create(CultureInfo.InvariantCulture, $"measured here: {busBandwidth / 1e9:F2} GB/s, {latency * 1e6:F0} µs"), busBandwidth, latency),
    ("100 Gb/s InfiniBand (assumed 10 GB/s, 5 µs)", 10e9, 5e-6),
    ("25 Gb/s Ethernet, TCP (assumed 2.5 GB/s, 30 µs)", 2.5e9, 30e-6),
};
foreach (var (name, bandwidth, alpha) in links)
{
    foreach (int n in new[] { 2, 8, 64 })
    {
        double t = 2.0 * (n - 1) / n * bytes / bandwidth + 2.0 * (n - 1) * buckets * alpha;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {n} | {name} | {t * 1e3:F0} ms |"));
    }
}

Console.WriteLine($"load average at the end (1/5/15 min): {Load()}");
return 0;

static string Load() => File.ReadAllText("/proc/loadavg").Trim();

static string Launch(string file, string arguments)
{
    var start = new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
    using var p = Process.Start(start)!;
    var stderr = p.StandardError.ReadToEndAsync();
    string output = p.StandardOutput.ReadToEnd();
    p.WaitForExit();
    if (p.ExitCode != 0)
        throw new InvalidOperationException($"'{file} {arguments}' exited with {p.ExitCode}:\n{output}\n{stderr.Result}");
    return output;
}

static double Result(string output, string key)
{
    foreach (var line in output.Split('\n'))
    {
        if (line.StartsWith($"RESULT {key} ", StringComparison.Ordinal))
            return double.Parse(line[($"RESULT {key} ".Length)..], CultureInfo.InvariantCulture);
    }

    throw new InvalidOperationException($"No 'RESULT {key}' line in:\n{output}");
}

/// <summary>One training run (one process, or one rank of an MPI job): prints rank 0's steady tokens/s.</summary>
internal static class Worker
{
    public static int Run(int steps, int batchPerRank, int threads)
    {
        var random = new Random(1);
        var rows = Enumerable.Range(0, 2048).Select(_ => new Block { Tokens = Enumerable.Range(0, 65).Select(_ => random.Next(65)).ToArray() }).ToList();
        var ml = new MLContext(1);
        var schema = SchemaDefinition.Create(typeof(Block));
        schema[nameof(Block.Tokens)].ColumnType = new VectorDataViewType(NumberDataViewType.Int32, 65);
        var data = ml.Data.LoadFromEnumerable(rows, schema);
        var model = ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions
        {
            Model = GptConfig.ShakespeareChar(65) with { LayerCount = 4, HeadCount = 4, EmbeddingSize = 128, ContextLength = 64 },
            BatchSize = batchPerRank,
            MaxSteps = steps,
            NumberOfThreads = threads,
            LogInterval = 1000,
            PeakFlops = 1e11,
            Seed = 1,
        }).Fit(data);
        if (DistributedEnvironment.IsMainProcess)
        {
            var h = model.History;
            var first = h[Math.Min(5, h.Count - 2)];
            var last = h[^1];
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"RESULT tokens/s {(last.Tokens - first.Tokens) / (last.ElapsedSeconds - first.ElapsedSeconds):F1}"));
        }

        return 0;
    }

    private sealed class Block
    {
        public int[] Tokens { get; set; } = [];
    }
}

/// <summary>Times MPI_Allreduce as the trainer calls it: GPT-2 124M's fp32 gradients, in place, 25 MiB buckets.</summary>
internal static class AllReduceProbe
{
    public static unsafe int Run()
    {
        var world = MpiWorld.Instance;
        world.Timeout = TimeSpan.FromMinutes(5);
        long elements = GptModelParameters();
        long bucket = (25L << 20) / sizeof(float);
        var buffer = new float[elements];
        double best = double.MaxValue;
        fixed (float* p = buffer)
        {
            for (int repeat = 0; repeat < 3; repeat++)
            {
                var clock = Stopwatch.StartNew();
                for (long offset = 0; offset < elements; offset += bucket)
                    world.SumFloats((IntPtr)(p + offset), (int)Math.Min(bucket, elements - offset), "benchmark all-reduce");
                best = Math.Min(best, clock.Elapsed.TotalSeconds);
            }
        }

        Span<double> one = [1.0];
        for (int i = 0; i < 100; i++)
            world.Sum(one, "warm-up");
        var small = Stopwatch.StartNew();
        const int smallRepeats = 2000;
        for (int i = 0; i < smallRepeats; i++)
            world.Sum(one, "latency probe");
        double latency = small.Elapsed.TotalSeconds / smallRepeats;
        if (world.Rank == 0)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"RESULT bytes {elements * 4}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"RESULT seconds {best:R}"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"RESULT latency {latency:R}"));
        }

        return 0;
    }

    /// <summary>GPT-2 124M's trainable parameters (vocabulary padded to 50304, tied embedding), from the model itself.</summary>
    private static long GptModelParameters()
    {
        var c = GptConfig.Gpt2Small();
        long d = c.EmbeddingSize, layers = c.LayerCount;
        long perLayer = 12 * d * d + 13 * d;   // attention 4d² + 4d, MLP 8d² + 5d, two LayerNorms 4d
        return c.PaddedVocabularySize * d + c.ContextLength * d + layers * perLayer + 2 * d;
    }
}
