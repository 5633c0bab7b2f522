using System.Globalization;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.Llm.Sweeping;
using Microsoft.ML.SearchSpace;

namespace Microsoft.ML.Llm.Tests.Sweeps;

/// <summary>Sweeps that train: tiny models, a few steps per trial, the whole pipeline (BPE trained in Fit, packing, trainer).</summary>
[Collection("Torch")]
public sealed class LlmExperimentTests : IDisposable
{
    private const int Context = 16;
    private const int BatchSize = 4;
    private const long TokensPerStep = Context * BatchSize;   // 64

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "llm-sweep-test-" + Guid.NewGuid().ToString("N"));

    public sealed class PipelineSpace
    {
        [Range(1e-3, 1e-2, init: 3e-3, logBase: true)]
        public double LearningRate { get; set; }

        [Range(264, 300, init: 280)]
        public int VocabularySize { get; set; }

        [Choice(PackingMode.Concatenate, PackingMode.BestFit)]
        public PackingMode Packing { get; set; }
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir))
            Directory.Delete(_dir, recursive: true);
    }

    private static (IDataView Train, IDataView Validation) Text(MLContext ml)
    {
        var train = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 12).Select(i => new TestData.TextRow { Text = $"{i}: {TestData.Corpus}" }));
        var validation = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 3).Select(i => new TestData.TextRow { Text = TestData.HeldOut }));
        return (train, validation);
    }

    /// <summary>Tokenizer (vocabulary size searched), packing (mode searched) and a tiny GPT (learning rate searched).</summary>
    private static IEstimator<ITransformer> Pipeline(MLContext ml, PipelineSpace o, double? learningRate = null) =>
        Pipeline(ml, new CausalLmTrainerOptions
        {
            Model = GptConfig.Tiny(contextLength: Context),
            BatchSize = BatchSize,
            LearningRate = learningRate ?? o.LearningRate,
            WarmupSteps = 2,
            EvaluationInterval = 5,
            LogInterval = 5,
            CheckpointInterval = 1000,
            NumberOfThreads = 1,
        }, o.VocabularySize, o.Packing);

    /// <summary>Tokenizer, packing into blocks of <see cref="Context"/> and a GPT trained with <paramref name="options"/>.</summary>
    private static IEstimator<ITransformer> Pipeline(MLContext ml, CausalLmTrainerOptions options, int vocabularySize = 280, PackingMode? packing = null)
    {
        var packer = new TokenPackerOptions { ContextLength = Context };
        if (packing is { } mode)
            packer.Mode = mode;
        return ml.Transforms.Text.TokenizeForLm("Ids", "Text", new LmTokenizerOptions { VocabularySize = vocabularySize })
            .Append(ml.Transforms.Text.PackTokens("Tokens", "Ids", packer))
            .Append(ml.Llm().Trainers.CausalLm(options));
    }

    private LlmExperiment Experiment(MLContext ml, string directory, int maxTrials, Func<MLContext, Parameter, IEstimator<ITransformer>>? factory = null)
    {
        var (train, validation) = Text(ml);
        return ml.Llm().CreateExperiment()
            .SetDataset(train, validation)
            .SetPipeline(new SearchSpace<PipelineSpace>(), factory ?? ((ctx, p) => Pipeline(ctx, p.AsType<PipelineSpace>())))
            .SetMaxTrials(maxTrials)
            .SetMaxTokens(20 * TokensPerStep)
            .SetSeed(1)
            .SetSweepDirectory(directory);
    }

    [Fact]
    public async Task SweepTrainsTheWholePipelineAndReturnsTheBestFittedPipeline()
    {
        var ml = new MLContext(seed: 1);
        var reports = new List<SweepProgress>();
        var experiment = Experiment(ml, _dir, maxTrials: 3).SetRandomSearchTuner().SetProgress(new Recorder<SweepProgress>(reports));
        var best = await experiment.RunAsync();

        var trials = experiment.Result.Trials;
        Assert.Equal([1, 2, 3], trials.Select(t => t.TrialId));
        Assert.All(trials, t =>
        {
            Assert.Equal(TrialStatus.Completed, t.Status);
            Assert.Equal(20 * TokensPerStep, t.Tokens);
            // Evaluations every 5 steps: the objective at 320, 640, 960 and 1280 tokens; the metric is the best of them.
            Assert.Equal([320L, 640, 960, 1280], t.Curve.Select(p => p.Tokens));
            Assert.Equal(t.Curve.Min(p => p.Value), t.Metric);
            Assert.True(File.Exists(Path.Combine(t.TrialSettings.LogDirectory, "metrics.csv")));
            Assert.True(File.Exists(Path.Combine(t.TrialSettings.Directory, "result.json")));
        });
        Assert.Equal(3, trials.Select(t => t.TrialSettings.Seed).Distinct().Count());
        Assert.Equal(trials.MinBy(t => t.Metric)!.TrialId, best.TrialId);

        // The fitted pipeline is the trial's: its tokenizer has the trial's vocabulary size; saved and loaded, it scores
        // the validation text at the best validation loss the trainer reported (it keeps the best weights).
        var chain = Assert.IsAssignableFrom<IEnumerable<ITransformer>>(best.Model);
        var lm = chain.OfType<CausalLmTransformer>().Single();
        Assert.Equal(best.Parameter["VocabularySize"].AsType<int>(), lm.Tokenizer!.VocabularySize);
        string zip = Path.Combine(_dir, "best.zip");
        var (train, validation) = Text(ml);
        ml.Model.Save(best.Model!, train.Schema, zip);
        var loaded = ml.Model.Load(zip, out _);
        Assert.Equal(best.Metric, ml.Llm().Evaluate(loaded, validation).Loss, 4);
        Assert.True(File.Exists(Path.Combine(best.TrialSettings.Directory, "model.zip")));
        Assert.Single(Directory.GetFiles(Path.Combine(_dir, "trials"), "model.zip", SearchOption.AllDirectories));

        // Leaderboard: ranked by the metric, one row per trial, parameters as columns.
        string[] csv = File.ReadAllLines(Path.Combine(_dir, "leaderboard.csv"));
        Assert.Equal("rank,trial,status,validation_loss,tokens,seconds,seed,stop_reason,phase,continues_trial,LearningRate,VocabularySize,Packing", csv[0]);
        Assert.Equal(4, csv.Length);
        var ranked = trials.OrderBy(t => t.Metric).ToArray();
        for (int r = 0; r < 3; r++)
        {
            string[] cells = csv[r + 1].Split(',');
            var t = ranked[r];
            Assert.Equal((r + 1).ToString(CultureInfo.InvariantCulture), cells[0]);
            Assert.Equal(t.TrialId.ToString(CultureInfo.InvariantCulture), cells[1]);
            Assert.Equal("Completed", cells[2]);
            Assert.Equal(t.Metric, double.Parse(cells[3], CultureInfo.InvariantCulture));
            Assert.Equal("1280", cells[4]);
            Assert.Equal("completed", cells[7]);
            Assert.Equal(("search", ""), (cells[8], cells[9]));
            Assert.Equal(t.Parameter["LearningRate"].AsType<double>(), double.Parse(cells[10], CultureInfo.InvariantCulture));
            Assert.Equal(t.Parameter["VocabularySize"].AsType<int>().ToString(CultureInfo.InvariantCulture), cells[11]);
            Assert.Equal(t.Parameter["Packing"].AsType<string>(), cells[12]);
        }

        string table = experiment.Result.ToTable();
        Assert.StartsWith("rank  trial  status     validation_loss  tokens  time", table);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(Path.Combine(_dir, "sweep.png"))[..4]);

        // Progress: each trial announced, trainer reports relayed, the last one names the best.
        Assert.Equal([1, 2, 3], reports.Where(r => r.Training is null && r.Finished is null).Select(r => r.Trial));
        Assert.Contains(reports, r => r.Training is { Validation: not null });
        var last = reports[^1];
        Assert.Equal((3, 3, best.TrialId), (last.Trial, last.MaxTrials, last.BestTrial));
        Assert.Equal(TimeSpan.Zero, last.EstimatedRemaining);
        Assert.StartsWith("trial 3 of 3, best so far", last.ToString());
    }

    [Fact]
    public async Task FailedTrialsAreRecordedAndTheSweepGoesOn()
    {
        var ml = new MLContext(seed: 1);
        var space = new Sweeping.SearchSpace { ["Case"] = new ChoiceOption("ok", "factory throws", "loss diverges") };
        var experiment = ml.Llm().CreateExperiment()
            .SetDataset(Text(ml).Train, Text(ml).Validation)
            .SetPipeline(space, (ctx, p) => p["Case"].AsType<string>() switch
            {
                "factory throws" => throw new InvalidOperationException("no pipeline for this case"),
                "loss diverges" => Pipeline(ctx, new PipelineSpace { VocabularySize = 280 }, learningRate: 1e30),
                _ => Pipeline(ctx, new PipelineSpace { VocabularySize = 280, LearningRate = 3e-3 }),
            })
            .SetGridSearchTuner()
            .SetMaxTokens(10 * TokensPerStep)
            .SetSweepDirectory(_dir);
        var best = await experiment.RunAsync();

        var trials = experiment.Result.Trials;
        Assert.Equal(3, trials.Count);
        Assert.Equal(1, best.TrialId);
        Assert.Equal(TrialStatus.Completed, trials[0].Status);
        Assert.Equal(TrialStatus.Failed, trials[1].Status);
        Assert.Equal("InvalidOperationException: no pipeline for this case", trials[1].StopReason);
        Assert.True(double.IsNaN(trials[1].Metric));
        Assert.Equal(TrialStatus.Failed, trials[2].Status);
        Assert.Contains("became", trials[2].StopReason);
        Assert.Equal(["1,1,Completed", "2,2,Failed", "3,3,Failed"], File.ReadAllLines(Path.Combine(_dir, "leaderboard.csv")).Skip(1).Select(l => string.Join(',', l.Split(',')[..3])));
    }

    [Fact]
    public async Task RerunningTheSweepContinuesWithoutRepeatingFinishedTrials()
    {
        var ml = new MLContext(seed: 1);
        int built = 0;
        IEstimator<ITransformer> Counting(MLContext ctx, Parameter p)
        {
            built++;
            return Pipeline(ctx, p.AsType<PipelineSpace>());
        }

        var first = await Experiment(ml, _dir, maxTrials: 2, Counting).SetTreeParzenTuner(startupTrials: 1).RunAsync();
        Assert.Equal(2, built);
        var resumed = Experiment(ml, _dir, maxTrials: 3, Counting).SetTreeParzenTuner(startupTrials: 1);
        await resumed.RunAsync();
        Assert.Equal(3, built);                                   // trials 1 and 2 replayed from result.json, only 3 trained
        Assert.Equal([1, 2, 3], resumed.Result.Trials.Select(t => t.TrialId));

        // The same sweep in one go gives the same trials: deterministic given the seed.
        string fresh = _dir + "-fresh";
        try
        {
            var once = Experiment(new MLContext(seed: 1), fresh, maxTrials: 3).SetTreeParzenTuner(startupTrials: 1);
            await once.RunAsync();
            Assert.Equal(resumed.Result.Trials.Select(t => (t.Parameter.ToString(), t.Metric)), once.Result.Trials.Select(t => (t.Parameter.ToString(), t.Metric)));
        }
        finally
        {
            Directory.Delete(fresh, recursive: true);
        }

        // Another seed proposes other parameters: the directory belongs to another sweep.
        var other = Experiment(ml, _dir, maxTrials: 3).SetTreeParzenTuner(startupTrials: 1).SetSeed(2);
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => other.RunAsync());
        Assert.StartsWith($"The sweep directory '{_dir}' records trial 1 with parameters {{", e.Message);
        Assert.NotNull(first);
    }

    [Fact]
    public async Task CancellingTheSweepLeavesTheRunningTrialUnrecordedAndAResumeRunsIt()
    {
        var ml = new MLContext(seed: 1);
        using var cancel = new CancellationTokenSource();
        var cancelling = new Recorder<SweepProgress>([], r =>
        {
            if (r.Trial == 2 && r.Training is not null)
                cancel.Cancel();
        });
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Experiment(ml, _dir, maxTrials: 2).SetProgress(cancelling).RunAsync(cancel.Token));
        Assert.True(File.Exists(Path.Combine(_dir, "trials", "trial-0001", "result.json")));
        Assert.False(File.Exists(Path.Combine(_dir, "trials", "trial-0002", "result.json")));

        int built = 0;
        var resumed = Experiment(ml, _dir, maxTrials: 2, (ctx, p) =>
        {
            built++;
            return Pipeline(ctx, p.AsType<PipelineSpace>());
        });
        await resumed.RunAsync();
        Assert.Equal(1, built);
        Assert.Equal([TrialStatus.Completed, TrialStatus.Completed], resumed.Result.Trials.Select(t => t.Status));
    }

    [Fact]
    public async Task AshaStopsTheWorseTrialAtARungAndItKeepsItsPartialCurve()
    {
        var ml = new MLContext(seed: 1);
        var space = new Sweeping.SearchSpace { ["LearningRate"] = new ChoiceOption(3e-3, 1e-6) };
        // Rungs at 320 and 960 tokens (5 and 15 steps), η = 3; the grid proposes the good rate first.
        var asha = new AshaTuner(space, minTokens: 5 * TokensPerStep, reductionFactor: 3, sampler: new GridSearchTuner(space));
        var experiment = ml.Llm().CreateExperiment()
            .SetDataset(Text(ml).Train, Text(ml).Validation)
            .SetPipeline(space, (ctx, p) => Pipeline(ctx, new PipelineSpace { VocabularySize = 280 }, p["LearningRate"].AsType<double>()))
            .SetTuner(asha)
            .SetMaxTokens(20 * TokensPerStep)
            .SetSweepDirectory(_dir);
        var best = await experiment.RunAsync();

        var trials = experiment.Result.Trials;
        Assert.Equal(1, best.TrialId);
        Assert.Equal(TrialStatus.Completed, trials[0].Status);
        Assert.Equal(4, trials[0].Curve.Count);
        var stopped = trials[1];
        Assert.Equal(TrialStatus.Stopped, stopped.Status);
        Assert.StartsWith("stopped at rung 0 (320 tokens): ", stopped.StopReason);
        Assert.Equal([320L], stopped.Curve.Select(p => p.Tokens));    // cut at the rung: one evaluation
        Assert.Equal(stopped.Curve[0].Value, stopped.Metric);
        Assert.InRange(stopped.Tokens, 320, 6 * TokensPerStep);        // at most one more step before the boundary check
        Assert.NotEmpty(Directory.GetFiles(stopped.TrialSettings.CheckpointDirectory, "checkpoint-*.ckpt"));   // written on cancellation
        Assert.Equal(asha.RecordedAt(0)[2], stopped.Metric);
        Assert.True(File.Exists(Path.Combine(_dir, "sweep.png")));
    }

    [Fact]
    public async Task AshaJudgesALargeBatchTrialAtTheFirstStepReachingItsRung()
    {
        // Batch 12 × context 16 = 192 tokens a step; rungs at 320 and 960 tokens; regular evaluations only every 50
        // steps, so without rung evaluations the trials would first be judged at their last step.
        var ml = new MLContext(seed: 1);
        var space = new Sweeping.SearchSpace { ["LearningRate"] = new ChoiceOption(3e-3, 1e-6) };
        var asha = new AshaTuner(space, minTokens: 320, reductionFactor: 3, sampler: new GridSearchTuner(space));
        var experiment = ml.Llm().CreateExperiment()
            .SetDataset(Text(ml).Train, Text(ml).Validation)
            .SetPipeline(space, (ctx, p) => Pipeline(ctx, new CausalLmTrainerOptions
            {
                Model = GptConfig.Tiny(contextLength: Context),
                BatchSize = 12,
                LearningRate = p["LearningRate"].AsType<double>(),
                WarmupSteps = 2,
                EvaluationInterval = 50,
                LogInterval = 50,
                CheckpointInterval = 1000,
                NumberOfThreads = 1,
            }))
            .SetTuner(asha)
            .SetMaxTokens(10 * 192)
            .SetSweepDirectory(_dir);
        Assert.Equal([320L, 960], asha.DecisionTokens(new TrialSettings { TrialId = 1, Seed = 0, MaxTokens = 10 * 192, Directory = _dir }));
        await experiment.RunAsync();

        var trials = experiment.Result.Trials;
        // Trial 1: judged at step 2 (384 ≥ 320) and step 5 (960), then its last step.
        Assert.Equal(TrialStatus.Completed, trials[0].Status);
        Assert.Equal([384L, 960, 1920], trials[0].Curve.Select(p => p.Tokens));
        Assert.Equal([1, 2], asha.RecordedAt(0).Keys.Order());
        Assert.Equal([1], asha.RecordedAt(1).Keys);
        // Trial 2 (a learning rate that does not learn) is stopped at step 2, the first step past its rung.
        Assert.Equal(TrialStatus.Stopped, trials[1].Status);
        Assert.StartsWith("stopped at rung 0 (320 tokens): ", trials[1].StopReason);
        Assert.Equal([384L], trials[1].Curve.Select(p => p.Tokens));
        Assert.Equal(384, trials[1].Tokens);
    }

    [Fact]
    public async Task AshaInTimeJudgesEachTrialAfterTheSameTrainingTimeAndTrialsEndAtTheirTimeBudget()
    {
        var ml = new MLContext(seed: 1);
        var space = new Sweeping.SearchSpace { ["LearningRate"] = new ChoiceOption(3e-3, 1e-6) };
        var asha = new AshaTuner(space, minTime: TimeSpan.FromSeconds(0.5), reductionFactor: 3, sampler: new GridSearchTuner(space));
        var experiment = ml.Llm().CreateExperiment()
            .SetDataset(Text(ml).Train, Text(ml).Validation)
            .SetPipeline(space, (ctx, p) => Pipeline(ctx, new CausalLmTrainerOptions
            {
                Model = GptConfig.Tiny(contextLength: Context),
                BatchSize = BatchSize,
                LearningRate = p["LearningRate"].AsType<double>(),
                WarmupSteps = 2,
                MaxSteps = 1_000_000,                // the trial's time budget ends it
                EvaluationInterval = 1_000_000,      // only the rung evaluations and the last one
                CheckpointInterval = 1_000_000,
                NumberOfThreads = 1,
            }))
            .SetTuner(asha)
            .SetTrialTimeInSeconds(2)
            .SetSweepDirectory(_dir);
        await experiment.RunAsync();

        var trials = experiment.Result.Trials;
        // Trial 1 is judged at 0.5 s and continues to its 2 s budget (rung 1 at 1.5 s, rung 2 at 4.5 s is past it).
        Assert.Equal(TrialStatus.Completed, trials[0].Status);
        Assert.Equal(TimeSpan.FromSeconds(2), trials[0].TrialSettings.MaxTime);
        Assert.All(trials[0].Curve.Take(2).Zip([0.5, 1.5]), x => Assert.InRange(x.First.Elapsed.TotalSeconds, x.Second, x.Second + 1.0));
        Assert.InRange(trials[0].Curve[^1].Elapsed.TotalSeconds, 2.0, 3.0);
        // Trial 2 does not learn: stopped at its first rung, after 0.5 s of training whatever its tokens.
        Assert.Equal(TrialStatus.Stopped, trials[1].Status);
        Assert.StartsWith("stopped at rung 0 (0.5 s): ", trials[1].StopReason);
        Assert.InRange(Assert.Single(trials[1].Curve).Elapsed.TotalSeconds, 0.5, 1.5);

        // The recorded times are replayed on resume: the same decisions, nothing retrained.
        var replay = new AshaTuner(space, minTime: TimeSpan.FromSeconds(0.5), reductionFactor: 3, sampler: new GridSearchTuner(space));
        var again = ml.Llm().CreateExperiment()
            .SetDataset(Text(ml).Train, Text(ml).Validation)
            .SetPipeline(space, (ctx, p) => throw new InvalidOperationException("a finished trial was built again"))
            .SetTuner(replay)
            .SetTrialTimeInSeconds(2)
            .SetSweepDirectory(_dir);
        await again.RunAsync();
        Assert.Equal(trials.Select(t => t.Curve.Select(p => p.Elapsed)), again.Result.Trials.Select(t => t.Curve.Select(p => p.Elapsed)));
        Assert.Equal(asha.RecordedAt(0), replay.RecordedAt(0));
    }

    [Fact]
    public async Task TheFinalPhaseContinuesTheBestTrialOnWhatIsLeftOfTheBudgetAndAResumeDoesNotRepeatIt()
    {
        var ml = new MLContext(seed: 1);
        int built = 0;
        LlmExperiment Make() => Experiment(ml, _dir, maxTrials: 10, (ctx, p) =>
            {
                built++;
                return Pipeline(ctx, p.AsType<PipelineSpace>());
            })
            .SetMaxTotalTokens(60 * TokensPerStep)
            .SetFinalTraining(0.5);
        var reports = new List<SweepProgress>();
        var experiment = Make().SetProgress(new Recorder<SweepProgress>(reports));
        var result = await experiment.RunAsync();

        // The search gets half of the 3840 tokens: trial 1 trains its 1280, trial 2 is cut at the 640 left.
        var trials = experiment.Result.Trials;
        Assert.Equal(3, trials.Count);
        Assert.Equal((TrialStatus.Completed, 20 * TokensPerStep), (trials[0].Status, trials[0].Tokens));
        Assert.Equal((TrialStatus.Stopped, "sweep token budget", 10 * TokensPerStep), (trials[1].Status, trials[1].StopReason, trials[1].Tokens));
        var searchBest = trials.Take(2).MinBy(t => t.Loss)!;

        // The final phase continues the best trial with the other half: 1920 more tokens from its checkpoint.
        var final = trials[2];
        Assert.True(final.IsFinalPhase);
        Assert.Same(final, result);
        Assert.Same(final, experiment.Result.BestTrial);
        Assert.Equal((3, searchBest.TrialId), (final.TrialId, final.TrialSettings.ContinuesTrial));
        Assert.Equal(searchBest.Parameter, final.Parameter);
        Assert.Equal(searchBest.TrialSettings.Seed, final.TrialSettings.Seed);
        Assert.Equal(TrialStatus.Completed, final.Status);
        Assert.Equal(30 * TokensPerStep, final.Tokens);
        Assert.Equal(60 * TokensPerStep, trials.Sum(t => t.Tokens));                       // the whole budget, not more
        long end = searchBest.Tokens + 30 * TokensPerStep;
        Assert.Equal($"final phase: trial {searchBest.TrialId} continued from {searchBest.Tokens} to {end} tokens", final.StopReason);
        // Its curve goes on from the trial's tokens (evaluations every 5 steps) past the trial budget of 1280 tokens.
        Assert.Equal(Enumerable.Range(1, 6).Select(i => searchBest.Tokens + i * 5 * TokensPerStep), final.Curve.Select(p => p.Tokens));
        Assert.True(end > 20 * TokensPerStep);
        Assert.Equal(final.Curve.Min(p => p.Value), final.Metric);
        Assert.True(final.Metric < searchBest.Metric, $"final {final.Metric} vs trial {searchBest.Metric}");

        // The returned pipeline is the continued model: its history runs to the end step and it scores at the metric.
        var lm = Assert.IsAssignableFrom<IEnumerable<ITransformer>>(result.Model).OfType<CausalLmTransformer>().Single();
        Assert.Equal((end / TokensPerStep, end), (lm.History[^1].Step, lm.History[^1].Tokens));
        Assert.Equal(result.Metric, ml.Llm().Evaluate(result.Model!, Text(ml).Validation).Loss, 4);

        // Recorded like a trial, marked in the leaderboard.
        Assert.True(File.Exists(Path.Combine(_dir, "final", "result.json")));
        Assert.True(File.Exists(Path.Combine(_dir, "final", "model.zip")));
        string finalRow = File.ReadAllLines(Path.Combine(_dir, "leaderboard.csv")).Single(l => l.Split(',')[1] == "3");
        Assert.Equal(("final", searchBest.TrialId.ToString(CultureInfo.InvariantCulture)), (finalRow.Split(',')[8], finalRow.Split(',')[9]));
        Assert.Contains($"final (trial {searchBest.TrialId} continued)", experiment.Result.ToTable());
        Assert.Equal(3, built);
        Assert.Contains(reports, r => r.Finished == final);

        // Resumed: the trials and the final phase are replayed, nothing is trained again.
        var resumed = Make();
        var again = await resumed.RunAsync();
        Assert.Equal(3, built);
        Assert.True(again.IsFinalPhase);
        Assert.Equal((final.Metric, final.Tokens), (again.Metric, again.Tokens));
        Assert.Equal(3, resumed.Result.Trials.Count);
        Assert.Equal(final.Metric, ml.Llm().Evaluate(again.Model!, Text(ml).Validation).Loss, 4);
    }

    [Fact]
    public async Task UnderATimeBudgetTheFinalPhaseTrainsTheBestTrialOnTheTimeLeft()
    {
        var ml = new MLContext(seed: 1);
        var experiment = Experiment(ml, _dir, maxTrials: 100)
            .SetMaxTokens(10 * TokensPerStep)
            .SetTrainingTimeInSeconds(10)
            .SetFinalTraining(0.5);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var result = await experiment.RunAsync();
        clock.Stop();

        var search = experiment.Result.Trials.Where(t => !t.IsFinalPhase).ToArray();
        var final = experiment.Result.Trials[^1];
        Assert.True(final.IsFinalPhase);
        Assert.Same(final, result);
        var searchBest = search.Where(t => t.Status != TrialStatus.Failed).MinBy(t => t.Loss)!;
        Assert.Equal(searchBest.TrialId, final.TrialSettings.ContinuesTrial);
        // The search stops at 5 s (the running trial is cut at the next step boundary); the final phase trains on the
        // time left, sized from the trial's step times, so it goes past a trial's 640 tokens and the sweep ends near 10 s.
        Assert.InRange(search.Sum(t => t.Duration.TotalSeconds), 0, 5 + 2);
        Assert.True(final.Tokens > 10 * TokensPerStep, $"final phase trained {final.Tokens} tokens");
        Assert.InRange(clock.Elapsed.TotalSeconds, 5, 10 + 4);
        var lm = Assert.IsAssignableFrom<IEnumerable<ITransformer>>(result.Model).OfType<CausalLmTransformer>().Single();
        Assert.Equal(searchBest.Tokens + final.Tokens, lm.History[^1].Tokens);
    }

    [Fact]
    public void TheFinalPhaseIsSizedFromTheTrialsStepAndEvaluationTimes()
    {
        // Step 1 pays a 2 s warm-up; then 0.1 s a step, and every fifth step evaluates for 0.4 s more; 64 tokens a step.
        var history = new List<TrainingMetrics>();
        double elapsed = 0;
        for (int step = 1; step <= 20; step++)
        {
            elapsed += step == 1 ? 2 : step % 5 == 0 ? 0.5 : 0.1;
            history.Add(new TrainingMetrics(step, 0, step * TokensPerStep, 1, 1e-3, 1, 0, elapsed, step % 5 == 0 ? 2.0 : null, null, null));
        }

        // (10 s − one final evaluation) / (0.1 s + 0.4 s / 5 per step) = 53.3 → 53 steps.
        Assert.Equal(53 * TokensPerStep, LlmExperiment.ReachableTokens(history, seconds: 10, evaluationInterval: 5));
        Assert.Equal(0, LlmExperiment.ReachableTokens(history, seconds: 0.3, evaluationInterval: 5));
        Assert.Null(LlmExperiment.ReachableTokens(history.Take(1).ToList(), seconds: 10, evaluationInterval: 5));
    }

    [Fact]
    public async Task TheTimeBudgetStopsTheRunningTrialWhichKeepsItsPartialResult()
    {
        var ml = new MLContext(seed: 1);
        var space = new Sweeping.SearchSpace { ["LearningRate"] = new UniformDoubleOption(1e-3, 1e-2, logBase: true) };
        var (train, validation) = Text(ml);
        var experiment = ml.Llm().CreateExperiment()
            .SetDataset(train, validation)
            .SetPipeline(space, (ctx, p) => Pipeline(ctx, new CausalLmTrainerOptions
            {
                Model = GptConfig.Tiny(contextLength: Context),
                BatchSize = BatchSize,
                LearningRate = p["LearningRate"].AsType<double>(),
                MaxSteps = 1_000_000,                // far more than the budget allows
                EvaluationInterval = 1,
                NumberOfThreads = 1,
            }))
            .SetTrainingTimeInSeconds(6)
            .SetSweepDirectory(_dir);
        var best = await experiment.RunAsync();

        var trial = Assert.Single(experiment.Result.Trials);
        Assert.Equal(TrialStatus.Stopped, trial.Status);
        Assert.Equal("sweep time budget", trial.StopReason);
        Assert.NotEmpty(trial.Curve);
        Assert.Same(trial, best);
        Assert.NotNull(best.Model);   // refitted from the checkpoint written when the budget cut it
    }

    [Fact]
    public async Task AStoppedBestTrialsPipelineIsRefittedFromItsCheckpointByAPluggedInTuner()
    {
        // A user tuner (ITuner is pluggable): random proposals, and every trial stopped at its second evaluation, so
        // the best trial is a stopped one and its pipeline must come back from the checkpoint written on cancellation.
        var ml = new MLContext(seed: 1);
        var space = new Sweeping.SearchSpace { ["LearningRate"] = new UniformDoubleOption(2e-3, 5e-3, logBase: true) };
        var tuner = new StopAtSecondEvaluation(new RandomSearchTuner(space, seed: 4));
        var (train, validation) = Text(ml);
        var experiment = ml.Llm().CreateExperiment()
            .SetDataset(train, validation)
            .SetPipeline(space, (ctx, p) => Pipeline(ctx, new PipelineSpace { VocabularySize = 280 }, p["LearningRate"].AsType<double>()))
            .SetTuner(tuner)
            .SetMaxTrials(2)
            .SetMaxTokens(20 * TokensPerStep)
            .SetSweepDirectory(_dir);
        var best = await experiment.RunAsync();

        Assert.All(experiment.Result.Trials, t =>
        {
            Assert.Equal(TrialStatus.Stopped, t.Status);
            Assert.Equal("second evaluation", t.StopReason);
            Assert.Equal([320L, 640], t.Curve.Select(p => p.Tokens));
        });
        Assert.Equal([1, 2], tuner.Updated);
        Assert.NotNull(best.Model);
        Assert.Equal(best.Metric, ml.Llm().Evaluate(best.Model!, validation).Loss, 4);
        Assert.True(File.Exists(Path.Combine(best.TrialSettings.Directory, "model.zip")));
    }

    private sealed class StopAtSecondEvaluation(ITuner sampler) : IEarlyStoppingTuner
    {
        private readonly Dictionary<int, int> _reports = [];

        public List<int> Updated { get; } = [];

        public Parameter? Propose(TrialSettings settings) => sampler.Propose(settings);

        public void Update(TrialResult result) => Updated.Add(result.TrialId);

        public bool ShouldStop(TrialSettings settings, long tokens, TimeSpan elapsed, double loss, out string? reason)
        {
            int n = _reports[settings.TrialId] = _reports.GetValueOrDefault(settings.TrialId) + 1;
            reason = n >= 2 ? "second evaluation" : null;
            return n >= 2;
        }
    }

    [Fact]
    public async Task TheTotalTokenBudgetStopsTheTrialThatReachesIt()
    {
        var ml = new MLContext(seed: 1);
        var (train, validation) = Text(ml);
        var experiment = ml.Llm().Sweep<PipelineSpace>(train, validation, (ctx, o) => Pipeline(ctx, o))
            .SetMaxTokens(20 * TokensPerStep)
            .SetSeed(1)
            .SetSweepDirectory(_dir)
            .SetMaxTotalTokens(25 * TokensPerStep);
        await experiment.RunAsync();

        // Trial 1 trains its 20 steps (1280 tokens); trial 2 has 320 tokens left and is stopped at its report at step 5.
        var trials = experiment.Result.Trials;
        Assert.Equal(2, trials.Count);
        Assert.Equal((TrialStatus.Completed, 20 * TokensPerStep), (trials[0].Status, trials[0].Tokens));
        Assert.Equal((TrialStatus.Stopped, "sweep token budget", 5 * TokensPerStep), (trials[1].Status, trials[1].StopReason, trials[1].Tokens));
    }

    [Fact]
    public async Task BadSettingsAreRejectedWithClearMessages()
    {
        var ml = new MLContext(seed: 1);
        var experiment = ml.Llm().CreateExperiment();
        Assert.Equal("The sweep's maximum number of trials must be positive; got 0. (Parameter 'maxTrials')\nActual value was 0.",
            Assert.Throws<ArgumentOutOfRangeException>(() => experiment.SetMaxTrials(0)).Message.ReplaceLineEndings("\n"));
        Assert.StartsWith("The sweep's training time must be a positive number of seconds; got 0.",
            Assert.Throws<ArgumentOutOfRangeException>(() => experiment.SetTrainingTimeInSeconds(0)).Message);
        Assert.StartsWith("Each trial's token budget must be a positive number of tokens; got 0.",
            Assert.Throws<ArgumentOutOfRangeException>(() => experiment.SetMaxTokens(0)).Message);
        Assert.StartsWith("Each trial's training time must be a positive number of seconds; got -1.",
            Assert.Throws<ArgumentOutOfRangeException>(() => experiment.SetTrialTimeInSeconds(-1)).Message);
        Assert.StartsWith("Parameter 'minTime' (the first rung's budget) must be a positive time; got 00:00:00.",
            Assert.Throws<ArgumentOutOfRangeException>(() => experiment.SetAshaTuner(TimeSpan.Zero)).Message);
        Assert.StartsWith("The sweep's total token budget must be a positive number of tokens; got -1.",
            Assert.Throws<ArgumentOutOfRangeException>(() => experiment.SetMaxTotalTokens(-1)).Message);
        Assert.Equal("Parameter 'budgetFraction' (the share of the sweep's budget kept for the final training of the best trial) must be at least 0 (off) and below 1; got 1. (Parameter 'budgetFraction')\nActual value was 1.",
            Assert.Throws<ArgumentOutOfRangeException>(() => experiment.SetFinalTraining(1)).Message.ReplaceLineEndings("\n"));
        Assert.Contains("must be at least 0 (off) and below 1; got -0.1.", Assert.Throws<ArgumentOutOfRangeException>(() => experiment.SetFinalTraining(-0.1)).Message);
        Assert.Contains("must be at least 0 (off) and below 1; got NaN.", Assert.Throws<ArgumentOutOfRangeException>(() => experiment.SetFinalTraining(double.NaN)).Message);
        Assert.Equal("The experiment has no data: call SetDataset(train, validation) before RunAsync.",
            Assert.Throws<InvalidOperationException>(() => { _ = experiment.RunAsync(); }).Message);

        var (train, validation) = Text(ml);
        var noBudget = ml.Llm().CreateExperiment().SetDataset(train, validation)
            .SetPipeline(new SearchSpace<PipelineSpace>(), (ctx, p) => Pipeline(ctx, p.AsType<PipelineSpace>()));
        Assert.Equal("The experiment has no budget: call SetMaxTrials(n), SetTrainingTimeInSeconds(s) or SetMaxTotalTokens(t) (a grid search ends by itself).",
            Assert.Throws<InvalidOperationException>(() => { _ = noBudget.RunAsync(); }).Message);
        var finalWithoutBudget = ml.Llm().CreateExperiment().SetDataset(train, validation).SetMaxTrials(2).SetFinalTraining(0.25)
            .SetPipeline(new SearchSpace<PipelineSpace>(), (ctx, p) => Pipeline(ctx, p.AsType<PipelineSpace>()));
        Assert.Equal("SetFinalTraining(0.25) keeps a share of the sweep's time or total token budget for training the best trial further, but neither is set: " +
            "call SetTrainingTimeInSeconds(s) or SetMaxTotalTokens(t), or SetFinalTraining(0) to turn the final phase off.",
            Assert.Throws<InvalidOperationException>(() => { _ = finalWithoutBudget.RunAsync(); }).Message);
        var noValidation = ml.Llm().CreateExperiment().SetDataset(train, null).SetMaxTrials(1)
            .SetPipeline(new SearchSpace<PipelineSpace>(), (ctx, p) => Pipeline(ctx, p.AsType<PipelineSpace>()));
        Assert.StartsWith("The objective 'validation_loss' is measured on validation data, but SetDataset was given none",
            Assert.Throws<InvalidOperationException>(() => { _ = noValidation.RunAsync(); }).Message);
        var ashaOnModel = ml.Llm().CreateExperiment().SetDataset(train, validation).SetMaxTrials(1)
            .SetPipeline(new SearchSpace<PipelineSpace>(), (ctx, p) => Pipeline(ctx, p.AsType<PipelineSpace>()))
            .SetAshaTuner(100).SetObjective(SweepObjective.FromModel("score", _ => 1.0)).SetSweepDirectory(_dir);
        Assert.StartsWith("AshaTuner stops trials on the objective reported at the trainer's evaluations, but the objective 'score' is computed on the fitted model only",
            (await Assert.ThrowsAsync<InvalidOperationException>(() => ashaOnModel.RunAsync())).Message);

        // Bits per byte needs byte counts, which bare token blocks (no tokenizer) do not have: never reported.
        var tokenizer = TestData.CharTokenizer();
        var blocks = TestData.Blocks(ml, tokenizer, Context + 1);
        var neverReported = ml.Llm().CreateExperiment().SetDataset(blocks, blocks).SetMaxTrials(2)
            .SetPipeline(new Sweeping.SearchSpace { ["LearningRate"] = new UniformDoubleOption(1e-3, 1e-2) },
                (ctx, p) => ctx.Llm().Trainers.CausalLm(new CausalLmTrainerOptions
                {
                    Model = GptConfig.Tiny(vocabularySize: tokenizer.VocabularySize, contextLength: Context),
                    BatchSize = BatchSize,
                    LearningRate = p["LearningRate"].AsType<double>(),
                    EvaluationInterval = 5,
                    NumberOfThreads = 1,
                }))
            .SetMaxTokens(5 * TokensPerStep)
            .SetObjective(SweepObjective.BitsPerByte)
            .SetSweepDirectory(_dir + "-bpb");
        try
        {
            var e = await Assert.ThrowsAsync<InvalidOperationException>(() => neverReported.RunAsync());
            Assert.StartsWith("Trial 1 completed but never reported the objective 'bits_per_byte' at any of the trainer's evaluations", e.Message);
        }
        finally
        {
            Directory.Delete(_dir + "-bpb", recursive: true);
        }
    }

    /// <summary>Collects reports synchronously.</summary>
    private sealed class Recorder<T>(List<T> into, Action<T>? also = null) : IProgress<T>
    {
        public void Report(T value)
        {
            into.Add(value);
            also?.Invoke(value);
        }
    }
}
