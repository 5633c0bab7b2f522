// Generation speed of TextGenerator (issue 11) on randomly initialised models of two sizes: the Shakespeare char model
// (4L, 4H, 128; context raised to 1024 so a 256-token prompt and 256 new tokens fit) and a GPT-2 124M-shaped one
// (12L, 12H, 768, vocabulary 50257, context 1024). Greedy decoding, no end-of-sequence id, so every run generates
// exactly the tokens asked for. Weights are random: speed does not depend on what they say.
//   dotnet run -c Release --project benchmarks/GenerationBenchmarks [-- --only shakespeare|gpt2] [--threads N]
//   (--beams: milliseconds per step of beam search against beam sampling, 4 beams, both models;
//    --libtorch-linear: linear layers through libtorch's linear (MKL) instead of DecodeLinear, to compare the two)
// Printed per model:
//   - time to first token: Generate with MaxNewTokens = 1 after a 256-token prompt (prefill + one step);
//   - tokens/s for 1 prompt and for 8 prompts in one batch (32-token prompts; 128 new tokens, GPT-2 48), end to end and
//     decode only (without the prefill, timed on its own); the median of 21 alternating runs of each (GPT-2: 3);
//   - 256 new tokens after a 256-token prompt with the KV cache (TextGenerator) vs without (a full forward pass of
//     the whole sequence per token, as generation without a cache does). For GPT-2 the uncached run is estimated from
//     8 timed full passes at evenly spaced lengths (trapezoid sum over the 256 lengths): all 256 would take minutes;
//   - per-token cost of a cached step at position 10 and at position 500 (median of 9 single-token steps each).
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.Llm;
using Microsoft.ML.Llm.Data;
using TorchSharp;
using static TorchSharp.torch;

CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
string? only = Option("--only");
int threads = int.Parse(Option("--threads") ?? Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
torch.set_num_threads(threads);
if (args.Contains("--libtorch-linear"))
{
    DecodeLinear.Enabled = false;   // every linear layer through libtorch (MKL), as before DecodeLinear: for side-by-side runs
}

Console.WriteLine($"Machine: {CpuModel()}, {Environment.ProcessorCount} logical cores, {Environment.OSVersion}, .NET {Environment.Version}, libtorch {torch.__version__}");
Console.WriteLine($"Date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; torch threads: {threads}; linear layers: {(DecodeLinear.Enabled ? "DecodeLinear up to 32 rows" : "libtorch")}; load average at start: {LoadAverage()}");
if (args.Contains("--batch-steps"))
{
    // The cached step of GPT-2 124M for 1 and for 8 rows: what batching can gain once the prompts are in the cache.
    torch.manual_seed(1);
    using var gpt2 = new GptModel(GptConfig.Gpt2Small());
    gpt2.eval();
    torch.manual_seed(1);
    using var small = new GptModel(GptConfig.ShakespeareChar(65) with { ContextLength = 1024 });
    small.eval();
    foreach (int rows in new[] { 1, 8, 1, 8 })
    {
        Console.WriteLine($"Shakespeare cached step, {rows} row(s) at position 40: {BatchStepCost(small, rows, 40) * 1000:F2} ms; load {LoadAverage()}");
    }

    foreach (int rows in new[] { 1, 8, 1, 8 })
    {
        Console.WriteLine($"GPT-2 124M cached step, {rows} row(s) at position 40: {BatchStepCost(gpt2, rows, 40) * 1000:F1} ms; load {LoadAverage()}");
    }

    return 0;
}

if (args.Contains("--beams"))
{
    // Beam search against beam sampling (issue 11): 4 beams, 32-token prompt, no end-of-sequence id (every step runs).
    Beams("Shakespeare char (4L, 4H, 128)", GptConfig.ShakespeareChar(65) with { ContextLength = 1024 }, 64);
    Beams("GPT-2 124M (12L, 12H, 768)", GptConfig.Gpt2Small(), 24);
    return 0;
}

if (args.Contains("--anatomy"))
{
    Anatomy();
    return 0;
}

Console.WriteLine();
Console.WriteLine("| model | TTFT (256-token prompt) | tokens/s, 1 prompt | tokens/s, 8 prompts | × | × decode only | 256 new after 256: cached | uncached | × | ms/token at 10 | at 500 | ratio |");
Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
if (only is null or "shakespeare")
{
    Run("Shakespeare char (4L, 4H, 128)", GptConfig.ShakespeareChar(65) with { ContextLength = 1024 }, exactUncached: true);
}

if (only is null or "gpt2")
{
    Run("GPT-2 124M (12L, 12H, 768)", GptConfig.Gpt2Small(), exactUncached: false);
}

Console.WriteLine();
Console.WriteLine($"Load average at end: {LoadAverage()}");
return 0;

static void Run(string name, GptConfig config, bool exactUncached)
{
    torch.manual_seed(1);
    using var model = new GptModel(config);
    model.eval();
    var generator = new TextGenerator(model, LmTokenizer.Bytes());
    int vocabulary = config.ResolvedVocabularySize;
    var random = new Random(1);
    int[] Prompt(int length) => Enumerable.Range(0, length).Select(_ => random.Next(vocabulary)).ToArray();
    GenerationOptions Greedy(int n) => new() { DoSample = false, MaxNewTokens = n };

    var prompt256 = Prompt(256);
    generator.GenerateTokens(Prompt(16), Greedy(4));                                     // warm-up
    double ttft = Median(3, () => Time(() => generator.GenerateTokens(prompt256, Greedy(1))));

    int newTokens = exactUncached ? 128 : 48;
    var prompts = Enumerable.Range(0, 8).Select(_ => Prompt(32)).ToArray();
    // One prompt and the batch of 8 alternate, and each takes the median of its runs: a single timing of a 50 ms call
    // moved by ±30% with the shared machine's load (2.6-3.9× for the same code in one afternoon; with 7 runs the median
    // still moved by ±15% between processes). GPT-2's calls take seconds, so 3 runs each.
    int runs = exactUncached ? 21 : 3;
    var singles = new List<double>();
    var batches = new List<double>();
    for (int run = 0; run < runs; run++)
    {
        singles.Add(Time(() => generator.GenerateTokens(prompts[0], Greedy(newTokens))));
        batches.Add(Time(() => generator.GenerateTokens(prompts, Greedy(newTokens))));
    }

    double single = singles.Order().ElementAt(runs / 2);
    double batched = batches.Order().ElementAt(runs / 2);
    double singleRate = newTokens / single, batchedRate = 8 * newTokens / batched;

    // Decode only: without the prompts' prefill (and first token), timed on its own.
    double singlePrefill = Median(runs, () => Time(() => generator.GenerateTokens(prompts[0], Greedy(1))));
    double batchedPrefill = Median(runs, () => Time(() => generator.GenerateTokens(prompts, Greedy(1))));
    double decodeRatio = (8 * (newTokens - 1) / (batched - batchedPrefill)) / ((newTokens - 1) / (single - singlePrefill));

    double cached = Time(() => generator.GenerateTokens(prompt256, Greedy(256)));
    double uncached = exactUncached ? Time(() => Uncached(model, prompt256, 256)) : UncachedEstimate(model, prompt256, 256);

    double at10 = StepCost(model, Prompt(10)), at500 = StepCost(model, Prompt(500));
    Console.WriteLine($"| {name} | {ttft * 1000:F0} ms | {singleRate:F1} | {batchedRate:F1} | {batchedRate / singleRate:F2} | {decodeRatio:F2} | {cached:F2} s | {uncached:F2} s{(exactUncached ? "" : " (est.)")} | {uncached / cached:F1} | {at10 * 1000:F2} | {at500 * 1000:F2} | {at500 / at10:F2} |");
}

// Milliseconds per step of beam search and of beam sampling (plain, and with top-k 50), 4 beams, median of 3 runs.
static void Beams(string name, GptConfig config, int newTokens)
{
    torch.manual_seed(1);
    using var model = new GptModel(config);
    model.eval();
    var generator = new TextGenerator(model, LmTokenizer.Bytes());
    var random = new Random(1);
    var prompt = Enumerable.Range(0, 32).Select(_ => random.Next(config.ResolvedVocabularySize)).ToArray();
    GenerationOptions Options(bool sample, int topK) => new() { DoSample = sample, NumBeams = 4, MaxNewTokens = newTokens, Seed = 1, TopK = topK };
    generator.GenerateTokens(prompt, Options(true, 0));                                   // warm-up
    double PerStep(GenerationOptions options) => Median(3, () => Time(() => generator.GenerateTokens(prompt, options))) / newTokens * 1000;
    double search = PerStep(Options(false, 0)), sample = PerStep(Options(true, 0)), topK = PerStep(Options(true, 50));
    Console.WriteLine($"{name}, 4 beams, {newTokens} new tokens after 32: beam search {search:F1} ms/step, beam sampling {sample:F1} ms/step ({sample / search:F2}×), with top-k 50 {topK:F1} ms/step; load {LoadAverage()}");
}

// Greedy decoding with a full forward pass of the whole sequence per token: what generation costs without a cache.
static void Uncached(GptModel model, int[] prompt, int count)
{
    var sequence = prompt.Select(t => (long)t).ToList();
    int vocabulary = model.Config.ResolvedVocabularySize;
    for (int i = 0; i < count; i++)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var logits = model.ForwardLastPosition(tensor(sequence.ToArray(), new long[] { 1, sequence.Count }))[0, -1, ..vocabulary];
        sequence.Add(logits.argmax().item<long>());
    }
}

// The uncached run's time from 8 full passes at lengths spread over prompt.Length .. prompt.Length + count − 1.
static double UncachedEstimate(GptModel model, int[] prompt, int count)
{
    var lengths = Enumerable.Range(0, 8).Select(i => prompt.Length + i * (count - 1) / 7).ToArray();
    var seconds = lengths.Select(length =>
    {
        var ids = Enumerable.Range(0, length).Select(i => (long)prompt[i % prompt.Length]).ToArray();
        return Time(() =>
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            model.ForwardLastPosition(tensor(ids, new long[] { 1, length }))[0, -1].argmax().item<long>();
        });
    }).ToArray();
    double total = 0;
    for (int i = 0; i + 1 < lengths.Length; i++)
    {
        total += (seconds[i] + seconds[i + 1]) / 2 * (lengths[i + 1] - lengths[i]);
    }

    return total + seconds[^1];
}

// The median time of one cached single-token step after a cache of prefix.Length positions.
static double StepCost(GptModel model, int[] prefix)
{
    using var cache = new KvCache(model);
    using (var scope = NewDisposeScope())
    {
        model.forward(tensor(prefix.Select(t => (long)t).ToArray(), new long[] { 1, prefix.Length }), cache);
    }

    return Median(9, () => Time(() =>
    {
        using var scope = NewDisposeScope();
        model.forward(tensor(new long[] { prefix[0] }, new long[] { 1, 1 }), cache)[0, -1].argmax().item<long>();
    }));
}

// Where a generated token's time goes (Shakespeare size): the model's cached step alone, DecodingBatch.Step (inputs,
// forward, logits to managed memory), and a whole GenerateTokens call per token.
static void Anatomy()
{
    torch.manual_seed(1);
    using var model = new GptModel(GptConfig.ShakespeareChar(65) with { ContextLength = 1024 });
    model.eval();
    var prompt = Enumerable.Range(0, 32).Select(i => i % 65).ToArray();
    var generator = new TextGenerator(model, LmTokenizer.Bytes());
    generator.GenerateTokens(prompt, new GenerationOptions { DoSample = false, MaxNewTokens = 8 });
    for (int run = 0; run < 3; run++)
    {
        double forward = StepCost(model, prompt);
        using var batch = new DecodingBatch(model);
        batch.Prefill([prompt]);
        double step = Median(9, () => Time(() => batch.Step([1])));
        double whole = Time(() => generator.GenerateTokens(prompt, new GenerationOptions { DoSample = false, MaxNewTokens = 100 })) / 100;
        var sequences = Enumerable.Range(0, run == 0 ? 1 : 8).Select(_ => new GeneratedSequence(prompt)).ToArray();
        using var rng = new torch.Generator(1);
        var times = new List<double>();
        var watch = Stopwatch.StartNew();
        foreach (var _ in Decoding.Sample(model, sequences, new GenerationOptions { DoSample = false, MaxNewTokens = 100 }, rng, CancellationToken.None))
        {
            times.Add(watch.Elapsed.TotalMilliseconds);
            watch.Restart();
        }

        Console.WriteLine($"Sample ({sequences.Length} rows) per step: first {times[0]:F2} ms, median {times.Order().ElementAt(times.Count / 2):F3} ms, max {times.Max():F2}, total {times.Sum():F1}");
        Console.WriteLine($"forward {forward * 1000:F3} ms, DecodingBatch.Step {step * 1000:F3} ms, GenerateTokens per token {whole * 1000:F3} ms; load {LoadAverage()}");
    }
}

// The median time of one cached single-token step of a batch of rows after a cache of length positions.
static double BatchStepCost(GptModel model, int rows, int length)
{
    using var cache = new KvCache(model);
    using (var scope = NewDisposeScope())
    {
        model.forward(torch.zeros(rows, length, dtype: ScalarType.Int64), cache);
    }

    return Median(5, () => Time(() =>
    {
        using var scope = NewDisposeScope();
        model.forward(torch.ones(rows, 1, dtype: ScalarType.Int64), cache)[.., -1].argmax(-1).data<long>().ToArray();
    }));
}

static double Time(Action action)
{
    var watch = Stopwatch.StartNew();
    action();
    return watch.Elapsed.TotalSeconds;
}

static double Median(int runs, Func<double> measure)
{
    var values = Enumerable.Range(0, runs).Select(_ => measure()).OrderBy(v => v).ToArray();
    return values[runs / 2];
}

static string? Option(string name)
{
    var args = Environment.GetCommandLineArgs();
    int at = Array.IndexOf(args, name);
    return at >= 0 && at + 1 < args.Length ? args[at + 1] : null;
}

static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";

static string CpuModel()
{
    if (!File.Exists("/proc/cpuinfo"))
    {
        return "unknown CPU";
    }

    var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
    return line is null ? "unknown CPU" : line[(line.IndexOf(':') + 1)..].Trim();
}
