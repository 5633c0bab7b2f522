using System.Diagnostics;
using System.Reflection;
using Microsoft.ML.Llm.Internal;
using Microsoft.ML.Llm.Sweeping;

namespace Microsoft.ML.Llm;

/// <summary>
/// A hyperparameter sweep over a whole language-model pipeline, shaped like ML.NET AutoML's <c>AutoMLExperiment</c>:
/// <c>mlContext.Llm().CreateExperiment()</c>, then <see cref="SetDataset"/>, <see cref="SetPipeline(SweepableEstimator)"/>,
/// a tuner (<see cref="SetTuner"/> or one of the <c>Set…Tuner</c> shortcuts), budgets (<see cref="SetMaxTrials"/>,
/// <see cref="SetTrainingTimeInSeconds"/>, <see cref="SetMaxTokens"/>), <see cref="SetObjective"/>, and
/// <see cref="RunAsync"/>, which returns the best trial (its fitted pipeline in <see cref="TrialResult.Model"/>).
/// </summary>
/// <remarks>
/// <para>Each trial builds its pipeline with the factory, then fits it one estimator at a time: transforms fitted
/// before the <see cref="CausalLmTrainer"/> (a tokenizer trained in Fit, packing) are applied to the validation data
/// too, and the trainer fits a copy of its options with the trial's seed, token budget, checkpoint and log
/// directories, the validation data, a progress sink (the objective at each evaluation: learning curve, early
/// stopping) and a cancellation token (early stopping, the sweep's time budget, the caller's token).</para>
/// <para>A trial whose factory or fit throws, or whose loss becomes NaN, is recorded as failed and the sweep goes on.
/// A trial an <see cref="IEarlyStoppingTuner"/> stops (or the time budget cuts) keeps what it reported.</para>
/// <para>The sweep directory (<see cref="SetSweepDirectory"/>) records every trial; running the same sweep on it
/// again replays the recorded trials through the tuner (no training) and continues with the next. Given the seed and
/// a trial or token budget, the proposals and the trials' training are deterministic on the CPU.</para>
/// </remarks>
public sealed class LlmExperiment
{
    private readonly MLContext _context;
    private IDataView? _train;
    private IDataView? _validation;
    private SweepableEstimator? _pipeline;
    private ITuner? _tuner;
    private Func<Sweeping.SearchSpace, int, ITuner>? _tunerFactory;
    private TimeSpan? _timeBudget;
    private int? _maxTrials;
    private long? _maxTokens;
    private TimeSpan? _trialTime;
    private long? _maxTotalTokens;
    private double _finalFraction;
    private SweepObjective _objective = SweepObjective.ValidationLoss;
    private int? _seed;
    private string? _directory;
    private IProgress<SweepProgress>? _progress;
    private List<TrialResult> _trials = [];

    internal LlmExperiment(MLContext context) => _context = context;

    /// <summary>The trials so far (live while <see cref="RunAsync"/> runs; every trial of the directory after it).</summary>
    public SweepResult Result => new(_objective.Name, _objective.Maximize, _trials.ToArray());

    /// <summary>The sweep directory (set, or the temporary one <see cref="RunAsync"/> created).</summary>
    public string? SweepDirectory => _directory;

    /// <summary>The training data (raw: the pipeline's first estimator reads it) and the validation data the objective is measured on.</summary>
    public LlmExperiment SetDataset(IDataView train, IDataView? validation)
    {
        _train = train ?? throw new ArgumentNullException(nameof(train));
        _validation = validation;
        return this;
    }

    /// <summary>The pipeline to sweep (<c>mlContext.Llm().CreateSweepableEstimator(factory, searchSpace)</c>).</summary>
    public LlmExperiment SetPipeline(SweepableEstimator pipeline)
    {
        _pipeline = pipeline ?? throw new ArgumentNullException(nameof(pipeline));
        return this;
    }

    /// <summary>The pipeline to sweep: a factory over a search space.</summary>
    public LlmExperiment SetPipeline(Sweeping.SearchSpace searchSpace, Func<MLContext, Parameter, IEstimator<ITransformer>> factory) =>
        SetPipeline(new SweepableEstimator(factory, searchSpace));

    /// <summary>A tuner built by the caller over the pipeline's search space.</summary>
    public LlmExperiment SetTuner(ITuner tuner)
    {
        _tuner = tuner ?? throw new ArgumentNullException(nameof(tuner));
        _tunerFactory = null;
        return this;
    }

    /// <summary>Random search (the default), seeded with the experiment's seed.</summary>
    public LlmExperiment SetRandomSearchTuner() => SetTunerFactory((space, seed) => new RandomSearchTuner(space, seed));

    /// <summary>Grid search with <paramref name="gridSize"/> points per numeric range.</summary>
    public LlmExperiment SetGridSearchTuner(int gridSize = 3)
    {
        if (gridSize < 1)
            throw new ArgumentOutOfRangeException(nameof(gridSize), gridSize, $"Parameter 'gridSize' must be at least 1; got {gridSize}.");
        return SetTunerFactory((space, _) => new GridSearchTuner(space, gridSize));
    }

    /// <summary>ASHA with rungs at <paramref name="minTokens"/> · η^k tokens over random configurations.</summary>
    public LlmExperiment SetAshaTuner(long minTokens, int reductionFactor = 3)
    {
        AshaTuner.CheckMinTokens(minTokens);
        AshaTuner.CheckReductionFactor(reductionFactor);
        return SetTunerFactory((space, seed) => new AshaTuner(space, minTokens, reductionFactor, seed));
    }

    /// <summary>ASHA with rungs at <paramref name="minTime"/> · η^k of each trial's training wall time over random
    /// configurations: under a time budget, trials are compared after the same time rather than the same tokens (see
    /// <see cref="AshaTuner"/>'s remarks); pair it with <see cref="SetTrialTimeInSeconds"/>.</summary>
    public LlmExperiment SetAshaTuner(TimeSpan minTime, int reductionFactor = 3)
    {
        AshaTuner.CheckMinTime(minTime);
        AshaTuner.CheckReductionFactor(reductionFactor);
        return SetTunerFactory((space, seed) => new AshaTuner(space, minTime, reductionFactor, seed));
    }

    /// <summary>TPE, the model-based tuner, after <paramref name="startupTrials"/> random trials.</summary>
    public LlmExperiment SetTreeParzenTuner(int startupTrials = 10)
    {
        if (startupTrials < 1)
            throw new ArgumentOutOfRangeException(nameof(startupTrials), startupTrials, $"Parameter 'startupTrials' must be at least 1; got {startupTrials}.");
        return SetTunerFactory((space, seed) => new TreeParzenTuner(space, seed, startupTrials));
    }

    /// <summary>The sweep's wall-clock budget (all trials, across resumed runs). The trial running when it ends is stopped and keeps its partial result.</summary>
    public LlmExperiment SetTrainingTimeInSeconds(double seconds)
    {
        if (!(seconds > 0) || double.IsInfinity(seconds))
            throw new ArgumentOutOfRangeException(nameof(seconds), seconds, $"The sweep's training time must be a positive number of seconds; got {seconds.ToString(CultureInfo.InvariantCulture)}.");
        _timeBudget = TimeSpan.FromSeconds(seconds);
        return this;
    }

    /// <summary>The number of trials (finished trials of a resumed sweep included).</summary>
    public LlmExperiment SetMaxTrials(int maxTrials)
    {
        if (maxTrials <= 0)
            throw new ArgumentOutOfRangeException(nameof(maxTrials), maxTrials, $"The sweep's maximum number of trials must be positive; got {maxTrials}.");
        _maxTrials = maxTrials;
        return this;
    }

    /// <summary>Each trial's training-token budget (the trainer's MaxTokens, or the smaller of the two when the options set one).</summary>
    public LlmExperiment SetMaxTokens(long maxTokens)
    {
        if (maxTokens <= 0)
            throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, $"Each trial's token budget must be a positive number of tokens; got {maxTokens}.");
        _maxTokens = maxTokens;
        return this;
    }

    /// <summary>
    /// Each search trial's training-time budget (the trainer's <see cref="CausalLmTrainerOptions.TimeBudget"/>, or the
    /// smaller of the two when the options set one): under a sweep time budget, every configuration is then ranked by
    /// what it reaches in the same wall time, the quantity the budget rewards, rather than in the same tokens. With no
    /// token limit the trainer's decay horizon is unknown, so a time-limited trial trains at its peak learning rate
    /// after the warm-up (set <see cref="CausalLmTrainerOptions.DecaySteps"/> in the pipeline to decay anyway); the
    /// final phase (<see cref="SetFinalTraining"/>) then decays it over the rest of the budget. Not applied to the
    /// final phase.
    /// </summary>
    public LlmExperiment SetTrialTimeInSeconds(double seconds)
    {
        if (!(seconds > 0) || double.IsInfinity(seconds))
            throw new ArgumentOutOfRangeException(nameof(seconds), seconds, $"Each trial's training time must be a positive number of seconds; got {seconds.ToString(CultureInfo.InvariantCulture)}.");
        _trialTime = TimeSpan.FromSeconds(seconds);
        return this;
    }

    /// <summary>
    /// The sweep's compute budget: training tokens over all trials (recorded trials of a resumed sweep included). The
    /// trial running when it is reached is stopped at its next progress report and keeps its partial result. Unlike
    /// the time budget it does not depend on the machine's load, so sweeps compared under it got the same compute.
    /// </summary>
    public LlmExperiment SetMaxTotalTokens(long maxTotalTokens)
    {
        if (maxTotalTokens <= 0)
            throw new ArgumentOutOfRangeException(nameof(maxTotalTokens), maxTotalTokens, $"The sweep's total token budget must be a positive number of tokens; got {maxTotalTokens}.");
        _maxTotalTokens = maxTotalTokens;
        return this;
    }

    /// <summary>
    /// Keeps <paramref name="budgetFraction"/> of the sweep's time budget (<see cref="SetTrainingTimeInSeconds"/>) and
    /// total token budget (<see cref="SetMaxTotalTokens"/>) for a final phase, the "retrain the incumbent" step of
    /// practical tuners (Hyperband's last bracket): the search runs on the rest, then the best trial continues from its
    /// last checkpoint, its token limit raised to use what is left of the budget, and that continuation's validation
    /// metric is the sweep's result (the model <see cref="RunAsync"/> returns).
    /// </summary>
    /// <remarks>
    /// <para>The continuation resumes exactly (weights, optimizer, data position, the trial's seed) with its step and
    /// epoch limits lifted and its token limit at the checkpoint's tokens plus what is left: under a total token budget,
    /// the tokens the search did not use; under a time budget, the tokens the best trial's own throughput reaches in
    /// the time left (its pipeline set-up time deducted), with the time left as the trainer's
    /// <see cref="CausalLmTrainerOptions.TimeBudget"/> too. The learning-rate schedule's horizon becomes that new limit
    /// (unless the trainer options set <see cref="CausalLmTrainerOptions.DecaySteps"/>), so the continuation decays to the
    /// floor at the end of the budget instead of stopping at the trial's end. It is not judged by an early-stopping tuner.</para>
    /// <para>It is recorded in the sweep directory like a trial (<c>final/</c>: result.json, checkpoints, logs,
    /// model.zip), appears in the leaderboard as the phase "final" with the trial it continues, and in
    /// <c>sweep.png</c> as that trial's curve going on. A resumed sweep replays it and does not run it again; once it has
    /// started, no further search trial runs.</para>
    /// <para>Default 0 (off): the sweep returns its best trial as trained, as AutoML's experiment does, and a sweep
    /// bounded only by <see cref="SetMaxTrials"/> has no budget to split. Turn it on when the sweep's result is the model
    /// itself and the budget is time or tokens; 0.3–0.5 leaves the search most of the budget while the final model
    /// trains several times a trial's tokens (benchmarks/README.md, "Sweeps").</para>
    /// </remarks>
    /// <param name="budgetFraction">The share of the time and token budgets kept for the final phase: at least 0
    /// (0 turns it off) and below 1 (the search needs some).</param>
    public LlmExperiment SetFinalTraining(double budgetFraction)
    {
        if (!(budgetFraction >= 0 && budgetFraction < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(budgetFraction), budgetFraction,
                $"Parameter 'budgetFraction' (the share of the sweep's budget kept for the final training of the best trial) must be at least 0 (off) and below 1; got {budgetFraction.ToString(CultureInfo.InvariantCulture)}.");
        }

        _finalFraction = budgetFraction;
        return this;
    }

    /// <summary>What to optimise (default <see cref="SweepObjective.ValidationLoss"/>).</summary>
    public LlmExperiment SetObjective(SweepObjective objective)
    {
        _objective = objective ?? throw new ArgumentNullException(nameof(objective));
        return this;
    }

    /// <summary>The sweep's seed: tuner draws and each trial's seed. Default: the MLContext's seed, else 0.</summary>
    public LlmExperiment SetSeed(int seed)
    {
        _seed = seed;
        return this;
    }

    /// <summary>Where trials, the leaderboard and the plot are written; an existing sweep there is resumed. Default: a new temporary directory.</summary>
    public LlmExperiment SetSweepDirectory(string directory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        _directory = directory;
        return this;
    }

    /// <summary>Receives a report at each trial's start and end and at each of the trainer's reports (on the training thread).</summary>
    public LlmExperiment SetProgress(IProgress<SweepProgress> progress)
    {
        _progress = progress ?? throw new ArgumentNullException(nameof(progress));
        return this;
    }

    /// <summary>
    /// Runs the sweep until a budget is spent (or the grid is done) and returns the best trial, its fitted pipeline in
    /// <see cref="TrialResult.Model"/> (saveable with <c>mlContext.Model.Save</c>).
    /// </summary>
    /// <exception cref="InvalidOperationException">Something is not set, no budget is set, the objective was never
    /// reported by a trial, or no trial produced a value (every one failed; the leaderboard says why).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled; finished trials stay recorded.</exception>
    public Task<TrialResult> RunAsync(CancellationToken cancellationToken = default)
    {
        CheckSettings();
        return Task.Factory.StartNew(() => Run(cancellationToken), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    private LlmExperiment SetTunerFactory(Func<Sweeping.SearchSpace, int, ITuner> factory)
    {
        _tunerFactory = factory;
        _tuner = null;
        return this;
    }

    private void CheckSettings()
    {
        if (_train is null)
            throw new InvalidOperationException("The experiment has no data: call SetDataset(train, validation) before RunAsync.");
        if (_pipeline is null)
            throw new InvalidOperationException("The experiment has no pipeline: call SetPipeline(mlContext.Llm().CreateSweepableEstimator(factory, searchSpace)) before RunAsync.");
        if (_objective.ReadValidation is not null && _validation is null)
            throw new InvalidOperationException($"The objective '{_objective.Name}' is measured on validation data, but SetDataset was given none; pass the validation data or use SweepObjective.FromModel.");
        static bool Finite(ITuner? t) => t is GridSearchTuner or AshaTuner { Sampler: GridSearchTuner };
        bool finiteTuner = Finite(_tuner) || (_tuner is null && _tunerFactory is not null && Finite(_tunerFactory(_pipeline.SearchSpace, 0)));
        if (_maxTrials is null && _timeBudget is null && _maxTotalTokens is null && !finiteTuner)
            throw new InvalidOperationException("The experiment has no budget: call SetMaxTrials(n), SetTrainingTimeInSeconds(s) or SetMaxTotalTokens(t) (a grid search ends by itself).");
        if (_finalFraction > 0 && _timeBudget is null && _maxTotalTokens is null)
        {
            throw new InvalidOperationException(FormattableString.Invariant(
                $"SetFinalTraining({_finalFraction}) keeps a share of the sweep's time or total token budget for training the best trial further, but neither is set: call SetTrainingTimeInSeconds(s) or SetMaxTotalTokens(t), or SetFinalTraining(0) to turn the final phase off."));
        }
    }

    private TrialResult Run(CancellationToken cancellationToken)
    {
        var space = _pipeline!.SearchSpace;
        int seed = _seed ?? HostAccess.Seed(_context) ?? 0;
        var tuner = _tuner ?? (_tunerFactory ?? ((s, sd) => new RandomSearchTuner(s, sd)))(space, seed);
        var early = tuner as IEarlyStoppingTuner;
        if (early is not null && _objective.ReadValidation is null)
            throw new InvalidOperationException($"{tuner.GetType().Name} stops trials on the objective reported at the trainer's evaluations, but the objective '{_objective.Name}' is computed on the fitted model only; use a validation objective (SweepObjective.ValidationLoss, BitsPerByte or FromValidation).");
        _directory ??= Path.Combine(Path.GetTempPath(), "llm-sweep-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(_directory);
        _trials = [];

        // With a final phase the search gets (1 − f) of the time and token budgets; the final phase the rest.
        var searchTime = _timeBudget * (1 - _finalFraction);
        long? searchTokens = _maxTotalTokens is { } allTokens ? (long)Math.Floor(allTokens * (1 - _finalFraction)) : null;
        string finalDirectory = SweepFiles.FinalDirectory(_directory);
        var clock = Stopwatch.StartNew();
        TimeSpan before = TimeSpan.Zero;               // time of trials recorded by earlier runs
        using var deadline = new CancellationTokenSource();
        TrialResult? best = null;
        for (int id = 1; ; id++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (_maxTrials is { } max && id > max)
                break;
            var elapsed = before + clock.Elapsed;
            if (searchTime is { } budget && elapsed >= budget)
                break;
            long spent = _trials.Sum(t => t.Tokens);
            if (searchTokens is { } total && spent >= total)
                break;
            if (_finalFraction > 0 && Directory.Exists(finalDirectory) && SweepFiles.ReadResult(_directory, id) is null)
                break;   // the final phase has started: the search is over

            var settings = new TrialSettings
            {
                TrialId = id,
                Seed = TrialSeed(seed, id),
                MaxTokens = _maxTokens,
                MaxTime = _trialTime,
                Directory = SweepFiles.TrialDirectory(_directory, id),
            };
            var parameter = tuner.Propose(settings);
            if (parameter is null)
                break;
            settings.Parameter = parameter;

            TrialResult result;
            if (SweepFiles.ReadResult(_directory, id) is { } recorded)
            {
                // Replay: same proposal, the recorded reports through the early-stopping rule, then the tuner learns it.
                if (!recorded.Parameter.Equals(parameter))
                {
                    throw new InvalidOperationException(
                        $"The sweep directory '{_directory}' records trial {id} with parameters {recorded.Parameter}, but this sweep proposes {parameter}: " +
                        "it was written by a sweep with another search space, tuner or seed. Use another directory, or the same settings to resume it.");
                }

                if (early is not null)
                {
                    foreach (var p in recorded.Curve)
                        early.ShouldStop(recorded.TrialSettings, p.Tokens, p.Elapsed, _objective.ToLoss(p.Value), out _);
                }

                result = recorded;
                before += recorded.Duration;
            }
            else
            {
                if (Directory.Exists(settings.Directory))
                    Directory.Delete(settings.Directory, recursive: true);   // a trial that never ended: start it again
                Directory.CreateDirectory(settings.Directory);
                var remaining = searchTime is { } b ? b - (before + clock.Elapsed) : (TimeSpan?)null;
                if (remaining is { } r)
                    deadline.CancelAfter(r > TimeSpan.Zero ? r : TimeSpan.Zero);
                result = RunTrial(settings, early, best, before + clock.Elapsed, clock, before, searchTokens - spent, deadline.Token, cancellationToken);
                SweepFiles.WriteResult(result);
            }

            tuner.Update(result);
            _trials.Add(result);
            if (IsBetter(result, best))
            {
                if (best?.Model is IDisposable old)
                    old.Dispose();
                if (best is not null)
                {
                    best.Model = null;
                    File.Delete(SweepFiles.ModelPath(best.TrialSettings.Directory));
                }

                best = result;
                if (result.Model is { } model)
                    SaveModel(model, SweepFiles.ModelPath(result.TrialSettings.Directory));
            }
            else if (result.Model is IDisposable notBest)
            {
                notBest.Dispose();
                result.Model = null;
            }

            WriteSummary();
            Report(id, best, before + clock.Elapsed, null, result);
            if (deadline.IsCancellationRequested || result.StopReason == TokenBudgetReason)
                break;
        }

        if (best is null)
        {
            var failure = _trials.FirstOrDefault(t => t.Status == TrialStatus.Failed);
            throw new InvalidOperationException(_trials.Count == 0
                ? "The sweep ran no trial: the budget was already spent (a resumed sweep counts its recorded trials) or the tuner proposed nothing."
                : $"None of the sweep's {_trials.Count} trials produced a value of '{_objective.Name}'" +
                  (failure is null ? "." : $"; trial {failure.TrialId} failed: {failure.StopReason}") + $" See {Path.Combine(_directory, "leaderboard.txt")}.");
        }

        if (_finalFraction > 0)
            best = RunFinalPhase(best, clock, ref before, cancellationToken);
        best.Model ??= LoadOrRefitBest(best);
        return best;
    }

    /// <summary>
    /// The final phase (<see cref="SetFinalTraining"/>): the best search trial continued from its newest checkpoint on
    /// what is left of the budgets, recorded in <c>final/</c> (replayed when a previous run recorded it). Returns the
    /// continuation, or <paramref name="best"/> when nothing is left to train or the continuation failed.
    /// </summary>
    private TrialResult RunFinalPhase(TrialResult best, Stopwatch clock, ref TimeSpan before, CancellationToken cancellationToken)
    {
        int id = _trials.Count + 1;
        string directory = SweepFiles.FinalDirectory(_directory!);
        TrialResult final;
        if (SweepFiles.ReadResultIn(directory, id) is { } recorded)
        {
            if (recorded.TrialSettings.ContinuesTrial != best.TrialId || !recorded.Parameter.Equals(best.Parameter))
            {
                throw new InvalidOperationException(
                    $"The sweep directory '{_directory}' records a final phase continuing trial {recorded.TrialSettings.ContinuesTrial}, but this sweep's best trial is {best.TrialId}: " +
                    "it was written by a sweep with other settings. Use another directory, or the same settings to resume it.");
            }

            final = recorded;
            before += recorded.Duration;
        }
        else
        {
            cancellationToken.ThrowIfCancellationRequested();
            TimeSpan? timeLeft = _timeBudget - (before + clock.Elapsed);
            long? tokensLeft = _maxTotalTokens - _trials.Sum(t => t.Tokens);
            string? checkpoint = Directory.Exists(best.TrialSettings.CheckpointDirectory) ? Checkpoint.List(best.TrialSettings.CheckpointDirectory).LastOrDefault() : null;
            var (_, baseTokens, baseSeconds, history) = checkpoint is null ? (0L, 0L, 0.0, []) : Checkpoint.ReadProgress(checkpoint);
            // Nothing to train when the tokens are spent, or when the time left would not even cover the pipeline's
            // set-up before the trainer starts (taken as long as the best trial's was).
            if (tokensLeft is <= 0 || (timeLeft is { } tl && tl.TotalSeconds <= Math.Max(0, best.Duration.TotalSeconds - baseSeconds)))
                return best;
            var finalClock = Stopwatch.StartNew();
            if (Directory.Exists(directory))
                Directory.Delete(directory, recursive: true);   // a final phase that never ended: start it again
            Directory.CreateDirectory(directory);
            var settings = new TrialSettings
            {
                TrialId = id,
                Seed = best.TrialSettings.Seed,
                MaxTokens = baseTokens + tokensLeft,
                Directory = directory,
                Parameter = best.Parameter,
                ContinuesTrial = best.TrialId,
            };
            var result = RunTrial(settings, early: null, best, before + clock.Elapsed, clock, before, tokensLeft: null, CancellationToken.None, cancellationToken,
                o =>
                {
                    // Sized when the trainer is about to start, the pipeline's transforms fitted: under a time budget,
                    // the tokens the best trial's own step and evaluation times reach in the time left, and that time
                    // as the trainer's budget too.
                    o.ResumeFrom = checkpoint;
                    o.MaxSteps = null;
                    o.MaxEpochs = null;
                    long? extra = tokensLeft;
                    if (timeLeft is { } left)
                    {
                        double seconds = Math.Max(1e-3, left.TotalSeconds - finalClock.Elapsed.TotalSeconds);
                        o.TimeBudget = TimeSpan.FromSeconds(baseSeconds + seconds);
                        if (ReachableTokens(history, seconds, o.EvaluationInterval) is { } reach)
                            extra = extra is { } t ? Math.Min(t, reach) : reach;
                    }

                    o.MaxTokens = extra is { } e ? baseTokens + Math.Max(1, e) : null;
                });
            final = new TrialResult
            {
                TrialSettings = settings,
                Status = result.Status,
                StopReason = result.Status == TrialStatus.Failed
                    ? result.StopReason
                    : $"final phase: trial {best.TrialId} continued from {baseTokens} to {baseTokens + Math.Max(0, result.Tokens - baseTokens)} tokens",
                Metric = result.Metric,
                Loss = result.Loss,
                Tokens = Math.Max(0, result.Tokens - baseTokens),
                Duration = result.Duration,
                Curve = result.Curve.Where(p => p.Tokens > baseTokens).ToArray(),
                Model = result.Model,
            };
            SweepFiles.WriteResult(final);
        }

        _trials.Add(final);
        if (final.Status != TrialStatus.Failed && double.IsFinite(final.Loss))
        {
            if (best.Model is IDisposable old)
                old.Dispose();
            best.Model = null;
            if (final.Model is { } model)
                SaveModel(model, SweepFiles.ModelPath(directory));
        }

        WriteSummary();
        Report(id, final.Status == TrialStatus.Failed ? best : final, before + clock.Elapsed, null, final);
        return final.Status == TrialStatus.Failed || !double.IsFinite(final.Loss) ? best : final;
    }

    /// <summary>
    /// The training tokens a run continued from <paramref name="history"/> reaches in <paramref name="seconds"/>: the
    /// median time of a step without evaluation (the first row, which pays the warm-up, left out), the median extra
    /// time of a step with one, an evaluation every <paramref name="evaluationInterval"/> steps and one at the end.
    /// Null when the history has no step to time.
    /// </summary>
    internal static long? ReachableTokens(IReadOnlyList<TrainingMetrics> history, double seconds, int evaluationInterval)
    {
        var steps = new List<double>();
        var evaluations = new List<double>();
        for (int i = 1; i < history.Count; i++)
        {
            double dt = history[i].ElapsedSeconds - history[i - 1].ElapsedSeconds;
            if (dt >= 0 && history[i].Step == history[i - 1].Step + 1)
                (history[i].ValidationLoss is null ? steps : evaluations).Add(dt);
        }

        if (steps.Count == 0)
            return null;
        double step = Median(steps);
        double evaluation = evaluations.Count == 0 ? 0 : Math.Max(0, Median(evaluations) - step);
        long tokensPerStep = history[^1].Tokens / Math.Max(1, history[^1].Step);
        double reachable = (seconds - evaluation) / (step + evaluation / Math.Max(1, evaluationInterval));
        return reachable <= 0 ? 0 : (long)Math.Floor(reachable) * tokensPerStep;

        static double Median(List<double> values)
        {
            values.Sort();
            int n = values.Count;
            return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
        }
    }

    private static bool IsBetter(TrialResult candidate, TrialResult? best) =>
        candidate.Status != TrialStatus.Failed && double.IsFinite(candidate.Loss) &&
        (best is null || candidate.Loss < best.Loss || (candidate.Loss == best.Loss && candidate.Status < best.Status));

    /// <summary>Each trial's seed: a fixed function of the sweep's seed and the trial number.</summary>
    private static int TrialSeed(int seed, int trialId) => (int)(((uint)seed * 2654435761u + (uint)trialId * 40503u) & int.MaxValue);

    private const string TokenBudgetReason = "sweep token budget";

    private TrialResult RunTrial(TrialSettings settings, IEarlyStoppingTuner? early, TrialResult? best, TimeSpan elapsedAtStart, Stopwatch clock, TimeSpan before,
        long? tokensLeft, CancellationToken deadline, CancellationToken caller, Action<CausalLmTrainerOptions>? adjust = null)
    {
        var started = Stopwatch.StartNew();
        var curve = new List<CurvePoint>();
        long tokens = 0;
        string? stopReason = null;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(caller, deadline);
        Report(settings.TrialId, best, elapsedAtStart, null, null);
        var progress = new SyncProgress<TrainingProgress>(p =>
        {
            tokens = p.Tokens;
            if (p.Validation is { } v && _objective.ReadValidation is { } read)
            {
                if (!double.IsFinite(v.Loss))
                    throw new InvalidOperationException(FormattableString.Invariant($"The validation loss became {v.Loss} at step {p.Step}."));
                double value = read(v);
                if (!double.IsNaN(value))
                {
                    curve.Add(new CurvePoint(p.Tokens, value, p.Elapsed));
                    if (stopReason is null && early is not null && early.ShouldStop(settings, p.Tokens, p.Elapsed, _objective.ToLoss(value), out var why))
                    {
                        stopReason = why ?? "stopped by the tuner";
                        stop.Cancel();
                    }
                }
            }

            if (stopReason is null && tokensLeft is { } left && p.Tokens >= left)
            {
                stopReason = TokenBudgetReason;
                stop.Cancel();
            }

            Report(settings.TrialId, best, before + clock.Elapsed, p, null);
        });

        ITransformer? model = null;
        TrialStatus status;
        string reason;
        try
        {
            var estimator = _pipeline!.BuildFromOption(_context, settings.Parameter!);
            model = Fit(estimator, settings, progress, stop.Token, curve, early?.DecisionTokens(settings), early?.DecisionTimes(settings), adjust);
            status = TrialStatus.Completed;
            reason = "completed";
            tokens = Math.Max(tokens, TrainedTokens(model));
        }
        catch (OperationCanceledException) when (stopReason is not null)
        {
            status = TrialStatus.Stopped;
            reason = stopReason;
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !caller.IsCancellationRequested)
        {
            status = TrialStatus.Stopped;
            reason = "sweep time budget";
        }
        catch (OperationCanceledException) when (caller.IsCancellationRequested)
        {
            throw;   // the sweep is cancelled: this trial is not recorded and runs again on resume
        }
        catch (Exception e)
        {
            status = TrialStatus.Failed;
            reason = Describe(e);
        }

        double metric = double.NaN;
        if (status == TrialStatus.Completed && _objective.EvaluateModel is { } evaluate)
        {
            try
            {
                metric = evaluate(model!);
            }
            catch (Exception e)
            {
                status = TrialStatus.Failed;
                reason = "the objective threw: " + Describe(e);
            }
        }
        else if (status != TrialStatus.Failed && curve.Count > 0)
        {
            metric = _objective.Maximize ? curve.Max(p => p.Value) : curve.Min(p => p.Value);
        }

        if (status == TrialStatus.Completed && double.IsNaN(metric))
        {
            (model as IDisposable)?.Dispose();
            throw new InvalidOperationException(
                $"Trial {settings.TrialId} completed but never reported the objective '{_objective.Name}'" +
                (_objective.ReadValidation is not null
                    ? " at any of the trainer's evaluations (a BitsPerByte objective needs a tokenizer on the token column; a custom metric returned NaN)."
                    : " (the model metric returned NaN).") +
                " Every trial would end the same way, so the sweep stops here.");
        }

        if (status == TrialStatus.Failed)
        {
            (model as IDisposable)?.Dispose();
            model = null;
        }

        return new TrialResult
        {
            TrialSettings = settings,
            Status = status,
            StopReason = reason,
            Metric = status == TrialStatus.Failed ? double.NaN : metric,
            Loss = status == TrialStatus.Failed ? double.PositiveInfinity : _objective.ToLoss(metric),
            Tokens = tokens,
            Duration = started.Elapsed,
            Curve = curve.ToArray(),
            Model = model,
        };
    }

    /// <summary>
    /// Fits the pipeline one estimator at a time: the validation data goes through every transform fitted before a
    /// trainer, and each <see cref="CausalLmTrainer"/> fits a copy of its options carrying the trial's settings.
    /// </summary>
    private TransformerChain<ITransformer> Fit(IEstimator<ITransformer> estimator, TrialSettings settings, IProgress<TrainingProgress> progress,
        CancellationToken token, List<CurvePoint> curve, IReadOnlyList<long>? decisionTokens, IReadOnlyList<TimeSpan>? decisionTimes, Action<CausalLmTrainerOptions>? adjust)
    {
        var steps = HostAccess.FlattenEstimators(estimator).ToList();
        if (!steps.Any(s => s is CausalLmTrainer))
            throw new InvalidOperationException($"The pipeline built for trial {settings.TrialId} has no CausalLmTrainer (mlContext.Llm().Trainers.CausalLm(...)); a sweep trains a language model.");
        IDataView train = _train!;
        IDataView? validation = _validation;
        var fitted = new List<ITransformer>();
        try
        {
            for (int i = 0; i < steps.Count; i++)
            {
                ITransformer transformer;
                if (steps[i] is CausalLmTrainer trainer)
                {
                    var o = trainer.Options.Clone();
                    o.Seed = settings.Seed;
                    if (settings.MaxTokens is { } budget)
                        o.MaxTokens = o.MaxTokens is { } own ? Math.Min(own, budget) : budget;
                    if (settings.MaxTime is { } time)
                        o.TimeBudget = o.TimeBudget is { } ownTime && ownTime < time ? ownTime : time;
                    o.CheckpointDirectory = settings.CheckpointDirectory;
                    o.LogDirectory = settings.LogDirectory;
                    o.Progress = o.Progress is { } user ? new SyncProgress<TrainingProgress>(p => { user.Report(p); progress.Report(p); }) : progress;
                    o.CancellationToken = o.CancellationToken.CanBeCanceled
                        ? CancellationTokenSource.CreateLinkedTokenSource(o.CancellationToken, token).Token
                        : token;
                    if (validation is not null)
                        o.ValidationSet = validation;
                    if (decisionTokens is { Count: > 0 })
                        o.EvaluateAtTokens = o.EvaluateAtTokens is { } own ? [.. own.Union(decisionTokens).Order()] : decisionTokens;
                    if (decisionTimes is { Count: > 0 })
                        o.EvaluateAtTimes = o.EvaluateAtTimes is { } ownTimes ? [.. ownTimes.Union(decisionTimes).Order()] : decisionTimes;
                    adjust?.Invoke(o);
                    var lm = trainer.WithOptions(o).Fit(train);
                    AddFinalEvaluation(lm, curve);
                    transformer = lm;
                }
                else
                {
                    transformer = steps[i].Fit(train);
                }

                fitted.Add(transformer);
                if (i < steps.Count - 1)
                {
                    train = transformer.Transform(train);
                    validation = validation is null ? null : transformer.Transform(validation);
                }
            }
        }
        catch
        {
            foreach (var t in fitted)
                (t as IDisposable)?.Dispose();
            throw;
        }

        return new TransformerChain<ITransformer>(fitted.ToArray());
    }

    /// <summary>The trainer evaluates after its last step but reports that evaluation only when the last step was a
    /// step limit; a run cut by its own time budget records it only in its history. Take it from there.</summary>
    private void AddFinalEvaluation(CausalLmTransformer lm, List<CurvePoint> curve)
    {
        if (_objective.ReadValidation is not { } read || lm.History.Count == 0)
            return;
        var last = lm.History[^1];
        if (last.ValidationLoss is not { } loss || (curve.Count > 0 && curve[^1].Tokens >= last.Tokens))
            return;
        double value = read(new LanguageModelMetrics(loss, last.ValidationPerplexity ?? Math.Exp(loss), last.ValidationBitsPerByte ?? double.NaN, 0));
        if (!double.IsNaN(value))
            curve.Add(new CurvePoint(last.Tokens, value, TimeSpan.FromSeconds(last.ElapsedSeconds)));
    }

    private static long TrainedTokens(ITransformer model) =>
        model is IEnumerable<ITransformer> chain ? chain.OfType<CausalLmTransformer>().Select(t => t.History.Count == 0 ? 0 : t.History[^1].Tokens).DefaultIfEmpty(0).Max() : 0;

    private static string Describe(Exception e)
    {
        while (e is TargetInvocationException or AggregateException && e.InnerException is not null)
            e = e.InnerException!;
        string message = $"{e.GetType().Name}: {e.Message}";
        if (e.InnerException is { } inner && !message.Contains(inner.Message, StringComparison.Ordinal))
            message += $" ({inner.GetType().Name}: {inner.Message})";
        return message.ReplaceLineEndings(" ");
    }

    private void SaveModel(ITransformer model, string path)
    {
        string temporary = path + ".tmp";
        _context.Model.Save(model, _train!.Schema, temporary);
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>
    /// The best trial's fitted pipeline when this run did not train it: the model.zip a previous run saved, or — for a
    /// trial stopped early — the pipeline fitted again with its trainer resumed from the trial's last checkpoint and no
    /// step left to take (the transforms before it are refitted: same data, same seed, same result).
    /// </summary>
    private ITransformer? LoadOrRefitBest(TrialResult best)
    {
        string zip = SweepFiles.ModelPath(best.TrialSettings.Directory);
        if (File.Exists(zip))
            return _context.Model.Load(zip, out _);
        string checkpoints = best.TrialSettings.CheckpointDirectory;
        var newest = Directory.Exists(checkpoints) ? Directory.GetFiles(checkpoints, "checkpoint-*.ckpt").Order(StringComparer.Ordinal).LastOrDefault() : null;
        if (newest is null || !long.TryParse(Path.GetFileNameWithoutExtension(newest)["checkpoint-".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out long step))
            return null;
        var estimator = _pipeline!.BuildFromOption(_context, best.Parameter);
        var steps = HostAccess.FlattenEstimators(estimator).ToList();
        IDataView train = _train!;
        IDataView? validation = _validation;
        var fitted = new List<ITransformer>();
        foreach (var s in steps)
        {
            ITransformer t;
            if (s is CausalLmTrainer trainer)
            {
                var o = trainer.Options.Clone();
                o.Seed = best.TrialSettings.Seed;
                o.ResumeFrom = newest;
                o.MaxSteps = step;
                o.MaxTokens = null;
                o.MaxEpochs = null;
                o.TimeBudget = null;
                o.CheckpointDirectory = null;
                if (validation is not null)
                    o.ValidationSet = validation;
                t = trainer.WithOptions(o).Fit(train);
            }
            else
            {
                t = s.Fit(train);
            }

            fitted.Add(t);
            train = t.Transform(train);
            validation = validation is null ? null : t.Transform(validation);
        }

        var model = new TransformerChain<ITransformer>(fitted.ToArray());
        SaveModel(model, zip);
        return model;
    }

    private void WriteSummary()
    {
        var result = Result;
        result.SaveCsv(Path.Combine(_directory!, "leaderboard.csv"));
        SweepFiles.WriteAllTextAtomic(Path.Combine(_directory!, "leaderboard.txt"), result.ToTable());
        if (result.Trials.Any(t => t.Curve.Count > 0))
            result.SavePlot(Path.Combine(_directory!, "sweep.png"));
    }

    private void Report(int trial, TrialResult? best, TimeSpan elapsed, TrainingProgress? training, TrialResult? finished)
    {
        if (_progress is null)
            return;
        TimeSpan? left = _timeBudget is { } b ? (b > elapsed ? b - elapsed : TimeSpan.Zero) : null;
        int done = _trials.Count;
        if (_maxTrials is { } max && done > 0)
        {
            var byTrials = TimeSpan.FromTicks(_trials.Sum(t => t.Duration.Ticks) / done * Math.Max(0, max - done));
            left = left is { } l && l < byTrials ? l : byTrials;
        }

        _progress.Report(new SweepProgress(trial, _maxTrials, best?.TrialId, best?.Metric ?? double.NaN, elapsed, left, training, finished));
    }

    /// <summary>An <see cref="IProgress{T}"/> that calls its handler at once, on the reporting thread (Progress&lt;T&gt;
    /// posts to a synchronization context, too late to stop a trial between two steps).</summary>
    private sealed class SyncProgress<T>(Action<T> handler) : IProgress<T>
    {
        public void Report(T value) => handler(value);
    }
}
