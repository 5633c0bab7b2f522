// Sweeps on Tiny Shakespeare (character level), issue 8's evidence: for each seed, a sweep of a fixed wall-clock
// budget with ASHA, with TPE (the model-based tuner) and with random search, and nanoGPT's hand-tuned CPU configuration
// (4 layers, 4 heads, 128 wide, context 64, batch 12, lr 1e-3 → 1e-4, warmup 100, β2 0.99, 2000 iterations) trained for
// the same budget (method hand-budget: past its 2000 iterations at the floor learning rate until the budget is spent). Every method's best model is scored on the whole validation split (the last 10%, nanoGPT's split).
// With totalTokens > 0 the budget is compute instead of time: each sweep gets totalTokens training tokens over all its
// trials (SetMaxTotalTokens) and the hand-tuned run trains on as many, so a loaded machine does not skew the comparison
// (budgetSeconds stays as a cap). Final scores: the first scoreChars characters of the validation split (0 = all).
// With finalFraction > 0 each sweep keeps that share of its budget for a final phase (LlmExperiment.SetFinalTraining):
// the best trial continues from its checkpoint on the rest, and that model is the sweep's result.
// With trialSeconds > 0 every search trial gets that training time (LlmExperiment.SetTrialTimeInSeconds) and ASHA's
// rungs are in training time (trialSeconds/9 · 3^k), so configurations are compared after the same wall time, which is
// what the sweep's time budget rewards; trialTokens = 0 then lifts the token cap.
// The methods of one seed run back to back (similar machine load); the load average is printed at each one's start and end.
// space: narrow (default) searches 6 parameters (learning rate, warm-up, batch, layers, width, β2); wide adds the other
// trainer parameters issue 8 names that keep the character vocabulary and the 64-token blocks (gradient accumulation,
// heads, dropout, weight decay, precision) and wider layer and width choices, so most of its configurations are poor.
// ashaTrialSeconds gives ASHA a larger maximum resource than the other tuners' trial time (Hyperband's R): it stops most
// trials at the first rungs, so it can afford to train its survivors longer, which random search cannot.
//
// dotnet run -c Release --project benchmarks/Sweeps -- [budgetSeconds=600] [seeds=1,2,3] [methods=asha,tpe,random,hand]
//     [trialTokens=budget·2000] [outDir] [totalTokens=0] [scoreChars=0] [finalFraction=0.5] [trialSeconds=0] [space=narrow]
//     [ashaTrialSeconds=trialSeconds]
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Llm;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.Llm.Sweeping;
using Microsoft.ML.SearchSpace;

CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
double budget = args.Length > 0 ? double.Parse(args[0], CultureInfo.InvariantCulture) : 600;
int[] seeds = (args.Length > 1 ? args[1] : "1,2,3").Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
string[] methods = (args.Length > 2 ? args[2] : "asha,tpe,random,hand").Split(',');
long trialTokens = args.Length > 3 ? long.Parse(args[3], CultureInfo.InvariantCulture) : (long)(budget * 2000);
string outDir = args.Length > 4 ? args[4] : Path.Combine(Path.GetTempPath(), "llm-sweeps-" + DateTime.UtcNow.ToString("yyyyMMdd-HHmmss"));
Directory.CreateDirectory(outDir);
long totalTokens = args.Length > 5 ? long.Parse(args[5], CultureInfo.InvariantCulture) : 0;
int scoreChars = args.Length > 6 ? int.Parse(args[6], CultureInfo.InvariantCulture) : 0;
double finalFraction = args.Length > 7 ? double.Parse(args[7], CultureInfo.InvariantCulture) : 0.5;
double trialSeconds = args.Length > 8 ? double.Parse(args[8], CultureInfo.InvariantCulture) : 0;
bool wide = (args.Length > 9 ? args[9] : "narrow") switch
{
    "narrow" => false,
    "wide" => true,
    var other => throw new ArgumentException($"Unknown space '{other}'; expected narrow or wide."),
};
// ASHA's largest resource R (its trials' time budget), when it differs from the other tuners' trial time: rungs stay at
// trialSeconds/9 · 3^k, and the trials that keep winning train up to ashaTrialSeconds (60 = a fourth rung).
double ashaTrialSeconds = args.Length > 10 ? double.Parse(args[10], CultureInfo.InvariantCulture) : trialSeconds;
// Evaluations: every 50 steps on 20 batches (nanoGPT's eval_iters for its CPU run); with a small compute budget, every
// 10 steps on 5 batches so the rungs and the curves have points.
int evaluationInterval = totalTokens > 0 ? 10 : 50;
int evaluationBatches = totalTokens > 0 ? 5 : 20;

const int Context = 64;
string text = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "data", "tinyshakespeare.txt"));
int split = (int)(text.Length * 0.9);
// The vocabulary is the characters of the whole text, as nanoGPT's prepare.py builds it; every trial uses it.
var vocabulary = LmTokenizer.Character([text]);
Console.WriteLine($"Machine: {Environment.ProcessorCount} logical cores, {Environment.OSVersion}, .NET {Environment.Version}; load average at start: {LoadAverage()}");
long rung = totalTokens > 0 ? trialTokens / 3 : trialTokens / 9;
var rungTime = TimeSpan.FromSeconds(trialSeconds / 9);
Console.WriteLine($"Budget {budget} s per sweep and for the hand-tuned run" + (totalTokens > 0 ? $" (cap), {totalTokens} training tokens per sweep and for the hand-tuned run" : "") +
    $"; seeds {string.Join(",", seeds)}; trial budget " + (trialTokens > 0 ? $"{trialTokens} tokens" : "no token cap") + (trialSeconds > 0 ? $", {trialSeconds} s of training" : "") +
    (trialSeconds > 0 ? $"; ASHA rungs at {rungTime.TotalSeconds:0.##} s·3^k of training time" : $"; ASHA rungs at {rung}·3^k tokens") + $" (evaluated at the first step reaching each); evaluation every {evaluationInterval} steps on {evaluationBatches} batches; " +
    $"final phase {finalFraction:P0} of each sweep's budget; {(wide ? "wide" : "narrow")} search space" +
    (ashaTrialSeconds != trialSeconds ? $"; ASHA's trials up to {ashaTrialSeconds} s" : "") + $"; output {outDir}");

var results = new List<(string Method, int Seed, double Loss, int Trials, int Stopped, string Best)>();
foreach (int seed in seeds)
{
    foreach (string method in methods)
    {
        var ml = new MLContext(seed);
        var trainText = ml.Data.LoadFromEnumerable(new[] { new TextRow(text[..split]) });
        var validationText = ml.Data.LoadFromEnumerable(new[] { new TextRow(text[split..]) });
        var scoreText = scoreChars > 0 ? ml.Data.LoadFromEnumerable(new[] { new TextRow(text[split..Math.Min(text.Length, split + scoreChars)]) }) : validationText;
        string loadAtStart = LoadAverage();
        Console.WriteLine($"-- {method}, seed {seed}: start {DateTime.UtcNow:HH:mm:ss} UTC, load average {loadAtStart}");
        var clock = Stopwatch.StartNew();
        ITransformer model;
        int trials = 1;
        int stopped = 0;
        string best;
        if (method is "hand" or "hand-budget")
        {
            // "hand": nanoGPT's max_iters 2000 (it may end before the budget); "hand-budget": the same schedule, then
            // on at the floor learning rate (nanoGPT past lr_decay_iters) until the budget is spent.
            var pipeline = Pipeline(ml, Trial.From(new SweepSpace()), new CausalLmTrainerOptions
            {
                MaxSteps = method == "hand" ? 2000 : null,
                DecaySteps = 2000,                                     // nanoGPT's lr_decay_iters
                MaxTokens = totalTokens > 0 ? totalTokens : null,
                TimeBudget = TimeSpan.FromSeconds(budget),
                Seed = seed,
            }, PrepareValidation(ml, validationText));
            model = pipeline.Fit(trainText);
            var lm = ((IEnumerable<ITransformer>)model).OfType<CausalLmTransformer>().Single();
            best = $"nanoGPT config, {lm.History.Count} steps, {lm.History[^1].Tokens} tokens";
        }
        else
        {
            var experiment = ml.Llm().CreateExperiment()
                .SetDataset(trainText, validationText)
                .SetPipeline(wide ? new SearchSpace<WideSweepSpace>() : new SearchSpace<SweepSpace>(),
                    (ctx, p) => Pipeline(ctx, wide ? Trial.From(p.AsType<WideSweepSpace>()) : Trial.From(p.AsType<SweepSpace>()), new CausalLmTrainerOptions(), null))
                .SetTrainingTimeInSeconds(budget)
                .SetSeed(seed)
                .SetSweepDirectory(Path.Combine(outDir, $"{method}-seed{seed}"))
                .SetProgress(new ConsoleProgress());
            experiment = method switch
            {
                "asha" => trialSeconds > 0 ? experiment.SetAshaTuner(rungTime, reductionFactor: 3) : experiment.SetAshaTuner(minTokens: rung, reductionFactor: 3),
                "tpe" => experiment.SetTreeParzenTuner(startupTrials: 2),
                "random" => experiment.SetRandomSearchTuner(),
                _ => throw new ArgumentException($"Unknown method '{method}'; expected asha, tpe, random, hand or hand-budget."),
            };
            if (trialTokens > 0)
                experiment.SetMaxTokens(trialTokens);
            if (trialSeconds > 0)
                experiment.SetTrialTimeInSeconds(method == "asha" ? ashaTrialSeconds : trialSeconds);
            if (totalTokens > 0)
                experiment.SetMaxTotalTokens(totalTokens);
            experiment.SetFinalTraining(finalFraction);
            var bestTrial = experiment.RunAsync().GetAwaiter().GetResult();
            model = bestTrial.Model ?? throw new InvalidOperationException("The best trial has no model.");
            trials = experiment.Result.Trials.Count(t => !t.IsFinalPhase);
            stopped = experiment.Result.Trials.Count(t => t.Status == TrialStatus.Stopped && !t.IsFinalPhase);
            var finalLm = ((IEnumerable<ITransformer>)model).OfType<CausalLmTransformer>().Single();
            best = (bestTrial.IsFinalPhase ? $"final phase: trial {bestTrial.TrialSettings.ContinuesTrial} continued, " : $"trial {bestTrial.TrialId}, ") +
                $"{finalLm.History[^1].Step} steps, {finalLm.History[^1].Tokens} tokens: {bestTrial.Parameter}";
            Console.WriteLine(experiment.Result.ToTable());
        }

        // The whole validation split in consecutive, non-overlapping blocks, scored by the language model alone.
        var lmOnly = ((IEnumerable<ITransformer>)model).OfType<CausalLmTransformer>().Single();
        var validationBlocks = PrepareValidation(ml, scoreText);
        double loss = ml.Llm().Evaluate(lmOnly, validationBlocks).Loss;
        Console.WriteLine($"== {method}, seed {seed}: validation loss {loss:F4} ({(scoreChars > 0 ? $"first {scoreChars} characters of the split" : "whole split")}) after {clock.Elapsed.TotalSeconds:F0} s, {trials} trials ({stopped} stopped); {best}; load average {loadAtStart} at start, {LoadAverage()} at end");
        results.Add((method, seed, loss, trials, stopped, best));
        (model as IDisposable)?.Dispose();
    }
}

Console.WriteLine();
Console.WriteLine($"| method | {string.Join(" | ", seeds.Select(s => $"seed {s}"))} | median | trials (stopped) |");
Console.WriteLine($"|---|{string.Concat(seeds.Select(_ => "---|"))}---|---|");
foreach (string method in methods)
{
    var rows = results.Where(r => r.Method == method).ToArray();
    var losses = rows.Select(r => r.Loss).Order().ToArray();
    double median = losses.Length % 2 == 1 ? losses[losses.Length / 2] : (losses[losses.Length / 2 - 1] + losses[losses.Length / 2]) / 2;
    Console.WriteLine($"| {method} | {string.Join(" | ", rows.Select(r => r.Loss.ToString("F4")))} | {median:F4} | {string.Join(", ", rows.Select(r => $"{r.Trials} ({r.Stopped})"))} |");
}

Console.WriteLine($"Load average at end: {LoadAverage()}");

// The pipeline: character tokenizer (the fixed vocabulary) → packing into consecutive blocks of 64 + 1 → GPT. Inside a
// sweep the validation text goes through the same fitted transforms; outside, validationBlocks are given.
IEstimator<ITransformer> Pipeline(MLContext ml, Trial o, CausalLmTrainerOptions options, IDataView? validationBlocks)
{
    options.Model = GptConfig.ShakespeareChar() with { LayerCount = o.Layers, EmbeddingSize = o.EmbeddingSize, HeadCount = o.Heads, Dropout = o.Dropout };
    options.BatchSize = o.BatchSize;
    options.GradientAccumulationSteps = o.GradientAccumulationSteps;
    options.LearningRate = o.LearningRate;
    options.MinLearningRate = o.LearningRate / 10;
    options.WarmupSteps = o.WarmupSteps;
    options.Beta2 = o.Beta2;
    options.WeightDecay = o.WeightDecay;
    if (o.Precision is { } precision)
        options.Precision = precision;
    options.EvaluationInterval = evaluationInterval;
    options.EvaluationBatches = evaluationBatches;
    options.LogInterval = evaluationInterval;
    options.CheckpointInterval = 100_000;
    // One torch thread: on the shared, loaded machine two threads' OpenMP barriers stall (benchmarks/README.md).
    options.NumberOfThreads = 1;
    options.PeakFlops = 1e11;         // MFU is not reported here; skip the per-process matmul-peak measurement
    if (validationBlocks is not null)
        options.ValidationSet = validationBlocks;
    return ml.Transforms.Text.TokenizeForLm("Ids", "Text", new LmTokenizerOptions { Tokenizer = vocabulary })
        .Append(ml.Transforms.Text.PackTokens("Tokens", "Ids", contextLength: Context))
        .Append(ml.Llm().Trainers.CausalLm(options));
}

IDataView PrepareValidation(MLContext ml, IDataView validationText) =>
    ml.Transforms.Text.TokenizeForLm("Ids", "Text", new LmTokenizerOptions { Tokenizer = vocabulary })
        .Append(ml.Transforms.Text.PackTokens("Tokens", "Ids", contextLength: Context))
        .Fit(validationText).Transform(validationText);

static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";

/// <summary>The search space; its initial values are nanoGPT's Shakespeare-char CPU configuration.</summary>
public sealed class SweepSpace
{
    [Range(2e-4, 1e-2, init: 1e-3, logBase: true)]
    public double LearningRate { get; set; } = 1e-3;

    [Choice(new object[] { 0, 20, 100 }, 100)]
    public int WarmupSteps { get; set; } = 100;

    [Choice(new object[] { 8, 12, 16, 32 }, 12)]
    public int BatchSize { get; set; } = 12;

    [Choice(new object[] { 2, 4 }, 4)]
    public int Layers { get; set; } = 4;

    [Choice(new object[] { 64, 128 }, 128)]
    public int EmbeddingSize { get; set; } = 128;

    [Choice(new object[] { 0.95, 0.99 }, 0.99)]
    public double Beta2 { get; set; } = 0.99;
}

/// <summary>
/// The wide search space: the narrow one's parameters with wider layer and width choices, plus gradient accumulation,
/// heads, dropout, weight decay and precision. Its initial values are nanoGPT's configuration too.
/// </summary>
public sealed class WideSweepSpace
{
    [Range(2e-4, 1e-2, init: 1e-3, logBase: true)]
    public double LearningRate { get; set; } = 1e-3;

    [Choice(new object[] { 0, 20, 100 }, 100)]
    public int WarmupSteps { get; set; } = 100;

    [Choice(new object[] { 8, 12, 16, 32 }, 12)]
    public int BatchSize { get; set; } = 12;

    [Choice(new object[] { 1, 2, 4 }, 1)]
    public int GradientAccumulationSteps { get; set; } = 1;

    [Choice(new object[] { 2, 4, 6 }, 4)]
    public int Layers { get; set; } = 4;

    [Choice(new object[] { 64, 128, 256 }, 128)]
    public int EmbeddingSize { get; set; } = 128;

    [Choice(new object[] { 2, 4, 8 }, 4)]
    public int Heads { get; set; } = 4;

    [Range(0.0, 0.2, init: 0.0)]
    public double Dropout { get; set; }

    [Range(1e-3, 0.3, init: 0.1, logBase: true)]
    public double WeightDecay { get; set; } = 0.1;

    [Choice(new object[] { 0.95, 0.99 }, 0.99)]
    public double Beta2 { get; set; } = 0.99;

    [Choice(new object[] { TrainingPrecision.Fp32, TrainingPrecision.Bf16Mixed }, TrainingPrecision.Bf16Mixed)]
    public TrainingPrecision Precision { get; set; } = TrainingPrecision.Bf16Mixed;
}

/// <summary>One trial's settings, from either space (the narrow one leaves the rest at the trainer's defaults).</summary>
internal sealed record Trial(double LearningRate, int WarmupSteps, int BatchSize, int Layers, int EmbeddingSize, double Beta2,
    int GradientAccumulationSteps = 1, int Heads = 4, double Dropout = 0, double WeightDecay = CausalLmTrainerOptions.Defaults.WeightDecay,
    TrainingPrecision? Precision = null)
{
    public static Trial From(SweepSpace o) => new(o.LearningRate, o.WarmupSteps, o.BatchSize, o.Layers, o.EmbeddingSize, o.Beta2);

    public static Trial From(WideSweepSpace o) => new(o.LearningRate, o.WarmupSteps, o.BatchSize, o.Layers, o.EmbeddingSize, o.Beta2,
        o.GradientAccumulationSteps, o.Heads, o.Dropout, o.WeightDecay, o.Precision);
}

internal sealed record TextRow(string Text);

/// <summary>Prints each trial's end and every fifth trainer report, on the training thread.</summary>
internal sealed class ConsoleProgress : IProgress<SweepProgress>
{
    private int _reports;

    public void Report(SweepProgress value)
    {
        if (value.Finished is not null || value.Training is null || ++_reports % 5 == 0)
            Console.WriteLine(value);
    }
}
