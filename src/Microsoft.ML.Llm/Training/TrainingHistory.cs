namespace Microsoft.ML.Llm;

/// <summary>
/// Serialises the metrics history (<see cref="TrainingMetrics"/> rows): a binary list inside checkpoints and model zips,
/// and <c>metrics.csv</c> in the log directory.
/// </summary>
internal static class TrainingHistory
{
    // Binary format (little-endian, BinaryWriter): int32 count, then per row: int64 Step; float64 Epoch; int64 Tokens;
    // float64 Loss, LearningRate, GradientNorm, TokensPerSecond, ElapsedSeconds; then ValidationLoss,
    // ValidationPerplexity, ValidationBitsPerByte, each as bool has-value + float64 when present.

    /// <summary>Writes <paramref name="history"/> in the binary layout <see cref="Read"/> reads.</summary>
    public static void Write(BinaryWriter w, IReadOnlyList<TrainingMetrics> history)
    {
        w.Write(history.Count);
        foreach (var m in history)
        {
            w.Write(m.Step);
            w.Write(m.Epoch);
            w.Write(m.Tokens);
            w.Write(m.Loss);
            w.Write(m.LearningRate);
            w.Write(m.GradientNorm);
            w.Write(m.TokensPerSecond);
            w.Write(m.ElapsedSeconds);
            WriteNullable(w, m.ValidationLoss);
            WriteNullable(w, m.ValidationPerplexity);
            WriteNullable(w, m.ValidationBitsPerByte);
        }
    }

    /// <summary>Reads a history written by <see cref="Write"/>.</summary>
    public static List<TrainingMetrics> Read(BinaryReader r)
    {
        int n = r.ReadInt32();
        var list = new List<TrainingMetrics>(n);
        for (int i = 0; i < n; i++)
        {
            list.Add(new TrainingMetrics(r.ReadInt64(), r.ReadDouble(), r.ReadInt64(), r.ReadDouble(), r.ReadDouble(), r.ReadDouble(),
                r.ReadDouble(), r.ReadDouble(), ReadNullable(r), ReadNullable(r), ReadNullable(r)));
        }

        return list;
    }

    /// <summary>Writes the history as CSV (atomically) — one row per step.</summary>
    public static void WriteCsv(string path, IReadOnlyList<TrainingMetrics> history)
    {
        var inv = CultureInfo.InvariantCulture;
        string tmp = path + ".tmp";
        using (var w = new StreamWriter(tmp))
        {
            w.WriteLine("step,epoch,tokens,loss,learning_rate,grad_norm,tokens_per_second,mfu,peak_memory_bytes,elapsed_seconds,val_loss,val_perplexity,val_bits_per_byte");
            foreach (var m in history)
            {
                w.WriteLine(string.Join(',',
                    m.Step.ToString(inv), m.Epoch.ToString("R", inv), m.Tokens.ToString(inv), m.Loss.ToString("R", inv),
                    m.LearningRate.ToString("R", inv), m.GradientNorm.ToString("R", inv), m.TokensPerSecond.ToString("F1", inv),
                    double.IsNaN(m.Mfu) ? "" : m.Mfu.ToString("F4", inv), m.PeakMemoryBytes.ToString(inv),
                    m.ElapsedSeconds.ToString("F3", inv), m.ValidationLoss?.ToString("R", inv) ?? "",
                    m.ValidationPerplexity?.ToString("R", inv) ?? "", m.ValidationBitsPerByte?.ToString("R", inv) ?? ""));
            }
        }

        File.Move(tmp, path, overwrite: true);
    }

    // Throughput extension (checkpoint format 3 on; not in model zips): int32 count, then per row float64 Mfu, int64
    // PeakMemoryBytes, in the rows' order.

    /// <summary>Writes the columns the binary history above leaves out (MFU, peak memory).</summary>
    public static void WriteThroughput(BinaryWriter w, IReadOnlyList<TrainingMetrics> history)
    {
        w.Write(history.Count);
        foreach (var m in history)
        {
            w.Write(m.Mfu);
            w.Write(m.PeakMemoryBytes);
        }
    }

    /// <summary>Reads what <see cref="WriteThroughput"/> wrote into the rows of <paramref name="history"/>.</summary>
    public static void ReadThroughput(BinaryReader r, List<TrainingMetrics> history)
    {
        int n = r.ReadInt32();
        if (n != history.Count)
            throw new InvalidDataException($"The history has {history.Count} rows but its throughput columns {n}.");
        for (int i = 0; i < n; i++)
            history[i] = history[i] with { Mfu = r.ReadDouble(), PeakMemoryBytes = r.ReadInt64() };
    }

    private static void WriteNullable(BinaryWriter w, double? v)
    {
        w.Write(v.HasValue);
        if (v.HasValue)
            w.Write(v.Value);
    }

    private static double? ReadNullable(BinaryReader r) => r.ReadBoolean() ? r.ReadDouble() : null;
}
