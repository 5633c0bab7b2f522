// Training from token shards on disk vs from memory (issue 12): writes a token corpus of the given size as shards
// (once; reused when present), then trains the same small model for the same steps twice, each in its own process so
// that each peak resident memory (VmHWM) is its own: from the memory-mapped shards, and from an in-memory copy of the
// first blocks (the path every trainer run took before shards). Prints tokens/s of both, their ratio, and both peaks.
//
//   dotnet run -c Release --project benchmarks/TokenShards -- [dir=/tmp/llm-shards-bench] [gigabytes=4] [steps=120]
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Llm;
using Microsoft.ML.Llm.Data;

CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
const int Context = 128, Vocabulary = 4096, InMemoryBlocks = 200_000;
if (args.Length > 0 && args[0] is "train-shards" or "train-memory")
{
    Train(args[0], args[1], int.Parse(args[2], CultureInfo.InvariantCulture));
    return;
}

string dir = args.Length > 0 ? args[0] : Path.Combine(Path.GetTempPath(), "llm-shards-bench");
double gigabytes = args.Length > 1 ? double.Parse(args[1], CultureInfo.InvariantCulture) : 4;
int steps = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 120;
Console.WriteLine($"Machine: {Environment.ProcessorCount} cores, {Environment.OSVersion}; load average {File.ReadAllText("/proc/loadavg").Trim()}");

long blocks = (long)(gigabytes * (1L << 30) / 2 / (Context + 1));
var existing = Directory.Exists(dir) ? Directory.GetFiles(dir, "shard-*.bin") : [];
if (existing.Length == 0 || existing.Sum(f => new FileInfo(f).Length) < gigabytes * (1L << 30) * 0.99)
{
    var clock = Stopwatch.StartNew();
    var ml = new MLContext(seed: 1);
    var report = ml.Data.SaveAsTokenShards(new SyntheticBlocks(blocks, Context + 1, Vocabulary), dir,
        new TokenShardOptions { VocabularySize = Vocabulary, Overwrite = true });
    Console.WriteLine($"Wrote {report.Tokens / 1e9:F2} G tokens in {report.Shards} shards ({report.Bytes / (double)(1L << 30):F2} GiB) in {clock.Elapsed.TotalSeconds:F0} s " +
        $"({report.Bytes / clock.Elapsed.TotalSeconds / (1 << 20):F0} MiB/s).");
}
else
{
    Console.WriteLine($"Reusing {existing.Length} shards in {dir} ({existing.Sum(f => new FileInfo(f).Length) / (double)(1L << 30):F2} GiB).");
}

string self = Environment.ProcessPath!;
string dll = typeof(SyntheticBlocks).Assembly.Location;
var results = new Dictionary<string, (double TokensPerSecond, double PeakGiB)>();
foreach (var mode in (string[])["train-shards", "train-memory"])
{
    var start = new ProcessStartInfo(self, Path.GetFileName(self) == "dotnet" ? $"\"{dll}\" {mode} \"{dir}\" {steps}" : $"{mode} \"{dir}\" {steps}")
    {
        RedirectStandardOutput = true,
    };
    using var child = Process.Start(start)!;
    string output = child.StandardOutput.ReadToEnd();
    child.WaitForExit();
    Console.Write(output);
    var line = output.Split('\n').First(l => l.StartsWith("RESULT", StringComparison.Ordinal)).Split(' ');
    results[mode] = (double.Parse(line[1], CultureInfo.InvariantCulture), double.Parse(line[2], CultureInfo.InvariantCulture));
}
var shards = results["train-shards"];
var memory = results["train-memory"];
Console.WriteLine($"Shards: {shards.TokensPerSecond:F0} tokens/s, peak {shards.PeakGiB:F2} GiB over a {gigabytes:F1} GiB corpus.");
Console.WriteLine($"Memory: {memory.TokensPerSecond:F0} tokens/s, peak {memory.PeakGiB:F2} GiB for {InMemoryBlocks} blocks in memory.");
Console.WriteLine($"Ratio shards/memory: {shards.TokensPerSecond / memory.TokensPerSecond:F3} (target ≥ 0.95); shard peak < 1.5 GiB: {shards.PeakGiB < 1.5}.");

static void Train(string mode, string dir, int steps)
{
    var ml = new MLContext(seed: 1);
    var shards = ml.Data.LoadTokenShards(dir, verifyChecksums: false);
    // The in-memory path: a view of the first blocks that is not a shard view, so the trainer copies it into an array.
    IDataView data = mode == "train-shards" ? shards : ml.Data.TakeRows(shards, InMemoryBlocks);
    var clock = Stopwatch.StartNew();
    var lm = ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions
    {
        Model = GptConfig.ModernSmall(Vocabulary, Context) with { LayerCount = 4, HeadCount = 4, EmbeddingSize = 128 },
        BatchSize = 16,
        MaxSteps = steps,
        LogInterval = 10,
        NumberOfThreads = Environment.ProcessorCount,
    }).Fit(data);
    // Steady state: tokens/s after the first 10% of the steps (warm-up, page faults of the first batches).
    var history = lm.History;
    var from = history[history.Count / 10];
    var to = history[^1];
    double tokensPerSecond = (to.Tokens - from.Tokens) / (to.ElapsedSeconds - from.ElapsedSeconds);
    double peak = PeakGiB();
    Console.WriteLine($"{mode}: {steps} steps in {clock.Elapsed.TotalSeconds:F1} s (including reading the data), {tokensPerSecond:F0} tokens/s, peak RSS {peak:F2} GiB");
    Console.WriteLine($"RESULT {tokensPerSecond.ToString(CultureInfo.InvariantCulture)} {peak.ToString(CultureInfo.InvariantCulture)}");
}

static double PeakGiB()
{
    foreach (var line in File.ReadLines("/proc/self/status"))
    {
        if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
            return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / (double)(1 << 20);
    }
    return double.NaN;
}

/// <summary>Rows of random-looking token blocks, made on the fly (a corpus larger than memory is never held).</summary>
internal sealed class SyntheticBlocks(long rows, int blockLength, int vocabulary) : IDataView
{
    public int BlockLength => blockLength;

    public int Vocabulary => vocabulary;

    public bool CanShuffle => false;

    public DataViewSchema Schema { get; } = MakeSchema(blockLength);

    public long? GetRowCount() => rows;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => new Cursor(this);

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => [new Cursor(this)];

    private static DataViewSchema MakeSchema(int blockLength)
    {
        var builder = new DataViewSchema.Builder();
        builder.AddColumn("Tokens", new VectorDataViewType(NumberDataViewType.Int32, blockLength));
        return builder.ToSchema();
    }

    private sealed class Cursor(SyntheticBlocks view) : DataViewRowCursor
    {
        private long _position = -1;
        private ulong _state = 0x9E3779B97F4A7C15;

        public override long Position => _position;

        public override long Batch => 0;

        public override DataViewSchema Schema => view.Schema;

        public override bool IsColumnActive(DataViewSchema.Column column) => true;

        public override bool MoveNext() => ++_position < view.GetRowCount();

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId id) => id = new DataViewRowId((ulong)_position, 0);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            ValueGetter<VBuffer<int>> getter = (ref VBuffer<int> value) =>
            {
                var editor = VBufferEditor.Create(ref value, view.BlockLength);
                for (int i = 0; i < view.BlockLength; i++)
                {
                    // xorshift64*: fast, seeded, and skewed towards small ids (as Zipf-like text is).
                    _state ^= _state >> 12;
                    _state ^= _state << 25;
                    _state ^= _state >> 27;
                    ulong r = _state * 2685821657736338717UL;
                    editor.Values[i] = (int)((r >> 40) % (ulong)(1 + (int)((r >> 20) % (ulong)view.Vocabulary)));
                }
                value = editor.Commit();
            };
            return (ValueGetter<TValue>)(Delegate)getter;
        }
    }
}
