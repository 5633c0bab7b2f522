using Microsoft.ML.Llm.Sweeping;

namespace Microsoft.ML.Llm;

/// <summary>
/// Proposes the parameters of each trial and learns from its result (AutoML's <c>ITuner</c>). An
/// <see cref="LlmExperiment"/> calls <see cref="Propose"/> before each trial and <see cref="Update"/> after it
/// (completed, stopped early or failed), one trial at a time and in trial order, also when it replays the trials a
/// sweep directory records.
/// </summary>
public interface ITuner
{
    /// <summary>The parameters of the trial <paramref name="settings"/> describes; null when the tuner has nothing
    /// left to propose (a finished grid), which ends the sweep.</summary>
    Parameter? Propose(TrialSettings settings);

    /// <summary>The result of a trial this tuner proposed.</summary>
    void Update(TrialResult result);
}

/// <summary>
/// A tuner that also stops trials early: the experiment hands it each objective value a running trial reports
/// (at the trainer's evaluations, with the tokens trained so far) and stops the trial when it says so. The trial keeps
/// what it reported (status <see cref="TrialStatus.Stopped"/>).
/// </summary>
public interface IEarlyStoppingTuner : ITuner
{
    /// <summary>Whether the trial should stop now, given its objective <paramref name="loss"/> (lower is better) after
    /// <paramref name="tokens"/> training tokens and <paramref name="elapsed"/> training wall time (the trainer's
    /// <see cref="TrainingProgress.Elapsed"/>); <paramref name="reason"/> says why when it should.</summary>
    bool ShouldStop(TrialSettings settings, long tokens, TimeSpan elapsed, double loss, out string? reason);

    /// <summary>The training-token counts at which this tuner decides about a trial (ASHA's rung budgets): the
    /// experiment asks the trainer for an evaluation at the first step reaching each
    /// (<see cref="CausalLmTrainerOptions.EvaluateAtTokens"/>), so the trial is judged there and not at the next
    /// regular evaluation. Empty (the default): the regular evaluations only.</summary>
    IReadOnlyList<long> DecisionTokens(TrialSettings settings) => [];

    /// <summary>The training times at which this tuner decides about a trial (ASHA's rungs measured in time), asked of
    /// the trainer as <see cref="CausalLmTrainerOptions.EvaluateAtTimes"/>. Empty (the default): none.</summary>
    IReadOnlyList<TimeSpan> DecisionTimes(TrialSettings settings) => [];
}

/// <summary>What a trial is given (AutoML's <c>TrialSettings</c>).</summary>
public sealed class TrialSettings
{
    /// <summary>The trial's number, from 1.</summary>
    public required int TrialId { get; init; }

    /// <summary>The trial's parameters (set after <see cref="ITuner.Propose"/>).</summary>
    public Parameter? Parameter { get; set; }

    /// <summary>The trial's own seed (trainer seed, data order, initialisation), derived from the experiment's seed.</summary>
    public required int Seed { get; init; }

    /// <summary>The trial's token budget (<see cref="LlmExperiment.SetMaxTokens"/>), if any.</summary>
    public long? MaxTokens { get; init; }

    /// <summary>The trial's training-time budget (<see cref="LlmExperiment.SetTrialTimeInSeconds"/>), if any: the
    /// trainer's <see cref="CausalLmTrainerOptions.TimeBudget"/>.</summary>
    public TimeSpan? MaxTime { get; init; }

    /// <summary>For the sweep's final phase (<see cref="LlmExperiment.SetFinalTraining"/>): the search trial it continues
    /// from its last checkpoint; null for a search trial.</summary>
    public int? ContinuesTrial { get; init; }

    /// <summary>The trial's directory in the sweep directory (checkpoints/, logs/, result.json).</summary>
    public required string Directory { get; init; }

    /// <summary>The trainer's checkpoint directory for this trial.</summary>
    public string CheckpointDirectory => Path.Combine(Directory, "checkpoints");

    /// <summary>The trainer's log directory for this trial (metrics.csv, loss.png, TensorBoard).</summary>
    public string LogDirectory => Path.Combine(Directory, "logs");
}

/// <summary>How a trial ended.</summary>
public enum TrialStatus
{
    /// <summary>Trained to its budget.</summary>
    Completed,

    /// <summary>Stopped early (by the tuner, or by the end of the sweep's time budget); it keeps what it reported.</summary>
    Stopped,

    /// <summary>Threw (the factory, fitting, a NaN loss); the sweep went on.</summary>
    Failed,
}

/// <summary>One point of a trial's learning curve: the objective after some training tokens.</summary>
/// <param name="Tokens">Training tokens seen.</param>
/// <param name="Value">The objective's value (in its own direction, e.g. a validation loss).</param>
/// <param name="Elapsed">The trainer's wall time at that point (<see cref="TrainingProgress.Elapsed"/>); zero in
/// records written before it was kept.</param>
public readonly record struct CurvePoint(long Tokens, double Value, TimeSpan Elapsed = default);

/// <summary>The result of one trial (AutoML's <c>TrialResult</c>).</summary>
public sealed class TrialResult
{
    /// <summary>The trial's settings (id, parameters, seed, directory).</summary>
    public required TrialSettings TrialSettings { get; init; }

    /// <summary>How the trial ended.</summary>
    public required TrialStatus Status { get; init; }

    /// <summary>Why it ended: "completed", the tuner's reason for stopping it, "sweep time budget", or the error.</summary>
    public required string StopReason { get; init; }

    /// <summary>The objective: its best value over the trial's reports (the trainer keeps the best weights), or the
    /// value computed on the fitted model for a model objective. NaN for a failed trial.</summary>
    public required double Metric { get; init; }

    /// <summary>The value tuners minimise: <see cref="Metric"/>, negated for an objective to maximise; +∞ when failed.</summary>
    public required double Loss { get; init; }

    /// <summary>Training tokens the trial consumed.</summary>
    public required long Tokens { get; init; }

    /// <summary>Wall time of the trial (building, fitting, evaluating).</summary>
    public required TimeSpan Duration { get; init; }

    /// <summary>The objective at each evaluation, in order.</summary>
    public required IReadOnlyList<CurvePoint> Curve { get; init; }

    /// <summary>The fitted pipeline, when this session holds it (the best trial's; null for others).</summary>
    public ITransformer? Model { get; internal set; }

    /// <summary>Duration in milliseconds (AutoML's name).</summary>
    public double DurationInMilliseconds => Duration.TotalMilliseconds;

    /// <summary>The trial's id.</summary>
    public int TrialId => TrialSettings.TrialId;

    /// <summary>The trial's parameters.</summary>
    public Parameter Parameter => TrialSettings.Parameter!;

    /// <summary>Whether this is the sweep's final phase (the best trial trained further), not a search trial.</summary>
    public bool IsFinalPhase => TrialSettings.ContinuesTrial is not null;
}
