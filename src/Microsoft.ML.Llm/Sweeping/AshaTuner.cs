using Microsoft.ML.Llm.Sweeping;

namespace Microsoft.ML.Llm;

/// <summary>
/// Asynchronous successive halving (ASHA; Li et al. 2018, "A System for Massively Parallel Hyperparameter Tuning"):
/// rungs at budgets <c>min · η^k</c>, in training tokens or in training time; when a trial first reports its objective
/// at or past a rung's budget, the value is recorded at that rung and the trial goes on only if it is among the best
/// ⌊n/η⌋ (at least one) of the n values recorded there so far, itself included; otherwise it is stopped and keeps its
/// partial result. So the first trial always continues, and later ones must beat the top 1/η of their predecessors at
/// every rung. Configurations come from <c>sampler</c> (random search by default: ASHA decides how long each trial
/// trains, not what it tries).
/// </summary>
/// <remarks>
/// <para>
/// <b>Tokens or time.</b> Rungs in tokens (<see cref="AshaTuner(Sweeping.SearchSpace, long, int, int, ITuner?)"/>)
/// compare trials after the same data: deterministic, and right when the sweep's budget is tokens
/// (<see cref="LlmExperiment.SetMaxTokens"/>). Under a wall-clock budget they favour configurations that learn more per
/// token but run slower per token (more layers, wider), which then see fewer tokens in the time that counts. Rungs in
/// training time (<see cref="AshaTuner(Sweeping.SearchSpace, TimeSpan, int, int, ITuner?)"/>) compare trials after the
/// same wall time instead, which is what a time budget rewards; pair them with a per-trial time budget
/// (<see cref="LlmExperiment.SetTrialTimeInSeconds"/>) so the last rung is the trial's end. Timings depend on the
/// machine and its load, so a time-rung sweep is not reproducible run to run (its replay from a sweep directory is:
/// the recorded times are replayed).
/// </para>
/// <para>
/// The rung budgets are <see cref="DecisionTokens"/> or <see cref="DecisionTimes"/>: an <see cref="LlmExperiment"/>
/// asks the trainer for an evaluation at the first step reaching each (<see cref="CausalLmTrainerOptions.EvaluateAtTokens"/>,
/// <see cref="CausalLmTrainerOptions.EvaluateAtTimes"/>), so a trial is judged at its rung whatever its batch size and
/// <see cref="CausalLmTrainerOptions.EvaluationInterval"/>. (Driven by hand, a rung is checked at the first report at or
/// after its budget.) The decision is a pure function of the recorded values, so replaying a sweep directory gives the
/// same decisions.
/// </para>
/// </remarks>
public sealed class AshaTuner : IEarlyStoppingTuner
{
    private readonly ITuner _sampler;
    private readonly List<Dictionary<int, double>> _rungs = [];   // rung k: trial id → loss recorded there

    /// <summary>ASHA over <paramref name="searchSpace"/> with rungs in training tokens.</summary>
    /// <param name="searchSpace">The space (not empty).</param>
    /// <param name="minTokens">The budget of the first rung, in training tokens (positive).</param>
    /// <param name="reductionFactor">η: each rung keeps the best 1/η (at least 2).</param>
    /// <param name="seed">Seed of the default random sampler.</param>
    /// <param name="sampler">Proposes the configurations; null = <see cref="RandomSearchTuner"/>.</param>
    public AshaTuner(Sweeping.SearchSpace searchSpace, long minTokens, int reductionFactor = 3, int seed = 0, ITuner? sampler = null)
        : this(searchSpace, reductionFactor, seed, sampler)
    {
        CheckMinTokens(minTokens);
        MinTokens = minTokens;
    }

    /// <summary>ASHA over <paramref name="searchSpace"/> with rungs in training wall time.</summary>
    /// <param name="searchSpace">The space (not empty).</param>
    /// <param name="minTime">The budget of the first rung, in training time (positive).</param>
    /// <param name="reductionFactor">η: each rung keeps the best 1/η (at least 2).</param>
    /// <param name="seed">Seed of the default random sampler.</param>
    /// <param name="sampler">Proposes the configurations; null = <see cref="RandomSearchTuner"/>.</param>
    public AshaTuner(Sweeping.SearchSpace searchSpace, TimeSpan minTime, int reductionFactor = 3, int seed = 0, ITuner? sampler = null)
        : this(searchSpace, reductionFactor, seed, sampler)
    {
        CheckMinTime(minTime);
        MinTime = minTime;
    }

    private AshaTuner(Sweeping.SearchSpace searchSpace, int reductionFactor, int seed, ITuner? sampler)
    {
        ArgumentNullException.ThrowIfNull(searchSpace);
        searchSpace.CheckNotEmpty(nameof(AshaTuner));
        CheckReductionFactor(reductionFactor);
        ReductionFactor = reductionFactor;
        _sampler = sampler ?? new RandomSearchTuner(searchSpace, seed);
    }

    // The checks of the constructors' arguments, also made when an LlmExperiment is given them (SetAshaTuner), before
    // the tuner is built.
    internal static void CheckMinTokens(long minTokens)
    {
        if (minTokens <= 0)
            throw new ArgumentOutOfRangeException(nameof(minTokens), minTokens, $"Parameter 'minTokens' (the first rung's budget) must be a positive number of tokens; got {minTokens}.");
    }

    internal static void CheckMinTime(TimeSpan minTime)
    {
        if (minTime <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(minTime), minTime, $"Parameter 'minTime' (the first rung's budget) must be a positive time; got {minTime}.");
    }

    internal static void CheckReductionFactor(int reductionFactor)
    {
        if (reductionFactor < 2)
            throw new ArgumentOutOfRangeException(nameof(reductionFactor), reductionFactor, $"Parameter 'reductionFactor' (η) must be at least 2; got {reductionFactor}.");
    }

    /// <summary>The tuner that proposes the configurations.</summary>
    public ITuner Sampler => _sampler;

    /// <summary>The first rung's budget in tokens; null when the rungs are in time.</summary>
    public long? MinTokens { get; }

    /// <summary>The first rung's budget in training time; null when the rungs are in tokens.</summary>
    public TimeSpan? MinTime { get; }

    /// <summary>η.</summary>
    public int ReductionFactor { get; }

    /// <summary>The budget of rung <paramref name="k"/> in tokens, MinTokens · η^k (rungs in tokens only).</summary>
    public long RungTokens(int k) => MinTokens is { } min
        ? (long)Math.Min(long.MaxValue, min * Math.Pow(ReductionFactor, k))
        : throw new InvalidOperationException("This AshaTuner's rungs are in training time (MinTime); use RungTime.");

    /// <summary>The budget of rung <paramref name="k"/> in training time, MinTime · η^k (rungs in time only).</summary>
    public TimeSpan RungTime(int k) => MinTime is { } min
        ? TimeSpan.FromSeconds(Math.Min(TimeSpan.MaxValue.TotalSeconds / 2, min.TotalSeconds * Math.Pow(ReductionFactor, k)))
        : throw new InvalidOperationException("This AshaTuner's rungs are in tokens (MinTokens); use RungTokens.");

    /// <summary>The losses recorded at rung <paramref name="k"/> by trial id.</summary>
    public IReadOnlyDictionary<int, double> RecordedAt(int k) => k < _rungs.Count ? _rungs[k] : new Dictionary<int, double>();

    /// <inheritdoc/>
    public Parameter? Propose(TrialSettings settings) => _sampler.Propose(settings);

    /// <inheritdoc/>
    public void Update(TrialResult result) => _sampler.Update(result);

    /// <summary>The rung budgets in tokens up to the trial's token budget (<see cref="TrialSettings.MaxTokens"/>;
    /// without one, the first 32 rungs); empty when the rungs are in time.</summary>
    public IReadOnlyList<long> DecisionTokens(TrialSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var rungs = new List<long>();
        for (int k = 0; MinTokens is not null && k < 32 && RungTokens(k) <= (settings.MaxTokens ?? long.MaxValue) && RungTokens(k) < long.MaxValue; k++)
            rungs.Add(RungTokens(k));
        return rungs;
    }

    /// <summary>The rung budgets in training time up to the trial's time budget (<see cref="TrialSettings.MaxTime"/>;
    /// without one, the first 32 rungs); empty when the rungs are in tokens.</summary>
    public IReadOnlyList<TimeSpan> DecisionTimes(TrialSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var rungs = new List<TimeSpan>();
        for (int k = 0; MinTime is not null && k < 32 && RungTime(k) <= (settings.MaxTime ?? TimeSpan.MaxValue); k++)
            rungs.Add(RungTime(k));
        return rungs;
    }

    /// <inheritdoc/>
    public bool ShouldStop(TrialSettings settings, long tokens, TimeSpan elapsed, double loss, out string? reason)
    {
        ArgumentNullException.ThrowIfNull(settings);
        reason = null;
        int id = settings.TrialId;
        for (int k = 0; k < 64 && Reached(k, tokens, elapsed); k++)
        {
            while (_rungs.Count <= k)
                _rungs.Add([]);
            var rung = _rungs[k];
            if (rung.ContainsKey(id))
                continue;   // this rung was decided at an earlier report
            rung[id] = double.IsNaN(loss) ? double.PositiveInfinity : loss;
            var sorted = rung.Values.Order().ToArray();
            int keep = Math.Max(1, sorted.Length / ReductionFactor);
            double cutoff = sorted[keep - 1];
            if (rung[id] > cutoff)
            {
                string budget = MinTokens is not null
                    ? string.Create(CultureInfo.InvariantCulture, $"{RungTokens(k)} tokens")
                    : string.Create(CultureInfo.InvariantCulture, $"{RungTime(k).TotalSeconds:0.###} s");
                reason = string.Create(CultureInfo.InvariantCulture,
                    $"stopped at rung {k} ({budget}): {loss:G6} is not among the best {keep} of {sorted.Length} (cutoff {cutoff:G6})");
                return true;
            }
        }

        return false;
    }

    /// <summary>Whether a report after <paramref name="tokens"/> tokens and <paramref name="elapsed"/> reaches rung <paramref name="k"/>.</summary>
    private bool Reached(int k, long tokens, TimeSpan elapsed) => MinTokens is not null ? RungTokens(k) <= tokens : RungTime(k) <= elapsed;
}
