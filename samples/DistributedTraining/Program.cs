// Data-parallel training over MPI: every process launched by mpirun trains a replica of a character-level GPT on its
// own rows of each batch; gradients are averaged with MPI all-reduce. Run it on one machine with 2 processes:
//
//   dotnet build samples/DistributedTraining -c Release
//   mpirun.mpich -np 2 dotnet samples/DistributedTraining/bin/Release/net10.0/DistributedTraining.dll --steps 200
//
// and on several machines with a hostfile (README, "Data-parallel training over MPI"). Without mpirun it trains in one
// process. Rank 0 writes checkpoints, logs and the model; every rank prints "rank R of N" and rank 0 the loss curve.
//
// Options (all optional): --steps N (20), --batch B rows per rank (4), --global-batch G (rows over all ranks; overrides
// --batch), --threads T (1), --seed S (7), --layers L (2), --embedding E (32), --context C (32),
// --chars K (characters of tinyshakespeare.txt used, 40000), --checkpoints DIR, --checkpoint-interval K (5),
// --resume DIR, --logs DIR, --save model.zip, --timeout SECONDS (collective timeout, 300), --bucket-mb MB (25),
// --precision Fp32|Bf16Mixed|Fp16Mixed (default: the trainer's choice for the device).
// Test hooks (the data-parallel tests use them): --die-rank R --die-at-step S (that rank kills itself, SIGKILL, after
// step S), --hang-rank R --hang-at-step S (that rank stops responding after step S), --mismatch-rank R (that rank uses
// another learning rate), --mismatch-data-rank R (that rank's text starts one character later), --validation (hold out the last 10% of blocks).
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Llm;
using Microsoft.ML.Llm.Data;

CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
var a = Arguments.Parse(args);
int rank = DistributedEnvironment.Rank, world = DistributedEnvironment.WorldSize;
Console.WriteLine($"rank {rank} of {world}, pid {Environment.ProcessId}");

// Data: character blocks of tinyshakespeare (context + 1 tokens each), the same on every rank.
string text = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "data", "tinyshakespeare.txt"))[..a.Int("chars", 40000)];
if (rank == a.Int("mismatch-data-rank", -1))
    text = text[1..];   // test hook: this rank's blocks start one character later
var tokenizer = LmTokenizer.Character([text]);
int context = a.Int("context", 32);
var ids = tokenizer.Encode(text);
var blocks = new List<Block>();
for (int s = 0; s + context + 1 <= ids.Length; s += context + 1)
    blocks.Add(new Block { Tokens = ids[s..(s + context + 1)] });
int trainRows = a.Has("validation") ? blocks.Count * 9 / 10 : blocks.Count;

var ml = new MLContext(a.Int("seed", 7));
var train = Load(ml, blocks.Take(trainRows), context + 1);
var validation = a.Has("validation") ? Load(ml, blocks.Skip(trainRows), context + 1) : null;

var options = new CausalLmTrainerOptions
{
    Model = GptConfig.Tiny(contextLength: context) with { LayerCount = a.Int("layers", 2), EmbeddingSize = a.Int("embedding", 32) },
    Tokenizer = tokenizer,
    BatchSize = a.Int("batch", 4),
    MaxSteps = a.Int("steps", 20),
    LearningRate = rank == a.Int("mismatch-rank", -1) ? 1e-3 : 3e-3,
    MinLearningRate = 3e-4,
    WarmupSteps = 5,
    DecaySteps = 100,
    Beta2 = 0.99,
    Seed = a.Int("seed", 7),
    NumberOfThreads = a.Int("threads", 1),
    Precision = a.String("precision") is { } precision ? Enum.Parse<TrainingPrecision>(precision, ignoreCase: true) : null,
    LogInterval = 1,
    EvaluationInterval = 10,
    ValidationSet = validation,
    CheckpointDirectory = a.String("checkpoints"),
    CheckpointInterval = a.Int("checkpoint-interval", 5),
    ResumeFrom = a.String("resume"),
    LogDirectory = a.String("logs"),
    PeakFlops = 1e11,   // MFU's denominator: skips the one-off matmul measurement
    Distributed = new DistributedOptions
    {
        GlobalBatchSize = a.Has("global-batch") ? a.Int("global-batch", 0) : null,
        CollectiveTimeout = TimeSpan.FromSeconds(a.Int("timeout", 300)),
        BucketSizeMegabytes = a.Double("bucket-mb", 25),
    },
};

// The test hook: this rank dies (SIGKILL, no clean-up) once step S is done, as a crashed or preempted node would.
int dieRank = a.Int("die-rank", -1), dieAtStep = a.Int("die-at-step", -1);
int hangRank = a.Int("hang-rank", -1), hangAtStep = a.Int("hang-at-step", -1);
options.Progress = new Progress(p =>
{
    if (rank == hangRank && p.Step >= hangAtStep)
    {
        Console.WriteLine($"rank {rank}: hanging after step {p.Step}");
        Console.Out.Flush();
        Thread.Sleep(Timeout.Infinite);
    }

    if (rank == dieRank && p.Step >= dieAtStep)
    {
        Console.WriteLine($"rank {rank}: dying after step {p.Step}");
        Console.Out.Flush();
        Process.GetCurrentProcess().Kill();
    }
});

var clock = Stopwatch.StartNew();
var model = ml.Llm().Trainers.CausalLm(options).Fit(train);
clock.Stop();
if (DistributedEnvironment.IsMainProcess)
{
    foreach (var m in model.History)
    {
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"step {m.Step} loss {m.Loss:R} val {(m.ValidationLoss is { } v ? v.ToString("R", CultureInfo.InvariantCulture) : "-")} tokens/s {m.TokensPerSecond:F0}"));
    }

    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"trained {model.History.Count} steps in {clock.Elapsed.TotalSeconds:F2} s"));
    if (a.String("save") is { } path)
        ml.Model.Save(model, train.Schema, path);
}

static IDataView Load(MLContext ml, IEnumerable<Block> rows, int length)
{
    var schema = SchemaDefinition.Create(typeof(Block));
    schema[nameof(Block.Tokens)].ColumnType = new VectorDataViewType(NumberDataViewType.Int32, length);
    return ml.Data.LoadFromEnumerable(rows.ToList(), schema);
}

internal sealed class Block
{
    public int[] Tokens { get; set; } = [];
}

/// <summary>Calls the callback synchronously on the training thread (System.Progress would post it to the thread pool).</summary>
internal sealed class Progress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress value) => report(value);
}

/// <summary>"--name value" and "--flag" arguments.</summary>
internal sealed class Arguments
{
    private readonly Dictionary<string, string?> _values = [];

    public static Arguments Parse(string[] args)
    {
        var a = new Arguments();
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal))
                throw new ArgumentException($"Unexpected argument '{args[i]}'; arguments are --name value or --flag.");
            string name = args[i][2..];
            string? value = i + 1 < args.Length && !args[i + 1].StartsWith("--", StringComparison.Ordinal) ? args[++i] : null;
            a._values[name] = value;
        }

        return a;
    }

    public bool Has(string name) => _values.ContainsKey(name);

    public string? String(string name) => _values.GetValueOrDefault(name);

    public int Int(string name, int fallback) => _values.GetValueOrDefault(name) is { } v ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;

    public double Double(string name, double fallback) => _values.GetValueOrDefault(name) is { } v ? double.Parse(v, CultureInfo.InvariantCulture) : fallback;
}
