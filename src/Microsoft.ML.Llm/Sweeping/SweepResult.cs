using System.Text;

namespace Microsoft.ML.Llm;

/// <summary>
/// The trials of a sweep and its leaderboard: ranked by the objective (failed trials last), as a text table
/// (<see cref="ToTable"/>), a CSV (<see cref="ToCsv"/>, <see cref="SaveCsv"/>) and a PNG of the learning curves
/// (<see cref="SavePlot"/>).
/// </summary>
public sealed class SweepResult
{
    internal SweepResult(string objectiveName, bool maximize, IReadOnlyList<TrialResult> trials)
    {
        ObjectiveName = objectiveName;
        Maximize = maximize;
        Trials = trials;
    }

    /// <summary>The objective's name.</summary>
    public string ObjectiveName { get; }

    /// <summary>True when higher is better.</summary>
    public bool Maximize { get; }

    /// <summary>Every trial, in trial order.</summary>
    public IReadOnlyList<TrialResult> Trials { get; }

    /// <summary>The trials best first: by <see cref="TrialResult.Loss"/>, then completed before stopped, then by id; failed last.</summary>
    public IReadOnlyList<TrialResult> Leaderboard => Trials
        .OrderBy(t => t.Status == TrialStatus.Failed ? 1 : 0)
        .ThenBy(t => t.Loss)
        .ThenBy(t => t.Status)
        .ThenBy(t => t.TrialId)
        .ToArray();

    /// <summary>The sweep's result: its final phase when one ran (<see cref="LlmExperiment.SetFinalTraining"/>),
    /// else the best trial with a reported objective; null when there is none.</summary>
    public TrialResult? BestTrial =>
        Trials.LastOrDefault(t => t.IsFinalPhase && t.Status != TrialStatus.Failed && double.IsFinite(t.Loss))
        ?? Leaderboard.FirstOrDefault(t => t.Status != TrialStatus.Failed && double.IsFinite(t.Loss));

    /// <summary>The parameter columns of the leaderboard: every dotted path found in the trials' parameters, in first-seen order.</summary>
    public IReadOnlyList<string> ParameterNames => Trials
        .Where(t => t.TrialSettings.Parameter is not null)
        .SelectMany(t => t.Parameter.Flatten().Select(kv => kv.Key))
        .Distinct()
        .ToArray();

    /// <summary>The leaderboard as CSV: rank, trial, status, the objective, tokens, seconds, seed, stop reason, phase
    /// (<c>search</c>, or <c>final</c> for the final phase), the trial a final phase continues (empty for search
    /// trials), then one column per parameter.</summary>
    public string ToCsv()
    {
        var names = ParameterNames;
        var sb = new StringBuilder();
        sb.Append("rank,trial,status,").Append(Csv(ObjectiveName)).Append(",tokens,seconds,seed,stop_reason,phase,continues_trial");
        foreach (var n in names)
            sb.Append(',').Append(Csv(n));
        sb.Append('\n');
        int rank = 0;
        foreach (var t in Leaderboard)
        {
            var values = t.TrialSettings.Parameter?.Flatten().ToDictionary(kv => kv.Key, kv => kv.Value) ?? [];
            sb.Append(++rank).Append(',').Append(t.TrialId).Append(',').Append(t.Status).Append(',')
              .Append(Number(t.Metric)).Append(',').Append(t.Tokens).Append(',')
              .Append(t.Duration.TotalSeconds.ToString("F2", CultureInfo.InvariantCulture)).Append(',')
              .Append(t.TrialSettings.Seed).Append(',').Append(Csv(t.StopReason)).Append(',')
              .Append(t.IsFinalPhase ? "final" : "search").Append(',').Append(t.TrialSettings.ContinuesTrial?.ToString(CultureInfo.InvariantCulture) ?? "");
            foreach (var n in names)
                sb.Append(',').Append(Csv(values.GetValueOrDefault(n, "")));
            sb.Append('\n');
        }

        return sb.ToString();
    }

    /// <summary>Writes <see cref="ToCsv"/> to <paramref name="path"/> (temporary name, then renamed).</summary>
    public void SaveCsv(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        SweepFiles.WriteAllTextAtomic(path, ToCsv());
    }

    /// <summary>The leaderboard as an aligned text table.</summary>
    public string ToTable()
    {
        var names = ParameterNames;
        var header = new List<string> { "rank", "trial", "status", ObjectiveName, "tokens", "time", "stop reason", "phase" };
        header.AddRange(names);
        var rows = new List<List<string>> { header };
        int rank = 0;
        foreach (var t in Leaderboard)
        {
            var values = t.TrialSettings.Parameter?.Flatten().ToDictionary(kv => kv.Key, kv => kv.Value) ?? [];
            var row = new List<string>
            {
                (++rank).ToString(CultureInfo.InvariantCulture),
                t.TrialId.ToString(CultureInfo.InvariantCulture),
                t.Status.ToString(),
                double.IsNaN(t.Metric) ? "-" : t.Metric.ToString("F4", CultureInfo.InvariantCulture),
                t.Tokens.ToString(CultureInfo.InvariantCulture),
                t.Duration.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture) + " s",
                t.StopReason.Length > 60 ? t.StopReason[..57] + "..." : t.StopReason,
                t.TrialSettings.ContinuesTrial is { } from ? $"final (trial {from} continued)" : "search",
            };
            row.AddRange(names.Select(n => Short(values.GetValueOrDefault(n, ""))));
            rows.Add(row);
        }

        var widths = Enumerable.Range(0, header.Count).Select(c => rows.Max(r => r[c].Length)).ToArray();
        var sb = new StringBuilder();
        for (int r = 0; r < rows.Count; r++)
        {
            sb.AppendJoin("  ", rows[r].Select((cell, c) => cell.PadRight(widths[c]))).Append('\n');
            if (r == 0)
                sb.AppendJoin("  ", widths.Select(w => new string('-', w))).Append('\n');
        }

        return sb.ToString();
    }

    /// <summary>Draws the objective against training tokens for every trial (see <see cref="SweepPlots.SaveLearningCurves"/>).</summary>
    public void SavePlot(string path, int width = TrainingPlots.DefaultWidth, int height = TrainingPlots.DefaultHeight) =>
        SweepPlots.SaveLearningCurves(this, path, width, height);

    /// <inheritdoc/>
    public override string ToString() => ToTable();

    private static string Number(double v) => double.IsNaN(v) ? "" : v.ToString("R", CultureInfo.InvariantCulture);

    private static string Short(string s) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && s.Contains('.') ? d.ToString("G4", CultureInfo.InvariantCulture) : s;

    private static string Csv(string s) => s.IndexOfAny([',', '"', '\n', '\r']) < 0 ? s : "\"" + s.Replace("\"", "\"\"") + "\"";
}
