using System.Globalization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Everything needed to continue a run exactly: model weights, optimizer moments, step (the schedule is a pure function
/// of it), RNG state, data position, early-stopping state, best weights and the metrics history. One file per
/// checkpoint, written to a temporary name, flushed to disk, then renamed, so a crash mid-write leaves the previous
/// checkpoint as the newest loadable one.
/// </summary>
internal sealed class Checkpoint
{
    private const string Magic = "MLLLMCKP";
    private const int FormatVersion = 1;
    private const string Extension = ".ckpt";
    private const string Prefix = "checkpoint-";

    public required GptConfig Config { get; init; }
    public required long Step { get; init; }
    public required long RowsConsumed { get; init; }
    public required long TokensSeen { get; init; }
    public required double ElapsedSeconds { get; init; }
    public required double BestValidationLoss { get; init; }
    public required long BestStep { get; init; }
    public required int EvaluationsWithoutImprovement { get; init; }
    public required int Seed { get; init; }
    public required IReadOnlyList<TrainingMetrics> History { get; init; }

    /// <summary>Writes model/optimizer/RNG state and <paramref name="bestWeights"/> to the checkpoint file.</summary>
    public static string Write(string directory, Checkpoint state, nn.Module model, OptimizerHelper optimizer, IReadOnlyDictionary<string, Tensor>? bestWeights, int keep)
    {
        Directory.CreateDirectory(directory);
        string path = Path.Combine(directory, $"{Prefix}{state.Step:D9}{Extension}");
        string tmp = path + ".tmp";
        using (var stream = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        using (var w = new BinaryWriter(stream))
        {
            w.Write(Magic);
            w.Write(FormatVersion);
            state.Config.Save(w);
            w.Write(state.Step);
            w.Write(state.RowsConsumed);
            w.Write(state.TokensSeen);
            w.Write(state.ElapsedSeconds);
            w.Write(state.BestValidationLoss);
            w.Write(state.BestStep);
            w.Write(state.EvaluationsWithoutImprovement);
            w.Write(state.Seed);
            WriteHistory(w, state.History);
            torch.random.get_rng_state().Save(w);
            model.save(w);
            optimizer.save_state_dict(w);
            w.Write(bestWeights is not null);
            if (bestWeights is not null)
            {
                w.Write(bestWeights.Count);
                foreach (var (name, t) in bestWeights)
                {
                    w.Write(name);
                    t.Save(w);
                }
            }
            w.Flush();
            stream.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
        foreach (var old in List(directory).SkipLast(Math.Max(1, keep)))
            File.Delete(old);
        return path;
    }

    /// <summary>
    /// Reads a checkpoint written by <see cref="Write"/> into <paramref name="model"/>, <paramref name="optimizer"/> and the
    /// torch RNG. Returns the scalar state; <paramref name="bestWeights"/> receives the saved best weights, if any.
    /// </summary>
    public static Checkpoint Read(string path, nn.Module model, OptimizerHelper optimizer, out Dictionary<string, Tensor>? bestWeights)
    {
        using var stream = File.OpenRead(path);
        using var r = new BinaryReader(stream);
        string magic;
        try { magic = r.ReadString(); }
        catch (Exception e) when (e is EndOfStreamException or IOException or FormatException)
        { throw new FormatException($"'{path}' is not a Microsoft.ML.Llm checkpoint.", e); }
        if (magic != Magic)
            throw new FormatException($"'{path}' is not a Microsoft.ML.Llm checkpoint.");
        int version = r.ReadInt32();
        if (version != FormatVersion)
            throw new FormatException($"Checkpoint '{path}' has format version {version}; this build reads version {FormatVersion}.");
        var config = GptConfig.Load(r);
        var state = new Checkpoint
        {
            Config = config,
            Step = r.ReadInt64(),
            RowsConsumed = r.ReadInt64(),
            TokensSeen = r.ReadInt64(),
            ElapsedSeconds = r.ReadDouble(),
            BestValidationLoss = r.ReadDouble(),
            BestStep = r.ReadInt64(),
            EvaluationsWithoutImprovement = r.ReadInt32(),
            Seed = r.ReadInt32(),
            History = ReadHistory(r),
        };
        using (var rng = torch.random.get_rng_state())
        {
            rng.Load(r);
            torch.random.set_rng_state(rng);
        }
        model.load(r);
        optimizer.load_state_dict(r);
        bestWeights = null;
        if (r.ReadBoolean())
        {
            int n = r.ReadInt32();
            bestWeights = new Dictionary<string, Tensor>(n);
            var parameters = model.state_dict();
            using var scope = NewDisposeScope();
            for (int i = 0; i < n; i++)
            {
                string name = r.ReadString();
                var t = parameters[name].detach().clone().MoveToOuterDisposeScope();
                t.Load(r);
                bestWeights[name] = t;
            }
        }
        return state;
    }

    /// <summary>The checkpoint file to resume from: <paramref name="path"/> itself, or the newest one in that directory.</summary>
    public static string Resolve(string path)
    {
        if (File.Exists(path))
            return path;
        if (Directory.Exists(path))
            return List(path).LastOrDefault()
                ?? throw new FileNotFoundException($"Option 'ResumeFrom': directory '{path}' holds no checkpoint ({Prefix}*{Extension}).", path);
        throw new FileNotFoundException($"Option 'ResumeFrom': '{path}' is neither a checkpoint file nor a directory.", path);
    }

    /// <summary>Complete checkpoints in <paramref name="directory"/>, oldest first.</summary>
    public static IEnumerable<string> List(string directory) =>
        Directory.EnumerateFiles(directory, $"{Prefix}*{Extension}").Order(StringComparer.Ordinal);

    internal static void WriteHistory(BinaryWriter w, IReadOnlyList<TrainingMetrics> history)
    {
        w.Write(history.Count);
        foreach (var m in history)
        {
            w.Write(m.Step); w.Write(m.Epoch); w.Write(m.Tokens); w.Write(m.Loss); w.Write(m.LearningRate); w.Write(m.GradientNorm);
            w.Write(m.TokensPerSecond); w.Write(m.ElapsedSeconds);
            WriteNullable(w, m.ValidationLoss); WriteNullable(w, m.ValidationPerplexity); WriteNullable(w, m.ValidationBitsPerByte);
        }
    }

    internal static List<TrainingMetrics> ReadHistory(BinaryReader r)
    {
        int n = r.ReadInt32();
        var list = new List<TrainingMetrics>(n);
        for (int i = 0; i < n; i++)
            list.Add(new TrainingMetrics(r.ReadInt64(), r.ReadDouble(), r.ReadInt64(), r.ReadDouble(), r.ReadDouble(), r.ReadDouble(),
                r.ReadDouble(), r.ReadDouble(), ReadNullable(r), ReadNullable(r), ReadNullable(r)));
        return list;
    }

    private static void WriteNullable(BinaryWriter w, double? v)
    {
        w.Write(v.HasValue);
        if (v.HasValue) w.Write(v.Value);
    }

    private static double? ReadNullable(BinaryReader r) => r.ReadBoolean() ? r.ReadDouble() : null;

    /// <summary>Writes the history as CSV (atomically) — one row per logged step.</summary>
    public static void WriteCsv(string path, IReadOnlyList<TrainingMetrics> history)
    {
        var inv = CultureInfo.InvariantCulture;
        string tmp = path + ".tmp";
        using (var w = new StreamWriter(tmp))
        {
            w.WriteLine("step,epoch,tokens,loss,learning_rate,grad_norm,tokens_per_second,elapsed_seconds,val_loss,val_perplexity,val_bits_per_byte");
            foreach (var m in history)
                w.WriteLine(string.Join(',',
                    m.Step.ToString(inv), m.Epoch.ToString("R", inv), m.Tokens.ToString(inv), m.Loss.ToString("R", inv),
                    m.LearningRate.ToString("R", inv), m.GradientNorm.ToString("R", inv), m.TokensPerSecond.ToString("F1", inv),
                    m.ElapsedSeconds.ToString("F3", inv), m.ValidationLoss?.ToString("R", inv) ?? "",
                    m.ValidationPerplexity?.ToString("R", inv) ?? "", m.ValidationBitsPerByte?.ToString("R", inv) ?? ""));
        }
        File.Move(tmp, path, overwrite: true);
    }
}
