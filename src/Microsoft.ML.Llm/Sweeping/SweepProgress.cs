namespace Microsoft.ML.Llm;

/// <summary>A progress report of an <see cref="LlmExperiment"/>: at each trial's start, at the trainer's reports and when the trial ends.</summary>
/// <param name="Trial">The current trial's number (from 1).</param>
/// <param name="MaxTrials">The trial limit, if set.</param>
/// <param name="BestTrial">The best trial so far, if any.</param>
/// <param name="BestMetric">Its objective value (NaN when none).</param>
/// <param name="Elapsed">Sweep time so far (trials of earlier runs of a resumed sweep included).</param>
/// <param name="EstimatedRemaining">Time to the end of the sweep: the time budget left, or the mean trial time × the trials left, whichever is less; null when neither is known.</param>
/// <param name="Training">The trainer's report, when this report relays one.</param>
/// <param name="Finished">The trial that just ended, when this report announces one.</param>
public sealed record SweepProgress(int Trial, int? MaxTrials, int? BestTrial, double BestMetric, TimeSpan Elapsed, TimeSpan? EstimatedRemaining,
    TrainingProgress? Training, TrialResult? Finished)
{
    /// <inheritdoc/>
    public override string ToString() =>
        $"trial {Trial}{(MaxTrials is { } m ? $" of {m}" : "")}" +
        (BestTrial is { } b ? FormattableString.Invariant($", best so far {BestMetric:G6} (trial {b})") : "") +
        FormattableString.Invariant($", elapsed {Elapsed:hh\\:mm\\:ss}") +
        (EstimatedRemaining is { } eta ? FormattableString.Invariant($", ETA {eta:hh\\:mm\\:ss}") : "") +
        (Training is { } t ? FormattableString.Invariant($" | step {t.Step}, {t.Tokens} tokens, loss {t.Loss:F4}") + (t.Validation is { } v ? FormattableString.Invariant($", val {v.Loss:F4}") : "") : "") +
        (Finished is { } f ? FormattableString.Invariant($" | trial {f.TrialId} {f.Status}: {f.Metric:G6} ({f.StopReason})") : "");
}
