using System.IO.Hashing;
using System.Text;

namespace Microsoft.ML.Llm;

/// <summary>
/// What every rank of a data-parallel job must agree on before the first step: the options that shape the steps, the
/// model configuration, and the data (row count, block length, vocabulary, first and last blocks). Ranks gather each
/// other's fingerprints and fail with an exception naming the first entry that differs
/// (<see cref="IReplicaGroup.CheckSameRun"/>), instead of silently averaging gradients of different runs.
/// </summary>
internal sealed class RunFingerprint
{
    private readonly List<(string Name, long Value, Kind Kind)> _entries = [];

    private enum Kind
    {
        Integer,
        Real,
        Digest,
    }

    /// <summary>The entries' names, in order.</summary>
    public IReadOnlyList<string> Names => _entries.Select(e => e.Name).ToArray();

    /// <summary>The entries' values, in order (what the ranks exchange).</summary>
    public long[] Values => _entries.Select(e => e.Value).ToArray();

    /// <summary>The fingerprint of a run of <paramref name="o"/> on <paramref name="inputs"/> with
    /// <paramref name="microBatch"/> rows per rank and micro-batch.</summary>
    public static RunFingerprint Of(CausalLmTrainerOptions o, TrainingInputs inputs, int microBatch, int seed)
    {
        var f = new RunFingerprint();
        f.Integer("option 'BatchSize' (rows per rank)", microBatch);
        f.Integer("option 'GradientAccumulationSteps'", o.GradientAccumulationSteps);
        f.Real("option 'LearningRate'", o.LearningRate);
        f.Real("option 'MinLearningRate'", o.ResolvedMinLearningRate);
        f.Digest("option 'Schedule'", o.Schedule.ToString());
        f.Integer("option 'WarmupSteps'", o.WarmupSteps);
        f.Integer("option 'DecaySteps'", o.DecaySteps ?? -1);
        f.Real("option 'DecayFraction'", o.DecayFraction);
        f.Real("option 'Beta1'", o.Beta1);
        f.Real("option 'Beta2'", o.Beta2);
        f.Real("option 'Epsilon'", o.Epsilon);
        f.Real("option 'WeightDecay'", o.WeightDecay);
        f.Real("option 'GradientClipNorm'", o.GradientClipNorm);
        f.Integer("seed", seed);
        f.Digest("option 'Precision'", o.Precision?.ToString() ?? "null (per device)");
        f.Integer("option 'MaxSteps'", o.MaxSteps ?? -1);
        f.Integer("option 'MaxTokens'", o.MaxTokens ?? -1);
        f.Real("option 'MaxEpochs'", o.MaxEpochs ?? -1);
        f.Real("option 'TimeBudget' (seconds)", o.TimeBudget?.TotalSeconds ?? -1);
        f.Integer("option 'EvaluationInterval'", o.EvaluationInterval);
        f.Digest("option 'EvaluateAtTokens'", o.EvaluateAtTokens is null ? "" : string.Join(',', o.EvaluateAtTokens));
        f.Digest("option 'EvaluateAtTimes'", o.EvaluateAtTimes is null ? "" : string.Join(',', o.EvaluateAtTimes.Select(t => t.Ticks.ToString(System.Globalization.CultureInfo.InvariantCulture))));
        f.Integer("option 'EvaluationBatches'", o.EvaluationBatches ?? -1);
        f.Integer("option 'EarlyStoppingPatience'", o.EarlyStoppingPatience ?? -1);
        f.Integer("option 'CheckpointInterval'", o.CheckpointInterval);
        f.Digest("option 'ResumeFrom'", o.ResumeFrom ?? "");
        f.Integer("vocabulary size", inputs.Config.ResolvedVocabularySize);   // the data's ids were checked against it
        f.Digest("model configuration", inputs.Config.ToString());
        f.Digest("initial weights (InitialModel)", inputs.InitialWeights is null ? "" : o.InitialModel?.ToString() ?? "");
        Data(f, "training data", inputs.Train);
        f.Integer("validation data row count", inputs.Validation?.Count ?? -1);
        f.Integer("document masking", inputs.DocumentMasking ? 1 : 0);
        return f;
    }

    private static void Data(RunFingerprint f, string name, TokenBlocks blocks)
    {
        f.Integer($"{name} row count", blocks.Count);
        f.Integer($"{name} block length", blocks.BlockLength);
        f.Integer($"{name} loss mask", blocks.HasLossMask ? 1 : 0);
        f.Integer($"{name} document ids", blocks.HasDocumentIds ? 1 : 0);
        if (blocks.Count > 0)
        {
            f.Tokens($"{name} first block", blocks.Tokens(0));
            f.Tokens($"{name} last block", blocks.Tokens(blocks.Count - 1));
        }
    }

    /// <summary>The first entry where <paramref name="other"/> (rank <paramref name="otherRank"/>'s values) differs from
    /// this rank's, described with both values, or null when all agree.</summary>
    public string? FirstDifference(ReadOnlySpan<long> other, int otherRank, int thisRank)
    {
        for (int i = 0; i < _entries.Count; i++)
        {
            var (name, value, kind) = _entries[i];
            if (other[i] == value)
                continue;
            return kind == Kind.Digest
                ? $"rank {otherRank}'s {name} differs from rank {thisRank}'s (digest {other[i]:x16} against {value:x16})"
                : $"rank {otherRank}'s {name} is {Show(other[i], kind)} but rank {thisRank}'s is {Show(value, kind)}";
        }

        return null;
    }

    private static string Show(long value, Kind kind) => kind == Kind.Real
        ? BitConverter.Int64BitsToDouble(value).ToString("R", CultureInfo.InvariantCulture)
        : value.ToString(CultureInfo.InvariantCulture);

    private void Integer(string name, long value) => _entries.Add((name, value, Kind.Integer));

    private void Real(string name, double value) => _entries.Add((name, BitConverter.DoubleToInt64Bits(value), Kind.Real));

    private void Digest(string name, string text) => _entries.Add((name, (long)XxHash64.HashToUInt64(Encoding.UTF8.GetBytes(text)), Kind.Digest));

    private void Tokens(string name, ReadOnlySpan<int> tokens) =>
        _entries.Add((name, (long)XxHash64.HashToUInt64(System.Runtime.InteropServices.MemoryMarshal.AsBytes(tokens)), Kind.Digest));
}
