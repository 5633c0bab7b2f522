using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Llm.Sweeping;

namespace Microsoft.ML.Llm;

/// <summary>
/// The sweep directory: <c>trials/trial-NNNN/</c> per trial (the trainer's <c>checkpoints/</c> and <c>logs/</c>, and
/// <c>result.json</c> once the trial has ended; the best completed trial also keeps <c>model.zip</c>), and at the top
/// <c>leaderboard.csv</c>, <c>leaderboard.txt</c> and <c>sweep.png</c>, rewritten after every trial. A final phase
/// (<see cref="LlmExperiment.SetFinalTraining"/>) is recorded in <c>final/</c> the same way as a trial. Every file is
/// written under a temporary name and renamed, so a killed sweep leaves only whole files; a trial without
/// <c>result.json</c> had not ended and runs again.
/// </summary>
internal static class SweepFiles
{
    private static readonly JsonSerializerOptions s_json = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static string TrialDirectory(string sweepDirectory, int trialId) =>
        Path.Combine(sweepDirectory, "trials", $"trial-{trialId.ToString("D4", CultureInfo.InvariantCulture)}");

    public static string FinalDirectory(string sweepDirectory) => Path.Combine(sweepDirectory, "final");

    public static string ResultPath(string trialDirectory) => Path.Combine(trialDirectory, "result.json");

    public static string ModelPath(string trialDirectory) => Path.Combine(trialDirectory, "model.zip");

    public static void WriteAllTextAtomic(string path, string text)
    {
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null)
            Directory.CreateDirectory(folder);
        string temporary = path + ".tmp";
        File.WriteAllText(temporary, text);
        File.Move(temporary, path, overwrite: true);
    }

    public static void WriteResult(TrialResult r)
    {
        var record = new TrialRecord
        {
            Trial = r.TrialId,
            Seed = r.TrialSettings.Seed,
            MaxTokens = r.TrialSettings.MaxTokens,
            MaxSeconds = r.TrialSettings.MaxTime?.TotalSeconds,
            ContinuesTrial = r.TrialSettings.ContinuesTrial,
            Parameter = r.Parameter.ToString(),
            Status = r.Status.ToString(),
            StopReason = r.StopReason,
            Metric = r.Metric,
            Loss = r.Loss,
            Tokens = r.Tokens,
            Seconds = r.Duration.TotalSeconds,
            Curve = r.Curve.Select(p => new[] { p.Tokens, p.Value, p.Elapsed.TotalSeconds }).ToArray(),
        };
        WriteAllTextAtomic(ResultPath(r.TrialSettings.Directory), JsonSerializer.Serialize(record, s_json));
    }

    /// <summary>The recorded result of trial <paramref name="trialId"/>, or null when it has none (never ran or did not end).</summary>
    public static TrialResult? ReadResult(string sweepDirectory, int trialId) => ReadResultIn(TrialDirectory(sweepDirectory, trialId), trialId);

    /// <summary>The result recorded in <paramref name="directory"/> (a trial's, or the final phase's), or null.</summary>
    public static TrialResult? ReadResultIn(string directory, int trialId)
    {
        string path = ResultPath(directory);
        if (!File.Exists(path))
            return null;
        TrialRecord record;
        try
        {
            record = JsonSerializer.Deserialize<TrialRecord>(File.ReadAllText(path), s_json) ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            throw new FormatException($"Trial record '{path}' is not a valid result.json ({e.Message}). Delete it to run the trial again.", e);
        }

        if (record.Trial != trialId || !Enum.TryParse<TrialStatus>(record.Status, out var status) || record.Parameter is null)
            throw new FormatException($"Trial record '{path}' is damaged: it names trial {record.Trial}, status '{record.Status}'. Delete it to run the trial again.");
        return new TrialResult
        {
            TrialSettings = new TrialSettings
            {
                TrialId = trialId,
                Seed = record.Seed,
                MaxTokens = record.MaxTokens,
                MaxTime = record.MaxSeconds is { } seconds ? TimeSpan.FromSeconds(seconds) : null,
                ContinuesTrial = record.ContinuesTrial,
                Directory = directory,
                Parameter = Parameter.FromJson(record.Parameter),
            },
            Status = status,
            StopReason = record.StopReason ?? "",
            Metric = record.Metric,
            Loss = record.Loss,
            Tokens = record.Tokens,
            Duration = TimeSpan.FromSeconds(record.Seconds),
            Curve = (record.Curve ?? []).Select(p => new CurvePoint((long)p[0], p[1], p.Length > 2 ? TimeSpan.FromSeconds(p[2]) : TimeSpan.Zero)).ToArray(),
        };
    }

    /// <summary>result.json's content.</summary>
    private sealed class TrialRecord
    {
        public int Trial { get; set; }

        public int Seed { get; set; }

        public long? MaxTokens { get; set; }

        public double? MaxSeconds { get; set; }

        public int? ContinuesTrial { get; set; }

        public string? Parameter { get; set; }

        public string? Status { get; set; }

        public string? StopReason { get; set; }

        public double Metric { get; set; }

        public double Loss { get; set; }

        public long Tokens { get; set; }

        public double Seconds { get; set; }

        public double[][]? Curve { get; set; }
    }
}
