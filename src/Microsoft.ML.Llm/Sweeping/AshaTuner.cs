using Microsoft.ML.Llm.Sweeping;

namespace Microsoft.ML.Llm;

/// <summary>
/// Asynchronous successive halving (ASHA; Li et al. 2018, "A System for Massively Parallel Hyperparameter Tuning"):
/// rungs at token budgets <c>minTokens · η^k</c>; when a trial first reports its objective at or past a rung's budget,
/// the value is recorded at that rung and the trial goes on only if it is among the best ⌊n/η⌋ (at least one) of the
/// n values recorded there so far, itself included; otherwise it is stopped and keeps its partial result. So the first
/// trial always continues, and later ones must beat the top 1/η of their predecessors at every rung. Configurations
/// come from <c>sampler</c> (random search by default: ASHA decides how long each trial trains, not what it tries).
/// </summary>
/// <remarks>
/// The rung budgets are <see cref="DecisionTokens"/>: an <see cref="LlmExperiment"/> asks the trainer for an evaluation
/// at the first step whose tokens reach each (<see cref="CausalLmTrainerOptions.EvaluateAtTokens"/>), so a trial is
/// judged at its rung whatever its batch size and <see cref="CausalLmTrainerOptions.EvaluationInterval"/>. (Driven by
/// hand, a rung is checked at the first report at or after its budget.) The decision is a pure function of the
/// recorded values, so replaying a sweep directory gives the same decisions.
/// </remarks>
public sealed class AshaTuner : IEarlyStoppingTuner
{
    private readonly ITuner _sampler;
    private readonly List<Dictionary<int, double>> _rungs = [];   // rung k: trial id → loss recorded there

    /// <summary>ASHA over <paramref name="searchSpace"/>.</summary>
    /// <param name="searchSpace">The space (not empty).</param>
    /// <param name="minTokens">The budget of the first rung, in training tokens (positive).</param>
    /// <param name="reductionFactor">η: each rung keeps the best 1/η (at least 2).</param>
    /// <param name="seed">Seed of the default random sampler.</param>
    /// <param name="sampler">Proposes the configurations; null = <see cref="RandomSearchTuner"/>.</param>
    public AshaTuner(Sweeping.SearchSpace searchSpace, long minTokens, int reductionFactor = 3, int seed = 0, ITuner? sampler = null)
    {
        ArgumentNullException.ThrowIfNull(searchSpace);
        searchSpace.CheckNotEmpty(nameof(AshaTuner));
        if (minTokens <= 0)
            throw new ArgumentOutOfRangeException(nameof(minTokens), minTokens, $"Parameter 'minTokens' (the first rung's budget) must be a positive number of tokens; got {minTokens}.");
        if (reductionFactor < 2)
            throw new ArgumentOutOfRangeException(nameof(reductionFactor), reductionFactor, $"Parameter 'reductionFactor' (η) must be at least 2; got {reductionFactor}.");
        MinTokens = minTokens;
        ReductionFactor = reductionFactor;
        _sampler = sampler ?? new RandomSearchTuner(searchSpace, seed);
    }

    /// <summary>The tuner that proposes the configurations.</summary>
    public ITuner Sampler => _sampler;

    /// <summary>The first rung's budget in tokens.</summary>
    public long MinTokens { get; }

    /// <summary>η.</summary>
    public int ReductionFactor { get; }

    /// <summary>The budget of rung <paramref name="k"/>: MinTokens · η^k.</summary>
    public long RungTokens(int k) => (long)Math.Min(long.MaxValue, MinTokens * Math.Pow(ReductionFactor, k));

    /// <summary>The losses recorded at rung <paramref name="k"/> by trial id.</summary>
    public IReadOnlyDictionary<int, double> RecordedAt(int k) => k < _rungs.Count ? _rungs[k] : new Dictionary<int, double>();

    /// <inheritdoc/>
    public Parameter? Propose(TrialSettings settings) => _sampler.Propose(settings);

    /// <inheritdoc/>
    public void Update(TrialResult result) => _sampler.Update(result);

    /// <summary>The rung budgets up to the trial's token budget (<see cref="TrialSettings.MaxTokens"/>; without one,
    /// the first 32 rungs).</summary>
    public IReadOnlyList<long> DecisionTokens(TrialSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var rungs = new List<long>();
        for (int k = 0; k < 32 && RungTokens(k) <= (settings.MaxTokens ?? long.MaxValue) && RungTokens(k) < long.MaxValue; k++)
            rungs.Add(RungTokens(k));
        return rungs;
    }

    /// <inheritdoc/>
    public bool ShouldStop(TrialSettings settings, long tokens, double loss, out string? reason)
    {
        ArgumentNullException.ThrowIfNull(settings);
        reason = null;
        int id = settings.TrialId;
        for (int k = 0; RungTokens(k) <= tokens; k++)
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
                reason = string.Create(CultureInfo.InvariantCulture,
                    $"stopped at rung {k} ({RungTokens(k)} tokens): {loss:G6} is not among the best {keep} of {sorted.Length} (cutoff {cutoff:G6})");
                return true;
            }
        }

        return false;
    }
}
